//! Import of a torchvision MobileNetV3 from an ONNX file into [`MobileNetV3`]: how a user brings
//! ImageNet (or any other) pretrained weights, since nothing is downloaded at run time.
//!
//! ```no_run
//! use std::path::Path;
//! use burn::tensor::Device;
//! use pleura_trainer::model::import::{import_onnx, OnnxMobileNetV3};
//! use pleura_trainer::model::MobileNetV3Config;
//!
//! # fn main() -> anyhow::Result<()> {
//! let path = Path::new("mobilenet_v3_small.onnx");
//! // Either with a known configuration (a 3-channel file into a 1-channel model is fine) ...
//! let model = import_onnx(path, &MobileNetV3Config::small(), &Device::flex())?;
//! // ... or with the configuration read off the file's weights.
//! let file = OnnxMobileNetV3::read(path)?;
//! let config = file.detect_config()?.with_in_channels(1);
//! let model = file.to_model(&config, &Device::flex())?;
//! # Ok(())
//! # }
//! ```
//!
//! # What a file must hold
//!
//! torchvision's `mobilenet_v3_small` / `mobilenet_v3_large` feature extractor (`features`,
//! optionally followed by `avgpool` and the classifier, which is ignored), as PyTorch's ONNX
//! exporter writes it:
//!
//! - `Conv` nodes in torchvision's module order: the stem, then per block the 1x1 expansion (if
//!   any), the depthwise convolution, squeeze-and-excitation `fc1` / `fc2` (if any) and the 1x1
//!   projection, then the last 1x1 convolution. The graph is walked in node order (ONNX requires
//!   topological order, and MobileNetV3's convolutions form a chain).
//! - Weights as initializers (or `Constant` nodes), possibly behind `Identity` nodes (the exporter
//!   deduplicates equal tensors that way); `float_data` / `double_data` / `int32_data` or
//!   little-endian `raw_data`, in f32, f64, f16 or bf16. External data is not supported.
//! - BatchNorm either **folded** into the convolutions (PyTorch's exporter in eval mode: every
//!   Conv has a bias and there is no `BatchNormalization`), or **unfolded**: a
//!   `BatchNormalization` node reading a Conv's output, whose gamma / beta / mean / variance are
//!   loaded as such (a conv bias is absorbed into the mean, a different epsilon into the
//!   variance or gamma).
//! - Activations `Relu`, `HardSwish` (or `HardSigmoid` + `Mul`, as older opsets write it) and,
//!   for the squeeze-and-excitation gate, `HardSigmoid` with alpha 1/6 and beta 1/2; plus
//!   `GlobalAveragePool` / `ReduceMean`, `Mul`, `Add`. After the last convolution, pooling,
//!   flattening and classifier ops (`Flatten`, `Reshape`, `Gemm`, `MatMul`, `Dropout`, ...) are
//!   accepted and ignored. Any other op is an error naming the node.
//!
//! Everything the burn model fixes is checked against the configuration: the number of
//! convolutions, every weight shape, kernel, stride, padding, groups, dilation and activation,
//! and the number of residual additions. Each mismatch is an error naming the file and the node
//! or initializer, with both shapes where shapes differ.
//!
//! # Stem channels
//!
//! A file whose stem takes `C > 1` channels (ImageNet: RGB) loads into a 1-channel model by
//! summing the stem kernel over its input channels: the grey image `x` then gives exactly what
//! the file gives for the image `(x, x, ..., x)`. The file's own input normalisation (ImageNet's
//! per-channel mean and std) is not part of the graph and is not carried over.
//!
//! # BatchNorm of a folded file
//!
//! Our model keeps torchvision's `Conv (no bias) + BatchNorm` layout. A folded Conv `w * x + b`
//! is loaded as the weight `w` and a BatchNorm that is the identity plus `b` in inference mode:
//! gamma 1, beta `b`, running mean 0 and running variance `1 - eps`, so that
//! `gamma / sqrt(var + eps) = 1` (eps = [`BN_EPSILON`](crate::model::spec::BN_EPSILON), the
//! model's own). In inference mode the imported model therefore equals the file. Training mode
//! normalises with batch statistics instead, and the folded file no longer knows torchvision's
//! gamma: fine-tuning starts from per-channel unit-variance activations shifted by `b`, not from
//! the exact pretrained function.

// `graph`: the protobuf as read (tensors, attributes, constants, Identity aliases); `parse`: the
// node walk collecting each Conv with its BatchNormalization and activation; `mapping`: those
// convolutions matched to our layers, BatchNorm folded or unfolded; `load`: the weights written
// into the burn model.
mod graph;
mod load;
mod mapping;
mod parse;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use burn::tensor::Device;

use self::load::fill;
use crate::model::folded::Act;
use crate::model::mobilenet_v3::MobileNetV3;
use crate::model::spec::{MobileNetV3Config, Variant};

/// Reads a torchvision-layout MobileNetV3 (Small or Large, 1-channel or 3-channel stem) ONNX
/// file and returns the burn backbone, on `device`, whose features equal the file's output.
///
/// The model is built like [`MobileNetV3Config::init`] and then loaded: on a plain device
/// (`Device::flex()`) it is in inference mode and its [`MobileNetV3::forward`] equals the file;
/// on an autodiff device it is ready to fine-tune (use `.valid()` for inference). `config` gives
/// the variant, width and input channels the file must match (its seed is unused); a file with a
/// `C`-channel stem also loads into a 1-channel config (kernel summed over the channels, logged).
/// Use [`OnnxMobileNetV3::detect_config`] to read the variant and width off the file instead.
///
/// # Errors
/// The file cannot be read or decoded (truncated, not ONNX), holds an unsupported op, or does
/// not match `config` (number of convolutions, a shape, stride, padding, groups, activation):
/// each error names the file and the node or initializer.
pub fn import_onnx(
    path: &Path,
    config: &MobileNetV3Config,
    device: &Device,
) -> Result<MobileNetV3> {
    OnnxMobileNetV3::read(path)?.to_model(config, device)
}

/// Width multipliers tried (for Small, then Large) by [`OnnxMobileNetV3::detect_config`], in order.
const CANDIDATE_WIDTHS: [f64; 7] = [1.0, 0.75, 0.5, 0.35, 1.25, 1.5, 2.0];

/// `BatchNormalization` parameters read from the file.
#[derive(Clone, Debug)]
struct FileBatchNorm {
    label: String,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    mean: Vec<f32>,
    var: Vec<f32>,
    epsilon: f64,
}

/// One `Conv` node of the file with the `BatchNormalization` and activation that follow it.
#[derive(Clone, Debug)]
struct FileConv {
    /// The node, for messages.
    label: String,
    weight_name: String,
    /// `[out, in / groups, kh, kw]`.
    weight_dims: [usize; 4],
    weight: Vec<f32>,
    /// Initializer name and values of the bias, if the Conv has one.
    bias: Option<(String, Vec<f32>)>,
    batch_norm: Option<FileBatchNorm>,
    kernel: Vec<usize>,
    strides: Vec<usize>,
    /// `[top, left, bottom, right]`.
    pads: Vec<usize>,
    dilations: Vec<usize>,
    group: usize,
    act: Act,
}

/// The convolutions of a MobileNetV3 ONNX file, read and checked for supported ops but not yet
/// matched to a configuration. [`Self::to_model`] matches and loads them.
#[derive(Clone, Debug)]
pub struct OnnxMobileNetV3 {
    path: PathBuf,
    convs: Vec<FileConv>,
    /// `Add` nodes of two computed tensors before the last convolution (the skip connections).
    residual_adds: usize,
}

impl OnnxMobileNetV3 {
    /// Reads and decodes `path` and collects its convolutions (see the module documentation for
    /// what a file must hold). Errors name the file.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading ONNX file {}", path.display()))?;
        // Every error of `parse` names the file.
        Self::parse(&bytes, path)
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of `Conv` nodes (52 for torchvision's Small, 62 for Large).
    pub fn num_convs(&self) -> usize {
        self.convs.len()
    }

    /// Input channels of the file's stem (3 for ImageNet weights).
    pub fn in_channels(&self) -> usize {
        self.convs.first().map_or(0, |c| c.weight_dims[1])
    }

    /// The configuration the file matches: variant and width multiplier (tried in the order
    /// Small, Large and widths 1, 0.75, 0.5, 0.35, 1.25, 1.5, 2), with the file's own stem
    /// channels and seed 0. Use `.with_in_channels(1)` on it to load a colour file into a
    /// grey-scale model.
    ///
    /// # Errors
    /// No candidate matches; the message gives the mismatch against Small at width 1.
    pub fn detect_config(&self) -> Result<MobileNetV3Config> {
        self.detect(self.in_channels()).ok_or_else(|| {
            let config = MobileNetV3Config::small().with_in_channels(self.in_channels());
            let why = self
                .check(&config)
                .err()
                .map_or_else(String::new, |e| format!("{e:#}"));
            anyhow!(
                "ONNX file {} matches no MobileNetV3 (Small or Large, widths {:?}); \
                 against the Small: {why}",
                self.path.display(),
                CANDIDATE_WIDTHS
            )
        })
    }

    fn detect(&self, in_channels: usize) -> Option<MobileNetV3Config> {
        [Variant::Small, Variant::Large]
            .into_iter()
            .flat_map(|v| CANDIDATE_WIDTHS.map(|w| (v, w)))
            .map(|(v, w)| {
                MobileNetV3Config::new(v)
                    .with_width_mult(w)
                    .with_in_channels(in_channels)
            })
            .find(|c| self.check(c).is_ok())
    }

    /// The burn model of `config` on `device` with the file's weights; see [`import_onnx`].
    ///
    /// # Errors
    /// The file does not match `config`; the message names the file, the node and, where
    /// shapes differ, both shapes, and says which configuration the file matches if any.
    pub fn to_model(&self, config: &MobileNetV3Config, device: &Device) -> Result<MobileNetV3> {
        let loaded = self.check(config).map_err(|e| {
            let hint = match self.detect(config.in_channels) {
                Some(c) => format!(" (the file matches {})", describe(&c)),
                None => String::new(),
            };
            anyhow!("{e:#}{hint}")
        })?;
        let file_in = self.in_channels();
        if file_in != config.in_channels {
            log::info!(
                "{}: summing the {file_in}-channel stem kernel over its input channels for the \
                 {}-channel model (a grey image x gives what the file gives for x in every \
                 channel)",
                self.path.display(),
                config.in_channels
            );
        }
        let mut model = config.init(device);
        fill(&mut model, loaded, device)
            .with_context(|| format!("loading ONNX file {}", self.path.display()))?;
        Ok(model)
    }
}

/// "MobileNetV3-Small (width 1, 1 input channel)".
fn describe(config: &MobileNetV3Config) -> String {
    let variant = match config.variant {
        Variant::Small => "Small",
        Variant::Large => "Large",
    };
    let plural = if config.in_channels == 1 { "" } else { "s" };
    format!(
        "MobileNetV3-{variant} (width {}, {} input channel{plural})",
        config.width_mult, config.in_channels
    )
}
