//! How a payment is checked: the `exact` scheme on EVM, EIP-3009 authorization, verified
//! locally with no network call.
//!
//! Order: protocol version → the offer the client chose (v2: `accepted` must equal an
//! offered requirement, field by field) → recipient → amount (exact) → time window →
//! signature (EIP-712 digest, low-s, recovery through libsecp256k1 must give `from`).
//! Cheap checks run before the signature so a flood of bad payments costs little.
//! Replay protection is the caller's next step: see `x402_store::ReplayStore::reserve`.

use crate::eip712::{TokenDomain, TransferWithAuthorization};
use alloy_primitives::{hex, Address, Signature, B256, U256};
use serde::Deserialize;
use x402::{v1, v2, ExactEvmAuthorization, ExactEvmPayload, ReasonCode, SCHEME_EXACT};

/// One requirement a route offers, parsed for verification, with its wire form (the exact
/// JSON object sent in `accepts[]`, which v2 clients echo as `accepted`).
#[derive(Debug, Clone)]
pub struct ExactEvmRequirement {
    /// CAIP-2 id, e.g. `eip155:84532`.
    pub network: String,
    /// The v1 name of the network, where one exists.
    pub v1_network: Option<&'static str>,
    pub domain: TokenDomain,
    pub pay_to: Address,
    pub amount: U256,
    pub max_timeout_seconds: u64,
    pub wire: serde_json::Value,
}

/// Time rules applied on top of the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyPolicy {
    /// `validBefore` must be at least this far ahead, so the settler has time to land it.
    pub settle_margin_secs: u64,
    /// Tolerance for client clocks ahead of ours when bounding `validBefore`.
    pub clock_skew_secs: u64,
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        Self { settle_margin_secs: 30, clock_skew_secs: 60 }
    }
}

/// An EIP-3009 authorization, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authorization {
    pub from: Address,
    pub to: Address,
    pub value: U256,
    pub valid_after: U256,
    pub valid_before: U256,
    pub nonce: B256,
}

impl Authorization {
    /// The EIP-712 message this authorization is a signature over.
    pub fn message(&self) -> TransferWithAuthorization {
        TransferWithAuthorization {
            from: self.from,
            to: self.to,
            value: self.value,
            validAfter: self.valid_after,
            validBefore: self.valid_before,
            nonce: self.nonce,
        }
    }

    /// `validBefore` as seconds, saturating (a value beyond u64 is already refused at verify).
    pub fn valid_before_secs(&self) -> u64 {
        u64::try_from(self.valid_before).unwrap_or(u64::MAX)
    }
}

/// A payment that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedPayment {
    /// The payload as the client sent it (what the settler submits).
    pub payload: ExactEvmPayload,
    pub authorization: Authorization,
    pub signature: Signature,
    /// Index of the route requirement it pays.
    pub requirement_index: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("x402Version {0} is not supported here (expected {1})")]
    Version(String, u8),
    #[error("scheme {0:?} is not supported; this route accepts \"exact\"")]
    Scheme(String),
    #[error("network {0:?} is not one this route accepts")]
    Network(String),
    #[error("`accepted` does not equal any requirement this route offers (changed amount, payTo, asset, timeout or extra?)")]
    RequirementsMismatch,
    #[error("malformed payload: {0}")]
    Payload(String),
    #[error("authorization pays {got}, but this route's payTo is {want}")]
    Recipient { got: Address, want: Address },
    #[error("authorization value {got} differs from the price {want} (atomic units); it must be exact")]
    Value { got: U256, want: U256 },
    #[error("authorization is not valid until {valid_after}; now is {now}")]
    NotYetValid { valid_after: U256, now: u64 },
    #[error("authorization expires at {valid_before}; it must stay valid until at least {min} to be settled")]
    ExpiresTooSoon { valid_before: U256, min: u64 },
    #[error("authorization is valid until {valid_before}, beyond the route's maxTimeoutSeconds (latest accepted {max})")]
    ValidTooLong { valid_before: U256, max: u64 },
    #[error("signature is {0} bytes; only 65-byte EOA signatures are accepted (smart-wallet signatures are not supported yet)")]
    SignatureLength(usize),
    #[error("signature is malformed: {0}")]
    SignatureMalformed(String),
    #[error("signature has a high s value (malleable); wallets sign with low s")]
    SignatureHighS,
    #[error("signature recovers to {recovered}, not to the authorization's from {from}")]
    SignatureMismatch { recovered: Address, from: Address },
}

impl VerifyError {
    /// The x402 reason code a client sees.
    pub fn reason(&self) -> ReasonCode {
        match self {
            Self::Version(..) => ReasonCode::InvalidX402Version,
            Self::Scheme(_) => ReasonCode::UnsupportedScheme,
            Self::Network(_) => ReasonCode::InvalidExactEvmNetworkMismatch,
            Self::RequirementsMismatch => ReasonCode::InvalidPaymentRequirements,
            Self::Payload(_) => ReasonCode::InvalidPayload,
            Self::Recipient { .. } => ReasonCode::InvalidExactEvmRecipientMismatch,
            Self::Value { .. } => ReasonCode::InvalidExactEvmAuthorizationValue,
            Self::NotYetValid { .. } => ReasonCode::InvalidExactEvmValidAfter,
            Self::ExpiresTooSoon { .. } | Self::ValidTooLong { .. } => ReasonCode::InvalidExactEvmValidBefore,
            Self::SignatureLength(_)
            | Self::SignatureMalformed(_)
            | Self::SignatureHighS
            | Self::SignatureMismatch { .. } => ReasonCode::InvalidExactEvmSignature,
        }
    }

    /// The payment answers an offer other than these requirements (another price, payee,
    /// network or timeout): it may match one a route made earlier.
    pub fn is_offer_mismatch(&self) -> bool {
        matches!(
            self,
            Self::Network(_) | Self::RequirementsMismatch | Self::Recipient { .. } | Self::Value { .. } | Self::ValidTooLong { .. }
        )
    }
}

/// A payment whose cheap checks all passed (version, offer, recipient, amount, time window,
/// signature form): only signature recovery is left, the one CPU-heavy step (~40 µs), so the
/// caller can run it off its event loop. See [`CheckedPayment::recover_signer`].
#[derive(Debug, Clone)]
pub struct CheckedPayment {
    pub payload: ExactEvmPayload,
    pub authorization: Authorization,
    pub signature: Signature,
    /// `(requirement index, EIP-712 digest)` of each offer the payment may pay, in offer
    /// order; v2 names exactly one, a v1 payload may fit several on its network.
    candidates: Vec<(usize, B256)>,
}

impl CheckedPayment {
    /// The offer the payment pays if its signature recovers to the first candidate: every
    /// candidate is on the same network, which is what this is asked for.
    pub fn first_candidate(&self) -> Option<usize> {
        self.candidates.first().map(|&(requirement_index, _)| requirement_index)
    }

    /// Recovers the signer and checks it is the authorization's `from`: the first candidate
    /// offer whose digest it signed is the one it pays.
    pub fn recover_signer(self) -> Result<VerifiedPayment, VerifyError> {
        let mut first_error = None;
        for &(requirement_index, digest) in &self.candidates {
            match recover_matching(&self.signature, &digest, self.authorization.from) {
                Ok(()) => {
                    let Self { payload, authorization, signature, .. } = self;
                    return Ok(VerifiedPayment { payload, authorization, signature, requirement_index });
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        Err(first_error.unwrap_or(VerifyError::RequirementsMismatch))
    }
}

/// Verifies a v2 `PAYMENT-SIGNATURE` payload against the requirements a route offers.
pub fn verify_v2(
    payment: &v2::PaymentPayload,
    offers: &[ExactEvmRequirement],
    policy: &VerifyPolicy,
    now: u64,
) -> Result<VerifiedPayment, VerifyError> {
    check_v2(payment, offers, policy, now)?.recover_signer()
}

/// Every check of [`verify_v2`] but the signature's recovery.
pub fn check_v2(
    payment: &v2::PaymentPayload,
    offers: &[ExactEvmRequirement],
    policy: &VerifyPolicy,
    now: u64,
) -> Result<CheckedPayment, VerifyError> {
    check_version(&payment.x402_version, v2::X402_VERSION)?;
    let scheme = payment.accepted.get("scheme").and_then(|s| s.as_str()).unwrap_or_default();
    if scheme != SCHEME_EXACT {
        return Err(VerifyError::Scheme(scheme.to_owned()));
    }
    let Some(index) = offers.iter().position(|offer| offer.wire == payment.accepted) else {
        let network = payment.accepted.get("network").and_then(|n| n.as_str()).unwrap_or_default();
        if offers.iter().all(|offer| offer.network != network) {
            return Err(VerifyError::Network(network.to_owned()));
        }
        return Err(VerifyError::RequirementsMismatch);
    };
    let payload = parse_payload(&payment.payload)?;
    let (authorization, signature, digest) = check_exact_evm(&payload, &offers[index], policy, now)?;
    Ok(CheckedPayment { payload, authorization, signature, candidates: vec![(index, digest)] })
}

/// Verifies a v1 `X-PAYMENT` payload. v1 payloads name only scheme and network, so each
/// offer on that network is tried; the first that verifies wins.
pub fn verify_v1(
    payment: &v1::PaymentPayload,
    offers: &[ExactEvmRequirement],
    policy: &VerifyPolicy,
    now: u64,
) -> Result<VerifiedPayment, VerifyError> {
    check_v1(payment, offers, policy, now)?.recover_signer()
}

/// Every check of [`verify_v1`] but the signature's recovery.
pub fn check_v1(
    payment: &v1::PaymentPayload,
    offers: &[ExactEvmRequirement],
    policy: &VerifyPolicy,
    now: u64,
) -> Result<CheckedPayment, VerifyError> {
    check_version(&payment.x402_version, v1::X402_VERSION)?;
    if payment.scheme != SCHEME_EXACT {
        return Err(VerifyError::Scheme(payment.scheme.clone()));
    }
    let payload = parse_payload(&payment.payload)?;
    let mut first_error = None;
    let mut checked: Option<(Authorization, Signature)> = None;
    let mut candidates = Vec::new();
    for (index, offer) in offers.iter().enumerate() {
        if offer.v1_network != Some(payment.network.as_str()) {
            continue;
        }
        match check_exact_evm(&payload, offer, policy, now) {
            Ok((authorization, signature, digest)) => {
                checked = Some((authorization, signature));
                candidates.push((index, digest));
            }
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    match checked {
        Some((authorization, signature)) => Ok(CheckedPayment { payload, authorization, signature, candidates }),
        None => Err(first_error.unwrap_or_else(|| VerifyError::Network(payment.network.clone()))),
    }
}

/// Checks one EIP-3009 payload against one requirement.
pub fn verify_exact_evm(
    payload: &ExactEvmPayload,
    requirement: &ExactEvmRequirement,
    policy: &VerifyPolicy,
    now: u64,
) -> Result<(Authorization, Signature), VerifyError> {
    let (authorization, signature, digest) = check_exact_evm(payload, requirement, policy, now)?;
    recover_matching(&signature, &digest, authorization.from)?;
    Ok((authorization, signature))
}

/// Every check of [`verify_exact_evm`] but the recovery; returns the digest to recover from.
fn check_exact_evm(
    payload: &ExactEvmPayload,
    requirement: &ExactEvmRequirement,
    policy: &VerifyPolicy,
    now: u64,
) -> Result<(Authorization, Signature, B256), VerifyError> {
    let authorization = parse_authorization(&payload.authorization)?;
    if authorization.to != requirement.pay_to {
        return Err(VerifyError::Recipient { got: authorization.to, want: requirement.pay_to });
    }
    if authorization.value != requirement.amount {
        return Err(VerifyError::Value { got: authorization.value, want: requirement.amount });
    }
    check_time_window(&authorization, requirement, policy, now)?;
    let signature = parse_signature(&payload.signature)?;
    Ok((authorization, signature, requirement.domain.signing_hash(&authorization.message())))
}

/// Recovery through libsecp256k1 must give `from`.
fn recover_matching(signature: &Signature, digest: &B256, from: Address) -> Result<(), VerifyError> {
    let recovered =
        signature.recover_address_from_prehash(digest).map_err(|e| VerifyError::SignatureMalformed(e.to_string()))?;
    if recovered != from {
        return Err(VerifyError::SignatureMismatch { recovered, from });
    }
    Ok(())
}

fn check_version(version: &serde_json::Value, expected: u8) -> Result<(), VerifyError> {
    if version.as_u64() == Some(u64::from(expected)) {
        Ok(())
    } else {
        Err(VerifyError::Version(version.to_string(), expected))
    }
}

fn check_time_window(
    authorization: &Authorization,
    requirement: &ExactEvmRequirement,
    policy: &VerifyPolicy,
    now: u64,
) -> Result<(), VerifyError> {
    if authorization.valid_after > U256::from(now) {
        return Err(VerifyError::NotYetValid { valid_after: authorization.valid_after, now });
    }
    let min = now.saturating_add(policy.settle_margin_secs);
    if authorization.valid_before < U256::from(min) {
        return Err(VerifyError::ExpiresTooSoon { valid_before: authorization.valid_before, min });
    }
    let max = now.saturating_add(requirement.max_timeout_seconds).saturating_add(policy.clock_skew_secs);
    if authorization.valid_before > U256::from(max) {
        return Err(VerifyError::ValidTooLong { valid_before: authorization.valid_before, max });
    }
    Ok(())
}

fn parse_payload(payload: &serde_json::Value) -> Result<ExactEvmPayload, VerifyError> {
    ExactEvmPayload::deserialize(payload).map_err(|e| VerifyError::Payload(e.to_string()))
}

/// Parses the wire authorization, enforcing the formats the official schemas require.
pub fn parse_authorization(raw: &ExactEvmAuthorization) -> Result<Authorization, VerifyError> {
    Ok(Authorization {
        from: parse_address("from", &raw.from)?,
        to: parse_address("to", &raw.to)?,
        value: parse_decimal("value", &raw.value)?,
        valid_after: parse_decimal("validAfter", &raw.valid_after)?,
        valid_before: parse_decimal("validBefore", &raw.valid_before)?,
        nonce: parse_nonce(&raw.nonce)?,
    })
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn parse_address(field: &str, s: &str) -> Result<Address, VerifyError> {
    match s.strip_prefix("0x") {
        Some(hex) if hex.len() == 40 && is_hex(hex) => {
            hex.parse().map_err(|_| VerifyError::Payload(format!("{field} is not an address")))
        }
        _ => Err(VerifyError::Payload(format!("{field} must be 0x followed by 40 hex digits"))),
    }
}

fn parse_decimal(field: &str, s: &str) -> Result<U256, VerifyError> {
    let malformed = || VerifyError::Payload(format!("{field} must be a decimal integer string below 2^256"));
    if s.is_empty() || s.len() > 78 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    U256::from_str_radix(s, 10).map_err(|_| malformed())
}

fn parse_nonce(s: &str) -> Result<B256, VerifyError> {
    match s.strip_prefix("0x") {
        Some(hex) if hex.len() == 64 && is_hex(hex) => {
            hex.parse().map_err(|_| VerifyError::Payload("nonce is not 32 bytes of hex".into()))
        }
        _ => Err(VerifyError::Payload("nonce must be 0x followed by 64 hex digits".into())),
    }
}

/// Parses a 65-byte EOA signature, refusing other lengths, odd `v` values and high `s`.
pub fn parse_signature(s: &str) -> Result<Signature, VerifyError> {
    let digits = s
        .strip_prefix("0x")
        .filter(|h| h.len() % 2 == 0 && is_hex(h))
        .ok_or_else(|| VerifyError::SignatureMalformed("expected 0x-prefixed hex".into()))?;
    if digits.len() != 130 {
        return Err(VerifyError::SignatureLength(digits.len() / 2));
    }
    let raw: [u8; 65] =
        hex::decode_to_array(digits).map_err(|e| VerifyError::SignatureMalformed(e.to_string()))?;
    if !matches!(raw[64], 0 | 1 | 27 | 28) {
        return Err(VerifyError::SignatureMalformed(format!("v is {}, expected 27 or 28", raw[64])));
    }
    let signature = Signature::from_raw_array(&raw).map_err(|e| VerifyError::SignatureMalformed(e.to_string()))?;
    if signature.normalize_s().is_some() {
        return Err(VerifyError::SignatureHighS);
    }
    Ok(signature)
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
