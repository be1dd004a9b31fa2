//! Writes folded networks as ONNX (opset 17) with the protobuf types of `tract_onnx::pb`.
//!
//! burn's own ONNX exporter cannot write HardSigmoid, so the graph is written here directly,
//! node by node, from a [`FoldedBackbone`] / [`FoldedHead`]: BatchNorm is already folded into the
//! convolutions, and HardSwish / HardSigmoid are native ONNX nodes that tract and onnxruntime
//! both run as single ops.
//!
//! Graph interfaces (the runtime relies on these names):
//! - backbone: `image` `[batch, C, H, W]` -> `features` `[batch, F]`
//! - head: `features` `[batch, F]` -> `probability` `[batch, 1]`
//! - full network (serial baseline): `image` -> `probability`

use std::path::Path;

use anyhow::{Context, Result};
use prost::Message;
use tract_onnx::pb;

use crate::model::folded::{Act, FoldedBackbone, FoldedConv, FoldedHead, FoldedLinear};

/// Name of the image input of backbones and full networks.
pub const IMAGE: &str = "image";
/// Name of the backbone output and of the head input.
pub const FEATURES: &str = "features";
/// Name of the head and full-network output: probability of the positive class.
pub const PROBABILITY: &str = "probability";

const OPSET: i64 = 17;
const IR_VERSION: i64 = 8;

/// An ONNX graph under construction: nodes in topological order plus their weights.
pub(super) struct GraphBuilder {
    graph: pb::GraphProto,
    counter: usize,
}

impl GraphBuilder {
    pub(super) fn new(name: &str) -> Self {
        Self {
            graph: pb::GraphProto {
                name: name.to_string(),
                ..Default::default()
            },
            counter: 0,
        }
    }

    /// A fresh tensor name with a readable prefix.
    fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}_{}", self.counter)
    }

    pub(super) fn initializer(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len(), "{name}");
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.raw_initializer(name, dims, pb::tensor_proto::DataType::Float, raw)
    }

    /// A constant of any element type from its little-endian bytes.
    pub(super) fn raw_initializer(
        &mut self,
        name: &str,
        dims: &[usize],
        data_type: pb::tensor_proto::DataType,
        raw_data: Vec<u8>,
    ) -> String {
        self.graph.initializer.push(pb::TensorProto {
            name: name.to_string(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type as i32,
            raw_data,
            ..Default::default()
        });
        name.to_string()
    }

    pub(super) fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        attributes: Vec<pb::AttributeProto>,
    ) -> String {
        let output = self.fresh(&op.to_lowercase());
        self.graph.node.push(pb::NodeProto {
            name: output.clone(),
            op_type: op.to_string(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            attribute: attributes,
            ..Default::default()
        });
        output
    }

    /// Renames the output of the last node (graph outputs carry fixed names).
    pub(super) fn rename_last_output(&mut self, name: &str) {
        if let Some(node) = self.graph.node.last_mut() {
            node.output[0] = name.to_string();
        }
    }

    pub(super) fn input(&mut self, name: &str, dims: &[Dim]) {
        self.graph.input.push(value_info(name, dims));
    }

    pub(super) fn output(&mut self, name: &str, dims: &[Dim]) {
        self.graph.output.push(value_info(name, dims));
    }

    /// Conv (+ bias) followed by the activation of `conv`.
    fn conv(&mut self, x: &str, conv: &FoldedConv, prefix: &str) -> String {
        let w = self.initializer(
            &format!("{prefix}.weight"),
            &[
                conv.out_channels,
                conv.in_channels / conv.groups,
                conv.kernel,
                conv.kernel,
            ],
            &conv.weight,
        );
        let b = self.initializer(&format!("{prefix}.bias"), &[conv.out_channels], &conv.bias);
        let k = conv.kernel as i64;
        let p = conv.padding as i64;
        let s = conv.stride as i64;
        let y = self.node(
            "Conv",
            &[x, &w, &b],
            vec![
                ints("kernel_shape", &[k, k]),
                ints("strides", &[s, s]),
                ints("pads", &[p, p, p, p]),
                ints("dilations", &[1, 1]),
                int("group", conv.groups as i64),
            ],
        );
        self.act(&y, conv.act)
    }

    fn act(&mut self, x: &str, act: Act) -> String {
        match act {
            Act::Identity => x.to_string(),
            Act::Relu => self.node("Relu", &[x], vec![]),
            Act::HardSwish => self.node("HardSwish", &[x], vec![]),
            // ONNX's default alpha is 0.2; MobileNetV3's gate is relu6(x + 3) / 6.
            Act::HardSigmoid => self.node(
                "HardSigmoid",
                &[x],
                vec![float("alpha", 1.0 / 6.0), float("beta", 0.5)],
            ),
        }
    }

    fn linear(&mut self, x: &str, layer: &FoldedLinear, prefix: &str) -> String {
        let w = self.initializer(
            &format!("{prefix}.weight"),
            &[layer.out_features, layer.in_features],
            &layer.weight,
        );
        let b = self.initializer(
            &format!("{prefix}.bias"),
            &[layer.out_features],
            &layer.bias,
        );
        self.node("Gemm", &[x, &w, &b], vec![int("transB", 1)])
    }

    /// Backbone nodes from `x` (an `[N, C, H, W]` tensor) to the pooled `[N, F]` features.
    fn backbone(&mut self, x: &str, net: &FoldedBackbone) -> String {
        let mut x = self.conv(x, &net.stem, "stem");
        for (i, block) in net.blocks.iter().enumerate() {
            let input = x.clone();
            if let Some(expand) = &block.expand {
                x = self.conv(&x, expand, &format!("blocks.{i}.expand"));
            }
            x = self.conv(&x, &block.depthwise, &format!("blocks.{i}.depthwise"));
            if let Some(se) = &block.squeeze_excite {
                let pooled = self.node("GlobalAveragePool", &[&x], vec![]);
                let s = self.conv(&pooled, &se.reduce, &format!("blocks.{i}.se.reduce"));
                let gate = self.conv(&s, &se.expand, &format!("blocks.{i}.se.expand"));
                x = self.node("Mul", &[&x, &gate], vec![]);
            }
            x = self.conv(&x, &block.project, &format!("blocks.{i}.project"));
            if block.residual {
                x = self.node("Add", &[&x, &input], vec![]);
            }
        }
        x = self.conv(&x, &net.last, "last");
        let pooled = self.node("GlobalAveragePool", &[&x], vec![]);
        self.node("Flatten", &[&pooled], vec![int("axis", 1)])
    }

    /// Head nodes from `[N, F]` features to the `[N, 1]` probability.
    fn head(&mut self, x: &str, head: &FoldedHead) -> String {
        let mut x = x.to_string();
        for (i, layer) in head.layers.iter().enumerate() {
            if i > 0 {
                x = self.node("Relu", &[&x], vec![]);
            }
            x = self.linear(&x, layer, &format!("head.{i}"));
        }
        self.node("Sigmoid", &[&x], vec![])
    }

    pub(super) fn finish(self, doc: &str) -> pb::ModelProto {
        pb::ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "pleura-train".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc.into(),
            graph: Some(self.graph),
            ..Default::default()
        }
    }
}

/// A dimension of a graph input or output.
#[derive(Clone, Copy)]
pub(super) enum Dim {
    Fixed(usize),
    /// The batch dimension, left symbolic so any batch size runs; the runtime pins it.
    Batch,
}

fn value_info(name: &str, dims: &[Dim]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(n) => Value::DimValue(*n as i64),
                Dim::Batch => Value::DimParam("batch".into()),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn attribute(name: &str, kind: pb::attribute_proto::AttributeType) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: kind as i32,
        ..Default::default()
    }
}

pub(super) fn int(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        i: value,
        ..attribute(name, pb::attribute_proto::AttributeType::Int)
    }
}

fn ints(name: &str, values: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        ints: values.to_vec(),
        ..attribute(name, pb::attribute_proto::AttributeType::Ints)
    }
}

fn float(name: &str, value: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        f: value,
        ..attribute(name, pb::attribute_proto::AttributeType::Float)
    }
}

fn image_dims(net: &FoldedBackbone, height: usize, width: usize) -> [Dim; 4] {
    [
        Dim::Batch,
        Dim::Fixed(net.in_channels()),
        Dim::Fixed(height),
        Dim::Fixed(width),
    ]
}

/// The backbone as an ONNX model: `image [batch, C, height, width]` -> `features [batch, F]`.
pub fn backbone_model(net: &FoldedBackbone, height: usize, width: usize) -> pb::ModelProto {
    let mut g = GraphBuilder::new("pleura_backbone");
    g.input(IMAGE, &image_dims(net, height, width));
    g.backbone(IMAGE, net);
    g.rename_last_output(FEATURES);
    g.output(FEATURES, &[Dim::Batch, Dim::Fixed(net.feature_dim())]);
    g.finish("Pleura shared feature extractor (MobileNetV3, BatchNorm folded).")
}

/// A task head as an ONNX model: `features [batch, F]` -> `probability [batch, 1]`.
pub fn head_model(head: &FoldedHead, task: &str) -> pb::ModelProto {
    let in_features = head.layers.first().map_or(0, |l| l.in_features);
    let mut g = GraphBuilder::new(&format!("pleura_head_{task}"));
    g.input(FEATURES, &[Dim::Batch, Dim::Fixed(in_features)]);
    g.head(FEATURES, head);
    g.rename_last_output(PROBABILITY);
    g.output(PROBABILITY, &[Dim::Batch, Dim::Fixed(1)]);
    g.finish(&format!("Pleura task head '{task}' on backbone features."))
}

/// A whole fine-tuned network (backbone + head) as one ONNX model: `image` -> `probability`.
/// These are the per-task networks that the serial baseline runs one after another.
pub fn full_model(
    net: &FoldedBackbone,
    head: &FoldedHead,
    task: &str,
    height: usize,
    width: usize,
) -> pb::ModelProto {
    let mut g = GraphBuilder::new(&format!("pleura_network_{task}"));
    g.input(IMAGE, &image_dims(net, height, width));
    let features = g.backbone(IMAGE, net);
    g.head(&features, head);
    g.rename_last_output(PROBABILITY);
    g.output(PROBABILITY, &[Dim::Batch, Dim::Fixed(1)]);
    g.finish(&format!(
        "Pleura fine-tuned network for task '{task}' (serial baseline)."
    ))
}

/// Serialises `model` to `path`.
pub fn write(model: &pb::ModelProto, path: &Path) -> Result<()> {
    let bytes = model.encode_to_vec();
    pleura::fsutil::write_atomic(path, &bytes)
        .with_context(|| format!("writing ONNX model {}", path.display()))
}
