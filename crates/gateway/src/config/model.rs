//! The validated internal model: what the proxy serves from. Built whole from a
//! [`RawConfig`](super::raw::RawConfig) or not at all.

use super::price::{atomic_to_dollars, dollars_to_atomic, parse_atomic};
use super::raw::{self, ChargeOn, OfferScheme, RawOffer, RawRoute, SettleMode, StatusClass, UnmatchedAction, UpgradePolicy};
use crate::routing::PathPattern;
use alloy_primitives::{Address, U256};
use pingora::lb::{selection::RoundRobin, LoadBalancer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use crate::canonical::PathParams;
use crate::routing::MatchRules;
use x402::v2;
use x402_evm::calldata::MULTICALL3_ADDRESS;
use x402_evm::{ExactEvmRequirement, TokenDomain, VerifyPolicy};

#[derive(Debug)]
pub struct Config {
    pub source: PathBuf,
    pub server: ServerSettings,
    pub networks: Vec<Network>,
    pub settlement: SettlementSettings,
    pub exposure: ExposureSettings,
    pub verify_policy: VerifyPolicy,
    pub upstreams: Vec<Upstream>,
    pub routes: Vec<Route>,
    pub unmatched: Unmatched,
    pub admin: AdminSettings,
    pub requests: RequestSettings,
    pub store: StoreSettings,
}

/// Where the payment ledger lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSettings {
    Memory,
    /// Shared by every replica that names the same server and key prefix.
    Redis(x402_store::RedisSettings),
}

/// What is done to every request before it is matched and forwarded.
#[derive(Debug, Clone)]
pub struct RequestSettings {
    pub path_params: PathParams,
    /// Removed before forwarding: method-override and URL-rewrite headers, then the operator's.
    pub strip_headers: Vec<http::HeaderName>,
    /// Some route is chosen by host, so a request must name one.
    pub host_routes: bool,
}

/// Headers an upstream framework may take as the real method or URL (method-override
/// middleware, IIS, Symfony): forwarded, they would serve a resource other than the one
/// matched and priced.
pub const ALWAYS_STRIPPED_HEADERS: [&str; 5] = ["x-http-method-override", "x-http-method", "x-method-override", "x-original-url", "x-rewrite-url"];

/// Which route a request goes to, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMatch {
    /// The first route, in file order, that matches.
    Route(usize),
    /// A free route (`instead_of`) or no route matched, but this priced route's lenient
    /// form does: the request is charged as that route.
    Guarded { priced: usize, instead_of: Option<usize> },
    Unmatched,
}

impl RouteMatch {
    pub fn index(self) -> Option<usize> {
        match self {
            Self::Route(index) | Self::Guarded { priced: index, .. } => Some(index),
            Self::Unmatched => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    pub listen: Option<SocketAddr>,
    pub token_env: String,
    pub watch_config: bool,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub threads: usize,
    pub grace_period_seconds: u64,
    pub graceful_shutdown_timeout_seconds: u64,
    pub max_payment_header_bytes: usize,
    /// 0: recover signatures on the workers.
    pub verify_threads: usize,
    pub verify_queue: usize,
    pub upgrade_sock: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Asset {
    pub symbol: String,
    pub address: Address,
    pub decimals: u8,
    pub domain: TokenDomain,
}

#[derive(Debug, Clone)]
pub struct Network {
    /// The name routes use (the key under `networks:`).
    pub name: String,
    /// CAIP-2 id.
    pub id: String,
    pub chain_id: u64,
    pub rpc_urls: Vec<String>,
    pub multicall: Address,
    pub assets: BTreeMap<String, Asset>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementSettings {
    /// Environment variables holding the settlement keys: one nonce lane each.
    pub private_key_envs: Vec<String>,
    pub policy: x402_settle::BatchPolicy,
    pub drain_timeout: Duration,
    pub journal_path: PathBuf,
    pub group_commit: bool,
    pub journal_sync: x402_store::JournalSync,
    pub max_fee_per_gas_wei: Option<u128>,
    pub stall_after: Duration,
    /// Admission by settlement capacity is on.
    pub admission: bool,
    /// `settle: before` payments that may wait for the settler before 503.
    pub settle_before_queue: usize,
    /// How long a finished payment is kept past its `validBefore` (see `crate::upkeep`).
    pub journal_retention: Duration,
    /// When payment channels are claimed.
    pub claims: x402_settle::channels::ClaimPolicy,
    /// The channels' receiver authorizer key, when it is not the first settlement key.
    pub receiver_authorizer_key_env: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ExposureSettings {
    /// In micro-dollars.
    pub limits: x402_store::ExposureLimits,
    pub block_failed_payers_seconds: u64,
    pub balance_check: bool,
    pub balance_cache: Duration,
    pub balance_timeout: Duration,
}

#[derive(Clone)]
pub struct Upstream {
    pub name: String,
    pub addresses: Vec<String>,
    /// The resolved servers, picked round robin.
    pub backends: std::sync::Arc<LoadBalancer<RoundRobin>>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub tls: bool,
    pub sni: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Unmatched {
    NotFound,
    Forward { upstream: usize },
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub methods: Vec<http::Method>,
    pub host: Option<String>,
    pub path: PathPattern,
    pub rules: MatchRules,
    pub upstream: usize,
    /// `None` for a free route.
    pub pricing: Option<Pricing>,
    /// What this route offered under earlier configs, still accepted until each quote's
    /// `maxTimeoutSeconds` has run out: a client may have been quoted just before a reload.
    pub honoured: Vec<HonouredPricing>,
}

/// A route's pricing from an earlier config, accepted until `until` (unix seconds).
#[derive(Debug, Clone)]
pub struct HonouredPricing {
    pub pricing: Pricing,
    pub until: u64,
}

/// What a priced route charges, precomputed at load so a challenge is cheap and identical
/// every time (official clients deep-compare what they echo with what was offered).
#[derive(Debug, Clone)]
pub struct Pricing {
    /// The `exact` offers, in the order of `requirements`.
    pub offers: Vec<Offer>,
    pub requirements: Vec<ExactEvmRequirement>,
    /// The `batch-settlement` offers.
    pub channel_offers: Vec<ChannelOffer>,
    /// The v2 `accepts` array, serialized once.
    pub accepts_raw: Box<serde_json::value::RawValue>,
    pub description: String,
    pub mime_type: String,
    pub billable: Vec<StatusClass>,
    pub settle: SettleMode,
    pub charge_on: ChargeOn,
    pub upgrades: UpgradePolicy,
    pub max_timeout_seconds: u64,
}

/// One way to pay a route, for people and logs.
#[derive(Debug, Clone)]
pub struct Offer {
    pub network: String,
    pub network_id: String,
    pub asset: Asset,
    pub amount: U256,
    pub dollars: String,
    pub pay_to: Address,
}

/// A `batch-settlement` offer: the payer opens a channel to `pay_to` and pays each request
/// with a voucher for `offer.amount` more than the last.
#[derive(Debug, Clone)]
pub struct ChannelOffer {
    pub offer: Offer,
    /// The offer as the scheme's checks take it (domains cached).
    pub batch: x402_evm::batch_settlement::BatchOffer,
    /// Who may claim the channel's vouchers: the gateway's (first) settlement key.
    pub receiver_authorizer: Address,
    pub withdraw_delay_seconds: u64,
    /// The deposit asked for, in atomic units.
    pub min_deposit: U256,
    /// The `accepts[]` entry as offered; a client echoes it verbatim.
    pub wire: serde_json::Value,
}

/// Withdraw delays the escrow contract accepts (seconds).
pub const WITHDRAW_DELAY_RANGE: std::ops::RangeInclusive<u64> = 900..=2_592_000;
/// A day: long enough that a claim round missed for hours still lands before a payer who
/// asked to withdraw may take back what it owes.
pub const DEFAULT_WITHDRAW_DELAY_SECONDS: u64 = 86_400;
/// Default deposit: this many requests' worth, at most [`DEFAULT_MIN_DEPOSIT_CAP_DOLLARS`] (the
/// official client deposits at most 5 × its per-payment cap, $1 by default).
const DEFAULT_DEPOSIT_REQUESTS: u64 = 1_000;
const DEFAULT_MIN_DEPOSIT_CAP_DOLLARS: &str = "$5";

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("name", &self.name).field("addresses", &self.addresses).finish_non_exhaustive()
    }
}

impl Pricing {
    pub fn is_billable(&self, status: u16) -> bool {
        self.billable.iter().any(|class| class.contains(status))
    }
}

impl Route {
    /// Matches under the route's own rules; `path` is canonical.
    pub fn matches(&self, method: &http::Method, host: Option<&str>, path: &str) -> bool {
        self.matches_with(method, host, path, self.rules)
    }

    /// Matches under `rules`. A route for `GET` serves `HEAD` too, as upstreams do.
    pub fn matches_with(&self, method: &http::Method, host: Option<&str>, path: &str, rules: MatchRules) -> bool {
        let method_ok = self.methods.is_empty()
            || self.methods.contains(method)
            || (*method == http::Method::HEAD && self.methods.contains(&http::Method::GET));
        method_ok
            && self.host.as_deref().is_none_or(|want| host.is_some_and(|h| crate::routing::host_matches(want, h)))
            && self.path.matches_with(path, rules)
    }
}

impl Route {
    /// Whether `other` matches exactly the requests this route matches, taken alone: the
    /// same methods, host and path pattern. Every field [`Route::matches`] reads belongs
    /// here, so a quote honoured across a reload never reaches a path it was not given for.
    pub fn same_match(&self, other: &Route) -> bool {
        fn methods(route: &Route) -> Vec<&str> {
            let mut methods: Vec<&str> = route.methods.iter().map(http::Method::as_str).collect();
            methods.sort_unstable();
            methods.dedup();
            methods
        }
        let host = |route: &Route| route.host.as_deref().map(str::to_ascii_lowercase);
        self.path == other.path && host(self) == host(other) && methods(self) == methods(other)
    }
}

impl Config {
    /// The route a request goes to; `path` is canonical.
    pub fn match_route(&self, method: &http::Method, host: Option<&str>, path: &str) -> Option<usize> {
        self.resolve_route(method, host, path).index()
    }

    /// The first route that matches, in file order, unless that is free (or none) while a
    /// priced route's lenient form matches: then the request is charged as the priced route,
    /// so no spelling of a priced path reaches the upstream unpaid.
    pub fn resolve_route(&self, method: &http::Method, host: Option<&str>, path: &str) -> RouteMatch {
        let first = self.routes.iter().position(|route| route.matches(method, host, path));
        if let Some(index) = first.filter(|&i| self.routes[i].pricing.is_some()) {
            return RouteMatch::Route(index);
        }
        let guard = self.routes.iter().position(|route| route.pricing.is_some() && route.matches_with(method, host, path, MatchRules::LENIENT));
        match (guard, first) {
            (Some(priced), instead_of) => RouteMatch::Guarded { priced, instead_of },
            (None, Some(index)) => RouteMatch::Route(index),
            (None, None) => RouteMatch::Unmatched,
        }
    }
}

/// Resolves the `networks:` section.
pub fn build_networks(raw: &BTreeMap<String, raw::RawNetwork>) -> Result<Vec<Network>, (String, String)> {
    raw.iter().map(|(name, network)| build_network(name, network).map_err(|e| (format!("networks.{name}"), e))).collect()
}

fn build_network(name: &str, raw: &raw::RawNetwork) -> Result<Network, String> {
    let id = match (&raw.id, x402_evm::network::chain_id_for_v1_name(name)) {
        (Some(id), _) => id.clone(),
        (None, Some(chain_id)) => format!("eip155:{chain_id}"),
        (None, None) if name.starts_with("eip155:") => name.to_owned(),
        (None, None) => return Err(format!("network {name:?} is not a known name; give its CAIP-2 `id` (e.g. eip155:84532)")),
    };
    let chain_id = x402_evm::chain_id_from_caip2(&id)
        .ok_or_else(|| format!("network id {id:?} is not a CAIP-2 EVM id like \"eip155:84532\""))?;
    let mut rpc_urls = raw.rpc_urls.clone();
    rpc_urls.extend(raw.rpc_url.clone());
    if rpc_urls.is_empty() {
        return Err("needs `rpc_url` (or `rpc_urls`) for settlement".into());
    }
    for url in &rpc_urls {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("rpc url {url:?} must be http:// or https://"));
        }
    }
    let mut assets = BTreeMap::new();
    if let Some(usdc) = x402_evm::known_asset(chain_id, "USDC") {
        let domain = TokenDomain::new(usdc.eip712_name, usdc.eip712_version, chain_id, usdc.address);
        assets.insert("USDC".to_owned(), Asset { symbol: "USDC".into(), address: usdc.address, decimals: usdc.decimals, domain });
    }
    for (symbol, asset) in &raw.assets {
        let domain = TokenDomain::new(&asset.eip712.name, &asset.eip712.version, chain_id, asset.address.0);
        let symbol = symbol.to_ascii_uppercase();
        assets.insert(symbol.clone(), Asset { symbol, address: asset.address.0, decimals: asset.decimals, domain });
    }
    Ok(Network {
        name: name.to_owned(),
        id,
        chain_id,
        rpc_urls,
        multicall: raw.multicall.map_or(MULTICALL3_ADDRESS, |a| a.0),
        assets,
    })
}

/// What a route needs from the rest of the file to validate on its own.
#[derive(Debug, Clone)]
pub struct RouteContext {
    pub networks: Vec<Network>,
    pub upstream_names: Vec<String>,
    pub pay_to: Option<Address>,
    pub max_timeout_seconds: u64,
    pub settle_margin_seconds: u64,
    pub billable: Vec<StatusClass>,
    /// The first settlement key's address (the `receiverAuthorizer` of channels), or why it
    /// is unknown; needed only by `batch-settlement` offers.
    pub receiver_authorizer: Result<Address, String>,
}

impl Default for RouteContext {
    fn default() -> Self {
        Self {
            networks: Vec::new(),
            upstream_names: Vec::new(),
            pay_to: None,
            max_timeout_seconds: 0,
            settle_margin_seconds: 0,
            billable: Vec::new(),
            receiver_authorizer: Err("no settlement key is configured".into()),
        }
    }
}

/// Validates one route against the rest of the file.
pub fn build_route(index: usize, raw: &RawRoute, cx: &RouteContext) -> Result<Route, String> {
    let name = raw.name.clone().unwrap_or_else(|| format!("route-{index}"));
    let upstream = cx
        .upstream_names
        .iter()
        .position(|n| *n == raw.upstream.0)
        .ok_or_else(|| format!("unknown upstream {:?}", raw.upstream.0))?;
    let mut offers_raw: Vec<RawOffer> = raw.inline_offer().into_iter().collect();
    offers_raw.extend(raw.accepts.iter().cloned());
    let pricing = match (raw.free, offers_raw.is_empty()) {
        (true, true) => None,
        (true, false) => return Err("a route is either `free: true` or priced (price/amount/accepts), not both".into()),
        (false, true) => return Err("route has no price: set `price` (e.g. \"$0.001\"), `amount` + `asset`, `accepts`, or `free: true`".into()),
        (false, false) => Some(build_pricing(raw, &offers_raw, cx)?),
    };
    Ok(Route {
        name,
        methods: raw.methods.iter().map(|m| m.0.clone()).collect(),
        host: raw.host.clone(),
        path: raw.path.0.clone(),
        rules: match_rules(raw, pricing.is_none()),
        upstream,
        pricing,
        honoured: Vec::new(),
    })
}

/// Priced routes match leniently unless made strict; free routes match as written unless
/// loosened, as they always have (the priced guard does not depend on them).
fn match_rules(raw: &RawRoute, free: bool) -> MatchRules {
    MatchRules {
        case_sensitive: raw.case_sensitive.unwrap_or(free),
        strict_trailing_slash: raw.trailing_slash.map_or(free, |slash| slash == raw::TrailingSlash::Strict),
    }
}

fn build_pricing(raw: &RawRoute, offers_raw: &[RawOffer], cx: &RouteContext) -> Result<Pricing, String> {
    let max_timeout_seconds = raw.max_timeout_seconds.unwrap_or(cx.max_timeout_seconds);
    if max_timeout_seconds <= cx.settle_margin_seconds {
        return Err(format!(
            "max_timeout_seconds {max_timeout_seconds} must exceed payments.settle_margin_seconds {}: clients sign validBefore = now + maxTimeoutSeconds, and the settler needs the margin",
            cx.settle_margin_seconds
        ));
    }
    if raw.charge_on == ChargeOn::Forward && raw.settle == SettleMode::Before {
        return Err("`charge_on: forward` and `settle: before` together: `settle: before` already charges (on-chain) before forwarding; drop `charge_on`".into());
    }
    let mut offers = Vec::new();
    let mut channel_offers = Vec::new();
    let mut wire = Vec::new();
    for raw_offer in offers_raw {
        let offer = build_offer(raw_offer, cx)?;
        match raw_offer.scheme {
            OfferScheme::Exact => {
                wire.push(serde_json::to_value(exact_wire(&offer, max_timeout_seconds)).map_err(|e| e.to_string())?);
                offers.push(offer);
            }
            OfferScheme::BatchSettlement => {
                let channel = build_channel_offer(offer, &raw.channel, max_timeout_seconds, cx)?;
                wire.push(channel.wire.clone());
                channel_offers.push(channel);
            }
        }
    }
    if channel_offers.is_empty() && (raw.channel.withdraw_delay_seconds.is_some() || raw.channel.min_deposit.is_some()) {
        return Err("`channel` terms apply to `scheme: batch-settlement` offers, and this route has none".into());
    }
    if !channel_offers.is_empty() && (raw.settle == SettleMode::Before || raw.charge_on == ChargeOn::Forward) {
        return Err("a batch-settlement offer is charged when the upstream answers and claimed in batches later: drop `settle: before` and `charge_on: forward` from this route".into());
    }
    let requirements = offers
        .iter()
        .map(|offer| {
            Ok(ExactEvmRequirement {
                network: offer.network_id.clone(),
                v1_network: x402_evm::v1_name_for_chain(offer.asset.domain.chain_id),
                domain: offer.asset.domain.clone(),
                pay_to: offer.pay_to,
                amount: offer.amount,
                max_timeout_seconds,
                wire: serde_json::to_value(exact_wire(offer, max_timeout_seconds)).map_err(|e| e.to_string())?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Pricing {
        offers,
        requirements,
        channel_offers,
        accepts_raw: serde_json::value::to_raw_value(&wire).map_err(|e| e.to_string())?,
        description: raw.description.clone().unwrap_or_default(),
        mime_type: raw.mime_type.clone().unwrap_or_default(),
        billable: raw.billable_statuses.clone().unwrap_or_else(|| cx.billable.clone()),
        settle: raw.settle,
        charge_on: raw.charge_on,
        upgrades: raw.upgrades,
        max_timeout_seconds,
    })
}

/// An `exact` offer's `accepts[]` entry.
fn exact_wire(offer: &Offer, max_timeout_seconds: u64) -> v2::PaymentRequirements {
    v2::PaymentRequirements {
        scheme: x402::SCHEME_EXACT.into(),
        network: offer.network_id.clone(),
        amount: offer.amount.to_string(),
        asset: offer.asset.address.to_checksum(None),
        pay_to: offer.pay_to.to_checksum(None),
        max_timeout_seconds,
        extra: serde_json::Map::from_iter([
            ("name".to_owned(), serde_json::Value::from(offer.asset.domain.name.clone())),
            ("version".to_owned(), serde_json::Value::from(offer.asset.domain.version.clone())),
        ]),
    }
}

fn build_channel_offer(offer: Offer, terms: &raw::RawChannelTerms, max_timeout_seconds: u64, cx: &RouteContext) -> Result<ChannelOffer, String> {
    let receiver_authorizer = cx.receiver_authorizer.clone().map_err(|why| format!("a batch-settlement offer needs the settlement key's address as its receiverAuthorizer: {why}"))?;
    let withdraw_delay_seconds = terms.withdraw_delay_seconds.unwrap_or(DEFAULT_WITHDRAW_DELAY_SECONDS);
    if !WITHDRAW_DELAY_RANGE.contains(&withdraw_delay_seconds) {
        return Err(format!(
            "channel.withdraw_delay_seconds: {withdraw_delay_seconds} is outside what the escrow contract accepts ({} to {})",
            WITHDRAW_DELAY_RANGE.start(),
            WITHDRAW_DELAY_RANGE.end()
        ));
    }
    let min_deposit = match &terms.min_deposit {
        Some(dollars) => dollars_to_atomic(dollars, offer.asset.decimals).map_err(|e| format!("channel.min_deposit: {e}"))?,
        None => {
            let cap = dollars_to_atomic(DEFAULT_MIN_DEPOSIT_CAP_DOLLARS, offer.asset.decimals)?;
            offer.amount.saturating_mul(U256::from(DEFAULT_DEPOSIT_REQUESTS)).min(cap).max(offer.amount)
        }
    };
    if min_deposit < offer.amount {
        return Err(format!("channel.min_deposit: {} is below one request's price ({})", atomic_to_dollars(min_deposit, offer.asset.decimals), offer.dollars));
    }
    let batch = x402_evm::batch_settlement::BatchOffer {
        channel_domain: x402_evm::batch_settlement::ChannelDomain::new(offer.asset.domain.chain_id),
        token: offer.asset.domain.clone(),
        pay_to: offer.pay_to,
        receiver_authorizer,
        withdraw_delay: withdraw_delay_seconds,
        price: u128::try_from(offer.amount).map_err(|_| "the price does not fit 128 bits".to_owned())?,
        enforced_min_deposit: None,
    };
    let min_deposit_atomic = u128::try_from(min_deposit).map_err(|_| "channel.min_deposit does not fit 128 bits".to_owned())?;
    let wire = x402_evm::batch_settlement::response::payment_requirements(&batch, max_timeout_seconds, min_deposit_atomic);
    Ok(ChannelOffer {
        offer,
        batch,
        receiver_authorizer,
        withdraw_delay_seconds,
        min_deposit,
        wire: serde_json::to_value(wire).map_err(|e| e.to_string())?,
    })
}

fn build_offer(raw: &RawOffer, cx: &RouteContext) -> Result<Offer, String> {
    let network = match &raw.network {
        Some(name) => cx.networks.iter().find(|n| n.name == name.0).ok_or_else(|| format!("unknown network {:?}", name.0))?,
        None => match cx.networks.as_slice() {
            [only] => only,
            [] => return Err("a priced route needs a network: add one under `networks:`".into()),
            _ => return Err("several networks are configured: say which one with `network`".into()),
        },
    };
    let symbol = raw.asset.clone().unwrap_or_else(|| "USDC".into()).to_ascii_uppercase();
    let asset = network.assets.get(&symbol).cloned().ok_or_else(|| {
        let known: Vec<&str> = network.assets.keys().map(String::as_str).collect();
        format!("network {:?} has no asset {symbol:?} (known: {}); declare it under networks.{}.assets", network.name, known.join(", "), network.name)
    })?;
    let amount = match (&raw.price, &raw.amount) {
        (Some(price), None) => dollars_to_atomic(price, asset.decimals)?,
        (None, Some(amount)) => parse_atomic(amount)?,
        (Some(_), Some(_)) => return Err("give either `price` (dollars) or `amount` (atomic units), not both".into()),
        (None, None) => return Err("an offer needs `price` (e.g. \"$0.001\") or `amount` (atomic units)".into()),
    };
    let pay_to = raw.pay_to.map(|a| a.0).or(cx.pay_to).ok_or("no `pay_to`: set it on the route or as payments.pay_to")?;
    Ok(Offer {
        network: network.name.clone(),
        network_id: network.id.clone(),
        dollars: atomic_to_dollars(amount, asset.decimals),
        asset,
        amount,
        pay_to,
    })
}

pub fn build_upstream(name: &str, raw: &raw::RawUpstream) -> Result<Upstream, String> {
    if raw.addresses.is_empty() {
        return Err("needs at least one address (host:port)".into());
    }
    for address in &raw.addresses {
        let port_ok = address.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(format!("address {address:?} must be host:port"));
        }
    }
    let backends = LoadBalancer::try_from_iter(raw.addresses.iter().map(String::as_str))
        .map_err(|e| format!("cannot resolve {:?}: {e}", raw.addresses))?;
    Ok(Upstream {
        name: name.to_owned(),
        addresses: raw.addresses.clone(),
        backends: std::sync::Arc::new(backends),
        connect_timeout: Duration::from_millis(raw.connect_timeout_ms),
        read_timeout: Duration::from_millis(raw.read_timeout_ms),
        tls: raw.tls,
        sni: raw.sni.clone(),
    })
}

pub fn build_requests(raw: &raw::RawRequests, routes: &[Route]) -> Result<RequestSettings, String> {
    let mut strip_headers: Vec<http::HeaderName> = ALWAYS_STRIPPED_HEADERS.iter().map(|name| http::HeaderName::from_static(name)).collect();
    for name in &raw.strip_headers {
        let header = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("requests.strip_headers: {name:?} is not a header name"))?;
        if !strip_headers.contains(&header) {
            strip_headers.push(header);
        }
    }
    Ok(RequestSettings {
        path_params: match raw.path_params {
            raw::RawPathParams::Refuse => PathParams::Refuse,
            raw::RawPathParams::Strip => PathParams::Strip,
        },
        strip_headers,
        host_routes: routes.iter().any(|route| route.host.is_some()),
    })
}

pub fn build_unmatched(raw: &raw::RawUnmatched, upstream_names: &[String]) -> Result<Unmatched, String> {
    match (raw.action, &raw.upstream) {
        (UnmatchedAction::NotFound, None) => Ok(Unmatched::NotFound),
        (UnmatchedAction::NotFound, Some(_)) => Err("`upstream` only goes with `action: forward`".into()),
        (UnmatchedAction::Forward, None) => Err("`action: forward` needs an `upstream`".into()),
        (UnmatchedAction::Forward, Some(upstream)) => upstream_names
            .iter()
            .position(|n| *n == upstream.0)
            .map(|upstream| Unmatched::Forward { upstream })
            .ok_or_else(|| format!("unknown upstream {:?}", upstream.0)),
    }
}
