//! Quantiles of a histogram between two readings of its cumulative buckets,
//! for the latency percentiles on the overview.

/// The `q` quantile of the observations between two readings of cumulative
/// buckets `(upper bound, count)`, ascending and ending at `+∞`, interpolated
/// within its bucket as Prometheus does; `None` when nothing was observed.
pub(crate) fn quantile(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, count)| {
            let old = before.iter().find(|(b, _)| b == le).map_or(0, |(_, c)| *c);
            (*le, count.saturating_sub(old) as f64)
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in &delta {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let span = count - lower.1;
            let within = if span > 0.0 { (rank - lower.1) / span } else { 1.0 };
            return Some(lower.0 + (le - lower.0) * within);
        }
        lower = (le, count);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let after = [(0.1, 50), (1.0, 100), (f64::INFINITY, 100)];
        let p50 = quantile(&[], &after, 0.5).unwrap();
        assert!((p50 - 0.1).abs() < 1e-9);
        let p99 = quantile(&[], &after, 0.99).unwrap();
        assert!(p99 > 0.9 && p99 <= 1.0);
        assert_eq!(quantile(&after, &after, 0.5), None);
    }

    #[test]
    fn only_observations_between_the_readings_count() {
        let before = [(0.1, 100), (1.0, 100), (f64::INFINITY, 100)];
        let after = [(0.1, 100), (1.0, 200), (f64::INFINITY, 200)];
        let p50 = quantile(&before, &after, 0.5).unwrap();
        assert!((p50 - 0.55).abs() < 1e-9, "{p50}");
    }
}
