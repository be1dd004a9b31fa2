//! Task heads on frozen backbone features (linear probing and MLP heads).
//!
//! Features are computed once with the backbone in inference mode, then each head trains on
//! the cached `[N, F]` table, which makes a probe cost seconds rather than minutes.

use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor, TensorData};

use super::loss::weighted_bce_with_logits;
use super::{targets, to_vec, Batches, Labelled};
use crate::data::frames::FrameSet;
use crate::eval::auc::roc_auc;
use crate::model::{FoldedHead, FoldedLinear, Head, HeadConfig, HeadKind, MobileNetV3};
use crate::progress;

/// How a head is trained.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HeadTraining {
    /// Linear or MLP.
    pub kind: HeadKind,
    /// Optimiser steps.
    pub steps: usize,
    /// Examples per step.
    pub batch: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// L2 weight decay.
    pub weight_decay: f32,
    /// Steps between validation AUC checks (the best head is kept: early stopping).
    pub eval_every: usize,
    /// Seed of the initialisation and of the batch order.
    pub seed: u64,
}

impl Default for HeadTraining {
    fn default() -> Self {
        Self {
            kind: HeadKind::mlp(),
            steps: 400,
            batch: 64,
            lr: 1e-3,
            weight_decay: 1e-4,
            eval_every: 25,
            seed: 0,
        }
    }
}

/// A trained model with its validation score.
#[derive(Clone, Debug)]
pub struct Trained<M> {
    /// The model at its best validation AUC, in inference mode.
    pub model: M,
    /// Validation AUC of `model` (`None` when validation lacks a class).
    pub val_auc: Option<f64>,
    /// Step at which `model` was taken.
    pub best_step: usize,
}

/// Features of every frame of `frames`, `[len, feature_dim]` row-major, with the backbone in
/// inference mode.
pub fn extract_features(
    backbone: &MobileNetV3,
    frames: &FrameSet,
    batch: usize,
    device: &Device,
) -> Vec<f32> {
    let backbone = backbone.valid();
    let dim = backbone.feature_dim();
    let bar = progress::bar(frames.len(), "features", "frames");
    let mut out = Vec::with_capacity(frames.len() * dim);
    for start in (0..frames.len()).step_by(batch.max(1)) {
        let end = (start + batch.max(1)).min(frames.len());
        let index: Vec<usize> = (start..end).collect();
        out.extend(to_vec(backbone.forward(frames.batch(&index, device))));
        bar.inc((end - start) as u64);
    }
    bar.finish_and_clear();
    out
}

/// Per-feature standardisation `(x - mean) / std` measured on training rows. Heads train on
/// standardised features (frozen features of a random or pretrained backbone have very uneven
/// scales); at export the affine map is folded into the head's first dense layer, so the pack's
/// head still reads raw backbone features.
#[derive(Clone, Debug, PartialEq)]
pub struct Standardizer {
    /// Per-feature mean.
    pub mean: Vec<f32>,
    /// Per-feature `1 / sqrt(var + VARIANCE_EPSILON)`.
    pub inv_std: Vec<f32>,
}

impl Standardizer {
    /// Measures mean and std of each of the `dim` columns over rows `index` of `table`.
    pub fn fit(table: &[f32], dim: usize, index: &[usize]) -> Self {
        let n = index.len().max(1) as f64;
        let mut sum = vec![0.0f64; dim];
        let mut sq = vec![0.0f64; dim];
        for &i in index {
            for (k, &v) in table[i * dim..(i + 1) * dim].iter().enumerate() {
                sum[k] += v as f64;
                sq[k] += (v as f64) * (v as f64);
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let inv_std = sq
            .iter()
            .zip(&mean)
            .map(|(q, m)| (1.0 / ((q / n - m * m).max(0.0) + VARIANCE_EPSILON).sqrt()) as f32)
            .collect();
        Self {
            mean: mean.into_iter().map(|m| m as f32).collect(),
            inv_std,
        }
    }

    /// A standardised copy of the whole table.
    pub fn apply(&self, table: &[f32]) -> Vec<f32> {
        let dim = self.mean.len();
        table
            .iter()
            .enumerate()
            .map(|(i, &v)| (v - self.mean[i % dim]) * self.inv_std[i % dim])
            .collect()
    }

    /// Folds the standardisation into `layer` (which reads standardised features):
    /// `W' = W diag(inv_std)`, `b' = b - W' mean`.
    pub fn fold_into(&self, layer: &mut FoldedLinear) {
        let dim = layer.in_features;
        for o in 0..layer.out_features {
            let row = &mut layer.weight[o * dim..(o + 1) * dim];
            let mut shift = 0.0f64;
            for ((w, s), m) in row.iter_mut().zip(&self.inv_std).zip(&self.mean) {
                *w *= s;
                shift += *w as f64 * *m as f64;
            }
            layer.bias[o] -= shift as f32;
        }
    }
}

/// Added to each feature's variance before scaling: a feature that is (nearly) constant on
/// the training frames, such as a dead channel, must not be blown up by `1 / std` into a huge
/// input as soon as it moves slightly on new frames.
pub const VARIANCE_EPSILON: f64 = 1e-4;

/// A head trained on standardised features.
#[derive(Clone, Debug)]
pub struct ProbeHead {
    /// The head, reading standardised features, in inference mode.
    pub head: Head,
    /// The standardisation of its input.
    pub standardizer: Standardizer,
}

impl ProbeHead {
    /// Positive-class probabilities on rows `index` of the raw `[N, dim]` feature table.
    pub fn scores(
        &self,
        features: &[f32],
        dim: usize,
        index: &[usize],
        device: &Device,
    ) -> Vec<f32> {
        let rows_std: Vec<f32> = index
            .iter()
            .flat_map(|&i| self.standardizer.apply(&features[i * dim..(i + 1) * dim]))
            .collect();
        let local: Vec<usize> = (0..index.len()).collect();
        head_scores(&self.head, &rows_std, dim, &local, device)
    }

    /// Inference form reading raw features: the standardisation folded into the first layer.
    pub fn fold(&self) -> FoldedHead {
        let mut folded = self.head.fold();
        if let Some(first) = folded.layers.first_mut() {
            self.standardizer.fold_into(first);
        }
        folded
    }
}

/// Rows `index` of a `[N, dim]` table as a tensor.
fn rows(table: &[f32], dim: usize, index: &[usize], device: &Device) -> Tensor<2> {
    let mut data = Vec::with_capacity(index.len() * dim);
    for &i in index {
        data.extend_from_slice(&table[i * dim..(i + 1) * dim]);
    }
    Tensor::from_data(TensorData::new(data, [index.len(), dim]), device)
}

/// Positive-class probabilities of `head` on rows `index` of `features`.
pub fn head_scores(
    head: &Head,
    features: &[f32],
    dim: usize,
    index: &[usize],
    device: &Device,
) -> Vec<f32> {
    if index.is_empty() {
        return Vec::new();
    }
    to_vec(sigmoid(head.forward(rows(features, dim, index, device))))
}

/// Trains a head of `opts.kind` on standardised `features` (`[N, dim]`, raw backbone output) for
/// the examples in `train`, keeping the head with the best AUC on `val`.
pub fn train_probe(
    features: &[f32],
    dim: usize,
    train: &Labelled,
    val: &Labelled,
    opts: &HeadTraining,
    name: &str,
) -> Trained<ProbeHead> {
    let standardizer = Standardizer::fit(features, dim, &train.index);
    let standardized = standardizer.apply(features);
    let trained = train_head(&standardized, dim, train, val, opts, name);
    Trained {
        model: ProbeHead {
            head: trained.model,
            standardizer,
        },
        val_auc: trained.val_auc,
        best_step: trained.best_step,
    }
}

/// Trains a head of `opts.kind` on `features` (`[N, dim]`) as given for the examples in
/// `train`, keeping the head with the best AUC on `val`.
pub fn train_head(
    features: &[f32],
    dim: usize,
    train: &Labelled,
    val: &Labelled,
    opts: &HeadTraining,
    name: &str,
) -> Trained<Head> {
    let plain = Device::flex();
    let device = plain.clone().autodiff();
    let mut head = HeadConfig::new(opts.kind, dim)
        .with_seed(opts.seed)
        .init(&device);
    let mut optim = AdamConfig::new()
        .with_weight_decay(Some(WeightDecayConfig::new(opts.weight_decay)))
        .init();
    let mut batches = Batches::new(train.len(), opts.batch, opts.seed);
    let weight = train.positive_weight();
    let mut best = Trained {
        model: head.valid(),
        val_auc: None,
        best_step: 0,
    };
    let bar = progress::bar(opts.steps, &format!("head {name}"), "steps");
    for step in 1..=opts.steps {
        let b = batches.next_batch();
        let index: Vec<usize> = b.iter().map(|&k| train.index[k]).collect();
        let positive: Vec<bool> = b.iter().map(|&k| train.positive[k]).collect();
        let (y, w) = targets(&positive, weight, &device);
        let logits = head.forward(rows(features, dim, &index, &device));
        let loss = weighted_bce_with_logits(logits, y, w);
        let grads = GradientsParams::from_grads(loss.backward(), &head);
        head = optim.step(opts.lr, head, grads);
        if step % opts.eval_every.max(1) == 0 || step == opts.steps {
            let model = head.valid();
            let auc = roc_auc(
                &head_scores(&model, features, dim, &val.index, &plain),
                &val.positive,
            );
            if best.val_auc.is_none() || auc > best.val_auc {
                best = Trained {
                    model,
                    val_auc: auc,
                    best_step: step,
                };
            }
            bar.set_message(format!("val AUC {:.3}", best.val_auc.unwrap_or(f64::NAN)));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_standardisation_equals_standardising_first() {
        let table: Vec<f32> = (0..12).map(|v| (v * v) as f32 * 0.3 - 2.0).collect(); // 4 rows x 3
        let st = Standardizer::fit(&table, 3, &[0, 1, 2, 3]);
        let std_table = st.apply(&table);
        for k in 0..3 {
            let col: Vec<f32> = (0..4).map(|r| std_table[r * 3 + k]).collect();
            let mean = col.iter().sum::<f32>() / 4.0;
            let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 4.0;
            assert!(
                mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4,
                "{mean} {var}"
            );
        }
        let layer = FoldedLinear {
            in_features: 3,
            out_features: 2,
            weight: vec![0.5, -1.0, 2.0, 0.1, 0.2, 0.3],
            bias: vec![0.1, -0.2],
        };
        let mut folded = layer.clone();
        st.fold_into(&mut folded);
        let dense = |l: &FoldedLinear, x: &[f32]| -> Vec<f32> {
            (0..l.out_features)
                .map(|o| l.bias[o] + (0..3).map(|k| l.weight[o * 3 + k] * x[k]).sum::<f32>())
                .collect()
        };
        for r in 0..4 {
            let a = dense(&layer, &std_table[r * 3..r * 3 + 3]);
            let b = dense(&folded, &table[r * 3..r * 3 + 3]);
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-4, "{x} vs {y}");
            }
        }
    }
}
