//! Speed of one pretraining step — forward of both views, the SSL loss, backward and the
//! optimiser update — on seeded random inputs, without data loading (which overlaps the step
//! on its own thread in a real run). `pleura-train bench-step` prints it as JSON, and
//! `make bench-pretrain` runs it interleaved with the same step in PyTorch + lightly.

use std::time::Instant;

use anyhow::Result;
use burn::tensor::Device;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;

use crate::train::pretrain::PretrainConfig;

/// Timings of `steps` pretraining steps after `warmup` untimed ones.
#[derive(Clone, Debug, Serialize)]
pub struct StepBench {
    /// Framework that ran the step.
    pub engine: String,
    /// Compute device.
    pub device: String,
    /// Worker threads (rayon's pool, `RAYON_NUM_THREADS`).
    pub threads: usize,
    /// SSL method.
    pub method: String,
    /// Frames per step (two views each).
    pub batch: usize,
    /// Input side in pixels.
    pub size: usize,
    /// Milliseconds of each timed step.
    pub step_ms: Vec<f64>,
    /// Median of `step_ms`.
    pub median_ms: f64,
    /// Images (views) per second at the median: `2 x batch / median`.
    pub images_per_s: f64,
}

/// Runs `warmup + steps` steps of the network `config` describes on `device` (autodiff is
/// added here) and times the last `steps`.
pub fn time_steps(
    config: &PretrainConfig,
    warmup: usize,
    steps: usize,
    device: &Device,
    device_name: &str,
) -> Result<StepBench> {
    config.validate()?;
    anyhow::ensure!(steps > 0, "--steps must be at least 1");
    let device = device.clone().autodiff();
    let mut net = config.network(&device);
    let mut optim = config.optimizer();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(config.seed);
    let n = config.batch * config.size * config.size;
    let mut views = || -> Vec<f32> { (0..n).map(|_| rng.random_range(-2.0..2.0)).collect() };
    let lr = config.peak_lr();
    let mut step_ms = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        let pair = (views(), views());
        let start = Instant::now();
        let loss;
        (net, loss, _) = net.step(&mut optim, config, pair, lr, &device);
        let ms = start.elapsed().as_secs_f64() * 1e3;
        anyhow::ensure!(loss.is_finite(), "the loss became {loss} at step {i}");
        if i >= warmup {
            step_ms.push(ms);
        }
    }
    let mut sorted = step_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let median_ms = pleura::latency::percentile(&sorted, 0.5);
    Ok(StepBench {
        engine: format!("burn {}", burn_version()),
        device: device_name.to_string(),
        threads: threads(),
        method: config.method.to_string(),
        batch: config.batch,
        size: config.size,
        images_per_s: 2.0 * config.batch as f64 / (median_ms / 1e3),
        step_ms,
        median_ms,
    })
}

/// burn's version as pinned in the workspace.
fn burn_version() -> &'static str {
    "0.22.1"
}

/// The size of rayon's global pool, which burn's CPU kernels use.
fn threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::pretrain::OptimizerKind;

    #[test]
    fn times_every_requested_step() {
        let config = PretrainConfig {
            size: 32,
            batch: 4,
            projector: vec![16, 8],
            optimizer: OptimizerKind::Adamw,
            ..PretrainConfig::default()
        };
        let b = time_steps(&config, 1, 3, &Device::flex(), "cpu").unwrap();
        assert_eq!(b.step_ms.len(), 3);
        assert!(b.step_ms.iter().all(|&ms| ms > 0.0));
        assert!(b.median_ms >= b.step_ms.iter().cloned().fold(f64::MAX, f64::min));
        assert!((b.images_per_s - 8.0 / (b.median_ms / 1e3)).abs() < 1e-6);
    }
}
