//! Reading the Prometheus text exposition into rows for the metrics page.

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
}
