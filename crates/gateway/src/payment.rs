//! From a request's payment header to a verified, reserved payment, and the receipt a
//! charged response carries.

use crate::config::Pricing;
use alloy_primitives::{keccak256, Address, U256};
use x402::{v1, v2, HeaderError};
use x402_evm::{VerifyError, VerifyPolicy};
use x402_store::{NewPayment, ReplayKey, ReplayStore, SettlementItem};

/// The payment header a request carries. Header names match case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentHeader<'a> {
    /// `PAYMENT-SIGNATURE`
    V2(&'a [u8]),
    /// `X-PAYMENT`
    V1(&'a [u8]),
}

/// Finds the payment header; v2 wins when both are present.
pub fn find_payment_header(headers: &http::HeaderMap) -> Option<PaymentHeader<'_>> {
    if let Some(value) = headers.get(x402::headers::PAYMENT_SIGNATURE) {
        return Some(PaymentHeader::V2(value.as_bytes()));
    }
    headers.get(x402::headers::X_PAYMENT).map(|value| PaymentHeader::V1(value.as_bytes()))
}

/// A payment that passed verification and holds its replay reservation.
#[derive(Debug, Clone)]
pub struct AcceptedPayment {
    pub version: u8,
    pub key: ReplayKey,
    pub payer: Address,
    pub amount: U256,
    /// CAIP-2 id.
    pub network: String,
    pub item: SettlementItem,
}

#[derive(Debug, thiserror::Error)]
pub enum PaymentRejection {
    /// The header cannot be read: 400.
    #[error("payment header cannot be read: {0}")]
    Malformed(#[from] HeaderError),
    /// The payment is not valid for this route: 402 with a fresh challenge.
    #[error(transparent)]
    Invalid(#[from] VerifyError),
    /// The same authorization is in flight or already charged: 402.
    #[error("this payment authorization was already used (nonce {0}); sign a new one")]
    Replayed(String),
}

impl PaymentRejection {
    pub fn reason(&self) -> x402::ReasonCode {
        match self {
            Self::Malformed(_) => x402::ReasonCode::InvalidPayload,
            Self::Invalid(error) => error.reason(),
            Self::Replayed(_) => x402::ReasonCode::InvalidExactEvmNonceAlreadyUsed,
        }
    }
}

/// Decodes, verifies and reserves a payment for a priced route. Nothing here touches the
/// network; the reservation is the only side effect and the caller must release it if the
/// response turns out not to be billable.
pub fn accept_payment(
    header: PaymentHeader<'_>,
    pricing: &Pricing,
    policy: &VerifyPolicy,
    max_header_bytes: usize,
    replay: &dyn ReplayStore,
    now: u64,
) -> Result<AcceptedPayment, PaymentRejection> {
    let (version, verified) = match header {
        PaymentHeader::V2(raw) => {
            let payment: v2::PaymentPayload = x402::decode_header(raw, max_header_bytes)?;
            (2, x402_evm::verify_v2(&payment, &pricing.requirements, policy, now)?)
        }
        PaymentHeader::V1(raw) => {
            let payment: v1::PaymentPayload = x402::decode_header(raw, max_header_bytes)?;
            (1, x402_evm::verify_v1(&payment, &pricing.requirements, policy, now)?)
        }
    };
    let requirement = &pricing.requirements[verified.requirement_index];
    let authorization = verified.authorization;
    let key = ReplayKey {
        chain_id: requirement.domain.chain_id,
        asset: requirement.domain.verifying_contract.into_array(),
        from: authorization.from.into_array(),
        nonce: authorization.nonce.0,
    };
    let valid_before = authorization.valid_before_secs();
    if !replay.reserve(key, valid_before) {
        return Err(PaymentRejection::Replayed(authorization.nonce.to_string()));
    }
    Ok(AcceptedPayment {
        version,
        key,
        payer: authorization.from,
        amount: authorization.value,
        network: requirement.network.clone(),
        item: SettlementItem {
            network: requirement.network.clone(),
            chain_id: requirement.domain.chain_id,
            asset: requirement.domain.verifying_contract.to_checksum(None),
            payload: verified.payload,
            valid_before,
        },
    })
}

/// Where the public listener answers receipt look-ups: `GET {RECEIPTS_PATH}{id}`.
pub const RECEIPTS_PATH: &str = "/.well-known/x402/receipts/";

/// The public id of a payment: derived from what identifies its authorization on-chain, so
/// it is unique, stable across restarts, and says nothing about how many payments exist.
pub fn receipt_id(key: &ReplayKey) -> String {
    let mut preimage = Vec::with_capacity(8 + 20 + 20 + 32);
    preimage.extend_from_slice(&key.chain_id.to_be_bytes());
    preimage.extend_from_slice(&key.asset);
    preimage.extend_from_slice(&key.from);
    preimage.extend_from_slice(&key.nonce);
    alloy_primitives::hex::encode(&keccak256(&preimage)[..16])
}

impl AcceptedPayment {
    /// The journal row for this payment, charged on `route`.
    pub fn journal_entry(&self, route: &str) -> NewPayment {
        NewPayment {
            receipt_id: receipt_id(&self.key),
            route: route.to_owned(),
            amount: self.amount.to_string(),
            payer: self.payer.to_checksum(None),
            nonce: alloy_primitives::B256::from(self.key.nonce).to_string(),
            item: self.item.clone(),
        }
    }
}

/// The replay key of a journaled payment, to rebuild the replay store at start.
pub fn journaled_key(item: &SettlementItem) -> Option<ReplayKey> {
    let asset: Address = item.asset.parse().ok()?;
    let authorization = x402_evm::verify::parse_authorization(&item.payload.authorization).ok()?;
    Some(ReplayKey {
        chain_id: item.chain_id,
        asset: asset.into_array(),
        from: authorization.from.into_array(),
        nonce: authorization.nonce.0,
    })
}

/// The receipt header of a charged response: `PAYMENT-RESPONSE` (v2) or
/// `X-PAYMENT-RESPONSE` (v1).
///
/// The payment is settled later in a batch, so there is no transaction hash yet: the spec
/// requires `transaction` to be a string, and it is `""` here (as the spec's
/// batch-settlement scheme does), with `extensions["x402-gateway"]` saying the settlement
/// is pending and giving the payment's receipt id and where to look it up.
pub fn receipt_header(payment: &AcceptedPayment, receipt_id: &str) -> (&'static str, String) {
    let receipt = v2::SettleResponse {
        success: true,
        error_reason: None,
        error_message: None,
        payer: Some(payment.payer.to_checksum(None)),
        transaction: String::new(),
        network: payment.network.clone(),
        amount: Some(payment.amount.to_string()),
        extensions: serde_json::Map::from_iter([(
            "x402-gateway".to_owned(),
            serde_json::json!({
                "settlement": "pending",
                "paymentId": receipt_id,
                "receipt": format!("{RECEIPTS_PATH}{receipt_id}"),
            }),
        )]),
    };
    let name = if payment.version == 1 { x402::headers::X_PAYMENT_RESPONSE } else { x402::headers::PAYMENT_RESPONSE };
    (name, x402::encode_header(&receipt))
}
