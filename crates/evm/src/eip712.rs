//! The EIP-712 digest of an EIP-3009 `TransferWithAuthorization`.

use alloy_primitives::{keccak256, Address, B256, U256};
use alloy_sol_types::{sol, Eip712Domain, SolStruct};
use std::borrow::Cow;

sol! {
    /// EIP-3009's typed message; field order is part of the type hash.
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
}

/// A token's EIP-712 domain with its separator computed once: the separator is most of the
/// hashing work, and it only changes with (name, version, chain id, token address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenDomain {
    pub name: String,
    pub version: String,
    pub chain_id: u64,
    pub verifying_contract: Address,
    separator: B256,
}

impl TokenDomain {
    pub fn new(name: &str, version: &str, chain_id: u64, verifying_contract: Address) -> Self {
        let domain = Eip712Domain::new(
            Some(Cow::Owned(name.to_owned())),
            Some(Cow::Owned(version.to_owned())),
            Some(U256::from(chain_id)),
            Some(verifying_contract),
            None,
        );
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            chain_id,
            verifying_contract,
            separator: domain.separator(),
        }
    }

    pub fn separator(&self) -> B256 {
        self.separator
    }

    /// The digest a wallet signs for `message` under this domain:
    /// keccak256(0x1901 ‖ domainSeparator ‖ hashStruct(message)).
    pub fn signing_hash(&self, message: &TransferWithAuthorization) -> B256 {
        let mut buf = [0u8; 66];
        buf[0] = 0x19;
        buf[1] = 0x01;
        buf[2..34].copy_from_slice(self.separator.as_slice());
        buf[34..66].copy_from_slice(message.eip712_hash_struct().as_slice());
        keccak256(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{address, b256};

    #[test]
    fn precomputed_separator_gives_the_standard_signing_hash() {
        let domain = TokenDomain::new("USDC", "2", 84532, address!("036CbD53842c5426634e7929541eC2318f3dCF7e"));
        let message = TransferWithAuthorization {
            from: address!("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266"),
            to: address!("70997970C51812dc3A010C7d01b50e0d17dc79C8"),
            value: U256::from(1000u64),
            validAfter: U256::from(1u64),
            validBefore: U256::from(2_000_000_000u64),
            nonce: b256!("0101010101010101010101010101010101010101010101010101010101010101"),
        };
        let reference = Eip712Domain::new(
            Some("USDC".into()),
            Some("2".into()),
            Some(U256::from(84532u64)),
            Some(domain.verifying_contract),
            None,
        );
        assert_eq!(domain.signing_hash(&message), message.eip712_signing_hash(&reference));
    }
}
