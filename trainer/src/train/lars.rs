//! LARS: layer-wise adaptive rate scaling (You et al. 2017, arXiv 1708.03888), the optimiser of
//! the SimCLR / Barlow Twins / VICReg recipes.
//!
//! For each parameter tensor `w` with gradient `g`: `d = g + weight_decay * w`; the trust ratio
//! `q = eta * |w| / |d|` (1 when either norm is 0); `v = momentum * v + q * d`; `w -= lr * v`.
//! As in the reference implementations, 1-D parameters (biases, BatchNorm gamma/beta) get neither
//! weight decay nor adaptation.

use burn::optim::momentum::{Momentum, MomentumConfig, MomentumState};
use burn::optim::{LearningRate, ModuleOptimizer, Optimizer};
use burn::tensor::{Device, Tensor};

/// Settings of [`Lars`].
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LarsConfig {
    /// Momentum factor.
    pub momentum: f64,
    /// L2 weight decay on multi-dimensional parameters.
    pub weight_decay: f64,
    /// Trust coefficient.
    pub eta: f64,
}

impl Default for LarsConfig {
    fn default() -> Self {
        Self {
            momentum: 0.9,
            weight_decay: 1e-6,
            eta: 0.001,
        }
    }
}

impl LarsConfig {
    /// A module optimiser running LARS on every parameter.
    pub fn init(&self) -> ModuleOptimizer {
        ModuleOptimizer::from(Lars {
            momentum: Momentum::new(&MomentumConfig::new().with_momentum(self.momentum)),
            weight_decay: self.weight_decay,
            eta: self.eta,
        })
    }
}

/// The LARS optimiser (build it with [`LarsConfig::init`]).
#[derive(Clone)]
pub struct Lars {
    momentum: Momentum,
    weight_decay: f64,
    eta: f64,
}

fn norm<const D: usize>(t: &Tensor<D>) -> f64 {
    f64::from(t.clone().powi_scalar(2).sum().sqrt().into_scalar::<f32>())
}

impl Optimizer for Lars {
    type State<const D: usize> = MomentumState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let mut d = grad;
        if D > 1 {
            d = d + tensor.clone().mul_scalar(self.weight_decay);
            let (w_norm, d_norm) = (norm(&tensor), norm(&d));
            if w_norm > 0.0 && d_norm > 0.0 {
                d = d.mul_scalar(self.eta * w_norm / d_norm);
            }
        }
        let (velocity, state) = self.momentum.transform(d, state);
        (tensor - velocity.mul_scalar(lr), Some(state))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.to_device(device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::GradientsParams;
    use burn::tensor::TensorData;

    #[test]
    fn trust_ratio_bounds_the_relative_update() {
        let device = Device::flex().autodiff();
        let layer: Linear = LinearConfig::new(4, 3).init(&device);
        let before = crate::train::to_vec(layer.weight.val());
        let x = Tensor::<2>::from_data(TensorData::new(vec![100.0f32; 8], [2, 4]), &device);
        let loss = layer.forward(x).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &layer);
        let cfg = LarsConfig {
            momentum: 0.0,
            weight_decay: 0.0,
            eta: 0.01,
        };
        let layer = cfg.init().step(1.0, layer, grads);
        let after = crate::train::to_vec(layer.weight.val());
        // One step with lr 1 moves the weight by exactly eta * |w| whatever the gradient's scale.
        let delta: f64 = before
            .iter()
            .zip(&after)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let w: f64 = before
            .iter()
            .map(|a| (*a as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            (delta - 0.01 * w).abs() < 1e-4 * w,
            "{delta} vs {}",
            0.01 * w
        );
    }
}
