//! BatchNorm recalibration: re-estimate running statistics from data, without labels.
//!
//! A freshly initialised backbone has running mean 0 and variance 1 in every BatchNorm, which
//! do not describe its real activations: in inference mode its features are nearly constant.
//! Running training-mode forward passes over a few batches with momentum `1 / (k + 1)` at batch
//! `k` sets each running statistic to the plain average over the batches.

use burn::module::Module;
use burn::tensor::Device;

use crate::data::frames::FrameSet;
use crate::model::{ConvBnAct, MobileNetV3, MobileNetV3Config};

fn conv_bn_layers(model: &mut MobileNetV3) -> Vec<&mut ConvBnAct> {
    let mut layers = vec![&mut model.stem];
    for block in &mut model.blocks {
        if let Some(expand) = block.expand.as_mut() {
            layers.push(expand);
        }
        layers.push(&mut block.depthwise);
        layers.push(&mut block.project);
    }
    layers.push(&mut model.last);
    layers
}

/// Returns `model` (in inference mode) with every BatchNorm's running statistics averaged over
/// training-mode passes on the frames `index`, `batch` frames at a time. Weights are unchanged.
pub fn recalibrate_batchnorm(
    model: &MobileNetV3,
    frames: &FrameSet,
    index: &[usize],
    batch: usize,
) -> MobileNetV3 {
    let device = Device::flex().autodiff();
    let mut model = model.valid().train().to_device(&device);
    let momenta: Vec<f64> = conv_bn_layers(&mut model)
        .iter()
        .map(|l| l.bn.momentum)
        .collect();
    for (k, chunk) in index
        .chunks(batch.max(2))
        .filter(|c| c.len() > 1)
        .enumerate()
    {
        for layer in conv_bn_layers(&mut model) {
            layer.bn.momentum = 1.0 / (k as f64 + 1.0);
        }
        let _ = model.forward(frames.batch(chunk, &device));
    }
    for (layer, m) in conv_bn_layers(&mut model).into_iter().zip(momenta) {
        layer.bn.momentum = m;
    }
    model.valid()
}

/// The random-initialisation baseline: `config`'s seeded weights with BatchNorm statistics
/// measured on up to 256 of the (normalised, unlabelled) frames `train`, in inference mode.
pub fn scratch_backbone(
    config: &MobileNetV3Config,
    frames: &FrameSet,
    train: &[usize],
) -> MobileNetV3 {
    let calibration: Vec<usize> = train
        .iter()
        .copied()
        .step_by((train.len() / 256).max(1))
        .collect();
    recalibrate_batchnorm(&config.init(&Device::flex()), frames, &calibration, 32)
}
