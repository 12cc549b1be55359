//! The Pingora proxy: payment logic laid out along Pingora's request phases, one job each.
//!
//! | phase | job |
//! |---|---|
//! | `new_ctx` | an empty [`RequestContext`] |
//! | `early_request_filter` | count the request in flight for the shutdown drain, or close it unread once the drain is closed |
//! | `request_filter` | canonicalise the target and match the route; free → pass; no payment → 402; payment → cheap checks here, signature recovery on the verifier threads (503 when they are saturated), reserve; or answer the failure; `settle: before` → journal and settle on-chain first |
//! | `upstream_peer` | the route's upstream, round robin |
//! | `upstream_request_filter` | set the canonical path, drop payment, method-override and URL-rewrite headers, add `X-Forwarded-For`, `Via` and `X-Request-Id` |
//! | `response_filter` | billable status → journal the payment durably, then add the receipt; otherwise it is released later |
//! | `fail_to_proxy` | a JSON error for a dead or slow upstream (502/504) or an unrecorded payment (503); nobody is charged |
//! | `logging` | release a reservation nobody was charged for; access log line; metrics |

use crate::challenge::{self, LocalResponse, Refusal};
use crate::config::raw::{ChargeOn, SettleMode, UpgradePolicy};
use crate::metrics::Metrics;
use crate::config::{Config, Pricing, Route, Unmatched};
use crate::payment::{self, AcceptedPayment, PaymentRejection};
use crate::channel_payment::{ChannelPayments, ChannelRejection, HeldVoucher};
use crate::canonical::{self, CanonicalPath, TargetRefusal};
use crate::drain::{Drain, InFlightRequest};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::proxy::FailToProxy;
use pingora::{Error, ErrorSource, ErrorType, Result};
use std::sync::Arc;
use std::time::{Duration, Instant};
use x402_settle::{SettleBefore, SettleBeforeRefusal, SettleNowOutcome};
use x402_store::{Journal, JournalError, PaymentLedger};

/// The paywall proxy. Each request works on the config snapshot it started with.
pub struct PaywallProxy {
    pub config: Arc<ArcSwap<Config>>,
    /// Replay reservations and exposure: in this process, or shared by replicas in Redis.
    pub ledger: Arc<dyn PaymentLedger>,
    pub balances: Option<Arc<crate::balance::BalanceCache>>,
    pub journal: Arc<Journal>,
    /// Whether settlement keeps up; priced routes take no payment while it does not.
    pub health: Arc<x402_settle::stall::SettlementHealth>,
    /// Whether each network's settlement backlog leaves room for new payments.
    pub admission: Arc<x402_settle::admission::SettlementAdmission>,
    /// The settler's bounded queue for `settle: before` payments (with the chain checks they
    /// pass first), and how long a request waits.
    pub settle_before: Option<SettleBefore>,
    pub settle_before_timeout: Duration,
    pub metrics: Arc<Metrics>,
    pub request_ids: RequestIds,
    pub verifier: crate::verifier::SignatureVerifier,
    /// Open during a graceful upgrade: fresh nonces are looked up in the journal too.
    pub upgrade_window: Arc<crate::upgrade::UpgradeWindow>,
    /// Requests in flight, waited for at shutdown before the process exits.
    pub drain: Arc<Drain>,
    /// `batch-settlement` payments: channel records and the chain work they need.
    pub channels: Arc<ChannelPayments>,
    /// Asks other replicas for receipts of payments they took.
    pub receipt_client: reqwest::Client,
}

/// What one request carries from phase to phase.
pub struct RequestContext {
    config: Option<Arc<Config>>,
    route: Option<usize>,
    upstream: Option<usize>,
    payment: Option<AcceptedPayment>,
    /// The payment was journaled: the client was charged.
    charged: bool,
    /// The journal already holds this authorization: its reservation must stay.
    journaled_before: bool,
    /// `settle: before`: the payment's receipt id and the transaction it landed in.
    settled_before: Option<(String, String)>,
    connect_attempts: usize,
    /// A connection to the upstream was made: from here on the request may have done work.
    reached_upstream: bool,
    /// The upstream's own status, once it answered.
    upstream_status: Option<u16>,
    /// `charge_on: forward`: journaled before forwarding, with this receipt id.
    charged_up_front: Option<String>,
    /// A journal write of the payment was started, with this receipt id.
    charge_pending: Option<String>,
    started: Instant,
    /// From the client's `X-Request-Id` when it is usable, otherwise generated.
    request_id: String,
    /// What happened to the request's payment, for the access log.
    outcome: PaymentOutcome,
    upstream_sent: Option<Instant>,
    /// The canonical path when it differs from the client's: forwarded instead.
    canonical_path: Option<String>,
    /// Held until the request is finished: shutdown waits for it.
    in_flight: Option<InFlightRequest>,
    /// A `batch-settlement` voucher holding its channel, until charged or released.
    voucher: Option<HeldVoucher>,
}

impl RequestContext {
    /// The upstream got the request and did not decline it with a non-billable status: what
    /// it did may have cost it, so the payment's authorization cannot buy it again.
    fn upstream_did_work(&self) -> bool {
        let pricing = self.config.as_deref().and_then(|c| PaywallProxy::route(c, self)).map(|(_, p)| p);
        let declined = matches!((self.upstream_status, pricing), (Some(status), Some(pricing)) if !pricing.is_billable(status));
        self.reached_upstream && !declined
    }
}

/// What [`PaywallProxy::admit`] decided.
// Built and moved once per request; boxing the payment would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Admission {
    /// Answered here, with no upstream call.
    Answer(LocalResponse),
    /// Free route or unmatched-path forward: on to the upstream.
    Forward,
    /// A payment passed its cheap checks; its signature is next.
    Recover { check: payment::PaymentCheck, started: Instant },
    /// A `batch-settlement` payment for the route's channel offer at this index.
    Channel { payment: x402::v2::PaymentPayload, offer: usize },
    /// A receipt this replica's journal does not hold: another replica may.
    ReceiptElsewhere { receipt_id: String },
}

/// A receipt look-up in this replica's journal.
enum ReceiptLookup {
    Answer(LocalResponse),
    /// Not in this journal: the payment's receipt id.
    NotHere(String),
}

fn receipt_not_found() -> LocalResponse {
    challenge::json_response(404, &serde_json::json!({"error": "receipt_not_found", "message": "no payment has this receipt id"}))
}

/// What became of a request's payment: the access log's `payment` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PaymentOutcome {
    /// Free route, unmatched, or answered before any pricing applied.
    None,
    /// No payment: answered 402 with the route's offers.
    Challenged,
    /// A payment was refused, with this reason code.
    Refused(x402::ReasonCode),
    /// Verified and reserved, and released in the end: nobody was charged.
    Verified,
    /// Reached the upstream but not charged (the client left, the upstream timed out): the
    /// authorization stays used up until its `validBefore`, so it cannot buy the work again.
    Spent,
    /// Journaled: the payer is charged.
    Charged,
}

impl PaymentOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Challenged => "challenged",
            Self::Refused(_) => "refused",
            Self::Verified => "released",
            Self::Spent => "spent",
            Self::Charged => "charged",
        }
    }
}

impl PaywallProxy {
    fn route<'a>(config: &'a Config, ctx: &RequestContext) -> Option<(&'a Route, &'a Pricing)> {
        let route = &config.routes[ctx.route?];
        Some((route, route.pricing.as_ref()?))
    }

    /// Decides what happens to the request, from what costs nothing to decide.
    fn admit(&self, config: &Config, req: &RequestHeader, ctx: &mut RequestContext) -> Admission {
        let path = req.uri.path();
        if path.starts_with(payment::RECEIPTS_PATH) && req.method == http::Method::GET {
            let forwarded = req.headers.contains_key(crate::receipts::FORWARDED_HEADER);
            return match self.receipt_lookup(path) {
                ReceiptLookup::Answer(response) => Admission::Answer(response),
                ReceiptLookup::NotHere(_) if forwarded => Admission::Answer(receipt_not_found()),
                ReceiptLookup::NotHere(receipt_id) => Admission::ReceiptElsewhere { receipt_id },
            };
        }
        let (path, host) = match canonical_target(config, req) {
            Ok(target) => target,
            Err(refusal) => return Admission::Answer(refused_target(refusal)),
        };
        let resolved = config.resolve_route(&req.method, host, path.as_str());
        if let crate::config::RouteMatch::Guarded { priced, instead_of } = resolved {
            let free = instead_of.map_or(UNMATCHED, |i| config.routes[i].name.as_str());
            tracing::debug!(route = %config.routes[priced].name, instead_of = free, path = path.as_str(), "a priced route's lenient form takes this request");
        }
        if path.is_rewritten() {
            ctx.canonical_path = Some(path.into_owned());
        }
        let Some(index) = resolved.index() else {
            return match config.unmatched {
                Unmatched::Forward { upstream } => {
                    ctx.upstream = Some(upstream);
                    Admission::Forward
                }
                Unmatched::NotFound => Admission::Answer(challenge::json_response(404, &serde_json::json!({"error": "not_found", "message": "no route matches this request"}))),
            };
        };
        let route = &config.routes[index];
        ctx.route = Some(index);
        ctx.upstream = Some(route.upstream);
        let Some(pricing) = route.pricing.as_ref() else { return Admission::Forward };
        if let Some(refusal) = self.settlement_refusal(route, pricing, payment::find_payment_header(&req.headers).is_some()) {
            return Admission::Answer(refusal);
        }
        if let Some(upgrade) = req.headers.get(http::header::UPGRADE) {
            // Only a WebSocket can be charged: an h2c upgrade would open a connection that
            // carries any number of requests to any path, past route matching and pricing.
            if pricing.upgrades == UpgradePolicy::Refuse || !upgrade.as_bytes().eq_ignore_ascii_case(b"websocket") {
                return Admission::Answer(challenge::upgrade_refused(&route.name));
            }
        }
        // The resource URL goes only into answers: a payment that is accepted never builds it.
        let Some(header) = payment::find_payment_header(&req.headers) else {
            let browser = challenge::is_browser(header_str(req, "accept"), header_str(req, "user-agent"));
            ctx.outcome = PaymentOutcome::Challenged;
            self.metrics.challenges.with_label_values(&[route.name.as_str()]).inc();
            return Admission::Answer(challenge::payment_required(route, pricing, &resource_url(req, host), None, browser));
        };
        if let Some(channel) = self.channel_admission(config, route, pricing, req, header, ctx) {
            return channel;
        }
        let started = Instant::now();
        let checked = payment::check_payment(header, route, &config.verify_policy, config.server.max_payment_header_bytes, x402_store::unix_now());
        match checked {
            Ok(check) => match self.late_payment(route, &check, ctx) {
                Some(refusal) => Admission::Answer(refusal),
                None => Admission::Recover { check, started },
            },
            Err(rejection) => {
                self.metrics.verify_seconds.observe(started.elapsed().as_secs_f64());
                Admission::Answer(self.refuse(route, pricing, &resource_url(req, host), rejection, ctx))
            }
        }
    }

    /// A `batch-settlement` payment on a route that offers channels: its admission, or `None`
    /// to check the payment as `exact`.
    fn channel_admission(&self, config: &Config, route: &Route, pricing: &Pricing, req: &RequestHeader, header: payment::PaymentHeader<'_>, ctx: &mut RequestContext) -> Option<Admission> {
        let payment::PaymentHeader::V2(raw) = header else { return None };
        if pricing.channel_offers.is_empty() {
            return None;
        }
        let payment: x402::v2::PaymentPayload = match x402::decode_header(raw, config.server.max_payment_header_bytes) {
            Ok(payment) => payment,
            Err(error) => return Some(Admission::Answer(self.refuse(route, pricing, &resource_url(req, request_host(req)), PaymentRejection::Malformed(error), ctx))),
        };
        if payment.accepted.get("scheme").and_then(|s| s.as_str()) != Some(crate::config::SCHEME_BATCH_SETTLEMENT) {
            return None;
        }
        let Some(offer) = pricing.channel_offers.iter().position(|offer| offer.wire == payment.accepted) else {
            let rejection = PaymentRejection::Invalid(x402_evm::VerifyError::RequirementsMismatch);
            return Some(Admission::Answer(self.refuse(route, pricing, &resource_url(req, request_host(req)), rejection, ctx)));
        };
        Some(Admission::Channel { payment, offer })
    }

    /// Checks a channel payment and holds its channel (sending its deposit first, if any).
    async fn hold_channel_payment(&self, config: &Config, req: &RequestHeader, payment: x402::v2::PaymentPayload, offer: usize, ctx: &mut RequestContext) -> Option<LocalResponse> {
        let (route, pricing) = Self::route(config, ctx)?;
        let offer = pricing.channel_offers.get(offer)?;
        match self.channels.hold(&route.name, offer, &payment, pricing.max_timeout_seconds).await {
            Ok(held) => {
                self.metrics.payments_verified.with_label_values(&[route.name.as_str()]).inc();
                self.metrics.channel_in_flight.inc();
                ctx.outcome = PaymentOutcome::Verified;
                ctx.voucher = Some(held);
                None
            }
            Err(rejection) => Some(self.refuse_channel_payment(route, pricing, req, rejection, ctx)),
        }
    }

    /// The answer to a refused channel payment: 400 unreadable, 503 when the chain cannot be
    /// asked, else 402 (the corrective one, with the channel's state, on a cumulative mismatch).
    fn refuse_channel_payment(&self, route: &Route, pricing: &Pricing, req: &RequestHeader, rejection: ChannelRejection, ctx: &mut RequestContext) -> LocalResponse {
        let reason = rejection.reason();
        self.metrics.payments_rejected.with_label_values(&[route.name.as_str(), reason.as_str()]).inc();
        ctx.outcome = PaymentOutcome::Refused(reason);
        tracing::info!(route = %route.name, %reason, error = %rejection, "channel payment refused");
        let message = rejection.to_string();
        match rejection {
            ChannelRejection::Malformed(_) => challenge::malformed_payment(&message),
            ChannelRejection::Unavailable(_) => challenge::retry_later("channel_unavailable", reason, &message, 2),
            ChannelRejection::OverExposure(x402_store::ExposureRefusal::LossBudgetSpent { .. }) => challenge::retry_later("loss_budget_exhausted", reason, &message, 2),
            ChannelRejection::Resync { record, .. } => challenge::channel_resync(route, pricing, &resource_url(req, request_host(req)), Refusal { reason, message: &message }, &record),
            ChannelRejection::Invalid(_) | ChannelRejection::Deposit(_) | ChannelRejection::OverExposure(_) => {
                challenge::payment_required(route, pricing, &resource_url(req, request_host(req)), Some(Refusal { reason, message: &message }), false)
            }
        }
    }

    /// 503 while settlement cannot take new payments on this route: stalled, or a backlog on
    /// one of its networks that a new payment would wait behind past its `validBefore`.
    /// Answered before any payment is read, reserved or journaled.
    fn settlement_refusal(&self, route: &Route, pricing: &Pricing, carries_payment: bool) -> Option<LocalResponse> {
        const STALL_RETRY_AFTER_SECS: u64 = 2;
        let (code, message, retry_after) = if let Some(stall) = self.health.stall() {
            let message = format!("settlement has stalled ({}); no payment is taken until it recovers, and nothing was charged", stall.message);
            ("settlement_stalled", message, STALL_RETRY_AFTER_SECS)
        } else {
            let backlog = self.admission.refusal(pricing.requirements.iter().map(|r| r.network.as_str()))?;
            let message = format!("settlement on {} is behind ({}); no payment is taken until it catches up, and nothing was charged", backlog.network, backlog.message);
            ("settlement_backlog", message, backlog.retry_after_secs)
        };
        tracing::info!(route = %route.name, code, retry_after, "priced request refused before payment");
        // Counted with the other refused payments; a request without one refused nothing.
        if carries_payment {
            self.metrics.payments_rejected.with_label_values(&[route.name.as_str(), code]).inc();
        }
        Some(challenge::retry_later(code, x402::ReasonCode::UnexpectedSettleError, &message, retry_after))
    }

    /// 503 for a payment the settler would reach too close to its `validBefore` behind the
    /// backlog, though the route takes payments; answered before it is reserved.
    fn late_payment(&self, route: &Route, check: &payment::PaymentCheck, ctx: &mut RequestContext) -> Option<LocalResponse> {
        let (network, valid_before) = check.deadline(route)?;
        let Some(late) = self.admission.late_payment(network, valid_before, x402_store::unix_now()) else {
            // Taken as accepted from here: until the guard reads the journal again, it waits
            // ahead of the next payment.
            self.admission.payment_accepted();
            return None;
        };
        tracing::info!(route = %route.name, network, valid_before, "payment refused: it would expire behind the settlement backlog");
        self.metrics.payments_rejected.with_label_values(&[route.name.as_str(), "settlement_backlog"]).inc();
        ctx.outcome = PaymentOutcome::Refused(x402::ReasonCode::UnexpectedSettleError);
        let message = format!("settlement on {} is behind ({}); nothing was charged", late.network, late.message);
        Some(challenge::retry_later("settlement_backlog", x402::ReasonCode::UnexpectedSettleError, &message, late.retry_after_secs))
    }

    /// Recovers the signer of a payment that passed its cheap checks, off the worker thread,
    /// and reserves it. `Some(response)` answers the request here.
    async fn verify_signature(&self, config: &Config, req: &RequestHeader, check: payment::PaymentCheck, started: Instant, ctx: &mut RequestContext) -> Option<LocalResponse> {
        let Some((route, pricing)) = Self::route(config, ctx) else {
            // `admit` only asks for recovery on a priced route; never forward unpaid if not.
            return Some(error_response(&Error::explain(ErrorType::InternalError, "no priced route for a payment")));
        };
        let signed = self.verifier.recover_signer(check).await;
        self.metrics.verify_seconds.observe(started.elapsed().as_secs_f64());
        let accepted = match signed {
            Ok(signed) => self.hold_covered(signed, route).await,
            Err(rejection) => Err(rejection),
        };
        match accepted {
            Ok(accepted) => {
                self.metrics.payments_verified.with_label_values(&[route.name.as_str()]).inc();
                ctx.outcome = PaymentOutcome::Verified;
                ctx.payment = Some(accepted);
                None
            }
            Err(rejection) => Some(self.refuse(route, pricing, &resource_url(req, request_host(req)), rejection, ctx)),
        }
    }

    /// Holds a signed payment, with the payer's balance when the balance check is on: the
    /// first payment of a payer waits for one read, later ones use the cached value.
    async fn hold_covered(&self, signed: payment::SignedPayment, route: &Route) -> Result<AcceptedPayment, PaymentRejection> {
        let balance = match (&self.balances, signed.balance_key(route)) {
            (Some(balances), Some((chain_id, token, owner))) => {
                // What needs no balance is refused before one is read: no RPC call for it.
                self.ledger.precheck(signed.payer(), x402_store::unix_now()).await.map_err(|refusal| PaymentRejection::from_ledger(refusal, ""))?;
                Some(balances.balance(chain_id, token, owner).await?)
            }
            _ => None,
        };
        let now = x402_store::unix_now();
        // During an upgrade the other process may have charged this payment since we started.
        let shared_journal = self.upgrade_window.is_open(now).then_some(&*self.journal);
        let guards = payment::PaymentGuards { shared_journal, ..self.guards() };
        payment::hold_payment(signed, route, &guards, now, balance).await
    }

    /// The answer to a refused payment: 400 for a header that cannot be read, 503 when the
    /// gateway cannot take it now (verify threads full, balance or journal unreadable, loss
    /// budget spent), otherwise 402 with a fresh challenge naming the reason.
    fn refuse(&self, route: &Route, pricing: &Pricing, resource_url: &str, rejection: PaymentRejection, ctx: &mut RequestContext) -> LocalResponse {
        self.count_rejection(&route.name, &rejection);
        ctx.outcome = PaymentOutcome::Refused(rejection.reason());
        match &rejection {
            PaymentRejection::Malformed(error) => {
                tracing::info!(route = %route.name, %error, "malformed payment header");
                return challenge::malformed_payment(&error.to_string());
            }
            PaymentRejection::AtCapacity { .. } => {
                tracing::info!(route = %route.name, error = %rejection, "payment verification at capacity");
                return challenge::verification_at_capacity(&rejection.to_string());
            }
            _ => {}
        }
        if let Some(code) = rejection.retry_later() {
            tracing::warn!(route = %route.name, code, error = %rejection, "payment refused for now");
            return challenge::retry_later(code, rejection.reason(), &rejection.to_string(), 2);
        }
        tracing::info!(route = %route.name, reason = %rejection.reason(), error = %rejection, "payment refused");
        let message = rejection.to_string();
        let refusal = Refusal { reason: rejection.reason(), message: &message };
        challenge::payment_required(route, pricing, resource_url, Some(refusal), false)
    }

    fn count_rejection(&self, route: &str, rejection: &PaymentRejection) {
        // A refusal answered with a retry-later code is counted under that code, as the
        // client saw it, not under the generic reason beside it.
        let label = rejection.retry_later().unwrap_or(rejection.reason().as_str());
        self.metrics.payments_rejected.with_label_values(&[route, label]).inc();
        if matches!(rejection, PaymentRejection::Replayed(_)) {
            self.metrics.replay_rejections.with_label_values(&[route]).inc();
        }
    }

    /// `GET /.well-known/x402/receipts/{id}`: a payment's state from the journal.
    ///
    /// Answered inline on the worker: it is one index seek (microseconds, like the signature
    /// checks' cheap part), on a connection pool of its own with one connection per worker
    /// thread, so it neither waits behind the settler's scans nor behind another worker. A
    /// hop to `spawn_blocking` would cost more than the seek, and a flood of look-ups would
    /// grow tokio's blocking pool instead of being answered. Should every connection still be
    /// busy (more workers than configured), the answer is 503 at once, never a wait.
    fn receipt_lookup(&self, path: &str) -> ReceiptLookup {
        let Some(id) = crate::receipts::receipt_id_from_path(path) else { return ReceiptLookup::Answer(receipt_not_found()) };
        ReceiptLookup::Answer(match self.journal.receipt(id) {
            Ok(Some(record)) => challenge::json_response(200, &crate::receipts::receipt_json(&record)),
            Ok(None) => return ReceiptLookup::NotHere(id.to_owned()),
            Err(JournalError::Busy) => {
                let mut busy = challenge::json_response(503, &serde_json::json!({"error": "journal_busy", "message": "every receipt reader is busy; retry shortly"}));
                busy.headers.push(("Retry-After", "1".into()));
                busy
            }
            Err(error) => {
                tracing::error!(%error, "receipt lookup failed");
                challenge::json_response(503, &serde_json::json!({"error": "journal_unavailable", "message": "receipts cannot be read right now"}))
            }
        })
    }

    /// A receipt look-up for a payment another replica took: answered by that replica (its
    /// advertised URL is in the shared store while the payment is there), relayed as it is.
    async fn receipt_elsewhere(&self, receipt_id: &str) -> LocalResponse {
        let owner = match self.ledger.receipt_owner(receipt_id).await {
            Ok(Some(owner)) => owner,
            Ok(None) => return receipt_not_found(),
            Err(error) => {
                let mut busy = challenge::json_response(503, &serde_json::json!({"error": "store_unavailable", "message": format!("{error}; retry shortly")}));
                busy.headers.push(("Retry-After", "1".into()));
                return busy;
            }
        };
        match crate::receipts::forwarded_lookup(&self.receipt_client, &owner, receipt_id).await {
            Ok((status, body)) => challenge::json_response(status, &body),
            Err(error) => {
                tracing::warn!(receipt = receipt_id, owner, %error, "the replica holding a payment did not answer its receipt look-up");
                let message = "the gateway replica that took this payment does not answer; retry shortly";
                let mut unreachable = challenge::json_response(503, &serde_json::json!({"error": "receipt_owner_unavailable", "message": message}));
                unreachable.headers.push(("Retry-After", "2".into()));
                unreachable
            }
        }
    }

    /// `settle: before`: checks the payment on-chain (nonce unused, balance enough) and takes
    /// a place in the settler's bounded queue, then journals it, has the settler land it
    /// on-chain, and lets the request through only once it has. `Some(response)` answers the
    /// request here and the upstream is never called; a refusal before journaling charges
    /// nobody.
    async fn settle_before(&self, config: &Config, req: &RequestHeader, ctx: &mut RequestContext) -> Option<LocalResponse> {
        let (route, pricing) = Self::route(config, ctx)?;
        let route_name = route.name.clone();
        let refuse = |code: x402::ReasonCode, message: &str| {
            let refusal = Refusal { reason: code, message };
            Some(challenge::payment_required(route, pricing, &resource_url(req, request_host(req)), Some(refusal), false))
        };
        let Some(queue) = self.settle_before.as_ref() else {
            return Some(challenge::settlement_unavailable("the settler is not running; nothing was charged"));
        };
        let Some(payment) = ctx.payment.as_ref() else {
            return Some(challenge::settlement_unavailable("no verified payment to settle; nothing was charged"));
        };
        let ticket = match queue.admit(&payment.item, &payment::receipt_id(&payment.key)).await {
            Ok(ticket) => ticket,
            Err(refusal) => {
                tracing::info!(route = %route_name, payer = %payment.payer, %refusal, "settle-before payment refused before journaling");
                let message = format!("{refusal}; the request was not forwarded and nothing was charged");
                return match refusal {
                    SettleBeforeRefusal::NonceUsed => refuse(x402::ReasonCode::InvalidExactEvmNonceAlreadyUsed, &message),
                    SettleBeforeRefusal::InsufficientBalance { .. } => refuse(x402::ReasonCode::InvalidExactEvmInsufficientBalance, &message),
                    SettleBeforeRefusal::Unsettleable(_) => refuse(x402::ReasonCode::InvalidExactEvmTransactionFailed, &message),
                    SettleBeforeRefusal::QueueFull { .. } | SettleBeforeRefusal::ChainUnavailable(_) => {
                        Some(challenge::settlement_unavailable(&message))
                    }
                };
            }
        };
        let (payment_id, receipt_id) = match self.record_payment(&route_name, ctx).await {
            Ok(recorded) => recorded,
            Err(error) => return Some(error_response(&error)),
        };
        let outcome = match tokio::time::timeout(self.settle_before_timeout, ticket.send(payment_id)).await {
            Ok(Ok(outcome)) => outcome,
            _ => SettleNowOutcome::Pending(format!("no outcome within {:?}", self.settle_before_timeout)),
        };
        match outcome {
            SettleNowOutcome::Settled(transaction) => {
                ctx.settled_before = Some((receipt_id, transaction));
                None
            }
            SettleNowOutcome::Failed(reason) => {
                let code = if reason.contains("exceeds balance") {
                    x402::ReasonCode::InvalidExactEvmInsufficientBalance
                } else if reason.contains("authorization burnt") || reason.contains("cancelled") {
                    x402::ReasonCode::InvalidExactEvmNonceAlreadyUsed
                } else {
                    x402::ReasonCode::InvalidExactEvmTransactionFailed
                };
                refuse(code, &format!("the payment did not settle, so the request was not forwarded: {reason}"))
            }
            SettleNowOutcome::Pending(why) => {
                tracing::warn!(route = %route_name, receipt = %receipt_id, why, "settle-before payment not confirmed in time");
                let body = serde_json::json!({
                    "error": "settlement_pending",
                    "message": format!("the payment was sent but not confirmed in time ({why}); the request was not forwarded. Look it up at {}{receipt_id}", payment::RECEIPTS_PATH),
                    "receipt": format!("{}{receipt_id}", payment::RECEIPTS_PATH),
                });
                Some(challenge::json_response(504, &body))
            }
        }
    }

    /// `charge_on: forward`: journals the payment once a connection to the upstream is made
    /// and before the request goes out on it, so what the upstream does (or whether the
    /// client stays) no longer decides whether it is paid, and a refused connection costs nothing.
    async fn charge_before_forwarding(&self, ctx: &mut RequestContext) -> Result<()> {
        let config = ctx.config.clone();
        let Some((route, pricing)) = config.as_deref().and_then(|c| Self::route(c, ctx)) else { return Ok(()) };
        if pricing.charge_on != ChargeOn::Forward || ctx.payment.is_none() || ctx.charged || ctx.settled_before.is_some() {
            return Ok(());
        }
        let (_, receipt_id) = self.record_payment(&route.name, ctx).await?;
        ctx.charged_up_front = Some(receipt_id);
        Ok(())
    }

    /// Journals a billable payment and waits until it is durable: the response is not
    /// released before. Returns its journal row id and receipt id.
    async fn record_payment(&self, route: &str, ctx: &mut RequestContext) -> Result<(u64, String)> {
        let Some(payment) = ctx.payment.as_ref() else { return Err(Error::explain(ErrorType::InternalError, "no payment")) };
        if !self.drain.may_charge() {
            // The process may exit before this response is written: a charge now could be
            // a payment with no response.
            tracing::warn!(route, request_id = %ctx.request_id, "shutting down: payment not charged, response withheld");
            return Err(Error::explain(SHUTTING_DOWN, "payment not charged"));
        }
        let entry = payment.journal_entry(route);
        let receipt_id = entry.receipt_id.clone();
        // If this future is dropped mid-write (Pingora gives up on the request), the write may
        // still commit: what is released later must ask the journal, not assume.
        ctx.charge_pending = Some(receipt_id.clone());
        match self.journal.record(entry).await {
            Ok(id) => {
                if let Some(payment) = ctx.payment.as_ref() {
                    let amount = u64::try_from(payment.amount).unwrap_or(u64::MAX);
                    self.metrics.count_accepted(route, &payment.item.network, &payment.item.asset, amount);
                }
                ctx.charged = true;
                ctx.outcome = PaymentOutcome::Charged;
                Ok((id, receipt_id))
            }
            Err(error @ JournalError::Duplicate(_)) => {
                ctx.journaled_before = true;
                tracing::error!(route, %error, "an authorization already journaled reached the upstream; refused");
                Err(Error::explain(ErrorType::HTTPStatus(402), "payment authorization already used"))
            }
            Err(error) => {
                tracing::error!(route, %error, "payment could not be journaled; response withheld, nobody charged");
                Err(Error::explain(ErrorType::HTTPStatus(503), "payment could not be recorded"))
            }
        }
    }

    /// A held voucher after the upstream answered: charged (durably, before the answer leaves)
    /// when the status is billable; otherwise given back in `logging`.
    async fn charge_voucher(&self, route: &str, pricing: &Pricing, status: u16, response: &mut ResponseHeader, ctx: &mut RequestContext) -> Result<()> {
        if !pricing.is_billable(status) {
            return Ok(());
        }
        if !self.drain.may_charge() {
            tracing::warn!(route, request_id = %ctx.request_id, "shutting down: voucher not charged, response withheld");
            return Err(Error::explain(SHUTTING_DOWN, "payment not charged"));
        }
        let Some(held) = ctx.voucher.take() else { return Ok(()) };
        self.metrics.channel_in_flight.dec();
        let payer = held.payer.clone();
        match self.channels.charge(held).await {
            Ok(charged) => {
                self.metrics.channel_vouchers.with_label_values(&[route]).inc();
                ctx.charged = true;
                ctx.outcome = PaymentOutcome::Charged;
                let (name, value) = charged.header;
                response.insert_header(name, value)?;
                response.insert_header("Access-Control-Expose-Headers", challenge::EXPOSE_HEADERS)?;
                tracing::info!(route, payer, charged = %charged.record.charged, channel = %alloy_primitives::B256::from(charged.record.id), "voucher charged");
                Ok(())
            }
            Err(error) => {
                tracing::error!(route, payer, %error, "voucher not charged; response withheld");
                Err(Error::explain(ErrorType::HTTPStatus(503), "payment could not be recorded"))
            }
        }
    }

    fn guards(&self) -> payment::PaymentGuards<'_> {
        payment::PaymentGuards { ledger: self.ledger.as_ref(), shared_journal: None }
    }

    /// Whether a journal write whose caller went away committed anyway: the payment is then
    /// charged and unsettled, and nothing of it may be released. Unknown counts as charged.
    fn journaled_after_all(&self, ctx: &mut RequestContext) -> bool {
        let Some(receipt_id) = ctx.charge_pending.as_deref() else { return false };
        let journaled = self.journal.by_receipt(receipt_id).map_or(true, |record| record.is_some());
        if journaled {
            tracing::warn!(receipt = receipt_id, "a payment was journaled while its request failed; it stays charged");
            ctx.charged = true;
            ctx.outcome = PaymentOutcome::Charged;
        }
        journaled
    }

    /// Releases what a payment nobody was charged for held. Its authorization is freed for
    /// reuse only when the upstream did no billable work for it: the connection was refused,
    /// or the upstream itself answered with a status that is not billable. A client that hangs
    /// up, or an upstream that times out, leaves it used up until its `validBefore`, so one
    /// signature cannot make the upstream work again and again.
    async fn release_uncharged(&self, ctx: &mut RequestContext) {
        if let Some(held) = ctx.voucher.take() {
            self.metrics.channel_in_flight.dec();
            // Nothing charged: the channel's next voucher repeats the amount.
            self.channels.release(held).await;
        }
        let Some(payment) = ctx.payment.take() else { return };
        if ctx.charged || self.journaled_after_all(ctx) {
            return;
        }
        let spent = ctx.journaled_before || ctx.upstream_did_work();
        if spent && !ctx.journaled_before {
            ctx.outcome = PaymentOutcome::Spent;
        }
        payment::release_payment(&payment, &self.guards(), spent).await;
    }
}

#[async_trait]
impl ProxyHttp for PaywallProxy {
    type CTX = RequestContext;

    fn new_ctx(&self) -> RequestContext {
        RequestContext {
            config: None,
            route: None,
            upstream: None,
            payment: None,
            charged: false,
            journaled_before: false,
            settled_before: None,
            connect_attempts: 0,
            reached_upstream: false,
            upstream_status: None,
            charged_up_front: None,
            charge_pending: None,
            started: Instant::now(),
            request_id: String::new(),
            outcome: PaymentOutcome::None,
            upstream_sent: None,
            canonical_path: None,
            in_flight: None,
            voucher: None,
        }
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut RequestContext) -> Result<()> {
        ctx.in_flight = self.drain.enter();
        if ctx.in_flight.is_none() {
            // Read after the shutdown drain closed: nothing is reserved for it, so closing it
            // unanswered (status 0 in `fail_to_proxy`) leaves its payment good for a retry.
            tracing::info!(path = %session.req_header().uri.path(), "shutting down: request closed unserved");
            return Err(Error::explain(ErrorType::ConnectionClosed, "the gateway is shutting down").into_down());
        }
        close_connection_when_stopping(&self.drain, session);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestContext) -> Result<bool> {
        ctx.request_id = self.request_ids.for_request(session.req_header());
        let config = self.config.load_full();
        let mut answer = match self.admit(&config, session.req_header(), ctx) {
            Admission::Answer(response) => Some(response),
            Admission::Forward => None,
            Admission::Recover { check, started } => self.verify_signature(&config, session.req_header(), check, started, ctx).await,
            Admission::Channel { payment, offer } => self.hold_channel_payment(&config, session.req_header(), payment, offer, ctx).await,
            Admission::ReceiptElsewhere { receipt_id } => Some(self.receipt_elsewhere(&receipt_id).await),
        };
        ctx.config = Some(config.clone());
        if answer.is_none() && Self::route(&config, ctx).is_some_and(|(_, p)| p.settle == SettleMode::Before) {
            answer = self.settle_before(&config, session.req_header(), ctx).await;
        }
        match answer {
            Some(mut response) => {
                response.headers.push((REQUEST_ID, ctx.request_id.clone()));
                write_local_response(session, response).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut RequestContext) -> Result<Box<HttpPeer>> {
        let config = ctx.config.as_ref().ok_or_else(|| Error::explain(ErrorType::InternalError, "no config snapshot"))?;
        let upstream = &config.upstreams[ctx.upstream.ok_or_else(|| Error::explain(ErrorType::InternalError, "no upstream chosen"))?];
        ctx.connect_attempts += 1;
        let backend = upstream
            .backends
            .select(b"", 256)
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, format!("upstream {} has no servers", upstream.name)))?;
        let sni = upstream.sni.clone().unwrap_or_default();
        let mut peer = HttpPeer::new(backend.addr, upstream.tls, sni);
        peer.options.connection_timeout = Some(upstream.connect_timeout);
        peer.options.read_timeout = Some(upstream.read_timeout);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(&self, _session: &mut Session, _peer: &HttpPeer, ctx: &mut RequestContext, mut e: Box<Error>) -> Box<Error> {
        // Another server of the same upstream may answer: try each once.
        let servers = ctx.config.as_ref().zip(ctx.upstream).map_or(1, |(c, u)| c.upstreams[u].addresses.len());
        if ctx.connect_attempts < servers {
            e.set_retry(true);
        }
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        self.charge_before_forwarding(ctx).await?;
        ctx.reached_upstream = true;
        Ok(())
    }

    fn error_while_proxy(&self, peer: &HttpPeer, session: &mut Session, e: Box<Error>, ctx: &mut RequestContext, client_reused: bool) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        // A paid request the upstream may already have worked on is never sent again: one
        // payment, one upstream call.
        if ctx.payment.is_some() || !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated() {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn upstream_request_filter(&self, session: &mut Session, upstream_request: &mut RequestHeader, ctx: &mut RequestContext) -> Result<()> {
        ctx.upstream_sent = Some(Instant::now());
        forward_canonical_target(upstream_request, ctx.canonical_path.as_deref())?;
        upstream_request.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
        upstream_request.remove_header(x402::headers::PAYMENT_SIGNATURE);
        upstream_request.remove_header(x402::headers::X_PAYMENT);
        if let Some(config) = ctx.config.as_ref() {
            for name in &config.requests.strip_headers {
                upstream_request.remove_header(name);
            }
        }
        if let Some(client) = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip().to_string()) {
            let forwarded = match upstream_request.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                Some(previous) => format!("{previous}, {client}"),
                None => client,
            };
            upstream_request.insert_header("X-Forwarded-For", forwarded)?;
        }
        match upstream_request.headers.get("via").and_then(|v| v.to_str().ok()) {
            Some(previous) => upstream_request.insert_header("Via", format!("{previous}, {VIA}"))?,
            None => upstream_request.insert_header("Via", http::HeaderValue::from_static(VIA))?,
        }
        Ok(())
    }

    async fn upstream_response_filter(&self, _session: &mut Session, response: &mut ResponseHeader, ctx: &mut RequestContext) -> Result<()> {
        // A 100 Continue or 103 Early Hints is not the upstream's answer: it has not declined
        // the request, and may be working on it still.
        let status = response.status.as_u16();
        if status >= 200 || status == 101 {
            ctx.upstream_status = Some(status);
        }
        Ok(())
    }

    async fn response_filter(&self, session: &mut Session, response: &mut ResponseHeader, ctx: &mut RequestContext) -> Result<()> {
        close_connection_when_stopping(&self.drain, session);
        response.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
        let Some(config) = ctx.config.clone() else { return Ok(()) };
        if let Some(sent) = ctx.upstream_sent {
            let route = ctx.route.map_or(UNMATCHED, |r| config.routes[r].name.as_str());
            self.metrics.upstream_latency.with_label_values(&[route]).observe(sent.elapsed().as_secs_f64());
        }
        let Some((route, pricing)) = Self::route(&config, ctx) else { return Ok(()) };
        let status = response.status.as_u16();
        if response.status.is_informational() && status != 101 {
            return Ok(());
        }
        if ctx.voucher.is_some() {
            return self.charge_voucher(&route.name, pricing, status, response, ctx).await;
        }
        let (receipt_id, transaction) = match (ctx.settled_before.clone(), ctx.charged_up_front.clone()) {
            // Paid on-chain before the upstream was called, whatever it answered.
            (Some((receipt_id, transaction)), _) => (receipt_id, Some(transaction)),
            // Journaled before forwarding (`charge_on: forward`), whatever it answered.
            (None, Some(receipt_id)) => (receipt_id, None),
            // A switch to another protocol is charged before the 101 leaves: the tunnel it
            // opens is what was paid for.
            (None, None) if !ctx.charged && ctx.payment.is_some() && (pricing.is_billable(status) || (status == 101 && pricing.upgrades == UpgradePolicy::Charge)) => {
                (self.record_payment(&route.name, ctx).await?.1, None)
            }
            (None, None) => return Ok(()),
        };
        let Some(payment) = ctx.payment.as_ref() else { return Ok(()) };
        let (name, value) = payment::receipt_header(payment, &receipt_id, transaction.as_deref());
        response.insert_header(name, value)?;
        response.insert_header("Access-Control-Expose-Headers", challenge::EXPOSE_HEADERS)?;
        tracing::info!(route = %route.name, payer = %payment.payer, amount = %payment.amount, receipt = %receipt_id, "payment accepted");
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestContext) -> FailToProxy {
        let (status, reason, message) = failure_answer(e);
        if ctx.payment.is_some() && !ctx.charged {
            self.journaled_after_all(ctx);
        }
        if status > 0 {
            let paid = match (&ctx.payment, ctx.charged) {
                _ if e.etype() == &SHUTTING_DOWN => "",
                (Some(_), false) if ctx.upstream_did_work() => {
                    " Your payment was not charged, but the upstream received the request, so its authorization is used up: sign a new payment to retry."
                }
                (Some(_), false) => " Your payment was not charged.",
                (Some(_), true) if ctx.settled_before.is_some() => " Your payment was settled before the request was forwarded.",
                (Some(_), true) => " Your payment was charged when the request was forwarded (the route charges on forward); its receipt is in PAYMENT-RESPONSE.",
                _ => "",
            };
            let body = serde_json::json!({"error": reason, "message": format!("{message}.{paid}")});
            let mut response = challenge::json_response(status, &body);
            response.headers.push((REQUEST_ID, ctx.request_id.clone()));
            if let (Some(receipt_id), Some(payment)) = (ctx.charged_up_front.as_deref(), ctx.payment.as_ref()) {
                response.headers.push(payment::receipt_header(payment, receipt_id, None));
            }
            if let Err(error) = write_local_response(session, response).await {
                tracing::debug!(%error, "could not send the error response");
            }
        }
        FailToProxy { error_code: status, can_reuse_downstream: false }
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut RequestContext) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let config = ctx.config.clone();
        let route = config.as_deref().zip(ctx.route).map_or(UNMATCHED, |(c, r)| c.routes[r].name.as_str());
        let upstream = config.as_deref().zip(ctx.upstream).map_or("", |(c, u)| c.upstreams[u].name.as_str());
        self.metrics.count_request(route, status);
        let (payer, amount) = ctx.payment.as_ref().map_or((String::new(), String::new()), |p| (p.payer.clone(), p.amount.to_string()));
        let reason = match ctx.outcome {
            PaymentOutcome::Refused(reason) => reason.as_str(),
            _ => "",
        };
        self.release_uncharged(ctx).await;
        let req = session.req_header();
        tracing::info!(
            target: "access",
            request_id = %ctx.request_id,
            method = %req.method,
            path = %req.uri.path(),
            route,
            upstream,
            status,
            latency_us = u64::try_from(ctx.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            bytes_sent = session.body_bytes_sent(),
            payment = ctx.outcome.as_str(),
            reason,
            payer,
            amount,
            error = error.map(|e| e.to_string()),
        );
    }
}

/// Once a stop or a hand-over was asked for, a response ends its connection: a client that
/// reused it could otherwise send its next request just as the process closes it.
fn close_connection_when_stopping(drain: &Drain, session: &mut Session) {
    if drain.is_stopping() {
        session.set_keepalive(None);
    }
}

async fn write_local_response(session: &mut Session, response: LocalResponse) -> Result<()> {
    let mut header = ResponseHeader::build(response.status, Some(response.headers.len() + 1))?;
    for (name, value) in response.headers {
        header.insert_header(name, value)?;
    }
    header.insert_header("Content-Length", response.body.len().to_string())?;
    session.write_response_header(Box::new(header), false).await?;
    session.write_response_body(Some(Bytes::from(response.body)), true).await
}

const REQUEST_ID: &str = "X-Request-Id";
/// The `route` label of requests no route matched.
const UNMATCHED: &str = "(unmatched)";

/// What this hop adds to `Via` (RFC 9110 §7.6.3).
const VIA: &str = "1.1 x402-gateway";

/// A payment reached the point of being charged after the shutdown drain closed.
const SHUTTING_DOWN: ErrorType = ErrorType::Custom("shutting_down");

/// Request ids: the client's own when it is a sane token, otherwise a fresh one that is
/// unique in this process and unlikely to repeat across processes.
pub struct RequestIds {
    prefix: String,
    next: std::sync::atomic::AtomicU64,
}

impl RequestIds {
    pub fn new() -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let seed = alloy_primitives::keccak256([nanos.to_be_bytes().as_slice(), &std::process::id().to_be_bytes()].concat());
        Self { prefix: alloy_primitives::hex::encode(&seed[..6]), next: std::sync::atomic::AtomicU64::new(1) }
    }

    fn for_request(&self, req: &RequestHeader) -> String {
        match header_str(req, REQUEST_ID) {
            Some(id) if is_usable_request_id(id) => id.to_owned(),
            _ => format!("{}-{:x}", self.prefix, self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
        }
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

/// Printable, without spaces or quotes, and short: it goes into logs and upstream headers.
fn is_usable_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b))
}

/// The JSON answer for an error raised while handling a payment.
fn error_response(e: &Error) -> LocalResponse {
    let (status, reason, message) = failure_answer(e);
    challenge::json_response(status, &serde_json::json!({"error": reason, "message": message}))
}

/// Status, reason code and message for a request that failed on its way through.
fn failure_answer(e: &Error) -> (u16, &'static str, String) {
    match (e.etype(), e.esource()) {
        (ErrorType::HTTPStatus(402), _) => (402, "invalid_exact_evm_nonce_already_used", "This payment authorization was already used".into()),
        (ErrorType::HTTPStatus(503), _) => (503, "payment_not_recorded", "The payment could not be recorded, so the response was withheld".into()),
        (&SHUTTING_DOWN, _) => (503, "shutting_down", "The gateway is shutting down, so the response was withheld. Your payment was not charged and nothing of it is kept: send it again".into()),
        (ErrorType::HTTPStatus(code), _) => (*code, "error", e.to_string()),
        (ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout, ErrorSource::Upstream) => {
            (504, "upstream_timeout", "The upstream did not answer in time".into())
        }
        (_, ErrorSource::Upstream) => (502, "upstream_unavailable", "The upstream could not be reached or broke the connection".into()),
        (ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed, ErrorSource::Downstream) => (0, "", String::new()),
        (_, ErrorSource::Downstream) => (400, "bad_request", "The request could not be read".into()),
        _ => (500, "internal_error", "The gateway failed to handle the request".into()),
    }
}

fn header_str<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

fn request_host(req: &RequestHeader) -> Option<&str> {
    target_authority(req).or_else(|| header_str(req, "host"))
}

/// The authority of an absolute-form target (`GET http://host/path`). Pingora keeps such a
/// target verbatim as the raw path, and its `Uri` only the path.
fn target_authority(req: &RequestHeader) -> Option<&str> {
    let raw = std::str::from_utf8(req.raw_path()).ok()?;
    let (_scheme, rest) = raw.split_once("://")?;
    rest.split(['/', '?']).next().filter(|authority| !authority.is_empty())
}

/// The request's canonical path and the host it is routed by; see [`canonical`].
fn canonical_target<'a>(config: &Config, req: &'a RequestHeader) -> Result<(CanonicalPath<'a>, Option<&'a str>), TargetRefusal> {
    let path = canonical::canonical_path(req.uri.path(), config.requests.path_params)?;
    let host = canonical::request_host(target_authority(req), header_str(req, "host"), config.requests.host_routes)?;
    Ok((path, host))
}

fn refused_target(refusal: TargetRefusal) -> LocalResponse {
    tracing::debug!(reason = refusal.code(), error = %refusal, "request target refused");
    challenge::json_response(400, &serde_json::json!({"error": refusal.code(), "message": refusal.to_string()}))
}

/// Forwards what was matched: the canonical path with the client's query untouched, in
/// origin form. An absolute-form target's authority was the matched host, so it becomes
/// the `Host` the upstream sees.
fn forward_canonical_target(upstream_request: &mut RequestHeader, canonical_path: Option<&str>) -> Result<()> {
    let origin_form = upstream_request.raw_path().first() == Some(&b'/');
    if canonical_path.is_none() && origin_form {
        return Ok(());
    }
    let authority = target_authority(upstream_request).map(str::to_owned);
    let path = canonical_path.unwrap_or_else(|| upstream_request.uri.path());
    let target = match upstream_request.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let uri = http::Uri::try_from(target).map_err(|e| Error::because(ErrorType::InternalError, "canonical target is not a URI", e))?;
    upstream_request.set_uri(uri);
    if let Some(authority) = authority {
        upstream_request.insert_header(http::header::HOST, authority)?;
    }
    Ok(())
}

/// The URL the client asked for, as the challenge's `resource.url`.
fn resource_url(req: &RequestHeader, host: Option<&str>) -> String {
    let scheme = match header_str(req, "x-forwarded-proto") {
        Some("https") => "https",
        _ => "http",
    };
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
    format!("{scheme}://{}{path}", host.unwrap_or("localhost"))
}
