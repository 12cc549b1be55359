//! Configuration: `gateway.yaml` → [`raw`] (the file schema) → [`model`] (validated,
//! precomputed) → published to the proxy through `ArcSwap<Config>`.

pub mod model;
pub mod price;
pub mod raw;

pub use model::{ChannelOffer, Config, RequestSettings, RouteMatch, HonouredPricing, Network, Pricing, Route, Unmatched, Upstream};
pub use x402::SCHEME_BATCH_SETTLEMENT;

use model::RouteContext;
use raw::{Prelude, RawConfig};
use std::path::{Path, PathBuf};
use std::time::Duration;
use x402_evm::VerifyPolicy;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The YAML library's message names the field path, line and column.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Reads, validates and builds a complete configuration.
pub fn load_config(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    parse_config(&text, path)
}

/// Reads and validates a configuration for inspection (`validate`, `routes`, `quote`), on a
/// machine that may not hold the settlement key: when its variable is unset, batch-settlement
/// offers name a stand-in `receiverAuthorizer` (the zero address) and the second value says so.
pub fn load_config_for_inspection(path: &Path) -> Result<(Config, Option<String>), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    parse_config_with(&text, path, KeyAbsence::StandIn)
}

/// What an unset settlement key variable means while the config is built.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyAbsence {
    /// An error wherever the key's address is needed: the gateway is about to run.
    Refuse,
    /// The zero address stands in, and a warning says so.
    StandIn,
}

/// Validates `text` as if read from `path`.
pub fn parse_config(text: &str, path: &Path) -> Result<Config, ConfigError> {
    parse_config_with(text, path, KeyAbsence::Refuse).map(|(config, _)| config)
}

fn parse_config_with(text: &str, path: &Path, absence: KeyAbsence) -> Result<(Config, Option<String>), ConfigError> {
    let invalid = |message: String| ConfigError::Invalid { path: path.to_owned(), message };
    let prelude: Prelude = serde_yaml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let networks = model::build_networks(&prelude.networks)
        .map_err(|(field, e)| invalid(format!("{field}: {e}{}", locate_key(text, field.rsplit('.').next().unwrap_or("")))))?;
    let context = RouteContext {
        networks,
        upstream_names: prelude.upstreams.keys().cloned().collect(),
        pay_to: prelude.payments.pay_to.map(|a| a.0),
        max_timeout_seconds: prelude.payments.max_timeout_seconds,
        settle_margin_seconds: prelude.payments.settle_margin_seconds,
        billable: prelude.payments.billable_statuses.clone(),
        receiver_authorizer: receiver_authorizer_address(&prelude.settlement),
    };
    let mut warning = None;
    let context = match (&context.receiver_authorizer, absence) {
        (Err(why), KeyAbsence::StandIn) if why.starts_with(KEY_UNSET) => {
            warning = Some(format!("{why}: batch-settlement offers are checked with a stand-in receiverAuthorizer (0x0); `run` needs the key"));
            RouteContext { receiver_authorizer: Ok(alloy_primitives::Address::ZERO), ..context }
        }
        _ => context,
    };
    let raw: RawConfig =
        raw::with_context(context.clone(), || serde_yaml::from_str(text)).map_err(|e| invalid(e.to_string()))?;
    let config = build_config(raw, context, path).map_err(invalid)?;
    let uses_key = config.routes.iter().filter_map(|route| route.pricing.as_ref()).any(|pricing| !pricing.channel_offers.is_empty());
    Ok((config, warning.filter(|_| uses_key)))
}

const KEY_UNSET: &str = "set the environment variable";

fn build_config(raw: RawConfig, context: RouteContext, path: &Path) -> Result<Config, String> {
    let upstreams = raw
        .upstreams
        .iter()
        .map(|(name, u)| model::build_upstream(name, u).map_err(|e| format!("upstreams.{name}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let unmatched = model::build_unmatched(&raw.unmatched, &context.upstream_names).map_err(|e| format!("unmatched: {e}"))?;
    let routes: Vec<Route> = raw.routes.into_iter().map(|r| r.0).collect();
    refuse_duplicate_route_names(&routes)?;
    let requests = model::build_requests(&raw.requests, &routes)?;
    let private_key_envs = settlement_key_envs(&raw.settlement)?;
    if routes.iter().any(|r| r.pricing.is_some()) && private_key_envs.is_empty() {
        return Err("settlement.private_key_env: name the environment variable that holds the settlement key".into());
    }
    let server = &raw.server;
    if server.max_payment_header_bytes < 1024 {
        return Err("server.max_payment_header_bytes: below 1024 no payment fits".into());
    }
    if server.verify_threads != Some(0) && server.verify_queue == 0 {
        return Err("server.verify_queue: must be at least 1 when verify_threads is above 0".into());
    }
    let settlement = &raw.settlement;
    if settlement.max_batch == Some(0) {
        return Err("settlement.max_batch: must be at least 1".into());
    }
    if !(1..=256).contains(&settlement.max_transactions_in_flight) {
        return Err("settlement.max_transactions_in_flight: must be between 1 and 256".into());
    }
    if !(1..=1000).contains(&settlement.bump_after_blocks) {
        return Err("settlement.bump_after_blocks: must be between 1 and 1000".into());
    }
    if !(1..=86_400).contains(&settlement.stall_after_seconds) {
        return Err("settlement.stall_after_seconds: must be between 1 and 86400".into());
    }
    if settlement.settle_before_queue == 0 {
        return Err("settlement.settle_before_queue: must be at least 1".into());
    }
    if settlement.max_gas_per_transaction < 100_000 {
        return Err("settlement.max_gas_per_transaction: below 100000 not even one transfer fits".into());
    }
    let journal_retention = journal_retention(settlement.journal_retention_days)?;
    let claims = claim_policy(&settlement.channels)?;
    refuse_slow_withdrawal_watch(&routes, &claims)?;
    let journal_path = beside(path, &settlement.journal_path);
    let store = build_store(&raw.store, &routes, raw.settlement.channels.receiver_authorizer_key_env.is_some())?;
    Ok(Config {
        store,
        source: path.to_owned(),
        server: model::ServerSettings {
            listen: server.listen,
            threads: server.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1),
            grace_period_seconds: server.grace_period_seconds,
            graceful_shutdown_timeout_seconds: server.graceful_shutdown_timeout_seconds,
            max_payment_header_bytes: server.max_payment_header_bytes,
            // Recovery is about a fifth of a paid request's CPU: a quarter of the cores keeps up.
            verify_threads: server.verify_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get().div_ceil(4))),
            verify_queue: server.verify_queue,
            upgrade_sock: beside(path, &server.upgrade_sock),
        },
        networks: context.networks,
        settlement: model::SettlementSettings {
            private_key_envs,
            policy: x402_settle::BatchPolicy {
                max_batch: settlement.max_batch.unwrap_or(usize::MAX),
                max_in_flight: settlement.max_transactions_in_flight,
                bump_after_blocks: settlement.bump_after_blocks,
                max_wait: Duration::from_millis(settlement.max_wait_ms),
                receipt_timeout: Duration::from_secs(settlement.receipt_timeout_seconds),
                max_gas_per_transaction: settlement.max_gas_per_transaction,
                ..x402_settle::BatchPolicy::default()
            },
            drain_timeout: Duration::from_secs(settlement.drain_timeout_seconds),
            journal_path,
            group_commit: settlement.group_commit,
            journal_sync: match settlement.journal_sync {
                raw::RawJournalSync::Full => x402_store::JournalSync::Full,
                raw::RawJournalSync::Normal => x402_store::JournalSync::Normal,
            },
            max_fee_per_gas_wei: settlement.max_fee_per_gas_gwei.map(|gwei| u128::from(gwei) * 1_000_000_000),
            stall_after: Duration::from_secs(settlement.stall_after_seconds),
            admission: settlement.admission,
            settle_before_queue: settlement.settle_before_queue,
            journal_retention,
            claims,
            receiver_authorizer_key_env: settlement.channels.receiver_authorizer_key_env.clone(),
        },
        exposure: build_exposure(&raw.exposure)?,
        verify_policy: VerifyPolicy {
            settle_margin_secs: raw.payments.settle_margin_seconds,
            clock_skew_secs: raw.payments.clock_skew_seconds,
        },
        upstreams,
        routes,
        unmatched,
        requests,
        admin: model::AdminSettings {
            listen: raw.admin.listen,
            token_env: raw.admin.token_env.clone(),
            watch_config: raw.admin.watch_config,
        },
    })
}

/// The mirror of a channel holding unclaimed value must be read several times within the
/// shortest withdraw delay offered, or a withdrawal the event watch missed could finalize
/// before its claim.
fn refuse_slow_withdrawal_watch(routes: &[Route], claims: &x402_settle::channels::ClaimPolicy) -> Result<(), String> {
    let offers = routes.iter().filter_map(|route| route.pricing.as_ref().map(|pricing| (route, pricing))).flat_map(|(route, pricing)| pricing.channel_offers.iter().map(move |offer| (route, offer)));
    for (route, offer) in offers {
        if claims.refresh_interval.as_secs().saturating_mul(3) > offer.withdraw_delay_seconds {
            return Err(format!(
                "settlement.channels.refresh_interval_seconds: {} is more than a third of route {:?}'s withdraw delay ({} s); a payer's withdrawal must be seen well before it can be finalized",
                claims.refresh_interval.as_secs(),
                route.name,
                offer.withdraw_delay_seconds
            ));
        }
    }
    Ok(())
}

fn claim_policy(raw: &raw::RawClaims) -> Result<x402_settle::channels::ClaimPolicy, String> {
    if !(1..=86_400).contains(&raw.claim_interval_seconds) {
        return Err("settlement.channels.claim_interval_seconds: must be between 1 and 86400".into());
    }
    if !(1..=3_600).contains(&raw.refresh_interval_seconds) {
        return Err("settlement.channels.refresh_interval_seconds: must be between 1 and 3600 (a withdrawal must be seen well within the withdraw delay)".into());
    }
    if !(1..=1_000).contains(&raw.max_claims_per_transaction) {
        return Err("settlement.channels.max_claims_per_transaction: must be between 1 and 1000".into());
    }
    Ok(x402_settle::channels::ClaimPolicy {
        claim_interval: Duration::from_secs(raw.claim_interval_seconds),
        refresh_interval: Duration::from_secs(raw.refresh_interval_seconds),
        max_claims_per_transaction: raw.max_claims_per_transaction,
    })
}

/// The channels' `receiverAuthorizer`: the address of `settlement.channels.
/// receiver_authorizer_key_env`'s key, or else of the first settlement key (which then claims
/// channels itself), read from its environment variable.
fn receiver_authorizer_address(settlement: &raw::PreludeSettlement) -> Result<alloy_primitives::Address, String> {
    let env = settlement
        .channels
        .receiver_authorizer_key_env
        .clone()
        .or_else(|| settlement.private_key_envs.first().cloned())
        .or_else(|| settlement.private_key_env.clone())
        .unwrap_or_else(|| raw::RawSettlement::default().private_key_env);
    Ok(key_from_env(&env)?.address())
}

/// The private key in the environment variable `env`.
pub fn key_from_env(env: &str) -> Result<alloy::signers::local::PrivateKeySigner, String> {
    let key = std::env::var(env).map_err(|_| format!("{KEY_UNSET} {env} (0x-hex private key)"))?;
    key.trim().parse().map_err(|_| format!("the key in {env} is not a valid private key"))
}

/// Metrics, logs, exposure limits and the journal key on a route's name: two routes with
/// one name would share them.
fn refuse_duplicate_route_names(routes: &[Route]) -> Result<(), String> {
    for (index, route) in routes.iter().enumerate() {
        if let Some(first) = routes[..index].iter().position(|earlier| earlier.name == route.name) {
            return Err(format!(
                "routes[{index}].name: {:?} is already the name of routes[{first}]; route names must be unique",
                route.name
            ));
        }
    }
    Ok(())
}

/// The settlement keys' environment variables: `private_key_envs` when given (each once),
/// else `private_key_env`.
fn settlement_key_envs(settlement: &raw::RawSettlement) -> Result<Vec<String>, String> {
    if settlement.private_key_envs.is_empty() {
        return Ok([settlement.private_key_env.clone()].into_iter().filter(|env| !env.is_empty()).collect());
    }
    for (index, env) in settlement.private_key_envs.iter().enumerate() {
        if env.is_empty() {
            return Err(format!("settlement.private_key_envs[{index}]: empty; name an environment variable"));
        }
        if settlement.private_key_envs[..index].contains(env) {
            return Err(format!("settlement.private_key_envs[{index}]: {env} is listed twice; each key is one nonce lane"));
        }
    }
    Ok(settlement.private_key_envs.clone())
}

/// `file` taken from the config file's folder when it is relative.
/// `settlement.journal_retention_days` as a duration: above zero (fractions allowed, down to
/// seconds), at most a century. Any positive value is safe: what replay protection and the
/// loss budget need is kept whatever it says (see `x402_store::Journal::prune`).
fn journal_retention(days: f64) -> Result<Duration, String> {
    const MAX_DAYS: f64 = 36_500.0;
    if !(days > 0.0 && days <= MAX_DAYS) {
        return Err(format!("settlement.journal_retention_days: must be above 0 and at most {MAX_DAYS} (got {days})"));
    }
    Duration::try_from_secs_f64(days * 86_400.0).map_err(|e| format!("settlement.journal_retention_days: {e}"))
}

fn beside(config: &Path, file: &Path) -> PathBuf {
    match config.parent() {
        Some(folder) if file.is_relative() => folder.join(file),
        _ => file.to_owned(),
    }
}

/// `shared_authorizer`: channels have a receiver authorizer of their own, which every replica
/// can share (a settlement key is one replica's: channels opened with it would be that
/// replica's alone).
fn build_store(raw: &raw::RawStore, routes: &[Route], shared_authorizer: bool) -> Result<model::StoreSettings, String> {
    if raw.kind == raw::StoreKind::Memory {
        return Ok(model::StoreSettings::Memory);
    }
    let url = value_or_env("url", &raw.url, &raw.url_env)?.ok_or("store: give the Redis server as either url or url_env")?;
    x402_store::RedisEndpoint::parse(&url).map_err(|error| format!("store.url: {error}"))?;
    if raw.key_prefix.is_empty() || raw.key_prefix.contains(['{', '}']) {
        return Err("store.key_prefix: must be non-empty and without braces (it is the keys' hash tag)".into());
    }
    if !(1..=10_000).contains(&raw.timeout_ms) {
        return Err("store.timeout_ms: must be between 1 and 10000".into());
    }
    let channel_route = routes.iter().find(|r| r.pricing.as_ref().is_some_and(|p| !p.channel_offers.is_empty()));
    if let (Some(route), false) = (channel_route, shared_authorizer) {
        return Err(format!(
            "store.kind: redis shares batch-settlement channels only with settlement.channels.receiver_authorizer_key_env set (one receiver authorizer key for every replica); route {:?} offers a channel",
            route.name
        ));
    }
    let advertise_url = value_or_env("advertise_url", &raw.advertise_url, &raw.advertise_url_env)?;
    if let Some(url) = &advertise_url {
        let parsed: http::Uri = url.parse().map_err(|_| format!("store.advertise_url: {url:?} is not a URL"))?;
        if parsed.scheme_str() != Some("http") || parsed.authority().is_none() || !parsed.path().trim_end_matches('/').is_empty() {
            return Err(format!("store.advertise_url: {url:?} must be http://host:port, with no path"));
        }
    }
    let advertise_url = advertise_url.map(|url| url.trim_end_matches('/').to_owned());
    if raw.wait_for_replicas > 16 {
        return Err("store.wait_for_replicas: at most 16".into());
    }
    Ok(model::StoreSettings::Redis(x402_store::RedisSettings {
        url,
        key_prefix: raw.key_prefix.clone(),
        timeout: Duration::from_millis(raw.timeout_ms),
        advertise_url,
        wait_for_replicas: raw.wait_for_replicas,
    }))
}

/// `store.<field>`, given in the file or through the environment variable `<field>_env` names.
fn value_or_env(field: &str, value: &Option<String>, env: &Option<String>) -> Result<Option<String>, String> {
    match (value, env) {
        (Some(value), None) => Ok(Some(value.clone())),
        (None, Some(env)) => std::env::var(env).map(Some).map_err(|_| format!("store.{field}_env: the environment variable {env} is not set")),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(format!("store: give {field} or {field}_env, not both")),
    }
}

fn build_exposure(raw: &raw::RawExposure) -> Result<model::ExposureSettings, String> {
    let micros = |field: &str, value: &Option<String>| -> Result<Option<u64>, String> {
        let Some(text) = value else { return Ok(None) };
        let atomic = price::dollars_to_atomic(text, 6).map_err(|e| format!("exposure.{field}: {e}"))?;
        u64::try_from(atomic).map(Some).map_err(|_| format!("exposure.{field}: {text} is too large"))
    };
    Ok(model::ExposureSettings {
        limits: x402_store::ExposureLimits {
            per_payer: micros("max_unsettled_per_payer", &raw.max_unsettled_per_payer)?,
            per_route: micros("max_unsettled_per_route", &raw.max_unsettled_per_route)?,
            total: micros("max_unsettled_total", &raw.max_unsettled_total)?,
            losses_per_day: match micros("max_losses_per_day", &raw.max_losses_per_day)? {
                Some(0) => return Err("exposure.max_losses_per_day: a budget of $0 would refuse every payment; give an amount, or null for none".into()),
                other => other,
            },
        },
        block_failed_payers_seconds: raw.block_failed_payers_seconds,
        balance_check: raw.balance_check,
        balance_cache: Duration::from_secs(raw.balance_cache_seconds.max(1)),
        balance_timeout: Duration::from_millis(raw.balance_timeout_ms.clamp(1, 60_000)),
    })
}

/// " at line N" for the first line that defines `key:`, as a pointer for errors found
/// after parsing (the YAML library has no positions left by then).
fn locate_key(text: &str, key: &str) -> String {
    text.lines()
        .position(|line| line.trim_start().strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with(':')))
        .map(|n| format!(" (line {})", n + 1))
        .unwrap_or_default()
}

/// A small valid config for unit tests: one priced route (`weather`, $0.001) and a free one.
#[cfg(test)]
pub(crate) const TEST_YAML: &str = r#"
networks:
  base-sepolia:
    rpc_url: http://127.0.0.1:8545
payments:
  pay_to: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
upstreams:
  sample:
    addresses: ["127.0.0.1:8080"]
routes:
  - name: weather
    methods: [GET]
    path: /weather
    upstream: sample
    price: "$0.001"
  - name: health
    path: /health
    upstream: sample
    free: true
"#;

#[cfg(test)]
mod tests;
