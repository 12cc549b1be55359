//! x402 version 1: the JSON 402 body, `X-PAYMENT` and `X-PAYMENT-RESPONSE`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const X402_VERSION: u8 = 1;

/// One `accepts[]` entry of a v1 challenge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    pub scheme: String,
    pub network: String,
    pub max_amount_required: String,
    pub resource: String,
    pub description: String,
    pub mime_type: String,
    pub output_schema: Option<Value>,
    pub pay_to: String,
    pub max_timeout_seconds: u64,
    pub asset: String,
    #[serde(default)]
    pub extra: Map<String, Value>,
}

/// The v1 402 body. `message` is this gateway's human-readable explanation of `error`;
/// clients ignore fields they do not know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirementsResponse {
    pub x402_version: u8,
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub accepts: Vec<PaymentRequirements>,
}

/// The decoded `X-PAYMENT` header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayload {
    pub x402_version: Value,
    pub scheme: String,
    pub network: String,
    pub payload: Value,
}
