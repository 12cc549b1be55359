//! Payment channels on-chain, for the `batch-settlement` scheme: deposits sent before a
//! channel's first response, a confirmed mirror of each channel's escrow state, and claims
//! of many channels' vouchers in one transaction, off the request path.
//!
//! Every transaction goes through the settler's lanes ([`Settler::send_call`]): the
//! settlement key is the channels' `receiverAuthorizer`, and one key has one nonce sequence.
//!
//! Claims are cumulative on-chain (a row says "claimed up to N in total"), so sending one
//! twice, or after a crash, takes nothing twice; what a claim did is read back from the
//! contract (`channels(id)`), never assumed. A channel is due for a claim when its unclaimed
//! value has waited `claim_interval`, or at once when its payer has asked to withdraw:
//! after the withdraw delay the payer could take back what it owes.

use crate::chain::{ChainClient, ChainError, Mined};
use crate::settle_before::lock;
use crate::settler::{LaneCallError, Settler};
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::SignerSync;
use alloy_primitives::{Address, Bytes, B256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use x402_evm::batch_settlement::{calldata, BatchEvent, ChannelConfig, ChannelDomain, CheckedVoucher, ClaimRow, SETTLEMENT_CONTRACT};
use x402_store::{unix_now_ms, ChannelId, ChannelRecord, ChannelStore, ChannelTerms, ClaimerLease, Journal, OnchainChannel, SoleClaimer, StoreUnavailable};

/// Why a claim round stopped; the next one starts over.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Store(#[from] StoreUnavailable),
}

/// When channels are claimed and their escrow state read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPolicy {
    /// Unclaimed value waits at most this long before it is claimed.
    pub claim_interval: Duration,
    /// Escrow state of channels holding unclaimed value is read again this often (a payer's
    /// withdrawal request is seen within it).
    pub refresh_interval: Duration,
    /// Channels per claim transaction.
    pub max_claims_per_transaction: usize,
}

impl Default for ClaimPolicy {
    fn default() -> Self {
        Self { claim_interval: Duration::from_secs(60), refresh_interval: Duration::from_secs(30), max_claims_per_transaction: 100 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DepositError {
    /// The chain refuses it as it stands (bad authorization, unfunded payer, used nonce).
    #[error("the deposit would fail on-chain: {0}")]
    Refused(String),
    /// Mined, but it reverted or did not credit the channel.
    #[error("the deposit transaction {0} did not credit the channel")]
    NotCredited(B256),
    /// Sent, outcome unknown in time; the lane keeps at it.
    #[error("the deposit was sent and is not confirmed yet")]
    Unconfirmed,
    #[error("the chain cannot be reached: {0}")]
    Unavailable(String),
}

/// The channels side of settlement: what the request path asks of the chain, and the claim loop.
pub struct ChannelSettlement {
    settler: Arc<Settler>,
    store: Arc<dyn ChannelStore>,
    journal: Arc<Journal>,
    policy: ClaimPolicy,
    /// Since when each channel has held unclaimed value (Unix ms), as this process saw it.
    unclaimed_since: Mutex<HashMap<ChannelId, u64>>,
    /// Channels in a claim transaction not yet resolved.
    claiming: Mutex<HashSet<ChannelId>>,
    /// The last block whose `WithdrawInitiated` events were read, per network.
    watched_to: Mutex<HashMap<String, u64>>,
    /// Set by an operator: the next round claims every channel holding unclaimed value.
    claim_all: std::sync::atomic::AtomicBool,
    /// Rounds run only while this replica holds it (one claimer per fleet).
    lease: Arc<dyn ClaimerLease>,
    /// The channels' receiver authorizer, when it is not the settlement key: it signs each
    /// claim batch (`claimWithSignature`) and a settlement key sends it.
    authorizer: Option<PrivateKeySigner>,
}

/// A claimer lease outlives a few missed rounds (a busy replica, a slow store) but not a
/// replica that stopped: another one takes over within this.
const CLAIMER_LEASE: Duration = Duration::from_secs(10);

/// On start, `WithdrawInitiated` events are read this far back; channels holding unclaimed
/// value are read again from the contract anyway, since their journaled mirror is stale.
const WATCH_LOOKBACK_BLOCKS: u64 = 1_000;
/// Blocks per `eth_getLogs` request (nodes cap the range).
const WATCH_MAX_RANGE: u64 = 2_000;

impl ChannelSettlement {
    pub fn new(settler: Arc<Settler>, store: Arc<dyn ChannelStore>, journal: Arc<Journal>, policy: ClaimPolicy) -> Self {
        Self {
            settler,
            store,
            journal,
            policy,
            unclaimed_since: Mutex::default(),
            claiming: Mutex::default(),
            watched_to: Mutex::default(),
            claim_all: std::sync::atomic::AtomicBool::new(false),
            lease: Arc::new(SoleClaimer),
            authorizer: None,
        }
    }

    /// Claims with `authorizer`'s signature instead of as the receiver authorizer.
    pub fn with_authorizer(mut self, authorizer: PrivateKeySigner) -> Self {
        self.authorizer = Some(authorizer);
        self
    }

    /// The claim call for `rows` of channels on `chain_id`: signed by the authorizer key when
    /// there is one (any account may send it), else sent by the authorizer itself.
    fn claim_call(&self, chain_id: u64, rows: Vec<ClaimRow>) -> Result<Bytes, ChainError> {
        let Some(authorizer) = &self.authorizer else { return Ok(calldata::claim(rows)) };
        let domain = ChannelDomain::new(chain_id);
        let entries: Vec<(B256, u128, u128)> =
            rows.iter().map(|row| (domain.channel_id(&ChannelConfig::from_sol(&row.voucher.channel)), row.voucher.maxClaimableAmount, row.totalClaimed)).collect();
        let signature = authorizer.sign_hash_sync(&domain.claim_batch_hash(&entries)).map_err(|error| ChainError::Sign(error.to_string()))?;
        Ok(calldata::claim_with_signature(rows, &signature.as_bytes()))
    }

    /// Claims only while `lease` says this replica is the fleet's claimer.
    pub fn with_lease(mut self, lease: Arc<dyn ClaimerLease>) -> Self {
        self.lease = lease;
        self
    }

    fn reader(&self, network: &str) -> Result<ChainClient, ChainError> {
        self.settler.reader(network).ok_or_else(|| ChainError::Rpc(format!("no settlement is configured on {network}")))
    }

    /// The escrow contract's confirmed view of a channel.
    pub async fn read_channel(&self, network: &str, id: B256) -> Result<OnchainChannel, ChainError> {
        let client = self.reader(network)?;
        let decode = |e: alloy_sol_types::Error| ChainError::Decode(e.to_string());
        let (balance, total_claimed) = calldata::decode_channels(&client.call(SETTLEMENT_CONTRACT, calldata::channels(id)).await?).map_err(decode)?;
        let (pending, initiated_at) =
            calldata::decode_pending_withdrawals(&client.call(SETTLEMENT_CONTRACT, calldata::pending_withdrawals(id)).await?).map_err(decode)?;
        Ok(OnchainChannel {
            balance,
            total_claimed,
            withdraw_requested_at: if pending > 0 { initiated_at } else { 0 },
            refund_nonce: 0,
            synced_at_ms: unix_now_ms(),
        })
    }

    /// Sends a checked deposit and waits for it: its transaction and the channel's escrow
    /// state after it. Refused before anything is signed when it would revert.
    pub async fn deposit(&self, network: &str, voucher: &CheckedVoucher) -> Result<(B256, OnchainChannel), DepositError> {
        let Some(deposit) = voucher.deposit.as_ref() else { return Err(DepositError::Refused("no deposit in this payment".into())) };
        let data = calldata::deposit(&voucher.config, deposit);
        let outcome = self.settler.send_call(network, SETTLEMENT_CONTRACT, data).await;
        let credited = match &outcome {
            Ok(Some(mined)) => mined.success && channel_events(mined).any(|event| {
                matches!(event, BatchEvent::Deposited { channel_id, amount, .. } if channel_id == voucher.channel_id && amount == deposit.amount)
            }),
            _ => false,
        };
        let label = match &outcome {
            Ok(Some(_)) if credited => "credited",
            Ok(Some(_)) | Err(LaneCallError::Reverts(_)) => "refused",
            Ok(None) => "unconfirmed",
            Err(_) => "unsent",
        };
        self.settler.metrics().channel_deposits.with_label_values(&[network, label]).inc();
        let mined = match outcome {
            Ok(Some(mined)) => mined,
            Ok(None) => return Err(DepositError::Unconfirmed),
            Err(LaneCallError::Reverts(reason)) => return Err(DepositError::Refused(reason)),
            Err(error) => return Err(DepositError::Unavailable(error.to_string())),
        };
        if !credited {
            return Err(DepositError::NotCredited(mined.transaction));
        }
        let onchain = self.read_channel(network, voucher.channel_id).await.map_err(|e| DepositError::Unavailable(e.to_string()))?;
        Ok((mined.transaction, onchain))
    }

    /// Asks the next claim round (within a second) to claim every channel holding unclaimed
    /// value, whatever its claim interval.
    pub fn claim_all_now(&self) {
        self.claim_all.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Claims due channels and keeps their escrow state fresh until `shutdown`.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let tick = Duration::from_secs(1);
        loop {
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
            if !self.lease.lead(CLAIMER_LEASE).await {
                continue;
            }
            if let Err(error) = self.round().await {
                tracing::warn!(%error, "channel claim round failed; will retry");
            }
        }
    }

    /// One pass: mirror the withdrawals payers asked for, refresh stale mirrors of channels
    /// holding unclaimed value, then claim what is due.
    async fn round(self: &Arc<Self>) -> Result<(), RoundError> {
        self.watch_withdrawals().await?;
        let claim_all = self.claim_all.swap(false, std::sync::atomic::Ordering::Relaxed);
        let now_ms = unix_now_ms();
        let open: Vec<ChannelRecord> = self.store.list().await?.into_iter().filter(|record| record.unclaimed() > 0).collect();
        self.track_unclaimed(&open, now_ms);
        let mut due = Vec::new();
        for record in open {
            let record = self.refreshed(record, now_ms).await?;
            if record.unclaimed() > 0 && (self.is_due(&record, now_ms) || (claim_all && !lock(&self.claiming).contains(&record.id))) {
                due.push(record);
            }
        }
        for ((network, receiver, token), records) in group_for_claims(due) {
            for chunk in records.chunks(self.policy.max_claims_per_transaction.max(1)) {
                self.claim(&network, receiver, token, chunk.to_vec()).await?;
            }
        }
        Ok(())
    }

    /// Reads the escrow's `WithdrawInitiated` events since the last round and mirrors each
    /// one of a channel this gateway serves: its claim is then due at once, and its vouchers
    /// are checked against the withdrawal (see the request path).
    async fn watch_withdrawals(&self) -> Result<(), RoundError> {
        let networks: HashSet<String> = self.store.list().await?.into_iter().map(|record| record.network).collect();
        for network in networks {
            let client = self.reader(&network)?;
            let head = client.head().await?;
            let from = lock(&self.watched_to).get(&network).map_or(head.saturating_sub(WATCH_LOOKBACK_BLOCKS), |last| last + 1);
            if from > head {
                continue;
            }
            let to = head.min(from + WATCH_MAX_RANGE - 1);
            for log in client.logs(SETTLEMENT_CONTRACT, vec![calldata::WITHDRAW_INITIATED_TOPIC], from, to).await? {
                if let Some(BatchEvent::WithdrawInitiated { channel_id, amount, finalize_after }) = calldata::decode_event(&log.data) {
                    self.mirror_withdrawal(&network, channel_id, amount, finalize_after).await?;
                }
            }
            lock(&self.watched_to).insert(network, to);
        }
        Ok(())
    }

    async fn mirror_withdrawal(&self, network: &str, channel_id: B256, amount: u128, finalize_after: u64) -> Result<(), RoundError> {
        let Some(record) = self.store.get(&channel_id.0).await? else { return Ok(()) };
        tracing::warn!(channel = %channel_id, payer = %Address::from(record.terms.payer), amount, finalize_after, unclaimed = record.unclaimed(), "payer asked to withdraw; its channel is claimed now");
        let record = self.remirrored(network, record).await?;
        self.save(vec![record]).await;
        Ok(())
    }

    fn track_unclaimed(&self, open: &[ChannelRecord], now_ms: u64) {
        let mut since = lock(&self.unclaimed_since);
        let open_ids: HashSet<ChannelId> = open.iter().map(|record| record.id).collect();
        since.retain(|id, _| open_ids.contains(id));
        for id in open_ids {
            since.entry(id).or_insert(now_ms);
        }
    }

    fn is_due(&self, record: &ChannelRecord, now_ms: u64) -> bool {
        if lock(&self.claiming).contains(&record.id) {
            return false;
        }
        let waited = lock(&self.unclaimed_since).get(&record.id).map_or(0, |since| now_ms.saturating_sub(*since));
        record.onchain.withdraw_requested_at > 0 || u128::from(waited) >= self.policy.claim_interval.as_millis()
    }

    /// `record` with its escrow state read again if older than `refresh_interval`.
    async fn refreshed(&self, mut record: ChannelRecord, now_ms: u64) -> Result<ChannelRecord, ChainError> {
        let age = Duration::from_millis(now_ms.saturating_sub(record.onchain.synced_at_ms));
        if age < self.policy.refresh_interval || lock(&self.claiming).contains(&record.id) {
            return Ok(record);
        }
        let asked_before = record.onchain.withdraw_requested_at > 0;
        let network = record.network.clone();
        record = self.remirrored(&network, record).await?;
        if record.onchain.withdraw_requested_at > 0 && !asked_before {
            tracing::warn!(channel = %B256::from(record.id), unclaimed = record.unclaimed(), "payer asked to withdraw; claiming its channel now");
        }
        self.save(vec![record.clone()]).await;
        Ok(record)
    }

    /// `record` with the channel as the chain has it now, mirrored into the store (the caller
    /// journals it).
    async fn remirrored(&self, network: &str, mut record: ChannelRecord) -> Result<ChannelRecord, ChainError> {
        record.onchain = self.read_channel(network, B256::from(record.id)).await?;
        if let Err(error) = self.store.mirror(&record.id, record.onchain).await {
            // Requests read the chain again once the stored mirror is stale.
            tracing::warn!(channel = %B256::from(record.id), %error, "cannot record the channel's escrow state in the store");
        }
        Ok(record)
    }

    /// Simulates each channel's claim row alone (one bad row would revert the batch), then
    /// sends the good ones with a settle to `receiver` in one transaction, resolved in the
    /// background.
    async fn claim(self: &Arc<Self>, network: &str, receiver: Address, token: Address, records: Vec<ChannelRecord>) -> Result<(), ChainError> {
        let client = self.reader(network)?;
        let mut rows = Vec::new();
        let mut claimed = Vec::new();
        for record in records {
            let row = calldata::claim_row(&terms_config(&record.terms), record.signed_max, &record.signature, record.charged);
            match client.call(SETTLEMENT_CONTRACT, self.claim_call(record.chain_id, vec![row.clone()])?).await {
                Ok(_) => {
                    rows.push(row);
                    claimed.push(record);
                }
                Err(ChainError::Rejected(reason)) => {
                    tracing::error!(channel = %B256::from(record.id), %reason, unclaimed = record.unclaimed(), "channel claim would revert; left out of the batch")
                }
                Err(error) => return Err(error),
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let ids: Vec<ChannelId> = claimed.iter().map(|record| record.id).collect();
        lock(&self.claiming).extend(ids.iter().copied());
        let chain_id = claimed.first().map_or(0, |record| record.chain_id);
        let data = calldata::multicall(vec![self.claim_call(chain_id, rows)?, calldata::settle(receiver, token)]);
        tracing::info!(network, channels = ids.len(), %receiver, "claiming channels");
        let this = Arc::clone(self);
        let network = network.to_owned();
        tokio::spawn(async move {
            let outcome = this.settler.send_call(&network, SETTLEMENT_CONTRACT, data).await;
            this.resolve_claim(&network, receiver, claimed, outcome).await;
        });
        Ok(())
    }

    /// Reads back what a claim did: each channel's `totalClaimed` from the contract.
    async fn resolve_claim(&self, network: &str, receiver: Address, records: Vec<ChannelRecord>, outcome: Result<Option<Mined>, LaneCallError>) {
        self.count_claim(network, &outcome, receiver);
        let mut updated = Vec::new();
        for record in records {
            let id = B256::from(record.id);
            match self.remirrored(network, record).await {
                Ok(record) => updated.push(record),
                Err(error) => tracing::warn!(channel = %id, %error, "cannot read the channel after its claim; read again next round"),
            }
        }
        let ids: Vec<ChannelId> = updated.iter().map(|record| record.id).collect();
        self.save(updated).await;
        let mut claiming = lock(&self.claiming);
        for id in ids {
            claiming.remove(&id);
        }
        // A channel whose read failed stays out of claims until a later resolve or a restart
        // clears it; its mirror is read again on the next refresh.
    }

    fn count_claim(&self, network: &str, outcome: &Result<Option<Mined>, LaneCallError>, receiver: Address) {
        let metrics = self.settler.metrics();
        let label = match outcome {
            Ok(Some(mined)) if mined.success => "mined",
            Ok(Some(_)) => "reverted",
            Ok(None) => "unconfirmed",
            Err(_) => "unsent",
        };
        metrics.channel_claims.with_label_values(&[network, label]).inc();
        match outcome {
            Ok(Some(mined)) => {
                metrics.channel_claim_gas.with_label_values(&[network]).inc_by(mined.gas_used);
                for event in channel_events(mined) {
                    if let BatchEvent::Settled { receiver: to, token, amount } = event {
                        if to == receiver {
                            let asset = token.to_checksum(None);
                            metrics.channel_value_settled.with_label_values(&[network, asset.as_str()]).inc_by(u64::try_from(amount).unwrap_or(u64::MAX));
                        }
                    }
                }
                tracing::info!(network, tx = %mined.transaction, success = mined.success, gas_used = mined.gas_used, "channel claim mined");
            }
            Ok(None) => tracing::warn!(network, "channel claim not confirmed in time; its channels are read again"),
            Err(error) => tracing::warn!(network, %error, "channel claim not sent"),
        }
    }

    async fn save(&self, records: Vec<ChannelRecord>) {
        if records.is_empty() {
            return;
        }
        // The store's copy is the latest charge; the journal row follows it, mirror included.
        let mut latest = Vec::with_capacity(records.len());
        for record in records {
            latest.push(match self.store.get(&record.id).await {
                Ok(Some(stored)) => ChannelRecord { onchain: record.onchain, ..stored },
                _ => record,
            });
        }
        if let Err(error) = self.journal.save_channels(latest).await {
            tracing::warn!(%error, "cannot journal channel state; the store keeps it and the next charge writes it");
        }
    }
}

/// Due channels by (network, receiver, token): one `settle` pays each receiver per token.
fn group_for_claims(due: Vec<ChannelRecord>) -> BTreeMap<(String, Address, Address), Vec<ChannelRecord>> {
    let mut groups: BTreeMap<(String, Address, Address), Vec<ChannelRecord>> = BTreeMap::new();
    for record in due {
        let key = (record.network.clone(), Address::from(record.terms.receiver), Address::from(record.terms.token));
        groups.entry(key).or_default().push(record);
    }
    groups
}

/// The settlement contract's events in a mined transaction.
fn channel_events(mined: &Mined) -> impl Iterator<Item = BatchEvent> + '_ {
    mined.logs.iter().filter(|log| log.address == SETTLEMENT_CONTRACT).filter_map(|log| calldata::decode_event(&log.data))
}

/// The contract's `ChannelConfig` of stored channel terms.
pub fn terms_config(terms: &ChannelTerms) -> ChannelConfig {
    ChannelConfig {
        payer: Address::from(terms.payer),
        payerAuthorizer: Address::from(terms.payer_authorizer),
        receiver: Address::from(terms.receiver),
        receiverAuthorizer: Address::from(terms.receiver_authorizer),
        token: Address::from(terms.token),
        withdrawDelay: terms.withdraw_delay,
        salt: terms.salt.into(),
    }
}

/// The stored terms of a contract `ChannelConfig`.
pub fn config_terms(config: &ChannelConfig) -> ChannelTerms {
    ChannelTerms {
        payer: config.payer.into_array(),
        payer_authorizer: config.payerAuthorizer.into_array(),
        receiver: config.receiver.into_array(),
        receiver_authorizer: config.receiverAuthorizer.into_array(),
        token: config.token.into_array(),
        withdraw_delay: config.withdrawDelay,
        salt: config.salt.0,
    }
}
