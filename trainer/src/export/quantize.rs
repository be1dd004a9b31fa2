//! Int8 task heads: calibration on training features, per-channel weight quantisation, and the
//! ONNX form that tract runs in integer arithmetic.
//!
//! Each dense layer `y = W x + b` of a [`FoldedHead`] becomes, in ONNX:
//!
//! ```text
//! x [N, K] f32 -> Sub(lo) -> QuantizeLinear(scale s [K], zero point 0 u8 [K], axis 1) -> q u8
//! MatMulInteger(q, Wq^T i8 [K, O]) -> acc i32 [N, O]
//! Cast(float) -> Mul(ws [O]) -> Add(b' [O])       (then Relu between layers, Sigmoid at the end)
//! ```
//!
//! - Activations: static, per input feature: `lo` and `hi` are the minimum and maximum of that
//!   feature over the calibration rows (the training rows the head was trained on; for a hidden
//!   layer, the f32 head's ReLU outputs on them). `s = (hi - lo) / 255`, so `q = round((x - lo) /
//!   s)` spans the calibrated range in 0..=255; values outside saturate. Per-feature ranges matter:
//!   backbone features have very uneven scales (the heads train on standardised features), and
//!   one scale for all 576 of them would round the small ones away.
//! - Weights: the per-feature input scale is folded into the weights, `W'[o, k] = W[o, k] s[k]`,
//!   then each output channel is quantised symmetrically, `ws[o] = max_k |W'[o, k]| / 127`,
//!   `Wq = round(W' / ws)` in -127..=127.
//! - Bias: `b'[o] = b[o] + sum_k W[o, k] m[k] + Wd[o, k] (lo[k] - m[k])` with `m` the calibration
//!   mean and `Wd = ws Wq / s` the dequantised weights, so that the weight rounding error acts on
//!   the centred input `x - m`, not on `x - lo`.
//!
//! tract 0.23.9 turns `MatMulInteger` into an einsum with i32 accumulation, moves the u8 input to
//! i8 (zero point compensation by row sums) and optimises it into an `OptMatMul` on i8 operands
//! with i32 accumulators: the product runs in integers; only the element-wise quantise and
//! rescale around it run in f32.

use anyhow::{ensure, Result};
use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;

use super::onnx::{int, Dim, GraphBuilder, FEATURES, PROBABILITY};
use crate::model::{FoldedHead, FoldedLinear};

/// Largest magnitude of a weight code (symmetric: -127..=127).
const WEIGHT_MAX: f32 = 127.0;
/// Largest activation code (0..=255).
const ACTIVATION_MAX: f32 = 255.0;

/// Range and mean of each input of one dense layer over the calibration rows.
#[derive(Clone, Debug, PartialEq)]
pub struct InputRange {
    /// Per input: minimum.
    pub lo: Vec<f32>,
    /// Per input: maximum.
    pub hi: Vec<f32>,
    /// Per input: mean.
    pub mean: Vec<f32>,
}

impl InputRange {
    fn measure(rows: &[Vec<f32>], dim: usize) -> InputRange {
        let mut lo = vec![f32::INFINITY; dim];
        let mut hi = vec![f32::NEG_INFINITY; dim];
        let mut sum = vec![0.0f64; dim];
        for row in rows {
            for (k, &v) in row.iter().enumerate() {
                lo[k] = lo[k].min(v);
                hi[k] = hi[k].max(v);
                sum[k] += v as f64;
            }
        }
        let n = rows.len().max(1) as f64;
        InputRange {
            lo,
            hi,
            mean: sum.into_iter().map(|s| (s / n) as f32).collect(),
        }
    }
}

/// One dense layer in int8 form (see the module notes for the arithmetic).
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedLinear {
    /// Inputs (`K`).
    pub in_features: usize,
    /// Outputs (`O`).
    pub out_features: usize,
    /// Per input: subtracted before quantisation (calibrated minimum).
    pub input_offset: Vec<f32>,
    /// Per input: quantisation step.
    pub input_scale: Vec<f32>,
    /// Per input: calibration mean (folded into `bias`; kept for the error bound).
    pub input_mean: Vec<f32>,
    /// `[O, K]` row-major weight codes.
    pub weight: Vec<i8>,
    /// Per output: weight step (includes the input scale).
    pub weight_scale: Vec<f32>,
    /// Per output: bias with the offsets folded in.
    pub bias: Vec<f32>,
}

impl QuantizedLinear {
    /// Quantises `layer` for inputs calibrated as `range`.
    pub fn new(layer: &FoldedLinear, range: &InputRange) -> QuantizedLinear {
        let (k_dim, o_dim) = (layer.in_features, layer.out_features);
        let input_scale: Vec<f32> = range
            .lo
            .iter()
            .zip(&range.hi)
            .map(|(lo, hi)| {
                let step = (hi - lo) / ACTIVATION_MAX;
                if step.is_finite() && step > 0.0 {
                    step
                } else {
                    1.0 // a constant input: it always quantises to 0 and lives in the bias
                }
            })
            .collect();
        let input_offset: Vec<f32> = range
            .lo
            .iter()
            .map(|&lo| if lo.is_finite() { lo } else { 0.0 })
            .collect();
        let mut weight = Vec::with_capacity(o_dim * k_dim);
        let mut weight_scale = Vec::with_capacity(o_dim);
        let mut bias = Vec::with_capacity(o_dim);
        for o in 0..o_dim {
            let row = &layer.weight[o * k_dim..(o + 1) * k_dim];
            let scaled: Vec<f32> = row.iter().zip(&input_scale).map(|(w, s)| w * s).collect();
            let max = scaled.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let ws = if max > 0.0 { max / WEIGHT_MAX } else { 1.0 };
            let mut b = layer.bias[o] as f64;
            for k in 0..k_dim {
                let code = (scaled[k] / ws)
                    .round_ties_even()
                    .clamp(-WEIGHT_MAX, WEIGHT_MAX);
                weight.push(code as i8);
                let dequantised = ws as f64 * code as f64 / input_scale[k] as f64;
                let mean = range.mean[k] as f64;
                b += row[k] as f64 * mean + dequantised * (input_offset[k] as f64 - mean);
            }
            weight_scale.push(ws);
            bias.push(b as f32);
        }
        QuantizedLinear {
            in_features: k_dim,
            out_features: o_dim,
            input_offset,
            input_scale,
            input_mean: range.mean.clone(),
            weight,
            weight_scale,
            bias,
        }
    }

    /// Input codes of `x`, as `QuantizeLinear` computes them (round half to even, saturate).
    pub fn quantize_input(&self, x: &[f32]) -> Vec<u8> {
        x.iter()
            .zip(&self.input_offset)
            .zip(&self.input_scale)
            .map(|((v, lo), s)| ((v - lo) / s).round_ties_even().clamp(0.0, ACTIVATION_MAX) as u8)
            .collect()
    }

    /// `y` from input codes: integer products, then the f32 rescale.
    pub fn forward_codes(&self, q: &[u8]) -> Vec<f32> {
        (0..self.out_features)
            .map(|o| {
                let row = &self.weight[o * self.in_features..(o + 1) * self.in_features];
                let acc: i32 = row.iter().zip(q).map(|(&w, &c)| w as i32 * c as i32).sum();
                acc as f32 * self.weight_scale[o] + self.bias[o]
            })
            .collect()
    }
}

/// A head in int8 form: its layers (ReLU between them, sigmoid after the last).
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedHead {
    /// Dense layers in order.
    pub layers: Vec<QuantizedLinear>,
}

/// Rows `index` of a `[N, dim]` table, each as a vector.
fn table_rows(table: &[f32], dim: usize, index: &[usize]) -> Vec<Vec<f32>> {
    index
        .iter()
        .map(|&i| table[i * dim..(i + 1) * dim].to_vec())
        .collect()
}

fn dense(layer: &FoldedLinear, x: &[f32]) -> Vec<f32> {
    (0..layer.out_features)
        .map(|o| {
            let row = &layer.weight[o * layer.in_features..(o + 1) * layer.in_features];
            layer.bias[o] + row.iter().zip(x).map(|(w, v)| w * v).sum::<f32>()
        })
        .collect()
}

fn relu(x: Vec<f32>) -> Vec<f32> {
    x.into_iter().map(|v| v.max(0.0)).collect()
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

impl QuantizedHead {
    /// Calibrates every layer's input on rows `index` of the raw `[N, dim]` feature table
    /// (the rows the head was trained on) and quantises `head`.
    pub fn calibrate(
        head: &FoldedHead,
        features: &[f32],
        dim: usize,
        index: &[usize],
    ) -> Result<QuantizedHead> {
        ensure!(!index.is_empty(), "int8 calibration needs at least one row");
        ensure!(
            head.layers.first().map(|l| l.in_features) == Some(dim),
            "int8 calibration: the head reads {:?} features, the table has {dim}",
            head.layers.first().map(|l| l.in_features)
        );
        let mut rows = table_rows(features, dim, index);
        let mut layers = Vec::with_capacity(head.layers.len());
        for (i, layer) in head.layers.iter().enumerate() {
            if i > 0 {
                rows = rows.into_iter().map(relu).collect();
            }
            let range = InputRange::measure(&rows, layer.in_features);
            layers.push(QuantizedLinear::new(layer, &range));
            rows = rows.iter().map(|x| dense(layer, x)).collect();
        }
        Ok(QuantizedHead { layers })
    }

    /// Input codes of each layer for one feature vector, and the output logit.
    fn trace(&self, x: &[f32]) -> (Vec<Vec<u8>>, f32) {
        let mut codes = Vec::with_capacity(self.layers.len());
        let mut a = x.to_vec();
        for (i, layer) in self.layers.iter().enumerate() {
            if i > 0 {
                a = relu(a);
            }
            let q = layer.quantize_input(&a);
            a = layer.forward_codes(&q);
            codes.push(q);
        }
        (codes, a.first().copied().unwrap_or(0.0))
    }

    /// Positive-class probability of one feature vector, computed as the ONNX graph does
    /// (integer products): the reference the exported model is tested against.
    pub fn probability(&self, x: &[f32]) -> f32 {
        sigmoid(self.trace(x).1)
    }

    /// Bound on `|probability_int8(x) - probability_f32(x)|` for a feature vector `x` whose
    /// layer inputs lie inside the calibrated ranges (as on the calibration rows), where the f32
    /// head is `head` (the one this was quantised from). Per layer and output:
    /// `sum_k |Wd - W| |a_k - m_k| + |Wd| (e_k + s_k / 2)`, with `a` the f32 head's layer input,
    /// `e` the bound carried from the previous layer (ReLU does not grow it) and
    /// `|Wd - W| <= ws / (2 s)`; the sigmoid's slope is at most 1/4.
    pub fn error_bound(&self, head: &FoldedHead, x: &[f32]) -> f32 {
        let mut a = x.to_vec();
        let mut err = vec![0.0f64; x.len()];
        for (i, (q, f)) in self.layers.iter().zip(&head.layers).enumerate() {
            if i > 0 {
                a = relu(a);
            }
            let (k_dim, mean) = (q.in_features, &q.input_mean);
            err = (0..q.out_features)
                .map(|o| {
                    let ws = q.weight_scale[o] as f64;
                    (0..k_dim)
                        .map(|k| {
                            let s = q.input_scale[k] as f64;
                            let wd = ws * q.weight[o * k_dim + k] as f64 / s;
                            let dw = ws / (2.0 * s);
                            dw * (a[k] as f64 - mean[k] as f64).abs()
                                + wd.abs() * (err[k] + s / 2.0)
                        })
                        .sum::<f64>()
                })
                .collect();
            a = dense(f, &a);
        }
        (err.first().copied().unwrap_or(0.0) / 4.0) as f32
    }
}

/// The int8 head as an ONNX model: `features [batch, F]` -> `probability [batch, 1]`, the same
/// interface as [`super::onnx::head_model`].
pub fn int8_head_model(head: &QuantizedHead, task: &str) -> pb::ModelProto {
    let in_features = head.layers.first().map_or(0, |l| l.in_features);
    let mut g = GraphBuilder::new(&format!("pleura_head_int8_{task}"));
    g.input(FEATURES, &[Dim::Batch, Dim::Fixed(in_features)]);
    let mut x = FEATURES.to_string();
    for (i, layer) in head.layers.iter().enumerate() {
        if i > 0 {
            x = g.node("Relu", &[&x], vec![]);
        }
        x = int8_linear(&mut g, &x, layer, &format!("head.{i}"));
    }
    g.node("Sigmoid", &[&x], vec![]);
    g.rename_last_output(PROBABILITY);
    g.output(PROBABILITY, &[Dim::Batch, Dim::Fixed(1)]);
    g.finish(&format!(
        "Pleura task head '{task}' on backbone features, int8 weights and activations \
         (static per-feature activation ranges calibrated on training features)."
    ))
}

fn int8_linear(g: &mut GraphBuilder, x: &str, layer: &QuantizedLinear, prefix: &str) -> String {
    let (k_dim, o_dim) = (layer.in_features, layer.out_features);
    let offset = g.initializer(
        &format!("{prefix}.input_offset"),
        &[k_dim],
        &layer.input_offset,
    );
    let scale = g.initializer(
        &format!("{prefix}.input_scale"),
        &[k_dim],
        &layer.input_scale,
    );
    let zero = g.raw_initializer(
        &format!("{prefix}.input_zero_point"),
        &[k_dim],
        DataType::Uint8,
        vec![0u8; k_dim],
    );
    // MatMulInteger takes B as [K, O]: the transposed weight codes.
    let transposed: Vec<u8> = (0..k_dim)
        .flat_map(|k| (0..o_dim).map(move |o| (k, o)))
        .map(|(k, o)| layer.weight[o * k_dim + k] as u8)
        .collect();
    let weight = g.raw_initializer(
        &format!("{prefix}.weight_int8"),
        &[k_dim, o_dim],
        DataType::Int8,
        transposed,
    );
    let weight_scale = g.initializer(
        &format!("{prefix}.weight_scale"),
        &[o_dim],
        &layer.weight_scale,
    );
    let bias = g.initializer(&format!("{prefix}.bias"), &[o_dim], &layer.bias);
    let shifted = g.node("Sub", &[x, &offset], vec![]);
    let q = g.node(
        "QuantizeLinear",
        &[&shifted, &scale, &zero],
        vec![int("axis", 1)],
    );
    let acc = g.node("MatMulInteger", &[&q, &weight], vec![]);
    let acc = g.node("Cast", &[&acc], vec![int("to", DataType::Float as i64)]);
    let y = g.node("Mul", &[&acc, &weight_scale], vec![]);
    g.node("Add", &[&y, &bias], vec![])
}
