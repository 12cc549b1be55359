//! Process wiring: the durable journal, the replay store rebuilt from it, the Pingora
//! server for the proxy, a separate runtime thread for the settler, and shutdown that
//! drains both.
//!
//! The settler does not run as a Pingora background service on purpose: Pingora drops its
//! runtimes right after the grace period (and at once on SIGINT), which would cut a drain
//! short. Here the proxy stops first, then the settler settles what it holds, then the
//! process exits.

use crate::balance::BalanceCache;
use crate::config::{load_config, Config};
use crate::proxy::PaywallProxy;
use alloy::signers::local::PrivateKeySigner;
use anyhow::{bail, Context};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use std::path::Path;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use x402_settle::{ChainClient, NetworkSettlement, Settler};
use x402_settle::CreditControl;
use x402_store::{Exposure, Journal, JournalOptions, MemoryReplayStore, ReplayStore};

/// Runs the gateway until SIGTERM or SIGINT, then drains.
pub fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = load_config(config_path)?;
    ensure_listen_address_free(&config)?;
    let journal = Arc::new(
        Journal::open(&config.settlement.journal_path, JournalOptions { group_commit: config.settlement.group_commit })
            .context("cannot open the settlement journal")?,
    );
    let replay = rebuild_replay_store(&journal)?;
    let exposure = rebuild_exposure(&config, &journal)?;
    let credit = CreditControl { exposure: exposure.clone(), block_payer_for_secs: config.exposure.block_failed_payers_seconds };
    let key = settlement_key(&config)?;
    let settler = match &key {
        Some(key) => Some(build_settler(&config, key, journal.clone())?.with_credit_control(credit)),
        None => None,
    };
    let balances = build_balance_cache(&config, key.as_ref())?;
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let drain_timeout = config.settlement.drain_timeout;
    let (settle_now_tx, settle_now_rx) = tokio::sync::mpsc::unbounded_channel();
    let settle_now = settler.is_some().then_some(settle_now_tx);
    let settler_thread = std::thread::Builder::new().name("settler".into()).spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        if let Some(settler) = settler {
            runtime.block_on(settler.run(shutdown_rx, drain_timeout, settle_now_rx));
        }
        anyhow::Ok(())
    })?;

    let settle_before_timeout = config.settlement.policy.receipt_timeout * 2;
    let mut server = Server::new_with_opt_and_conf(None, pingora_conf(&config));
    let listen = config.server.listen;
    server.bootstrap();
    let proxy = PaywallProxy {
        config: Arc::new(ArcSwap::from_pointee(config)),
        replay,
        exposure,
        balances,
        journal: journal.clone(),
        settle_now,
        // A settle-before request may wait for the batch in flight and then its own receipt.
        settle_before_timeout,
    };
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, proxy);
    service.add_tcp(&listen.to_string());
    server.add_service(service);
    tracing::info!(%listen, config = %config_path.display(), "x402-gateway listening");
    server.run(RunArgs { shutdown_signal: Box::new(GracefulOnSignals) });

    tracing::info!(unsettled = journal.unsettled_count().unwrap_or_default(), "proxy stopped; draining settlement");
    let _ = shutdown_tx.send(true);
    match settler_thread.join() {
        Ok(result) => result?,
        Err(_) => bail!("the settler thread panicked"),
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

fn pingora_conf(config: &Config) -> ServerConf {
    let mut conf = ServerConf::default();
    conf.threads = config.server.threads;
    conf.grace_period_seconds = Some(config.server.grace_period_seconds);
    conf.graceful_shutdown_timeout_seconds = Some(config.server.graceful_shutdown_timeout_seconds);
    conf
}

/// Pingora keeps retrying a taken port instead of failing, so a stale instance could
/// answer in our place: check first and fail loudly.
fn ensure_listen_address_free(config: &Config) -> anyhow::Result<()> {
    std::net::TcpListener::bind(config.server.listen)
        .map(drop)
        .with_context(|| format!("cannot listen on {}", config.server.listen))
}

/// Every authorization the journal holds stays refused until its `validBefore`, across
/// restarts: a payment accepted before a crash is still a replay after it.
fn rebuild_replay_store(journal: &Journal) -> anyhow::Result<Arc<dyn ReplayStore>> {
    let store = MemoryReplayStore::default();
    let live = journal.live(x402_store::unix_now()).context("cannot read the journal")?;
    for record in &live {
        let key = crate::payment::journaled_key(&record.item)
            .with_context(|| format!("journal payment {} has an unreadable authorization", record.id))?;
        store.reserve(key, record.item.valid_before);
    }
    tracing::info!(reserved = live.len(), unsettled = journal.unsettled_count()?, "replay store rebuilt from the journal");
    Ok(Arc::new(store))
}

/// Payments accepted and not yet settled are still credit after a restart.
fn rebuild_exposure(config: &Config, journal: &Journal) -> anyhow::Result<Arc<Exposure>> {
    let exposure = Exposure::new(config.exposure.limits);
    for record in journal.unsettled().context("cannot read the journal")? {
        exposure.restore(&record.payer, &record.route, record.usd_micros);
    }
    exposure.replace_blocks(journal.payer_blocks(x402_store::unix_now()).context("cannot read the journal")?);
    Ok(Arc::new(exposure))
}

/// One settler for every configured network, signing with the key named in the config.
/// The settlement key, when any route is priced (a gateway of free routes needs none).
fn settlement_key(config: &Config) -> anyhow::Result<Option<PrivateKeySigner>> {
    if !config.routes.iter().any(|r| r.pricing.is_some()) {
        return Ok(None);
    }
    let env = &config.settlement.private_key_env;
    let key = std::env::var(env)
        .with_context(|| format!("settlement key: set the environment variable {env} (0x-hex private key)"))?;
    let key: PrivateKeySigner = key.trim().parse().with_context(|| format!("settlement key in {env} is not a valid private key"))?;
    Ok(Some(key))
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

/// One settler for every configured network, signing with the settlement key.
fn build_settler(config: &Config, key: &PrivateKeySigner, journal: Arc<Journal>) -> anyhow::Result<Settler> {
    let networks = config
        .networks
        .iter()
        .zip(chain_clients(config, key)?)
        .map(|(network, client)| NetworkSettlement { network: network.id.clone(), multicall: network.multicall, client })
        .collect::<Vec<_>>();
    tracing::info!(settler = %key.address(), networks = networks.len(), "settlement key loaded");
    Ok(Settler::new(journal, networks, config.settlement.policy.clone()))
}

/// Token balances for the optional balance check, read through the networks' RPC URLs.
fn build_balance_cache(config: &Config, key: Option<&PrivateKeySigner>) -> anyhow::Result<Option<Arc<BalanceCache>>> {
    let (true, Some(key)) = (config.exposure.balance_check, key) else { return Ok(None) };
    let chains = config.networks.iter().map(|n| n.chain_id).zip(chain_clients(config, key)?).collect();
    Ok(Some(Arc::new(BalanceCache::new(chains, config.exposure.balance_cache))))
}

/// SIGTERM and SIGINT both stop gracefully (Pingora's default treats SIGINT as a fast
/// exit, which would drop accepted payments); SIGQUIT hands the sockets to a new process.
struct GracefulOnSignals;

#[async_trait]
impl ShutdownSignalWatch for GracefulOnSignals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) =
            (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::quit()))
        else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL only");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => ShutdownSignal::GracefulTerminate,
            _ = int.recv() => ShutdownSignal::GracefulTerminate,
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
        }
    }
}
