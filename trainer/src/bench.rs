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

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Tensor, TensorData};

use crate::ssl::ssl_loss;
use crate::train::pretrain::{PretrainConfig, SslNetwork};
use crate::train::to_vec;

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
    /// CPU time of the whole process (all threads) in each timed step, milliseconds. On a
    /// machine shared with other work this moves far less than wall time: with one thread it
    /// is the step's work itself.
    pub step_cpu_ms: Vec<f64>,
    /// Median of `step_cpu_ms`.
    pub median_cpu_ms: f64,
    /// Where a step's time goes, when `PLEURA_BENCH_PHASES=1`: the step is then run as its
    /// three phases (the same operations as `SslNetwork::step`), each timed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phases: Option<Phases>,
    /// Images (views) per second at the median: `2 x batch / median`.
    pub images_per_s: f64,
}

/// Median wall and CPU milliseconds of each phase of a step.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Phases {
    /// Forward pass of both views and the loss (read back to the host).
    pub forward_ms: f64,
    /// `loss.backward()` and collecting the parameter gradients.
    pub backward_ms: f64,
    /// The optimiser update.
    pub optimizer_ms: f64,
    /// CPU time of the forward phase.
    pub forward_cpu_ms: f64,
    /// CPU time of the backward phase.
    pub backward_cpu_ms: f64,
    /// CPU time of the optimiser phase.
    pub optimizer_cpu_ms: f64,
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
    let mut step_cpu_ms = Vec::with_capacity(steps);
    let split = std::env::var("PLEURA_BENCH_PHASES").is_ok_and(|v| v == "1");
    let mut phase_ms: [Vec<f64>; 6] = Default::default();
    for i in 0..warmup + steps {
        let pair = (views(), views());
        let (start, cpu_start) = (Instant::now(), process_cpu_ms());
        let loss;
        if split {
            let mut marks = vec![(start, cpu_start)];
            (net, loss) = phased_step(net, &mut optim, config, pair, lr, &device, &mut marks);
            if i >= warmup {
                for (p, w) in marks.windows(2).enumerate() {
                    phase_ms[p].push((w[1].0 - w[0].0).as_secs_f64() * 1e3);
                    phase_ms[p + 3].push(w[1].1 - w[0].1);
                }
            }
        } else {
            (net, loss, _) = net.step(&mut optim, config, pair, lr, &device);
        }
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let cpu_ms = process_cpu_ms() - cpu_start;
        anyhow::ensure!(loss.is_finite(), "the loss became {loss} at step {i}");
        if i >= warmup {
            step_ms.push(ms);
            step_cpu_ms.push(cpu_ms);
        }
    }
    let median_ms = median(&step_ms);
    let phases = split.then(|| Phases {
        forward_ms: median(&phase_ms[0]),
        backward_ms: median(&phase_ms[1]),
        optimizer_ms: median(&phase_ms[2]),
        forward_cpu_ms: median(&phase_ms[3]),
        backward_cpu_ms: median(&phase_ms[4]),
        optimizer_cpu_ms: median(&phase_ms[5]),
    });
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
        median_cpu_ms: median(&step_cpu_ms),
        step_cpu_ms,
        phases,
    })
}

/// `SslNetwork::step` cut into its phases, pushing `(wall, cpu)` after each onto `marks`.
fn phased_step(
    net: SslNetwork,
    optim: &mut ModuleOptimizer,
    config: &PretrainConfig,
    views: (Vec<f32>, Vec<f32>),
    lr: f64,
    device: &Device,
    marks: &mut Vec<(Instant, f64)>,
) -> (SslNetwork, f64) {
    let mut mark = || marks.push((Instant::now(), process_cpu_ms()));
    let shape = [config.batch, 1, config.size, config.size];
    let input = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, shape), device);
    let za = net.forward(input(views.0));
    let zb = net.forward(input(views.1));
    let loss = ssl_loss(config.method, &config.loss, za, zb);
    let loss_value = f64::from(to_vec(loss.clone())[0]);
    mark();
    let grads = GradientsParams::from_grads(loss.backward(), &net);
    mark();
    let net = optim.step(lr, net, grads);
    mark();
    (net, loss_value)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    pleura::latency::percentile(&sorted, 0.5)
}

/// CPU time consumed so far by this process, all threads together, in milliseconds.
fn process_cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the C library knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
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
        assert!(b.phases.is_none());
        assert_eq!(b.step_cpu_ms.len(), 3);
        assert!(b.step_cpu_ms.iter().all(|&ms| ms >= 0.0));
    }
}
