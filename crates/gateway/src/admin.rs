//! The admin API, on its own listener (loopback by default), for operators and probes.
//!
//! | request | answer |
//! |---|---|
//! | `GET /health` | 200 while the process serves (liveness); no token |
//! | `GET /ready` | 200 when it should get traffic, 503 while draining or if the journal is unreadable; no token |
//! | `GET /metrics` | Prometheus text exposition |
//! | `GET /config` | the serving config's hash, when it was loaded, the last reload attempt, fields waiting for a restart |
//! | `POST /reload` | reload `gateway.yaml` now: 200 with the outcome, 422 with the error (the old config keeps serving) |
//! | `GET /routes` | the route table, with current prices and quotes still honoured |
//! | `GET /routes?explain=URL&method=GET` | one request's canonical target, the route it matches and why |
//! | `GET /settlement` | payments per state, queue depth, age of the oldest unsettled payment |
//! | `GET /exposure` | unsettled value per route and in total, the largest debtors, blocked payers |
//! | `DELETE /exposure/blocks/{payer}` | let a blocked payer pay again |
//! | `POST /drain` | stop being ready and settle everything queued now, before a shutdown |
//!
//! Everything but `/health` and `/ready` needs `Authorization: Bearer <token>`, the token
//! being the value of the environment variable `admin.token_env` names. Without that
//! variable those endpoints answer 403: the admin API fails closed.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::reload::{ReloadError, Reloader};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use x402_store::{unix_now, unix_now_ms, Exposure, Journal};

pub struct AdminApi {
    pub token: Option<String>,
    pub token_env: String,
    pub config: Arc<ArcSwap<Config>>,
    pub reloader: Arc<Reloader>,
    pub journal: Arc<Journal>,
    pub exposure: Arc<Exposure>,
    pub metrics: Arc<Metrics>,
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
            return self.metrics_text();
        }
        let answer = match (&method, path.as_str()) {
            (&Method::GET, "/health") => (StatusCode::OK, serde_json::json!({"status": "ok"})),
            (&Method::GET, "/ready") => self.readiness(),
            _ => match self.authorize(authorization.as_deref()) {
                Ok(()) => self.protected(&method, &path, &query),
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
        if constant_time_eq(given.as_bytes(), token.as_bytes()) {
            Ok(())
        } else {
            Err((StatusCode::UNAUTHORIZED, serde_json::json!({"error": "unauthorized", "message": "send Authorization: Bearer <admin token>"})))
        }
    }

    fn protected(&self, method: &Method, path: &str, query: &str) -> Answer {
        match (method, path) {
            (&Method::GET, "/routes") if !query.is_empty() => self.explain(query),
            (&Method::GET, "/config") => (StatusCode::OK, serde_json::to_value(self.reloader.status()).unwrap_or_default()),
            (&Method::POST, "/reload") => self.reload(),
            (&Method::GET, "/routes") => (StatusCode::OK, crate::inspect::routes_json(&self.config.load())),
            (&Method::GET, "/settlement") => self.settlement(),
            (&Method::GET, "/exposure") => self.exposure(),
            (&Method::POST, "/drain") => self.drain(),
            (&Method::DELETE, _) if path.starts_with("/exposure/blocks/") => self.unblock(&path["/exposure/blocks/".len()..]),
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
        match self.journal.unsettled_count() {
            Ok(_) => (StatusCode::OK, serde_json::json!({"ready": true})),
            Err(error) => (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"ready": false, "reason": format!("journal: {error}")})),
        }
    }

    fn reload(&self) -> Answer {
        match self.reloader.reload("admin") {
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

    fn settlement(&self) -> Answer {
        let read = || -> Result<serde_json::Value, x402_store::JournalError> {
            let oldest = self.journal.oldest_unsettled_ms()?;
            Ok(serde_json::json!({
                "states": self.journal.counts()?,
                "unsettled": self.journal.unsettled_count()?,
                "oldestUnsettledAgeSeconds": oldest.map(|ms| unix_now_ms().saturating_sub(ms) / 1000),
                "flushing": self.settle_flush.load(Ordering::Relaxed),
            }))
        };
        match read() {
            Ok(body) => (StatusCode::OK, body),
            Err(error) => journal_unavailable(&error),
        }
    }

    fn exposure(&self) -> Answer {
        let snapshot = self.exposure.snapshot(50, unix_now());
        let pairs = |list: &[(String, u64)], key: &str| -> Vec<serde_json::Value> {
            list.iter().map(|(name, micros)| serde_json::json!({key: name, "usdMicros": micros})).collect()
        };
        let body = serde_json::json!({
            "limitsUsdMicros": {
                "perPayer": snapshot.limits.per_payer,
                "perRoute": snapshot.limits.per_route,
                "total": snapshot.limits.total,
            },
            "totalUsdMicros": snapshot.total,
            "payersWithUnsettled": snapshot.payer_count,
            "routes": pairs(&snapshot.routes, "route"),
            "topPayers": pairs(&snapshot.payers, "payer"),
            "blocked": snapshot.blocked.iter().map(|b| serde_json::json!({"payer": b.payer, "until": b.until, "reason": b.reason})).collect::<Vec<_>>(),
        });
        (StatusCode::OK, body)
    }

    /// The journal holds blocks (the CLI edits them too); the ledger follows at once.
    fn unblock(&self, payer: &str) -> Answer {
        match x402_store::clear_payer_block(self.journal.path(), payer) {
            Ok(was_blocked) => {
                let was_blocked = self.exposure.unblock(payer) || was_blocked;
                tracing::info!(payer, was_blocked, "payer unblocked through the admin API");
                (StatusCode::OK, serde_json::json!({"payer": payer, "wasBlocked": was_blocked}))
            }
            Err(error) => journal_unavailable(&error),
        }
    }

    fn drain(&self) -> Answer {
        self.draining.store(true, Ordering::Relaxed);
        self.settle_flush.store(true, Ordering::Relaxed);
        tracing::warn!("draining: readiness now fails and queued payments are settled at once");
        let unsettled = self.journal.unsettled_count().ok();
        (StatusCode::OK, serde_json::json!({"draining": true, "unsettled": unsettled}))
    }

    fn metrics_text(&self) -> Response<Vec<u8>> {
        self.refresh_gauges();
        let body = self.metrics.render();
        response(StatusCode::OK, "text/plain; version=0.0.4", body)
    }

    /// State gauges are read at scrape time, not kept up to date on the request path.
    fn refresh_gauges(&self) {
        let metrics = &self.metrics;
        if let Ok(depth) = self.journal.unsettled_count() {
            metrics.queue_depth.set(i64::try_from(depth).unwrap_or(i64::MAX));
        }
        if let Ok(oldest) = self.journal.oldest_unsettled_ms() {
            let age = oldest.map_or(0, |ms| unix_now_ms().saturating_sub(ms) / 1000);
            metrics.oldest_unsettled_age.set(i64::try_from(age).unwrap_or(i64::MAX));
        }
        let snapshot = self.exposure.snapshot(0, unix_now());
        metrics.exposure_total.set(i64::try_from(snapshot.total).unwrap_or(i64::MAX));
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

/// Token comparison whose time does not depend on where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison_needs_every_byte() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-token", b"secret-tokeN"));
        assert!(!constant_time_eq(b"secret", b"secret-token"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
