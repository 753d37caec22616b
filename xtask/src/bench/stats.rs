//! Medians, percentiles and ratios.
use serde_json::{Value, json};

/// p50, p99 and max of `v`, with every run.
pub fn dist(v: &[f64]) -> Value {
    json!({"p50": median(v), "p99": quantile(v, 0.99), "max": quantile(v, 1.0), "runs": v})
}

/// The median of `v` (mean of the two middle values for an even count); 0 when empty.
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return 0.0;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Nearest-rank quantile `q` (0..=1) of `v`; 0 when empty.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return 0.0;
    }
    s.sort_by(f64::total_cmp);
    let rank = (q * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// `a / b`, or NaN-free 0 when `b` is 0.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}

/// Median over repeats of `a[r] / b[r]`: each setup against the baseline of the same repeat, so a
/// drift of the machine between repeats cancels out.
pub fn paired_ratio(a: &[f64], b: &[f64]) -> f64 {
    let v: Vec<f64> = a
        .iter()
        .zip(b)
        .filter(|(_, b)| **b != 0.0)
        .map(|(a, b)| a / b)
        .collect();
    median(&v)
}

/// Rotates `items` by `r`: repeat `r` runs the setups in a different order, so a slow drift of
/// the machine does not always penalise the same setup.
pub fn rotated<T: Clone>(items: &[T], r: usize) -> Vec<T> {
    let n = items.len().max(1);
    let mut v = items.to_vec();
    v.rotate_left(r % n);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_quantiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.0);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.99), 4.0);
        assert_eq!(rotated(&[1, 2, 3], 1), vec![2, 3, 1]);
    }
}
