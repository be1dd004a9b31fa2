//! The MobileNetV3 architecture as data: torchvision's block tables and the configuration that
//! builds a [`MobileNetV3`](crate::model::MobileNetV3) from them.
//!
//! The tables are those of torchvision's `_mobilenet_v3_conf` (`torchvision/models/mobilenetv3.py`,
//! without `reduced_tail` or `dilated`), which follow Tables 1 and 2 of Howard et al., "Searching
//! for MobileNetV3" (arXiv 1905.02244). Every channel count is scaled by `width_mult` and rounded
//! with [`make_divisible`] exactly as torchvision rounds it.

use burn::config::Config;
use serde::{Deserialize, Serialize};

use crate::model::folded::Act;

/// BatchNorm epsilon of torchvision's MobileNetV3 (`nn.BatchNorm2d(eps=0.001)`).
pub const BN_EPSILON: f64 = 1e-3;

/// BatchNorm momentum of torchvision's MobileNetV3 (`nn.BatchNorm2d(momentum=0.01)`).
///
/// burn uses PyTorch's convention, `running = (1 - momentum) * running + momentum * batch`
/// (`burn::nn::BatchNorm::forward_train`), so the number carries over unchanged. One difference
/// remains: burn feeds the *biased* batch variance into `running_var` where PyTorch feeds the
/// unbiased one (factor `n / (n - 1)`, with `n = batch * height * width`; at most 0.2% for the
/// smallest maps of a batch of 32 at 128x128).
pub const BN_MOMENTUM: f64 = 0.01;

/// Number of channels of the stem convolution before width scaling (torchvision: the input
/// channels of the first block, 16 for both variants).
pub const STEM_CHANNELS: usize = 16;

/// The two published sizes of MobileNetV3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// MobileNetV3-Small: 11 blocks, 576 features at `width_mult = 1`.
    Small,
    /// MobileNetV3-Large: 15 blocks, 960 features at `width_mult = 1`.
    Large,
}

/// The non-linearity used inside a block (torchvision's `"RE"` / `"HS"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `max(x, 0)` (`"RE"`).
    Relu,
    /// `x * relu6(x + 3) / 6` (`"HS"`).
    HardSwish,
}

impl Activation {
    /// The same activation as a [`folded::Act`](crate::model::folded::Act).
    pub fn to_act(self) -> Act {
        match self {
            Activation::Relu => Act::Relu,
            Activation::HardSwish => Act::HardSwish,
        }
    }
}

/// One inverted-residual block, with channel counts already scaled and rounded
/// (torchvision's `InvertedResidualConfig`, dilation 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockSpec {
    /// Input channels (the previous block's `out`, or the stem's channels).
    pub input: usize,
    /// Kernel size of the depthwise convolution (3 or 5); padding is `(kernel - 1) / 2`.
    pub kernel: usize,
    /// Channels after the 1x1 expansion. When equal to `input` the expansion is omitted.
    pub expanded: usize,
    /// Output channels of the 1x1 linear projection.
    pub out: usize,
    /// Whether squeeze-and-excitation follows the depthwise convolution.
    pub use_se: bool,
    /// Non-linearity of the expansion and depthwise convolutions.
    pub activation: Activation,
    /// Stride of the depthwise convolution (1 or 2).
    pub stride: usize,
}

impl BlockSpec {
    /// Whether the block has a 1x1 expansion convolution (`expanded != input`).
    pub fn has_expansion(&self) -> bool {
        self.expanded != self.input
    }

    /// Whether the block input is added to its output (`stride == 1 && input == out`).
    pub fn residual(&self) -> bool {
        self.stride == 1 && self.input == self.out
    }

    /// Channels of the squeeze-and-excitation bottleneck: `make_divisible(expanded / 4, 8)`.
    pub fn squeeze_channels(&self) -> usize {
        make_divisible((self.expanded / 4) as f64, 8)
    }
}

/// torchvision's `_make_divisible(v, divisor)`: round `v` to the nearest multiple of `divisor`
/// (at least `divisor`), going one step up when rounding down would lose more than 10%.
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut new_v = (((v + d / 2.0) as usize) / divisor * divisor).max(divisor);
    if (new_v as f64) < 0.9 * v {
        new_v += divisor;
    }
    new_v
}

/// A row of torchvision's table before width scaling:
/// `(input, kernel, expanded, out, use_se, activation, stride)`.
type Row = (usize, usize, usize, usize, bool, Activation, usize);

const RE: Activation = Activation::Relu;
const HS: Activation = Activation::HardSwish;

/// `mobilenet_v3_small` in torchvision's `_mobilenet_v3_conf`.
const SMALL_TABLE: [Row; 11] = [
    (16, 3, 16, 16, true, RE, 2),
    (16, 3, 72, 24, false, RE, 2),
    (24, 3, 88, 24, false, RE, 1),
    (24, 5, 96, 40, true, HS, 2),
    (40, 5, 240, 40, true, HS, 1),
    (40, 5, 240, 40, true, HS, 1),
    (40, 5, 120, 48, true, HS, 1),
    (48, 5, 144, 48, true, HS, 1),
    (48, 5, 288, 96, true, HS, 2),
    (96, 5, 576, 96, true, HS, 1),
    (96, 5, 576, 96, true, HS, 1),
];

/// `mobilenet_v3_large` in torchvision's `_mobilenet_v3_conf`.
const LARGE_TABLE: [Row; 15] = [
    (16, 3, 16, 16, false, RE, 1),
    (16, 3, 64, 24, false, RE, 2),
    (24, 3, 72, 24, false, RE, 1),
    (24, 5, 72, 40, true, RE, 2),
    (40, 5, 120, 40, true, RE, 1),
    (40, 5, 120, 40, true, RE, 1),
    (40, 3, 240, 80, false, HS, 2),
    (80, 3, 200, 80, false, HS, 1),
    (80, 3, 184, 80, false, HS, 1),
    (80, 3, 184, 80, false, HS, 1),
    (80, 3, 480, 112, true, HS, 1),
    (112, 3, 672, 112, true, HS, 1),
    (112, 5, 672, 160, true, HS, 2),
    (160, 5, 960, 160, true, HS, 1),
    (160, 5, 960, 160, true, HS, 1),
];

/// Configuration of a MobileNetV3 feature extractor (torchvision's `features` plus global
/// average pooling; no classifier). Build the module with
/// [`MobileNetV3Config::init`](crate::model::MobileNetV3Config::init).
///
/// ```
/// use burn::tensor::Device;
/// use pleura_trainer::model::MobileNetV3Config;
///
/// let config = MobileNetV3Config::small().with_seed(7);
/// let model = config.init(&Device::flex());
/// assert_eq!(model.feature_dim(), 576);
/// ```
#[derive(Config, Debug)]
pub struct MobileNetV3Config {
    /// Small or Large.
    pub variant: Variant,
    /// Width multiplier applied to every channel count (rounded to multiples of 8).
    #[config(default = 1.0)]
    pub width_mult: f64,
    /// Channels of the input image: 1 for B-mode ultrasound, 3 for RGB.
    #[config(default = 1)]
    pub in_channels: usize,
    /// Seed of the weight initialisation. Every parameter draws its values from its own
    /// generator, seeded from this seed and the parameter's position in the network, so the
    /// same config gives the same weights on every backend and in every program.
    #[config(default = 0)]
    pub seed: u64,
}

impl MobileNetV3Config {
    /// MobileNetV3-Small, width 1.0, one input channel (576 features, 926,720 parameters).
    pub fn small() -> Self {
        Self::new(Variant::Small)
    }

    /// MobileNetV3-Large, width 1.0, one input channel (960 features, 2,971,664 parameters).
    pub fn large() -> Self {
        Self::new(Variant::Large)
    }

    /// Scale a channel count by `width_mult` and round it like torchvision's `adjust_channels`.
    pub fn adjust_channels(&self, channels: usize) -> usize {
        make_divisible(channels as f64 * self.width_mult, 8)
    }

    /// Output channels of the stem convolution (3x3, stride 2, hard-swish).
    pub fn stem_channels(&self) -> usize {
        self.adjust_channels(STEM_CHANNELS)
    }

    /// The inverted-residual blocks, scaled and rounded, in order.
    pub fn blocks(&self) -> Vec<BlockSpec> {
        let table: &[Row] = match self.variant {
            Variant::Small => &SMALL_TABLE,
            Variant::Large => &LARGE_TABLE,
        };
        table
            .iter()
            .map(
                |&(input, kernel, expanded, out, use_se, activation, stride)| BlockSpec {
                    input: self.adjust_channels(input),
                    kernel,
                    expanded: self.adjust_channels(expanded),
                    out: self.adjust_channels(out),
                    use_se,
                    activation,
                    stride,
                },
            )
            .collect()
    }

    /// Output channels of the last 1x1 convolution: six times the last block's output
    /// (576 for Small, 960 for Large). This is the length of the feature vector.
    pub fn last_channels(&self) -> usize {
        6 * self.blocks().last().map_or(self.stem_channels(), |b| b.out)
    }

    /// Length of the feature vector produced by the model, same as [`Self::last_channels`].
    pub fn feature_dim(&self) -> usize {
        self.last_channels()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_divisible_matches_torchvision() {
        assert_eq!(make_divisible(16.0, 8), 16);
        assert_eq!(make_divisible(72.0 / 4.0, 8), 24);
        assert_eq!(make_divisible(18.0, 8), 24);
        assert_eq!(make_divisible(4.0, 8), 8);
        assert_eq!(make_divisible(60.0, 8), 64);
        assert_eq!(make_divisible(16.0 * 0.75, 8), 16);
        assert_eq!(make_divisible(96.0 * 0.5, 8), 48);
    }

    #[test]
    fn tables_chain_and_feature_dims() {
        for (config, dim, n) in [
            (MobileNetV3Config::small(), 576, 11),
            (MobileNetV3Config::large(), 960, 15),
        ] {
            let blocks = config.blocks();
            assert_eq!(blocks.len(), n);
            assert_eq!(blocks[0].input, config.stem_channels());
            for pair in blocks.windows(2) {
                assert_eq!(pair[0].out, pair[1].input);
            }
            assert_eq!(config.feature_dim(), dim);
        }
        // Squeeze channels of Small's first block: make_divisible(16 / 4, 8) = 8.
        assert_eq!(MobileNetV3Config::small().blocks()[0].squeeze_channels(), 8);
    }

    #[test]
    fn config_round_trips_through_json() {
        let config = MobileNetV3Config::large()
            .with_width_mult(0.75)
            .with_seed(3);
        let json = serde_json::to_string(&config).unwrap();
        let back: MobileNetV3Config = serde_json::from_str(&json).unwrap();
        assert_eq!(back.variant, Variant::Large);
        assert_eq!(back.width_mult, 0.75);
        assert_eq!(back.in_channels, 1);
        assert_eq!(back.seed, 3);
    }
}
