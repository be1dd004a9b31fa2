//! Models: the MobileNetV3 feature extractor, task heads, and their folded (inference) form.
//!
//! MobileNetV3 is Howard et al., "Searching for MobileNetV3", ICCV 2019
//! ([arXiv 1905.02244](https://arxiv.org/abs/1905.02244)). The layout here is torchvision's
//! (`torchvision/models/mobilenetv3.py`): the same block tables ([`spec`]), channel rounding
//! (`_make_divisible`), squeeze-and-excitation widths, BatchNorm settings (eps 0.001, momentum
//! 0.01), padding `(k - 1) / 2`, last convolution of `6 x` the last block's channels, and weight
//! initialisation. The one deliberate change is the stem's input channels
//! ([`MobileNetV3Config::in_channels`], 1 for B-mode ultrasound). With it, MobileNetV3-Small has
//! 926,720 parameters and 576 features, Large 2,971,664 and 960.
//!
//! - [`spec`]: the architecture as data ([`MobileNetV3Config`], [`BlockSpec`]).
//! - [`blocks`]: [`ConvBnAct`], [`SqueezeExcite`], [`InvertedResidual`].
//! - [`mobilenet_v3`]: the [`MobileNetV3`] module (training vs inference mode is explained there).
//! - [`heads`]: [`HeadKind`], [`Head`], [`FullNetwork`].
//! - [`folded`]: BatchNorm-folded plain arrays, the contract with the ONNX exporter.
//! - [`import`]: a user's torchvision MobileNetV3 ONNX file (e.g. ImageNet weights) into
//!   [`MobileNetV3`].

pub mod blocks;
pub mod cpu_conv;
pub mod folded;
pub mod heads;
pub mod import;
pub(crate) mod init;
pub mod mobilenet_v3;
pub mod spec;

pub use blocks::{ConvBnAct, InvertedResidual, SqueezeExcite};
pub use folded::{
    Act, FoldedBackbone, FoldedBlock, FoldedConv, FoldedHead, FoldedLinear, FoldedSqueezeExcite,
};
pub use heads::{FullNetwork, FullNetworkConfig, Head, HeadConfig, HeadKind};
pub use import::{import_onnx, OnnxMobileNetV3};
pub use mobilenet_v3::{trainable_params, MobileNetV3};
pub use spec::{make_divisible, Activation, BlockSpec, MobileNetV3Config, Variant};
