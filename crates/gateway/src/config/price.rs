//! Prices: a dollar string such as `"$0.001"` becomes atomic units of a token with
//! `decimals` decimals, exactly, with integer arithmetic only.

use alloy_primitives::U256;

/// Resolves `"$<decimal>"` to atomic units. More fractional digits than the token has is
/// an error, never a rounding.
pub fn dollars_to_atomic(price: &str, decimals: u8) -> Result<U256, String> {
    let amount = price
        .trim()
        .strip_prefix('$')
        .ok_or_else(|| format!("price {price:?} must start with '$' (or use `amount` in atomic units)"))?;
    let (whole, fraction) = amount.split_once('.').unwrap_or((amount, ""));
    let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !digits_ok(whole) || !digits_ok(fraction) {
        return Err(format!("price {price:?} is not a plain decimal like \"$0.001\""));
    }
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > usize::from(decimals) {
        return Err(format!("price {price:?} has more decimal places than the asset's {decimals}"));
    }
    let padded = format!("{whole}{fraction:0<width$}", width = usize::from(decimals));
    let padded = padded.trim_start_matches('0');
    let atomic = if padded.is_empty() {
        U256::ZERO
    } else {
        U256::from_str_radix(padded, 10).map_err(|_| format!("price {price:?} is too large"))?
    };
    if atomic.is_zero() {
        return Err(format!("price {price:?} is zero; mark the route `free: true` instead"));
    }
    Ok(atomic)
}

/// Parses an atomic amount (a positive decimal integer string).
pub fn parse_atomic(amount: &str) -> Result<U256, String> {
    if amount.is_empty() || amount.len() > 78 || !amount.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("amount {amount:?} must be a positive integer in atomic units"));
    }
    let value = U256::from_str_radix(amount, 10).map_err(|_| format!("amount {amount:?} is too large"))?;
    if value.is_zero() {
        return Err("amount is zero; mark the route `free: true` instead".into());
    }
    Ok(value)
}

/// Formats atomic units as dollars, for people (`1000` with 6 decimals is `$0.001`).
pub fn atomic_to_dollars(atomic: U256, decimals: u8) -> String {
    let digits = atomic.to_string();
    let decimals = usize::from(decimals);
    let padded = format!("{digits:0>width$}", width = decimals + 1);
    let (whole, fraction) = padded.split_at(padded.len() - decimals);
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        format!("${whole}")
    } else {
        format!("${whole}.{fraction}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_prices_resolve_exactly() {
        assert_eq!(dollars_to_atomic("$0.001", 6), Ok(U256::from(1000u64)));
        assert_eq!(dollars_to_atomic("$1", 6), Ok(U256::from(1_000_000u64)));
        assert_eq!(dollars_to_atomic("$12.5", 6), Ok(U256::from(12_500_000u64)));
        assert_eq!(dollars_to_atomic("$.000001", 6), Ok(U256::from(1u64)));
        assert_eq!(dollars_to_atomic("$0.100000", 6), Ok(U256::from(100_000u64)));
        assert_eq!(dollars_to_atomic("$0.1", 18), Ok(U256::from(100_000_000_000_000_000u64)));
    }

    #[test]
    fn bad_prices_are_refused_not_rounded() {
        for bad in ["0.001", "$0.0000001", "$", "$.", "$1e-3", "$-1", "$0", "$0.000", "$1,000", "$ 1"] {
            assert!(dollars_to_atomic(bad, 6).is_err(), "{bad}");
        }
    }

    #[test]
    fn atomic_amounts_are_positive_integers() {
        assert_eq!(parse_atomic("1000"), Ok(U256::from(1000u64)));
        for bad in ["", "0", "-1", "1.5", "0x10", " 1"] {
            assert!(parse_atomic(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dollars_format_back() {
        assert_eq!(atomic_to_dollars(U256::from(1000u64), 6), "$0.001");
        assert_eq!(atomic_to_dollars(U256::from(2_000_000u64), 6), "$2");
        assert_eq!(atomic_to_dollars(U256::from(1u64), 0), "$1");
    }
}
