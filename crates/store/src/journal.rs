//! The settlement journal: every payment whose response was released, on its way to the
//! chain (`accepted → submitted → settled | failed`), in SQLite on local disk.
//!
//! Why SQLite (bundled, WAL mode, `synchronous=FULL` by default): a commit is durable once it
//! returns, a crash at any point leaves the last committed state, and other processes (the
//! `x402-gateway payments` CLI) can read the live file while the gateway writes it.
//!
//! All writes go through one writer thread that commits whatever has queued up in one
//! transaction (group commit): concurrent requests share one fsync. A write's future
//! resolves only after its transaction is committed, so a caller that awaits it knows the
//! change is on disk.
//!
//! Settlement transactions are journaled *before* they are broadcast (`batches`: the signed
//! raw transaction and its hash), so after a crash the settler can find out what happened to
//! each one on-chain, or send the very same transaction again, instead of signing a new one
//! blindly.
//!
//! Upkeep ([`Journal::prune`]) keeps the file from growing without bound: finished payments
//! past their retention, finished batches, expired payer blocks and superseded loss-budget
//! resets are deleted in bounded passes on the writer; a finished batch's signed bytes are
//! dropped when it finishes. `x402-gateway payments export` keeps the audit trail first.

use rusqlite::{params, Connection, OpenFlags, Row};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, LazyLock, Mutex};
use tokio::sync::{oneshot, Notify};
use crate::exposure::PayerBlock;
use x402::{ExactEvmAuthorization, ExactEvmPayload};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("journal: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("journal commit failed: {0}")]
    Commit(String),
    #[error("this authorization is already in the journal (payment {0})")]
    Duplicate(String),
    #[error("the journal writer has stopped")]
    Closed,
    #[error("journal row {id}: {what}")]
    Corrupt { id: u64, what: String },
    #[error("every journal connection for this kind of read is busy; try again")]
    Busy,
}

/// What the settler needs to put one payment on-chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementItem {
    /// CAIP-2 network id.
    pub network: String,
    pub chain_id: u64,
    /// Token contract, checksummed 0x-hex.
    pub asset: String,
    /// The signed authorization, as the client sent it.
    pub payload: ExactEvmPayload,
    /// `validBefore`, Unix seconds: the settlement deadline.
    pub valid_before: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentState {
    Accepted,
    Submitted { transaction: String },
    Settled { transaction: String },
    Failed { reason: String },
}

impl PaymentState {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Submitted { .. } => "submitted",
            Self::Settled { .. } => "settled",
            Self::Failed { .. } => "failed",
        }
    }

    pub fn transaction(&self) -> Option<&str> {
        match self {
            Self::Submitted { transaction } | Self::Settled { transaction } => Some(transaction),
            _ => None,
        }
    }

    pub fn is_unsettled(&self) -> bool {
        matches!(self, Self::Accepted | Self::Submitted { .. })
    }

    fn from_columns(id: u64, name: &str, transaction: Option<String>, failure: Option<String>) -> Result<Self, JournalError> {
        let corrupt = |what: &str| JournalError::Corrupt { id, what: what.to_owned() };
        Ok(match name {
            "accepted" => Self::Accepted,
            "submitted" => Self::Submitted { transaction: transaction.ok_or_else(|| corrupt("submitted without a transaction"))? },
            "settled" => Self::Settled { transaction: transaction.ok_or_else(|| corrupt("settled without a transaction"))? },
            "failed" => Self::Failed { reason: failure.unwrap_or_default() },
            other => return Err(corrupt(&format!("unknown state {other:?}"))),
        })
    }
}

/// A payment to record: the response it paid for is about to be released.
#[derive(Debug, Clone)]
pub struct NewPayment {
    /// The public id the payer can look the payment up by.
    pub receipt_id: String,
    pub route: String,
    /// Atomic units, decimal.
    pub amount: String,
    /// Checksummed payer address.
    pub payer: String,
    /// The authorization nonce, lower-case 0x-hex: with chain, asset and payer, what the
    /// token itself keys used authorizations by.
    pub nonce: String,
    /// The amount in micro-dollars, as exposure limits count it.
    pub usd_micros: u64,
    pub item: SettlementItem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRecord {
    pub id: u64,
    pub receipt_id: String,
    pub route: String,
    pub amount: String,
    pub payer: String,
    pub usd_micros: u64,
    /// Unix milliseconds.
    pub accepted_at_ms: u64,
    pub updated_at_ms: u64,
    pub item: SettlementItem,
    pub state: PaymentState,
    /// Settlement transactions this payment was sent in.
    pub attempts: u32,
}

/// A settlement transaction, signed and journaled before it is broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRecord {
    /// 0x-hex transaction hash.
    pub transaction: String,
    pub network: String,
    /// The signed transaction, EIP-2718 encoded: what `eth_sendRawTransaction` takes.
    pub raw: Vec<u8>,
    pub sent_at_ms: u64,
}

/// Which payments [`Journal::list`] returns.
#[derive(Debug, Clone, Default)]
pub struct PaymentFilter {
    pub state: Option<String>,
    pub payer: Option<String>,
    pub limit: usize,
}

#[derive(Debug, Clone)]
pub struct JournalOptions {
    /// Commit every queued write in one transaction (one fsync). Off: one transaction per
    /// write, for comparison.
    pub group_commit: bool,
    pub sync: JournalSync,
    /// Connections kept for [`Journal::receipt`]; 0: one per core. A caller that holds at
    /// most one at a time (a proxy worker thread) never waits for one if there are at least
    /// as many as such callers.
    pub receipt_readers: usize,
}

impl Default for JournalOptions {
    fn default() -> Self {
        Self { group_commit: true, sync: JournalSync::Full, receipt_readers: 0 }
    }
}

/// What [`Journal::prune`] may delete, and how much of it in one pass.
#[derive(Debug, Clone, Copy)]
pub struct PrunePolicy {
    /// Settled and failed payments whose `validBefore` is more than this in the past go,
    /// and batches finished and sent longer ago than this.
    pub retention: std::time::Duration,
    /// Unix milliseconds: the time the retention is counted back from.
    pub now_ms: u64,
    /// Most payments, and most batches, deleted in one pass (one write transaction).
    pub max_rows: usize,
}

/// How many rows one [`Journal::prune`] pass deleted, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub payments: u64,
    pub payment_transactions: u64,
    pub batches: u64,
    pub payer_blocks: u64,
    pub loss_resets: u64,
    /// A pass stopped at its row bound: another may find more.
    pub more: bool,
}

impl PruneReport {
    /// (table, rows deleted) for every table, for metrics and logs.
    pub fn by_table(&self) -> [(&'static str, u64); 5] {
        [
            ("payments", self.payments),
            ("payment_transactions", self.payment_transactions),
            ("batches", self.batches),
            ("payer_blocks", self.payer_blocks),
            ("loss_resets", self.loss_resets),
        ]
    }

    pub fn total(&self) -> u64 {
        self.by_table().iter().map(|(_, rows)| rows).sum()
    }
}

/// Sums passes; `more` is the later pass's.
impl std::ops::AddAssign for PruneReport {
    fn add_assign(&mut self, later: Self) {
        self.payments += later.payments;
        self.payment_transactions += later.payment_transactions;
        self.batches += later.batches;
        self.payer_blocks += later.payer_blocks;
        self.loss_resets += later.loss_resets;
        self.more = later.more;
    }
}

/// How far back the loss budget counts failed payments when it is rebuilt at start: a
/// failed payment younger than this is kept whatever the retention, so pruning never
/// forgives a loss the budget still counts.
pub const LOSS_WINDOW_MS: u64 = 86_400_000;

/// Which payments [`JournalReader::export`] streams.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    /// One state name, or every state.
    pub state: Option<String>,
    /// Only payments whose state last changed at or after this (Unix milliseconds), so
    /// repeated exports can each take what changed since the one before.
    pub since_ms: u64,
}

/// When a commit counts as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalSync {
    /// fsync per commit (SQLite `synchronous = FULL`): a payment whose response was released
    /// survives a power cut or a kernel crash.
    Full,
    /// No fsync per commit (`synchronous = NORMAL` in WAL mode; the log is synced at
    /// checkpoints): a payment survives the gateway crashing or being killed, since the
    /// kernel holds the write, but the last commits before a power cut or a kernel crash can
    /// be lost, and with them money already served. An operator's trade for latency.
    Normal,
}

impl JournalSync {
    fn pragma(self) -> &'static str {
        match self {
            Self::Full => "PRAGMA synchronous = FULL;",
            Self::Normal => "PRAGMA synchronous = NORMAL;",
        }
    }
}

/// The writer thread runs an operation inside the open transaction (`None`: no transaction
/// could be opened, so nothing may be written) and hands back what to tell its caller once
/// the commit is known.
type Reply = Box<dyn FnOnce(Result<(), JournalError>) + Send>;
type Operation = Box<dyn FnOnce(Option<&Connection>) -> Reply + Send>;

/// Most writes one transaction carries, so one slow group cannot grow without bound.
const MAX_GROUP: usize = 1024;

/// How often the checkpointer copies the log into the database file, when anything was
/// committed since its last copy. Short, because what stalls commits is the size of each
/// copy and its fsync: at 3,300 paid requests/s with `journal_sync: normal`, p99 latency
/// was 10-16 ms checkpointing every 200 ms, 32-37 ms every 1 s or more, and 3-5 ms every
/// 25 ms, for about 3% more CPU per payment. With `full` it matters less (4-5 ms either way).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(25);

/// The log size (pages of 4 KiB) at which the writer checkpoints itself. Under sustained
/// writes the background checkpoints never quite catch up with the log's end, and only a
/// checkpoint between two commits lets the log start over; ten times SQLite's default
/// makes that stall ten times rarer.
const WRITER_CHECKPOINT_PAGES: u32 = 10_000;

/// Copies the write-ahead log into the database file on its own thread and connection
/// (passive checkpoints: they never block the writer), so that work and its fsyncs are not
/// done inside a commit that paid responses are waiting for.
struct Checkpointer {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    /// `connection`: its own, with the writer's `synchronous` setting (checkpoints sync by it).
    /// `commits`: the writer's count of commits, so an idle journal is left alone.
    fn start(connection: Connection, commits: Arc<AtomicU64>) -> Result<Self, JournalError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("journal-checkpoint".into())
            .spawn(move || {
                let mut copied = 0;
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                    let committed = commits.load(Ordering::Relaxed);
                    if committed == copied {
                        continue;
                    }
                    copied = committed;
                    if let Err(error) = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::warn!(%error, "journal checkpoint failed; the writer's own checkpoints still bound the log");
                    }
                }
            })
            .map_err(|e| JournalError::Commit(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Self { stop, thread })
    }

    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS payments (
    id INTEGER PRIMARY KEY,
    receipt_id TEXT NOT NULL UNIQUE,
    route TEXT NOT NULL,
    network TEXT NOT NULL,
    chain_id INTEGER NOT NULL,
    asset TEXT NOT NULL,
    payer TEXT NOT NULL,
    nonce TEXT NOT NULL,
    amount TEXT NOT NULL,
    usd_micros INTEGER NOT NULL,
    pay_to TEXT NOT NULL,
    valid_after TEXT NOT NULL,
    valid_before INTEGER NOT NULL,
    auth_from TEXT NOT NULL,
    auth_value TEXT NOT NULL,
    auth_nonce TEXT NOT NULL,
    signature TEXT NOT NULL,
    state TEXT NOT NULL,
    transaction_hash TEXT,
    failure TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    accepted_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    UNIQUE (chain_id, asset, payer, nonce)
);
-- Partial indexes: only payments still on their way to the chain are in them, so they stay
-- small and hot however long the journal grows, and a settled payment costs them nothing.
-- A query uses one only if it repeats its WHERE term word for word (see UNSETTLED).
CREATE INDEX IF NOT EXISTS payments_unsettled ON payments (network, state, valid_before)
    WHERE state IN ('accepted', 'submitted');
CREATE INDEX IF NOT EXISTS payments_in_flight ON payments (transaction_hash) WHERE state = 'submitted';
-- Payments the settler gave up on, while a transaction of theirs may still land.
CREATE INDEX IF NOT EXISTS payments_given_up ON payments (network, valid_before) WHERE state = 'failed' AND failure LIKE '%gave up after%';
-- Finished payments by deadline, for pruning. Rows enter it when they settle or fail, on the
-- settler's batched update, never on the paid request's insert.
CREATE INDEX IF NOT EXISTS payments_finished ON payments (valid_before) WHERE state IN ('settled', 'failed');
-- Earlier journals indexed every row three more times; each paid request paid for it.
DROP INDEX IF EXISTS payments_by_state;
DROP INDEX IF EXISTS payments_by_payer;
DROP INDEX IF EXISTS payments_by_transaction;
-- When an operator last emptied the loss budget: losses before it are not counted again.
CREATE TABLE IF NOT EXISTS loss_resets (at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS payer_blocks (
    payer TEXT PRIMARY KEY COLLATE NOCASE,
    until INTEGER NOT NULL,
    reason TEXT NOT NULL
);
-- Every settlement transaction a payment was sent in, so reconciliation can read their
-- receipts before it searches anyone else's logs.
CREATE TABLE IF NOT EXISTS payment_transactions (
    payment_id INTEGER NOT NULL,
    transaction_hash TEXT NOT NULL,
    PRIMARY KEY (payment_id, transaction_hash)
);
CREATE TABLE IF NOT EXISTS batches (
    transaction_hash TEXT PRIMARY KEY,
    network TEXT NOT NULL,
    raw BLOB NOT NULL,
    sent_at_ms INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0
);
-- Open batches are few whatever the journal's age: recovery and the settler read only these.
CREATE INDEX IF NOT EXISTS batches_open ON batches (network, sent_at_ms) WHERE done = 0;
CREATE INDEX IF NOT EXISTS batches_done ON batches (sent_at_ms) WHERE done = 1;
-- Payment channels of the batch-settlement scheme: one row each, rewritten on every charge.
-- Ids, addresses and salts are raw bytes; amounts are uint128 in decimal text (SQLite's
-- integers stop at 2^63).
CREATE TABLE IF NOT EXISTS channels (
    id BLOB PRIMARY KEY,
    network TEXT NOT NULL,
    chain_id INTEGER NOT NULL,
    payer BLOB NOT NULL,
    payer_authorizer BLOB NOT NULL,
    receiver BLOB NOT NULL,
    receiver_authorizer BLOB NOT NULL,
    token BLOB NOT NULL,
    withdraw_delay INTEGER NOT NULL,
    salt BLOB NOT NULL,
    charged TEXT NOT NULL,
    signed_max TEXT NOT NULL,
    signature BLOB NOT NULL,
    balance TEXT NOT NULL,
    total_claimed TEXT NOT NULL,
    withdraw_requested_at INTEGER NOT NULL,
    refund_nonce INTEGER NOT NULL,
    synced_at_ms INTEGER NOT NULL,
    last_charged_at_ms INTEGER NOT NULL
);
";

/// The `payments_unsettled` index's condition, which a query must repeat to use it.
const UNSETTLED: &str = "state IN ('accepted', 'submitted')";

const COLUMNS: &str = "id, receipt_id, route, network, chain_id, asset, payer, amount, usd_micros, pay_to, valid_after, valid_before,
    auth_from, auth_value, auth_nonce, signature, state, transaction_hash, failure, attempts, accepted_at_ms, updated_at_ms";

// The queries the settler, the probes and the metrics run over and over: each is served by a
// partial index (a test checks the plans), never by a scan of the whole journal.
static ACCEPTED: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {COLUMNS} FROM payments WHERE {UNSETTLED} AND state = 'accepted' AND network = ?1 ORDER BY valid_before, id LIMIT ?2")
});
static SUBMITTED_IN: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {COLUMNS} FROM payments WHERE state = 'submitted' AND transaction_hash = ?1 ORDER BY id"));
static GIVEN_UP: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {COLUMNS} FROM payments WHERE state = 'failed' AND failure LIKE '%gave up after%' AND network = ?1 AND valid_before > ?2 ORDER BY valid_before")
});
// `+id`: ordering by the bare rowid would make the planner walk the whole table to skip a sort.
static UNSETTLED_ROWS: LazyLock<String> = LazyLock::new(|| format!("SELECT {COLUMNS} FROM payments WHERE {UNSETTLED} ORDER BY +id"));
static UNSETTLED_COUNT: LazyLock<String> = LazyLock::new(|| format!("SELECT count(*) FROM payments WHERE {UNSETTLED}"));
static OLDEST_UNSETTLED: LazyLock<String> = LazyLock::new(|| format!("SELECT min(accepted_at_ms) FROM payments WHERE {UNSETTLED}"));
static EARLIEST_DEADLINE: LazyLock<String> = LazyLock::new(|| format!("SELECT min(valid_before) FROM payments WHERE {UNSETTLED}"));
const OPEN_BATCHES: &str =
    "SELECT transaction_hash, network, raw, sent_at_ms FROM batches WHERE done = 0 AND network = ?1 ORDER BY sent_at_ms";
static BY_RECEIPT: LazyLock<String> = LazyLock::new(|| format!("SELECT {COLUMNS} FROM payments WHERE receipt_id = ?1"));
/// Finished payments past retention (`?1`: `validBefore` before it), a failure only once
/// the loss budget has stopped counting it (`?2`: failed before it, Unix ms).
const PRUNABLE_PAYMENTS: &str = "SELECT id FROM payments WHERE state IN ('settled', 'failed') AND valid_before < ?1
    AND (state = 'settled' OR updated_at_ms < ?2) LIMIT ?3";
const PRUNE_BATCHES: &str =
    "DELETE FROM batches WHERE rowid IN (SELECT rowid FROM batches WHERE done = 1 AND sent_at_ms < ?1 LIMIT ?2)";
const TRANSACTIONS_OF: &str = "SELECT transaction_hash FROM payment_transactions WHERE payment_id = ?1 ORDER BY rowid DESC";
static UNSETTLED_DEADLINES: LazyLock<String> =
    LazyLock::new(|| format!("SELECT valid_before FROM payments WHERE {UNSETTLED} AND network = ?1 ORDER BY valid_before"));
/// One seek in the `UNIQUE (chain_id, asset, payer, nonce)` index.
const HOLDS_AUTHORIZATION: &str = "SELECT 1 FROM payments WHERE chain_id = ?1 AND asset = ?2 AND payer = ?3 AND nonce = ?4";

/// The durable journal. Reads run on their own connection beside the writer (WAL lets
/// readers and the writer proceed together).
pub struct Journal {
    path: PathBuf,
    operations: Mutex<Option<mpsc::Sender<Operation>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Mutex<Option<Checkpointer>>,
    reader: Mutex<Connection>,
    lookups: Lookups,
    /// The public receipt endpoint's own connections: a flood of look-ups there can delay
    /// neither the settler's reads nor [`Journal::holds_authorization`].
    receipts: Lookups,
    changed: Notify,
    recorded: AtomicU64,
}

impl Journal {
    /// Opens (or creates) the journal at `path` and starts its writer thread.
    pub fn open(path: &Path, options: JournalOptions) -> Result<Self, JournalError> {
        let open_error = |source| JournalError::Open { path: path.to_owned(), source };
        let writer_connection = Connection::open(path).map_err(open_error)?;
        writer_connection.execute_batch("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000;").map_err(open_error)?;
        writer_connection.execute_batch(options.sync.pragma()).map_err(open_error)?;
        // The checkpointer thread does the copying; the writer checkpoints only as a backstop,
        // so its commits (and the responses waiting on them) rarely stall behind one.
        writer_connection.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES).map_err(open_error)?;
        writer_connection.execute_batch(SCHEMA).map_err(open_error)?;
        let reader = open_reader(path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(open_error)?;
        let lookups = Lookups::open(path, 0).map_err(open_error)?;
        let receipts = Lookups::open(path, options.receipt_readers).map_err(open_error)?;
        let (sender, receiver) = mpsc::channel();
        let group = if options.group_commit { MAX_GROUP } else { 1 };
        let commits = Arc::new(AtomicU64::new(0));
        let writer_commits = Arc::clone(&commits);
        let writer = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || run_writer(writer_connection, receiver, group, &writer_commits))
            .map_err(|e| JournalError::Commit(format!("cannot start the writer thread: {e}")))?;
        let checkpoint_connection = open_reader(path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(open_error)?;
        checkpoint_connection.execute_batch(options.sync.pragma()).map_err(open_error)?;
        let checkpointer = Checkpointer::start(checkpoint_connection, commits)?;
        Ok(Self {
            path: path.to_owned(),
            operations: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
            checkpointer: Mutex::new(Some(checkpointer)),
            reader: Mutex::new(reader),
            lookups,
            receipts,
            changed: Notify::new(),
            recorded: AtomicU64::new(0),
        })
    }

    /// Opens an existing journal for reading only, while a gateway may be writing it.
    pub fn open_read_only(path: &Path) -> Result<JournalReader, JournalError> {
        let connection = open_reader(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|source| JournalError::Open { path: path.to_owned(), source })?;
        Ok(JournalReader { connection })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Wakes when a payment is recorded.
    pub fn changed(&self) -> &Notify {
        &self.changed
    }

    /// Payments recorded since this journal was opened.
    pub fn recorded(&self) -> u64 {
        self.recorded.load(Ordering::Relaxed)
    }

    /// Runs `write` in the writer's next transaction; resolves once that commits.
    fn write<R: Send + 'static>(
        &self,
        write: impl FnOnce(&Connection) -> Result<R, JournalError> + Send + 'static,
    ) -> impl Future<Output = Result<R, JournalError>> + Send + 'static {
        let (reply_to, reply) = oneshot::channel();
        let operation: Operation = Box::new(move |connection| {
            let result = match connection {
                Some(connection) => all_or_nothing(connection, write),
                None => Err(JournalError::Closed),
            };
            Box::new(move |committed: Result<(), JournalError>| {
                let _ = reply_to.send(committed.and(result));
            })
        });
        let sent = match lock(&self.operations).as_ref() {
            Some(sender) => sender.send(operation).map_err(|_| JournalError::Closed),
            None => Err(JournalError::Closed),
        };
        async move {
            sent?;
            reply.await.map_err(|_| JournalError::Closed)?
        }
    }

    /// Records an accepted payment durably and returns its row id. Refuses an authorization
    /// that is already journaled.
    pub async fn record(&self, payment: NewPayment) -> Result<u64, JournalError> {
        let id = self.write(move |connection| insert_payment(connection, &payment)).await?;
        self.recorded.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_one();
        Ok(id)
    }

    /// Journals a signed settlement transaction and marks its payments `submitted`, in one
    /// commit. Call before broadcasting it. Returns each payment's attempt count.
    pub async fn record_batch(&self, batch: BatchRecord, ids: Vec<u64>) -> Result<Vec<u32>, JournalError> {
        self.write(move |connection| {
            connection.execute(
                "INSERT OR REPLACE INTO batches (transaction_hash, network, raw, sent_at_ms, done) VALUES (?1, ?2, ?3, ?4, 0)",
                params![batch.transaction, batch.network, batch.raw, batch.sent_at_ms],
            )?;
            let mut attempts = Vec::with_capacity(ids.len());
            let mut submit = connection.prepare_cached(
                "UPDATE payments SET state = 'submitted', transaction_hash = ?2, attempts = attempts + 1, updated_at_ms = ?3
                 WHERE id = ?1 RETURNING attempts",
            )?;
            let mut remember = connection
                .prepare_cached("INSERT OR IGNORE INTO payment_transactions (payment_id, transaction_hash) VALUES (?1, ?2)")?;
            for id in ids {
                attempts.push(submit.query_row(params![id, batch.transaction, crate::unix_now_ms()], |row| row.get(0))?);
                remember.execute(params![id, batch.transaction])?;
            }
            Ok(attempts)
        })
        .await
    }

    /// Journals a replacement of a settlement transaction (the same account nonce and calls,
    /// higher fees) and points its payments at it, in one commit. Call before broadcasting
    /// it. A replacement is not another attempt: at most one transaction of a nonce is mined,
    /// so it costs no more gas, and the payments' attempt counts stay as they were.
    pub async fn record_replacement(&self, batch: BatchRecord, ids: Vec<u64>) -> Result<(), JournalError> {
        self.write(move |connection| {
            connection.execute(
                "INSERT OR REPLACE INTO batches (transaction_hash, network, raw, sent_at_ms, done) VALUES (?1, ?2, ?3, ?4, 0)",
                params![batch.transaction, batch.network, batch.raw, batch.sent_at_ms],
            )?;
            let mut point = connection.prepare_cached(
                "UPDATE payments SET transaction_hash = ?2, updated_at_ms = ?3 WHERE id = ?1 AND state = 'submitted'",
            )?;
            let mut remember = connection
                .prepare_cached("INSERT OR IGNORE INTO payment_transactions (payment_id, transaction_hash) VALUES (?1, ?2)")?;
            for id in ids {
                point.execute(params![id, batch.transaction, crate::unix_now_ms()])?;
                remember.execute(params![id, batch.transaction])?;
            }
            Ok(())
        })
        .await
    }

    /// The batch's fate is known and written to its payments: recovery can skip it, and
    /// its signed bytes, only ever needed to send it again, are dropped.
    pub async fn finish_batch(&self, transaction: String) -> Result<(), JournalError> {
        self.write(move |connection| {
            connection.execute("UPDATE batches SET done = 1, raw = x'' WHERE transaction_hash = ?1", params![transaction])?;
            Ok(())
        })
        .await
    }

    /// One bounded pass of upkeep, in one write transaction: deletes settled and failed
    /// payments whose `validBefore` is older than the retention (with the transactions they
    /// were sent in), finished batches sent before it, expired payer blocks, and every
    /// loss-budget reset but the latest.
    ///
    /// Never deleted: a payment still unsettled, whatever its age; a failed payment the loss
    /// budget still counts ([`LOSS_WINDOW_MS`]); an authorization that can still be used
    /// on-chain (its `validBefore` is past, so the verifier refuses it as expired and the
    /// replay store, rebuilt from live authorizations only, never needed it).
    pub async fn prune(&self, policy: PrunePolicy) -> Result<PruneReport, JournalError> {
        self.write(move |connection| prune(connection, &policy)).await
    }

    /// Refuses `payer` until `until` (Unix seconds), durably: it outlives a restart, and an
    /// operator clears it with [`clear_payer_block`].
    pub async fn block_payer(&self, block: PayerBlock) -> Result<(), JournalError> {
        self.write(move |connection| {
            connection.execute(
                "INSERT OR REPLACE INTO payer_blocks (payer, until, reason) VALUES (?1, ?2, ?3)",
                params![block.payer, block.until, block.reason],
            )?;
            Ok(())
        })
        .await
    }

    /// Payers refused after `now`.
    pub fn payer_blocks(&self, now: u64) -> Result<Vec<PayerBlock>, JournalError> {
        payer_blocks(&lock(&self.reader), now)
    }

    pub async fn set_state(&self, id: u64, state: PaymentState) -> Result<(), JournalError> {
        self.set_states(vec![(id, state)]).await
    }

    /// Moves many payments at once, in one commit: a mined batch settles all its payments
    /// for one fsync, not one each.
    pub async fn set_states(&self, changes: Vec<(u64, PaymentState)>) -> Result<(), JournalError> {
        self.write(move |connection| {
            let mut update = connection
                .prepare_cached("UPDATE payments SET state = ?2, transaction_hash = ?3, failure = ?4, updated_at_ms = ?5 WHERE id = ?1")?;
            let now = crate::unix_now_ms();
            for (id, state) in &changes {
                let failure = match state {
                    PaymentState::Failed { reason } => Some(reason.as_str()),
                    _ => None,
                };
                update.execute(params![id, state.name(), state.transaction(), failure, now])?;
            }
            Ok(())
        })
        .await
    }

    /// Accepted payments on `network`, earliest deadline first, at most `limit`.
    pub fn accepted(&self, network: &str, limit: usize) -> Result<Vec<PaymentRecord>, JournalError> {
        query_payments(&lock(&self.reader), &ACCEPTED, params![network, limit_param(limit)])
    }

    /// Settlement transactions whose outcome was not yet written back (a crash came first).
    pub fn open_batches(&self, network: &str) -> Result<Vec<BatchRecord>, JournalError> {
        let reader = lock(&self.reader);
        let mut statement = reader.prepare_cached(OPEN_BATCHES)?;
        let rows = statement.query_map(params![network], |row| {
            Ok(BatchRecord { transaction: row.get(0)?, network: row.get(1)?, raw: row.get(2)?, sent_at_ms: row.get(3)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Payments marked as sent in `transaction` and not yet resolved.
    /// Payments on `network` the settler gave up on whose `validBefore` is after `since`: a
    /// transaction of theirs may still land until then, and the journal must follow it.
    pub fn given_up(&self, network: &str, since: u64) -> Result<Vec<PaymentRecord>, JournalError> {
        query_payments(&lock(&self.reader), &GIVEN_UP, params![network, since])
    }

    pub fn submitted_in(&self, transaction: &str) -> Result<Vec<PaymentRecord>, JournalError> {
        query_payments(&lock(&self.reader), &SUBMITTED_IN, params![transaction])
    }

    /// Every settlement transaction payment `id` was sent in, the latest first.
    pub fn transactions_of(&self, id: u64) -> Result<Vec<String>, JournalError> {
        let reader = lock(&self.reader);
        let mut statement = reader.prepare_cached(TRANSACTIONS_OF)?;
        let rows = statement.query_map(params![id], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every payment whose authorization can still be used on-chain (`validBefore` after
    /// `now`): the replay store is rebuilt from these at start.
    pub fn live(&self, now: u64) -> Result<Vec<PaymentRecord>, JournalError> {
        let sql = format!("SELECT {COLUMNS} FROM payments WHERE valid_before > ?1 ORDER BY id");
        query_payments(&lock(&self.reader), &sql, params![now])
    }

    /// Payments accepted or submitted, not yet settled or failed.
    pub fn unsettled(&self) -> Result<Vec<PaymentRecord>, JournalError> {
        query_payments(&lock(&self.reader), &UNSETTLED_ROWS, [])
    }

    pub fn unsettled_count(&self) -> Result<u64, JournalError> {
        Ok(lock(&self.reader).prepare_cached(&UNSETTLED_COUNT)?.query_row([], |row| row.get(0))?)
    }

    /// When the oldest payment still unsettled was accepted (Unix milliseconds).
    pub fn oldest_unsettled_ms(&self) -> Result<Option<u64>, JournalError> {
        Ok(lock(&self.reader).prepare_cached(&OLDEST_UNSETTLED)?.query_row([], |row| row.get(0))?)
    }

    /// When an operator last reset the loss budget (Unix ms).
    pub fn last_loss_reset_ms(&self) -> Result<Option<u64>, JournalError> {
        Ok(lock(&self.reader).query_row("SELECT max(at_ms) FROM loss_resets", [], |row| row.get(0))?)
    }

    /// (usd_micros, failed at in Unix ms) of every payment that failed since `since_ms`,
    /// oldest first: the loss budget is rebuilt from these at start (a scan, once).
    pub fn failures_since(&self, since_ms: u64) -> Result<Vec<(u64, u64)>, JournalError> {
        let reader = lock(&self.reader);
        let mut statement = reader.prepare("SELECT usd_micros, updated_at_ms FROM payments WHERE state = 'failed' AND updated_at_ms >= ?1 ORDER BY updated_at_ms")?;
        let rows = statement.query_map(params![since_ms], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The earliest `validBefore` (Unix seconds) of a payment still unsettled.
    pub fn earliest_unsettled_deadline(&self) -> Result<Option<u64>, JournalError> {
        Ok(lock(&self.reader).prepare_cached(&EARLIEST_DEADLINE)?.query_row([], |row| row.get(0))?)
    }

    /// The `validBefore` (Unix seconds) of every payment still unsettled on `network`, earliest
    /// first: the order the settler takes them in. Read from the index alone.
    pub fn unsettled_deadlines(&self, network: &str) -> Result<Vec<u64>, JournalError> {
        let reader = lock(&self.reader);
        let mut statement = reader.prepare_cached(&UNSETTLED_DEADLINES)?;
        let rows = statement.query_map(params![network], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn get(&self, id: u64) -> Result<Option<PaymentRecord>, JournalError> {
        let sql = format!("SELECT {COLUMNS} FROM payments WHERE id = ?1");
        Ok(query_payments(&lock(&self.reader), &sql, params![id])?.pop())
    }

    /// The payment with this receipt id: one index seek on a look-up connection, never
    /// behind the settler's reads. Waits for a connection only if every one is busy.
    pub fn by_receipt(&self, receipt_id: &str) -> Result<Option<PaymentRecord>, JournalError> {
        by_receipt(&self.lookups.take(), receipt_id)
    }

    /// [`Journal::by_receipt`] for the public receipt endpoint, on connections of its own,
    /// and never waiting: [`JournalError::Busy`] when every one is in use.
    pub fn receipt(&self, receipt_id: &str) -> Result<Option<PaymentRecord>, JournalError> {
        let connection = self.receipts.try_take().ok_or(JournalError::Busy)?;
        by_receipt(&connection, receipt_id)
    }

    /// Whether the journal holds the authorization `(chain_id, asset, payer, nonce)`
    /// (`asset` and `payer` checksummed, `nonce` lower-case 0x-hex, as [`NewPayment`] has
    /// them): charged already, by this process or another one sharing the file. One index
    /// seek on a connection of its own, so a proxy worker never waits behind the writer or
    /// the settler's reads.
    pub fn holds_authorization(&self, chain_id: u64, asset: &str, payer: &str, nonce: &str) -> Result<bool, JournalError> {
        let connection = self.lookups.take();
        let mut statement = connection.prepare_cached(HOLDS_AUTHORIZATION)?;
        Ok(statement.exists(params![chain_id, asset, payer, nonce])?)
    }

    /// Counts by state name.
    pub fn counts(&self) -> Result<BTreeMap<String, u64>, JournalError> {
        counts(&lock(&self.reader))
    }

    /// Stops the writer after it has committed everything queued.
    pub fn close(&self) {
        lock(&self.operations).take();
        if let Some(checkpointer) = lock(&self.checkpointer).take() {
            checkpointer.stop();
        }
        if let Some(writer) = lock(&self.writer).take() {
            let _ = writer.join();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

/// A read-only view of a journal file, for operators' tools.
pub struct JournalReader {
    connection: Connection,
}

impl JournalReader {
    /// Payments by state and payer, newest first.
    pub fn list(&self, filter: &PaymentFilter) -> Result<Vec<PaymentRecord>, JournalError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM payments WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR payer = ?2 COLLATE NOCASE)
             ORDER BY id DESC LIMIT ?3"
        );
        query_payments(&self.connection, &sql, params![filter.state, filter.payer, limit_param(filter.limit)])
    }

    pub fn by_receipt(&self, receipt_id: &str) -> Result<Option<PaymentRecord>, JournalError> {
        by_receipt(&self.connection, receipt_id)
    }

    pub fn counts(&self) -> Result<BTreeMap<String, u64>, JournalError> {
        counts(&self.connection)
    }

    pub fn payer_blocks(&self, now: u64) -> Result<Vec<PayerBlock>, JournalError> {
        payer_blocks(&self.connection, now)
    }

    /// Hands every payment `filter` selects to `visit`, oldest first, one row at a time (the
    /// journal may hold millions: none of it is collected in memory). Stops at the first
    /// error `visit` returns.
    pub fn export<E: From<JournalError>>(&self, filter: &ExportFilter, mut visit: impl FnMut(PaymentRecord) -> Result<(), E>) -> Result<(), E> {
        let sql = format!("SELECT {COLUMNS} FROM payments WHERE (?1 IS NULL OR state = ?1) AND updated_at_ms >= ?2 ORDER BY id");
        let mut statement = self.connection.prepare(&sql).map_err(JournalError::from)?;
        let mut rows = statement.query(params![filter.state, filter.since_ms]).map_err(JournalError::from)?;
        while let Some(row) = rows.next().map_err(JournalError::from)? {
            visit(read_columns(row).map_err(JournalError::from)?.into_record()?)?;
        }
        Ok(())
    }
}

/// Clears a payer's block in the journal at `path` (an operator's call, while the gateway
/// runs: the gateway picks it up within a settler tick). Returns whether there was one.
pub fn clear_payer_block(path: &Path, payer: &str) -> Result<bool, JournalError> {
    let connection = open_reader(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|source| JournalError::Open { path: path.to_owned(), source })?;
    Ok(connection.execute("DELETE FROM payer_blocks WHERE payer = ?1", params![payer])? > 0)
}

/// Records an operator's reset of the loss budget in the journal at `path`, so a restart
/// does not count the losses before it again.
pub fn record_loss_reset(path: &Path, at_ms: u64) -> Result<(), JournalError> {
    let connection = open_reader(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|source| JournalError::Open { path: path.to_owned(), source })?;
    connection.execute("INSERT INTO loss_resets (at_ms) VALUES (?1)", params![at_ms])?;
    Ok(())
}

fn by_receipt(connection: &Connection, receipt_id: &str) -> Result<Option<PaymentRecord>, JournalError> {
    Ok(query_payments(connection, &BY_RECEIPT, params![receipt_id])?.pop())
}

/// One pass of [`Journal::prune`], inside the writer's transaction.
fn prune(connection: &Connection, policy: &PrunePolicy) -> Result<PruneReport, JournalError> {
    let retention_ms = u64::try_from(policy.retention.as_millis()).unwrap_or(u64::MAX);
    let cutoff_ms = policy.now_ms.saturating_sub(retention_ms);
    let failures_kept_from_ms = cutoff_ms.min(policy.now_ms.saturating_sub(LOSS_WINDOW_MS));
    let limit = limit_param(policy.max_rows.max(1));
    let ids: Vec<u64> = connection
        .prepare_cached(PRUNABLE_PAYMENTS)?
        .query_map(params![cutoff_ms / 1000, failures_kept_from_ms, limit], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let mut report = PruneReport::default();
    let mut delete_payment = connection.prepare_cached("DELETE FROM payments WHERE id = ?1")?;
    let mut delete_transactions = connection.prepare_cached("DELETE FROM payment_transactions WHERE payment_id = ?1")?;
    for id in &ids {
        report.payments += delete_payment.execute(params![id])? as u64;
        report.payment_transactions += delete_transactions.execute(params![id])? as u64;
    }
    report.batches = connection.prepare_cached(PRUNE_BATCHES)?.execute(params![cutoff_ms, limit])? as u64;
    report.payer_blocks = connection.execute("DELETE FROM payer_blocks WHERE until <= ?1", params![policy.now_ms / 1000])? as u64;
    report.loss_resets = connection.execute("DELETE FROM loss_resets WHERE at_ms < (SELECT max(at_ms) FROM loss_resets)", [])? as u64;
    report.more = ids.len() >= policy.max_rows.max(1) || report.batches >= policy.max_rows.max(1) as u64;
    Ok(report)
}

fn payer_blocks(connection: &Connection, now: u64) -> Result<Vec<PayerBlock>, JournalError> {
    let mut statement = connection.prepare_cached("SELECT payer, until, reason FROM payer_blocks WHERE until > ?1 ORDER BY payer")?;
    let rows = statement.query_map(params![now], |row| Ok(PayerBlock { payer: row.get(0)?, until: row.get(1)?, reason: row.get(2)? }))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Read-only connections for one-seek look-ups (`count`, or one per core): a caller takes a
/// free one and waits only when every one is busy.
struct Lookups {
    connections: Box<[Mutex<Connection>]>,
    next: AtomicU64,
}

impl Lookups {
    fn open(path: &Path, count: usize) -> Result<Self, rusqlite::Error> {
        let count = match count {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 16),
            count => count.min(256),
        };
        let connections = (0..count)
            .map(|_| open_reader(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map(Mutex::new))
            .collect::<Result<_, _>>()?;
        Ok(Self { connections, next: AtomicU64::new(0) })
    }

    /// A free connection, or the next one's turn when every one is busy.
    fn take(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.try_take().unwrap_or_else(|| lock(&self.connections[self.start()]))
    }

    /// A free connection, or `None` when every one is busy: never waits.
    fn try_take(&self) -> Option<std::sync::MutexGuard<'_, Connection>> {
        let (start, count) = (self.start(), self.connections.len());
        (0..count).find_map(|offset| match self.connections[(start + offset) % count].try_lock() {
            Ok(connection) => Some(connection),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        })
    }

    /// Where the next caller starts looking, so callers spread over the connections.
    fn start(&self) -> usize {
        usize::try_from(self.next.fetch_add(1, Ordering::Relaxed)).unwrap_or_default() % self.connections.len()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded values stay consistent across a panic (a connection, a sender).
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn open_reader(path: &Path, flags: OpenFlags) -> Result<Connection, rusqlite::Error> {
    let connection = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(connection)
}

/// SQLite takes `LIMIT -1` as no limit.
fn limit_param(limit: usize) -> i64 {
    if limit == 0 {
        -1
    } else {
        i64::try_from(limit).unwrap_or(i64::MAX)
    }
}

fn run_writer(connection: Connection, operations: mpsc::Receiver<Operation>, group: usize, commits: &AtomicU64) {
    while let Ok(first) = operations.recv() {
        let mut batch = vec![first];
        while batch.len() < group {
            match operations.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        commit_group(&connection, batch);
        commits.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs a group of operations in one transaction and tells each caller how the commit went.
/// Nothing runs outside a transaction: if none can be opened, or SQLite rolled it back by
/// itself part way (disk full, I/O error), every caller in the group hears that it failed,
/// and no later operation runs in autocommit mode, where it would commit while its caller is
/// told otherwise. The next group begins a transaction of its own.
fn commit_group(connection: &Connection, batch: Vec<Operation>) {
    let mut lost = connection.execute_batch("BEGIN IMMEDIATE").err().map(|e| e.to_string());
    let mut replies: Vec<Reply> = Vec::with_capacity(batch.len());
    for operation in batch {
        replies.push(operation(lost.is_none().then_some(connection)));
        if lost.is_none() && connection.is_autocommit() {
            lost = Some("SQLite rolled the transaction back (disk full or I/O error); nothing in it was written".into());
        }
    }
    let committed = match lost {
        Some(error) => Err(error),
        None => connection.execute_batch("COMMIT").map_err(|e| e.to_string()),
    };
    if let Err(error) = &committed {
        tracing::error!(%error, writes = replies.len(), "journal commit failed");
        if !connection.is_autocommit() {
            let _ = connection.execute_batch("ROLLBACK");
        }
    }
    for reply in replies {
        reply(committed.clone().map_err(JournalError::Commit));
    }
}

/// Runs one write inside a savepoint of the group's transaction, so a write that fails part
/// way leaves none of its statements behind for the group to commit.
fn all_or_nothing<R>(connection: &Connection, write: impl FnOnce(&Connection) -> Result<R, JournalError>) -> Result<R, JournalError> {
    connection.prepare_cached("SAVEPOINT one_write")?.execute([])?;
    let result = write(connection);
    if connection.is_autocommit() {
        // SQLite dropped the whole transaction, savepoint and all: the group fails.
        return result;
    }
    let closed = match &result {
        Ok(_) => connection.prepare_cached("RELEASE one_write").and_then(|mut release| release.execute([])),
        Err(_) => connection
            .prepare_cached("ROLLBACK TO one_write")
            .and_then(|mut undo| undo.execute([]))
            .and_then(|_| connection.prepare_cached("RELEASE one_write")?.execute([])),
    };
    closed?;
    result
}

fn insert_payment(connection: &Connection, payment: &NewPayment) -> Result<u64, JournalError> {
    let authorization = &payment.item.payload.authorization;
    let now = crate::unix_now_ms();
    // Cached: parsed once per connection, not once per paid request.
    let mut statement = connection.prepare_cached(
        "INSERT INTO payments (receipt_id, route, network, chain_id, asset, payer, nonce, amount, pay_to, valid_after,
            valid_before, auth_from, auth_value, auth_nonce, signature, state, attempts, accepted_at_ms, updated_at_ms, usd_micros)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, 'accepted', 0, ?16, ?16, ?17)",
    )?;
    let inserted = statement.execute(params![
            payment.receipt_id,
            payment.route,
            payment.item.network,
            payment.item.chain_id,
            payment.item.asset,
            payment.payer,
            payment.nonce,
            payment.amount,
            authorization.to,
            authorization.valid_after,
            payment.item.valid_before,
            authorization.from,
            authorization.value,
            authorization.nonce,
            payment.item.payload.signature,
            now,
            payment.usd_micros,
    ]);
    match inserted {
        Ok(_) => Ok(u64::try_from(connection.last_insert_rowid()).unwrap_or_default()),
        Err(rusqlite::Error::SqliteFailure(error, _)) if error.code == rusqlite::ErrorCode::ConstraintViolation => {
            Err(JournalError::Duplicate(payment.receipt_id.clone()))
        }
        Err(error) => Err(error.into()),
    }
}

fn query_payments(connection: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<Vec<PaymentRecord>, JournalError> {
    let mut statement = connection.prepare_cached(sql)?;
    let rows = statement.query_map(params, read_columns)?;
    let mut records = Vec::new();
    for row in rows {
        records.push(row?.into_record()?);
    }
    Ok(records)
}

/// One row's columns, before the state is checked.
struct Columns {
    record: PaymentRecord,
    state: String,
    transaction: Option<String>,
    failure: Option<String>,
}

impl Columns {
    fn into_record(self) -> Result<PaymentRecord, JournalError> {
        let mut record = self.record;
        record.state = PaymentState::from_columns(record.id, &self.state, self.transaction, self.failure)?;
        Ok(record)
    }
}

fn read_columns(row: &Row<'_>) -> rusqlite::Result<Columns> {
    let valid_before: u64 = row.get("valid_before")?;
    Ok(Columns {
        record: PaymentRecord {
            id: row.get("id")?,
            receipt_id: row.get("receipt_id")?,
            route: row.get("route")?,
            amount: row.get("amount")?,
            payer: row.get("payer")?,
            usd_micros: row.get("usd_micros")?,
            accepted_at_ms: row.get("accepted_at_ms")?,
            updated_at_ms: row.get("updated_at_ms")?,
            item: SettlementItem {
                network: row.get("network")?,
                chain_id: row.get("chain_id")?,
                asset: row.get("asset")?,
                payload: ExactEvmPayload {
                    signature: row.get("signature")?,
                    authorization: ExactEvmAuthorization {
                        from: row.get("auth_from")?,
                        to: row.get("pay_to")?,
                        value: row.get("auth_value")?,
                        valid_after: row.get("valid_after")?,
                        valid_before: valid_before.to_string(),
                        nonce: row.get("auth_nonce")?,
                    },
                },
                valid_before,
            },
            state: PaymentState::Accepted,
            attempts: row.get("attempts")?,
        },
        state: row.get("state")?,
        transaction: row.get("transaction_hash")?,
        failure: row.get("failure")?,
    })
}

fn counts(connection: &Connection) -> Result<BTreeMap<String, u64>, JournalError> {
    let mut statement = connection.prepare_cached("SELECT state, count(*) FROM payments GROUP BY state")?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

mod channel_rows;

#[cfg(test)]
mod tests;
