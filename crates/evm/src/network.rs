//! Networks: CAIP-2 ids (`eip155:<chain id>`), the v1 names the official SDKs map to chain
//! ids, and the USDC deployments an operator may name instead of spelling out.

use alloy_primitives::{address, Address};

/// v1 network names and chain ids, as the official v2 SDK maps them.
const V1_NAMES: &[(&str, u64)] = &[
    ("ethereum", 1),
    ("sepolia", 11155111),
    ("base", 8453),
    ("base-sepolia", 84532),
    ("avalanche", 43114),
    ("avalanche-fuji", 43113),
    ("iotex", 4689),
    ("polygon", 137),
    ("polygon-amoy", 80002),
    ("sei", 1329),
    ("sei-testnet", 1328),
    ("abstract", 2741),
    ("abstract-testnet", 11124),
    ("peaq", 3338),
    ("story", 1514),
    ("educhain", 41923),
    ("skale-base-sepolia", 324705682),
    ("megaeth", 4326),
    ("monad", 143),
    ("stable", 988),
    ("stable-testnet", 2201),
];

/// The v1 name of a chain, where the v1 protocol has one (a local chain has none).
pub fn v1_name_for_chain(chain_id: u64) -> Option<&'static str> {
    V1_NAMES.iter().find(|(_, id)| *id == chain_id).map(|(name, _)| *name)
}

/// The chain id behind a v1 network name.
pub fn chain_id_for_v1_name(name: &str) -> Option<u64> {
    V1_NAMES.iter().find(|(n, _)| *n == name).map(|(_, id)| *id)
}

/// Parses `eip155:<decimal chain id>`.
pub fn chain_id_from_caip2(network: &str) -> Option<u64> {
    let id = network.strip_prefix("eip155:")?;
    if id.is_empty() || id.len() > 19 || !id.bytes().all(|b| b.is_ascii_digit()) || id.starts_with('0') {
        return None;
    }
    id.parse().ok()
}

/// A token deployment known by name, with its EIP-712 domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownAsset {
    pub symbol: &'static str,
    pub chain_id: u64,
    pub address: Address,
    pub decimals: u8,
    pub eip712_name: &'static str,
    pub eip712_version: &'static str,
}

/// USDC on the networks known by name. Base mainnet's EIP-712 name is "USD Coin" and Base
/// Sepolia's is "USDC": getting this wrong makes every signature fail.
const KNOWN_ASSETS: &[KnownAsset] = &[
    KnownAsset {
        symbol: "USDC",
        chain_id: 8453,
        address: address!("833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"),
        decimals: 6,
        eip712_name: "USD Coin",
        eip712_version: "2",
    },
    KnownAsset {
        symbol: "USDC",
        chain_id: 84532,
        address: address!("036CbD53842c5426634e7929541eC2318f3dCF7e"),
        decimals: 6,
        eip712_name: "USDC",
        eip712_version: "2",
    },
];

/// A known asset by chain and symbol (case-insensitive), e.g. (84532, "usdc").
pub fn known_asset(chain_id: u64, symbol: &str) -> Option<KnownAsset> {
    KNOWN_ASSETS.iter().copied().find(|a| a.chain_id == chain_id && a.symbol.eq_ignore_ascii_case(symbol))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caip2_parsing_is_strict() {
        assert_eq!(chain_id_from_caip2("eip155:84532"), Some(84532));
        assert_eq!(chain_id_from_caip2("eip155:1"), Some(1));
        for bad in ["eip155:", "eip155:0x1", "eip155:01", "eip155:-1", "solana:abc", "eip155:99999999999999999999"] {
            assert_eq!(chain_id_from_caip2(bad), None, "{bad}");
        }
    }

    #[test]
    fn v1_names_map_both_ways() {
        assert_eq!(v1_name_for_chain(84532), Some("base-sepolia"));
        assert_eq!(chain_id_for_v1_name("base"), Some(8453));
        assert_eq!(v1_name_for_chain(31337), None);
    }

    #[test]
    fn base_mainnet_and_sepolia_usdc_have_different_domain_names() {
        assert_eq!(known_asset(8453, "usdc").map(|a| a.eip712_name), Some("USD Coin"));
        assert_eq!(known_asset(84532, "USDC").map(|a| a.eip712_name), Some("USDC"));
        assert_eq!(known_asset(1, "USDC"), None);
    }
}
