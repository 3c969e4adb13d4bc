//! Reading the Prometheus text exposition: rows for the metrics page, and
//! histogram buckets for the latency percentiles on the overview.

use std::collections::HashMap;

/// One sample line of the exposition, with its family's HELP and TYPE.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MetricRow {
    /// The sample's name (`herald_x_total`, `herald_y_bucket`…).
    pub name: String,
    /// The family's type (counter, gauge, histogram, summary, untyped).
    pub kind: String,
    /// The family's HELP text.
    pub help: String,
    /// The labels as written (`{le="0.5"}`), or empty.
    pub labels: String,
    /// The value.
    pub value: f64,
}

/// Parses exposition text into rows, skipping malformed lines.
pub fn parse_exposition(text: &str) -> Vec<MetricRow> {
    let mut help: HashMap<&str, &str> = HashMap::new();
    let mut kind: HashMap<&str, &str> = HashMap::new();
    let mut rows = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, text)) = rest.split_once(' ') {
                help.insert(name, text);
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, text)) = rest.split_once(' ') {
                kind.insert(name, text);
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (name, labels) = match series.find('{') {
            Some(at) => (&series[..at], &series[at..]),
            None => (series, ""),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|base| kind.contains_key(base)))
            .unwrap_or(name);
        rows.push(MetricRow {
            name: name.to_owned(),
            kind: kind.get(family).copied().unwrap_or("untyped").to_owned(),
            help: help.get(family).copied().unwrap_or_default().to_owned(),
            labels: labels.to_owned(),
            value,
        });
    }
    rows
}

/// The cumulative buckets `(le, count)` of histogram `family`, summed over
/// label sets other than `le`, in ascending `le` order.
pub(crate) fn buckets(rows: &[MetricRow], family: &str) -> Vec<(f64, f64)> {
    let bucket_name = format!("{family}_bucket");
    let mut by_le: Vec<(f64, f64)> = Vec::new();
    for row in rows.iter().filter(|r| r.name == bucket_name) {
        let Some(le) = row.labels.split("le=\"").nth(1).and_then(|s| s.split('"').next()) else { continue };
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) };
        match by_le.iter_mut().find(|(b, _)| *b == le) {
            Some((_, count)) => *count += row.value,
            None => by_le.push((le, row.value)),
        }
    }
    by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
    by_le
}

/// The `q` quantile of the observations between two cumulative bucket
/// snapshots, interpolated within its bucket as Prometheus does; `None`
/// when nothing was observed.
pub(crate) fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, count)| {
            let old = before.iter().find(|(b, _)| b == le).map_or(0.0, |(_, c)| *c);
            (*le, (count - old).max(0.0))
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

    const TEXT: &str = "# HELP herald_x_total Things.\n# TYPE herald_x_total counter\nherald_x_total{kind=\"a\"} 3\n\
# HELP herald_lat_seconds Latency.\n# TYPE herald_lat_seconds histogram\n\
herald_lat_seconds_bucket{le=\"0.1\"} 50\nherald_lat_seconds_bucket{le=\"1\"} 100\nherald_lat_seconds_bucket{le=\"+Inf\"} 100\n\
herald_lat_seconds_sum 20\nherald_lat_seconds_count 100\n";

    #[test]
    fn rows_carry_their_family_help_and_type() {
        let rows = parse_exposition(TEXT);
        assert_eq!(rows.len(), 6);
        assert_eq!((rows[0].kind.as_str(), rows[0].help.as_str(), rows[0].value), ("counter", "Things.", 3.0));
        assert_eq!(rows[1].kind, "histogram");
        assert_eq!(rows[1].labels, "{le=\"0.1\"}");
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let rows = parse_exposition(TEXT);
        let after = buckets(&rows, "herald_lat_seconds");
        let p50 = quantile(&[], &after, 0.5).unwrap();
        assert!((p50 - 0.1).abs() < 1e-9);
        let p99 = quantile(&[], &after, 0.99).unwrap();
        assert!(p99 > 0.9 && p99 <= 1.0);
        assert_eq!(quantile(&after, &after, 0.5), None);
    }
}
