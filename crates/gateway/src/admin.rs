//! The admin API, on its own listener (loopback by default), for operators and probes.
//!
//! | request | answer |
//! |---|---|
//! | `GET /health` | 200 while the process serves (liveness); no token |
//! | `GET /ready` | 200 when it should get traffic, 503 while draining, while settlement is stalled, or if the journal is unreadable; no token. While the shared store is unreachable it stays 200 and says `degraded: store_unavailable` (free routes still answer) |
//! | `GET /metrics` | Prometheus text exposition |
//! | `GET /config` | the serving config's hash, when it was loaded, the last reload attempt, fields waiting for a restart |
//! | `POST /reload` | reload `gateway.yaml` now: 200 with the outcome, 422 with the error (the old config keeps serving) |
//! | `GET /routes` | the route table, with current prices and quotes still honoured |
//! | `GET /routes?explain=URL&method=GET` | one request's canonical target, the route it matches and why |
//! | `GET /settlement` | payments per state, queue depth, age of the oldest unsettled payment, a stall and its cause |
//! | `GET /exposure` | unsettled value per route and in total, the largest debtors, blocked payers, the loss budget |
//! | `DELETE /exposure/blocks/{payer}` | let a blocked payer pay again |
//! | `POST /exposure/losses/reset` | empty the loss budget, so priced routes take payments again |
//! | `GET /channels` | batch-settlement channels, most unclaimed value first: payer, deposit, charged, claimed, unclaimed, withdraw deadline |
//! | `POST /channels/claim` | claim every channel holding unclaimed value in the next claim round (within a second) |
//! | `POST /drain` | stop being ready, settle everything queued and claim every channel now, before a shutdown |
//!
//! Everything but `/health` and `/ready` needs `Authorization: Bearer <token>`, the token
//! being the value of the environment variable `admin.token_env` names. Without that
//! variable those endpoints answer 403: the admin API fails closed. A token shorter than
//! [`MIN_TOKEN_BYTES`] or one of the placeholders this project ships refuses to start.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::reload::{ReloadError, Reloader};
use alloy_primitives::keccak256;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use x402_store::{unix_now, unix_now_ms, Journal, PaymentLedger, StoreUnavailable};

pub struct AdminApi {
    pub token: Option<AdminToken>,
    pub token_env: String,
    pub config: Arc<ArcSwap<Config>>,
    pub reloader: Arc<Reloader>,
    pub journal: Arc<Journal>,
    /// Replay reservations and exposure, in this process or shared in Redis.
    pub ledger: Arc<dyn PaymentLedger>,
    pub health: Arc<x402_settle::stall::SettlementHealth>,
    pub admission: Arc<x402_settle::admission::SettlementAdmission>,
    pub metrics: Arc<Metrics>,
    pub channels: Arc<dyn x402_store::ChannelStore>,
    /// `None` when no settler runs (nothing priced).
    pub channel_claims: Option<Arc<x402_settle::channels::ChannelSettlement>>,
    /// Set by `POST /drain`: readiness fails so load balancers move traffic away.
    pub draining: Arc<AtomicBool>,
    /// Shared with the settler: send queued payments without waiting for batches to fill.
    pub settle_flush: Arc<AtomicBool>,
}

type Answer = (StatusCode, serde_json::Value);

#[async_trait]
impl ServeHttp for AdminApi {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let (method, path) = (req.method.clone(), req.uri.path().to_owned());
        let query = req.uri.query().unwrap_or_default().to_owned();
        let authorization = req.headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
        if method == Method::GET && path == "/metrics" {
            if let Err(denied) = self.authorize(authorization.as_deref()) {
                return json(denied);
            }
            return self.metrics_text().await;
        }
        let answer = match (&method, path.as_str()) {
            (&Method::GET, "/health") => (StatusCode::OK, serde_json::json!({"status": "ok"})),
            (&Method::GET, "/ready") => self.readiness(),
            _ => match self.authorize(authorization.as_deref()) {
                // Reading, parsing and resolving the file blocks: not on this event loop.
                Ok(()) if method == Method::POST && path == "/reload" => self.reload().await,
                Ok(()) => self.protected(&method, &path, &query).await,
                Err(denied) => denied,
            },
        };
        json(answer)
    }
}

impl AdminApi {
    fn authorize(&self, authorization: Option<&str>) -> Result<(), Answer> {
        let Some(token) = &self.token else {
            let message = format!("the admin API is locked: set the environment variable {} to a bearer token", self.token_env);
            return Err((StatusCode::FORBIDDEN, serde_json::json!({"error": "admin_token_unset", "message": message})));
        };
        let given = authorization.and_then(|v| v.strip_prefix("Bearer ")).unwrap_or_default();
        if token.admits(given) {
            Ok(())
        } else {
            Err((StatusCode::UNAUTHORIZED, serde_json::json!({"error": "unauthorized", "message": "send Authorization: Bearer <admin token>"})))
        }
    }

    async fn protected(&self, method: &Method, path: &str, query: &str) -> Answer {
        match (method, path) {
            (&Method::GET, "/routes") if !query.is_empty() => self.explain(query),
            (&Method::GET, "/config") => (StatusCode::OK, serde_json::to_value(self.reloader.status()).unwrap_or_default()),
            (&Method::GET, "/routes") => (StatusCode::OK, crate::inspect::routes_json(&self.config.load())),
            (&Method::GET, "/settlement") => self.settlement(),
            (&Method::GET, "/exposure") => self.exposure().await,
            (&Method::GET, "/channels") => self.channels().await,
            (&Method::POST, "/channels/claim") => self.claim_channels().await,
            (&Method::POST, "/drain") => self.drain(),
            (&Method::POST, "/exposure/losses/reset") => self.reset_losses().await,
            (&Method::DELETE, _) if path.starts_with("/exposure/blocks/") => self.unblock(&path["/exposure/blocks/".len()..]).await,
            _ => (StatusCode::NOT_FOUND, serde_json::json!({"error": "not_found", "message": format!("no admin endpoint {method} {path}")})),
        }
    }

    /// `GET /routes?explain=URL&method=GET`: the URL is a path or absolute URL, query-encoded.
    fn explain(&self, query: &str) -> Answer {
        let mut target = None;
        let mut method = Method::GET;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "explain" => target = Some(value.into_owned()),
                "method" => match value.to_ascii_uppercase().parse() {
                    Ok(parsed) => method = parsed,
                    Err(_) => return bad_request(format!("{value:?} is not an HTTP method")),
                },
                _ => {}
            }
        }
        let Some(target) = target else { return bad_request("give the request to explain as ?explain=URL (and &method=)".into()) };
        match target.parse::<http::Uri>() {
            Ok(url) => (StatusCode::OK, crate::inspect::explain(&self.config.load(), &method, &url)),
            Err(_) => bad_request(format!("{target:?} is not a path or URL")),
        }
    }

    fn readiness(&self) -> Answer {
        if self.draining.load(Ordering::Relaxed) {
            return (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"ready": false, "reason": "draining"}));
        }
        // A stalled replica should lose traffic to one that settles; free routes still answer.
        if let Some(stall) = self.health.stall() {
            let reason = format!("settlement_stalled: {}", stall.message);
            return (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"ready": false, "reason": reason, "cause": stall.cause}));
        }
        match self.journal.unsettled_count() {
            // Without its shared store no replica takes payments, but free routes still answer:
            // readiness says so and stays 200, since an outage of the one store every replica
            // shares would otherwise take the whole fleet out of service.
            Ok(_) => match self.ledger.unavailable() {
                Some(error) => (StatusCode::OK, serde_json::json!({"ready": true, "degraded": "store_unavailable", "reason": format!("store_unavailable: {error}")})),
                None => (StatusCode::OK, serde_json::json!({"ready": true})),
            },
            Err(error) => (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"ready": false, "reason": format!("journal: {error}")})),
        }
    }

    async fn reload(&self) -> Answer {
        let reloader = self.reloader.clone();
        let outcome = match tokio::task::spawn_blocking(move || reloader.reload("admin")).await {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::error!(%error, "the admin reload task failed");
                let message = format!("the reload did not complete ({error}); the previous config keeps serving");
                return (StatusCode::INTERNAL_SERVER_ERROR, serde_json::json!({"error": "reload_failed", "message": message}));
            }
        };
        match outcome {
            Ok(outcome) => (StatusCode::OK, serde_json::to_value(outcome).unwrap_or_default()),
            Err(error) => {
                let code = match error {
                    ReloadError::Invalid(_) => "config_invalid",
                    ReloadError::NeedsRestart { .. } => "config_needs_restart",
                };
                let message = format!("{error}; the previous config keeps serving");
                (StatusCode::UNPROCESSABLE_ENTITY, serde_json::json!({"error": code, "message": message}))
            }
        }
    }

    async fn channels(&self) -> Answer {
        let records = match self.channels.list().await {
            Ok(records) => crate::channel_payment::channels_by_unclaimed(records),
            Err(error) => return store_unavailable(&error),
        };
        let channels: Vec<serde_json::Value> = records.iter().map(crate::channel_payment::channel_json).collect();
        (StatusCode::OK, serde_json::json!({"count": channels.len(), "channels": channels}))
    }

    async fn claim_channels(&self) -> Answer {
        let Some(claims) = &self.channel_claims else {
            return (StatusCode::CONFLICT, serde_json::json!({"error": "no_settler", "message": "no settler runs, so nothing can be claimed"}));
        };
        claims.claim_all_now();
        let unclaimed = match self.channels.list().await {
            Ok(records) => records.iter().filter(|record| record.unclaimed() > 0).count(),
            Err(error) => return store_unavailable(&error),
        };
        (StatusCode::ACCEPTED, serde_json::json!({"claiming": unclaimed, "message": "every channel holding unclaimed value is claimed in the next round"}))
    }

    fn settlement(&self) -> Answer {
        let read = || -> Result<serde_json::Value, x402_store::JournalError> {
            let oldest = self.journal.oldest_unsettled_ms()?;
            Ok(serde_json::json!({
                "states": self.journal.counts()?,
                "unsettled": self.journal.unsettled_count()?,
                "oldestUnsettledAgeSeconds": oldest.map(|ms| unix_now_ms().saturating_sub(ms) / 1000),
                "flushing": self.settle_flush.load(Ordering::Relaxed),
                "stalled": self.health.stall().map(|stall| serde_json::json!({"cause": stall.cause, "message": stall.message})),
                "admission": self.admission_json(),
            }))
        };
        match read() {
            Ok(body) => (StatusCode::OK, body),
            Err(error) => journal_unavailable(&error),
        }
    }

    /// Per network: backlog, measured capacity, time to clear, threshold and any refusal.
    fn admission_json(&self) -> serde_json::Value {
        let finite = |secs: f64| secs.is_finite().then_some(secs);
        let networks: serde_json::Map<String, serde_json::Value> = self
            .admission
            .snapshot()
            .into_iter()
            .map(|(network, state)| {
                let value = serde_json::json!({
                    "backlog": state.backlog,
                    "capacityPerSecond": state.capacity.per_second,
                    "capacityMeasured": state.capacity.measured,
                    "backlogSeconds": finite(state.backlog_secs),
                    "thresholdSeconds": state.threshold_secs,
                    "refusing": state.refusal.is_some(),
                    "reason": state.refusal,
                    "retryAfterSeconds": state.refusal.is_some().then_some(state.retry_after_secs),
                });
                (network, value)
            })
            .collect();
        serde_json::Value::Object(networks)
    }

    async fn exposure(&self) -> Answer {
        let snapshot = match self.ledger.snapshot(50, unix_now()).await {
            Ok(snapshot) => snapshot,
            Err(error) => return store_unavailable(&error),
        };
        let pairs = |list: &[(String, u64)], key: &str| -> Vec<serde_json::Value> {
            list.iter().map(|(name, micros)| serde_json::json!({key: name, "usdMicros": micros})).collect()
        };
        let body = serde_json::json!({
            "limitsUsdMicros": {
                "perPayer": snapshot.limits.per_payer,
                "perRoute": snapshot.limits.per_route,
                "total": snapshot.limits.total,
                "lossesPerDay": snapshot.limits.losses_per_day,
            },
            "lossBudget": {
                "usedUsdMicros": snapshot.losses,
                "perDayUsdMicros": snapshot.limits.losses_per_day,
                "spent": snapshot.losses_spent,
                "lostSinceStartUsdMicros": snapshot.lost_total,
            },
            "totalUsdMicros": snapshot.total,
            "payersWithUnsettled": snapshot.payer_count,
            "routes": pairs(&snapshot.routes, "route"),
            "topPayers": pairs(&snapshot.payers, "payer"),
            "store": self.ledger.kind(),
            "blocked": snapshot.blocked.iter().map(|b| serde_json::json!({"payer": b.payer, "until": b.until, "reason": b.reason})).collect::<Vec<_>>(),
        });
        (StatusCode::OK, body)
    }

    async fn reset_losses(&self) -> Answer {
        if let Err(error) = x402_store::record_loss_reset(self.journal.path(), unix_now_ms()) {
            return journal_unavailable(&error);
        }
        let cleared = match self.ledger.reset_losses(unix_now()).await {
            Ok(cleared) => cleared,
            Err(error) => return store_unavailable(&error),
        };
        tracing::warn!(cleared_usd_micros = cleared, "loss budget reset through the admin API");
        (StatusCode::OK, serde_json::json!({"clearedUsdMicros": cleared}))
    }

    /// The journal holds blocks (the CLI edits them too); the ledger follows at once.
    async fn unblock(&self, payer: &str) -> Answer {
        match x402_store::clear_payer_block(self.journal.path(), payer) {
            Ok(was_blocked) => {
                let was_blocked = match self.ledger.unblock(payer).await {
                    Ok(in_ledger) => in_ledger || was_blocked,
                    Err(error) => return store_unavailable(&error),
                };
                tracing::info!(payer, was_blocked, "payer unblocked through the admin API");
                (StatusCode::OK, serde_json::json!({"payer": payer, "wasBlocked": was_blocked}))
            }
            Err(error) => journal_unavailable(&error),
        }
    }

    fn drain(&self) -> Answer {
        self.draining.store(true, Ordering::Relaxed);
        self.settle_flush.store(true, Ordering::Relaxed);
        if let Some(claims) = &self.channel_claims {
            claims.claim_all_now();
        }
        tracing::warn!("draining: readiness now fails, queued payments are settled and channels claimed at once");
        let unsettled = self.journal.unsettled_count().ok();
        (StatusCode::OK, serde_json::json!({"draining": true, "unsettled": unsettled}))
    }

    async fn metrics_text(&self) -> Response<Vec<u8>> {
        self.refresh_gauges().await;
        let body = self.metrics.render();
        response(StatusCode::OK, "text/plain; version=0.0.4", body)
    }

    /// State gauges are read at scrape time, not kept up to date on the request path.
    async fn refresh_gauges(&self) {
        let metrics = &self.metrics;
        if let Ok(depth) = self.journal.unsettled_count() {
            metrics.queue_depth.set(i64::try_from(depth).unwrap_or(i64::MAX));
        }
        if let Ok(oldest) = self.journal.oldest_unsettled_ms() {
            let age = oldest.map_or(0, |ms| unix_now_ms().saturating_sub(ms) / 1000);
            metrics.oldest_unsettled_age.set(i64::try_from(age).unwrap_or(i64::MAX));
        }
        metrics.settlement_stalled.reset();
        if let Some(stall) = self.health.stall() {
            metrics.settlement_stalled.with_label_values(&[stall.cause]).set(1);
        }
        metrics.admission.set(&self.admission.snapshot());
        metrics.store_up.set(i64::from(self.ledger.unavailable().is_none()));
        metrics.store_errors.inc_by(self.ledger.store_errors().saturating_sub(metrics.store_errors.get()));
        let Ok(snapshot) = self.ledger.snapshot(0, unix_now()).await else { return };
        metrics.exposure_total.set(i64::try_from(snapshot.total).unwrap_or(i64::MAX));
        metrics.losses_budget_used.set(i64::try_from(snapshot.losses).unwrap_or(i64::MAX));
        metrics.losses_total.set(i64::try_from(snapshot.lost_total).unwrap_or(i64::MAX));
        metrics.exposure_route.reset();
        for route in self.config.load().routes.iter().filter(|r| r.pricing.is_some()) {
            let micros = snapshot.routes.iter().find(|(name, _)| *name == route.name).map_or(0, |(_, v)| *v);
            metrics.exposure_route.with_label_values(&[route.name.as_str()]).set(i64::try_from(micros).unwrap_or(i64::MAX));
        }
    }
}

fn bad_request(message: String) -> Answer {
    (StatusCode::BAD_REQUEST, serde_json::json!({"error": "bad_request", "message": message}))
}

fn store_unavailable(error: &StoreUnavailable) -> Answer {
    (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"error": "store_unavailable", "message": error.to_string()}))
}

fn journal_unavailable(error: &x402_store::JournalError) -> Answer {
    (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"error": "journal_unavailable", "message": error.to_string()}))
}

fn json((status, body): Answer) -> Response<Vec<u8>> {
    response(status, "application/json", serde_json::to_vec(&body).unwrap_or_default())
}

fn response(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let length = body.len();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        headers.insert(http::header::CONTENT_TYPE, value);
    }
    headers.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(length));
    response
}

/// The shortest admin token accepted: 32 bytes, 256 bits if random.
pub const MIN_TOKEN_BYTES: usize = 32;

/// Tokens this project ships as examples: anyone who read them could use them.
const PLACEHOLDER_TOKENS: &[&str] = &["replace-with-a-long-random-token"];

/// Why the admin token from the environment is refused at start.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminTokenError {
    #[error("the admin token in {env} (admin.token_env) is {length} bytes; use at least {MIN_TOKEN_BYTES} random bytes, e.g. `openssl rand -hex 32`")]
    TooShort { env: String, length: usize },
    #[error("the admin token in {env} (admin.token_env) is the example value shipped with x402-gateway; set a random one, e.g. `openssl rand -hex 32`")]
    Placeholder { env: String },
}

/// The admin bearer token, kept only as its digest: a request's token is hashed and the two
/// fixed-size digests compared in constant time, so neither where they first differ nor the
/// token's length shows in the time an answer takes.
pub struct AdminToken {
    digest: [u8; 32],
}

impl AdminToken {
    /// The token from the value of the environment variable `env`. `Ok(None)`: unset or
    /// blank, and the admin API stays locked.
    pub fn from_env_value(env: &str, value: Option<&str>) -> Result<Option<Self>, AdminTokenError> {
        let Some(token) = value.map(str::trim).filter(|t| !t.is_empty()) else { return Ok(None) };
        if PLACEHOLDER_TOKENS.contains(&token) {
            return Err(AdminTokenError::Placeholder { env: env.to_owned() });
        }
        if token.len() < MIN_TOKEN_BYTES {
            return Err(AdminTokenError::TooShort { env: env.to_owned(), length: token.len() });
        }
        Ok(Some(Self { digest: keccak256(token.as_bytes()).0 }))
    }

    /// Whether `given` is the token.
    pub fn admits(&self, given: &str) -> bool {
        let given = keccak256(given.as_bytes()).0;
        given.iter().zip(&self.digest).fold(0u8, |differ, (a, b)| differ | (a ^ b)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn token(value: &str) -> Result<Option<AdminToken>, AdminTokenError> {
        AdminToken::from_env_value("X402_ADMIN_TOKEN", Some(value))
    }

    #[test]
    fn the_token_admits_itself_only() {
        let admin = token(TOKEN).unwrap().unwrap();
        assert!(admin.admits(TOKEN));
        assert!(!admin.admits("0123456789abcdef0123456789abcdeF"), "one byte differs");
        assert!(!admin.admits(&TOKEN[..31]), "a prefix");
        assert!(!admin.admits(&format!("{TOKEN}x")), "an extension");
        assert!(!admin.admits(""));
    }

    #[test]
    fn surrounding_whitespace_is_not_part_of_the_token() {
        assert!(token(&format!(" {TOKEN}\n")).unwrap().unwrap().admits(TOKEN));
    }

    #[test]
    fn short_and_placeholder_tokens_are_refused_naming_the_setting() {
        let short = token("test-admin-token").err().unwrap();
        assert_eq!(short, AdminTokenError::TooShort { env: "X402_ADMIN_TOKEN".into(), length: 16 });
        assert!(short.to_string().contains("X402_ADMIN_TOKEN (admin.token_env) is 16 bytes"), "{short}");
        assert_eq!(token(&TOKEN[..31]).err(), Some(AdminTokenError::TooShort { env: "X402_ADMIN_TOKEN".into(), length: 31 }));
        let placeholder = token("replace-with-a-long-random-token").err().unwrap();
        assert_eq!(placeholder, AdminTokenError::Placeholder { env: "X402_ADMIN_TOKEN".into() });
        assert!(placeholder.to_string().contains("X402_ADMIN_TOKEN (admin.token_env) is the example value"), "{placeholder}");
    }

    #[test]
    fn an_unset_or_blank_token_locks_the_admin_api() {
        assert!(AdminToken::from_env_value("X402_ADMIN_TOKEN", None).unwrap().is_none());
        assert!(token("  ").unwrap().is_none());
    }
}
