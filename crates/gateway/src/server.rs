//! Process wiring: the durable journal, the replay store rebuilt from it, the Pingora
//! server for the proxy and the admin API, a separate runtime thread for the settler, the
//! reload triggers, and shutdown that drains both.
//!
//! Graceful upgrade: a new binary started with `run --upgrade` takes the listening sockets
//! over from the running one when that one gets SIGQUIT (Pingora's socket hand-over through
//! `server.upgrade_sock`). The old process finishes its requests and drains its settler
//! while the new one serves; the new settler starts once the old one has let go of the
//! journal's settler lock, so one process at a time signs settlement transactions.
//!
//! The settler does not run as a Pingora background service on purpose: Pingora drops its
//! runtimes right after the grace period (and at once on SIGINT), which would cut a drain
//! short. Here the proxy stops first, then the settler settles what it holds, then the
//! process exits. For the same reason Pingora runs on a thread of its own: once it stops
//! accepting, the requests in flight are waited for here ([`crate::drain`]) rather than cut
//! when Pingora's fixed grace period ends.

use crate::admin::{AdminApi, AdminToken};
use crate::balance::BalanceCache;
use crate::config::model::ServerSettings;
use crate::config::model::StoreSettings;
use crate::config::{parse_config, Config};
use crate::drain::Drain;
use crate::metrics::Metrics;
use crate::proxy::{PaywallProxy, RequestIds};
use crate::reload::Reloader;
use crate::upgrade::UpgradeWindow;
use crate::verifier::SignatureVerifier;
use alloy::signers::local::PrivateKeySigner;
use anyhow::{bail, Context};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{ExecutionPhase, RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use x402_settle::{ChainClient, NetworkSettlement, Settler};
use x402_settle::admission::{AdmissionGuard, AdmissionPolicy, SettlementAdmission};
use x402_settle::stall::{SettlementHealth, StallGuard, StallPolicy};
use x402_settle::CreditControl;
use x402_store::{ChannelRecord, ChannelStore, ClaimerLease, Exposure, Journal, JournalOptions, LocalLedger, MemoryChannelStore, MemoryReplayStore, PaymentLedger, RedisLedger, Restored, SoleClaimer};
use x402_settle::channels::ChannelSettlement;
use crate::channel_exposure::ChannelExposure;
use crate::channel_payment::ChannelPayments;

/// How the process starts.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Take the listening sockets over from a running gateway (graceful upgrade).
    pub upgrade: bool,
}

/// Runs the gateway until SIGTERM or SIGINT (or SIGQUIT, handing over to a new process),
/// then drains.
pub fn run(config_path: &Path, options: RunOptions) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config_path).with_context(|| format!("cannot read {}", config_path.display()))?;
    let config = parse_config(&text, config_path)?;
    let admin_token = admin_token(&config)?;
    if !options.upgrade {
        ensure_listen_addresses_free(&config)?;
    }
    let metrics = Arc::new(Metrics::new().context("cannot set up metrics")?);
    let settle_flush = Arc::new(AtomicBool::new(false));
    let journal = Arc::new(
        Journal::open(&config.settlement.journal_path, journal_options(&config)).context("cannot open the settlement journal")?,
    );
    let channel_records = journal.channels().context("cannot read payment channels from the journal")?;
    let SharedState { ledger, channels: channel_store, claimer_lease } = build_shared_state(&config, &journal, &channel_records)?;
    let keys = settlement_keys(&config)?;
    let key = keys.first().cloned();
    let balances = build_balance_cache(&config, key.as_ref())?;
    let payer_paid = balances.clone().map(|balances| -> x402_settle::PayerPaid { Box::new(move |record| balances.forget_paid(record)) });
    let credit = CreditControl { ledger: ledger.clone(), block_payer_for_secs: config.exposure.block_failed_payers_seconds, payer_paid };
    let settler = match &key {
        Some(_) => Some(
            build_settler(&config, &keys, journal.clone())?
                .with_credit_control(credit)
                .with_metrics(metrics.settlement.clone())
                .with_flush(settle_flush.clone()),
        ),
        None => None,
    };
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    crate::upkeep::spawn(journal.clone(), config.settlement.journal_retention, metrics.journal_pruned.clone(), shutdown_rx.clone())
        .context("cannot start the journal upkeep thread")?;
    let health = Arc::new(SettlementHealth::default());
    if let Some(key) = &key {
        spawn_stall_guard(&config, key, journal.clone(), health.clone(), metrics.settlement.clone(), shutdown_rx.clone())?;
    }
    let admission_shutdown = shutdown_rx.clone();
    let drain_timeout = config.settlement.drain_timeout;
    let settler = settler.map(Arc::new);
    let channel_settlement = settler.as_ref().map(|settler| {
        ChannelSettlement::new(settler.clone(), channel_store.clone(), journal.clone(), config.settlement.claims.clone()).with_lease(claimer_lease.clone())
    });
    let channel_settlement = match (&config.settlement.receiver_authorizer_key_env, channel_settlement) {
        (Some(env), Some(channels)) => Some(channels.with_authorizer(crate::config::key_from_env(env).map_err(|why| anyhow::anyhow!("settlement.channels.receiver_authorizer_key_env: {why}"))?)),
        (_, channels) => channels,
    }
    .map(Arc::new);
    let claimer = channel_settlement.clone();
    let channel_claims = channel_settlement.clone();
    let channel_exposure = Arc::new(ChannelExposure::new(ledger.clone()));
    tokio::runtime::Builder::new_current_thread()
        .build()?
        .block_on(channel_exposure.restore(&channel_records, |record| unclaimed_usd_micros(&config, record)))
        .context("cannot count the journal's unclaimed channel value in the payment ledger")?;
    spawn_claimed_sweep(channel_exposure.clone(), channel_store.clone(), shutdown_rx.clone());
    let (settle_before, settle_now_rx) = match &settler {
        Some(settler) => {
            let (queue, requests) = settler.settle_before(config.settlement.settle_before_queue);
            (Some(queue), Some(requests))
        }
        None => (None, None),
    };
    let settler_lock = settler_lock_path(&config.settlement.journal_path);
    let upgrade_window = Arc::new(UpgradeWindow::default());
    if options.upgrade {
        upgrade_window.open();
    }
    let (window, window_journal, longest_quote) = (upgrade_window.clone(), journal.clone(), longest_quote_seconds(&config));
    let settler_thread = std::thread::Builder::new().name("settler".into()).spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (Some(settler), Some(settle_now_rx)) = (settler, settle_now_rx) else { return anyhow::Ok(()) };
        let Some(_lock) = runtime.block_on(take_settler_lock(&settler_lock, shutdown_rx.clone()))? else { return Ok(()) };
        if options.upgrade {
            close_upgrade_window(&window, &window_journal, longest_quote);
        }
        let claims = async {
            if let Some(claimer) = claimer {
                claimer.run(shutdown_rx.clone()).await;
            }
        };
        runtime.block_on(async { tokio::join!(settler.run(shutdown_rx.clone(), drain_timeout, settle_now_rx), claims) });
        Ok(())
    })?;

    let settle_before_timeout = config.settlement.policy.receipt_timeout * 2;
    let opt = Opt { upgrade: options.upgrade, ..Opt::default() };
    let mut server = Server::new_with_opt_and_conf(Some(opt), pingora_conf(&config));
    let (listen, admin_settings, server_settings) = (config.server.listen, config.admin.clone(), config.server.clone());
    let drain = Arc::new(Drain::default());
    let (verify_threads, verify_queue) = (config.server.verify_threads, config.server.verify_queue);
    server.bootstrap();
    let live = Arc::new(ArcSwap::from_pointee(config));
    let admission = Arc::new(SettlementAdmission::default());
    if live.load().settlement.admission && key.is_some() {
        spawn_admission_guard(&live, journal.clone(), metrics.settlement.clone(), admission.clone(), admission_shutdown)?;
    }
    let reloader = Arc::new(Reloader::new(config_path, &text, live.clone(), ledger.clone(), metrics.clone()));
    crate::reload::spawn_reload_triggers(reloader.clone(), admin_settings.watch_config)?;
    let proxy = PaywallProxy {
        config: live.clone(),
        ledger: ledger.clone(),
        balances,
        journal: journal.clone(),
        health: health.clone(),
        admission: admission.clone(),
        settle_before,
        // A settle-before request waits for its own transaction: simulation, then its receipt.
        settle_before_timeout,
        metrics: metrics.clone(),
        request_ids: RequestIds::new(),
        verifier: SignatureVerifier::start(verify_threads, verify_queue, metrics.verify_queue_depth.clone())
            .context("starting the signature verifier threads")?,
        upgrade_window: upgrade_window.clone(),
        drain: drain.clone(),
        channels: Arc::new(ChannelPayments { store: channel_store.clone(), settlement: channel_settlement, journal: journal.clone(), exposure: channel_exposure }),
        receipt_client: reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .connect_timeout(Duration::from_millis(500))
            .build()
            .context("cannot build the HTTP client for receipt look-ups")?,
    };
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, proxy);
    service.add_tcp(&listen.to_string());
    server.add_service(service);
    if let Some(admin_listen) = admin_settings.listen {
        if admin_token.is_none() {
            tracing::warn!(env = %admin_settings.token_env, "no admin token: the admin API answers /health and /ready only");
        }
        let admin = AdminApi {
            token: admin_token,
            token_env: admin_settings.token_env.clone(),
            config: live,
            reloader,
            journal: journal.clone(),
            ledger: ledger.clone(),
            health,
            admission,
            metrics,
            channels: channel_store,
            channel_claims,
            draining: Arc::new(AtomicBool::new(false)),
            settle_flush,
        };
        let mut admin_service = pingora::services::listening::Service::new("x402-gateway admin".into(), admin);
        admin_service.add_tcp(&admin_listen.to_string());
        server.add_service(admin_service);
        tracing::info!(%admin_listen, "admin API listening");
    }
    tracing::info!(%listen, config = %config_path.display(), upgrade = options.upgrade, "x402-gateway listening");
    serve_until_drained(server, GracefulOnSignals { upgrade_window, drain: drain.clone() }, &drain, &server_settings)?;

    tracing::info!(unsettled = journal.unsettled_count().unwrap_or_default(), "proxy stopped; draining settlement");
    let _ = shutdown_tx.send(true);
    match settler_thread.join() {
        Ok(result) => result?,
        Err(_) => bail!("the settler thread panicked"),
    }
    if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
        runtime.block_on(ledger.flush(Duration::from_secs(5)));
    }
    let counts = journal.counts()?;
    let unsettled = journal.unsettled_count()?;
    journal.close();
    if unsettled > 0 {
        tracing::warn!(unsettled, journal = %journal.path().display(), "payments not settled before shutdown stay in the journal for the next start");
    }
    tracing::info!(?counts, "x402-gateway stopped");
    Ok(())
}

/// Settles a journal with no gateway in front of it (a replica lost for good): every payment
/// it holds is settled or failed, or `timeout` passes. Returns how many stay unsettled.
pub fn settle_journal(config_path: &Path, journal_path: &Path, timeout: Duration) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(config_path).with_context(|| format!("cannot read {}", config_path.display()))?;
    let config = parse_config(&text, config_path)?;
    let _lock = settler_lock_now(journal_path)?;
    let journal = Arc::new(Journal::open(journal_path, journal_options(&config)).with_context(|| format!("cannot open the journal {}", journal_path.display()))?);
    let keys = settlement_keys(&config)?;
    anyhow::ensure!(!keys.is_empty(), "no settlement key: the config prices no route");
    let mut settler = build_settler(&config, &keys, journal.clone())?;
    // With a shared store, the lost replica's unsettled payments still count there: settling
    // them frees that room for the replicas still running.
    let ledger = match config.store {
        StoreSettings::Redis(_) => Some(build_shared_state(&config, &journal, &[])?.ledger),
        StoreSettings::Memory => None,
    };
    if let Some(ledger) = &ledger {
        settler = settler.with_credit_control(CreditControl { ledger: ledger.clone(), block_payer_for_secs: config.exposure.block_failed_payers_seconds, payer_paid: None });
    }
    let settler = Arc::new(settler);
    let (_queue, settle_now) = settler.settle_before(1);
    let (_shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(true);
    tracing::info!(journal = %journal_path.display(), unsettled = journal.unsettled_count()?, "settling the journal");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        settler.run(shutdown_rx, timeout, settle_now).await;
        if let Some(ledger) = &ledger {
            ledger.flush(Duration::from_secs(10)).await;
        }
    });
    let left = journal.unsettled_count()?;
    tracing::info!(counts = ?journal.counts()?, left, "journal settled");
    journal.close();
    Ok(left)
}

/// The admin API's bearer token, checked before anything starts: a guessable one refuses
/// to start rather than guard the admin API badly.
fn admin_token(config: &Config) -> anyhow::Result<Option<AdminToken>> {
    if config.admin.listen.is_none() {
        return Ok(None);
    }
    let env = &config.admin.token_env;
    Ok(AdminToken::from_env_value(env, std::env::var(env).ok().as_deref())?)
}

fn journal_options(config: &Config) -> JournalOptions {
    JournalOptions {
        group_commit: config.settlement.group_commit,
        sync: config.settlement.journal_sync,
        // One receipt connection per proxy worker thread: a worker looks receipts up one at a
        // time and without yielding, so it always finds a free one and never waits.
        receipt_readers: config.server.threads,
    }
}

fn pingora_conf(config: &Config) -> ServerConf {
    // Pingora's own grace period only backs up `serve_until_drained`, which ends the
    // process's serving first: it must not drop the requests that one still waits for.
    let drain_seconds = config.server.grace_period_seconds + config.server.graceful_shutdown_timeout_seconds;
    ServerConf {
        threads: config.server.threads,
        upgrade_sock: config.server.upgrade_sock.to_string_lossy().into_owned(),
        grace_period_seconds: Some(drain_seconds + 1),
        graceful_shutdown_timeout_seconds: Some(config.server.graceful_shutdown_timeout_seconds),
        ..ServerConf::default()
    }
}

/// Runs Pingora on a thread of its own until it has stopped accepting (on a signal, or
/// after handing its sockets to a new process) and the requests in flight have finished:
/// up to `grace_period_seconds` for all of them, then `graceful_shutdown_timeout_seconds`
/// for those already past the point where the drain stops charging. Pingora's thread is
/// left sleeping out its longer grace period; the process exits without it.
fn serve_until_drained(server: Server, signals: GracefulOnSignals, drain: &Drain, settings: &ServerSettings) -> anyhow::Result<()> {
    let mut phases = server.watch_execution_phase();
    let pingora = std::thread::Builder::new()
        .name("pingora".into())
        .spawn(move || server.run(RunArgs { shutdown_signal: Box::new(signals) }))
        .context("cannot start the Pingora server thread")?;
    loop {
        match phases.blocking_recv() {
            // Sent once Pingora has broadcast its shutdown: the listeners stop accepting.
            Ok(ExecutionPhase::ShutdownStarted) => break,
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                return pingora.join().map_err(|_| anyhow::anyhow!("the Pingora server thread panicked"));
            }
        }
    }
    let in_flight = drain.in_flight();
    let grace = Duration::from_secs(settings.grace_period_seconds);
    let settled = drain.settle(grace, Duration::from_secs(settings.graceful_shutdown_timeout_seconds));
    if settled.cut > 0 {
        tracing::warn!(cut = settled.cut, "requests still in flight after the grace period are cut; none was charged after it ended");
    }
    tracing::info!(in_flight, cut = settled.cut, "stopped accepting; requests in flight drained");
    Ok(())
}

/// Pingora keeps retrying a taken port instead of failing, so a stale instance could
/// answer in our place: check first and fail loudly.
fn ensure_listen_addresses_free(config: &Config) -> anyhow::Result<()> {
    for address in std::iter::once(config.server.listen).chain(config.admin.listen) {
        std::net::TcpListener::bind(address).map(drop).with_context(|| format!("cannot listen on {address}"))?;
    }
    Ok(())
}

/// The longest an authorization accepted under `config` stays usable: its longest quote
/// plus the clock skew allowed.
fn longest_quote_seconds(config: &Config) -> u64 {
    let quotes = config.routes.iter().flat_map(|r| r.pricing.iter().chain(r.honoured.iter().map(|h| &h.pricing)));
    quotes.map(|p| p.max_timeout_seconds).max().unwrap_or(0) + config.verify_policy.clock_skew_secs
}

/// The old process has let go of the journal, so everything it charged is journaled; the
/// window closes when the last of it has expired, and never before a quote given now has.
fn close_upgrade_window(window: &UpgradeWindow, journal: &Journal, longest_quote: u64) {
    let now = x402_store::unix_now();
    match journal.live(now) {
        Ok(live) => {
            let closes_at = live.iter().map(|r| r.item.valid_before).max().unwrap_or(0).max(now + longest_quote);
            window.close_at(closes_at);
            tracing::info!(closes_in_seconds = closes_at - now, "the old process let go of the journal; the upgrade window closes when its payments have expired");
        }
        Err(error) => tracing::warn!(%error, "cannot read the journal; the upgrade window stays open"),
    }
}

fn settler_lock_path(journal: &Path) -> PathBuf {
    let mut name = journal.as_os_str().to_owned();
    name.push(".settler-lock");
    PathBuf::from(name)
}

/// The journal's settler lock, or an error if a gateway holds it: two settlers on one journal
/// and one key would sign conflicting transactions.
fn settler_lock_now(journal: &Path) -> anyhow::Result<std::fs::File> {
    let path = settler_lock_path(journal);
    let file = open_settler_lock(&path)?;
    match try_settler_lock(&file)? {
        true => Ok(file),
        false => bail!("a gateway is settling from {} right now: stop it first (this is for a journal no gateway runs on)", journal.display()),
    }
}

fn open_settler_lock(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open the settler lock {}", path.display()))
}

/// False while another process holds the lock.
fn try_settler_lock(file: &std::fs::File) -> anyhow::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(error)) => Err(error).context("cannot lock the settler lock file"),
    }
}

/// Waits until no other process settles from this journal (during a graceful upgrade, the
/// old one drains first). `None`: shutdown came first.
async fn take_settler_lock(path: &Path, mut shutdown: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<Option<std::fs::File>> {
    let file = open_settler_lock(path)?;
    let mut waiting_logged = false;
    while !try_settler_lock(&file)? {
        if !waiting_logged {
            tracing::info!(lock = %path.display(), "another process is settling from this journal; settlement starts when it lets go");
            waiting_logged = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return Ok(None);
        }
    }
    Ok(Some(file))
}

/// What `store` names: the payment ledger, the channel records and who claims channels.
struct SharedState {
    ledger: Arc<dyn PaymentLedger>,
    channels: Arc<dyn ChannelStore>,
    claimer_lease: Arc<dyn ClaimerLease>,
}

/// The state `store` names, holding the journal's payments and `channels` (payment channels
/// count their unclaimed value into the ledger too). In this process it is rebuilt with the
/// journal's payer blocks and recent losses; in Redis, only what the store lost is added back,
/// and one replica of the fleet at a time claims the channels.
fn build_shared_state(config: &Config, journal: &Arc<Journal>, channels: &[ChannelRecord]) -> anyhow::Result<SharedState> {
    let StoreSettings::Redis(settings) = &config.store else {
        let exposure = Arc::new(Exposure::new(config.exposure.limits));
        restore_blocks_and_losses(&exposure, journal)?;
        let ledger = LocalLedger::new(Arc::new(MemoryReplayStore::default()), exposure);
        let payments = journaled_payments(journal)?;
        ledger.restore_now(&payments);
        tracing::info!(payments = payments.len(), unsettled = journal.unsettled_count()?, "payment ledger rebuilt from the journal");
        let channels = Arc::new(MemoryChannelStore::with_records(channels.to_vec()));
        return Ok(SharedState { ledger: Arc::new(ledger), channels, claimer_lease: Arc::new(SoleClaimer) });
    };
    let ledger = connect_shared_ledger(config, settings, journal)?;
    let channels = Arc::new(ledger.channel_store().context("cannot share payment channels through the store")?);
    let claimer_lease = Arc::new(ledger.claimer_lease().context("cannot share payment channels through the store")?);
    Ok(SharedState { ledger: Arc::new(ledger), channels, claimer_lease })
}

/// The Redis ledger, with this replica's journal restored into it.
fn connect_shared_ledger(config: &Config, settings: &x402_store::RedisSettings, journal: &Arc<Journal>) -> anyhow::Result<RedisLedger> {
    let source = journal.clone();
    let channels = journal.clone();
    let copy = x402_store::JournalSource {
        payments: Box::new(move || journaled_payments(&source).map_err(|error| format!("{error:#}"))),
        channels: Box::new(move || channels.channels().map_err(|error| error.to_string())),
    };
    let ledger = RedisLedger::connect(settings, config.exposure.limits, copy).context("cannot connect to the shared store (store.url)")?;
    ledger.merge_blocks(journal.payer_blocks(x402_store::unix_now()).context("cannot read the journal")?);
    tracing::info!(prefix = %settings.key_prefix, "payment ledger shared through Redis");
    Ok(ledger)
}

/// The journal's payments still inside their validity, and every unsettled one.
fn journaled_payments(journal: &Journal) -> anyhow::Result<Vec<Restored>> {
    let mut payments: std::collections::BTreeMap<String, Restored> = std::collections::BTreeMap::new();
    let live = journal.live(x402_store::unix_now()).context("cannot read the journal")?;
    let unsettled = journal.unsettled().context("cannot read the journal")?;
    for (record, counts) in live.into_iter().map(|r| (r, false)).chain(unsettled.into_iter().map(|r| (r, true))) {
        let key = crate::payment::journaled_key(&record.item)
            .with_context(|| format!("journal payment {} has an unreadable authorization", record.id))?;
        let entry = payments.entry(record.receipt_id.clone()).or_insert_with(|| Restored {
            key,
            receipt_id: record.receipt_id.clone(),
            valid_before: record.item.valid_before,
            payer: record.payer.clone(),
            route: record.route.clone(),
            usd_micros: record.usd_micros,
            unsettled: false,
        });
        entry.unsettled |= counts;
    }
    Ok(payments.into_values().collect())
}

/// A channel's unclaimed value in micro-USD, by the decimals of the asset a route offers for
/// its token (6, USDC's, for a token no route offers any more).
fn unclaimed_usd_micros(config: &Config, record: &x402_store::ChannelRecord) -> u64 {
    let token = alloy_primitives::Address::from(record.terms.token);
    let decimals = config
        .routes
        .iter()
        .filter_map(|route| route.pricing.as_ref())
        .flat_map(|pricing| pricing.channel_offers.iter())
        .find(|offer| offer.offer.asset.address == token)
        .map_or(6, |offer| offer.offer.asset.decimals);
    crate::payment::usd_micros(alloy_primitives::U256::from(record.unclaimed()), decimals)
}

/// Stops counting claimed voucher value against the exposure limits, every second.
fn spawn_claimed_sweep(exposure: Arc<ChannelExposure>, store: Arc<dyn ChannelStore>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    std::thread::Builder::new()
        .name("x402-channel-exposure".into())
        .spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                tracing::error!("cannot start the channel exposure sweep's runtime; claimed channel value keeps counting");
                return;
            };
            runtime.block_on(async {
                while !*shutdown.borrow_and_update() {
                    exposure.sweep_claimed(store.as_ref()).await;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            });
        })
        .map(drop)
        .unwrap_or_else(|error| tracing::error!(%error, "cannot start the channel exposure sweep; claimed channel value keeps counting"));
}

/// Payer blocks still in force and the loss budget's recent failures, from the journal.
fn restore_blocks_and_losses(exposure: &Exposure, journal: &Journal) -> anyhow::Result<()> {
    exposure.replace_blocks(journal.payer_blocks(x402_store::unix_now()).context("cannot read the journal")?);
    // A day back is as far as the loss budget remembers: it drains a full budget a day.
    // An operator's reset (`POST /exposure/losses/reset`) forgives what failed before it.
    let day_ago_ms = x402_store::unix_now_ms().saturating_sub(86_400_000);
    let since_ms = journal.last_loss_reset_ms().context("cannot read the journal")?.map_or(day_ago_ms, |reset| reset.max(day_ago_ms));
    for (usd_micros, failed_at_ms) in journal.failures_since(since_ms).context("cannot read the journal")? {
        exposure.record_loss(usd_micros, failed_at_ms / 1000);
    }
    Ok(())
}

/// The settlement keys, when any route is priced (a gateway of free routes needs none):
/// one nonce lane each, the first also for reads.
fn settlement_keys(config: &Config) -> anyhow::Result<Vec<PrivateKeySigner>> {
    if !config.routes.iter().any(|r| r.pricing.is_some()) {
        return Ok(Vec::new());
    }
    let mut keys: Vec<PrivateKeySigner> = Vec::new();
    for env in &config.settlement.private_key_envs {
        let key = std::env::var(env)
            .with_context(|| format!("settlement key: set the environment variable {env} (0x-hex private key)"))?;
        let key: PrivateKeySigner = key.trim().parse().with_context(|| format!("settlement key in {env} is not a valid private key"))?;
        if keys.iter().any(|other| other.address() == key.address()) {
            anyhow::bail!("settlement key in {env} is already configured under another name: two lanes would share one nonce sequence");
        }
        keys.push(key);
    }
    Ok(keys)
}

/// A chain client per configured network, in config order.
fn chain_clients(config: &Config, key: &PrivateKeySigner) -> anyhow::Result<Vec<ChainClient>> {
    let clients = config
        .networks
        .iter()
        .map(|network| ChainClient::new(&network.rpc_urls, key.clone(), network.chain_id, config.settlement.max_fee_per_gas_wei))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(clients)
}

/// One settler for every configured network, with a nonce lane per settlement key.
fn build_settler(config: &Config, keys: &[PrivateKeySigner], journal: Arc<Journal>) -> anyhow::Result<Settler> {
    let mut lanes = Vec::with_capacity(keys.len());
    for key in keys {
        lanes.push(chain_clients(config, key)?);
    }
    let networks = config
        .networks
        .iter()
        .enumerate()
        .map(|(index, network)| NetworkSettlement {
            network: network.id.clone(),
            multicall: network.multicall,
            clients: lanes.iter().filter_map(|clients| clients.get(index).cloned()).collect(),
        })
        .collect::<Vec<_>>();
    let settlers: Vec<String> = keys.iter().map(|key| key.address().to_string()).collect();
    tracing::info!(settlers = ?settlers, networks = networks.len(), "settlement keys loaded");
    Ok(Settler::new(journal, networks, config.settlement.policy.clone()))
}

/// Starts the stall guard on a thread of its own: it probes the RPC nodes and reads the
/// journal every second, and must not wait behind the settler or the workers.
fn spawn_stall_guard(
    config: &Config,
    key: &PrivateKeySigner,
    journal: Arc<Journal>,
    health: Arc<SettlementHealth>,
    metrics: Arc<x402_settle::SettlementMetrics>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let networks = config.networks.iter().map(|n| n.name.clone()).zip(chain_clients(config, key)?).collect();
    let policy = StallPolicy {
        stall_after: config.settlement.stall_after,
        batch_window: config.settlement.policy.max_wait,
        expiry_guard: Duration::from_secs(config.verify_policy.settle_margin_secs / 2),
    };
    let guard = StallGuard { journal, networks, policy, health, metrics };
    spawn_guard("stall-guard", move || guard.run(shutdown))
}

/// Runs a guard's loop on a thread of its own with a runtime of its own: a guard reads the
/// journal (and probes RPC nodes) every second and must not wait behind the settler or the
/// workers.
fn spawn_guard<F: std::future::Future<Output = ()>>(name: &'static str, guard: impl FnOnce() -> F + Send + 'static) -> anyhow::Result<()> {
    std::thread::Builder::new().name(name.into()).spawn(move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(guard()),
        Err(error) => tracing::error!(%error, guard = name, "a settlement guard could not start"),
    })?;
    Ok(())
}

/// Starts admission by settlement capacity on a thread of its own, beside the stall guard.
/// The shortest quote per network is read from the serving config at every check, so a
/// reload is followed.
fn spawn_admission_guard(
    live: &Arc<ArcSwap<Config>>,
    journal: Arc<Journal>,
    metrics: Arc<x402_settle::SettlementMetrics>,
    admission: Arc<SettlementAdmission>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let config = live.load();
    let policy = AdmissionPolicy {
        max_batch: config.settlement.policy.first_batch_size(),
        // A partial batch waits `max_wait` at most, and never past the point where one of
        // its payments is `urgent_secs` from its deadline: then it goes at once.
        batch_window: config.settlement.policy.max_wait.min(Duration::from_secs(config.settlement.policy.urgent_secs)),
        settle_margin_secs: config.verify_policy.settle_margin_secs,
        min_time_left_secs: config.settlement.policy.min_time_left_secs,
    };
    let networks = config.networks.iter().map(|n| n.id.clone()).collect();
    let live = live.clone();
    let shortest_quotes = Box::new(move || shortest_quotes(&live.load()));
    let guard = AdmissionGuard { journal, metrics, networks, policy, shortest_quotes, admission };
    spawn_guard("admission-guard", move || guard.run(shutdown))
}

/// The shortest `maxTimeoutSeconds` each network (CAIP-2 id) is offered with by a priced route.
fn shortest_quotes(config: &Config) -> std::collections::BTreeMap<String, u64> {
    let mut quotes = std::collections::BTreeMap::new();
    for requirement in config.routes.iter().filter_map(|r| r.pricing.as_ref()).flat_map(|p| &p.requirements) {
        let quote = quotes.entry(requirement.network.clone()).or_insert(requirement.max_timeout_seconds);
        *quote = (*quote).min(requirement.max_timeout_seconds);
    }
    quotes
}

/// Token balances for the balance check, read through the networks' RPC URLs.
fn build_balance_cache(config: &Config, key: Option<&PrivateKeySigner>) -> anyhow::Result<Option<Arc<BalanceCache>>> {
    if !config.exposure.balance_check {
        return Ok(None);
    }
    // Balance reads sign nothing; without a settlement key a fixed throwaway key builds the
    // clients, so the check is never skipped for want of one.
    let read_only = PrivateKeySigner::from_bytes(&alloy_primitives::B256::repeat_byte(1)).context("read-only RPC client key")?;
    let chains = config.networks.iter().map(|n| n.chain_id).zip(chain_clients(config, key.unwrap_or(&read_only))?).collect();
    Ok(Some(Arc::new(BalanceCache::new(chains, config.exposure.balance_cache, config.exposure.balance_timeout))))
}

/// SIGTERM and SIGINT both stop gracefully (Pingora's default treats SIGINT as a fast
/// exit, which would drop accepted payments); SIGQUIT hands the sockets to a new process
/// and opens the upgrade window: from then on both processes serve from one journal.
struct GracefulOnSignals {
    upgrade_window: Arc<UpgradeWindow>,
    drain: Arc<Drain>,
}

#[async_trait]
impl ShutdownSignalWatch for GracefulOnSignals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) =
            (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::quit()))
        else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL only");
            return std::future::pending().await;
        };
        let signal = tokio::select! {
            _ = term.recv() => ShutdownSignal::GracefulTerminate,
            _ = int.recv() => ShutdownSignal::GracefulTerminate,
            _ = quit.recv() => {
                self.upgrade_window.open();
                ShutdownSignal::GracefulUpgrade
            }
        };
        // From now on clients are told not to reuse their connections: during a hand-over
        // they reconnect, and the new process takes their next requests.
        self.drain.begin();
        signal
    }
}
