//! Latency percentiles of `coord bench` in fixed memory.
//!
//! A run of a million operations must not keep a million samples: `scripts/bench.sh`
//! measures the resident memory of a `coord bench lock-loop` process to show that the
//! memory backend stays flat, and a growing sample vector would be all it saw. An HDR
//! histogram with three significant digits keeps every value to within 0.1% in about
//! 0.5 MiB, whatever the count.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Recorded durations, from 1 ns to one hour (longer ones count as one hour).
#[derive(Debug)]
pub(crate) struct Latencies(Histogram<u64>);

const LONGEST_NS: u64 = 3_600 * 1_000_000_000;

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    pub(crate) fn new() -> Self {
        Latencies(
            Histogram::new_with_bounds(1, LONGEST_NS, 3)
                .expect("1 ns .. 1 h with 3 significant digits is a valid histogram"),
        )
    }

    pub(crate) fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.0.saturating_record(ns);
    }

    pub(crate) fn len(&self) -> u64 {
        self.0.len()
    }

    /// The `p`th percentile in nanoseconds (0 when nothing was recorded), as Go's peer
    /// reports it: the value at or below which `p`% of the samples lie, to within 0.1%.
    pub(crate) fn percentile(&self, p: f64) -> u64 {
        if self.0.is_empty() {
            return 0;
        }
        self.0.value_at_quantile(p / 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_a_thousandth_of_the_exact_ones() {
        let mut l = Latencies::new();
        for ns in 1..=100_000u64 {
            l.record(Duration::from_nanos(ns * 1_000));
        }
        assert_eq!(l.len(), 100_000);
        let p50 = l.percentile(50.0) as f64;
        let p99 = l.percentile(99.0) as f64;
        assert!(
            (p50 - 50_000_000.0).abs() / 50_000_000.0 < 0.001,
            "p50 {p50}"
        );
        assert!(
            (p99 - 99_000_000.0).abs() / 99_000_000.0 < 0.001,
            "p99 {p99}"
        );
    }

    #[test]
    fn an_empty_record_reports_zero_and_extremes_are_kept_in_range() {
        let mut l = Latencies::new();
        assert_eq!(l.percentile(50.0), 0);
        l.record(Duration::ZERO);
        l.record(Duration::from_secs(7_200));
        assert_eq!(l.len(), 2);
        assert_eq!(l.percentile(0.0), 1);
        assert!(l.percentile(100.0) >= LONGEST_NS);
    }
}
