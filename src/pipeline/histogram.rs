//! Fixed-memory latency histogram: percentiles of a run of any length.
//!
//! A live scan may run for hours; keeping every latency would grow memory by tens of bytes a
//! frame. Values (milliseconds) fall into log-spaced bins 1% wide from 1 µs to about 20 minutes,
//! so each stage costs 17 KiB whatever the length of the run, and a percentile is within 0.5% of
//! the exact nearest-rank value. The maximum is exact.

use crate::latency::StageSummary;

/// Lower edge of the first log-spaced bin, in milliseconds (bin 0 holds everything below).
const MIN_MS: f64 = 1e-3;
/// Ratio of the upper to the lower edge of a bin.
const RATIO: f64 = 1.01;
/// Number of bins; the last one also holds everything above its lower edge.
const BINS: usize = 2100;

/// Counts of latencies in log-spaced bins.
#[derive(Clone, Debug)]
pub(crate) struct Histogram {
    counts: Vec<u64>,
    n: u64,
    min: f64,
    max: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BINS],
            n: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Histogram {
    /// Records one value in milliseconds (NaN is ignored).
    pub(crate) fn push(&mut self, ms: f64) {
        if ms.is_nan() {
            return;
        }
        let bin = if ms < MIN_MS {
            0
        } else {
            ((ms / MIN_MS).ln() / RATIO.ln()).floor() as usize + 1
        };
        self.counts[bin.min(BINS - 1)] += 1;
        self.n += 1;
        self.min = self.min.min(ms);
        self.max = self.max.max(ms);
    }

    /// Values recorded.
    pub(crate) fn len(&self) -> u64 {
        self.n
    }

    /// Nearest-rank percentile `q` in `[0, 1]`: the geometric middle of the bin holding that
    /// rank, clamped to the values seen; NaN when empty.
    pub(crate) fn percentile(&self, q: f64) -> f64 {
        if self.n == 0 {
            return f64::NAN;
        }
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (bin, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let value = if bin == 0 {
                    self.min
                } else if bin == BINS - 1 {
                    self.max
                } else {
                    MIN_MS * RATIO.powf(bin as f64 - 0.5)
                };
                return value.clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// p50, p90, p99 and max.
    pub(crate) fn summary(&self) -> StageSummary {
        StageSummary {
            p50: self.percentile(0.5),
            p90: self.percentile(0.9),
            p99: self.percentile(0.99),
            max: if self.n == 0 { f64::NAN } else { self.max },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::percentile;

    #[test]
    fn percentiles_are_within_half_a_percent_of_the_exact_ones() {
        let mut h = Histogram::default();
        // A spread of latencies from 2 µs to 2 s, deterministic.
        let mut values: Vec<f64> = (0..20_000u64)
            .map(|i| 2e-3 * 1e6f64.powf(((i * 7919) % 20_000) as f64 / 20_000.0))
            .collect();
        for &v in &values {
            h.push(v);
        }
        values.sort_by(f64::total_cmp);
        for q in [0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let (exact, approx) = (percentile(&values, q), h.percentile(q));
            assert!(
                (approx / exact - 1.0).abs() <= 0.0051,
                "q {q}: {approx} vs {exact}"
            );
        }
        assert_eq!(h.summary().max, *values.last().unwrap());
        assert_eq!(h.len(), 20_000);
    }

    #[test]
    fn edge_values_stay_in_range() {
        let mut h = Histogram::default();
        assert!(h.summary().p50.is_nan());
        for v in [0.0, 0.0, 5.0, 1e12, f64::NAN] {
            h.push(v);
        }
        assert_eq!(h.len(), 4);
        assert_eq!(h.percentile(0.5), 0.0);
        assert_eq!(h.percentile(1.0), 1e12);
        assert!((h.percentile(0.75) / 5.0 - 1.0).abs() <= 0.0051);
    }
}
