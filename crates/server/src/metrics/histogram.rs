//! A histogram with fixed buckets, kept in atomics.
//!
//! Recorded once where the observation happens (two relaxed additions, no
//! lock, no allocation, no sample kept for later), written into the
//! Prometheus exposition at render, and read by the dashboard as it is: the
//! one record feeds both. Values are kept in whole units (microseconds for
//! seconds, plain counts otherwise), so bucket edges and the sum are exact;
//! in microseconds the sum takes centuries of heavy fan-out to wrap, where
//! nanoseconds would wrap within weeks.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering},
};

/// Observations by bucket, and their sum.
#[derive(Debug)]
pub(crate) struct Histogram {
    name: &'static str,
    help: &'static str,
    /// Upper bounds of the buckets (`le`), ascending, in the exported unit.
    bounds: &'static [f64],
    /// The same bounds in recorded units.
    limits: Box<[u64]>,
    /// Observations per bucket, not cumulative; the last counts those above
    /// every bound.
    counts: Box<[AtomicU64]>,
    /// Sum of the observations, in recorded units.
    sum: AtomicU64,
    /// Recorded units per exported unit.
    scale: f64,
    /// The one label of a family's member (`op="publish"`), if any.
    label: Option<(&'static str, &'static str)>,
}

impl Histogram {
    /// A histogram of seconds, kept in microseconds.
    pub(crate) fn seconds(name: &'static str, help: &'static str, bounds: &'static [f64]) -> Self {
        Self::new(name, help, bounds, 1e6)
    }

    /// A histogram of seconds, one member of a family told apart by the
    /// label `key="value"`.
    pub(crate) fn seconds_labelled(
        name: &'static str,
        help: &'static str,
        bounds: &'static [f64],
        key: &'static str,
        value: &'static str,
    ) -> Self {
        Self { label: Some((key, value)), ..Self::new(name, help, bounds, 1e6) }
    }

    /// A histogram of counts.
    pub(crate) fn counts(name: &'static str, help: &'static str, bounds: &'static [f64]) -> Self {
        Self::new(name, help, bounds, 1.0)
    }

    fn new(name: &'static str, help: &'static str, bounds: &'static [f64], scale: f64) -> Self {
        debug_assert!(bounds.is_sorted(), "bucket bounds ascend");
        Self {
            name,
            help,
            bounds,
            limits: bounds.iter().map(|bound| (bound * scale).round() as u64).collect(),
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            scale,
            label: None,
        }
    }

    /// Records `value`, in the exported unit (seconds, or a count).
    pub(crate) fn record(&self, value: f64) {
        // Saturating: a negative value counts as 0.
        let value = (value * self.scale).round() as u64;
        // The first bucket whose bound the value does not exceed (`le`).
        let bucket = self.limits.partition_point(|&limit| limit < value);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Cumulative counts by upper bound, ascending, the last `+∞` (the
    /// total), as Prometheus buckets read.
    pub(crate) fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        self.bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts.iter())
            .map(|(bound, count)| {
                total += count.load(Ordering::Relaxed);
                (bound, total)
            })
            .collect()
    }

    /// Writes the histogram in the Prometheus text format, as the recorder
    /// writes its own families.
    pub(crate) fn render(&self, out: &mut String) {
        let name = self.name;
        let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} histogram", self.help);
        self.render_series(out);
    }

    /// Writes the series only: for the members of a family after the first.
    pub(crate) fn render_series(&self, out: &mut String) {
        let name = self.name;
        let (label, labels) = match self.label {
            Some((key, value)) => (format!("{key}=\"{value}\","), format!("{{{key}=\"{value}\"}}")),
            None => (String::new(), String::new()),
        };
        let cumulative = self.cumulative();
        for (bound, count) in &cumulative {
            if bound.is_infinite() {
                let _ = writeln!(out, "{name}_bucket{{{label}le=\"+Inf\"}} {count}");
            } else {
                let _ = writeln!(out, "{name}_bucket{{{label}le=\"{bound}\"}} {count}");
            }
        }
        let count = cumulative.last().map_or(0, |(_, count)| *count);
        let sum = self.sum.load(Ordering::Relaxed) as f64 / self.scale;
        let _ = writeln!(out, "{name}_sum{labels} {sum}\n{name}_count{labels} {count}\n");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_value_on_a_bound_counts_in_that_bound_s_bucket() {
        let histogram = Histogram::seconds("t_seconds", "T.", &[0.001, 0.01]);
        histogram.record(Duration::from_millis(1).as_secs_f64());
        histogram.record(Duration::from_micros(1001).as_secs_f64());
        histogram.record(3.0);
        assert_eq!(histogram.cumulative(), vec![(0.001, 1), (0.01, 2), (f64::INFINITY, 3)]);
    }

    #[test]
    fn it_renders_as_the_prometheus_recorder_does() {
        let histogram = Histogram::counts("t_events", "Events per thing.", &[1.0, 2.5, 10.0]);
        for value in [1.0, 2.0, 7.0, 40.0] {
            histogram.record(value);
        }
        let mut text = String::new();
        histogram.render(&mut text);
        assert_eq!(
            text,
            "# HELP t_events Events per thing.\n# TYPE t_events histogram\n\
             t_events_bucket{le=\"1\"} 1\nt_events_bucket{le=\"2.5\"} 2\nt_events_bucket{le=\"10\"} 3\n\
             t_events_bucket{le=\"+Inf\"} 4\nt_events_sum 50\nt_events_count 4\n\n"
        );
    }

    #[test]
    fn seconds_are_summed_exactly_and_exported_in_seconds() {
        let histogram = Histogram::seconds("t_seconds", "T.", &[0.0005]);
        histogram.record(Duration::from_micros(250).as_secs_f64());
        histogram.record(Duration::from_micros(1250).as_secs_f64());
        let mut text = String::new();
        histogram.render(&mut text);
        assert!(text.contains("t_seconds_bucket{le=\"0.0005\"} 1\n"), "{text}");
        assert!(text.contains("t_seconds_sum 0.0015\nt_seconds_count 2\n"), "{text}");
    }
}
