//! End-to-end training of a whole network (backbone + head) for one task.
//!
//! These are the per-task networks of the paper's baseline, and the networks the runtime's
//! serial benchmark runs one after another.

use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::sigmoid;
use burn::tensor::Device;

use super::calibrate::recalibrate_batchnorm;
use super::loss::weighted_bce_with_logits;
use super::probe::Trained;
use super::{targets, to_vec, Batches, Labelled};
use crate::data::frames::FrameSet;
use crate::eval::auc::roc_auc;
use crate::model::FullNetwork;
use crate::progress;

/// How a whole network is fine-tuned.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FinetuneTraining {
    /// Optimiser steps.
    pub steps: usize,
    /// Frames per step.
    pub batch: usize,
    /// Adam learning rate of the whole network, or of the backbone when `head_lr` is set (the
    /// paper: 1e-5 backbone / 1e-4 head from a pretrained backbone; from scratch a larger rate
    /// is needed).
    pub lr: f64,
    /// Learning rate of the head, when it differs from the backbone's.
    pub head_lr: Option<f64>,
    /// L2 weight decay (paper: 1e-4).
    pub weight_decay: f32,
    /// Steps between validation AUC checks (the best network is kept).
    pub eval_every: usize,
    /// Seed of the batch order.
    pub seed: u64,
}

impl Default for FinetuneTraining {
    fn default() -> Self {
        Self {
            steps: 150,
            batch: 32,
            lr: 1e-3,
            head_lr: None,
            weight_decay: 1e-4,
            eval_every: 25,
            seed: 0,
        }
    }
}

/// Positive-class probabilities of `net` (in inference mode) on frames `index`.
pub fn network_scores(
    net: &FullNetwork,
    frames: &FrameSet,
    index: &[usize],
    device: &Device,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(index.len());
    for chunk in index.chunks(64) {
        let x = frames.batch(chunk, device);
        out.extend(to_vec(sigmoid(net.forward(x))));
    }
    out
}

/// Trains `net` (created on an autodiff device) on frames `train`, keeping the network with the
/// best AUC on `val`.
pub fn finetune(
    mut net: FullNetwork,
    frames: &FrameSet,
    train: &Labelled,
    val: &Labelled,
    opts: &FinetuneTraining,
    name: &str,
) -> Trained<FullNetwork> {
    let plain = Device::flex();
    let device = plain.clone().autodiff();
    let mut optim = AdamConfig::new()
        .with_weight_decay(Some(WeightDecayConfig::new(opts.weight_decay)))
        .init();
    let mut batches = Batches::new(train.len(), opts.batch, opts.seed);
    let weight = train.positive_weight();
    let mut best: Option<Trained<FullNetwork>> = None;
    let calibration: Vec<usize> = train
        .index
        .iter()
        .copied()
        .step_by((train.len() / 256).max(1))
        .collect();
    let bar = progress::bar(opts.steps, &format!("finetune {name}"), "steps");
    for step in 1..=opts.steps {
        let b = batches.next_batch();
        let index: Vec<usize> = b.iter().map(|&k| train.index[k]).collect();
        let positive: Vec<bool> = b.iter().map(|&k| train.positive[k]).collect();
        let (y, w) = targets(&positive, weight, &device);
        let logits = net.forward(frames.batch(&index, &device));
        let loss = weighted_bce_with_logits(logits, y, w);
        let loss_value = to_vec(loss.clone())[0];
        let mut grads = loss.backward();
        net = match opts.head_lr {
            None => {
                let grads = GradientsParams::from_grads(grads, &net);
                optim.step(opts.lr, net, grads)
            }
            Some(head_lr) => {
                // The paper's two rates: small steps for the pretrained backbone, larger for
                // the new head. One Adam keeps the state of both, keyed by parameter.
                let gb = GradientsParams::from_module(&mut grads, &net.backbone);
                let gh = GradientsParams::from_module(&mut grads, &net.head);
                let FullNetwork { backbone, head } = net;
                FullNetwork::new(
                    optim.step(opts.lr, backbone, gb),
                    optim.step(head_lr, head, gh),
                )
            }
        };
        if step % opts.eval_every.max(1) == 0 || step == opts.steps {
            // Batch statistics drift fast while training from scratch; the running averages
            // (momentum 0.01) lag behind, so evaluate with statistics re-measured on training frames.
            let model = FullNetwork::new(
                recalibrate_batchnorm(&net.backbone, frames, &calibration, 32),
                net.head.valid(),
            );
            let auc = roc_auc(
                &network_scores(&model, frames, &val.index, &plain),
                &val.positive,
            );
            if best
                .as_ref()
                .is_none_or(|b| b.val_auc.is_none() || auc > b.val_auc)
            {
                best = Some(Trained {
                    model,
                    val_auc: auc,
                    best_step: step,
                });
            }
        }
        bar.set_message(format!(
            "loss {loss_value:.3} best val AUC {:.3}",
            best.as_ref().and_then(|b| b.val_auc).unwrap_or(f64::NAN)
        ));
        bar.inc(1);
    }
    bar.finish_and_clear();
    best.unwrap_or_else(|| Trained {
        model: FullNetwork::new(
            recalibrate_batchnorm(&net.backbone, frames, &calibration, 32),
            net.head.valid(),
        ),
        val_auc: None,
        best_step: 0,
    })
}
