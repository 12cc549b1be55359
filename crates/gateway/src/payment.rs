//! From a request's payment header to a verified, reserved payment, and the receipt a
//! charged response carries.

use crate::balance::BalanceUnavailable;
use crate::config::{Pricing, Route};
use alloy_primitives::{keccak256, Address, U256};
use x402::{v1, v2, HeaderError};
use x402_evm::{VerifiedPayment, VerifyError, VerifyPolicy};
use std::sync::atomic::{AtomicU64, Ordering};
use x402_store::{ExposureRefusal, Hold, Journal, LedgerRefusal, NewPayment, PaymentLedger, ReplayKey, SettlementItem, StoreUnavailable};

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
    /// Checksummed address, computed once: the exposure ledger, the journal and the receipt
    /// all key on this text.
    pub payer: String,
    pub amount: U256,
    /// The amount in micro-dollars, as exposure limits count it.
    pub usd_micros: u64,
    /// CAIP-2 id.
    pub network: String,
    pub item: SettlementItem,
    /// The route it was held on, and the token of its hold: a release frees only this hold.
    pub route: String,
    pub hold_token: u64,
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
    /// Valid, but more credit than the operator extends: 402.
    #[error(transparent)]
    OverExposure(#[from] ExposureRefusal),
    /// The payer's balance could not be read in time: 503, the payment is not used up.
    #[error("{0}; retry the same payment shortly")]
    BalanceUnavailable(#[from] BalanceUnavailable),
    /// Every verify thread is busy and the queue is full: 503, the payment is not used up.
    #[error("payment verification is at capacity ({queue_depth} payments already waiting); retry the same payment shortly")]
    AtCapacity { queue_depth: usize },
    /// During an upgrade the journal could not say whether the payment was charged: 503,
    /// the payment is not used up.
    #[error("the payment journal cannot be read right now ({0}); retry the same payment shortly")]
    JournalUnreadable(x402_store::JournalError),
    /// The ledger replicas share cannot be reached: 503, nothing is held, the payment is not
    /// used up.
    #[error("{0}; nothing was charged: retry the same payment shortly")]
    StoreUnavailable(#[from] StoreUnavailable),
}

impl PaymentRejection {
    /// The ledger's refusal of the payment with `nonce`.
    pub fn from_ledger(refusal: LedgerRefusal, nonce: &str) -> Self {
        match refusal {
            LedgerRefusal::Replayed => Self::Replayed(nonce.to_owned()),
            LedgerRefusal::Exposure(refusal) => refusal.into(),
            LedgerRefusal::Unavailable(error) => error.into(),
        }
    }

    pub fn reason(&self) -> x402::ReasonCode {
        match self {
            Self::Malformed(_) => x402::ReasonCode::InvalidPayload,
            Self::Invalid(error) => error.reason(),
            Self::Replayed(_) => x402::ReasonCode::InvalidExactEvmNonceAlreadyUsed,
            Self::AtCapacity { .. } | Self::BalanceUnavailable(_) | Self::JournalUnreadable(_) | Self::StoreUnavailable(_) => x402::ReasonCode::UnexpectedVerifyError,
            Self::OverExposure(ExposureRefusal::Uncovered { .. }) => x402::ReasonCode::InvalidExactEvmInsufficientBalance,
            Self::OverExposure(ExposureRefusal::Blocked { reason, .. }) if reason.contains("balance") => {
                x402::ReasonCode::InvalidExactEvmInsufficientBalance
            }
            Self::OverExposure(ExposureRefusal::LossBudgetSpent { .. }) => x402::ReasonCode::UnexpectedSettleError,
            // No code in the x402 vocabulary names a credit limit; this is the generic
            // "not now" one, and the message says which limit and when to retry.
            Self::OverExposure(_) => x402::ReasonCode::InvalidTransactionState,
        }
    }

    /// A refusal about the gateway's state, not the payment: answered 503 with
    /// `Retry-After` and this code, and the payment stays usable.
    pub fn retry_later(&self) -> Option<&'static str> {
        match self {
            Self::BalanceUnavailable(_) => Some("balance_unavailable"),
            Self::JournalUnreadable(_) => Some("journal_unavailable"),
            Self::StoreUnavailable(_) => Some("store_unavailable"),
            Self::OverExposure(ExposureRefusal::LossBudgetSpent { .. }) => Some("loss_budget_exhausted"),
            _ => None,
        }
    }
}

/// What a payment is held against: the payment ledger (replay reservations and exposure).
pub struct PaymentGuards<'a> {
    pub ledger: &'a dyn PaymentLedger,
    /// While an upgrade window is open: the journal another process charges into too,
    /// asked about each nonce the replay store had not seen (see [`crate::upgrade`]).
    pub shared_journal: Option<&'a Journal>,
}

/// A payment that passed every check but its signature's recovery. It owns what it holds,
/// so recovery can run on another thread.
#[derive(Debug)]
pub struct PaymentCheck {
    version: u8,
    checked: x402_evm::CheckedPayment,
    /// Which of the route's prices it pays: `None` the current one, `Some(i)` `route.honoured[i]`.
    honoured: Option<usize>,
}

/// A payment whose signature recovers to its payer; not yet reserved.
#[derive(Debug)]
pub struct SignedPayment {
    version: u8,
    verified: VerifiedPayment,
    /// The payer's checksummed address: the exposure ledger, the journal and the receipt
    /// key on it. Computed once, on the verify thread.
    payer: String,
    honoured: Option<usize>,
}

/// Decodes the header and runs every cheap check against the route's offers (or an earlier
/// quote it still honours). Costs a few microseconds and needs no lock.
pub fn check_payment(
    header: PaymentHeader<'_>,
    route: &Route,
    policy: &VerifyPolicy,
    max_header_bytes: usize,
    now: u64,
) -> Result<PaymentCheck, PaymentRejection> {
    let Some(pricing) = route.pricing.as_ref() else { return Err(VerifyError::RequirementsMismatch.into()) };
    let payment = DecodedPayment::decode(header, max_header_bytes)?;
    let version = payment.version();
    let (checked, honoured) = match payment.check(pricing, policy, now) {
        Ok(checked) => (checked, None),
        Err(error) if error.is_offer_mismatch() => payment.check_honoured(route, policy, now).ok_or(error)?,
        Err(error) => return Err(error.into()),
    };
    Ok(PaymentCheck { version, checked, honoured })
}

/// The route's current pricing (`honoured: None`) or the earlier quote it still honours.
fn paid_pricing(route: &Route, honoured: Option<usize>) -> Option<&Pricing> {
    match honoured {
        None => route.pricing.as_ref(),
        Some(index) => route.honoured.get(index).map(|h| &h.pricing),
    }
}

impl PaymentCheck {
    /// (network, `validBefore`) of what the payment pays: what admission by settlement
    /// capacity judges before the payment is reserved.
    pub fn deadline<'r>(&self, route: &'r Route) -> Option<(&'r str, u64)> {
        let pricing = paid_pricing(route, self.honoured)?;
        let requirement = pricing.requirements.get(self.checked.first_candidate()?)?;
        Some((requirement.network.as_str(), self.checked.authorization.valid_before_secs()))
    }

    /// The CPU-heavy step: secp256k1 recovery must give the authorization's `from`.
    pub fn recover_signer(self) -> Result<SignedPayment, PaymentRejection> {
        let verified = self.checked.recover_signer()?;
        let payer = verified.authorization.from.to_checksum(None);
        Ok(SignedPayment { version: self.version, verified, payer, honoured: self.honoured })
    }
}

impl SignedPayment {
    /// The route's pricing this payment pays: the current one or a quote still honoured.
    fn pricing<'r>(&self, route: &'r Route) -> Option<&'r Pricing> {
        paid_pricing(route, self.honoured)
    }

    /// The payer's checksummed address.
    pub fn payer(&self) -> &str {
        &self.payer
    }

    /// (chain id, token, payer): whose balance the balance check reads.
    pub fn balance_key(&self, route: &Route) -> Option<(u64, Address, Address)> {
        let domain = &self.pricing(route)?.requirements.get(self.verified.requirement_index)?.domain;
        Some((domain.chain_id, domain.verifying_contract, self.verified.authorization.from))
    }
}

/// Reserves a signed payment's nonce and counts it as unsettled; `balance` (the payer's
/// token balance, when the balance check is on) must cover that plus what the payer owes.
/// The ledger's hold is the only side effect (one round trip with a shared store), and
/// [`release_payment`] undoes it if nobody is charged.
pub async fn hold_payment(
    signed: SignedPayment,
    route: &Route,
    guards: &PaymentGuards<'_>,
    now: u64,
    balance: Option<U256>,
) -> Result<AcceptedPayment, PaymentRejection> {
    let (Some(pricing), SignedPayment { version, verified, payer, .. }) = (signed.pricing(route), signed) else {
        return Err(VerifyError::RequirementsMismatch.into());
    };
    let requirement = &pricing.requirements[verified.requirement_index];
    let authorization = verified.authorization;
    let key = ReplayKey {
        chain_id: requirement.domain.chain_id,
        asset: requirement.domain.verifying_contract.into_array(),
        from: authorization.from.into_array(),
        nonce: authorization.nonce.0,
    };
    let decimals = pricing.offers[verified.requirement_index].asset.decimals;
    let accepted = AcceptedPayment {
        version,
        key,
        usd_micros: usd_micros(authorization.value, decimals),
        payer,
        amount: authorization.value,
        network: requirement.network.clone(),
        item: SettlementItem {
            network: requirement.network.clone(),
            chain_id: requirement.domain.chain_id,
            asset: requirement.domain.verifying_contract.to_checksum(None),
            payload: verified.payload,
            valid_before: authorization.valid_before_secs(),
        },
        route: route.name.clone(),
        hold_token: next_hold_token(),
    };
    let receipt_id = receipt_id(&key);
    // Rounded down, unlike a price: a balance must never look larger than it is.
    let balance = balance.map(|b| usd_micros_floor(b, decimals));
    let hold = accepted.hold(&receipt_id, balance, now);
    guards.ledger.hold(&hold).await.map_err(|refusal| PaymentRejection::from_ledger(refusal, &authorization.nonce.to_string()))?;
    if let Some(journal) = guards.shared_journal {
        let nonce = authorization.nonce.to_string();
        match journal.holds_authorization(key.chain_id, &accepted.item.asset, &accepted.payer, &nonce) {
            Ok(false) => {}
            // Charged by the other process: the reservation stays, as for any charged payment.
            Ok(true) => {
                guards.ledger.release(&hold, true).await;
                return Err(PaymentRejection::Replayed(nonce));
            }
            Err(error) => {
                guards.ledger.release(&hold, false).await;
                return Err(PaymentRejection::JournalUnreadable(error));
            }
        }
    }
    Ok(accepted)
}

/// Tells one hold of a nonce from a later one, across replicas: the process's start time
/// in the high bits, a counter in the low ones.
pub(crate) fn next_hold_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| x402_store::unix_now_ms() << 24);
    start ^ NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A payment header, decoded.
enum DecodedPayment {
    V2(v2::PaymentPayload),
    V1(v1::PaymentPayload),
}

impl DecodedPayment {
    fn decode(header: PaymentHeader<'_>, max_header_bytes: usize) -> Result<Self, HeaderError> {
        Ok(match header {
            PaymentHeader::V2(raw) => Self::V2(x402::decode_header(raw, max_header_bytes)?),
            PaymentHeader::V1(raw) => Self::V1(x402::decode_header(raw, max_header_bytes)?),
        })
    }

    fn version(&self) -> u8 {
        match self {
            Self::V2(_) => 2,
            Self::V1(_) => 1,
        }
    }

    fn check(&self, pricing: &Pricing, policy: &VerifyPolicy, now: u64) -> Result<x402_evm::CheckedPayment, VerifyError> {
        match self {
            Self::V2(payment) => x402_evm::check_v2(payment, &pricing.requirements, policy, now),
            Self::V1(payment) => x402_evm::check_v1(payment, &pricing.requirements, policy, now),
        }
    }

    /// The first earlier quote of `route`, still honoured, that this payment fits.
    fn check_honoured(&self, route: &Route, policy: &VerifyPolicy, now: u64) -> Option<(x402_evm::CheckedPayment, Option<usize>)> {
        route
            .honoured
            .iter()
            .enumerate()
            .filter(|(_, h)| h.until > now)
            .find_map(|(index, h)| Some((self.check(&h.pricing, policy, now).ok()?, Some(index))))
    }
}

/// Undoes what [`hold_payment`] held for a payment nobody was charged for: it no longer
/// counts as unsettled. `keep_reservation`: the authorization is used up (journaled already,
/// or the upstream did work for it), so its replay reservation stays until `validBefore`.
pub async fn release_payment(payment: &AcceptedPayment, guards: &PaymentGuards<'_>, keep_reservation: bool) {
    let receipt_id = receipt_id(&payment.key);
    guards.ledger.release(&payment.hold(&receipt_id, None, x402_store::unix_now()), keep_reservation).await;
}

/// `amount` atomic units of a `decimals` token in micro-dollars, rounded down.
fn usd_micros_floor(amount: U256, decimals: u8) -> u64 {
    let value = if decimals >= 6 {
        amount / U256::from(10u64).pow(U256::from(decimals - 6))
    } else {
        amount.saturating_mul(U256::from(10u64).pow(U256::from(6 - decimals)))
    };
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// `amount` atomic units of a `decimals` token in micro-dollars, rounded up so a limit is
/// never under-counted.
pub(crate) fn usd_micros(amount: U256, decimals: u8) -> u64 {
    let value = if decimals >= 6 {
        let unit = U256::from(10u64).pow(U256::from(decimals - 6));
        amount.div_ceil(unit)
    } else {
        amount.saturating_mul(U256::from(10u64).pow(U256::from(6 - decimals)))
    };
    u64::try_from(value).unwrap_or(u64::MAX)
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
    /// What the ledger holds for this payment.
    fn hold<'a>(&'a self, receipt_id: &'a str, balance: Option<u64>, now: u64) -> Hold<'a> {
        Hold {
            key: self.key,
            receipt_id,
            valid_before: self.item.valid_before,
            payer: &self.payer,
            route: &self.route,
            usd_micros: self.usd_micros,
            balance,
            now,
            token: self.hold_token,
        }
    }

    /// The journal row for this payment, charged on `route`.
    pub fn journal_entry(&self, route: &str) -> NewPayment {
        NewPayment {
            receipt_id: receipt_id(&self.key),
            route: route.to_owned(),
            amount: self.amount.to_string(),
            payer: self.payer.clone(),
            nonce: alloy_primitives::B256::from(self.key.nonce).to_string(),
            usd_micros: self.usd_micros,
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
/// A batched payment is settled later, so there is no transaction hash yet: the spec
/// requires `transaction` to be a string, and it is `""` here (as the spec's
/// batch-settlement scheme does), with `extensions["x402-gateway"]` saying the settlement
/// is pending and giving the payment's receipt id and where to look it up. A payment
/// settled before the request was forwarded (`settle: before`) carries its transaction.
pub fn receipt_header(payment: &AcceptedPayment, receipt_id: &str, transaction: Option<&str>) -> (&'static str, String) {
    let receipt = v2::SettleResponse {
        success: true,
        error_reason: None,
        error_message: None,
        payer: Some(payment.payer.clone()),
        transaction: transaction.unwrap_or_default().to_owned(),
        network: payment.network.clone(),
        amount: Some(payment.amount.to_string()),
        extra: serde_json::Map::new(),
        extensions: serde_json::Map::from_iter([(
            "x402-gateway".to_owned(),
            serde_json::json!({
                "settlement": if transaction.is_some() { "settled" } else { "pending" },
                "paymentId": receipt_id,
                "receipt": format!("{RECEIPTS_PATH}{receipt_id}"),
            }),
        )]),
    };
    let name = if payment.version == 1 { x402::headers::X_PAYMENT_RESPONSE } else { x402::headers::PAYMENT_RESPONSE };
    (name, x402::encode_header(&receipt))
}
