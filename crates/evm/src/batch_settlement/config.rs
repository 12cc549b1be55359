//! The channel config as the rest of the gateway uses it: the Solidity struct's fields,
//! with `withdrawDelay` as a plain `u64` rather than alloy's `Uint<40>`, converted to the
//! `sol!` type only to hash or encode it.

use super::types::ChannelConfig as SolChannelConfig;
use alloy_primitives::{aliases::U40, Address, B256};

/// A channel's immutable parameters; field names are the Solidity ones, as on the wire.
#[allow(non_snake_case)]
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ChannelConfig {
    pub payer: Address,
    pub payerAuthorizer: Address,
    pub receiver: Address,
    pub receiverAuthorizer: Address,
    pub token: Address,
    /// uint40 on-chain; a larger value saturates when hashed (and is refused at verify).
    pub withdrawDelay: u64,
    pub salt: B256,
}

impl ChannelConfig {
    /// The `sol!` struct, for EIP-712 hashing and ABI encoding.
    pub fn to_sol(&self) -> SolChannelConfig {
        SolChannelConfig {
            payer: self.payer,
            payerAuthorizer: self.payerAuthorizer,
            receiver: self.receiver,
            receiverAuthorizer: self.receiverAuthorizer,
            token: self.token,
            withdrawDelay: U40::saturating_from(self.withdrawDelay),
            salt: self.salt,
        }
    }

    /// From the `sol!` struct (decoded events); uint40 always fits a u64.
    pub fn from_sol(config: &SolChannelConfig) -> Self {
        Self {
            payer: config.payer,
            payerAuthorizer: config.payerAuthorizer,
            receiver: config.receiver,
            receiverAuthorizer: config.receiverAuthorizer,
            token: config.token,
            withdrawDelay: config.withdrawDelay.to::<u64>(),
            salt: config.salt,
        }
    }
}
