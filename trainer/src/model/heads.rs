//! Task heads on the backbone's feature vector, and the fine-tunable [`FullNetwork`].
//!
//! The paper (VanBerlo et al. 2023) evaluates three ways to use a pretrained backbone: a linear
//! head on frozen features, a small MLP head (one hidden layer of 32 units) on frozen features,
//! and full fine-tuning of backbone + head. Every head ends in one logit: the probability of the
//! task's positive class is `sigmoid(logit)`.

use burn::config::Config;
use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::folded::{FoldedBackbone, FoldedHead, FoldedLinear};
use crate::model::init::{to_vec, torch_linear, SeedStream};
use crate::model::mobilenet_v3::MobileNetV3;
use crate::model::spec::MobileNetV3Config;

/// Seed domain of head parameters, so that a head and a backbone built from the same user seed
/// do not share random streams.
const HEAD_SEED_DOMAIN: u64 = 0x4845_4144; // "HEAD"

/// Hidden width of the MLP head in the paper (one hidden layer of 32 units).
pub const DEFAULT_MLP_HIDDEN: usize = 32;

fn default_hidden() -> usize {
    DEFAULT_MLP_HIDDEN
}

/// The shape of a task head.
///
/// Serialised with an internal tag: `{"kind": "linear"}`, `{"kind": "mlp", "hidden": 32}`
/// (`hidden` defaults to [`DEFAULT_MLP_HIDDEN`] when absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HeadKind {
    /// One dense layer, `features -> 1`.
    Linear,
    /// `features -> hidden`, ReLU, `hidden -> 1`.
    Mlp {
        /// Width of the hidden layer.
        #[serde(default = "default_hidden")]
        hidden: usize,
    },
}

impl HeadKind {
    /// The paper's MLP head, one hidden layer of [`DEFAULT_MLP_HIDDEN`] units.
    pub fn mlp() -> Self {
        HeadKind::Mlp {
            hidden: DEFAULT_MLP_HIDDEN,
        }
    }
}

/// Configuration of a [`Head`].
#[derive(Config, Debug)]
pub struct HeadConfig {
    /// Linear or MLP.
    pub kind: HeadKind,
    /// Length of the feature vector it reads (the backbone's `feature_dim`).
    pub in_features: usize,
    /// Seed of the weight initialisation (same scheme as [`MobileNetV3Config::seed`]).
    #[config(default = 0)]
    pub seed: u64,
}

fn fold_dense(linear: &Linear) -> FoldedLinear {
    // burn stores [in, out]; the folded form is [out, in].
    let weight = linear.weight.val();
    let [in_features, out_features] = weight.dims();
    let weight = to_vec(weight.transpose());
    let bias = match &linear.bias {
        Some(b) => to_vec(b.val()),
        None => vec![0.0; out_features],
    };
    FoldedLinear {
        in_features,
        out_features,
        weight,
        bias,
    }
}

impl HeadConfig {
    /// Build the head on `device` (PyTorch's default `nn.Linear` initialisation, values fixed by
    /// [`Self::seed`]).
    pub fn init(&self, device: &Device) -> Head {
        assert!(self.in_features > 0, "in_features must be positive");
        let mut seeds = SeedStream::new(self.seed, HEAD_SEED_DOMAIN);
        match self.kind {
            HeadKind::Linear => Head {
                hidden: None,
                output: torch_linear(self.in_features, 1, true, &mut seeds, device),
            },
            HeadKind::Mlp { hidden } => {
                assert!(hidden > 0, "the MLP head needs a hidden layer");
                Head {
                    hidden: Some(torch_linear(
                        self.in_features,
                        hidden,
                        true,
                        &mut seeds,
                        device,
                    )),
                    output: torch_linear(hidden, 1, true, &mut seeds, device),
                }
            }
        }
    }
}

/// A task head: one logit per sample from a feature vector.
#[derive(Module, Debug)]
pub struct Head {
    /// `features -> hidden` followed by ReLU (MLP head only).
    pub hidden: Option<Linear>,
    /// `features or hidden -> 1`.
    pub output: Linear,
}

impl Head {
    /// Logits of the positive class.
    ///
    /// # Shapes
    /// `[N, in_features] -> [N, 1]`.
    pub fn forward(&self, features: Tensor<2>) -> Tensor<2> {
        let x = match &self.hidden {
            Some(hidden) => relu(hidden.forward(features)),
            None => features,
        };
        self.output.forward(x)
    }

    /// Which kind of head this is.
    pub fn kind(&self) -> HeadKind {
        match &self.hidden {
            None => HeadKind::Linear,
            Some(hidden) => HeadKind::Mlp {
                hidden: hidden.weight.lazy_shape()[1],
            },
        }
    }

    /// Length of the feature vector the head reads.
    pub fn in_features(&self) -> usize {
        match &self.hidden {
            Some(hidden) => hidden.weight.lazy_shape()[0],
            None => self.output.weight.lazy_shape()[0],
        }
    }

    /// The head as plain arrays: its dense layers in order (ReLU between them; the consumer
    /// applies the sigmoid to the single output).
    pub fn fold(&self) -> FoldedHead {
        let mut layers = Vec::with_capacity(2);
        if let Some(hidden) = &self.hidden {
            layers.push(fold_dense(hidden));
        }
        layers.push(fold_dense(&self.output));
        FoldedHead { layers }
    }
}

/// Configuration of a [`FullNetwork`] trained from scratch (a fine-tuning run instead builds it
/// from a pretrained backbone with [`FullNetwork::new`]).
#[derive(Config, Debug)]
pub struct FullNetworkConfig {
    /// The feature extractor.
    pub backbone: MobileNetV3Config,
    /// The head on its features.
    pub head: HeadKind,
    /// Seed of the head's initialisation (the backbone has its own in its config).
    #[config(default = 0)]
    pub head_seed: u64,
}

impl FullNetworkConfig {
    /// Build backbone and head on `device`.
    pub fn init(&self, device: &Device) -> FullNetwork {
        let backbone = self.backbone.init(device);
        let head = HeadConfig::new(self.head, backbone.feature_dim())
            .with_seed(self.head_seed)
            .init(device);
        FullNetwork::new(backbone, head)
    }
}

/// Backbone + head in one module: a single-task classifier whose every parameter can be
/// fine-tuned (the paper's "fine-tuned" models and the runtime's serial baseline).
///
/// Training/inference mode follows [`MobileNetV3`]: train on an autodiff device, infer with
/// `model.valid()`. To train only the head, freeze the backbone:
/// `FullNetwork { backbone: net.backbone.freeze(), ..net }`.
#[derive(Module, Debug)]
pub struct FullNetwork {
    /// The feature extractor.
    pub backbone: MobileNetV3,
    /// The task head.
    pub head: Head,
}

impl FullNetwork {
    /// Join a backbone and a head.
    ///
    /// # Panics
    /// If the head does not read the backbone's feature length.
    pub fn new(backbone: MobileNetV3, head: Head) -> Self {
        assert_eq!(
            backbone.feature_dim(),
            head.in_features(),
            "head input must match the backbone's feature dimension"
        );
        Self { backbone, head }
    }

    /// Logits of the positive class.
    ///
    /// # Shapes
    /// `[N, in_channels, H, W] -> [N, 1]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.head.forward(self.backbone.forward(x))
    }

    /// Backbone (BatchNorm folded) and head as plain arrays.
    pub fn fold(&self) -> (FoldedBackbone, FoldedHead) {
        (self.backbone.fold(), self.head.fold())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::mobilenet_v3::tests::{backbone_ref, host_random};

    fn head_ref(head: &FoldedHead, features: &[f32]) -> Vec<f32> {
        let mut x: Vec<f64> = features.iter().map(|&v| v as f64).collect();
        for (i, layer) in head.layers.iter().enumerate() {
            assert_eq!(x.len(), layer.in_features);
            let mut y = layer.bias.iter().map(|&b| b as f64).collect::<Vec<_>>();
            for (o, yo) in y.iter_mut().enumerate() {
                for (j, xj) in x.iter().enumerate() {
                    *yo += layer.weight[o * layer.in_features + j] as f64 * xj;
                }
            }
            if i + 1 < head.layers.len() {
                y.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            x = y;
        }
        x.iter().map(|&v| v as f32).collect()
    }

    #[test]
    fn head_kind_serde() {
        let mlp: HeadKind = serde_json::from_str(r#"{"kind":"mlp"}"#).unwrap();
        assert_eq!(mlp, HeadKind::Mlp { hidden: 32 });
        assert_eq!(mlp, HeadKind::mlp());
        let mlp: HeadKind = serde_json::from_str(r#"{"kind":"mlp","hidden":8}"#).unwrap();
        assert_eq!(mlp, HeadKind::Mlp { hidden: 8 });
        let linear: HeadKind = serde_json::from_str(r#"{"kind":"linear"}"#).unwrap();
        assert_eq!(linear, HeadKind::Linear);
        assert_eq!(
            serde_json::to_string(&HeadKind::mlp()).unwrap(),
            r#"{"kind":"mlp","hidden":32}"#
        );
    }

    #[test]
    fn heads_give_one_logit_and_fold_exactly() {
        let device = Device::flex();
        let features = host_random([3, 576], -1.0, 1.0, 4, &device);
        let rows = crate::model::init::to_vec(features.clone());
        for kind in [HeadKind::Linear, HeadKind::mlp()] {
            let head = HeadConfig::new(kind, 576).with_seed(2).init(&device);
            assert_eq!(head.kind(), kind);
            assert_eq!(head.in_features(), 576);
            let logits = head.forward(features.clone());
            assert_eq!(logits.dims(), [3, 1]);
            let logits = crate::model::init::to_vec(logits);
            let folded = head.fold();
            assert_eq!(folded.layers.last().unwrap().out_features, 1);
            for (n, row) in rows.chunks(576).enumerate() {
                let r = head_ref(&folded, row);
                assert!(
                    (r[0] - logits[n]).abs() < 1e-5,
                    "{kind:?}: {} vs {}",
                    r[0],
                    logits[n]
                );
            }
        }
        // Trainable parameters: 576 + 1 and 576 * 32 + 32 + 32 + 1.
        let linear = HeadConfig::new(HeadKind::Linear, 576).init(&device);
        assert_eq!(crate::model::trainable_params(&linear), 577);
        let mlp = HeadConfig::new(HeadKind::mlp(), 576).init(&device);
        assert_eq!(crate::model::trainable_params(&mlp), 18_497);
    }

    #[test]
    fn full_network_forward_and_fold() {
        let device = Device::flex();
        let config =
            FullNetworkConfig::new(MobileNetV3Config::small().with_seed(5), HeadKind::mlp());
        let net = config.init(&device);
        let x = host_random([2, 1, 32, 32], -1.0, 1.0, 6, &device);
        let image = crate::model::init::to_vec(x.clone());
        let logits = crate::model::init::to_vec(net.forward(x));
        assert_eq!(logits.len(), 2);
        let (backbone, head) = net.fold();
        for (n, img) in image.chunks(32 * 32).enumerate() {
            let r = head_ref(&head, &backbone_ref(&backbone, img, 32, 32));
            assert!((r[0] - logits[n]).abs() < 1e-4, "{} vs {}", r[0], logits[n]);
        }
    }
}
