//! Writing the checked layers into a freshly built [`MobileNetV3`], in build order.

use anyhow::{anyhow, bail, ensure, Result};
use burn::module::{Param, RunningState};
use burn::nn::conv::Conv2d;
use burn::nn::BatchNorm;
use burn::tensor::{Device, Tensor, TensorData};

use super::mapping::{Loaded, LoadedParams};
use crate::model::blocks::ConvBnAct;
use crate::model::mobilenet_v3::MobileNetV3;

pub(super) fn tensor<const D: usize>(
    values: Vec<f32>,
    dims: [usize; D],
    device: &Device,
) -> Tensor<D> {
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
pub(super) fn fill(model: &mut MobileNetV3, loaded: Vec<Loaded>, device: &Device) -> Result<()> {
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
