//! Gas limits for settlement batches: `eth_estimateGas` now and then, the gas per payment it
//! taught in between.
//!
//! An estimate of a full batch makes the node execute it several times over (a search for
//! the lowest limit that succeeds): measured on the dev chain, 85% of the time it took to
//! prepare a batch of 330 payments, and what capped settlement at ~300 payments/s. Payments
//! of one scheme on one token cost nearly the same gas each, so after an estimate the limit
//! is predicted from the batch's size, with the same headroom as over an estimate. The
//! prediction is dropped, and the next batch estimated, after a fixed number of batches and
//! whenever a mined batch says it was off: a revert, a payment the batch did not pay, or
//! gas used close to the limit.

/// Headroom over an estimate (or a prediction) for state that changes before inclusion: +25%.
const HEADROOM_NUMERATOR: u64 = 5;
const HEADROOM_DENOMINATOR: u64 = 4;
/// Gas a batch costs besides its payments (the transaction, the multicall's loop): counted
/// once in a prediction so that a small batch is not under-provisioned.
pub const BATCH_OVERHEAD: u64 = 60_000;
/// Batches sent on a prediction before the next one is estimated again.
pub const REESTIMATE_EVERY_BATCHES: u32 = 32;
/// A mined batch that used more than this share of its limit (in percent) means the
/// prediction runs too close: the next batch is estimated.
const CLOSE_TO_LIMIT_PERCENT: u64 = 90;

/// What a network's batches are learned to cost.
#[derive(Debug, Default)]
pub struct GasModel {
    /// Gas per payment, from the last estimate (0: none yet).
    per_payment: u64,
    batches_since_estimate: u32,
    /// A mined batch said the prediction is off.
    distrusted: bool,
}

impl GasModel {
    /// Gas per payment learned so far, if any.
    pub fn per_payment(&self) -> Option<u64> {
        (self.per_payment > 0).then_some(self.per_payment)
    }

    /// The gas limit for a batch of `payments` without an estimate, or `None` when this batch
    /// must be estimated.
    pub fn predict(&self, payments: usize) -> Option<u64> {
        let per_payment = self.per_payment()?;
        if self.distrusted || self.batches_since_estimate >= REESTIMATE_EVERY_BATCHES {
            return None;
        }
        let payments = u64::try_from(payments).ok()?;
        let gas = per_payment.checked_mul(payments)?.checked_add(BATCH_OVERHEAD)?;
        Some(with_headroom(gas))
    }

    /// The gas limit for an estimate of `estimate` over `payments`, learning from it.
    pub fn estimated(&mut self, estimate: u64, payments: usize) -> u64 {
        let payments = u64::try_from(payments.max(1)).unwrap_or(u64::MAX);
        self.per_payment = estimate.div_ceil(payments);
        self.batches_since_estimate = 0;
        self.distrusted = false;
        with_headroom(estimate)
    }

    /// A batch went out with a predicted limit.
    pub fn predicted_sent(&mut self) {
        self.batches_since_estimate = self.batches_since_estimate.saturating_add(1);
    }

    /// What a mined batch tells: `all_paid` whether it paid every payment it carried.
    pub fn mined(&mut self, success: bool, all_paid: bool, gas_used: u64, gas_limit: u64) {
        let close = u128::from(gas_used) * 100 > u128::from(gas_limit) * u128::from(CLOSE_TO_LIMIT_PERCENT);
        if !success || !all_paid || close {
            self.distrusted = true;
        }
    }
}

fn with_headroom(gas: u64) -> u64 {
    gas.saturating_mul(HEADROOM_NUMERATOR) / HEADROOM_DENOMINATOR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_predicted_before_an_estimate() {
        assert_eq!(GasModel::default().predict(100), None);
    }

    #[test]
    fn after_an_estimate_a_batch_is_predicted_from_its_size_with_the_same_headroom() {
        let mut model = GasModel::default();
        assert_eq!(model.estimated(3_900_000, 100), 4_875_000);
        assert_eq!(model.per_payment(), Some(39_000));
        assert_eq!(model.predict(100), Some((3_900_000 + BATCH_OVERHEAD) * 5 / 4));
        assert_eq!(model.predict(10), Some((390_000 + BATCH_OVERHEAD) * 5 / 4), "a small batch keeps the overhead");
    }

    #[test]
    fn the_estimate_is_taken_again_every_so_many_batches() {
        let mut model = GasModel::default();
        model.estimated(3_900_000, 100);
        for _ in 0..REESTIMATE_EVERY_BATCHES {
            assert!(model.predict(100).is_some());
            model.predicted_sent();
        }
        assert_eq!(model.predict(100), None);
        model.estimated(4_000_000, 100);
        assert!(model.predict(100).is_some());
    }

    #[test]
    fn a_mined_batch_that_was_off_makes_the_next_one_estimated() {
        for (success, all_paid, gas_used) in [(false, true, 1_000), (true, false, 1_000), (true, true, 4_600_000)] {
            let mut model = GasModel::default();
            let limit = model.estimated(4_000_000, 100);
            model.mined(true, true, 4_000_000, limit);
            assert!(model.predict(100).is_some(), "a batch that used 4M of {limit} is fine");
            model.mined(success, all_paid, gas_used, limit);
            assert_eq!(model.predict(100), None, "success {success}, all paid {all_paid}, gas used {gas_used} of {limit}");
        }
    }
}
