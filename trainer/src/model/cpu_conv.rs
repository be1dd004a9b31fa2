//! MobileNetV3's layers in the form whose training step is fast on the CPU backend: depthwise
//! convolutions (`groups == channels`) with a backward pass of their own, pointwise (1x1) ones
//! as batched matrix products, and training-mode BatchNorm as one operation with a closed-form
//! backward pass. Measurements: `docs/performance/training.md`.
//!
//! burn 0.22 computes a grouped convolution's weight gradient one group at a time (a slice, a
//! batch-1 convolution and a slice-assign per channel: 2,456 of them per view in
//! MobileNetV3-Small) and its input gradient with a generic grouped transposed convolution. That
//! was the largest single cost of a pretraining step. Here both depthwise gradients are direct
//! loops over the NCHW planes, parallel over planes (input gradient) and channels (weight
//! gradient) on rayon's pool, as burn's own CPU kernels are.
//!
//! The depthwise convolution and the BatchNorm are burn backend extensions implemented for the
//! flex backend and for autodiff over it. On any other device (the `cuda` and `wgpu` builds)
//! [`conv2d_cpu`] and [`batch_norm_cpu`] are burn's own [`Conv2d`] and [`BatchNorm`] forward,
//! so GPU training is unchanged. The depthwise forward pass is flex's own kernel; the rest
//! computes the same sums as burn's generic code, in fewer passes. `PLEURA_CPU_CONV` switches the
//! rewrites off for A/B measurements.

use burn::backend::ops::{ConvOptions, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, AutodiffBackend, Backend, DispatchDevice, Flex};
use burn::nn::conv::Conv2d;
use burn::nn::BatchNorm;
use burn::tensor::{DType, Device, Tensor, TensorData};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_autodiff::NodeId;
use burn_flex::FlexTensor;
use rayon::prelude::*;

/// The depthwise convolution as a backend operation.
#[backend_extension(Flex, Autodiff)]
pub trait DepthwiseConvOps: Backend {
    /// `y[n, c] = sum_{kh, kw} w[c, 0, kh, kw] * x[n, c, s * oh + kh - p, s * ow + kw - p]`
    /// (zero outside the input).
    ///
    /// # Shapes
    /// `x: [N, C, H, W]`, `weight: [C, 1, K, K]` -> `[N, C, (H + 2p - K) / s + 1, ...]`.
    fn depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self>;
}

/// The gradients of [`DepthwiseConvOps::depthwise_conv2d`] on a concrete backend.
pub trait DepthwiseConvBackward: Backend {
    /// `(d loss / d x, d loss / d weight)` given `grad = d loss / d y`.
    fn depthwise_conv2d_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

fn options(channels: usize, stride: usize, padding: usize) -> ConvOptions<2> {
    ConvOptions::new([stride, stride], [padding, padding], [1, 1], channels)
}

impl DepthwiseConvOps for Flex {
    fn depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self> {
        let channels = weight.layout().shape()[0];
        Flex::conv2d(x, weight, None, options(channels, stride, padding))
    }
}

impl DepthwiseConvBackward for Flex {
    fn depthwise_conv2d_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if x.dtype() != DType::F32 || weight.dtype() != DType::F32 || grad.dtype() != DType::F32 {
            // Other precisions: burn's generic gradients.
            let channels = weight.layout().shape()[0];
            let opts = options(channels, stride, padding);
            let gx = Flex::conv2d_x_backward(x.clone(), weight.clone(), grad.clone(), opts.clone());
            let gw = Flex::conv2d_weight_backward(x, weight, grad, opts);
            return (gx, gw);
        }
        let geometry = Geometry::new(
            x.layout().shape().as_slice(),
            weight.layout().shape().as_slice(),
            grad.layout().shape().as_slice(),
            stride,
            padding,
        );
        let (x, weight, grad) = (
            x.to_contiguous(),
            weight.to_contiguous(),
            grad.to_contiguous(),
        );
        let x = x.as_slice::<f32>().expect("contiguous f32");
        let w = weight.as_slice::<f32>().expect("contiguous f32");
        let g = grad.as_slice::<f32>().expect("contiguous f32");
        let gx = geometry.grad_input(w, g);
        let gw = geometry.grad_weight(x, g);
        let Geometry {
            n,
            c,
            h,
            w: width,
            k,
            ..
        } = geometry;
        (
            FlexTensor::from_data(TensorData::new(gx, [n, c, h, width])),
            FlexTensor::from_data(TensorData::new(gw, [c, 1, k, k])),
        )
    }
}

impl<B, C> DepthwiseConvOps for Autodiff<B, C>
where
    B: Backend + DepthwiseConvOps + DepthwiseConvBackward,
    C: CheckpointStrategy,
{
    fn depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct DepthwiseConv;

        impl<B: Backend + DepthwiseConvBackward> Backward<B, 2> for DepthwiseConv {
            type State = (NodeId, NodeId, usize, usize);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_x, node_w] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (x_state, w_state, stride, padding) = ops.state;
                let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x_state);
                let w = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(w_state);
                let (gx, gw) = B::depthwise_conv2d_backward(x, w, grad, stride, padding);
                if let Some(node) = node_x {
                    grads.register::<B>(node.id, gx);
                }
                if let Some(node) = node_w {
                    grads.register::<B>(node.id, gw);
                }
            }
        }

        match DepthwiseConv
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let w_state = prep.checkpoint(&weight);
                let out = B::depthwise_conv2d(
                    x.into_primitive(),
                    weight.into_primitive(),
                    stride,
                    padding,
                );
                prep.finish((x_state, w_state, stride, padding), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::depthwise_conv2d(
                x.into_primitive(),
                weight.into_primitive(),
                stride,
                padding,
            )),
        }
    }
}

/// Whether `conv` is a square depthwise convolution with symmetric padding, stride equal in
/// both directions, no dilation and no bias: the only kind [`DepthwiseConvOps`] computes.
pub fn is_plain_depthwise(conv: &Conv2d) -> bool {
    let [out, per_group, kh, kw] = conv.weight.dims();
    let p = (kh - 1) / 2;
    conv.groups == out
        && per_group == 1
        && kh == kw
        && conv.bias.is_none()
        && conv.stride[0] == conv.stride[1]
        && conv.dilation == [1, 1]
        && conv.padding == burn::nn::PaddingConfig2d::Explicit(p, p, p, p)
}

fn on_flex(device: &Device) -> bool {
    matches!(
        device.clone().inner().as_dispatch(),
        DispatchDevice::Flex(_)
    )
}

/// Which rewrites are on, `(pointwise, depthwise, batchnorm)`: `PLEURA_CPU_CONV` = `all`
/// (default), `conv` (both convolutions, burn's BatchNorm), `pointwise`, `depthwise`, `batchnorm`
/// or `none` (burn's own layers everywhere; for A/B measurements and as a fallback). Read once
/// per process.
fn enabled_all() -> (bool, bool, bool) {
    static MODE: std::sync::OnceLock<(bool, bool, bool)> = std::sync::OnceLock::new();
    *MODE.get_or_init(|| match std::env::var("PLEURA_CPU_CONV").as_deref() {
        Ok("none") => (false, false, false),
        Ok("conv") => (true, true, false),
        Ok("pointwise") => (true, false, false),
        Ok("depthwise") => (false, true, false),
        Ok("batchnorm") => (false, false, true),
        _ => (true, true, true),
    })
}

fn enabled() -> (bool, bool) {
    let (pointwise, depthwise, _) = enabled_all();
    (pointwise, depthwise)
}

/// Whether `conv` is a 1x1 convolution with stride 1, one group and no bias.
pub fn is_plain_pointwise(conv: &Conv2d) -> bool {
    let [_, _, kh, kw] = conv.weight.dims();
    kh == 1
        && kw == 1
        && conv.groups == 1
        && conv.bias.is_none()
        && conv.stride == [1, 1]
        && conv.padding == burn::nn::PaddingConfig2d::Explicit(0, 0, 0, 0)
}

/// `conv.forward(x)`, computed on the CPU backend in the form whose backward pass is fastest
/// there: depthwise convolutions through [`DepthwiseConvOps`], pointwise (1x1) ones as a batched
/// matrix product `W [1, out, in] x X [N, in, H W]` (burn differentiates it with two matrix
/// products, where its convolution weight gradient runs one matrix-vector product per input
/// channel). Every other convolution, and every device but the CPU, takes `conv.forward`.
pub fn conv2d_cpu(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let (pointwise, depthwise) = enabled();
    if !on_flex(&x.device()) {
        return conv.forward(x);
    }
    if pointwise && is_plain_pointwise(conv) {
        let [n, ci, h, w] = x.dims();
        let [co, ..] = conv.weight.dims();
        let weight = conv.weight.val().reshape([1, co, ci]);
        return weight
            .matmul(x.reshape([n, ci, h * w]))
            .reshape([n, co, h, w]);
    }
    if depthwise && is_plain_depthwise(conv) {
        let [_, _, k, _] = conv.weight.dims();
        let out = burn::backend::Dispatch::depthwise_conv2d(
            x.into_dispatch(),
            conv.weight.val().into_dispatch(),
            conv.stride[0],
            (k - 1) / 2,
        );
        return Tensor::from_dispatch(out);
    }
    conv.forward(x)
}

/// BatchNorm in training mode over `[N, C, H, W]`: batch statistics per channel, normalise,
/// scale and shift, in one pass each and parallel over channels (burn's generic version is a
/// chain of element-wise operations and transposes, mostly on the calling thread).
#[backend_extension(Flex, Autodiff)]
pub trait BatchNormTrainOps: Backend {
    /// `(gamma * (x - mean) / sqrt(var + eps) + beta, mean, var)` with the batch mean and the
    /// biased batch variance per channel, exactly as burn's `batch_norm_train`.
    fn batch_norm_train_nchw(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// The gradients of [`BatchNormTrainOps::batch_norm_train_nchw`] on a concrete backend.
pub trait BatchNormTrainBackward: Backend {
    /// `(d x, d gamma, d beta)`.
    fn batch_norm_train_nchw_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        epsilon: f64,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

fn f32_vec(t: &FlexTensor) -> Vec<f32> {
    t.to_contiguous()
        .as_slice::<f32>()
        .expect("contiguous f32")
        .to_vec()
}

impl BatchNormTrainOps for Flex {
    fn batch_norm_train_nchw(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let shape = x.layout().shape().clone();
        let (n, c) = (shape[0], shape[1]);
        let plane = shape.num_elements() / (n * c);
        let x = x.to_contiguous();
        let xs = x.as_slice::<f32>().expect("contiguous f32");
        let (gamma, beta) = (f32_vec(&gamma), f32_vec(&beta));
        let stats: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let count = (n * plane) as f64;
                let planes = (0..n).map(|i| &xs[(i * c + ch) * plane..(i * c + ch + 1) * plane]);
                let sum: f64 = planes
                    .clone()
                    .map(|p| p.iter().map(|&v| f64::from(v)).sum::<f64>())
                    .sum();
                let mean = sum / count;
                let sq: f64 = planes
                    .map(|p| {
                        p.iter()
                            .map(|&v| (f64::from(v) - mean).powi(2))
                            .sum::<f64>()
                    })
                    .sum();
                (mean, sq / count)
            })
            .collect();
        let mut out = vec![0.0f32; xs.len()];
        out.par_chunks_mut(plane).enumerate().for_each(|(i, o)| {
            let ch = i % c;
            let (mean, var) = stats[ch];
            let scale = f64::from(gamma[ch]) / (var + epsilon).sqrt();
            let (scale, shift) = (scale as f32, (f64::from(beta[ch]) - mean * scale) as f32);
            for (o, &v) in o.iter_mut().zip(&xs[i * plane..(i + 1) * plane]) {
                *o = v * scale + shift;
            }
        });
        let mean: Vec<f32> = stats.iter().map(|s| s.0 as f32).collect();
        let var: Vec<f32> = stats.iter().map(|s| s.1 as f32).collect();
        (
            FlexTensor::from_data(TensorData::new(out, shape)),
            FlexTensor::from_data(TensorData::new(mean, [c])),
            FlexTensor::from_data(TensorData::new(var, [c])),
        )
    }
}

impl BatchNormTrainBackward for Flex {
    fn batch_norm_train_nchw_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        epsilon: f64,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let shape = x.layout().shape().clone();
        let (n, c) = (shape[0], shape[1]);
        let plane = shape.num_elements() / (n * c);
        let (x, grad) = (x.to_contiguous(), grad.to_contiguous());
        let xs = x.as_slice::<f32>().expect("contiguous f32");
        let gs = grad.as_slice::<f32>().expect("contiguous f32");
        let (gamma, mean, var) = (f32_vec(&gamma), f32_vec(&mean), f32_vec(&var));
        let inv_std: Vec<f64> = var
            .iter()
            .map(|&v| 1.0 / (f64::from(v) + epsilon).sqrt())
            .collect();
        // Per channel: sum(dy) and sum(dy * xhat).
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (m, is) = (mean[ch], inv_std[ch] as f32);
                let mut s = (0.0f64, 0.0f64);
                for i in 0..n {
                    let r = (i * c + ch) * plane..(i * c + ch + 1) * plane;
                    let (mut a, mut b) = (0.0f32, 0.0f32);
                    for (&g, &v) in gs[r.clone()].iter().zip(&xs[r]) {
                        a += g;
                        b += g * (v - m) * is;
                    }
                    s.0 += f64::from(a);
                    s.1 += f64::from(b);
                }
                s
            })
            .collect();
        let count = (n * plane) as f64;
        let mut dx = vec![0.0f32; xs.len()];
        dx.par_chunks_mut(plane).enumerate().for_each(|(i, d)| {
            let ch = i % c;
            let is = inv_std[ch];
            let k = (f64::from(gamma[ch]) * is) as f32;
            let (mdy, mdyx) = ((sums[ch].0 / count) as f32, (sums[ch].1 / count) as f32);
            let (m, is) = (mean[ch], is as f32);
            let r = i * plane..(i + 1) * plane;
            for ((d, &g), &v) in d.iter_mut().zip(&gs[r.clone()]).zip(&xs[r]) {
                *d = k * (g - mdy - (v - m) * is * mdyx);
            }
        });
        let dgamma: Vec<f32> = sums.iter().map(|s| s.1 as f32).collect();
        let dbeta: Vec<f32> = sums.iter().map(|s| s.0 as f32).collect();
        (
            FlexTensor::from_data(TensorData::new(dx, shape)),
            FlexTensor::from_data(TensorData::new(dgamma, [c])),
            FlexTensor::from_data(TensorData::new(dbeta, [c])),
        )
    }
}

impl<B, C> BatchNormTrainOps for Autodiff<B, C>
where
    B: Backend + BatchNormTrainOps + BatchNormTrainBackward,
    C: CheckpointStrategy,
{
    fn batch_norm_train_nchw(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        #[derive(Debug)]
        struct BatchNormTrain;

        impl<B: Backend + BatchNormTrainBackward> Backward<B, 3> for BatchNormTrain {
            type State = (
                NodeId,
                NodeId,
                B::FloatTensorPrimitive,
                B::FloatTensorPrimitive,
                f64,
            );

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_x, node_gamma, node_beta] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (x_state, gamma_state, mean, var, epsilon) = ops.state;
                let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x_state);
                let gamma =
                    checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(gamma_state);
                let (dx, dgamma, dbeta) =
                    B::batch_norm_train_nchw_backward(x, gamma, mean, var, epsilon, grad);
                if let Some(node) = node_x {
                    grads.register::<B>(node.id, dx);
                }
                if let Some(node) = node_gamma {
                    grads.register::<B>(node.id, dgamma);
                }
                if let Some(node) = node_beta {
                    grads.register::<B>(node.id, dbeta);
                }
            }
        }

        let prepared = BatchNormTrain
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful();
        match prepared {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let gamma_state = prep.checkpoint(&gamma);
                let (out, mean, var) = B::batch_norm_train_nchw(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                );
                let out = prep.finish(
                    (x_state, gamma_state, mean.clone(), var.clone(), epsilon),
                    out,
                );
                (
                    out,
                    <Self as AutodiffBackend>::from_inner(mean),
                    <Self as AutodiffBackend>::from_inner(var),
                )
            }
            OpsKind::UnTracked(prep) => {
                let (out, mean, var) = B::batch_norm_train_nchw(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                );
                (
                    prep.finish(out),
                    <Self as AutodiffBackend>::from_inner(mean),
                    <Self as AutodiffBackend>::from_inner(var),
                )
            }
        }
    }
}

/// `bn.forward(x)` for a 4-D input; on the CPU backend in training mode through
/// [`BatchNormTrainOps`], updating the running statistics exactly as burn's `BatchNorm` does.
pub fn batch_norm_cpu(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    let device = x.device();
    let (_, _, fused) = enabled_all();
    if !fused
        || !on_flex(&device)
        || !device.is_autodiff()
        || !bn.training.is_enabled()
        || x.dtype() != DType::F32
    {
        return bn.forward(x);
    }
    let (out, mean, var) = burn::backend::Dispatch::batch_norm_train_nchw(
        x.into_dispatch(),
        bn.gamma.val().into_dispatch(),
        bn.beta.val().into_dispatch(),
        bn.epsilon,
    );
    let (mean, var) = (
        Tensor::<1>::from_dispatch(mean),
        Tensor::<1>::from_dispatch(var),
    );
    let running_mean = bn.running_mean.value_sync().to_device(&device);
    let running_var = bn.running_var.value_sync().to_device(&device);
    let running_mean = running_mean
        .mul_scalar(1.0 - bn.momentum)
        .add(mean.detach().mul_scalar(bn.momentum));
    let running_var = running_var
        .mul_scalar(1.0 - bn.momentum)
        .add(var.detach().mul_scalar(bn.momentum));
    bn.running_mean.update(running_mean.detach());
    bn.running_var.update(running_var.detach());
    Tensor::from_dispatch(out)
}

/// Sizes of one depthwise convolution.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    ho: usize,
    wo: usize,
    stride: usize,
    padding: usize,
}

impl Geometry {
    fn new(x: &[usize], weight: &[usize], grad: &[usize], stride: usize, padding: usize) -> Self {
        let (n, c, h, w) = (x[0], x[1], x[2], x[3]);
        assert_eq!(
            weight,
            [c, 1, weight[2], weight[2]],
            "depthwise weight shape"
        );
        let k = weight[2];
        let (ho, wo) = (grad[2], grad[3]);
        assert_eq!(
            grad,
            [
                n,
                c,
                (h + 2 * padding - k) / stride + 1,
                (w + 2 * padding - k) / stride + 1
            ]
        );
        Self {
            n,
            c,
            h,
            w,
            k,
            ho,
            wo,
            stride,
            padding,
        }
    }

    /// Output columns `ow` whose input column `ow * stride + kw - padding` lies in `0..w`.
    fn cols(&self, kw: usize) -> std::ops::Range<usize> {
        let lo = (self.padding.saturating_sub(kw).div_ceil(self.stride)).min(self.wo);
        // ow * s + kw - p <= w - 1  <=>  ow <= (w - 1 + p - kw) / s
        let hi = if self.w + self.padding > kw {
            ((self.w - 1 + self.padding - kw) / self.stride + 1).min(self.wo)
        } else {
            0
        };
        lo..hi.max(lo)
    }

    /// Input row of output row `oh` and kernel row `kh`, if inside the input.
    fn row(&self, oh: usize, kh: usize) -> Option<usize> {
        (oh * self.stride + kh)
            .checked_sub(self.padding)
            .filter(|&r| r < self.h)
    }

    /// `d loss / d x`: every output gradient scattered back through its filter taps.
    fn grad_input(&self, weight: &[f32], grad: &[f32]) -> Vec<f32> {
        let plane = self.h * self.w;
        let out_plane = self.ho * self.wo;
        let kk = self.k * self.k;
        let cols: Vec<_> = (0..self.k).map(|kw| self.cols(kw)).collect();
        let mut gx = vec![0.0f32; self.n * self.c * plane];
        gx.par_chunks_mut(plane).enumerate().for_each(|(i, gx)| {
            let c = i % self.c;
            let wc = &weight[c * kk..(c + 1) * kk];
            let g = &grad[i * out_plane..(i + 1) * out_plane];
            for oh in 0..self.ho {
                let grow = &g[oh * self.wo..(oh + 1) * self.wo];
                for kh in 0..self.k {
                    let Some(ih) = self.row(oh, kh) else { continue };
                    let xrow = &mut gx[ih * self.w..(ih + 1) * self.w];
                    for (kw, range) in cols.iter().enumerate() {
                        if range.is_empty() {
                            continue;
                        }
                        let wv = wc[kh * self.k + kw];
                        if self.stride == 1 {
                            let off = kw as isize - self.padding as isize;
                            let dst = &mut xrow[(range.start as isize + off) as usize
                                ..(range.end as isize + off) as usize];
                            for (d, &gv) in dst.iter_mut().zip(&grow[range.clone()]) {
                                *d += gv * wv;
                            }
                        } else {
                            for ow in range.clone() {
                                xrow[ow * self.stride + kw - self.padding] += grow[ow] * wv;
                            }
                        }
                    }
                }
            }
        });
        gx
    }

    /// `d loss / d w`: per channel and tap, the sum over batch and output positions of the
    /// output gradient times the input it multiplied.
    fn grad_weight(&self, x: &[f32], grad: &[f32]) -> Vec<f32> {
        let plane = self.h * self.w;
        let out_plane = self.ho * self.wo;
        let kk = self.k * self.k;
        let cols: Vec<_> = (0..self.k).map(|kw| self.cols(kw)).collect();
        let mut gw = vec![0.0f32; self.c * kk];
        gw.par_chunks_mut(kk).enumerate().for_each(|(c, gw)| {
            let mut acc = vec![0.0f64; kk];
            for n in 0..self.n {
                let i = n * self.c + c;
                let xp = &x[i * plane..(i + 1) * plane];
                let g = &grad[i * out_plane..(i + 1) * out_plane];
                for oh in 0..self.ho {
                    let grow = &g[oh * self.wo..(oh + 1) * self.wo];
                    for kh in 0..self.k {
                        let Some(ih) = self.row(oh, kh) else { continue };
                        let xrow = &xp[ih * self.w..(ih + 1) * self.w];
                        for (kw, range) in cols.iter().enumerate() {
                            if range.is_empty() {
                                continue;
                            }
                            let s: f32 = if self.stride == 1 {
                                let off = kw as isize - self.padding as isize;
                                let src = &xrow[(range.start as isize + off) as usize
                                    ..(range.end as isize + off) as usize];
                                dot(src, &grow[range.clone()])
                            } else {
                                range
                                    .clone()
                                    .map(|ow| grow[ow] * xrow[ow * self.stride + kw - self.padding])
                                    .sum()
                            };
                            acc[kh * self.k + kw] += f64::from(s);
                        }
                    }
                }
            }
            for (d, a) in gw.iter_mut().zip(acc) {
                *d = a as f32;
            }
        });
        gw
    }
}

/// A dot product in eight independent lanes (vectorises without fast-math).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    let mut s: f32 = lanes.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::conv::Conv2dConfig;
    use burn::nn::PaddingConfig2d;
    use burn::tensor::Distribution;

    /// Our forward and both gradients against burn's `Conv2d` with its generic gradients.
    /// `groups == 0` means a pointwise convolution from `channels` to `channels + 3`.
    fn check(channels: usize, k: usize, stride: usize, size: usize, groups: usize) {
        let device = Device::flex().autodiff();
        let p = (k - 1) / 2;
        let out = if groups == 0 { channels + 3 } else { channels };
        let conv = Conv2dConfig::new([channels, out], [k, k])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .with_groups(groups.max(1))
            .with_bias(false)
            .init(&device);
        if groups == 0 {
            assert!(is_plain_pointwise(&conv));
        } else {
            assert!(is_plain_depthwise(&conv));
        }
        let x = Tensor::<4>::random(
            [3, channels, size, size],
            Distribution::Normal(0.0, 1.0),
            &device,
        )
        .require_grad();
        let up = Tensor::<4>::random(
            [3, out, (size - 1) / stride + 1, (size - 1) / stride + 1],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        // Reference: burn's grouped convolution and its generic gradients.
        let ours = conv2d_cpu(&conv, x.clone());
        let theirs = conv.forward(x.clone());
        ours.to_data()
            .assert_approx_eq::<f32>(&theirs.to_data(), Default::default());
        let g_ours = ours.mul(up.clone()).sum().backward();
        let g_theirs = theirs.mul(up).sum().backward();
        let close = |a: Tensor<4>, b: Tensor<4>| {
            let (a, b) = (
                a.into_data().try_into_vec_as::<f32>().unwrap(),
                b.into_data().try_into_vec_as::<f32>().unwrap(),
            );
            let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let err = a
                .iter()
                .zip(&b)
                .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(err <= 1e-5 * scale, "max error {err} (scale {scale})");
        };
        close(x.grad(&g_ours).unwrap(), x.grad(&g_theirs).unwrap());
        close(
            conv.weight.grad(&g_ours).unwrap(),
            conv.weight.grad(&g_theirs).unwrap(),
        );
    }

    #[test]
    fn pointwise_gradients_match_burns_convolution() {
        check(5, 1, 1, 7, 0);
        check(16, 1, 1, 4, 0);
    }

    #[test]
    fn depthwise_gradients_match_burns_grouped_convolution() {
        for (channels, k, stride, size) in [
            (4, 3, 1, 9),
            (5, 3, 2, 9),
            (3, 5, 1, 8),
            (6, 5, 2, 11),
            (2, 3, 2, 4),
            (2, 5, 1, 2),
            (3, 5, 1, 1),
            (3, 3, 2, 1),
        ] {
            check(channels, k, stride, size, channels);
        }
    }

    #[test]
    fn batch_norm_matches_burns_in_output_gradients_and_running_statistics() {
        use burn::nn::BatchNormConfig;
        let device = Device::flex().autodiff();
        let ours = BatchNormConfig::new(5).with_momentum(0.1).init(&device);
        let theirs = BatchNormConfig::new(5).with_momentum(0.1).init(&device);
        let gamma = Tensor::<1>::random([5], Distribution::Normal(1.0, 0.5), &device);
        let beta = Tensor::<1>::random([5], Distribution::Normal(0.0, 0.5), &device);
        let (ours, theirs) = (
            BatchNorm {
                gamma: burn::module::Param::from_tensor(gamma.clone()),
                beta: burn::module::Param::from_tensor(beta.clone()),
                ..ours
            },
            BatchNorm {
                gamma: burn::module::Param::from_tensor(gamma),
                beta: burn::module::Param::from_tensor(beta),
                ..theirs
            },
        );
        let x = Tensor::<4>::random([4, 5, 6, 7], Distribution::Normal(0.5, 2.0), &device)
            .require_grad();
        let up = Tensor::<4>::random([4, 5, 6, 7], Distribution::Normal(0.0, 1.0), &device);
        let a = batch_norm_cpu(&ours, x.clone());
        let b = theirs.forward(x.clone());
        a.to_data()
            .assert_approx_eq::<f32>(&b.to_data(), Default::default());
        let ga = a.mul(up.clone()).sum().backward();
        let gb = b.mul(up).sum().backward();
        let close = |a: Vec<f32>, b: Vec<f32>| {
            let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let err = a
                .iter()
                .zip(&b)
                .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(err <= 1e-5 * scale, "max error {err} (scale {scale})");
        };
        let v = |t: Tensor<4>| t.into_data().try_into_vec_as::<f32>().unwrap();
        let v1 = |t: Tensor<1>| t.into_data().try_into_vec_as::<f32>().unwrap();
        close(v(x.grad(&ga).unwrap()), v(x.grad(&gb).unwrap()));
        close(
            v1(ours.gamma.grad(&ga).unwrap()),
            v1(theirs.gamma.grad(&gb).unwrap()),
        );
        close(
            v1(ours.beta.grad(&ga).unwrap()),
            v1(theirs.beta.grad(&gb).unwrap()),
        );
        close(
            v1(ours.running_mean.value()),
            v1(theirs.running_mean.value()),
        );
        close(v1(ours.running_var.value()), v1(theirs.running_var.value()));
    }
}
