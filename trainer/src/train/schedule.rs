//! Learning-rate schedule of the pretraining recipe: linear warm-up, then cosine decay.

use serde::{Deserialize, Serialize};

/// Linear warm-up from 0 to `base` over `warmup` steps, then cosine decay to `base * final_ratio`
/// at `total` steps (and constant after).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct WarmupCosine {
    /// Peak learning rate.
    pub base: f64,
    /// Warm-up steps.
    pub warmup: usize,
    /// Total steps of the run.
    pub total: usize,
    /// Final learning rate as a fraction of `base`.
    pub final_ratio: f64,
}

impl WarmupCosine {
    /// Learning rate for optimiser step `step` (0-based).
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.base * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1);
        let progress = ((step - self.warmup) as f64 / span as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.base * (self.final_ratio + (1.0 - self.final_ratio) * cosine)
    }
}

/// The recipe's base learning rate, `0.2 x batch / 256` (linear scaling rule, Goyal et al. 2017).
pub fn scaled_lr(batch: usize) -> f64 {
    0.2 * batch as f64 / 256.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_linearly_then_decays_by_cosine() {
        let s = WarmupCosine {
            base: 1.0,
            warmup: 10,
            total: 110,
            final_ratio: 0.0,
        };
        assert!((s.at(0) - 0.1).abs() < 1e-12);
        assert!((s.at(9) - 1.0).abs() < 1e-12);
        assert!((s.at(10) - 1.0).abs() < 1e-12);
        assert!((s.at(60) - 0.5).abs() < 1e-12);
        assert!(s.at(110).abs() < 1e-12 && s.at(500).abs() < 1e-12);
        for step in 10..110 {
            assert!(s.at(step + 1) <= s.at(step) + 1e-15);
        }
        assert!((scaled_lr(256) - 0.2).abs() < 1e-12);
    }

    #[test]
    fn final_ratio_is_the_floor() {
        let s = WarmupCosine {
            base: 2.0,
            warmup: 0,
            total: 10,
            final_ratio: 0.1,
        };
        assert!((s.at(0) - 2.0).abs() < 1e-12);
        assert!((s.at(10) - 0.2).abs() < 1e-12);
    }
}
