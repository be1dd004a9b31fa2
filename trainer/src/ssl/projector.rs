//! The projector: the small MLP between the backbone's features and the self-supervised loss.
//!
//! The recipe's projector (VanBerlo et al. 2023, PyTorch port) is a stack of
//! `Linear -> BatchNorm -> ReLU` blocks followed by one bias-free `Linear`, with layer sizes
//! `[768, 768]` on MobileNetV3-Small's 576 features: `576 -> 768 (BN, ReLU) -> 768`. The losses
//! are computed on its output; after pretraining it is discarded and the heads read the
//! backbone's features.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Linear};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use crate::model::init::{torch_linear, SeedStream};

/// Seed domain of projector parameters (see `model/init.rs`), distinct from the backbone's and
/// the heads'.
const PROJECTOR_SEED_DOMAIN: u64 = 0x5052_4f4a; // "PROJ"

/// Feature length of MobileNetV3-Small, the projector's usual input.
pub const DEFAULT_PROJECTOR_INPUT: usize = 576;

/// Configuration of a [`Projector`].
#[derive(Config, Debug)]
pub struct ProjectorConfig {
    /// Length of the feature vector it reads (the backbone's `feature_dim`, 576 for
    /// MobileNetV3-Small).
    pub in_features: usize,
    /// Output sizes of its dense layers in order: each but the last is a
    /// `Linear -> BatchNorm -> ReLU` block, the last is a bias-free `Linear`, whose size is the
    /// embedding dimension. Recipe: `[768, 768]`.
    #[config(default = "vec![768, 768]")]
    pub hidden: Vec<usize>,
    /// Seed of the weight initialisation (same scheme as the backbone's and heads' seeds).
    #[config(default = 0)]
    pub seed: u64,
    /// Epsilon of the BatchNorms (PyTorch's `BatchNorm1d` default).
    #[config(default = 1e-5)]
    pub bn_epsilon: f64,
    /// Momentum of the BatchNorms' running statistics (PyTorch's `BatchNorm1d` default).
    #[config(default = 0.1)]
    pub bn_momentum: f64,
}

impl ProjectorConfig {
    /// Build the projector on `device`: dense layers with PyTorch's default `nn.Linear`
    /// initialisation (values fixed by [`Self::seed`]), BatchNorm weight 1, bias 0, running
    /// mean 0, running variance 1.
    ///
    /// Use `device.autodiff()` to train it; like the backbone, its BatchNorms use batch
    /// statistics only on an autodiff device with training flags enabled (see
    /// [`MobileNetV3`](crate::model::MobileNetV3) on training and inference mode).
    ///
    /// # Panics
    /// If `in_features` is 0, `hidden` is empty or holds a 0.
    pub fn init(&self, device: &Device) -> Projector {
        assert!(self.in_features > 0, "in_features must be positive");
        assert!(
            !self.hidden.is_empty(),
            "the projector needs at least one layer"
        );
        assert!(
            self.hidden.iter().all(|&h| h > 0),
            "projector layer sizes must be positive"
        );
        let mut seeds = SeedStream::new(self.seed, PROJECTOR_SEED_DOMAIN);
        let (last, inner) = self.hidden.split_last().expect("not empty");
        let mut d_in = self.in_features;
        let mut blocks = Vec::with_capacity(inner.len());
        for &d_out in inner {
            blocks.push(ProjectorBlock {
                linear: torch_linear(d_in, d_out, true, &mut seeds, device),
                bn: BatchNormConfig::new(d_out)
                    .with_epsilon(self.bn_epsilon)
                    .with_momentum(self.bn_momentum)
                    .init(device),
            });
            d_in = d_out;
        }
        Projector {
            blocks,
            output: torch_linear(d_in, *last, false, &mut seeds, device),
        }
    }
}

/// `relu(bn(linear(x)))`, one hidden block of the [`Projector`].
#[derive(Module, Debug)]
pub struct ProjectorBlock {
    /// The dense layer (with bias).
    pub linear: Linear,
    /// The BatchNorm over its outputs.
    pub bn: BatchNorm,
}

impl ProjectorBlock {
    /// `relu(bn(linear(x)))`.
    ///
    /// # Shapes
    /// `[N, in] -> [N, out]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        // burn's BatchNorm takes [batch, channels, ...], so [N, C] directly (BatchNorm1d).
        relu(self.bn.forward(self.linear.forward(x)))
    }
}

/// The SSL projector: `Linear-BN-ReLU` blocks, then a bias-free `Linear` to the embedding.
#[derive(Module, Debug)]
pub struct Projector {
    /// The hidden `Linear -> BatchNorm -> ReLU` blocks (one fewer than the configured sizes).
    pub blocks: Vec<ProjectorBlock>,
    /// The final bias-free dense layer to the embedding dimension.
    pub output: Linear,
}

impl Projector {
    /// Embeddings of a batch of backbone features.
    ///
    /// # Shapes
    /// `[N, in_features] -> [N, out_features]`.
    pub fn forward(&self, features: Tensor<2>) -> Tensor<2> {
        let x = self
            .blocks
            .iter()
            .fold(features, |x, block| block.forward(x));
        self.output.forward(x)
    }

    /// Length of the feature vector it reads.
    pub fn in_features(&self) -> usize {
        match self.blocks.first() {
            Some(block) => block.linear.weight.lazy_shape()[0],
            None => self.output.weight.lazy_shape()[0],
        }
    }

    /// Length of the embedding it produces.
    pub fn out_features(&self) -> usize {
        self.output.weight.lazy_shape()[1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::init::to_vec;
    use crate::ssl::tests::{random, tensor};

    #[test]
    fn recipe_projector_shape_and_parameter_count() {
        let device = Device::flex();
        let config = ProjectorConfig::new(DEFAULT_PROJECTOR_INPUT);
        assert_eq!(config.hidden, vec![768, 768]);
        let projector = config.init(&device);
        assert_eq!(projector.blocks.len(), 1);
        assert!(projector.output.bias.is_none());
        assert_eq!(projector.in_features(), 576);
        assert_eq!(projector.out_features(), 768);
        let y = projector.forward(tensor(&random(3 * 576, 1), 3, 576, &device));
        assert_eq!(y.dims(), [3, 768]);
        assert!(to_vec(y).iter().all(|v| v.is_finite()));
        // 576 * 768 + 768 (Linear) + 2 * 768 (BN affine) + 768 * 768 (bias-free Linear).
        assert_eq!(crate::model::trainable_params(&projector), 1_034_496);
        // Other sizes: 10 -> 6 (BN, ReLU) -> 5 (BN, ReLU) -> 4, and a lone bias-free Linear.
        let p = ProjectorConfig::new(10)
            .with_hidden(vec![6, 5, 4])
            .init(&device);
        assert_eq!(p.blocks.len(), 2);
        assert_eq!(
            crate::model::trainable_params(&p),
            10 * 6 + 6 + 12 + 6 * 5 + 5 + 10 + 5 * 4
        );
        let p = ProjectorConfig::new(10).with_hidden(vec![4]).init(&device);
        assert!(p.blocks.is_empty());
        assert_eq!(p.in_features(), 10);
        assert_eq!(crate::model::trainable_params(&p), 40);
    }

    #[test]
    fn initialisation_is_repeatable_from_the_seed() {
        let device = Device::flex();
        let weights = |seed: u64| {
            let p = ProjectorConfig::new(8)
                .with_hidden(vec![6, 4])
                .with_seed(seed)
                .init(&device);
            let mut w = to_vec(p.blocks[0].linear.weight.val());
            w.extend(to_vec(p.output.weight.val()));
            w
        };
        assert_eq!(weights(3), weights(3));
        assert_ne!(weights(3), weights(4));
        let w = weights(3);
        let bound = 1.0 / 8f32.sqrt();
        assert!(w[..48].iter().all(|v| v.abs() <= bound));
    }

    #[test]
    fn training_mode_normalises_with_batch_statistics_and_gradients_flow() {
        let device = Device::flex().autodiff();
        let p = ProjectorConfig::new(5)
            .with_hidden(vec![7, 3])
            .with_seed(1)
            .init(&device);
        let x = tensor(&random(6 * 5, 9), 6, 5, &device).require_grad();
        // Batch-normalised pre-activations have mean 0 over the batch (gamma 1, beta 0).
        let h = p.blocks[0]
            .bn
            .forward(p.blocks[0].linear.forward(x.clone()));
        let mean = to_vec(h.mean_dim(0));
        assert!(mean.iter().all(|m| m.abs() < 1e-5), "{mean:?}");
        let z = p.forward(x.clone());
        assert_eq!(z.dims(), [6, 3]);
        let grads = crate::ssl::nt_xent(z.clone(), z.flip([0]), 0.1).backward();
        let gx = to_vec(x.grad(&grads).expect("input grad"));
        assert!(gx.iter().any(|&g| g != 0.0));
        let gw = to_vec(p.output.weight.grad(&grads).expect("output weight grad"));
        assert!(gw.iter().any(|&g| g != 0.0));
        assert!(p.blocks[0].bn.gamma.grad(&grads).is_some());
    }
}
