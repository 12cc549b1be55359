//! The gateway's Prometheus metrics, served on the admin listener as text exposition.
//!
//! Counters and histograms are updated on the request path (lock-free atomics inside the
//! `prometheus` crate); gauges that describe state (queue depth, exposure, config) are
//! read when Prometheus scrapes, so the request path never pays for them. The one
//! exception, the verify queue's depth, is an atomic counted by the verifier itself: it
//! changes too fast to be read from anywhere else.

use prometheus::{Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use std::sync::Arc;
use x402_settle::SettlementMetrics;

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub upstream_latency: HistogramVec,
    pub challenges: IntCounterVec,
    pub payments_verified: IntCounterVec,
    pub payments_rejected: IntCounterVec,
    pub replay_rejections: IntCounterVec,
    pub value_accepted: IntCounterVec,
    pub settlement: Arc<SettlementMetrics>,
    pub queue_depth: IntGauge,
    pub oldest_unsettled_age: IntGauge,
    pub exposure_route: IntGaugeVec,
    pub exposure_total: IntGauge,
    /// 1 while the payment ledger answers (always, in process), 0 while its shared store does not.
    pub store_up: IntGauge,
    /// Store calls that failed or timed out (read from the ledger at scrape time).
    pub store_errors: IntCounter,
    pub losses_budget_used: IntGauge,
    pub settlement_stalled: IntGaugeVec,
    pub admission: AdmissionGauges,
    pub losses_total: IntGauge,
    pub reloads: IntCounterVec,
    pub last_reload_success: IntGauge,
    pub config_info: IntGaugeVec,
    pub verify_seconds: Histogram,
    pub verify_queue_depth: IntGauge,
    pub journal_pruned: IntCounterVec,
    pub channel_vouchers: IntCounterVec,
    pub channel_in_flight: IntGauge,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str, labels: &[&str]| IntCounterVec::new(Opts::new(name, help), labels);
        let latency_buckets = vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
        let metrics = Self {
            registry: Registry::new(),
            requests: counter("x402_requests_total", "Requests by route and response status", &["route", "status"])?,
            upstream_latency: HistogramVec::new(
                HistogramOpts::new("x402_upstream_latency_seconds", "Time from sending the request upstream to its response header")
                    .buckets(latency_buckets),
                &["route"],
            )?,
            challenges: counter("x402_challenges_total", "402 challenges issued to requests without a payment", &["route"])?,
            payments_verified: counter("x402_payments_verified_total", "Payments that passed verification", &["route"])?,
            payments_rejected: counter(
                "x402_payments_rejected_total",
                "Payments refused, by x402 reason code (settlement_stalled, settlement_backlog: priced requests refused before any payment was read)",
                &["route", "reason"],
            )?,
            replay_rejections: counter("x402_replay_rejections_total", "Payments refused because their authorization was already used", &["route"])?,
            value_accepted: counter(
                "x402_value_accepted_atomic_total",
                "Value charged (journaled for settlement), in the asset's atomic units",
                &["route", "network", "asset"],
            )?,
            settlement: Arc::new(SettlementMetrics::new()),
            queue_depth: IntGauge::new("x402_settlement_queue_depth", "Payments charged and not yet settled or failed")?,
            oldest_unsettled_age: IntGauge::new("x402_settlement_oldest_unsettled_age_seconds", "Age of the oldest unsettled payment (0: none)")?,
            exposure_route: IntGaugeVec::new(Opts::new("x402_exposure_usd_micros", "Unsettled value per route, in micro-USD"), &["route"])?,
            exposure_total: IntGauge::new("x402_exposure_total_usd_micros", "Unsettled value in total, in micro-USD")?,
            store_up: IntGauge::new("x402_store_up", "1 while the payment ledger's store answers; 0 while priced routes answer 503 store_unavailable")?,
            store_errors: IntCounter::new("x402_store_errors_total", "Calls to the shared payment store that failed or did not answer in time")?,
            settlement_stalled: IntGaugeVec::new(Opts::new("x402_settlement_stalled", "1 while settlement is stalled and priced routes refuse payments, labelled with the cause"), &["cause"])?,
            admission: AdmissionGauges::new()?,
            losses_budget_used: IntGauge::new("x402_loss_budget_used_usd_micros", "Served-but-unpaid value still counting against the loss budget, in micro-USD")?,
            losses_total: IntGauge::new("x402_losses_usd_micros", "Served-but-unpaid value since the process started (failed or expired settlements), in micro-USD")?,
            reloads: counter("x402_config_reloads_total", "Config reloads by outcome (success, failure)", &["outcome"])?,
            last_reload_success: IntGauge::new("x402_config_last_reload_success_timestamp_seconds", "When the serving config was loaded")?,
            config_info: IntGaugeVec::new(Opts::new("x402_config_info", "The serving config's hash (value 1)"), &["hash"])?,
            verify_seconds: Histogram::with_opts(
                HistogramOpts::new("x402_payment_verify_seconds", "Time to decode, verify and reserve a payment, waiting for a verify thread included")
                    .buckets(vec![0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005]),
            )?,
            verify_queue_depth: IntGauge::new(
                "x402_verify_queue_depth",
                "Payments waiting for a verify thread; at server.verify_queue new payments get 503",
            )?,
            journal_pruned: counter("x402_journal_pruned_rows_total", "Rows the journal's upkeep deleted past retention, by table", &["table"])?,
            channel_vouchers: counter("x402_channel_vouchers_total", "batch-settlement vouchers charged (one per billable response)", &["route"])?,
            channel_in_flight: IntGauge::new(
                "x402_channel_requests_in_flight",
                "batch-settlement requests holding their channel (a second voucher on a held channel gets 402 channel_busy)",
            )?,
        };
        metrics.register_all()?;
        Ok(metrics)
    }

    fn register_all(&self) -> prometheus::Result<()> {
        let registry = &self.registry;
        for metric in [&self.requests, &self.challenges, &self.payments_verified, &self.payments_rejected, &self.replay_rejections, &self.value_accepted, &self.reloads, &self.journal_pruned, &self.channel_vouchers] {
            registry.register(Box::new(metric.clone()))?;
        }
        for gauge in [&self.queue_depth, &self.oldest_unsettled_age, &self.exposure_total, &self.store_up, &self.losses_budget_used, &self.losses_total, &self.last_reload_success, &self.verify_queue_depth, &self.channel_in_flight] {
            registry.register(Box::new(gauge.clone()))?;
        }
        registry.register(Box::new(self.store_errors.clone()))?;
        registry.register(Box::new(self.exposure_route.clone()))?;
        registry.register(Box::new(self.settlement_stalled.clone()))?;
        self.admission.register(registry)?;
        registry.register(Box::new(self.config_info.clone()))?;
        registry.register(Box::new(self.upstream_latency.clone()))?;
        registry.register(Box::new(self.verify_seconds.clone()))?;
        self.settlement.register(registry)
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(%error, "cannot encode metrics");
        }
        out
    }

    /// Marks `hash` as the serving config.
    pub fn set_config(&self, hash: &str, loaded_at: u64) {
        self.config_info.reset();
        self.config_info.with_label_values(&[hash]).set(1);
        self.last_reload_success.set(i64::try_from(loaded_at).unwrap_or(i64::MAX));
    }

    pub fn count_request(&self, route: &str, status: u16) {
        // `StatusCode::as_str` is a static string: no allocation per request. 0: no response.
        let status = http::StatusCode::from_u16(status);
        self.requests.with_label_values(&[route, status.as_ref().map_or("0", http::StatusCode::as_str)]).inc();
    }

    pub fn count_accepted(&self, route: &str, network: &str, asset: &str, amount: u64) {
        self.value_accepted.with_label_values(&[route, network, asset]).inc_by(amount);
    }
}

/// Admission by settlement capacity, per network (CAIP-2 id), read from the admission guard
/// at scrape time.
pub struct AdmissionGauges {
    pub backlog: IntGaugeVec,
    pub capacity: GaugeVec,
    pub backlog_seconds: GaugeVec,
    pub threshold_seconds: GaugeVec,
    pub refusing: IntGaugeVec,
}

impl AdmissionGauges {
    fn new() -> prometheus::Result<Self> {
        let gauge = |name: &str, help: &str| GaugeVec::new(Opts::new(name, help), &["network"]);
        let int_gauge = |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), &["network"]);
        Ok(Self {
            backlog: int_gauge("x402_settlement_backlog", "Payments accepted and not yet settled or failed")?,
            capacity: gauge(
                "x402_settlement_capacity_per_second",
                "Payments settled per second while a full batch was waiting (a prior until measured)",
            )?,
            backlog_seconds: gauge("x402_settlement_backlog_seconds", "Estimated time to settle the backlog at the measured capacity (+Inf: nothing settles)")?,
            threshold_seconds: gauge(
                "x402_settlement_admission_threshold_seconds",
                "Above this backlog_seconds priced routes answer 503 settlement_backlog",
            )?,
            refusing: int_gauge("x402_settlement_admission_refusing", "1 while priced routes on this network refuse new payments for the backlog")?,
        })
    }

    fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        for gauge in [&self.capacity, &self.backlog_seconds, &self.threshold_seconds] {
            registry.register(Box::new(gauge.clone()))?;
        }
        registry.register(Box::new(self.backlog.clone()))?;
        registry.register(Box::new(self.refusing.clone()))
    }

    /// Shows `states` (by network) as they are now.
    pub fn set(&self, states: &std::collections::BTreeMap<String, x402_settle::admission::NetworkAdmission>) {
        for (network, state) in states {
            let labels = [network.as_str()];
            self.backlog.with_label_values(&labels).set(i64::try_from(state.backlog).unwrap_or(i64::MAX));
            self.capacity.with_label_values(&labels).set(state.capacity.per_second);
            self.backlog_seconds.with_label_values(&labels).set(state.backlog_secs);
            self.threshold_seconds.with_label_values(&labels).set(state.threshold_secs.unwrap_or(f64::INFINITY));
            self.refusing.with_label_values(&labels).set(i64::from(state.refusal.is_some()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_numeric_status_and_zero_when_nothing_was_sent() {
        let metrics = Metrics::new().unwrap();
        metrics.count_request("weather", 402);
        metrics.count_request("weather", 402);
        metrics.count_request("weather", 0);
        assert_eq!(metrics.requests.with_label_values(&["weather", "402"]).get(), 2);
        assert_eq!(metrics.requests.with_label_values(&["weather", "0"]).get(), 1);
    }
}
