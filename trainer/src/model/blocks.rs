//! The layers MobileNetV3 is built from, in torchvision's layout: [`ConvBnAct`]
//! (`Conv2dNormActivation`), [`SqueezeExcite`] (`SqueezeExcitation` with a hard-sigmoid gate) and
//! [`InvertedResidual`].
//!
//! Each layer can [fold](ConvBnAct::fold) itself into the plain-array form of
//! [`crate::model::folded`], using the BatchNorm running statistics (inference semantics).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::activation::{hard_sigmoid, relu};
use burn::tensor::{Device, Tensor};

use crate::model::cpu_conv::{batch_norm_cpu, conv2d_cpu};
use crate::model::folded::{Act, FoldedBlock, FoldedConv, FoldedSqueezeExcite};
use crate::model::init::{random_param, to_vec, zeros_param, Draw, SeedStream};
use crate::model::spec::{BlockSpec, BN_EPSILON, BN_MOMENTUM};

/// `relu6(x + 3) / 6`, written `clamp(x / 6 + 1/2, 0, 1)` by burn's `hard_sigmoid`.
pub fn hard_sigmoid6<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    hard_sigmoid(x, 1.0 / 6.0, 0.5)
}

/// `x * relu6(x + 3) / 6` (MobileNetV3's hard-swish).
pub fn hard_swish<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.clone().mul(hard_sigmoid6(x))
}

/// Apply a [folded activation](Act) to a tensor.
pub fn apply_act<const D: usize>(act: Act, x: Tensor<D>) -> Tensor<D> {
    match act {
        Act::Identity => x,
        Act::Relu => relu(x),
        Act::HardSwish => hard_swish(x),
        Act::HardSigmoid => hard_sigmoid6(x),
    }
}

/// A convolution weight drawn like torchvision's `kaiming_normal_(mode="fan_out")`:
/// normal with std `sqrt(2 / fan_out)` where PyTorch's `fan_out = out_channels * k * k`
/// (not divided by the groups: burn's own Kaiming initialiser divides, PyTorch does not).
fn conv_weight(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    groups: usize,
    seeds: &mut SeedStream,
    device: &Device,
) -> burn::module::Param<Tensor<4>> {
    let fan_out = (out_channels * kernel * kernel) as f64;
    random_param(
        [out_channels, in_channels / groups, kernel, kernel],
        Draw::Normal {
            std: (2.0 / fan_out).sqrt(),
        },
        seeds.next_seed(),
        device,
    )
}

/// A square convolution with symmetric explicit padding `(kernel - 1) / 2`, torchvision's
/// weight initialisation and, if `bias`, a zero bias.
#[allow(clippy::too_many_arguments)]
fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    groups: usize,
    bias: bool,
    seeds: &mut SeedStream,
    device: &Device,
) -> Conv2d {
    let p = (kernel - 1) / 2;
    let mut conv = Conv2dConfig::new([in_channels, out_channels], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_groups(groups)
        .with_bias(false)
        .init(device);
    conv.weight = conv_weight(in_channels, out_channels, kernel, groups, seeds, device);
    if bias {
        conv.bias = Some(zeros_param([out_channels], device));
    }
    conv
}

/// Fold an (optional) convolution bias and a BatchNorm into per-channel `(scale, shift)`:
/// `bn(conv(x)) = scale * (w * x) + shift`, with `scale = gamma / sqrt(var + eps)` and
/// `shift = beta + (bias - mean) * scale`, computed in `f64` from the running statistics and the
/// BatchNorm's own epsilon.
///
/// The statistics are read through [`Module::valid`], which first merges a running-statistics
/// update still pending from the last training-mode forward pass (`RunningState::value` alone
/// can be one update behind).
fn bn_scale_shift(bn: &BatchNorm, conv_bias: Option<Vec<f32>>) -> (Vec<f64>, Vec<f64>) {
    let bn = bn.valid();
    let gamma = to_vec(bn.gamma.val());
    let beta = to_vec(bn.beta.val());
    let mean = to_vec(bn.running_mean.value());
    let var = to_vec(bn.running_var.value());
    let n = gamma.len();
    let bias = conv_bias.unwrap_or_else(|| vec![0.0; n]);
    let mut scale = Vec::with_capacity(n);
    let mut shift = Vec::with_capacity(n);
    for c in 0..n {
        let s = gamma[c] as f64 / (var[c] as f64 + bn.epsilon).sqrt();
        scale.push(s);
        shift.push(beta[c] as f64 + (bias[c] as f64 - mean[c] as f64) * s);
    }
    (scale, shift)
}

/// Read a convolution's geometry and weights into a [`FoldedConv`] with the given activation,
/// keeping its own bias (no BatchNorm).
fn fold_plain_conv(conv: &Conv2d, act: Act) -> FoldedConv {
    let [out_channels, in_per_group, kernel, _] = conv.weight.dims();
    let weight = to_vec(conv.weight.val());
    let bias = match &conv.bias {
        Some(b) => to_vec(b.val()),
        None => vec![0.0; out_channels],
    };
    FoldedConv {
        out_channels,
        in_channels: in_per_group * conv.groups,
        kernel,
        stride: conv.stride[0],
        padding: (kernel - 1) / 2,
        groups: conv.groups,
        weight,
        bias,
        act,
    }
}

/// Convolution (no bias) + BatchNorm + activation: torchvision's `Conv2dNormActivation`.
///
/// BatchNorm uses eps [`BN_EPSILON`] and momentum [`BN_MOMENTUM`]; see
/// [`MobileNetV3`](crate::model::MobileNetV3) for when it normalises with batch statistics and
/// when with its running statistics.
#[derive(Module, Debug)]
pub struct ConvBnAct {
    /// The convolution, `[out, in / groups, k, k]`, no bias, padding `(k - 1) / 2`.
    pub conv: Conv2d,
    /// The BatchNorm after it.
    pub bn: BatchNorm,
    /// The activation after the BatchNorm ([`Act::Identity`] for the linear projection).
    #[module(skip)]
    pub act: Act,
}

impl ConvBnAct {
    /// A new layer with torchvision's initialisation (Kaiming-normal fan-out convolution,
    /// BatchNorm weight 1, bias 0, running mean 0, running variance 1).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        groups: usize,
        act: Act,
        seeds: &mut SeedStream,
        device: &Device,
    ) -> Self {
        Self {
            conv: conv2d(
                in_channels,
                out_channels,
                kernel,
                stride,
                groups,
                false,
                seeds,
                device,
            ),
            bn: BatchNormConfig::new(out_channels)
                .with_epsilon(BN_EPSILON)
                .with_momentum(BN_MOMENTUM)
                .init(device),
            act,
        }
    }

    /// `act(bn(conv(x)))`.
    ///
    /// # Shapes
    /// `[N, in, H, W] -> [N, out, H', W']` with `H' = (H - 1) / stride + 1` for odd kernels.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        // On the CPU backend, depthwise and pointwise convolutions and the training-mode
        // BatchNorm take faster forms (model::cpu_conv).
        apply_act(
            self.act,
            batch_norm_cpu(&self.bn, conv2d_cpu(&self.conv, x)),
        )
    }

    /// This layer with its BatchNorm (running statistics) folded into the convolution:
    /// `w' = w * gamma / sqrt(var + eps)`, `b' = beta - mean * gamma / sqrt(var + eps)`.
    pub fn fold(&self) -> FoldedConv {
        let mut folded = fold_plain_conv(&self.conv, self.act);
        let conv_bias = self.conv.bias.as_ref().map(|b| to_vec(b.val()));
        let (scale, shift) = bn_scale_shift(&self.bn, conv_bias);
        let per_out = folded.weight.len() / folded.out_channels;
        for (o, chunk) in folded.weight.chunks_mut(per_out).enumerate() {
            for w in chunk {
                *w = (*w as f64 * scale[o]) as f32;
            }
        }
        folded.bias = shift.iter().map(|&b| b as f32).collect();
        folded
    }
}

/// Squeeze-and-excitation (Hu et al. 2018) as in MobileNetV3: global average pool, 1x1
/// convolution with bias to `squeeze` channels, ReLU, 1x1 convolution with bias back, hard-sigmoid
/// `relu6(x + 3) / 6`, then the input is scaled channel-wise by that gate.
#[derive(Module, Debug)]
pub struct SqueezeExcite {
    /// `channels -> squeeze` 1x1 convolution with bias (torchvision's `fc1`).
    pub reduce: Conv2d,
    /// `squeeze -> channels` 1x1 convolution with bias (torchvision's `fc2`).
    pub expand: Conv2d,
}

impl SqueezeExcite {
    /// A new layer (Kaiming-normal fan-out weights, zero biases, as torchvision).
    pub(crate) fn new(
        channels: usize,
        squeeze: usize,
        seeds: &mut SeedStream,
        device: &Device,
    ) -> Self {
        Self {
            reduce: conv2d(channels, squeeze, 1, 1, 1, true, seeds, device),
            expand: conv2d(squeeze, channels, 1, 1, 1, true, seeds, device),
        }
    }

    /// `x * hard_sigmoid(expand(relu(reduce(mean_hw(x)))))`.
    ///
    /// # Shapes
    /// `[N, C, H, W] -> [N, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let s = x.clone().mean_dim(3).mean_dim(2); // [N, C, 1, 1]
        let s = relu(self.reduce.forward(s));
        let s = hard_sigmoid6(self.expand.forward(s));
        x.mul(s)
    }

    /// The two convolutions as plain arrays (there is no BatchNorm to fold).
    pub fn fold(&self) -> FoldedSqueezeExcite {
        FoldedSqueezeExcite {
            reduce: fold_plain_conv(&self.reduce, Act::Relu),
            expand: fold_plain_conv(&self.expand, Act::HardSigmoid),
        }
    }
}

/// MobileNetV3's inverted-residual block (torchvision's `InvertedResidual`): optional 1x1
/// expansion, depthwise `k x k` convolution, optional [`SqueezeExcite`], 1x1 linear projection,
/// and a skip connection when `stride == 1 && in == out`.
#[derive(Module, Debug)]
pub struct InvertedResidual {
    /// 1x1 expansion with the block's activation; `None` when `expanded == input`.
    pub expand: Option<ConvBnAct>,
    /// Depthwise convolution (`groups = expanded`) with the block's activation.
    pub depthwise: ConvBnAct,
    /// Squeeze-and-excitation on the depthwise output, if the block uses it.
    pub squeeze_excite: Option<SqueezeExcite>,
    /// 1x1 projection to the output channels, no activation.
    pub project: ConvBnAct,
    /// Whether the block input is added to the output.
    pub residual: bool,
}

impl InvertedResidual {
    /// A new block for `spec`.
    pub(crate) fn new(spec: &BlockSpec, seeds: &mut SeedStream, device: &Device) -> Self {
        let act = spec.activation.to_act();
        let expand = spec
            .has_expansion()
            .then(|| ConvBnAct::new(spec.input, spec.expanded, 1, 1, 1, act, seeds, device));
        let depthwise = ConvBnAct::new(
            spec.expanded,
            spec.expanded,
            spec.kernel,
            spec.stride,
            spec.expanded,
            act,
            seeds,
            device,
        );
        let squeeze_excite = spec
            .use_se
            .then(|| SqueezeExcite::new(spec.expanded, spec.squeeze_channels(), seeds, device));
        let project = ConvBnAct::new(
            spec.expanded,
            spec.out,
            1,
            1,
            1,
            Act::Identity,
            seeds,
            device,
        );
        Self {
            expand,
            depthwise,
            squeeze_excite,
            project,
            residual: spec.residual(),
        }
    }

    /// The block's forward pass.
    ///
    /// # Shapes
    /// `[N, input, H, W] -> [N, out, H / stride, W / stride]` (rounded up).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = match &self.expand {
            Some(expand) => expand.forward(x.clone()),
            None => x.clone(),
        };
        h = self.depthwise.forward(h);
        if let Some(se) = &self.squeeze_excite {
            h = se.forward(h);
        }
        h = self.project.forward(h);
        if self.residual {
            h = h.add(x);
        }
        h
    }

    /// The block with every BatchNorm folded (running statistics).
    pub fn fold(&self) -> FoldedBlock {
        FoldedBlock {
            expand: self.expand.as_ref().map(ConvBnAct::fold),
            depthwise: self.depthwise.fold(),
            squeeze_excite: self.squeeze_excite.as_ref().map(SqueezeExcite::fold),
            project: self.project.fold(),
            residual: self.residual,
        }
    }
}
