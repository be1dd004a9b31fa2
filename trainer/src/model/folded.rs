//! The backbone in inference form: BatchNorm folded into each convolution, plain `f32` arrays.
//!
//! This is the meeting point of the burn model and ONNX: [`crate::model::MobileNetV3`] folds
//! itself into a [`FoldedBackbone`], the exporter writes a `FoldedBackbone` as ONNX nodes, and
//! (later) an ONNX importer reads one back. Nothing here knows about burn or protobuf.

/// The activation that follows a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// No activation.
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `x * relu6(x + 3) / 6` (MobileNetV3).
    HardSwish,
    /// `relu6(x + 3) / 6`, the gate of squeeze-and-excitation.
    HardSigmoid,
}

/// A 2-D convolution with its bias (BatchNorm already folded in) and activation.
///
/// # Shapes
/// - `weight`: `[out_channels, in_channels / groups, kernel, kernel]`, row-major.
/// - `bias`: `[out_channels]`.
#[derive(Clone, Debug, PartialEq)]
pub struct FoldedConv {
    pub out_channels: usize,
    pub in_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    /// Symmetric zero padding on each side, `(kernel - 1) / 2` in MobileNetV3.
    pub padding: usize,
    pub groups: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub act: Act,
}

/// Squeeze-and-excitation: global average pool, `reduce` (ReLU), `expand` (HardSigmoid),
/// then the block input is multiplied channel-wise by the gate.
#[derive(Clone, Debug, PartialEq)]
pub struct FoldedSqueezeExcite {
    /// 1x1 convolution `channels -> squeeze_channels`, act [`Act::Relu`].
    pub reduce: FoldedConv,
    /// 1x1 convolution `squeeze_channels -> channels`, act [`Act::HardSigmoid`].
    pub expand: FoldedConv,
}

/// One inverted-residual block: optional 1x1 expansion, depthwise convolution, optional
/// squeeze-and-excitation, 1x1 linear projection, and a skip connection when `residual`.
#[derive(Clone, Debug, PartialEq)]
pub struct FoldedBlock {
    pub expand: Option<FoldedConv>,
    pub depthwise: FoldedConv,
    pub squeeze_excite: Option<FoldedSqueezeExcite>,
    pub project: FoldedConv,
    /// `stride == 1 && in_channels == out_channels`: the block input is added to its output.
    pub residual: bool,
}

/// The whole feature extractor: `stem -> blocks -> last -> global average pool -> [N, features]`.
///
/// # Shapes
/// Input `[N, in_channels, H, W]`, output `[N, last.out_channels]`.
#[derive(Clone, Debug, PartialEq)]
pub struct FoldedBackbone {
    pub stem: FoldedConv,
    pub blocks: Vec<FoldedBlock>,
    pub last: FoldedConv,
}

impl FoldedBackbone {
    /// Number of input channels of the stem (1 for B-mode ultrasound).
    pub fn in_channels(&self) -> usize {
        self.stem.in_channels
    }

    /// Length of the feature vector.
    pub fn feature_dim(&self) -> usize {
        self.last.out_channels
    }
}

/// A dense layer, `y = x W^T + b`.
///
/// # Shapes
/// - `weight`: `[out_features, in_features]`, row-major.
/// - `bias`: `[out_features]`.
#[derive(Clone, Debug, PartialEq)]
pub struct FoldedLinear {
    pub in_features: usize,
    pub out_features: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// A task head on the feature vector: `layers` with ReLU between them, then a sigmoid on the
/// single output logit, giving the probability of the task's positive class.
#[derive(Clone, Debug, PartialEq)]
pub struct FoldedHead {
    pub layers: Vec<FoldedLinear>,
}
