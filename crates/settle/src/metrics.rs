//! What the settler reports to Prometheus: batches, gas, RPC errors, and value settled.
//! The owner registers them in its registry; a settler nobody registers still counts.

use prometheus::core::Collector;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

pub struct SettlementMetrics {
    /// Batches by network and outcome (`mined`, `reverted`, `unresolved`).
    pub batches: IntCounterVec,
    pub gas_used: IntCounterVec,
    /// Settlement rounds that failed on an RPC error, by network.
    pub rpc_errors: IntCounterVec,
    /// Payments by network and end state (`settled`, `failed`).
    pub payments: IntCounterVec,
    /// Atomic units settled, by route, network and asset.
    pub value_settled: IntCounterVec,
    /// Settlement transactions pending (signed, not yet seen mined), by network.
    pub in_flight: IntGaugeVec,
    /// Transactions replaced at their nonce with higher fees, by network.
    pub replacements: IntCounterVec,
    /// `batch-settlement` claim transactions by network and outcome (`mined`, `reverted`, `unconfirmed`, `unsent`).
    pub channel_claims: IntCounterVec,
    /// Gas used by mined claim transactions, by network.
    pub channel_claim_gas: IntCounterVec,
    /// Atomic units the escrow paid to payTo through claims, by network and asset.
    pub channel_value_settled: IntCounterVec,
    /// Channel deposits the gateway sent, by network and outcome (`credited`, `refused`, `unconfirmed`, `unsent`).
    pub channel_deposits: IntCounterVec,
}

impl SettlementMetrics {
    pub fn new() -> Self {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|error| unreachable!("static metric {name}: {error}"))
        };
        Self {
            batches: counter("x402_settlement_batches_total", "Settlement transactions by outcome", &["network", "outcome"]),
            gas_used: counter("x402_settlement_gas_used_total", "Gas used by mined settlement transactions", &["network"]),
            rpc_errors: counter("x402_settlement_rpc_errors_total", "Settlement rounds that failed on an RPC error", &["network"]),
            payments: counter("x402_settlement_payments_total", "Payments that reached an end state", &["network", "state"]),
            value_settled: counter(
                "x402_value_settled_atomic_total",
                "Value settled on-chain, in the asset's atomic units",
                &["route", "network", "asset"],
            ),
            in_flight: IntGaugeVec::new(Opts::new("x402_settlement_transactions_in_flight", "Settlement transactions signed and not yet mined"), &["network"])
                .unwrap_or_else(|error| unreachable!("static metric: {error}")),
            replacements: counter("x402_settlement_replacements_total", "Settlement transactions replaced with higher fees", &["network"]),
            channel_claims: counter("x402_channel_claims_total", "batch-settlement claim transactions (claim + settle) by outcome", &["network", "outcome"]),
            channel_claim_gas: counter("x402_channel_claim_gas_used_total", "Gas used by mined batch-settlement claim transactions", &["network"]),
            channel_value_settled: counter(
                "x402_channel_value_settled_atomic_total",
                "Value the escrow paid to payTo through claims, in the asset's atomic units",
                &["network", "asset"],
            ),
            channel_deposits: counter("x402_channel_deposits_total", "Channel deposits sent for payers, by outcome", &["network", "outcome"]),
        }
    }

    /// Payments settled since the process started, on every network.
    pub fn settled_total(&self) -> u64 {
        let families = self.payments.collect();
        let metrics = families.iter().flat_map(|family| family.get_metric());
        let settled = metrics.filter(|metric| metric.get_label().iter().any(|label| label.name() == "state" && label.value() == "settled"));
        settled.map(|metric| metric.get_counter().get_value() as u64).sum()
    }

    /// Adds every metric to `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        let channel = [&self.channel_claims, &self.channel_claim_gas, &self.channel_value_settled, &self.channel_deposits];
        for metric in [&self.batches, &self.gas_used, &self.rpc_errors, &self.payments, &self.value_settled, &self.replacements].into_iter().chain(channel) {
            registry.register(Box::new(metric.clone()))?;
        }
        registry.register(Box::new(self.in_flight.clone()))?;
        Ok(())
    }
}

impl Default for SettlementMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_have_valid_names_and_register_once() {
        let registry = Registry::new();
        let metrics = SettlementMetrics::new();
        metrics.register(&registry).unwrap();
        metrics.value_settled.with_label_values(&["weather", "eip155:84532", "0xabc"]).inc_by(1000);
        let families = registry.gather();
        assert!(families.iter().any(|f| f.name() == "x402_value_settled_atomic_total"));
        assert!(metrics.register(&registry).is_err(), "a second registration must be refused");
        metrics.payments.with_label_values(&["eip155:1", "settled"]).inc_by(3);
        metrics.payments.with_label_values(&["eip155:2", "settled"]).inc();
        metrics.payments.with_label_values(&["eip155:1", "failed"]).inc();
        assert_eq!(metrics.settled_total(), 4);
    }
}
