//! The file schema: serde structs that mirror `gateway.yaml`.
//!
//! Values are checked while they are read (addresses, prices, path patterns, names of
//! upstreams and networks), so the YAML library can point at the line and column of the
//! offending field. What a route needs from elsewhere in the file (upstream names,
//! networks, payment defaults) comes from a first, lenient pass over the same text
//! ([`Prelude`]) through [`with_context`].

use crate::routing::PathPattern;
use alloy_primitives::Address;
use serde::{de, Deserialize, Deserializer};
use std::cell::RefCell;
use super::model::{build_route, Route, RouteContext};
use std::collections::BTreeMap;
use std::path::PathBuf;

thread_local! {
    /// The rest of the file, as far as a route needs it, plus the index of the next route.
    static CONTEXT: RefCell<Option<(RouteContext, usize)>> = const { RefCell::new(None) };
}

/// Runs `f` (a deserialization of the whole file) with `context` visible to the reference
/// and route types below, so their errors carry the YAML location.
pub fn with_context<T>(context: RouteContext, f: impl FnOnce() -> T) -> T {
    CONTEXT.with(|cell| *cell.borrow_mut() = Some((context, 0)));
    let result = f();
    CONTEXT.with(|cell| *cell.borrow_mut() = None);
    result
}

fn check_defined(kind: &str, name: &str, known: impl Fn(&RouteContext) -> Vec<String>) -> Result<(), String> {
    CONTEXT.with(|cell| match cell.borrow().as_ref() {
        Some((cx, _)) if !known(cx).iter().any(|k| k == name) => {
            Err(format!("unknown {kind} {name:?} (defined: {})", known(cx).join(", ")))
        }
        _ => Ok(()),
    })
}

/// A route, validated against the rest of the file while it is read.
#[derive(Debug)]
pub struct CheckedRoute(pub Route);

impl<'de> Deserialize<'de> for CheckedRoute {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(CheckedRouteVisitor)
    }
}

struct CheckedRouteVisitor;

impl<'de> de::Visitor<'de> for CheckedRouteVisitor {
    type Value = CheckedRoute;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a route mapping")
    }

    // Validating here, while the route's mapping is still open, lets the YAML library
    // report the route's own path and line rather than those of the list.
    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<CheckedRoute, A::Error> {
        let raw = RawRoute::deserialize(de::value::MapAccessDeserializer::new(map))?;
        CONTEXT.with(|cell| {
            let mut slot = cell.borrow_mut();
            let Some((cx, index)) = slot.as_mut() else {
                return Err(de::Error::custom("routes are read without their context"));
            };
            *index += 1;
            build_route(*index - 1, &raw, cx).map(CheckedRoute).map_err(de::Error::custom)
        })
    }
}

/// First pass: the sections routes depend on, ignoring everything else.
#[derive(Debug, Default, Deserialize)]
pub struct Prelude {
    #[serde(default)]
    pub upstreams: BTreeMap<String, de::IgnoredAny>,
    #[serde(default)]
    pub networks: BTreeMap<String, RawNetwork>,
    #[serde(default)]
    pub payments: RawPayments,
    #[serde(default)]
    pub settlement: PreludeSettlement,
}

/// The settlement keys' variables, read early: a channel offer names the first key's address.
#[derive(Debug, Default, Deserialize)]
pub struct PreludeSettlement {
    pub private_key_env: Option<String>,
    #[serde(default)]
    pub private_key_envs: Vec<String>,
    #[serde(default)]
    pub channels: PreludeChannels,
}

/// The channels' receiver authorizer key, read early: channel offers name its address.
#[derive(Debug, Default, Deserialize)]
pub struct PreludeChannels {
    pub receiver_authorizer_key_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub networks: BTreeMap<String, RawNetwork>,
    #[serde(default)]
    pub settlement: RawSettlement,
    #[serde(default)]
    pub payments: RawPayments,
    #[serde(default)]
    pub exposure: RawExposure,
    pub upstreams: BTreeMap<String, RawUpstream>,
    pub routes: Vec<CheckedRoute>,
    #[serde(default)]
    pub unmatched: RawUnmatched,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub requests: RawRequests,
    #[serde(default)]
    pub store: RawStore,
}

/// Where replay reservations, exposure, payer blocks and the loss budget live.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    pub kind: StoreKind,
    /// `redis://[user:password@]host:port[/db]`, `rediss://…` (TLS), or the Sentinels watching
    /// the primary: `redis+sentinel://[user:password@]host:port[,host:port…]/service[/db]`.
    pub url: Option<String>,
    /// The environment variable holding the URL instead (when it carries a password).
    pub url_env: Option<String>,
    /// Every key of this gateway fleet starts with it, in braces: the keys' hash tag, so that
    /// they share one Redis Cluster slot and one Lua script may touch them all.
    pub key_prefix: String,
    /// A store call slower than this refuses the payment with 503.
    pub timeout_ms: u64,
    /// Where the other replicas reach this one's public listener (`http://host:port`): a
    /// receipt look-up for a payment this replica took is forwarded there from any replica.
    pub advertise_url: Option<String>,
    /// The environment variable holding `advertise_url` instead (one config for every replica).
    pub advertise_url_env: Option<String>,
    /// Store replicas that must confirm each payment's reservation (Redis `WAIT`, within
    /// half of `timeout_ms`) before it is accepted; 0 (the default) waits for none.
    pub wait_for_replicas: u32,
}

impl Default for RawStore {
    fn default() -> Self {
        Self { kind: StoreKind::Memory, url: None, url_env: None, key_prefix: "x402-gateway".into(), timeout_ms: 50, advertise_url: None, advertise_url_env: None, wait_for_replicas: 0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In this process: one gateway.
    Memory,
    /// Shared by every replica.
    Redis,
}

/// How request targets and headers are made safe before matching and forwarding.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRequests {
    /// `refuse` (default) answers 400 to a path with `;` parameters; `strip` drops them
    /// from every segment before matching and forwarding.
    pub path_params: RawPathParams,
    /// Headers removed before forwarding, on top of the method-override and URL-rewrite
    /// headers that are always removed.
    pub strip_headers: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawPathParams {
    #[default]
    Refuse,
    Strip,
}

/// The admin listener: health, readiness, metrics, reload, state. Not for the public.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// `null` turns the admin listener off.
    pub listen: Option<std::net::SocketAddr>,
    /// The environment variable holding the bearer token; without it only `/health` and
    /// `/ready` answer.
    pub token_env: String,
    /// Watch the config file and reload when it changes (SIGHUP and `POST /reload` always work).
    pub watch_config: bool,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9402))),
            token_env: "X402_ADMIN_TOKEN".into(),
            watch_config: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: std::net::SocketAddr,
    pub threads: Option<usize>,
    /// Once the listener closes, how long requests in flight get to finish, at most; no
    /// payment is charged after it.
    pub grace_period_seconds: u64,
    /// After the grace period, how long requests already being charged get to finish.
    pub graceful_shutdown_timeout_seconds: u64,
    pub max_payment_header_bytes: usize,
    /// Threads that recover payment signatures off the workers; 0 recovers on the workers.
    pub verify_threads: Option<usize>,
    /// Payments that may wait for a verifier thread before one is answered 503.
    pub verify_queue: usize,
    /// Where a new process takes over the listening sockets during a graceful upgrade;
    /// relative to the config file's folder.
    pub upgrade_sock: PathBuf,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 8402)),
            threads: None,
            grace_period_seconds: 5,
            graceful_shutdown_timeout_seconds: 5,
            max_payment_header_bytes: x402::MAX_PAYMENT_HEADER_BYTES,
            verify_threads: None,
            verify_queue: 256,
            upgrade_sock: PathBuf::from("x402-gateway.upgrade.sock"),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    /// CAIP-2 id; may be left out when the key is a known name (`base`, `base-sepolia`)
    /// or itself a CAIP-2 id.
    pub id: Option<String>,
    /// JSON-RPC endpoints, tried in order.
    #[serde(default)]
    pub rpc_urls: Vec<String>,
    pub rpc_url: Option<String>,
    pub multicall: Option<EvmAddress>,
    #[serde(default)]
    pub assets: BTreeMap<String, RawAsset>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAsset {
    pub address: EvmAddress,
    pub decimals: u8,
    pub eip712: RawEip712,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEip712 {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSettlement {
    /// Name of the environment variable that holds the settlement key (0x-hex).
    pub private_key_env: String,
    /// Several settlement keys (names of environment variables), one nonce lane each:
    /// instead of `private_key_env`, for chains whose per-account throughput is the limit.
    pub private_key_envs: Vec<String>,
    /// Most payments per transaction; absent: as many as `max_gas_per_transaction` holds.
    pub max_batch: Option<usize>,
    /// Settlement transactions pending at once per key.
    pub max_transactions_in_flight: usize,
    /// Blocks a settlement transaction may wait before it is replaced with higher fees.
    pub bump_after_blocks: u64,
    pub max_wait_ms: u64,
    pub receipt_timeout_seconds: u64,
    pub drain_timeout_seconds: u64,
    /// The durable journal (SQLite); a relative path is taken from the config file's folder.
    pub journal_path: PathBuf,
    /// Share one fsync among concurrent journal writes.
    pub group_commit: bool,
    /// `full`: fsync per commit; `normal`: no fsync per commit (survives a crash of the
    /// gateway, not of the machine).
    pub journal_sync: RawJournalSync,
    /// Highest `maxFeePerGas` the settler pays, in gwei; above it settlement waits.
    pub max_fee_per_gas_gwei: Option<u64>,
    /// Most gas per settlement transaction (the chain's cap or lower); bigger batches split.
    pub max_gas_per_transaction: u64,
    /// How long an RPC outage, or a payment waiting beyond its batch window, is tolerated
    /// before priced routes stop taking payments (503 `settlement_stalled`).
    pub stall_after_seconds: u64,
    /// Refuse priced requests (503 `settlement_backlog`) while the backlog could not be
    /// settled before a new payment's `validBefore` at the measured settlement rate.
    pub admission: bool,
    /// `settle: before` payments that may wait for the settler; beyond it they get 503.
    pub settle_before_queue: usize,
    /// Days a settled or failed payment is kept after its `validBefore` before it is pruned
    /// from the journal; fractions allowed.
    pub journal_retention_days: f64,
    /// When payment channels (`batch-settlement`) are claimed.
    pub channels: RawClaims,
}

/// When payment channels are claimed and read again.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawClaims {
    /// Unclaimed voucher value waits at most this long before it is claimed on-chain.
    pub claim_interval_seconds: u64,
    /// Channels holding unclaimed value have their escrow state read this often: a payer's
    /// request to withdraw is seen within it, and its channel claimed at once.
    pub refresh_interval_seconds: u64,
    /// Channels claimed per transaction.
    pub max_claims_per_transaction: usize,
    /// The environment variable holding the channels' receiver authorizer key, when it is not
    /// the (first) settlement key: claims are then signed with it (`claimWithSignature`) and
    /// sent by a settlement key, so the authorizer needs no gas and no nonce of its own.
    pub receiver_authorizer_key_env: Option<String>,
}

impl Default for RawClaims {
    fn default() -> Self {
        Self { claim_interval_seconds: 60, refresh_interval_seconds: 30, max_claims_per_transaction: 100, receiver_authorizer_key_env: None }
    }
}

impl Default for RawSettlement {
    fn default() -> Self {
        Self {
            private_key_env: "X402_SETTLEMENT_KEY".into(),
            private_key_envs: Vec::new(),
            max_batch: None,
            max_transactions_in_flight: 16,
            bump_after_blocks: 3,
            max_wait_ms: 2000,
            receipt_timeout_seconds: 30,
            drain_timeout_seconds: 30,
            journal_path: PathBuf::from("x402-journal.db"),
            group_commit: true,
            journal_sync: RawJournalSync::Full,
            max_fee_per_gas_gwei: None,
            max_gas_per_transaction: 16_000_000,
            stall_after_seconds: 30,
            admission: true,
            settle_before_queue: 64,
            journal_retention_days: 30.0,
            channels: RawClaims::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawJournalSync {
    Full,
    Normal,
}

/// Limits on unsettled value, as dollar strings (`"$5"`); `null` turns a limit off.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawExposure {
    pub max_unsettled_per_payer: Option<String>,
    pub max_unsettled_per_route: Option<String>,
    pub max_unsettled_total: Option<String>,
    /// How long a payer whose settlement failed by its own doing is refused.
    pub block_failed_payers_seconds: u64,
    /// Served-but-unpaid value (failed or expired settlements) accepted per day before every
    /// priced route refuses new payments; the budget drains at this rate.
    pub max_losses_per_day: Option<String>,
    /// Refuse a payment the payer's token balance, minus what it owes, cannot cover.
    pub balance_check: bool,
    /// How long a balance read is used.
    pub balance_cache_seconds: u64,
    /// How long a payment waits for its payer's first balance read before a 503.
    pub balance_timeout_ms: u64,
}

impl Default for RawExposure {
    fn default() -> Self {
        Self {
            max_unsettled_per_payer: Some("$1".into()),
            max_unsettled_per_route: None,
            max_unsettled_total: Some("$1000".into()),
            block_failed_payers_seconds: 3600,
            max_losses_per_day: Some("$10".into()),
            balance_check: true,
            balance_cache_seconds: 10,
            balance_timeout_ms: 1000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPayments {
    pub pay_to: Option<EvmAddress>,
    pub max_timeout_seconds: u64,
    pub settle_margin_seconds: u64,
    pub clock_skew_seconds: u64,
    pub billable_statuses: Vec<StatusClass>,
}

impl Default for RawPayments {
    fn default() -> Self {
        Self {
            pay_to: None,
            max_timeout_seconds: 300,
            settle_margin_seconds: 30,
            clock_skew_seconds: 60,
            billable_statuses: vec![StatusClass::Class(2), StatusClass::Class(3)],
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// `host:port` of each server; requests go round robin.
    pub addresses: Vec<String>,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_read_timeout_ms")]
    pub read_timeout_ms: u64,
    #[serde(default)]
    pub tls: bool,
    /// TLS server name; defaults to the host part of the address.
    pub sni: Option<String>,
}

fn default_connect_timeout_ms() -> u64 {
    2000
}

fn default_read_timeout_ms() -> u64 {
    30_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<String>,
    #[serde(default)]
    pub methods: Vec<HttpMethod>,
    pub host: Option<String>,
    pub path: Pattern,
    /// Letters in the path must match exactly (default: false for a priced route, true
    /// for a free one, which matches as written).
    pub case_sensitive: Option<bool>,
    /// `optional`: `/a/` is `/a`; `strict`: it is not (default: optional for a priced
    /// route, strict for a free one).
    pub trailing_slash: Option<TrailingSlash>,
    pub upstream: UpstreamRef,
    #[serde(default)]
    pub free: bool,
    /// One way to pay, in short: `price` (dollars) or `amount` (atomic units), on
    /// `network`/`asset`, to `pay_to`.
    pub price: Option<String>,
    pub amount: Option<String>,
    pub network: Option<NetworkRef>,
    pub asset: Option<String>,
    pub pay_to: Option<EvmAddress>,
    /// Several ways to pay.
    #[serde(default)]
    pub accepts: Vec<RawOffer>,
    pub description: Option<String>,
    pub mime_type: Option<String>,
    pub max_timeout_seconds: Option<u64>,
    pub billable_statuses: Option<Vec<StatusClass>>,
    /// `batched` (default): serve now, settle later in a batch. `before`: settle on-chain
    /// first, and call the upstream only once the payment landed.
    #[serde(default)]
    pub settle: SettleMode,
    /// `response` (default): charged once the upstream answers with a billable status.
    /// `forward`: charged before the request is forwarded, whatever the upstream answers.
    #[serde(default)]
    pub charge_on: ChargeOn,
    /// `refuse` (default): a protocol upgrade (WebSocket) is refused before any payment is
    /// looked at. `charge`: the payment is charged when the upstream switches protocols.
    #[serde(default)]
    pub upgrades: UpgradePolicy,
    /// The inline offer's scheme: `exact` (default) or `batch-settlement`.
    #[serde(default)]
    pub scheme: OfferScheme,
    /// Terms of this route's `batch-settlement` offers.
    #[serde(default)]
    pub channel: RawChannelTerms,
}

/// How an offer is paid.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum OfferScheme {
    /// One EIP-3009 authorization per request, settled in batches.
    #[default]
    #[serde(rename = "exact")]
    Exact,
    /// A payment channel per payer: one deposit, then a voucher per request, claimed in batches.
    #[serde(rename = "batch-settlement")]
    BatchSettlement,
}

/// The terms a route's `batch-settlement` offers announce.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChannelTerms {
    /// How long a payer's withdrawal waits (900 to 2,592,000 s): the time the gateway has to
    /// claim what the payer owes once it asks to withdraw.
    pub withdraw_delay_seconds: Option<u64>,
    /// The deposit the payer is asked for (dollars), a hint the official client follows up to
    /// its own cap.
    pub min_deposit: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChargeOn {
    #[default]
    Response,
    Forward,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpgradePolicy {
    #[default]
    Refuse,
    Charge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrailingSlash {
    Optional,
    Strict,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SettleMode {
    #[default]
    Batched,
    Before,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOffer {
    #[serde(default)]
    pub scheme: OfferScheme,
    pub price: Option<String>,
    pub amount: Option<String>,
    pub network: Option<NetworkRef>,
    pub asset: Option<String>,
    pub pay_to: Option<EvmAddress>,
}

impl RawRoute {
    /// The inline offer (`price`/`amount`/`network`/`asset`/`pay_to` on the route itself),
    /// if any of its fields is set.
    pub fn inline_offer(&self) -> Option<RawOffer> {
        let offer = RawOffer {
            scheme: self.scheme,
            price: self.price.clone(),
            amount: self.amount.clone(),
            network: self.network.clone(),
            asset: self.asset.clone(),
            pay_to: self.pay_to,
        };
        let any = offer.price.is_some() || offer.amount.is_some() || offer.network.is_some() || offer.asset.is_some();
        any.then_some(offer)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUnmatched {
    /// `not_found` (default) or `forward`.
    #[serde(default)]
    pub action: UnmatchedAction,
    pub upstream: Option<UpstreamRef>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnmatchedAction {
    #[default]
    NotFound,
    Forward,
}

/// A 0x address, checked when read.
#[derive(Debug, Clone, Copy)]
pub struct EvmAddress(pub Address);

impl<'de> Deserialize<'de> for EvmAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let hex = s.strip_prefix("0x").filter(|h| h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        match hex.and_then(|_| s.parse().ok()) {
            Some(address) => Ok(Self(address)),
            None => Err(de::Error::custom(format!("{s:?} is not a 0x-prefixed 20-byte address"))),
        }
    }
}

/// A path pattern, checked when read.
#[derive(Debug, Clone)]
pub struct Pattern(pub PathPattern);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PathPattern::parse(&s).map(Self).map_err(de::Error::custom)
    }
}

/// An HTTP method name, upper case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpMethod(pub http::Method);

impl<'de> Deserialize<'de> for HttpMethod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        const KNOWN: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"];
        if !KNOWN.contains(&s.as_str()) {
            return Err(de::Error::custom(format!("{s:?} is not an HTTP method (expected one of {})", KNOWN.join(", "))));
        }
        http::Method::from_bytes(s.as_bytes()).map(Self).map_err(de::Error::custom)
    }
}

/// The name of an upstream defined under `upstreams:`.
#[derive(Debug, Clone)]
pub struct UpstreamRef(pub String);

impl<'de> Deserialize<'de> for UpstreamRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        check_defined("upstream", &s, |cx| cx.upstream_names.clone()).map_err(de::Error::custom)?;
        Ok(Self(s))
    }
}

/// The name of a network defined under `networks:`.
#[derive(Debug, Clone)]
pub struct NetworkRef(pub String);

impl<'de> Deserialize<'de> for NetworkRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        check_defined("network", &s, |cx| cx.networks.iter().map(|n| n.name.clone()).collect()).map_err(de::Error::custom)?;
        Ok(Self(s))
    }
}

/// A status code (`404`) or a class (`"2xx"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    Class(u16),
    Code(u16),
}

impl std::fmt::Display for StatusClass {
    /// As the config file writes it: `2xx` or `404`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Class(class) => write!(f, "{class}xx"),
            Self::Code(code) => write!(f, "{code}"),
        }
    }
}

impl StatusClass {
    pub fn contains(self, status: u16) -> bool {
        match self {
            Self::Class(class) => status / 100 == class,
            Self::Code(code) => status == code,
        }
    }
}

impl<'de> Deserialize<'de> for StatusClass {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Code(u16),
            Text(String),
        }
        // A 1xx is never a response to charge for: informational answers precede the real one,
        // and a protocol switch is charged through a route's `upgrades: charge`.
        let bad = |what: &str| de::Error::custom(format!("{what:?} is not a final status code (200-599) or class (\"2xx\" to \"5xx\")"));
        match Either::deserialize(d)? {
            Either::Code(code) if (200..600).contains(&code) => Ok(Self::Code(code)),
            Either::Code(code) => Err(bad(&code.to_string())),
            Either::Text(text) => match text.as_bytes() {
                [c @ b'2'..=b'5', b'x' | b'X', b'x' | b'X'] => Ok(Self::Class(u16::from(c - b'0'))),
                _ => text.parse::<u16>().ok().filter(|c| (200..600).contains(c)).map(Self::Code).ok_or_else(|| bad(&text)),
            },
        }
    }
}
