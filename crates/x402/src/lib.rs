//! The x402 protocol as data: the v1 and v2 wire types, the base64 header codec and the
//! reason codes the official SDKs use.
//!
//! This crate does no I/O and knows nothing about HTTP servers or chains, so the same
//! types serve the proxy, the verifier, the settler and the tests.

pub mod header;
pub mod reason;
pub mod v1;
pub mod v2;

pub use header::{decode_header, encode_header, HeaderError, MAX_PAYMENT_HEADER_BYTES};
pub use reason::ReasonCode;

/// Header names. HTTP header lookup is case-insensitive; these are the spellings the
/// official SDKs write.
pub mod headers {
    /// v2 challenge (server → client).
    pub const PAYMENT_REQUIRED: &str = "PAYMENT-REQUIRED";
    /// v2 payment (client → server).
    pub const PAYMENT_SIGNATURE: &str = "PAYMENT-SIGNATURE";
    /// v2 receipt (server → client).
    pub const PAYMENT_RESPONSE: &str = "PAYMENT-RESPONSE";
    /// v1 payment (client → server).
    pub const X_PAYMENT: &str = "X-PAYMENT";
    /// v1 receipt (server → client).
    pub const X_PAYMENT_RESPONSE: &str = "X-PAYMENT-RESPONSE";
}

/// The `exact` scheme's name.
pub const SCHEME_EXACT: &str = "exact";

/// The `batch-settlement` scheme's name (payment channels: one deposit, many vouchers).
pub const SCHEME_BATCH_SETTLEMENT: &str = "batch-settlement";

/// The EIP-3009 authorization an `exact` EVM payment carries, as on the wire: every field
/// is a string (0x-hex addresses and nonce, decimal amounts and times).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExactEvmAuthorization {
    pub from: String,
    pub to: String,
    pub value: String,
    pub valid_after: String,
    pub valid_before: String,
    pub nonce: String,
}

/// The `payload` of an `exact` EVM payment (EIP-3009 path), identical in v1 and v2.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExactEvmPayload {
    pub signature: String,
    pub authorization: ExactEvmAuthorization,
}
