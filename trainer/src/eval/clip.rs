//! Clip-level scores from frame probabilities, the way clinicians read clips.
//!
//! A clip is labelled as a whole, but its frames are not all alike: B-lines come and go with
//! breathing, and a clip labelled "B-lines" holds frames without them. Three rules turn a clip's
//! frame probabilities (in time order) into one clip score, each then swept over thresholds for
//! the clip ROC:
//!
//! - [`ClipRule::Mean`]: the mean probability;
//! - [`ClipRule::TopQuarter`]: the mean of the highest quarter of the frames (a clip is
//!   positive when a good part of it clearly is);
//! - [`ClipRule::Run`]: Arntfield et al. (2021): a clip is positive at threshold `t` when at
//!   least `L` *consecutive* frames exceed `t`. The largest such `t` is the clip's score:
//!   `max over windows of L consecutive frames of the window's minimum` (a clip shorter than `L`
//!   scores its minimum), so sweeping `t` over these scores traces exactly that rule's ROC.
//!
//! The runtime's live smoothing (`pleura::smoothing`) is the same idea on a stream: a moving
//! mean over a window, then a decision only after several consecutive smoothed values pass the
//! bound, i.e. a run rule on smoothed probabilities with hysteresis. `Run` is its offline
//! counterpart at a fixed run length; both reward a finding that persists over time and
//! ignore single-frame flickers.

use serde::{Deserialize, Serialize};

/// How a clip's frame probabilities become one clip score.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClipRule {
    /// Mean of the frames.
    Mean,
    /// Mean of the highest quarter of the frames (at least one).
    TopQuarter,
    /// Longest run: the highest threshold that `frames` consecutive frames all exceed.
    Run {
        /// Run length in (evaluated) frames.
        frames: usize,
    },
}

impl ClipRule {
    /// The rules every report shows, the run rule with `run` frames.
    pub fn standard(run: usize) -> [ClipRule; 3] {
        [
            ClipRule::Mean,
            ClipRule::TopQuarter,
            ClipRule::Run { frames: run.max(1) },
        ]
    }

    /// Short name used in tables and JSON keys: `mean`, `top25`, `run3`.
    pub fn name(&self) -> String {
        match self {
            ClipRule::Mean => "mean".into(),
            ClipRule::TopQuarter => "top25".into(),
            ClipRule::Run { frames } => format!("run{frames}"),
        }
    }

    /// The score of one clip from its frame probabilities in time order; `None` when empty.
    pub fn score(&self, frames: &[f32]) -> Option<f32> {
        if frames.is_empty() {
            return None;
        }
        Some(match self {
            ClipRule::Mean => frames.iter().sum::<f32>() / frames.len() as f32,
            ClipRule::TopQuarter => {
                let mut sorted = frames.to_vec();
                sorted.sort_by(|a, b| b.total_cmp(a));
                let k = frames.len().div_ceil(4);
                sorted[..k].iter().sum::<f32>() / k as f32
            }
            // The runtime's own run rule (`pleura::clip`), so that a recorded clip scores here
            // exactly as `pleura run` scores it live.
            ClipRule::Run { frames: run } => {
                let mut score = pleura::clip::RunScore::new(*run);
                frames.iter().for_each(|&p| score.push(p));
                score.score()?
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_scores_a_clip() {
        let clip = [0.1, 0.9, 0.8, 0.2, 0.7, 0.95, 0.9, 0.1];
        let mean = ClipRule::Mean.score(&clip).unwrap();
        assert!((mean - 4.65 / 8.0).abs() < 1e-6);
        // Top quarter: the two highest, 0.95 and 0.9.
        assert!((ClipRule::TopQuarter.score(&clip).unwrap() - 0.925).abs() < 1e-6);
        // Runs of 3: windows' minima 0.1, 0.2, 0.2, 0.2, 0.7, 0.1 -> 0.7.
        assert_eq!(ClipRule::Run { frames: 3 }.score(&clip), Some(0.7));
        assert_eq!(ClipRule::Run { frames: 1 }.score(&clip), Some(0.95));
        // Longer than the clip: the minimum.
        assert_eq!(ClipRule::Run { frames: 20 }.score(&clip), Some(0.1));
        assert_eq!(ClipRule::Mean.score(&[]), None);
    }

    #[test]
    fn the_run_score_is_the_threshold_of_the_run_rule() {
        // At every threshold t, "some 3 consecutive frames exceed t" <=> score > t.
        let clip = [0.3, 0.6, 0.65, 0.2, 0.7, 0.75, 0.72, 0.4];
        let score = ClipRule::Run { frames: 3 }.score(&clip).unwrap();
        for k in 0..100 {
            let t = k as f32 / 100.0;
            let run_exceeds = clip.windows(3).any(|w| w.iter().all(|&p| p > t));
            assert_eq!(run_exceeds, score > t, "threshold {t}");
        }
        assert_eq!(
            ClipRule::standard(4).map(|r| r.name()),
            ["mean", "top25", "run4"]
        );
    }
}
