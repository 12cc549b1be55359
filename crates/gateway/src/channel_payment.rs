//! The request path of `batch-settlement` payments: a voucher is checked against the route's
//! channel offer and the channel's record, holds the channel's one request slot, has its
//! deposit (if any) land on-chain before the upstream is called, and is charged (durably)
//! only once the upstream answered billably.
//!
//! The proxy asks two things of it: [`ChannelPayments::hold`] ("admit?") and
//! [`ChannelPayments::charge`]; a held voucher that is not charged is given back with
//! [`ChannelPayments::release`].

use crate::config::{ChannelOffer, Pricing};
use alloy_primitives::{Signature, B256};
use std::sync::Arc;
use std::time::Duration;
use x402::{v2, HeaderError};
use x402_evm::batch_settlement::{self as scheme, response, BatchError, BatchPayload, ChannelView, CheckedVoucher, PayloadKind};
use x402_settle::channels::{config_terms, ChannelSettlement, DepositError};
use crate::channel_exposure::{ChannelCharge, ChannelExposure};
use x402_store::{unix_now, unix_now_ms, ChannelRecord, ChannelRefusal, ChannelStore, ChannelTicket, ExposureRefusal, Journal, LedgerRefusal, OnchainChannel};

/// A mirror older than this is read again before a voucher is checked against it: the
/// official server's longest on-chain state TTL.
const MIRROR_TTL: Duration = Duration::from_secs(300);

/// The slot of a request whose client went away is free again after this at most.
const MIN_SLOT: Duration = Duration::from_secs(5);
const MAX_SLOT: Duration = Duration::from_secs(600);

/// Time a claim needs to land after a request's charge: claim rounds run every second and a
/// claim is due at once on a channel with a pending withdrawal; this leaves room for blocks
/// and fee bumps.
const WITHDRAW_CLAIM_MARGIN: Duration = Duration::from_secs(120);

/// A voucher that passed its checks and holds its channel's request slot.
#[derive(Debug)]
pub struct HeldVoucher {
    pub ticket: ChannelTicket,
    pub network: String,
    pub chain_id: u64,
    pub voucher: CheckedVoucher,
    /// What this request charges.
    pub price: u128,
    /// The channel's escrow state after any deposit.
    pub onchain: OnchainChannel,
    /// The deposit's transaction and amount, when this request opened or topped up the channel.
    pub deposit: Option<(B256, u128)>,
    pub payer: String,
    pub route: String,
    /// The price, counted against the exposure limits until claimed.
    pub charge: ChannelCharge,
}

/// Why a channel payment was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChannelRejection {
    #[error("payment header cannot be read: {0}")]
    Malformed(#[from] HeaderError),
    /// Not valid for this route or channel: 402 with the offers and this reason.
    #[error(transparent)]
    Invalid(#[from] BatchError),
    /// The voucher is signed on another cumulative base: the corrective 402, carrying the
    /// channel's state and our last voucher so the official client can resync.
    #[error("{error}")]
    Resync { error: BatchError, record: Box<ChannelRecord> },
    /// The deposit cannot land: 402.
    #[error("{0}")]
    Deposit(DepositError),
    /// The chain could not be asked (or a deposit not confirmed in time): 503, nothing charged.
    #[error("{0}; nothing was charged, retry shortly")]
    Unavailable(String),
    /// Over an exposure limit, a blocked payer or a spent loss budget.
    #[error(transparent)]
    OverExposure(ExposureRefusal),
}

impl ChannelRejection {
    pub fn reason(&self) -> x402::ReasonCode {
        match self {
            Self::Malformed(_) => x402::ReasonCode::InvalidPayload,
            Self::Invalid(error) | Self::Resync { error, .. } => error.reason(),
            Self::Deposit(_) => x402::ReasonCode::InvalidBatchSettlementEvmDepositSimulationFailed,
            Self::Unavailable(_) => x402::ReasonCode::UnexpectedVerifyError,
            Self::OverExposure(ExposureRefusal::LossBudgetSpent { .. }) => x402::ReasonCode::UnexpectedSettleError,
            Self::OverExposure(ExposureRefusal::Blocked { reason, .. }) if reason.contains("balance") => {
                x402::ReasonCode::InvalidBatchSettlementEvmInsufficientBalance
            }
            // As for `exact`: no code names a credit limit; the message says which and when.
            Self::OverExposure(_) => x402::ReasonCode::InvalidTransactionState,
        }
    }
}

/// A charged request: the response header to add.
pub struct ChargedVoucher {
    pub header: (&'static str, String),
    pub record: ChannelRecord,
}

/// What the proxy holds for channel payments.
pub struct ChannelPayments {
    pub store: Arc<dyn ChannelStore>,
    pub settlement: Option<Arc<ChannelSettlement>>,
    pub journal: Arc<Journal>,
    pub exposure: Arc<ChannelExposure>,
}

impl ChannelPayments {
    /// The channel offer of `pricing` this payment answers, if it is a `batch-settlement` one.
    pub fn offer_for<'p>(pricing: &'p Pricing, payment: &v2::PaymentPayload) -> Option<&'p ChannelOffer> {
        pricing.channel_offers.iter().find(|offer| offer.wire == payment.accepted)
    }

    /// Checks a channel payment and holds its channel: reads the channel's escrow state when
    /// the gateway has no fresh copy, and sends the deposit a `deposit` payload carries.
    pub async fn hold(&self, route: &str, offer: &ChannelOffer, payment: &v2::PaymentPayload, max_timeout_seconds: u64) -> Result<HeldVoucher, ChannelRejection> {
        let payload = BatchPayload::from_json(&payment.payload)?;
        if payload.kind() == PayloadKind::Refund {
            return Err(BatchError::Payload("cooperative refunds are not offered by this gateway yet; a payer withdraws through the escrow contract".into()).into());
        }
        let channel_id = offer.batch.channel_domain.channel_id(payload.channel_config());
        let now_ms = unix_now_ms();
        let slot = Duration::from_secs(max_timeout_seconds).clamp(MIN_SLOT, MAX_SLOT);
        let (ticket, stored) = match self.store.begin(&channel_id.0, now_ms, now_ms + slot.as_millis() as u64).await {
            Ok(held) => held,
            Err(ChannelRefusal::Unavailable(error)) => return Err(ChannelRejection::Unavailable(format!("{error}; nothing was charged"))),
            Err(_) => return Err(BatchError::ChannelBusy.into()),
        };
        match self.check(offer, &payload, channel_id, stored, slot).await {
            Ok((voucher, onchain)) => {
                let usd_micros = crate::payment::usd_micros(alloy_primitives::U256::from(offer.batch.price), offer.offer.asset.decimals);
                let payer = voucher.payer.to_checksum(None);
                let cumulative = voucher.charged_before.saturating_add(offer.batch.price);
                let charge = match self.exposure.admit(&channel_id.0, cumulative, &payer, route, usd_micros).await {
                    Ok(charge) => charge,
                    Err(refusal) => {
                        self.store.cancel(ticket).await;
                        return Err(match refusal {
                            LedgerRefusal::Exposure(refusal) => ChannelRejection::OverExposure(refusal),
                            other => ChannelRejection::Unavailable(format!("{other}; nothing was charged")),
                        });
                    }
                };
                let held = self.finish_hold(offer, ticket, voucher, onchain, route, charge.clone()).await;
                if held.is_err() {
                    self.exposure.release(&charge).await;
                }
                held
            }
            Err(rejection) => {
                self.store.cancel(ticket).await;
                Err(rejection)
            }
        }
    }

    async fn check(&self, offer: &ChannelOffer, payload: &BatchPayload, channel_id: B256, stored: Option<ChannelRecord>, slot: Duration) -> Result<(CheckedVoucher, OnchainChannel), ChannelRejection> {
        // A pending withdrawal is always read again: its balance may be about to leave.
        let fresh = stored.as_ref().filter(|record| {
            record.onchain.withdraw_requested_at == 0 && unix_now_ms().saturating_sub(record.onchain.synced_at_ms) < MIRROR_TTL.as_millis() as u64
        });
        let onchain = match fresh {
            Some(record) => record.onchain,
            None => self.read_channel(&offer.offer.network_id, channel_id).await?,
        };
        refuse_near_withdrawal(&onchain, payload.channel_config().withdrawDelay, slot)?;
        let view = ChannelView { charged_cumulative: stored.as_ref().map(|record| record.charged), balance: onchain.balance, total_claimed: onchain.total_claimed };
        match scheme::verify_batch_voucher(payload, &offer.batch, &view, unix_now()) {
            Ok(voucher) => Ok((voucher, onchain)),
            Err(error) if error.is_corrective() => {
                let record = stored.unwrap_or_else(|| unknown_record(offer, payload, channel_id, onchain));
                Err(ChannelRejection::Resync { error, record: Box::new(record) })
            }
            Err(error) => Err(error.into()),
        }
    }

    async fn read_channel(&self, network: &str, channel_id: B256) -> Result<OnchainChannel, ChannelRejection> {
        let settlement = self.settlement.as_ref().ok_or_else(|| ChannelRejection::Unavailable("the settler is not running".into()))?;
        settlement.read_channel(network, channel_id).await.map_err(|error| ChannelRejection::Unavailable(format!("the channel's escrow state cannot be read ({error})")))
    }

    async fn finish_hold(&self, offer: &ChannelOffer, ticket: ChannelTicket, voucher: CheckedVoucher, onchain: OnchainChannel, route: &str, charge: ChannelCharge) -> Result<HeldVoucher, ChannelRejection> {
        let network = offer.offer.network_id.clone();
        let mut held = HeldVoucher {
            ticket,
            payer: voucher.payer.to_checksum(None),
            network,
            chain_id: offer.batch.chain_id(),
            price: offer.batch.price,
            onchain,
            deposit: None,
            voucher,
            route: route.to_owned(),
            charge,
        };
        if held.voucher.deposit.is_none() {
            return Ok(held);
        }
        let Some(settlement) = self.settlement.as_ref() else {
            self.store.cancel(held.ticket).await;
            return Err(ChannelRejection::Unavailable("the settler is not running".into()));
        };
        match settlement.deposit(&held.network, &held.voucher).await {
            Ok((transaction, onchain)) => {
                let amount = held.voucher.deposit.as_ref().map_or(0, |deposit| deposit.amount);
                tracing::info!(payer = %held.payer, channel = %held.voucher.channel_id, tx = %transaction, amount, balance = onchain.balance, "channel deposit landed");
                held.onchain = onchain;
                held.deposit = Some((transaction, amount));
                if held.voucher.max_claimable > onchain.balance {
                    self.store.cancel(held.ticket).await;
                    return Err(BatchError::CumulativeExceedsBalance { signed: held.voucher.max_claimable, balance: onchain.balance }.into());
                }
                Ok(held)
            }
            Err(error) => {
                self.store.cancel(held.ticket).await;
                Err(match error {
                    DepositError::Unavailable(why) => ChannelRejection::Unavailable(format!("the deposit cannot be sent ({why})")),
                    DepositError::Unconfirmed => ChannelRejection::Unavailable("the deposit was sent but is not confirmed yet; send the same payment again shortly".into()),
                    other => ChannelRejection::Deposit(other),
                })
            }
        }
    }

    /// Charges a held voucher after a billable answer: the channel's new charged total is on
    /// disk before this returns, and the receipt header tells the client what it was charged.
    ///
    /// The store takes the charge first, atomically with the check that this request still
    /// holds the channel (a request whose slot expired and was taken over must not charge the
    /// same increment a second time); the journal then makes it durable.
    pub async fn charge(&self, held: HeldVoucher) -> Result<ChargedVoucher, String> {
        let charged = match scheme::charge(held.voucher.charged_before, held.price, held.voucher.max_claimable) {
            Ok(charged) => charged,
            Err(error) => {
                self.release(held).await;
                return Err(error.to_string());
            }
        };
        let record = ChannelRecord {
            id: held.voucher.channel_id.0,
            network: held.network.clone(),
            chain_id: held.chain_id,
            terms: config_terms(&held.voucher.config),
            charged,
            signed_max: held.voucher.max_claimable,
            signature: held.voucher.signature.as_bytes().to_vec(),
            onchain: held.onchain,
            last_charged_at_ms: unix_now_ms(),
        };
        if let Err(refusal) = self.store.commit(held.ticket, record.clone()).await {
            self.exposure.release(&held.charge).await;
            return Err(refusal.to_string());
        }
        // Charged in the store from here on, even if the journal write below fails.
        self.exposure.charged(record.id, record.charged, held.charge);
        self.journal.save_channels(vec![record.clone()]).await.map_err(|error| format!("the charge could not be recorded: {error}"))?;
        let header = receipt_header(&held.network, &held.payer, &record, held.price, held.deposit);
        Ok(ChargedVoucher { header, record })
    }

    /// Gives a held voucher's slot back: nothing is charged, and the next voucher of the
    /// channel repeats the amount.
    pub async fn release(&self, held: HeldVoucher) {
        self.exposure.release(&held.charge).await;
        self.store.cancel(held.ticket).await;
    }
}

/// Refuses a voucher whose charge could not be claimed before the payer's pending withdrawal
/// may be finalized: after that the payer can take back what the voucher pays.
fn refuse_near_withdrawal(onchain: &OnchainChannel, withdraw_delay: u64, slot: Duration) -> Result<(), BatchError> {
    if onchain.withdraw_requested_at == 0 {
        return Ok(());
    }
    let finalize_after = onchain.withdraw_requested_at.saturating_add(withdraw_delay);
    let now = unix_now();
    if now.saturating_add((slot + WITHDRAW_CLAIM_MARGIN).as_secs()) >= finalize_after {
        return Err(BatchError::WithdrawalFinalizing { finalize_after, now });
    }
    Ok(())
}

/// A record for a channel the gateway has no copy of, to answer a corrective 402 with: the
/// chain's claimed total is what it has surely been charged.
fn unknown_record(offer: &ChannelOffer, payload: &BatchPayload, channel_id: B256, onchain: OnchainChannel) -> ChannelRecord {
    ChannelRecord {
        id: channel_id.0,
        network: offer.offer.network_id.clone(),
        chain_id: offer.batch.chain_id(),
        terms: config_terms(payload.channel_config()),
        charged: onchain.total_claimed,
        signed_max: 0,
        signature: Vec::new(),
        onchain,
        last_charged_at_ms: 0,
    }
}

/// The snapshot the scheme's responses describe a channel with.
pub fn snapshot(record: &ChannelRecord) -> response::ChannelSnapshot {
    response::ChannelSnapshot {
        channel_id: B256::from(record.id),
        balance: record.onchain.balance,
        total_claimed: record.onchain.total_claimed,
        withdraw_requested_at: record.onchain.withdraw_requested_at,
        refund_nonce: record.onchain.refund_nonce,
        charged_cumulative: record.charged,
    }
}

/// The stored last voucher (`signedMaxClaimable`, signature), when there is one.
pub fn last_voucher(record: &ChannelRecord) -> Option<(u128, Signature)> {
    if record.signature.len() != 65 {
        return None;
    }
    Signature::try_from(record.signature.as_slice()).ok().map(|signature| (record.signed_max, signature))
}

/// `PAYMENT-RESPONSE` for a charged voucher (and the deposit it brought, if any).
fn receipt_header(network: &str, payer: &str, record: &ChannelRecord, price: u128, deposit: Option<(B256, u128)>) -> (&'static str, String) {
    let receipt = v2::SettleResponse {
        success: true,
        error_reason: None,
        error_message: None,
        payer: Some(payer.to_owned()),
        transaction: deposit.map(|(transaction, _)| transaction.to_string()).unwrap_or_default(),
        network: network.to_owned(),
        amount: Some(deposit.map(|(_, amount)| amount.to_string()).unwrap_or_default()),
        extra: response::settle_extra(&snapshot(record), Some(price)),
        extensions: serde_json::Map::new(),
    };
    (x402::headers::PAYMENT_RESPONSE, x402::encode_header(&receipt))
}

/// One channel as operators see it (admin `GET /channels`, `x402-gateway channels`):
/// amounts in the token's atomic units, as strings; times in Unix seconds.
pub fn channel_json(record: &ChannelRecord) -> serde_json::Value {
    let address = |bytes: [u8; 20]| alloy_primitives::Address::from(bytes).to_checksum(None);
    let requested_at = record.onchain.withdraw_requested_at;
    serde_json::json!({
        "channelId": B256::from(record.id).to_string(),
        "network": record.network,
        "payer": address(record.terms.payer),
        "payTo": address(record.terms.receiver),
        "token": address(record.terms.token),
        "withdrawDelaySeconds": record.terms.withdraw_delay,
        "deposit": record.onchain.balance.to_string(),
        "charged": record.charged.to_string(),
        "claimed": record.onchain.total_claimed.to_string(),
        "unclaimed": record.unclaimed().to_string(),
        "withdrawRequestedAt": (requested_at > 0).then_some(requested_at),
        "withdrawDeadline": (requested_at > 0).then(|| requested_at.saturating_add(record.terms.withdraw_delay)),
        "lastChargedAt": (record.last_charged_at_ms > 0).then_some(record.last_charged_at_ms / 1000),
        "chainReadAt": (record.onchain.synced_at_ms > 0).then_some(record.onchain.synced_at_ms / 1000),
    })
}

/// Channels for operators, most unclaimed value first.
pub fn channels_by_unclaimed(mut records: Vec<ChannelRecord>) -> Vec<ChannelRecord> {
    records.sort_by(|a, b| b.unclaimed().cmp(&a.unclaimed()).then(b.last_charged_at_ms.cmp(&a.last_charged_at_ms)));
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending_since(requested_at: u64) -> OnchainChannel {
        OnchainChannel { balance: 100, withdraw_requested_at: requested_at, ..OnchainChannel::default() }
    }

    #[test]
    fn vouchers_stop_when_a_claim_could_not_land_before_the_withdrawal() {
        let slot = Duration::from_secs(30);
        assert!(refuse_near_withdrawal(&OnchainChannel::default(), 900, slot).is_ok(), "no withdrawal pending");
        assert!(refuse_near_withdrawal(&pending_since(unix_now()), 900, slot).is_ok(), "900 s left");
        let late = unix_now() - 900 + 30 + 120;
        let error = refuse_near_withdrawal(&pending_since(late), 900, slot).unwrap_err();
        assert_eq!(error.reason(), x402::ReasonCode::InvalidBatchSettlementEvmInsufficientBalance);
        assert!(refuse_near_withdrawal(&pending_since(unix_now() - 2_000), 900, slot).is_err(), "finalizable already");
    }
}
