//! Hot reload of `gateway.yaml`: the new file is read, validated and built whole, then
//! swapped in atomically. An invalid file changes nothing; the old config keeps serving.
//!
//! Triggers: the file watcher (it polls the file's contents through symlinks, so editors
//! that replace the file and Kubernetes ConfigMap symlink swaps are both seen), SIGHUP, and
//! the admin API.
//! Requests in flight keep the snapshot they started with.
//!
//! What a running process cannot change (listeners, the settlement key and journal, the
//! networks the settler signs for) keeps its running value; a reload reports those fields
//! as needing a restart instead of ignoring them silently.

use crate::config::{parse_config, Config, ConfigError, HonouredPricing};
use crate::metrics::Metrics;
use alloy_primitives::{hex, keccak256};
use arc_swap::ArcSwap;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use x402_store::{unix_now, PaymentLedger};

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// Valid on its own, but not applicable to this running process.
    #[error("{path}: {message}")]
    NeedsRestart { path: PathBuf, message: String },
}

/// What a reload did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadOutcome {
    /// `false`: the file is the one already serving.
    pub changed: bool,
    pub hash: String,
    /// Fields that differ from the running process and apply only after a restart.
    pub restart_required: Vec<String>,
}

/// The serving config's identity and the last reload attempt, for the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    pub file: PathBuf,
    pub hash: String,
    /// Unix seconds when the serving config was loaded.
    pub loaded_at: u64,
    pub restart_required: Vec<String>,
    pub last_attempt: Option<ReloadAttempt>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReloadAttempt {
    pub at: u64,
    pub trigger: String,
    pub ok: bool,
    pub error: Option<String>,
}

pub struct Reloader {
    path: PathBuf,
    live: Arc<ArcSwap<Config>>,
    ledger: Arc<dyn PaymentLedger>,
    metrics: Arc<Metrics>,
    /// The networks the settler started with (CAIP-2 ids): the only ones it signs for.
    settled_networks: Vec<String>,
    /// One reload at a time; also the status the admin API shows.
    status: Mutex<ReloadStatus>,
}

/// A short identity of a config file's bytes: what the admin API and metrics show.
pub fn config_hash(text: &str) -> String {
    hex::encode(&keccak256(text.as_bytes())[..8])
}

impl Reloader {
    /// Wraps the config that is serving now, loaded from `text`.
    pub fn new(path: &Path, text: &str, live: Arc<ArcSwap<Config>>, ledger: Arc<dyn PaymentLedger>, metrics: Arc<Metrics>) -> Self {
        let status = ReloadStatus {
            file: path.to_owned(),
            hash: config_hash(text),
            loaded_at: unix_now(),
            restart_required: Vec::new(),
            last_attempt: None,
        };
        metrics.set_config(&status.hash, status.loaded_at);
        let settled_networks = live.load().networks.iter().map(|n| n.id.clone()).collect();
        Self { path: path.to_owned(), live, ledger, metrics, settled_networks, status: Mutex::new(status) }
    }

    pub fn status(&self) -> ReloadStatus {
        self.lock_status().clone()
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, ReloadStatus> {
        self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads the file again and, if it is valid and differs, makes it the serving config.
    pub fn reload(&self, trigger: &str) -> Result<ReloadOutcome, ReloadError> {
        let mut status = self.lock_status();
        let result = self.try_reload(&status);
        let now = unix_now();
        let error = result.as_ref().err().map(ToString::to_string);
        status.last_attempt = Some(ReloadAttempt { at: now, trigger: trigger.to_owned(), ok: error.is_none(), error: error.clone() });
        match &result {
            Ok(outcome) if outcome.changed => {
                status.hash = outcome.hash.clone();
                status.loaded_at = now;
                status.restart_required = outcome.restart_required.clone();
                self.metrics.reloads.with_label_values(&["success"]).inc();
                self.metrics.set_config(&outcome.hash, now);
                tracing::info!(trigger, hash = %outcome.hash, restart_required = ?outcome.restart_required, "config reloaded");
                if !outcome.restart_required.is_empty() {
                    tracing::warn!(fields = ?outcome.restart_required, "these changes apply only after a restart; the running values stay");
                }
            }
            Ok(_) => tracing::debug!(trigger, "config file unchanged"),
            Err(error) => {
                self.metrics.reloads.with_label_values(&["failure"]).inc();
                tracing::error!(trigger, file = %self.path.display(), %error, "config reload refused; the previous config keeps serving");
            }
        }
        result
    }

    fn try_reload(&self, serving: &ReloadStatus) -> Result<ReloadOutcome, ReloadError> {
        let text = std::fs::read_to_string(&self.path).map_err(|source| ConfigError::Read { path: self.path.clone(), source })?;
        let hash = config_hash(&text);
        if hash == serving.hash {
            return Ok(ReloadOutcome { changed: false, hash, restart_required: serving.restart_required.clone() });
        }
        let mut next = parse_config(&text, &self.path)?;
        let old = self.live.load_full();
        check_networks_settleable(&self.settled_networks, &next)
            .map_err(|message| ReloadError::NeedsRestart { path: self.path.clone(), message })?;
        let restart_required = keep_running_values(&old, &mut next);
        carry_honoured_quotes(&old, &mut next, unix_now());
        self.ledger.set_limits(next.exposure.limits);
        self.live.store(Arc::new(next));
        Ok(ReloadOutcome { changed: true, hash, restart_required })
    }
}

/// The settler signs only for the networks it started with: a route priced on another one
/// would take payments nobody settles.
fn check_networks_settleable(settled: &[String], next: &Config) -> Result<(), String> {
    for route in &next.routes {
        for offer in route.pricing.iter().flat_map(|p| &p.offers) {
            if !settled.contains(&offer.network_id) {
                return Err(format!(
                    "routes.{}: network {} ({}) is not one the running settler settles on; adding a network needs a restart",
                    route.name, offer.network, offer.network_id
                ));
            }
        }
    }
    Ok(())
}

/// Puts the running process's values back into `next` where they cannot change live, and
/// names each field that differed.
fn keep_running_values(old: &Config, next: &mut Config) -> Vec<String> {
    let mut differs = Vec::new();
    let mut keep = |field: &str, changed: bool| differs.extend(changed.then(|| field.to_owned()));
    let (o, n) = (&old.server, &next.server);
    keep("server.listen", o.listen != n.listen);
    keep("server.threads", o.threads != n.threads);
    keep("server.verify_threads", o.verify_threads != n.verify_threads);
    keep("server.verify_queue", o.verify_queue != n.verify_queue);
    keep("server.grace_period_seconds", o.grace_period_seconds != n.grace_period_seconds);
    keep("server.graceful_shutdown_timeout_seconds", o.graceful_shutdown_timeout_seconds != n.graceful_shutdown_timeout_seconds);
    keep("server.upgrade_sock", o.upgrade_sock != n.upgrade_sock);
    keep("admin", old.admin != next.admin);
    keep("settlement", old.settlement != next.settlement);
    let networks = |c: &Config| c.networks.iter().map(|n| (n.id.clone(), n.rpc_urls.clone(), n.multicall)).collect::<Vec<_>>();
    keep("networks (rpc urls, multicall)", networks(old) != networks(next));
    let (o, n) = (&old.exposure, &next.exposure);
    keep("exposure.block_failed_payers_seconds", o.block_failed_payers_seconds != n.block_failed_payers_seconds);
    keep("exposure.balance_check", o.balance_check != n.balance_check || o.balance_cache != n.balance_cache);
    keep("store", old.store != next.store);
    next.store = old.store.clone();
    next.server = old.server.clone();
    next.admin = old.admin.clone();
    next.settlement = old.settlement.clone();
    next.exposure.block_failed_payers_seconds = o.block_failed_payers_seconds;
    next.exposure.balance_check = o.balance_check;
    next.exposure.balance_cache = o.balance_cache;
    differs
}

/// A client quoted under `old` may pay after the reload: each route keeps accepting what it
/// offered before, until that quote's `maxTimeoutSeconds` has run out, but only where the
/// quote was given. A route's earlier quotes come from the first old route with the very
/// same match (methods, host, path pattern), whatever either is called: not by name, which
/// a reload can move to another path, nor by position, which an inserted route shifts. A
/// route whose match changed starts with no honoured quotes.
pub fn carry_honoured_quotes(old: &Config, next: &mut Config, now: u64) {
    for route in &mut next.routes {
        let Some(previous) = old.routes.iter().find(|r| r.same_match(route)) else {
            route.honoured.clear();
            continue;
        };
        let current = route.pricing.as_ref().map(|p| p.accepts_raw.get());
        let mut honoured: Vec<HonouredPricing> =
            previous.honoured.iter().filter(|h| h.until > now && Some(h.pricing.accepts_raw.get()) != current).cloned().collect();
        if let Some(pricing) = previous.pricing.as_ref().filter(|p| Some(p.accepts_raw.get()) != current) {
            honoured.push(HonouredPricing { pricing: pricing.clone(), until: now + pricing.max_timeout_seconds });
        }
        route.honoured = honoured;
    }
}

/// Reloads on SIGHUP and, when `watch` is set, whenever the config file changes. Runs until
/// the process exits.
pub fn spawn_reload_triggers(reloader: Arc<Reloader>, watch: bool) -> anyhow::Result<()> {
    // Installed before this returns: SIGHUP's default action would end the process.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let hangup = runtime.block_on(async { tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) })?;
    let (changed_tx, changed_rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = if watch { Some(watch_config_file(&reloader.path, changed_tx)?) } else { None };
    std::thread::Builder::new().name("config-reload".into()).spawn(move || {
        let _watcher = watcher;
        runtime.block_on(reload_on_triggers(reloader, hangup, changed_rx));
    })?;
    Ok(())
}

async fn reload_on_triggers(
    reloader: Arc<Reloader>,
    mut hangup: tokio::signal::unix::Signal,
    mut changed: tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    loop {
        let trigger = tokio::select! {
            Some(()) = hangup.recv() => "SIGHUP",
            Some(()) = changed.recv() => {
                // Editors write in several steps and ConfigMaps swap a symlink: let the
                // folder settle, then read once.
                while tokio::time::timeout(Duration::from_millis(200), changed.recv()).await.is_ok_and(|e| e.is_some()) {}
                "file"
            }
            else => return,
        };
        let reloader = reloader.clone();
        let _ = tokio::task::spawn_blocking(move || reloader.reload(trigger)).await;
    }
}

/// Polls the file once a second (notify's `PollWatcher`, comparing contents), following
/// symlinks: a file replaced by rename and a ConfigMap's `..data` symlink swap both show
/// up, and nothing wakes when other files change. An inotify watch would have to be on the
/// folder, which by default also holds the journal: every journal write woke the watcher,
/// about 9% of a core under paid load.
fn watch_config_file(path: &Path, changed: tokio::sync::mpsc::UnboundedSender<()>) -> anyhow::Result<notify::PollWatcher> {
    use notify::Watcher;
    let config = notify::Config::default().with_poll_interval(Duration::from_secs(1)).with_compare_contents(true).with_follow_symlinks(true);
    let mut watcher = notify::PollWatcher::new(
        move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| !e.kind.is_access()) {
                let _ = changed.send(());
            }
        },
        config,
    )?;
    watcher.watch(path, notify::RecursiveMode::NonRecursive)?;
    tracing::info!(file = %path.display(), "watching the config file for changes");
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TEST_YAML as BASE;

    fn parse(text: &str) -> Config {
        parse_config(text, Path::new("test.yaml")).unwrap()
    }

    fn amounts(route: &crate::config::Route) -> Vec<String> {
        route.honoured.iter().map(|h| h.pricing.offers[0].amount.to_string()).collect()
    }

    #[test]
    fn a_price_change_keeps_the_previous_quote_until_its_timeout() {
        let old = parse(BASE);
        let mut next = parse(&BASE.replace("$0.001", "$0.002"));
        carry_honoured_quotes(&old, &mut next, 1_000);
        assert_eq!(amounts(&next.routes[0]), ["1000"]);
        assert_eq!(next.routes[0].honoured[0].until, 1_000 + 300);

        // A second change keeps both earlier quotes while they last...
        let mut third = parse(&BASE.replace("$0.001", "$0.003"));
        carry_honoured_quotes(&next, &mut third, 1_100);
        assert_eq!(amounts(&third.routes[0]), ["1000", "2000"]);
        // ...and drops the ones that ran out, or that are the current price again.
        let mut back = parse(BASE);
        carry_honoured_quotes(&third, &mut back, 1_350);
        assert_eq!(amounts(&back.routes[0]), ["2000", "3000"]);
    }

    #[test]
    fn an_unchanged_price_carries_nothing() {
        let old = parse(BASE);
        let mut next = parse(&BASE.replace("path: /health", "path: /healthz"));
        carry_honoured_quotes(&old, &mut next, 1_000);
        assert!(next.routes[0].honoured.is_empty());
    }

    /// A route's old quotes follow its match, never its name: renaming it keeps them,
    /// pointing the name at another path, host or method set drops them.
    #[test]
    fn quotes_follow_an_unchanged_match_only() {
        let old = parse(BASE);
        let carried = |text: String| {
            let mut next = parse(&text.replace("$0.001", "$1"));
            carry_honoured_quotes(&old, &mut next, 1_000);
            amounts(&next.routes[0])
        };
        assert_eq!(carried(BASE.replace("name: weather", "name: forecast")), ["1000"], "renamed, same match");
        assert_eq!(carried(BASE.replace("path: /weather", "path: /forecast")), Vec::<String>::new(), "repointed path");
        assert_eq!(carried(BASE.replace("path: /weather", "path: /weather/*")), Vec::<String>::new(), "widened path");
        assert_eq!(carried(BASE.replace("methods: [GET]", "methods: [GET, POST]")), Vec::<String>::new(), "more methods");
        assert_eq!(carried(BASE.replace("methods: [GET]", "methods: [GET]\n    host: paid.example")), Vec::<String>::new(), "host added");
        assert_eq!(carried(BASE.replace("    methods: [GET]\n", "")), Vec::<String>::new(), "every method");
    }

    /// The attack: a cheap wildcard route, then a reload that puts an expensive route above
    /// part of it under the cheap one's old name. The cheap price stays honoured on the
    /// cheap route only.
    #[test]
    fn a_route_inserted_above_a_cheap_one_inherits_nothing() {
        let cheap = BASE.replace("path: /weather", "path: /weather/*");
        let old = parse(&cheap);
        let premium = "  - name: weather\n    path: /weather/premium\n    upstream: sample\n    price: \"$1\"\n  - name: weather-basic";
        let mut next = parse(&cheap.replace("$0.001", "$0.002").replace("  - name: weather", premium));
        carry_honoured_quotes(&old, &mut next, 1_000);
        assert_eq!(next.routes[0].name, "weather");
        assert!(next.routes[0].honoured.is_empty(), "the expensive route honours no cheap quote");
        assert_eq!(amounts(&next.routes[1]), ["1000"], "the cheap route keeps its own");
    }

    /// Unnamed routes are called `route-N` by position; an inserted route must not take
    /// over the quotes of the route it displaced.
    #[test]
    fn unnamed_routes_are_not_identified_by_position() {
        let unnamed = BASE.replace("  - name: weather\n", "  - methods: [GET]\n").replace("    methods: [GET]\n    path", "    path");
        let old = parse(&unnamed);
        assert_eq!(old.routes[0].name, "route-0");
        let inserted = "  - path: /premium\n    upstream: sample\n    price: \"$1\"\n  - methods: [GET]";
        let mut next = parse(&unnamed.replace("$0.001", "$0.002").replacen("  - methods: [GET]", inserted, 1));
        carry_honoured_quotes(&old, &mut next, 1_000);
        assert_eq!((next.routes[0].name.as_str(), next.routes[1].name.as_str()), ("route-0", "route-1"));
        assert!(next.routes[0].honoured.is_empty(), "the new route-0 is another route");
        assert_eq!(amounts(&next.routes[1]), ["1000"], "the old route-0, now route-1, keeps its quote");
    }

    #[test]
    fn listener_and_settlement_changes_keep_running_values_and_are_named() {
        let old = parse(BASE);
        let mut next = parse(
            &BASE
                .replace("networks:", "server:\n  listen: 127.0.0.1:9000\nnetworks:")
                .replace("upstreams:", "settlement:\n  max_batch: 7\nupstreams:")
                .replace("$0.001", "$0.005"),
        );
        let restart = keep_running_values(&old, &mut next);
        assert_eq!(restart, ["server.listen", "settlement"]);
        assert_eq!(next.server.listen, old.server.listen);
        assert_eq!(next.settlement.policy.max_batch, old.settlement.policy.max_batch);
        assert_eq!(next.routes[0].pricing.as_ref().unwrap().offers[0].amount.to_string(), "5000", "the rest applies");
        assert!(keep_running_values(&old, &mut parse(BASE)).is_empty());
    }

    #[test]
    fn a_route_on_a_network_the_settler_does_not_run_is_refused() {
        let next = parse(
            &BASE
                .replace(
                    "networks:\n",
                    "networks:\n  other:\n    id: eip155:31337\n    rpc_url: http://127.0.0.1:8546\n    assets:\n      USDC: { address: \"0x5FbDB2315678afecb367f032d93F642f64180aa3\", decimals: 6, eip712: { name: \"USDC\", version: \"2\" } }\n",
                )
                .replace("price: \"$0.001\"", "price: \"$0.001\"\n    network: other"),
        );
        let error = check_networks_settleable(&["eip155:84532".to_owned()], &next).unwrap_err();
        assert!(error.contains("routes.weather") && error.contains("needs a restart"), "{error}");
        assert!(check_networks_settleable(&["eip155:84532".to_owned()], &parse(BASE)).is_ok());
    }
}
