//! The x402 `batch-settlement` scheme on EVM: payment channels on the x402BatchSettlement
//! escrow. A payer deposits once (an ERC-3009 authorization pulled through the
//! ERC3009DepositCollector), then pays each request with a cumulative voucher the gateway
//! checks locally; the gateway later claims the latest vouchers in batches and settles.
//!
//! - [`payload`]: the `payload` object of a `PAYMENT-SIGNATURE`, parsed and shape-checked.
//! - [`verify`]: local verification of a deposit or voucher against the offer and what the
//!   gateway knows of the channel ([`verify_batch_voucher`], [`charge`]).
//! - [`calldata`]: escrow calls (deposit, claim, settle, multicall, views) and event decoding.
//! - [`response`]: the 402 `accepts[]` entry, the `PAYMENT-RESPONSE` extra and the
//!   corrective-402 extra, in the official server's shapes.
//!
//! Wire formats, EIP-712 types and reason codes follow `@x402/evm` 2.27.0 and the
//! x402-foundation contracts.

pub mod calldata;
mod config;
mod error;
pub mod payload;
pub mod response;
pub mod types;
pub mod verify;

#[cfg(test)]
mod tests;

pub use calldata::{BatchEvent, ClaimRow};
pub use config::ChannelConfig;
pub use error::BatchError;
pub use payload::{BatchPayload, DepositAuthorization, PayloadKind, SignedVoucher};
pub use types::{ClaimBatch, ClaimEntry, ReceiveWithAuthorization, Voucher};
pub use verify::{charge, verify_batch_voucher, CheckedDeposit, CheckedVoucher};

use crate::eip712::TokenDomain;
use alloy_primitives::{address, keccak256, Address, B256, U256};
use alloy_sol_types::{Eip712Domain, SolStruct};

/// The escrow (x402BatchSettlement), at the same CREATE2 address on every chain; the
/// official SDK hard-codes it in the channel domain, so it cannot be configured.
pub const SETTLEMENT_CONTRACT: Address = address!("4020074e9dF2ce1deE5A9C1b5c3f541D02a10003");
/// The ERC3009DepositCollector: the `to` of every deposit's `ReceiveWithAuthorization`.
pub const DEPOSIT_COLLECTOR: Address = address!("4020806089470a89826cB9fB1f4059150b550004");
/// The escrow's shortest and longest accepted `withdrawDelay`, in seconds.
pub const MIN_WITHDRAW_DELAY: u64 = 900;
pub const MAX_WITHDRAW_DELAY: u64 = 2_592_000;

/// The channel EIP-712 domain ("x402 Batch Settlement", "1", chain, escrow) with its
/// separator computed once: channel ids and vouchers are hashed on every paid request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelDomain {
    chain_id: u64,
    separator: B256,
}

impl ChannelDomain {
    pub fn new(chain_id: u64) -> Self {
        let domain = Eip712Domain::new(
            Some("x402 Batch Settlement".into()),
            Some("1".into()),
            Some(U256::from(chain_id)),
            Some(SETTLEMENT_CONTRACT),
            None,
        );
        Self {
            chain_id,
            separator: domain.separator(),
        }
    }

    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    pub fn separator(&self) -> B256 {
        self.separator
    }

    /// The channel id: the full EIP-712 digest of the config, as the escrow's `getChannelId`.
    pub fn channel_id(&self, config: &ChannelConfig) -> B256 {
        signing_hash(self.separator, &config.to_sol())
    }

    /// The digest the receiver authorizer signs for `claimWithSignature`: each row's
    /// (channel id, voucher ceiling, cumulative claimed), in the rows' order.
    pub fn claim_batch_hash(&self, entries: &[(B256, u128, u128)]) -> B256 {
        let claims = entries
            .iter()
            .map(|&(channel_id, max_claimable, total_claimed)| ClaimEntry { channelId: channel_id, maxClaimableAmount: max_claimable, totalClaimed: total_claimed })
            .collect();
        signing_hash(self.separator, &ClaimBatch { claims })
    }

    /// The digest the payer authorizer signs for a voucher.
    pub fn voucher_hash(&self, channel_id: B256, max_claimable: u128) -> B256 {
        signing_hash(
            self.separator,
            &Voucher {
                channelId: channel_id,
                maxClaimableAmount: max_claimable,
            },
        )
    }
}

/// keccak256(0x1901 ‖ separator ‖ hashStruct(message)), the EIP-712 signing hash.
pub fn signing_hash<T: SolStruct>(separator: B256, message: &T) -> B256 {
    let mut buf = [0u8; 66];
    buf[0] = 0x19;
    buf[1] = 0x01;
    buf[2..34].copy_from_slice(separator.as_slice());
    buf[34..66].copy_from_slice(message.eip712_hash_struct().as_slice());
    keccak256(buf)
}

/// What a route offers for `batch-settlement` on one chain and asset.
#[derive(Debug, Clone)]
pub struct BatchOffer {
    pub channel_domain: ChannelDomain,
    /// The asset's EIP-712 domain; `verifying_contract` is the token address.
    pub token: TokenDomain,
    pub pay_to: Address,
    pub receiver_authorizer: Address,
    pub withdraw_delay: u64,
    /// Per-request price in atomic units (the `amount` of the offer).
    pub price: u128,
    /// When set, deposits below it are refused (the official `enforceMinDeposit`).
    pub enforced_min_deposit: Option<u128>,
}

impl BatchOffer {
    pub fn chain_id(&self) -> u64 {
        self.channel_domain.chain_id()
    }
}

/// What the gateway knows of a channel when a payment arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChannelView {
    /// The cumulative the gateway has charged; `None` = no record of this channel.
    pub charged_cumulative: Option<u128>,
    /// On-chain deposited balance.
    pub balance: u128,
    /// On-chain claimed total.
    pub total_claimed: u128,
}
