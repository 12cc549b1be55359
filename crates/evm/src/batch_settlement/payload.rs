//! The `payload` object of a `batch-settlement` payment, as `@x402/evm` 2.27.0 writes it:
//! `{type, channelConfig, voucher, deposit?, amount?}`. Parsing checks only shape and
//! formats (addresses, 32-byte hex, decimal amounts); meaning is checked in `verify`.

use super::config::ChannelConfig;
use super::error::BatchError;
use alloy_primitives::{hex, Address, Bytes, B256, U256};
use serde::Deserialize;
use serde_json::Value;

/// Which of the three payload types the client sent.
#[derive(PartialEq, Eq, Debug, Clone, Copy)]
pub enum PayloadKind {
    /// First payment or top-up: an ERC-3009 deposit plus this request's voucher.
    Deposit,
    /// A voucher on an already funded channel.
    Voucher,
    /// A zero-charge voucher asking the receiver to refund the unspent balance.
    Refund,
}

/// The payer authorizer's signed cumulative ceiling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedVoucher {
    pub channel_id: B256,
    pub max_claimable: u128,
    /// As sent; checked for length, `v` and low `s` at verification.
    pub signature: Bytes,
}

/// How the deposit is authorized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DepositAuthorization {
    /// ERC-3009 `ReceiveWithAuthorization` to the deposit collector.
    Erc3009 {
        valid_after: U256,
        valid_before: U256,
        salt: B256,
        signature: Bytes,
    },
    /// Permit2 witness transfer: recognised so it can be refused with a clear reason.
    Permit2,
}

/// A deposit as sent: the amount and its authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositPayload {
    pub amount: u128,
    pub authorization: DepositAuthorization,
}

/// A decoded `batch-settlement` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPayload {
    kind: PayloadKind,
    config: ChannelConfig,
    voucher: SignedVoucher,
    deposit: Option<DepositPayload>,
    refund_amount: Option<u128>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPayload {
    #[serde(rename = "type")]
    kind: String,
    channel_config: RawConfig,
    voucher: RawVoucher,
    #[serde(default)]
    deposit: Option<RawDeposit>,
    #[serde(default)]
    amount: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    payer: String,
    payer_authorizer: String,
    receiver: String,
    receiver_authorizer: String,
    token: String,
    withdraw_delay: Value,
    salt: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawVoucher {
    channel_id: String,
    max_claimable_amount: String,
    signature: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDeposit {
    amount: String,
    authorization: RawDepositAuthorization,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDepositAuthorization {
    #[serde(default)]
    erc3009_authorization: Option<RawErc3009>,
    #[serde(default)]
    permit2_authorization: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawErc3009 {
    valid_after: String,
    valid_before: String,
    salt: String,
    signature: String,
}

impl BatchPayload {
    /// Parses the `payload` member of a v2 `PAYMENT-SIGNATURE`.
    pub fn from_json(value: &Value) -> Result<Self, BatchError> {
        let raw = RawPayload::deserialize(value).map_err(|e| BatchError::Payload(e.to_string()))?;
        let kind = match raw.kind.as_str() {
            "deposit" => PayloadKind::Deposit,
            "voucher" => PayloadKind::Voucher,
            "refund" => PayloadKind::Refund,
            other => return Err(BatchError::PayloadType(other.to_owned())),
        };
        let deposit = match (kind, raw.deposit) {
            (PayloadKind::Deposit, Some(deposit)) => Some(parse_deposit(deposit)?),
            (PayloadKind::Deposit, None) => {
                return Err(BatchError::Payload(
                    "deposit payload without `deposit`".into(),
                ))
            }
            _ => None,
        };
        let refund_amount = match (kind, raw.amount) {
            (PayloadKind::Refund, Some(amount)) => Some(parse_u128("amount", &amount)?),
            _ => None,
        };
        Ok(Self {
            kind,
            config: parse_config(&raw.channel_config)?,
            voucher: parse_voucher(&raw.voucher)?,
            deposit,
            refund_amount,
        })
    }

    pub fn kind(&self) -> PayloadKind {
        self.kind
    }

    pub fn channel_config(&self) -> &ChannelConfig {
        &self.config
    }

    pub fn voucher(&self) -> &SignedVoucher {
        &self.voucher
    }

    /// The deposit, present exactly for [`PayloadKind::Deposit`].
    pub fn deposit(&self) -> Option<&DepositPayload> {
        self.deposit.as_ref()
    }

    /// The amount a refund payload asks for; `None` = the whole unspent balance.
    pub fn refund_amount(&self) -> Option<u128> {
        self.refund_amount
    }
}

fn parse_config(raw: &RawConfig) -> Result<ChannelConfig, BatchError> {
    Ok(ChannelConfig {
        payer: parse_address("channelConfig.payer", &raw.payer)?,
        payerAuthorizer: parse_address("channelConfig.payerAuthorizer", &raw.payer_authorizer)?,
        receiver: parse_address("channelConfig.receiver", &raw.receiver)?,
        receiverAuthorizer: parse_address(
            "channelConfig.receiverAuthorizer",
            &raw.receiver_authorizer,
        )?,
        token: parse_address("channelConfig.token", &raw.token)?,
        withdrawDelay: parse_withdraw_delay(&raw.withdraw_delay)?,
        salt: parse_b256("channelConfig.salt", &raw.salt)?,
    })
}

fn parse_voucher(raw: &RawVoucher) -> Result<SignedVoucher, BatchError> {
    Ok(SignedVoucher {
        channel_id: parse_b256("voucher.channelId", &raw.channel_id)?,
        max_claimable: parse_u128("voucher.maxClaimableAmount", &raw.max_claimable_amount)?,
        signature: parse_hex_bytes("voucher.signature", &raw.signature)?,
    })
}

fn parse_deposit(raw: RawDeposit) -> Result<DepositPayload, BatchError> {
    let amount = parse_u128("deposit.amount", &raw.amount)?;
    if amount == 0 {
        return Err(BatchError::Payload(
            "deposit.amount must be positive".into(),
        ));
    }
    let authorization = match (
        raw.authorization.erc3009_authorization,
        raw.authorization.permit2_authorization,
    ) {
        (Some(auth), _) => DepositAuthorization::Erc3009 {
            valid_after: parse_u256("validAfter", &auth.valid_after)?,
            valid_before: parse_u256("validBefore", &auth.valid_before)?,
            salt: parse_salt(&auth.salt)?,
            signature: parse_hex_bytes("erc3009Authorization.signature", &auth.signature)?,
        },
        (None, Some(_)) => DepositAuthorization::Permit2,
        (None, None) => return Err(BatchError::DepositAuthorizationMissing),
    };
    Ok(DepositPayload {
        amount,
        authorization,
    })
}

/// The client sends a JSON number; a decimal string is accepted too. uint40 on-chain.
fn parse_withdraw_delay(value: &Value) -> Result<u64, BatchError> {
    let delay = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if is_decimal(s) => s.parse().ok(),
        _ => None,
    };
    delay.filter(|d| *d < (1 << 40)).ok_or_else(|| {
        BatchError::Payload("channelConfig.withdrawDelay must be an integer below 2^40".into())
    })
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_decimal(s: &str) -> bool {
    !s.is_empty() && s.len() <= 78 && s.bytes().all(|b| b.is_ascii_digit())
}

fn parse_address(field: &str, s: &str) -> Result<Address, BatchError> {
    match s.strip_prefix("0x") {
        Some(h) if h.len() == 40 && is_hex(h) => h
            .parse()
            .map_err(|_| BatchError::Payload(format!("{field} is not an address"))),
        _ => Err(BatchError::Payload(format!(
            "{field} must be 0x followed by 40 hex digits"
        ))),
    }
}

fn parse_b256(field: &str, s: &str) -> Result<B256, BatchError> {
    match s.strip_prefix("0x") {
        Some(h) if h.len() == 64 && is_hex(h) => h
            .parse()
            .map_err(|_| BatchError::Payload(format!("{field} is not 32 bytes of hex"))),
        _ => Err(BatchError::Payload(format!(
            "{field} must be 0x followed by 64 hex digits"
        ))),
    }
}

/// The deposit salt is a uint256 on the wire (the SDK runs `BigInt(salt)`): 0x-hex or decimal.
fn parse_salt(s: &str) -> Result<B256, BatchError> {
    let parsed = match s.strip_prefix("0x") {
        Some(h) if !h.is_empty() && h.len() <= 64 && is_hex(h) => U256::from_str_radix(h, 16).ok(),
        Some(_) => None,
        None if is_decimal(s) => U256::from_str_radix(s, 10).ok(),
        None => None,
    };
    parsed.map(B256::from).ok_or_else(|| {
        BatchError::Payload(
            "erc3009Authorization.salt must be a uint256 (0x-hex or decimal)".into(),
        )
    })
}

fn parse_hex_bytes(field: &str, s: &str) -> Result<Bytes, BatchError> {
    s.strip_prefix("0x")
        .filter(|h| h.len() % 2 == 0 && is_hex(h))
        .and_then(|h| hex::decode(h).ok())
        .map(Bytes::from)
        .ok_or_else(|| BatchError::Payload(format!("{field} must be 0x-prefixed hex")))
}

fn parse_u128(field: &str, s: &str) -> Result<u128, BatchError> {
    if !is_decimal(s) {
        return Err(BatchError::Payload(format!(
            "{field} must be a decimal integer string"
        )));
    }
    s.parse()
        .map_err(|_| BatchError::Payload(format!("{field} must fit in uint128")))
}

fn parse_u256(field: &str, s: &str) -> Result<U256, BatchError> {
    if !is_decimal(s) {
        return Err(BatchError::Payload(format!(
            "{field} must be a decimal integer string"
        )));
    }
    U256::from_str_radix(s, 10)
        .map_err(|_| BatchError::Payload(format!("{field} must fit in uint256")))
}
