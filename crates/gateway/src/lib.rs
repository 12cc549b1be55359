//! x402-gateway: a reverse proxy that puts x402 payments in front of unmodified HTTP APIs.
//!
//! - [`config`]: `gateway.yaml` → validated, precomputed [`config::Config`].
//! - [`inspect`]: the route table and the exact quote for a request, for operators.
//! - [`canonical`]: the canonical request target, what is matched and what is forwarded.
//! - [`routing`]: path patterns and route matching.
//! - [`balance`]: the optional payer balance check, read off the request path.
//! - [`challenge`]: the 402 answers (v2 header, v1 body, browser page).
//! - [`payment`]: from a request's payment header to a reserved, verified payment.
//! - [`channel_payment`]: the same for `batch-settlement` vouchers: channel held, deposit landed, charge after a billable answer.
//! - [`receipts`]: a journaled payment as the payer and the operator see it.
//! - [`proxy`]: the Pingora `ProxyHttp` implementation, one job per phase.
//! - [`reload`]: hot reload of `gateway.yaml` (file watch, SIGHUP, admin call), quotes honoured across it.
//! - [`metrics`]: the Prometheus metrics.
//! - [`admin`]: the admin API: health, readiness, metrics, reload, state, drain.
//! - [`server`]: wiring: the Pingora server, the settler thread, signals.
//! - [`drain`]: requests in flight waited for at shutdown, so a charged payment gets its response.
//! - [`upgrade`]: the graceful-upgrade window, when the journal is asked about fresh nonces.
//! - [`upkeep`]: prunes the journal past its retention, at start and periodically.

pub mod admin;
pub mod balance;
pub mod canonical;
pub mod challenge;
pub mod channel_exposure;
pub mod channel_payment;
pub mod config;
pub mod drain;
pub mod inspect;
pub mod metrics;
pub mod payment;
pub mod proxy;
pub mod receipts;
pub mod reload;
pub mod routing;
pub mod server;
pub mod upgrade;
pub mod upkeep;
pub mod verifier;
