//! Per-stage latency records and their summary (percentiles, fps).

use std::time::Duration;

use serde::Serialize;

/// Pipeline stages that are timed for every frame.
pub const STAGES: [&str; 5] = ["capture", "preprocess", "backbone", "heads", "total"];

/// Timings of one frame, in [`STAGES`] order.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StageTimes(pub [Duration; 5]);

impl StageTimes {
    /// Milliseconds per stage, for JSON output.
    pub fn millis(&self) -> serde_json::Map<String, serde_json::Value> {
        STAGES
            .iter()
            .zip(self.0)
            .map(|(name, d)| (name.to_string(), round_ms(d).into()))
            .collect()
    }
}

fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Percentiles of one stage, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StageSummary {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

/// Nearest-rank percentile `q` in `[0, 1]` of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Collects [`StageTimes`] over a run.
#[derive(Clone, Debug, Default)]
pub struct LatencyLog {
    per_stage: [Vec<f64>; 5],
}

impl LatencyLog {
    /// Records one frame.
    pub fn push(&mut self, times: &StageTimes) {
        for (log, d) in self.per_stage.iter_mut().zip(times.0) {
            log.push(d.as_secs_f64() * 1e3);
        }
    }

    /// Frames recorded.
    pub fn len(&self) -> usize {
        self.per_stage[0].len()
    }

    /// `true` when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Percentiles per stage, in [`STAGES`] order.
    pub fn summary(&self) -> Vec<(&'static str, StageSummary)> {
        STAGES
            .iter()
            .zip(&self.per_stage)
            .map(|(name, values)| {
                let mut v = values.clone();
                v.sort_by(f64::total_cmp);
                let s = StageSummary {
                    p50: percentile(&v, 0.5),
                    p90: percentile(&v, 0.9),
                    p99: percentile(&v, 0.99),
                    max: v.last().copied().unwrap_or(f64::NAN),
                };
                (*name, s)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.9), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn log_summarises_each_stage() {
        let mut log = LatencyLog::default();
        for ms in 1..=10u64 {
            let d = Duration::from_millis(ms);
            log.push(&StageTimes([d, d, d * 2, d, d * 5]));
        }
        let s = log.summary();
        assert_eq!(log.len(), 10);
        assert_eq!(s[2].0, "backbone");
        assert!((s[2].1.p50 - 10.0).abs() < 1e-9);
        assert!((s[4].1.max - 50.0).abs() < 1e-9);
    }
}
