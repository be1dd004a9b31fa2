//! The ONNX protobuf as read: tensors decoded to `f32`, node attributes, and the graph's
//! constants (initializers, `Constant` nodes) seen through `Identity` aliases.

use std::collections::HashMap;

use anyhow::{anyhow, bail, ensure, Context, Result};
use tract_onnx::pb;

/// `'name' (Op)` or `#index (Op)` for nodes without a name.
pub(super) fn node_label(node: &pb::NodeProto, index: usize) -> String {
    if node.name.is_empty() {
        format!("#{index} ({})", node.op_type)
    } else {
        format!("'{}' ({})", node.name, node.op_type)
    }
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

pub(super) fn attribute<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// An `ints` attribute as non-negative sizes, or `default` if absent.
pub(super) fn usize_list(
    node: &pb::NodeProto,
    name: &str,
    default: Vec<usize>,
) -> Result<Vec<usize>> {
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
pub(super) struct Names<'a> {
    constants: HashMap<String, &'a pb::TensorProto>,
    alias: HashMap<String, String>,
}

impl<'a> Names<'a> {
    pub(super) fn new(graph: &'a pb::GraphProto) -> Self {
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
    pub(super) fn canonical(&self, name: &str) -> String {
        let mut name = name;
        for _ in 0..=self.alias.len() {
            match self.alias.get(name) {
                Some(next) => name = next,
                None => break,
            }
        }
        name.to_string()
    }

    pub(super) fn constant(&self, name: &str) -> Option<&'a pb::TensorProto> {
        self.constants.get(&self.canonical(name)).copied()
    }

    pub(super) fn is_constant(&self, name: &str) -> bool {
        self.constant(name).is_some()
    }

    /// The values of constant input `index` of `node`, named `what` in messages.
    pub(super) fn input_values(
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
