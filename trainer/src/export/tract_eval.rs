//! Exported heads scored through tract, the runtime's engine: what the pack's files compute,
//! not what the trainer's models compute.

use anyhow::{Context, Result};
use tract_onnx::pb;
use tract_onnx::prelude::*;

/// An exported model optimised by tract for a `[rows, dim]` f32 input.
fn optimised(model: &pb::ModelProto, rows: usize, dim: usize) -> Result<TypedModel> {
    tract_onnx::onnx()
        .model_for_proto_model(model)?
        .with_input_fact(0, f32::fact([rows, dim]).into())?
        .into_optimized()
        .context("optimising an exported head in tract")
}

/// Probabilities of head `model` (`features [batch, dim] -> probability [batch, 1]`) on rows
/// `index` of the `[N, dim]` feature table, run as one batch in tract.
pub fn head_scores(
    model: &pb::ModelProto,
    features: &[f32],
    dim: usize,
    index: &[usize],
) -> Result<Vec<f32>> {
    if index.is_empty() {
        return Ok(Vec::new());
    }
    let plan = optimised(model, index.len(), dim)?.into_runnable()?;
    let mut data = Vec::with_capacity(index.len() * dim);
    for &i in index {
        data.extend_from_slice(&features[i * dim..(i + 1) * dim]);
    }
    let input = Tensor::from_shape(&[index.len(), dim], &data)?;
    let out = plan.run(tvec!(input.into()))?;
    Ok(out[0]
        .to_plain_array_view::<f32>()?
        .iter()
        .copied()
        .collect())
}

/// The nodes of tract's optimised plan for `model` at batch 1, one line each:
/// `op name: input element types -> output element types`. Shows which ops run in integers.
pub fn optimised_ops(model: &pb::ModelProto, dim: usize) -> Result<Vec<String>> {
    let plan = optimised(model, 1, dim)?;
    plan.nodes()
        .iter()
        .map(|node| {
            let inputs = node
                .inputs
                .iter()
                .map(|o| Ok(format!("{:?}", plan.outlet_fact(*o)?.datum_type)))
                .collect::<Result<Vec<_>>>()?;
            let outputs: Vec<String> = node
                .outputs
                .iter()
                .map(|o| format!("{:?}", o.fact.datum_type))
                .collect();
            Ok(format!(
                "{}: {} -> {}",
                node.op.name(),
                inputs.join(", "),
                outputs.join(", ")
            ))
        })
        .collect()
}
