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
//! `gamma / sqrt(var + eps) = 1` (eps = [`BN_EPSILON`], the model's own). In inference mode the
//! imported model therefore equals the file. Training mode normalises with batch statistics
//! instead, and the folded file no longer knows torchvision's gamma: fine-tuning starts from
//! per-channel unit-variance activations shifted by `b`, not from the exact pretrained function.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};
use burn::module::{Param, RunningState};
use burn::nn::conv::Conv2d;
use burn::nn::BatchNorm;
use burn::tensor::{Device, Tensor, TensorData};
use prost::Message;
use tract_onnx::pb;

use crate::model::blocks::ConvBnAct;
use crate::model::folded::Act;
use crate::model::mobilenet_v3::MobileNetV3;
use crate::model::spec::{MobileNetV3Config, Variant, BN_EPSILON};

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

/// Ops accepted up to the last convolution.
const BODY_OPS: [&str; 11] = [
    "Conv",
    "BatchNormalization",
    "Relu",
    "HardSwish",
    "HardSigmoid",
    "Mul",
    "Add",
    "GlobalAveragePool",
    "ReduceMean",
    "Identity",
    "Constant",
];

/// Ops accepted (and ignored) after the last convolution: pooling, flattening, and
/// torchvision's classifier.
const TAIL_OPS: [&str; 11] = [
    "Flatten",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Shape",
    "Gather",
    "Concat",
    "Gemm",
    "MatMul",
    "Dropout",
    "Softmax",
];

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

/// What our model expects at one convolution, derived from a [`MobileNetV3Config`] in the
/// order in which [`MobileNetV3Config::init`] builds the layers.
#[derive(Clone, Debug)]
struct Expected {
    /// Our name of the layer (`stem`, `blocks.3.depthwise`, `blocks.3.se.reduce`, `last`).
    role: String,
    /// `[out, in / groups, k, k]`.
    dims: [usize; 4],
    stride: usize,
    groups: usize,
    act: Act,
    /// Conv + BatchNorm ([`ConvBnAct`]) or a plain conv with bias (squeeze-and-excitation).
    with_batch_norm: bool,
}

/// Weights of one layer, converted to our layout.
#[derive(Clone, Debug)]
struct Loaded {
    dims: [usize; 4],
    weight: Vec<f32>,
    params: LoadedParams,
}

#[derive(Clone, Debug)]
enum LoadedParams {
    /// BatchNorm after a bias-free conv.
    BatchNorm {
        gamma: Vec<f32>,
        beta: Vec<f32>,
        mean: Vec<f32>,
        var: Vec<f32>,
    },
    /// The conv's own bias.
    Bias(Vec<f32>),
}

/// `'name' (Op)` or `#index (Op)` for nodes without a name.
fn node_label(node: &pb::NodeProto, index: usize) -> String {
    if node.name.is_empty() {
        format!("#{index} ({})", node.op_type)
    } else {
        format!("'{}' ({})", node.name, node.op_type)
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

/// IEEE half precision to `f32`.
fn f16_to_f32(h: u16) -> f32 {
    let negative = h & 0x8000 != 0;
    let exponent = ((h >> 10) & 0x1f) as u32;
    let mantissa = (h & 0x3ff) as u32;
    let sign = if negative { 1u32 << 31 } else { 0 };
    match exponent {
        0 => {
            let v = mantissa as f32 * 2f32.powi(-24);
            if negative {
                -v
            } else {
                v
            }
        }
        31 => f32::from_bits(sign | 0x7f80_0000 | (mantissa << 13)),
        e => f32::from_bits(sign | ((e + 127 - 15) << 23) | (mantissa << 13)),
    }
}

/// Values of a floating-point tensor as `f32`, checked against its dimensions.
fn tensor_values(t: &pb::TensorProto) -> Result<(Vec<usize>, Vec<f32>)> {
    use pb::tensor_proto::{DataLocation, DataType};
    if t.data_location == Some(DataLocation::External as i32) || !t.external_data.is_empty() {
        bail!("its data is stored outside the file (external data); export the model with the weights inside it");
    }
    let dims = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| anyhow!("has a negative dimension {d}")))
        .collect::<Result<Vec<usize>>>()?;
    let n = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| anyhow!("has dimensions {dims:?} too large to hold"))?;
    let raw = &t.raw_data;
    let check_len = |got: usize, what: &str| -> Result<()> {
        ensure!(
            got == n,
            "holds {got} {what} for dimensions {dims:?} ({n} values): the file is damaged"
        );
        Ok(())
    };
    let values: Vec<f32> = match DataType::try_from(t.data_type) {
        Ok(DataType::Float) if !raw.is_empty() => {
            ensure!(
                raw.len().is_multiple_of(4),
                "has {} raw bytes, not a multiple of 4",
                raw.len()
            );
            check_len(raw.len() / 4, "f32 values")?;
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }
        Ok(DataType::Float) => {
            check_len(t.float_data.len(), "f32 values")?;
            t.float_data.clone()
        }
        Ok(DataType::Double) if !raw.is_empty() => {
            ensure!(
                raw.len().is_multiple_of(8),
                "has {} raw bytes, not a multiple of 8",
                raw.len()
            );
            check_len(raw.len() / 8, "f64 values")?;
            raw.chunks_exact(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    f64::from_le_bytes(b) as f32
                })
                .collect()
        }
        Ok(DataType::Double) => {
            check_len(t.double_data.len(), "f64 values")?;
            t.double_data.iter().map(|&v| v as f32).collect()
        }
        Ok(kind @ (DataType::Float16 | DataType::Bfloat16)) => {
            let bits: Vec<u16> = if !raw.is_empty() {
                ensure!(
                    raw.len().is_multiple_of(2),
                    "has {} raw bytes, not a multiple of 2",
                    raw.len()
                );
                raw.chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect()
            } else {
                t.int32_data.iter().map(|&v| v as u16).collect()
            };
            check_len(bits.len(), "16-bit values")?;
            if kind == DataType::Float16 {
                bits.into_iter().map(f16_to_f32).collect()
            } else {
                bits.into_iter()
                    .map(|b| f32::from_bits((b as u32) << 16))
                    .collect()
            }
        }
        Ok(other) => bail!(
            "has data type {}, not a floating-point type",
            other.as_str_name()
        ),
        Err(_) => bail!("has unknown data type {}", t.data_type),
    };
    Ok((dims, values))
}

fn attribute<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// An `ints` attribute as non-negative sizes, or `default` if absent.
fn usize_list(node: &pb::NodeProto, name: &str, default: Vec<usize>) -> Result<Vec<usize>> {
    match attribute(node, name) {
        None => Ok(default),
        Some(a) => a
            .ints
            .iter()
            .map(|&v| {
                usize::try_from(v)
                    .map_err(|_| anyhow!("attribute {name} holds a negative value {v}"))
            })
            .collect(),
    }
}

/// The tensors of the graph that are constants (initializers and `Constant` nodes), and the
/// `Identity` aliases: an Identity's output is another name for its input.
struct Names<'a> {
    constants: HashMap<String, &'a pb::TensorProto>,
    alias: HashMap<String, String>,
}

impl<'a> Names<'a> {
    fn new(graph: &'a pb::GraphProto) -> Self {
        let mut constants: HashMap<String, &pb::TensorProto> = graph
            .initializer
            .iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        let mut alias = HashMap::new();
        for node in &graph.node {
            match node.op_type.as_str() {
                "Identity" => {
                    if let (Some(i), Some(o)) = (node.input.first(), node.output.first()) {
                        alias.insert(o.clone(), i.clone());
                    }
                }
                "Constant" => {
                    if let (Some(t), Some(o)) = (
                        attribute(node, "value").and_then(|a| a.t.as_ref()),
                        node.output.first(),
                    ) {
                        constants.insert(o.clone(), t);
                    }
                }
                _ => {}
            }
        }
        Self { constants, alias }
    }

    /// The name `name` stands for, through any chain of Identity nodes.
    fn canonical(&self, name: &str) -> String {
        let mut name = name;
        for _ in 0..=self.alias.len() {
            match self.alias.get(name) {
                Some(next) => name = next,
                None => break,
            }
        }
        name.to_string()
    }

    fn constant(&self, name: &str) -> Option<&'a pb::TensorProto> {
        self.constants.get(&self.canonical(name)).copied()
    }

    fn is_constant(&self, name: &str) -> bool {
        self.constant(name).is_some()
    }

    /// The values of constant input `index` of `node`, named `what` in messages.
    fn input_values(
        &self,
        node: &pb::NodeProto,
        label: &str,
        index: usize,
        what: &str,
    ) -> Result<(String, Vec<usize>, Vec<f32>)> {
        let name = node
            .input
            .get(index)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| anyhow!("node {label} has no {what} (input {index})"))?;
        let tensor = self.constant(name).ok_or_else(|| {
            anyhow!("the {what} '{name}' of node {label} is not an initializer or constant")
        })?;
        let (dims, values) = tensor_values(tensor)
            .with_context(|| format!("the {what} '{name}' of node {label}"))?;
        Ok((name.clone(), dims, values))
    }
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

    fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let model = pb::ModelProto::decode(bytes).with_context(|| {
            format!(
                "decoding ONNX file {} (truncated, or not an ONNX model?)",
                path.display()
            )
        })?;
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| anyhow!("ONNX file {} holds no graph", path.display()))?;
        let names = Names::new(graph);
        let nodes = &graph.node;
        let at = |msg: String| anyhow!("ONNX file {}: {msg}", path.display());

        let last_conv = nodes
            .iter()
            .rposition(|n| n.op_type == "Conv")
            .ok_or_else(|| at("holds no Conv node".into()))?;
        let mut classifier = false;
        for (i, node) in nodes.iter().enumerate() {
            let op = node.op_type.as_str();
            let standard = node.domain.is_empty() || node.domain == "ai.onnx";
            let body = BODY_OPS.contains(&op);
            let tail = i > last_conv && TAIL_OPS.contains(&op);
            if !standard || !(body || tail) {
                let domain = if standard {
                    String::new()
                } else {
                    format!(" of domain '{}'", node.domain)
                };
                let hint = if TAIL_OPS.contains(&op) {
                    " (only accepted after the last Conv)"
                } else {
                    ""
                };
                return Err(at(format!(
                    "node {} uses op {op}{domain}, which a torchvision MobileNetV3 does not \
                     have{hint}",
                    node_label(node, i)
                )));
            }
            classifier |= tail && (op == "Gemm" || op == "MatMul");
        }
        if classifier {
            log::info!(
                "{}: ignoring the classifier (Gemm / MatMul) after the last convolution",
                path.display()
            );
        }

        // Readers of every tensor, by canonical name.
        let mut readers: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, node) in nodes.iter().enumerate() {
            for input in node.input.iter().filter(|n| !n.is_empty()) {
                readers.entry(names.canonical(input)).or_default().push(i);
            }
        }
        let readers_of = |name: &str| -> &[usize] {
            readers
                .get(&names.canonical(name))
                .map_or(&[][..], Vec::as_slice)
        };
        let output_of = |node: &pb::NodeProto, label: &str| -> Result<String> {
            node.output
                .first()
                .filter(|o| !o.is_empty())
                .map(|o| names.canonical(o))
                .ok_or_else(|| at(format!("node {label} has no output")))
        };

        let mut convs = Vec::new();
        let mut used_batch_norms = HashSet::new();
        for (i, node) in nodes.iter().enumerate() {
            if node.op_type != "Conv" {
                continue;
            }
            let label = node_label(node, i);
            let (weight_name, dims, weight) = names
                .input_values(node, &label, 1, "weight")
                .map_err(|e| at(format!("{e:#}")))?;
            let weight_dims: [usize; 4] = dims.as_slice().try_into().map_err(|_| {
                at(format!(
                    "the weight '{weight_name}' of Conv node {label} has shape {dims:?}, \
                     a 2-D convolution needs 4 dimensions"
                ))
            })?;
            let bias = match node.input.get(2).filter(|n| !n.is_empty()) {
                None => None,
                Some(_) => {
                    let (name, dims, values) = names
                        .input_values(node, &label, 2, "bias")
                        .map_err(|e| at(format!("{e:#}")))?;
                    if dims != [weight_dims[0]] {
                        return Err(at(format!(
                            "the bias '{name}' of Conv node {label} has shape {dims:?}, \
                             its weight '{weight_name}' {weight_dims:?} needs [{}]",
                            weight_dims[0]
                        )));
                    }
                    Some((name, values))
                }
            };
            let attr = |name: &str, default: Vec<usize>| {
                usize_list(node, name, default).map_err(|e| at(format!("Conv node {label}: {e:#}")))
            };
            let kernel = attr("kernel_shape", weight_dims[2..].to_vec())?;
            let strides = attr("strides", vec![1, 1])?;
            let mut pads = attr("pads", vec![0; 4])?;
            let dilations = attr("dilations", vec![1, 1])?;
            let group = match attribute(node, "group") {
                None => 1,
                Some(a) => usize::try_from(a.i)
                    .ok()
                    .filter(|&g| g > 0)
                    .ok_or_else(|| at(format!("Conv node {label} has group {}", a.i)))?,
            };
            if let Some(a) = attribute(node, "auto_pad") {
                match String::from_utf8_lossy(&a.s).as_ref() {
                    "" | "NOTSET" => {}
                    "VALID" => pads = vec![0; 4],
                    other => {
                        return Err(at(format!(
                            "Conv node {label} has auto_pad {other}; only explicit pads are \
                             supported"
                        )))
                    }
                }
            }

            // BatchNormalization reading the conv output, if any.
            let conv_out = output_of(node, &label)?;
            let mut out = conv_out.clone();
            let mut batch_norm = None;
            let readers = readers_of(&conv_out);
            if let Some(&b) = readers
                .iter()
                .find(|&&r| nodes[r].op_type == "BatchNormalization")
            {
                let bn = &nodes[b];
                let bn_label = node_label(bn, b);
                if readers.len() != 1
                    || bn.input.first().map(|n| names.canonical(n)) != Some(conv_out.clone())
                {
                    return Err(at(format!(
                        "the output of Conv node {label} must be read only by \
                         BatchNormalization node {bn_label}, as its input X; {} nodes read it",
                        readers.len()
                    )));
                }
                let mode = attribute(bn, "training_mode").map_or(0, |a| a.i);
                if mode != 0 {
                    return Err(at(format!(
                        "BatchNormalization node {bn_label} is in training mode"
                    )));
                }
                let mut values = Vec::new();
                for (index, what) in [(1, "scale"), (2, "B"), (3, "mean"), (4, "var")] {
                    let (name, dims, v) = names
                        .input_values(bn, &bn_label, index, what)
                        .map_err(|e| at(format!("{e:#}")))?;
                    if dims != [weight_dims[0]] {
                        return Err(at(format!(
                            "the {what} '{name}' of BatchNormalization node {bn_label} has \
                             shape {dims:?}, the Conv before it ({label}) has {} channels",
                            weight_dims[0]
                        )));
                    }
                    values.push(v);
                }
                let var = values.pop().unwrap_or_default();
                let mean = values.pop().unwrap_or_default();
                let beta = values.pop().unwrap_or_default();
                let gamma = values.pop().unwrap_or_default();
                let epsilon = attribute(bn, "epsilon").map_or(1e-5, |a| a.f as f64);
                used_batch_norms.insert(b);
                out = output_of(bn, &bn_label)?;
                batch_norm = Some(FileBatchNorm {
                    label: bn_label,
                    gamma,
                    beta,
                    mean,
                    var,
                    epsilon,
                });
            }

            let act = Self::activation(nodes, &names, &out, readers_of(&out), &label)
                .map_err(|e| at(format!("{e:#}")))?;
            convs.push(FileConv {
                label,
                weight_name,
                weight_dims,
                weight,
                bias,
                batch_norm,
                kernel,
                strides,
                pads,
                dilations,
                group,
                act,
            });
        }

        if let Some((i, node)) = nodes
            .iter()
            .enumerate()
            .find(|(i, n)| n.op_type == "BatchNormalization" && !used_batch_norms.contains(i))
        {
            return Err(at(format!(
                "BatchNormalization node {} does not directly follow a Conv",
                node_label(node, i)
            )));
        }
        let residual_adds = nodes[..last_conv]
            .iter()
            .filter(|n| n.op_type == "Add")
            .filter(|n| n.input.len() == 2 && n.input.iter().all(|x| !names.is_constant(x)))
            .count();
        Ok(Self {
            path: path.to_path_buf(),
            convs,
            residual_adds,
        })
    }

    /// The activation applied to the tensor `out` (a Conv or BatchNormalization output) read by
    /// the nodes `readers`.
    fn activation(
        nodes: &[pb::NodeProto],
        names: &Names,
        out: &str,
        readers: &[usize],
        label: &str,
    ) -> Result<Act> {
        let acts: Vec<usize> = readers
            .iter()
            .copied()
            .filter(|&r| {
                matches!(
                    nodes[r].op_type.as_str(),
                    "Relu" | "HardSwish" | "HardSigmoid"
                )
            })
            .collect();
        let &[a] = acts.as_slice() else {
            if acts.is_empty() {
                return Ok(Act::Identity);
            }
            bail!(
                "the output of Conv node {label} is read by {} activations ({}), expected one",
                acts.len(),
                acts.iter()
                    .map(|&r| node_label(&nodes[r], r))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        let node = &nodes[a];
        Ok(match node.op_type.as_str() {
            "Relu" => Act::Relu,
            "HardSwish" => Act::HardSwish,
            _ => {
                let act_label = node_label(node, a);
                let alpha = attribute(node, "alpha").map_or(0.2, |x| x.f as f64);
                let beta = attribute(node, "beta").map_or(0.5, |x| x.f as f64);
                ensure!(
                    (alpha - 1.0 / 6.0).abs() < 1e-6 && (beta - 0.5).abs() < 1e-6,
                    "HardSigmoid node {act_label} has alpha {alpha} and beta {beta}; \
                     MobileNetV3's relu6(x + 3) / 6 needs alpha 1/6 and beta 0.5"
                );
                // HardSigmoid(x) * x is HardSwish (opsets before 14 have no HardSwish op).
                let gate = node.output.first().map(|o| names.canonical(o));
                let swish = nodes.iter().any(|n| {
                    n.op_type == "Mul" && n.input.len() == 2 && {
                        let ins: Vec<String> = n.input.iter().map(|x| names.canonical(x)).collect();
                        gate.as_ref().is_some_and(|g| ins.contains(g))
                            && ins.iter().any(|x| x == out)
                    }
                });
                if swish {
                    Act::HardSwish
                } else {
                    Act::HardSigmoid
                }
            }
        })
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

    /// Matches the file against `config` and converts every layer to our layout.
    fn check(&self, config: &MobileNetV3Config) -> Result<Vec<Loaded>> {
        let path = self.path.display();
        let expected = expected_layers(config);
        ensure!(
            self.convs.len() == expected.len(),
            "ONNX file {path} has {} Conv nodes, {} has {}",
            self.convs.len(),
            describe(config),
            expected.len()
        );
        let residual = config.blocks().iter().filter(|b| b.residual()).count();
        ensure!(
            self.residual_adds == residual,
            "ONNX file {path} has {} residual Add nodes, {} has {residual} skip connections",
            self.residual_adds,
            describe(config)
        );
        let n = expected.len();
        self.convs
            .iter()
            .zip(&expected)
            .enumerate()
            .map(|(i, (conv, want))| {
                let at = format!(
                    "ONNX file {path}: Conv {} of {n}, node {}, layer {} of {}",
                    i + 1,
                    conv.label,
                    want.role,
                    describe(config)
                );
                convert(conv, want).map_err(|e| anyhow!("{at}: {e:#}"))
            })
            .collect()
    }
}

/// The convolutions of `config` in build order (mirrors [`MobileNetV3Config::init`] and
/// `InvertedResidual::new`).
fn expected_layers(config: &MobileNetV3Config) -> Vec<Expected> {
    let layer = |role: String, dims, stride, groups, act, with_batch_norm| Expected {
        role,
        dims,
        stride,
        groups,
        act,
        with_batch_norm,
    };
    let stem = config.stem_channels();
    let mut out = vec![layer(
        "stem".into(),
        [stem, config.in_channels, 3, 3],
        2,
        1,
        Act::HardSwish,
        true,
    )];
    let specs = config.blocks();
    for (i, spec) in specs.iter().enumerate() {
        let act = spec.activation.to_act();
        if spec.has_expansion() {
            out.push(layer(
                format!("blocks.{i}.expand"),
                [spec.expanded, spec.input, 1, 1],
                1,
                1,
                act,
                true,
            ));
        }
        out.push(layer(
            format!("blocks.{i}.depthwise"),
            [spec.expanded, 1, spec.kernel, spec.kernel],
            spec.stride,
            spec.expanded,
            act,
            true,
        ));
        if spec.use_se {
            let squeeze = spec.squeeze_channels();
            out.push(layer(
                format!("blocks.{i}.se.reduce"),
                [squeeze, spec.expanded, 1, 1],
                1,
                1,
                Act::Relu,
                false,
            ));
            out.push(layer(
                format!("blocks.{i}.se.expand"),
                [spec.expanded, squeeze, 1, 1],
                1,
                1,
                Act::HardSigmoid,
                false,
            ));
        }
        out.push(layer(
            format!("blocks.{i}.project"),
            [spec.out, spec.expanded, 1, 1],
            1,
            1,
            Act::Identity,
            true,
        ));
    }
    let last_in = specs.last().map_or(stem, |b| b.out);
    out.push(layer(
        "last".into(),
        [config.last_channels(), last_in, 1, 1],
        1,
        1,
        Act::HardSwish,
        true,
    ));
    out
}

/// Checks one file convolution against what our layer expects and converts its weights.
fn convert(conv: &FileConv, want: &Expected) -> Result<Loaded> {
    let k = want.dims[2];
    let p = (k - 1) / 2;
    let s = want.stride;
    ensure!(
        conv.kernel == [k, k],
        "kernel_shape {:?}, expected [{k}, {k}]",
        conv.kernel
    );
    ensure!(
        conv.strides == [s, s],
        "strides {:?}, expected [{s}, {s}]",
        conv.strides
    );
    ensure!(
        conv.pads == [p, p, p, p],
        "pads {:?}, expected [{p}, {p}, {p}, {p}]",
        conv.pads
    );
    ensure!(
        conv.dilations == [1, 1],
        "dilations {:?}, expected [1, 1] (dilated MobileNetV3 is not supported)",
        conv.dilations
    );
    ensure!(
        conv.group == want.groups,
        "group {}, expected {}",
        conv.group,
        want.groups
    );
    ensure!(
        conv.act == want.act,
        "is followed by activation {:?}, expected {:?}",
        conv.act,
        want.act
    );

    let mut dims = conv.weight_dims;
    let mut weight = conv.weight.clone();
    if want.role == "stem" && want.dims[1] == 1 && dims[1] > 1 && dims[2] * dims[3] > 0 {
        // Sum the kernel over its input channels: [out, C, k, k] -> [out, 1, k, k].
        let (c, kk) = (dims[1], dims[2] * dims[3]);
        weight = weight
            .chunks_exact(c * kk)
            .flat_map(|filter| {
                (0..kk)
                    .map(move |j| (0..c).map(|ch| filter[ch * kk + j] as f64).sum::<f64>() as f32)
            })
            .collect();
        dims[1] = 1;
    }
    ensure!(
        dims == want.dims,
        "weight '{}' has shape {:?}, expected {:?}",
        conv.weight_name,
        conv.weight_dims,
        want.dims
    );

    let out = dims[0];
    let bias: Vec<f64> = conv.bias.as_ref().map_or_else(
        || vec![0.0; out],
        |(_, b)| b.iter().map(|&v| v as f64).collect(),
    );
    let f32s = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
    let params = match (&conv.batch_norm, want.with_batch_norm) {
        // Folded: identity BatchNorm shifted by the conv bias.
        (None, true) => {
            let eps = BN_EPSILON;
            let (gamma, var) = if eps < 1.0 {
                (1.0, 1.0 - eps)
            } else {
                ((1.0 + eps).sqrt(), 1.0)
            };
            LoadedParams::BatchNorm {
                gamma: vec![gamma as f32; out],
                beta: f32s(bias),
                mean: vec![0.0; out],
                var: vec![var as f32; out],
            }
        }
        // Unfolded: the file's statistics; the conv bias moves into the mean, and a different
        // epsilon into the variance (or, where that would not stay positive, into gamma).
        (Some(bn), true) => {
            let eps = BN_EPSILON;
            let (mut gamma, mut mean, mut var) = (vec![], vec![], vec![]);
            for (c, &b) in bias.iter().enumerate() {
                let (g, v) = (bn.gamma[c] as f64, bn.var[c] as f64);
                ensure!(
                    v + bn.epsilon > 0.0,
                    "BatchNormalization node {} has variance {v} at channel {c}",
                    bn.label
                );
                let shifted = v + bn.epsilon - eps;
                if shifted > 0.0 {
                    gamma.push(g);
                    var.push(shifted);
                } else {
                    gamma.push(g * ((v + eps) / (v + bn.epsilon)).sqrt());
                    var.push(v);
                }
                mean.push(bn.mean[c] as f64 - b);
            }
            LoadedParams::BatchNorm {
                gamma: f32s(gamma),
                beta: bn.beta.clone(),
                mean: f32s(mean),
                var: f32s(var),
            }
        }
        (None, false) => LoadedParams::Bias(f32s(bias)),
        // A BatchNorm after a squeeze-and-excitation conv: fold it into the conv.
        (Some(bn), false) => {
            let per_out = weight.len() / out;
            let mut shift = Vec::with_capacity(out);
            for c in 0..out {
                let v = bn.var[c] as f64 + bn.epsilon;
                ensure!(
                    v > 0.0,
                    "BatchNormalization node {} has variance {} at channel {c}",
                    bn.label,
                    bn.var[c]
                );
                let scale = bn.gamma[c] as f64 / v.sqrt();
                for w in &mut weight[c * per_out..(c + 1) * per_out] {
                    *w = (*w as f64 * scale) as f32;
                }
                shift.push(bn.beta[c] as f64 + (bias[c] - bn.mean[c] as f64) * scale);
            }
            LoadedParams::Bias(f32s(shift))
        }
    };
    Ok(Loaded {
        dims,
        weight,
        params,
    })
}

fn tensor<const D: usize>(values: Vec<f32>, dims: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, dims), device)
}

/// Replaces the weight of `conv` (whose shape must be `loaded.dims`).
fn set_weight(
    conv: &mut Conv2d,
    dims: [usize; 4],
    weight: Vec<f32>,
    device: &Device,
) -> Result<()> {
    let have = conv.weight.lazy_shape();
    ensure!(
        have.as_slice() == dims.as_slice(),
        "internal: our layer has weight shape {:?}, the checked file layer {dims:?}",
        have.as_slice()
    );
    conv.weight = Param::from_tensor(tensor(weight, dims, device));
    Ok(())
}

fn set_conv_bn(layer: &mut ConvBnAct, loaded: Loaded, device: &Device) -> Result<()> {
    let LoadedParams::BatchNorm {
        gamma,
        beta,
        mean,
        var,
    } = loaded.params
    else {
        bail!("internal: a Conv + BatchNorm layer got a plain conv");
    };
    set_weight(&mut layer.conv, loaded.dims, loaded.weight, device)?;
    let c = loaded.dims[0];
    let bn: &mut BatchNorm = &mut layer.bn;
    bn.gamma = Param::from_tensor(tensor(gamma, [c], device));
    bn.beta = Param::from_tensor(tensor(beta, [c], device));
    bn.running_mean = RunningState::new(tensor(mean, [c], device));
    bn.running_var = RunningState::new(tensor(var, [c], device));
    Ok(())
}

fn set_plain(conv: &mut Conv2d, loaded: Loaded, device: &Device) -> Result<()> {
    let LoadedParams::Bias(bias) = loaded.params else {
        bail!("internal: a plain conv got BatchNorm parameters");
    };
    let c = loaded.dims[0];
    set_weight(conv, loaded.dims, loaded.weight, device)?;
    conv.bias = Some(Param::from_tensor(tensor(bias, [c], device)));
    Ok(())
}

/// Loads the checked layers into `model`, in build order.
fn fill(model: &mut MobileNetV3, loaded: Vec<Loaded>, device: &Device) -> Result<()> {
    let mut layers = loaded.into_iter();
    let mut next = || {
        layers
            .next()
            .ok_or_else(|| anyhow!("internal: fewer checked layers than the model has"))
    };
    set_conv_bn(&mut model.stem, next()?, device)?;
    for block in &mut model.blocks {
        if let Some(expand) = &mut block.expand {
            set_conv_bn(expand, next()?, device)?;
        }
        set_conv_bn(&mut block.depthwise, next()?, device)?;
        if let Some(se) = &mut block.squeeze_excite {
            set_plain(&mut se.reduce, next()?, device)?;
            set_plain(&mut se.expand, next()?, device)?;
        }
        set_conv_bn(&mut block.project, next()?, device)?;
    }
    set_conv_bn(&mut model.last, next()?, device)?;
    ensure!(
        layers.next().is_none(),
        "internal: more checked layers than the model has"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;

    use crate::export::onnx::backbone_model;
    use crate::model::init::{draw_values, to_vec, Draw};
    use crate::model::mobilenet_v3::tests::{host_random, model_with_nontrivial_bn};

    /// `/work/shared/reference/mobilenet_v3_small_1ch_128` (+ `.onnx`, `_input.npy`,
    /// `_features.npy`).
    const REFERENCE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/reference/mobilenet_v3_small_1ch_128"
    );

    /// A `.npy` file of `<f4` values in C order: its shape and values.
    fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..6], b"\x93NUMPY", "{}", path.display());
        let (len, start) = if bytes[6] == 1 {
            (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
        } else {
            let b = [bytes[8], bytes[9], bytes[10], bytes[11]];
            (u32::from_le_bytes(b) as usize, 12)
        };
        let header = std::str::from_utf8(&bytes[start..start + len]).unwrap();
        assert!(header.contains("'descr': '<f4'"), "{header}");
        assert!(header.contains("'fortran_order': False"), "{header}");
        let shape = header
            .split("'shape': (")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .unwrap()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect::<Vec<usize>>();
        let values = bytes[start + len..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect::<Vec<_>>();
        assert_eq!(values.len(), shape.iter().product::<usize>());
        (shape, values)
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Writes `model` (a folded backbone for 32x32 images) to `dir/name`.
    fn write_model(dir: &Path, name: &str, model: &pb::ModelProto) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, model.encode_to_vec()).unwrap();
        path
    }

    #[test]
    fn reference_file_reproduces_pytorch_features() {
        let onnx = PathBuf::from(format!("{REFERENCE}.onnx"));
        if !onnx.exists() {
            println!("note: {} is absent, skipping", onnx.display());
            return;
        }
        let device = Device::flex();
        let file = OnnxMobileNetV3::read(&onnx).unwrap();
        assert_eq!(file.num_convs(), 52);
        assert_eq!(file.in_channels(), 1);
        let detected = file.detect_config().unwrap();
        assert_eq!(detected.variant, Variant::Small);
        assert_eq!(detected.width_mult, 1.0);
        let model = file.to_model(&MobileNetV3Config::small(), &device).unwrap();
        assert_eq!(model.num_trainable_params(), 926_720);

        let (shape, input) = read_npy(Path::new(&format!("{REFERENCE}_input.npy")));
        assert_eq!(shape, [2, 1, 128, 128]);
        let (fshape, expected) = read_npy(Path::new(&format!("{REFERENCE}_features.npy")));
        assert_eq!(fshape, [2, 576]);
        let x = tensor(input, [2, 1, 128, 128], &device);
        let y = to_vec(model.valid().forward(x));
        let diff = max_abs_diff(&y, &expected);
        let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        println!("imported reference vs PyTorch: max |diff| {diff:e} (max |feature| {scale})");
        assert!(diff <= 1e-4, "max |diff| {diff}");
    }

    #[test]
    fn truncated_or_missing_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let source = PathBuf::from(format!("{REFERENCE}.onnx"));
        let bytes = if source.exists() {
            std::fs::read(&source).unwrap()
        } else {
            let net = MobileNetV3Config::small().init(&Device::flex()).fold();
            backbone_model(&net, 32, 32).encode_to_vec()
        };
        for len in [bytes.len() / 2, bytes.len() - 3, 10] {
            let path = dir.path().join(format!("truncated_{len}.onnx"));
            std::fs::write(&path, &bytes[..len]).unwrap();
            let err = import_onnx(&path, &MobileNetV3Config::small(), &Device::flex())
                .expect_err("a truncated file must not load");
            let message = err.to_string();
            println!("{len} bytes: {err:#}");
            assert!(message.contains(&path.display().to_string()), "{message}");
        }
        let missing = dir.path().join("missing.onnx");
        let err = import_onnx(&missing, &MobileNetV3Config::small(), &Device::flex()).unwrap_err();
        assert!(err.to_string().contains("missing.onnx"), "{err:#}");
    }

    #[test]
    fn round_trip_through_our_exporter_and_rgb_stem_into_grey() {
        let dir = tempfile::tempdir().unwrap();
        let device = Device::flex();
        let rgb = MobileNetV3Config::small().with_in_channels(3).with_seed(4);
        let trained = model_with_nontrivial_bn(&rgb).valid();
        let path = write_model(
            dir.path(),
            "rgb.onnx",
            &backbone_model(&trained.fold(), 32, 32),
        );

        let file = OnnxMobileNetV3::read(&path).unwrap();
        assert_eq!(file.in_channels(), 3);
        let detected = file.detect_config().unwrap();
        assert_eq!(
            (detected.variant, detected.in_channels),
            (Variant::Small, 3)
        );
        let same = file.to_model(&rgb, &device).unwrap();
        let grey = file.to_model(&MobileNetV3Config::small(), &device).unwrap();
        assert_eq!(grey.in_channels(), 1);

        let x = host_random([2, 1, 32, 32], -1.0, 1.0, 21, &device);
        let x3 = Tensor::cat(vec![x.clone(), x.clone(), x.clone()], 1);
        let reference = to_vec(trained.forward(x3.clone()));
        let scale = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(scale > 1e-2, "features should not vanish ({scale})");
        let d_same = max_abs_diff(&to_vec(same.forward(x3)), &reference);
        let d_grey = max_abs_diff(&to_vec(grey.forward(x)), &reference);
        println!("round trip {d_same:e}, grey stem {d_grey:e} (max |y| {scale})");
        assert!(d_same <= 1e-4 && d_grey <= 1e-4, "{d_same} {d_grey}");
    }

    #[test]
    fn large_round_trip_and_detection() {
        let dir = tempfile::tempdir().unwrap();
        let device = Device::flex();
        let config = MobileNetV3Config::large()
            .with_width_mult(0.75)
            .with_seed(8);
        let model = config.init(&device);
        let path = write_model(
            dir.path(),
            "large.onnx",
            &backbone_model(&model.fold(), 32, 32),
        );
        let file = OnnxMobileNetV3::read(&path).unwrap();
        let detected = file.detect_config().unwrap();
        assert_eq!(detected.variant, Variant::Large);
        assert_eq!(detected.width_mult, 0.75);
        let imported = file.to_model(&detected, &device).unwrap();
        let x = host_random([1, 1, 32, 32], -1.0, 1.0, 3, &device);
        let diff = max_abs_diff(
            &to_vec(imported.forward(x.clone())),
            &to_vec(model.forward(x)),
        );
        assert!(diff <= 1e-4, "{diff}");
    }

    /// Features of the file `model` for `input` (`[1, 1, 32, 32]`), computed by tract.
    fn tract_features(model: &pb::ModelProto, input: &[f32]) -> Vec<f32> {
        use tract_onnx::prelude::*;
        let plan = tract_onnx::onnx()
            .model_for_proto_model(model)
            .unwrap()
            .with_input_fact(0, f32::fact([1, 1, 32, 32]).into())
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let x = tract_onnx::prelude::Tensor::from_shape(&[1, 1, 32, 32], input).unwrap();
        let out = plan.run(tvec!(x.into())).unwrap();
        let view = out[0].to_plain_array_view::<f32>().unwrap();
        view.iter().copied().collect()
    }

    #[test]
    fn unfolded_batch_norm_nodes_load_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let device = Device::flex();
        let net = MobileNetV3Config::small().with_seed(5).init(&device).fold();
        let mut proto = backbone_model(&net, 32, 32);
        // A BatchNormalization (epsilon 1e-5, not ours) after every Conv, squeeze-and-excitation
        // included; channel 0 gets a variance below our epsilon.
        let graph = proto.graph.as_mut().unwrap();
        let mut nodes = Vec::new();
        let mut seed = 500;
        for node in std::mem::take(&mut graph.node) {
            if node.op_type != "Conv" {
                nodes.push(node);
                continue;
            }
            let c = net.stem.out_channels.max(1);
            let out = node.output[0].clone();
            let channels = graph
                .initializer
                .iter()
                .find(|t| t.name == node.input[1])
                .map_or(c, |t| t.dims[0] as usize);
            let mut conv = node;
            conv.output[0] = format!("{out}_pre");
            let pre = conv.output[0].clone();
            nodes.push(conv);
            let mut inputs = vec![pre];
            for (what, lo, hi) in [
                ("scale", 0.5, 1.5),
                ("B", -0.2, 0.2),
                ("mean", -0.2, 0.2),
                ("var", 0.5, 1.5),
            ] {
                seed += 1;
                let half = (hi - lo) / 2.0;
                let mut values: Vec<f32> =
                    draw_values(channels, Draw::Uniform { bound: half }, seed)
                        .into_iter()
                        .map(|v| v + (lo + half) as f32)
                        .collect();
                if what == "var" {
                    values[0] = 5e-4;
                }
                if what == "scale" {
                    values[0] = 0.03;
                }
                let name = format!("{out}.bn.{what}");
                graph.initializer.push(pb::TensorProto {
                    name: name.clone(),
                    dims: vec![channels as i64],
                    data_type: pb::tensor_proto::DataType::Float as i32,
                    float_data: values,
                    ..Default::default()
                });
                inputs.push(name);
            }
            nodes.push(pb::NodeProto {
                name: format!("{out}_bn"),
                op_type: "BatchNormalization".into(),
                input: inputs,
                output: vec![out],
                attribute: vec![pb::AttributeProto {
                    name: "epsilon".into(),
                    r#type: pb::attribute_proto::AttributeType::Float as i32,
                    f: 1e-5,
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
        graph.node = nodes;
        let path = write_model(dir.path(), "unfolded.onnx", &proto);
        let model = import_onnx(&path, &MobileNetV3Config::small(), &device).unwrap();

        let x = host_random([1, 1, 32, 32], -1.0, 1.0, 13, &device);
        let expected = tract_features(&proto, &to_vec(x.clone()));
        let y = to_vec(model.forward(x));
        let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = max_abs_diff(&y, &expected);
        println!("unfolded BatchNorm vs tract: max |diff| {diff:e} (max |y| {scale})");
        assert!(
            scale > 1e-2 && diff <= 1e-4 * scale.max(1.0),
            "{diff} {scale}"
        );
    }

    #[test]
    fn mismatches_are_errors_naming_the_node() {
        let dir = tempfile::tempdir().unwrap();
        let device = Device::flex();
        let net = MobileNetV3Config::small().init(&device).fold();
        let proto = backbone_model(&net, 32, 32);
        let path = write_model(dir.path(), "small.onnx", &proto);
        let shown = path.display().to_string();

        // Wrong variant: the number of convolutions, with a hint.
        let err = import_onnx(&path, &MobileNetV3Config::large(), &device).unwrap_err();
        let msg = format!("{err:#}");
        println!("{msg}\n");
        assert!(
            msg.contains(&shown) && msg.contains("52 Conv nodes"),
            "{msg}"
        );
        assert!(msg.contains("matches MobileNetV3-Small (width 1"), "{msg}");

        // Wrong width: same count, the first shape that differs, both shapes.
        let narrow = MobileNetV3Config::small().with_width_mult(0.75);
        let msg = format!("{:#}", import_onnx(&path, &narrow, &device).unwrap_err());
        println!("{msg}\n");
        assert!(
            msg.contains("[72, 16, 1, 1]") && msg.contains("[56, 16, 1, 1]"),
            "{msg}"
        );
        assert!(
            msg.contains("blocks.1.expand") && msg.contains("blocks.1.expand.weight"),
            "{msg}"
        );

        // A 1-channel file cannot feed a 3-channel stem.
        let rgb = MobileNetV3Config::small().with_in_channels(3);
        let msg = format!("{:#}", import_onnx(&path, &rgb, &device).unwrap_err());
        println!("{msg}\n");
        assert!(
            msg.contains("stem") && msg.contains("[16, 3, 3, 3]"),
            "{msg}"
        );

        // An op MobileNetV3 does not have.
        let mut odd = proto.clone();
        let node = odd
            .graph
            .as_mut()
            .unwrap()
            .node
            .iter_mut()
            .find(|n| n.op_type == "Relu")
            .unwrap();
        node.op_type = "Elu".into();
        let name = node.name.clone();
        let odd_path = write_model(dir.path(), "odd.onnx", &odd);
        let msg = format!(
            "{:#}",
            import_onnx(&odd_path, &MobileNetV3Config::small(), &device).unwrap_err()
        );
        println!("{msg}\n");
        assert!(
            msg.contains("Elu") && msg.contains(&name) && msg.contains("odd.onnx"),
            "{msg}"
        );

        // A missing initializer.
        let mut broken = proto.clone();
        broken.graph.as_mut().unwrap().initializer.remove(0);
        let broken_path = write_model(dir.path(), "broken.onnx", &broken);
        let msg = format!(
            "{:#}",
            import_onnx(&broken_path, &MobileNetV3Config::small(), &device).unwrap_err()
        );
        println!("{msg}\n");
        assert!(
            msg.contains("stem.weight") && msg.contains("broken.onnx"),
            "{msg}"
        );
    }
}
