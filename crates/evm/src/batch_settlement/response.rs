//! What the gateway writes back for `batch-settlement`, in the official server's shapes
//! (`@x402/evm` 2.27.0 `server`): the 402 `accepts[]` entry, the `PAYMENT-RESPONSE` extra
//! and the corrective-402 extra. The client reads `chargedAmount` and
//! `channelState.chargedCumulativeAmount` to advance its cumulative, and `voucherState`
//! to resync after a restart.

use super::BatchOffer;
use alloy_primitives::{hex, Signature, B256};
use serde::Serialize;
use serde_json::{json, Map, Value};

/// The channel as the gateway knows it after (or before) this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSnapshot {
    pub channel_id: B256,
    pub balance: u128,
    pub total_claimed: u128,
    /// Unix seconds of a pending withdrawal's start, 0 when none.
    pub withdraw_requested_at: u64,
    pub refund_nonce: u64,
    pub charged_cumulative: u128,
}

/// `channelState` as the official server writes it: amounts as decimal strings,
/// `withdrawRequestedAt` a JSON number, `refundNonce` a string, the id lowercase hex.
fn channel_state(snapshot: &ChannelSnapshot) -> Value {
    json!({
        "channelId": snapshot.channel_id.to_string(),
        "balance": snapshot.balance.to_string(),
        "totalClaimed": snapshot.total_claimed.to_string(),
        "withdrawRequestedAt": snapshot.withdraw_requested_at,
        "refundNonce": snapshot.refund_nonce.to_string(),
        "chargedCumulativeAmount": snapshot.charged_cumulative.to_string(),
    })
}

/// The `extra` of a successful `PAYMENT-RESPONSE`: `channelState`, then `chargedAmount`
/// (absent for a refund, which charges nothing).
pub fn settle_extra(
    snapshot: &ChannelSnapshot,
    charged_amount: Option<u128>,
) -> Map<String, Value> {
    let mut extra = Map::new();
    extra.insert("channelState".into(), channel_state(snapshot));
    if let Some(charged) = charged_amount {
        extra.insert("chargedAmount".into(), Value::String(charged.to_string()));
    }
    extra
}

/// Adds `channelState` and, when the gateway holds a voucher, `voucherState` to the
/// `extra` of a corrective 402's `batch-settlement` entry, so the client can check the
/// signature is its own and adopt the gateway's cumulative.
pub fn corrective_extra(
    extra: &mut Map<String, Value>,
    snapshot: &ChannelSnapshot,
    last_voucher: Option<(u128, &Signature)>,
) {
    extra.insert("channelState".into(), channel_state(snapshot));
    if let Some((signed_max, signature)) = last_voucher {
        let voucher_state = json!({
            "signedMaxClaimable": signed_max.to_string(),
            "signature": hex::encode_prefixed(signature.as_bytes()),
        });
        extra.insert("voucherState".into(), voucher_state);
    }
}

/// A `batch-settlement` entry of `accepts[]`, fields in the official server's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    pub scheme: &'static str,
    pub network: String,
    pub amount: String,
    pub asset: String,
    pub pay_to: String,
    pub max_timeout_seconds: u64,
    pub extra: RequirementsExtra,
}

/// The entry's `extra`: the token's EIP-712 domain, then what the scheme adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequirementsExtra {
    pub name: String,
    pub version: String,
    pub receiver_authorizer: String,
    /// A JSON number: the client ignores a string and falls back to 900.
    pub withdraw_delay: u64,
    pub min_deposit: String,
}

/// The `accepts[]` entry for an offer.
pub fn payment_requirements(
    offer: &BatchOffer,
    max_timeout_seconds: u64,
    min_deposit: u128,
) -> PaymentRequirements {
    PaymentRequirements {
        scheme: x402::SCHEME_BATCH_SETTLEMENT,
        network: format!("eip155:{}", offer.chain_id()),
        amount: offer.price.to_string(),
        asset: offer.token.verifying_contract.to_checksum(None),
        pay_to: offer.pay_to.to_checksum(None),
        max_timeout_seconds,
        extra: RequirementsExtra {
            name: offer.token.name.clone(),
            version: offer.token.version.clone(),
            receiver_authorizer: offer.receiver_authorizer.to_checksum(None),
            withdraw_delay: offer.withdraw_delay,
            min_deposit: min_deposit.to_string(),
        },
    }
}
