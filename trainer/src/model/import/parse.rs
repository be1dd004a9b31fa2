//! Reading a file into [`OnnxMobileNetV3`]: the ops are checked against what a torchvision
//! MobileNetV3 holds, and each `Conv` is collected in node order with the `BatchNormalization`
//! and activation that follow it.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{anyhow, bail, ensure, Context, Result};
use prost::Message;
use tract_onnx::pb;

use super::graph::{attribute, node_label, usize_list, Names};
use super::{FileBatchNorm, FileConv, OnnxMobileNetV3};
use crate::model::folded::Act;

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

impl OnnxMobileNetV3 {
    pub(super) fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
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
}
