//! One pretraining step on two devices from the same weights and the same inputs, compared:
//! how a GPU backend is checked against the CPU (flex) backend, which every other test runs on.
//! `pleura-train check-step --device wgpu:cpu` prints the comparison as JSON; `make check-wgpu`
//! runs it on wgpu's CPU adapter (Mesa's lavapipe), which needs no GPU.
//!
//! The step is [`SslNetwork::step`]: forward of both views, the SSL loss, backward and the run's
//! optimiser (LARS by default, whose first update is linear in the gradient, so differences in
//! the gradients show in the update unamplified). The network is initialised from the seed on
//! the reference device and forked to the other one; the views are seeded random values.

use std::time::Instant;

use anyhow::{ensure, Result};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;

use super::pretrain::{PretrainConfig, SslNetwork};
use super::to_vec;

/// What one step did on each device, and how far apart the two are.
#[derive(Clone, Debug, Serialize)]
pub struct StepComparison {
    /// The reference device (the flex CPU backend).
    pub reference: String,
    /// The device checked.
    pub device: String,
    /// SSL method, frames per step and input side.
    pub method: String,
    /// Frames per step (two views each).
    pub batch: usize,
    /// Input side in pixels.
    pub size: usize,
    /// Loss on the reference device and on the device checked.
    pub loss: [f64; 2],
    /// `|loss_a - loss_b| / max(|loss_a|, 1e-12)`.
    pub loss_rel_diff: f64,
    /// Largest difference between the embeddings of the first view, relative to the largest
    /// embedding value.
    pub embedding_rel_diff: f64,
    /// Largest difference between the two weight updates (after - before, every parameter),
    /// relative to the largest update on the reference device.
    pub update_rel_diff: f64,
    /// Largest weight update on the reference device.
    pub update_max: f64,
    /// Parameters compared (tensors, values).
    pub parameters: [usize; 2],
    /// Milliseconds of a second, warm step on each device (the first compiles kernels).
    pub warm_step_ms: [f64; 2],
    /// Images (views) per second of that warm step on each device: `2 x batch / time`.
    pub images_per_s: [f64; 2],
}

impl StepComparison {
    /// `true` when the loss, the embeddings and the updates agree within `tolerance`
    /// (relative, each).
    pub fn within(&self, tolerance: f64) -> bool {
        self.loss_rel_diff <= tolerance
            && self.embedding_rel_diff <= tolerance
            && self.update_rel_diff <= tolerance
    }
}

/// Every float parameter's values, in visiting order.
#[derive(Default)]
struct Collect(Vec<Vec<f32>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push(to_vec(param.val()));
    }
}

fn parameters(net: &SslNetwork) -> Vec<Vec<f32>> {
    let mut c = Collect::default();
    net.visit(&mut c);
    c.0
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from((x - y).abs()))
        .fold(0.0, f64::max)
}

fn max_abs(a: &[f32]) -> f64 {
    a.iter().map(|x| f64::from(x.abs())).fold(0.0, f64::max)
}

/// Runs one step of `config`'s network on `reference` and on `device` (both without autodiff;
/// it is added here) from the same weights and views, then a second, timed step on each.
pub fn compare_step(
    config: &PretrainConfig,
    reference: (&Device, &str),
    device: (&Device, &str),
) -> Result<StepComparison> {
    config.validate()?;
    let (b, s) = (config.batch, config.size);
    let ref_dev = reference.0.clone().autodiff();
    let dev = device.0.clone().autodiff();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(config.seed);
    let mut view = || -> Vec<f32> {
        (0..b * s * s)
            .map(|_| rng.random::<f32>() * 2.0 - 1.0)
            .collect()
    };
    let views = (view(), view());
    let lr = config.peak_lr();

    let net_a = config.network(&ref_dev);
    let net_b = net_a.clone().fork(&dev);
    let before = parameters(&net_a);
    let before_b = parameters(&net_b);
    ensure!(
        before.len() == before_b.len()
            && before
                .iter()
                .zip(&before_b)
                .all(|(x, y)| max_abs_diff(x, y) == 0.0),
        "the weights changed when moved to {}",
        device.1
    );
    let mut optim_a = config.optimizer();
    let mut optim_b = config.optimizer();
    let (net_a, loss_a, za) = net_a.step(&mut optim_a, config, views.clone(), lr, &ref_dev);
    let (net_b, loss_b, zb) = net_b.step(&mut optim_b, config, views.clone(), lr, &dev);
    let (za, zb) = (to_vec(za), to_vec(zb));
    let (after_a, after_b) = (parameters(&net_a), parameters(&net_b));
    let mut update_diff = 0.0f64;
    let mut update_max = 0.0f64;
    for ((w0, wa), wb) in before.iter().zip(&after_a).zip(&after_b) {
        let da: Vec<f32> = wa.iter().zip(w0).map(|(a, w)| a - w).collect();
        let db: Vec<f32> = wb.iter().zip(w0).map(|(b, w)| b - w).collect();
        update_diff = update_diff.max(max_abs_diff(&da, &db));
        update_max = update_max.max(max_abs(&da));
    }

    let timed = |net: SslNetwork, optim: &mut burn::optim::ModuleOptimizer, d: &Device| {
        let t = Instant::now();
        let (_, loss, _) = net.step(optim, config, views.clone(), lr, d);
        (t.elapsed().as_secs_f64() * 1e3, loss)
    };
    let (ms_a, _) = timed(net_a, &mut optim_a, &ref_dev);
    let (ms_b, _) = timed(net_b, &mut optim_b, &dev);

    Ok(StepComparison {
        reference: reference.1.to_string(),
        device: device.1.to_string(),
        method: config.method.to_string(),
        batch: b,
        size: s,
        loss: [loss_a, loss_b],
        loss_rel_diff: (loss_a - loss_b).abs() / loss_a.abs().max(1e-12),
        embedding_rel_diff: max_abs_diff(&za, &zb) / max_abs(&za).max(1e-12),
        update_rel_diff: update_diff / update_max.max(1e-12),
        update_max,
        parameters: [before.len(), before.iter().map(Vec::len).sum()],
        warm_step_ms: [ms_a, ms_b],
        images_per_s: [2000.0 * b as f64 / ms_a, 2000.0 * b as f64 / ms_b],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_agrees_with_itself() {
        let config = PretrainConfig {
            size: 32,
            batch: 4,
            projector: vec![16, 8],
            ..PretrainConfig::default()
        };
        let flex = Device::flex();
        let c = compare_step(&config, (&flex, "cpu"), (&flex, "cpu")).unwrap();
        assert!(c.within(1e-6), "{c:?}");
        assert!(c.update_max > 0.0 && c.parameters[0] > 10, "{c:?}");
    }
}
