//! Supervised multi-task training of ONE backbone with a head per task.
//!
//! Until self-supervised pretraining provides the shared backbone, this is how a pack gets a
//! backbone whose frozen features serve every task: all tasks' losses (each masked to the
//! frames labelled for it) are summed and back-propagated through one MobileNetV3.

use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};

use super::calibrate::recalibrate_batchnorm;
use super::finetune::FinetuneTraining;
use super::loss::weighted_bce_with_logits;
use super::{to_vec, Batches};
use crate::data::frames::FrameSet;
use crate::model::{Head, HeadConfig, HeadKind, MobileNetV3, MobileNetV3Config};
use crate::progress;

/// One backbone, one head per task.
#[derive(Module, Debug)]
pub struct MultiTaskNetwork {
    /// The shared feature extractor.
    pub backbone: MobileNetV3,
    /// One head per task, in task order.
    pub heads: Vec<Head>,
}

/// Trains a backbone on all `tasks` of `frames` (frames `train`), returning it in inference mode
/// with BatchNorm statistics measured on training frames. It starts from `start` (a pretrained
/// backbone on an autodiff device: multi-task fine-tuning) or, without one, from `config`'s
/// seeded random weights.
pub fn train_shared_backbone(
    config: &MobileNetV3Config,
    start: Option<MobileNetV3>,
    tasks: usize,
    frames: &FrameSet,
    train: &[usize],
    opts: &FinetuneTraining,
) -> MobileNetV3 {
    let device = Device::flex().autodiff();
    let backbone = start.unwrap_or_else(|| config.init(&device));
    let dim = backbone.feature_dim();
    let heads = (0..tasks)
        .map(|t| {
            HeadConfig::new(HeadKind::Linear, dim)
                .with_seed(config.seed + 1000 + t as u64)
                .init(&device)
        })
        .collect();
    let mut net = MultiTaskNetwork { backbone, heads };
    let mut optim = AdamConfig::new()
        .with_weight_decay(Some(WeightDecayConfig::new(opts.weight_decay)))
        .init();
    // Balance each task's classes over the training frames.
    let positive_weight: Vec<f32> = (0..tasks)
        .map(|t| {
            let labels: Vec<usize> = train.iter().filter_map(|&i| frames.class(i, t)).collect();
            let pos = labels.iter().filter(|&&c| c == 1).count();
            let neg = labels.len() - pos;
            if pos == 0 || neg == 0 {
                1.0
            } else {
                neg as f32 / pos as f32
            }
        })
        .collect();
    let mut batches = Batches::new(train.len(), opts.batch, opts.seed);
    let bar = progress::bar(opts.steps, "shared backbone", "steps");
    for _ in 0..opts.steps {
        let index: Vec<usize> = batches.next_batch().into_iter().map(|k| train[k]).collect();
        let n = index.len();
        let features = net.backbone.forward(frames.batch(&index, &device));
        let mut total: Option<Tensor<1>> = None;
        for (t, head) in net.heads.iter().enumerate() {
            let classes: Vec<Option<usize>> = index.iter().map(|&i| frames.class(i, t)).collect();
            if classes.iter().all(Option::is_none) {
                continue;
            }
            let y: Vec<f32> = classes
                .iter()
                .map(|c| f32::from(u8::from(*c == Some(1))))
                .collect();
            let wt: Vec<f32> = classes
                .iter()
                .map(|c| match c {
                    Some(1) => positive_weight[t],
                    Some(_) => 1.0,
                    None => 0.0,
                })
                .collect();
            let loss = weighted_bce_with_logits(
                head.forward(features.clone()),
                Tensor::from_data(TensorData::new(y, [n, 1]), &device),
                Tensor::from_data(TensorData::new(wt, [n, 1]), &device),
            );
            total = Some(match total {
                Some(sum) => sum + loss,
                None => loss,
            });
        }
        let Some(loss) = total else { continue };
        bar.set_message(format!("loss {:.3}", to_vec(loss.clone())[0]));
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        net = optim.step(opts.lr, net, grads);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let calibration: Vec<usize> = train
        .iter()
        .copied()
        .step_by((train.len() / 256).max(1))
        .collect();
    recalibrate_batchnorm(&net.backbone, frames, &calibration, 32)
}
