//! Temporal smoothing: per-frame head probabilities -> stable, clip-level decisions.
//!
//! Live scanning needs decisions that do not flicker from frame to frame. VanBerlo et al.'s view
//! classifier averaged frame predictions over 17 frames and called a clip pleural once 7
//! consecutive smoothed frames passed 0.7; every task here uses that same mechanism, with its own
//! [`SmoothingConfig`] (pack manifest `tasks[i].smoothing`, overridable by `pleura run --config`).
//!
//! # Semantics
//!
//! For each frame `t` on which the task's head runs, with raw probability `p_t`:
//!
//! 1. **Moving average.** `s_t` is the mean of the last `min(n_t, window)` probabilities, where
//!    `n_t` counts the frames pushed since the smoother started or was last reset (so the first
//!    frames average over what there is).
//! 2. **Votes.** The frame votes *positive* when `s_t > positive_above`, *negative* when
//!    `s_t < negative_below`, and *neither* in the band between (both bounds excluded).
//! 3. **Runs.** A positive vote extends the positive run and ends the negative one, and vice
//!    versa; a vote for neither ends both runs.
//! 4. **Decision (hysteresis).** The decision starts *undecided* (`None`). It becomes the
//!    positive class when the positive run reaches `consecutive` frames and the negative class
//!    when the negative run does; otherwise it keeps its previous value. A decided task
//!    therefore changes its mind only after `consecutive` frames in a row whose average lies
//!    beyond the *opposite* bound: single outliers, and any flicker that keeps returning into
//!    or across the band, never flip it.
//!
//! With the defaults and a clean switch of `p` from 0 to 1, `s_t` passes 0.7 on the 12th new
//! frame and the decision changes on the 18th (0.7 s at 25 fps): the price of stability.
//!
//! # The offline counterpart
//!
//! The trainer's clip rules (`pleura-train`, `eval/clip.rs`) score whole recorded clips the same
//! way: `runN` is the highest threshold that N consecutive frame probabilities all exceed
//! (Arntfield et al. 2021's longest-run rule), swept over thresholds for the clip ROC. The live
//! rule here is that run rule applied to the moving average `s_t`, at the fixed bound
//! `positive_above`, with hysteresis for the way back; both ask a finding to persist over
//! consecutive frames, so single-frame flickers never decide a clip.
//!
//! A frame whose probability is not finite casts no vote (it ends both runs) and is not
//! averaged.
//!
//! # Frames where a task does not run
//!
//! A gated task (A-/B-lines on parenchymal views, effusion on pleural ones) is not run while its
//! gate is closed. By default its smoother is **reset** ([`OnSkip::Reset`]): evidence gathered
//! before the probe moved to the other view says nothing about the anatomy after it, and the
//! gate opens only on a smoothed view decision, so a closed gate always means a real change of
//! view. [`OnSkip::Hold`] keeps the window and the decision instead, for packs whose gated task
//! describes the patient rather than the probe position.

use std::collections::VecDeque;

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};

/// What a task's smoother does on a frame where the task's head does not run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSkip {
    /// Forget the window, the runs and the decision (undecided when the task runs again).
    #[default]
    Reset,
    /// Keep everything as it was; the next frame continues the same window.
    Hold,
}

/// Smoothing settings of one task. Every field has a default (VanBerlo et al.'s view rule).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmoothingConfig {
    /// Frames in the moving average. Default 17; 1 disables averaging.
    pub window: usize,
    /// Consecutive frames beyond a bound needed to change the decision. Default 7; 1 decides on
    /// every frame outside the band.
    pub consecutive: usize,
    /// A smoothed probability above this votes for the positive class. Default 0.7.
    pub positive_above: f32,
    /// A smoothed probability below this votes for the negative class. Default 0.3.
    pub negative_below: f32,
    /// What happens on frames where the task does not run. Default `reset`.
    pub on_skip: OnSkip,
}

impl Default for SmoothingConfig {
    fn default() -> Self {
        Self {
            window: 17,
            consecutive: 7,
            positive_above: 0.7,
            negative_below: 0.3,
            on_skip: OnSkip::Reset,
        }
    }
}

impl SmoothingConfig {
    /// Checks the ranges: `window` and `consecutive` at least 1, both bounds in `[0, 1]` and
    /// `negative_below <= positive_above`.
    pub fn validate(&self) -> Result<()> {
        ensure!(self.window >= 1, "`window` must be at least 1");
        ensure!(self.consecutive >= 1, "`consecutive` must be at least 1");
        for (name, v) in [
            ("positive_above", self.positive_above),
            ("negative_below", self.negative_below),
        ] {
            ensure!(
                (0.0..=1.0).contains(&v),
                "`{name}` is {v}, it must lie in [0, 1]"
            );
        }
        ensure!(
            self.negative_below <= self.positive_above,
            "`negative_below` ({}) must not exceed `positive_above` ({})",
            self.negative_below,
            self.positive_above
        );
        Ok(())
    }

    /// This config with the fields present in `overrides` (a TOML table such as
    /// `{ window = 9 }`) replaced; unknown fields and invalid values are errors.
    pub fn with_overrides(&self, overrides: &toml::Table) -> Result<SmoothingConfig> {
        let mut table = toml::Table::try_from(self).context("encoding smoothing settings")?;
        for (key, value) in overrides {
            table.insert(key.clone(), value.clone());
        }
        let merged: SmoothingConfig = toml::Value::Table(table).try_into()?;
        merged.validate()?;
        Ok(merged)
    }
}

/// One frame's smoothed output of a task.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Smoothed {
    /// Moving average of the recent probabilities.
    pub probability: f32,
    /// Class index after hysteresis; `None` while undecided.
    pub decision: Option<usize>,
}

/// Temporal smoothing state of one task on one stream.
#[derive(Clone, Debug)]
pub struct Smoother {
    config: SmoothingConfig,
    recent: VecDeque<f32>,
    positive_run: usize,
    negative_run: usize,
    decision: Option<usize>,
}

impl Smoother {
    /// A fresh, undecided smoother; fails when `config` is out of range.
    pub fn new(config: &SmoothingConfig) -> Result<Smoother> {
        config.validate()?;
        Ok(Smoother {
            config: config.clone(),
            recent: VecDeque::with_capacity(config.window),
            positive_run: 0,
            negative_run: 0,
            decision: None,
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &SmoothingConfig {
        &self.config
    }

    /// The current decision (class index), `None` while undecided.
    pub fn decision(&self) -> Option<usize> {
        self.decision
    }

    /// Adds the head's probability of one frame and returns the smoothed result.
    pub fn push(&mut self, probability: f32) -> Smoothed {
        if !probability.is_finite() {
            self.positive_run = 0;
            self.negative_run = 0;
            return Smoothed {
                probability: self.average().unwrap_or(f32::NAN),
                decision: self.decision,
            };
        }
        if self.recent.len() == self.config.window {
            self.recent.pop_front();
        }
        self.recent.push_back(probability);
        let smoothed = self.average().unwrap_or(probability);
        if smoothed > self.config.positive_above {
            self.positive_run += 1;
            self.negative_run = 0;
        } else if smoothed < self.config.negative_below {
            self.negative_run += 1;
            self.positive_run = 0;
        } else {
            self.positive_run = 0;
            self.negative_run = 0;
        }
        if self.positive_run >= self.config.consecutive {
            self.decision = Some(1);
        } else if self.negative_run >= self.config.consecutive {
            self.decision = Some(0);
        }
        Smoothed {
            probability: smoothed,
            decision: self.decision,
        }
    }

    /// A frame on which the task did not run: resets or holds, as [`SmoothingConfig::on_skip`]
    /// says.
    pub fn skip(&mut self) {
        if self.config.on_skip == OnSkip::Reset {
            self.reset();
        }
    }

    /// Forgets everything: empty window, no runs, undecided.
    pub fn reset(&mut self) {
        self.recent.clear();
        self.positive_run = 0;
        self.negative_run = 0;
        self.decision = None;
    }

    fn average(&self) -> Option<f32> {
        if self.recent.is_empty() {
            return None;
        }
        let sum: f64 = self.recent.iter().map(|&p| f64::from(p)).sum();
        Some((sum / self.recent.len() as f64) as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smoother(window: usize, consecutive: usize) -> Smoother {
        Smoother::new(&SmoothingConfig {
            window,
            consecutive,
            ..SmoothingConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn defaults_are_the_papers_view_rule() {
        let c = SmoothingConfig::default();
        assert_eq!((c.window, c.consecutive), (17, 7));
        assert_eq!((c.positive_above, c.negative_below), (0.7, 0.3));
        assert_eq!(c.on_skip, OnSkip::Reset);
    }

    #[test]
    fn window_average_covers_the_last_frames_only() {
        let mut s = smoother(3, 1);
        assert!((s.push(0.9).probability - 0.9).abs() < 1e-6);
        assert!((s.push(0.3).probability - 0.6).abs() < 1e-6);
        assert!((s.push(0.6).probability - 0.6).abs() < 1e-6);
        // 0.9 leaves the window: (0.3 + 0.6 + 0.0) / 3.
        assert!((s.push(0.0).probability - 0.3).abs() < 1e-6);
        // Not finite: ignored, the average stands.
        assert!((s.push(f32::NAN).probability - 0.3).abs() < 1e-6);
    }

    #[test]
    fn decision_changes_after_consecutive_frames_beyond_the_opposite_bound() {
        let mut s = smoother(1, 3);
        assert_eq!(s.push(0.9).decision, None);
        assert_eq!(s.push(0.9).decision, None);
        assert_eq!(s.push(0.9).decision, Some(1));
        // Inside the band: held however long it lasts.
        for _ in 0..20 {
            assert_eq!(s.push(0.5).decision, Some(1));
        }
        // Two low frames, then the band, then two more: the run restarts, no change.
        for p in [0.1, 0.1, 0.5, 0.1, 0.1] {
            assert_eq!(s.push(p).decision, Some(1));
        }
        assert_eq!(s.push(0.1).decision, Some(0));
        // A bound itself is not beyond it.
        let mut s = smoother(1, 1);
        assert_eq!(s.push(0.7).decision, None);
        assert_eq!(s.push(0.3).decision, None);
        assert_eq!(s.push(0.71).decision, Some(1));
    }

    #[test]
    fn clean_step_decides_on_the_18th_frame_with_defaults() {
        let mut s = Smoother::new(&SmoothingConfig::default()).unwrap();
        for _ in 0..40 {
            s.push(0.0);
        }
        assert_eq!(s.decision(), Some(0));
        let frames = (1..=40).find(|_| s.push(1.0).decision == Some(1));
        assert_eq!(frames, Some(18));
    }

    #[test]
    fn flickering_input_does_not_flip_the_decision() {
        let mut s = Smoother::new(&SmoothingConfig::default()).unwrap();
        for _ in 0..30 {
            s.push(0.95);
        }
        assert_eq!(s.decision(), Some(1));
        // Alternating confident frames, and bursts of 5 negatives out of every 8 frames:
        // raw per-frame decisions flip constantly, the smoothed one never does.
        for t in 0..400 {
            let p = if t % 2 == 0 { 0.02 } else { 0.98 };
            assert_eq!(s.push(p).decision, Some(1), "alternating, frame {t}");
        }
        for t in 0..400 {
            let p = if t % 8 < 5 { 0.0 } else { 1.0 };
            assert_eq!(s.push(p).decision, Some(1), "bursts, frame {t}");
        }
    }

    #[test]
    fn skipped_frames_reset_or_hold() {
        let mut s = smoother(5, 2);
        s.push(0.9);
        s.push(0.9);
        assert_eq!(s.decision(), Some(1));
        s.skip();
        assert_eq!(s.decision(), None);
        assert!((s.push(0.2).probability - 0.2).abs() < 1e-6);

        let mut s = Smoother::new(&SmoothingConfig {
            window: 5,
            consecutive: 2,
            on_skip: OnSkip::Hold,
            ..SmoothingConfig::default()
        })
        .unwrap();
        s.push(0.9);
        s.push(0.9);
        s.skip();
        assert_eq!(s.decision(), Some(1));
        assert!((s.push(0.6).probability - 0.8).abs() < 1e-6);
    }

    #[test]
    fn overrides_replace_only_the_fields_given() {
        let base = SmoothingConfig {
            consecutive: 4,
            ..SmoothingConfig::default()
        };
        let table: toml::Table = toml::from_str("window = 9\non_skip = \"hold\"").unwrap();
        let merged = base.with_overrides(&table).unwrap();
        assert_eq!(merged.window, 9);
        assert_eq!(merged.consecutive, 4);
        assert_eq!(merged.on_skip, OnSkip::Hold);
        assert_eq!(merged.positive_above, 0.7);

        let typo: toml::Table = toml::from_str("windw = 9").unwrap();
        let err = format!("{:#}", base.with_overrides(&typo).unwrap_err());
        assert!(err.contains("windw"), "{err}");
        let bad: toml::Table = toml::from_str("negative_below = 0.8").unwrap();
        let err = format!("{:#}", base.with_overrides(&bad).unwrap_err());
        assert!(err.contains("negative_below"), "{err}");
        assert!(Smoother::new(&SmoothingConfig {
            window: 0,
            ..SmoothingConfig::default()
        })
        .is_err());
    }

    #[test]
    fn manifest_form_has_defaults_and_rejects_unknown_fields() {
        let c: SmoothingConfig = serde_json::from_str(r#"{"window": 5}"#).unwrap();
        assert_eq!((c.window, c.consecutive), (5, 7));
        assert!(serde_json::from_str::<SmoothingConfig>(r#"{"frames": 5}"#).is_err());
    }
}
