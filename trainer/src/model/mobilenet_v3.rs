//! The MobileNetV3 feature extractor (torchvision's `features` + global average pooling).

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};

use crate::model::blocks::{ConvBnAct, InvertedResidual};
use crate::model::folded::{Act, FoldedBackbone};
use crate::model::init::SeedStream;
use crate::model::spec::{MobileNetV3Config, Variant};

/// Seed domain of the backbone's parameters (heads use another, see [`crate::model::heads`]).
pub(crate) const BACKBONE_SEED_DOMAIN: u64 = 0x4d4e_5633; // "MNV3"

/// MobileNetV3 feature extractor: `stem -> blocks -> last -> global average pool`, giving
/// `[N, feature_dim]`. Layout, channel counts and initialisation are torchvision's
/// (`mobilenet_v3_small` / `mobilenet_v3_large`, `features` + `avgpool`), so a torchvision
/// state dict maps onto it one to one.
///
/// # Training and inference mode
///
/// burn 0.22 has no `model.eval()`. Each [`BatchNorm`](burn::nn::BatchNorm) decides per call:
/// it normalises with the *batch* statistics and updates its running statistics (training) only
/// when **both** the input tensor lives on an autodiff device (`Device::autodiff()`) **and** its
/// `training: Param<Flag>` is enabled; otherwise it normalises with its running statistics
/// (inference). Hence:
///
/// - Training: create the model on `device.autodiff()` (flags are enabled by default).
/// - Inference: `model.valid()` — returns a copy on the plain (non-autodiff) device with every
///   training flag disabled; [`Module::train`] goes back. A model created on a plain device
///   (`Device::flex()`) is always in inference mode.
/// - Frozen backbone under a trainable head (linear probing): `model.freeze()` keeps it on the
///   autodiff device but disables gradients *and* the flags, so BatchNorm uses (and no longer
///   updates) its running statistics.
///
/// [`MobileNetV3::fold`] and the exported ONNX model have inference semantics: they equal the
/// forward pass of `model.valid()`.
///
/// Caveat (burn 0.22.1): a training-mode pass leaves its running-statistics update pending
/// (per thread) until the next training-mode pass or a `valid()` / `train()`; an inference-mode
/// forward of the *same* module (or of a clone, which shares the statistics, e.g. a `freeze()`d
/// copy) meanwhile reads them one update behind. Evaluate through `valid()`, which merges it;
/// [`MobileNetV3::fold`] merges it itself.
///
/// # Seeding
///
/// Weights are a pure function of [`MobileNetV3Config::seed`]: each parameter draws from its
/// own host-side generator (see `model/init.rs`), independent of burn's `Device::seed`, of the
/// backend and of the order in which parameters are first touched.
#[derive(Module, Debug)]
pub struct MobileNetV3 {
    /// 3x3 stride-2 convolution `in_channels -> 16`, BatchNorm, hard-swish.
    pub stem: ConvBnAct,
    /// The inverted-residual blocks.
    pub blocks: Vec<InvertedResidual>,
    /// 1x1 convolution to `6 * last block out` channels, BatchNorm, hard-swish.
    pub last: ConvBnAct,
    /// Which table the model was built from.
    #[module(skip)]
    pub variant: Variant,
}

impl MobileNetV3Config {
    /// Build the feature extractor on `device`, with torchvision's initialisation: convolution
    /// weights Kaiming-normal (fan-out, gain `sqrt(2)`), convolution biases 0, BatchNorm weight 1,
    /// bias 0, running mean 0, running variance 1. Weights are determined by [`Self::seed`].
    ///
    /// Use `device.autodiff()` to train it (see [`MobileNetV3`] on modes).
    pub fn init(&self, device: &Device) -> MobileNetV3 {
        assert!(self.in_channels > 0, "in_channels must be positive");
        assert!(
            self.width_mult.is_finite() && self.width_mult > 0.0,
            "width_mult must be finite and positive"
        );
        let mut seeds = SeedStream::new(self.seed, BACKBONE_SEED_DOMAIN);
        let stem = ConvBnAct::new(
            self.in_channels,
            self.stem_channels(),
            3,
            2,
            1,
            Act::HardSwish,
            &mut seeds,
            device,
        );
        let specs = self.blocks();
        let blocks = specs
            .iter()
            .map(|spec| InvertedResidual::new(spec, &mut seeds, device))
            .collect();
        let last_in = specs.last().map_or(self.stem_channels(), |b| b.out);
        let last = ConvBnAct::new(
            last_in,
            self.last_channels(),
            1,
            1,
            1,
            Act::HardSwish,
            &mut seeds,
            device,
        );
        MobileNetV3 {
            stem,
            blocks,
            last,
            variant: self.variant,
        }
    }
}

impl MobileNetV3 {
    /// Feature vectors of a batch of images.
    ///
    /// # Shapes
    /// `[N, in_channels, H, W] -> [N, feature_dim]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.forward_map(x);
        let [n, c, _, _] = x.dims();
        x.mean_dim(3).mean_dim(2).reshape([n, c])
    }

    /// The last feature map before pooling.
    ///
    /// # Shapes
    /// `[N, in_channels, H, W] -> [N, feature_dim, H / 32, W / 32]` (rounded up).
    pub fn forward_map(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = self.stem.forward(x);
        for block in &self.blocks {
            x = block.forward(x);
        }
        self.last.forward(x)
    }

    /// Length of the feature vector (576 for Small, 960 for Large at width 1).
    pub fn feature_dim(&self) -> usize {
        self.last.conv.weight.lazy_shape()[0]
    }

    /// Number of input channels of the stem.
    pub fn in_channels(&self) -> usize {
        self.stem.conv.weight.lazy_shape()[1]
    }

    /// Number of trainable parameters: convolution weights and biases, BatchNorm gamma and beta.
    ///
    /// burn's [`Module::num_params`] also counts the BatchNorm running mean and variance
    /// (`RunningState::visit` hands them to the visitor as float parameters) — not trainable,
    /// and not counted by PyTorch's `sum(p.numel() for p in model.parameters())`. The
    /// `training: Param<Flag>` of each BatchNorm is a flag, visited as such and counted by
    /// neither. This count skips the running statistics by their field names.
    pub fn num_trainable_params(&self) -> usize {
        trainable_params(self)
    }

    /// The network in inference form: every BatchNorm folded into its convolution with its
    /// running statistics and its own epsilon, `w' = w * gamma / sqrt(var + eps)`,
    /// `b' = beta - mean * gamma / sqrt(var + eps)`. Equals the forward pass of
    /// `self.valid()` (inference mode); the training flags and device of `self` do not matter.
    pub fn fold(&self) -> FoldedBackbone {
        FoldedBackbone {
            stem: self.stem.fold(),
            blocks: self.blocks.iter().map(InvertedResidual::fold).collect(),
            last: self.last.fold(),
        }
    }
}

/// Count the float parameters of `module` except BatchNorm running statistics
/// (fields `running_mean` / `running_var`), see [`MobileNetV3::num_trainable_params`].
pub fn trainable_params<M: Module>(module: &M) -> usize {
    struct Counter {
        path: Vec<String>,
        count: usize,
    }
    impl ModuleVisitor for Counter {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let running = matches!(
                self.path.last().map(String::as_str),
                Some("running_mean" | "running_var")
            );
            if !running {
                self.count += param.lazy_shape().num_elements();
            }
        }
    }
    let mut counter = Counter {
        path: Vec::new(),
        count: 0,
    };
    module.visit(&mut counter);
    counter.count
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::blocks::ConvBnAct;
    use crate::model::folded::{FoldedBlock, FoldedConv};
    use crate::model::init::{draw_values, Draw};
    use crate::model::spec::BN_MOMENTUM;
    use burn::tensor::TensorData;

    /// A random tensor drawn on the host (repeatable).
    pub(crate) fn host_random<const D: usize>(
        dims: [usize; D],
        lo: f64,
        hi: f64,
        seed: u64,
        device: &Device,
    ) -> Tensor<D> {
        let n = dims.iter().product();
        let half = (hi - lo) / 2.0;
        let values = draw_values(n, Draw::Uniform { bound: half }, seed)
            .into_iter()
            .map(|v| v + (lo + half) as f32)
            .collect::<Vec<_>>();
        Tensor::from_data(TensorData::new(values, dims), device)
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        crate::model::init::to_vec(t)
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    fn conv_bn_layers_mut(m: &mut MobileNetV3) -> Vec<&mut ConvBnAct> {
        let mut layers = vec![&mut m.stem];
        for block in &mut m.blocks {
            if let Some(expand) = &mut block.expand {
                layers.push(expand);
            }
            layers.push(&mut block.depthwise);
            layers.push(&mut block.project);
        }
        layers.push(&mut m.last);
        layers
    }

    fn bn_channels(m: &mut MobileNetV3) -> usize {
        conv_bn_layers_mut(m)
            .iter()
            .map(|l| l.bn.gamma.lazy_shape()[0])
            .sum()
    }

    #[test]
    fn small_parameter_count_and_features() {
        let device = Device::flex();
        let mut model = MobileNetV3Config::small().init(&device);
        assert_eq!(model.num_trainable_params(), 926_720);
        assert_eq!(model.feature_dim(), 576);
        assert_eq!(model.in_channels(), 1);
        // burn's num_params() also counts running mean + variance of every BatchNorm.
        let bn = bn_channels(&mut model);
        assert_eq!(model.num_params(), 926_720 + 2 * bn);
        // torchvision's 3-channel mobilenet_v3_small().features: 927,008.
        let rgb = MobileNetV3Config::small().with_in_channels(3).init(&device);
        assert_eq!(rgb.num_trainable_params(), 927_008);
    }

    #[test]
    fn large_parameter_count_and_features() {
        let model = MobileNetV3Config::large().init(&Device::flex());
        assert_eq!(model.num_trainable_params(), 2_971_664);
        assert_eq!(model.feature_dim(), 960);
        assert_eq!(MobileNetV3Config::large().feature_dim(), 960);
    }

    #[test]
    fn small_forward_shape() {
        let device = Device::flex();
        let model = MobileNetV3Config::small().init(&device);
        let x = host_random([2, 1, 128, 128], -1.0, 1.0, 1, &device);
        let y = model.forward(x);
        assert_eq!(y.dims(), [2, 576]);
        assert!(values(y).iter().all(|v| v.is_finite()));
    }

    #[test]
    fn large_forward_shape() {
        let device = Device::flex();
        let model = MobileNetV3Config::large().init(&device);
        let x = host_random([1, 1, 64, 64], -1.0, 1.0, 2, &device);
        assert_eq!(model.forward(x).dims(), [1, 960]);
    }

    #[test]
    fn init_is_repeatable_and_independent_of_access_order() {
        let device = Device::flex();
        let config = MobileNetV3Config::small().with_seed(3);
        // Model a is read in forward order, model b folded first (reverse-ish order).
        let a = config.init(&device);
        let x = host_random([1, 1, 32, 32], -1.0, 1.0, 9, &device);
        let ya = values(a.forward(x.clone()));
        let b = config.init(&device);
        let last_first = b.last.fold();
        let yb = values(b.forward(x));
        assert_eq!(ya, yb);
        assert_eq!(a.fold(), b.fold());
        assert_eq!(a.last.fold(), last_first);
        let c = config.clone().with_seed(4).init(&device);
        assert_ne!(a.stem.fold().weight, c.stem.fold().weight);
        // torchvision's init: conv weight ~ N(0, 2 / fan_out); last conv fan_out = 576.
        let w = a.last.fold().weight;
        let var = w.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / w.len() as f64;
        assert!((var * 576.0 / 2.0 - 1.0).abs() < 0.05, "var {var}");
    }

    // ---- plain-Rust reference of a FoldedBackbone (naive, f64 accumulation) ----

    /// One image, `[C, H, W]`.
    struct Map {
        c: usize,
        h: usize,
        w: usize,
        data: Vec<f64>,
    }

    fn act_ref(act: Act, x: f64) -> f64 {
        let hsig = |x: f64| (x + 3.0).clamp(0.0, 6.0) / 6.0;
        match act {
            Act::Identity => x,
            Act::Relu => x.max(0.0),
            Act::HardSwish => x * hsig(x),
            Act::HardSigmoid => hsig(x),
        }
    }

    fn conv_ref(x: &Map, conv: &FoldedConv) -> Map {
        assert_eq!(x.c, conv.in_channels);
        let (k, s, p, g) = (conv.kernel, conv.stride, conv.padding, conv.groups);
        let oh = (x.h + 2 * p - k) / s + 1;
        let ow = (x.w + 2 * p - k) / s + 1;
        let cin_g = conv.in_channels / g;
        let cout_g = conv.out_channels / g;
        let mut out = vec![0.0; conv.out_channels * oh * ow];
        for o in 0..conv.out_channels {
            let group = o / cout_g;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = conv.bias[o] as f64;
                    for ci in 0..cin_g {
                        let ic = group * cin_g + ci;
                        for ky in 0..k {
                            let iy = (oy * s + ky) as isize - p as isize;
                            if iy < 0 || iy >= x.h as isize {
                                continue;
                            }
                            for kx in 0..k {
                                let ix = (ox * s + kx) as isize - p as isize;
                                if ix < 0 || ix >= x.w as isize {
                                    continue;
                                }
                                let wv = conv.weight[((o * cin_g + ci) * k + ky) * k + kx];
                                let xv = x.data[(ic * x.h + iy as usize) * x.w + ix as usize];
                                acc += wv as f64 * xv;
                            }
                        }
                    }
                    out[(o * oh + oy) * ow + ox] = act_ref(conv.act, acc);
                }
            }
        }
        Map {
            c: conv.out_channels,
            h: oh,
            w: ow,
            data: out,
        }
    }

    fn pool_ref(x: &Map) -> Map {
        let hw = x.h * x.w;
        let data = (0..x.c)
            .map(|c| x.data[c * hw..(c + 1) * hw].iter().sum::<f64>() / hw as f64)
            .collect();
        Map {
            c: x.c,
            h: 1,
            w: 1,
            data,
        }
    }

    fn block_ref(x: &Map, block: &FoldedBlock) -> Map {
        let mut h = match &block.expand {
            Some(e) => conv_ref(x, e),
            None => Map {
                c: x.c,
                h: x.h,
                w: x.w,
                data: x.data.clone(),
            },
        };
        h = conv_ref(&h, &block.depthwise);
        if let Some(se) = &block.squeeze_excite {
            let gate = conv_ref(&conv_ref(&pool_ref(&h), &se.reduce), &se.expand);
            let hw = h.h * h.w;
            for c in 0..h.c {
                for v in &mut h.data[c * hw..(c + 1) * hw] {
                    *v *= gate.data[c];
                }
            }
        }
        h = conv_ref(&h, &block.project);
        if block.residual {
            for (v, r) in h.data.iter_mut().zip(&x.data) {
                *v += r;
            }
        }
        h
    }

    /// Features of one image `[C, H, W]` through a folded backbone.
    pub(crate) fn backbone_ref(
        net: &FoldedBackbone,
        image: &[f32],
        h: usize,
        w: usize,
    ) -> Vec<f32> {
        let mut x = Map {
            c: net.in_channels(),
            h,
            w,
            data: image.iter().map(|&v| v as f64).collect(),
        };
        x = conv_ref(&x, &net.stem);
        for block in &net.blocks {
            x = block_ref(&x, block);
        }
        x = conv_ref(&x, &net.last);
        pool_ref(&x).data.iter().map(|&v| v as f32).collect()
    }

    /// Give every BatchNorm non-trivial gamma/beta and running statistics (from one training-mode
    /// pass with momentum 1, so the statistics are those of real activations), and the SE
    /// convolutions non-zero biases. Returns the model (still on the autodiff device).
    pub(crate) fn model_with_nontrivial_bn(config: &MobileNetV3Config) -> MobileNetV3 {
        let device = Device::flex().autodiff();
        let mut model = config.init(&device);
        let mut seed = 1000;
        for layer in conv_bn_layers_mut(&mut model) {
            let c = layer.bn.gamma.lazy_shape()[0];
            seed += 2;
            layer.bn.gamma = Param::from_tensor(host_random([c], 0.5, 1.5, seed, &device));
            layer.bn.beta = Param::from_tensor(host_random([c], -0.3, 0.3, seed + 1, &device));
            layer.bn.momentum = 1.0;
        }
        for block in &mut model.blocks {
            if let Some(se) = &mut block.squeeze_excite {
                for conv in [&mut se.reduce, &mut se.expand] {
                    let c = conv.weight.lazy_shape()[0];
                    seed += 1;
                    conv.bias = Some(Param::from_tensor(host_random(
                        [c],
                        -0.5,
                        0.5,
                        seed,
                        &device,
                    )));
                }
            }
        }
        // Training mode: autodiff device + training flags enabled (the default).
        // 8 images of 64x64 give each channel of the deepest (2x2) maps 32 samples: well-conditioned
        // statistics, so activations in inference mode stay of order one.
        let x = host_random([8, config.in_channels, 64, 64], -1.0, 1.0, 77, &device);
        let y_train = model.forward(x.clone());
        let mut stats_moved = false;
        for layer in conv_bn_layers_mut(&mut model) {
            let mean = values(layer.bn.running_mean.value_sync());
            stats_moved |= mean.iter().any(|&m| m != 0.0);
            layer.bn.momentum = BN_MOMENTUM;
        }
        assert!(
            stats_moved,
            "a training-mode pass must update running stats"
        );
        // With momentum 1 the running statistics are exactly that batch's statistics, so the
        // inference-mode model reproduces the training-mode output on the same batch.
        let eval = model.valid();
        let y_eval = eval.forward(x.inner());
        let diff = max_abs_diff(&values(y_train.inner()), &values(y_eval));
        assert!(diff < 1e-3, "train vs eval on the stats batch: {diff}");
        model
    }

    #[test]
    fn fold_matches_inference_forward() {
        let config = MobileNetV3Config::small().with_seed(11);
        let model = model_with_nontrivial_bn(&config);
        let eval = model.valid();
        let device = Device::flex();
        let x = host_random([1, 1, 32, 32], -1.0, 1.0, 5, &device);
        let image = values(x.clone());
        let y = values(eval.forward(x.clone()));
        // Inference mode does not depend on the rest of the batch (training mode would).
        let other = host_random([3, 1, 32, 32], -2.0, 2.0, 6, &device);
        let batched = values(eval.forward(Tensor::cat(vec![x.clone(), other], 0)));
        assert!(max_abs_diff(&y, &batched[..576]) < 1e-5);
        let folded = model.fold();
        assert_eq!(folded, eval.fold());
        assert_eq!(folded.feature_dim(), 576);
        let reference = backbone_ref(&folded, &image, 32, 32);
        let scale = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = max_abs_diff(&y, &reference);
        assert!(scale > 1e-2, "features should not vanish (max {scale})");
        println!("fold vs burn: max |diff| {diff:e}, max |y| {scale}");
        assert!(
            diff <= 1e-4,
            "folded reference differs by {diff} (max |y| {scale})"
        );
    }

    #[test]
    fn backward_reaches_parameters_and_freeze_means_inference() {
        let device = Device::flex().autodiff();
        let model = MobileNetV3Config::small().with_seed(2).init(&device);
        let x = host_random([2, 1, 32, 32], -1.0, 1.0, 8, &device);
        let grads = model.forward(x.clone()).sum().backward();
        let stem_grad = model
            .stem
            .conv
            .weight
            .grad(&grads)
            .expect("stem weight grad");
        assert!(values(stem_grad).iter().any(|&g| g != 0.0));
        assert!(model.last.bn.gamma.grad(&grads).is_some());
        let se = model.blocks[0].squeeze_excite.as_ref().unwrap();
        assert!(se.expand.bias.as_ref().unwrap().grad(&grads).is_some());
        // A frozen model on the autodiff device normalises with its running statistics, like
        // the inference copy from `valid()` -- once the running statistics are synced. The clone
        // shares them with `model`, whose training-mode pass above left its update pending:
        // burn's BatchNorm inference path reads `RunningState::value()`, one update behind,
        // until `valid()` (or the next training step) merges it.
        let frozen = model.clone().freeze();
        let y_frozen_stale = values(frozen.forward(x.clone()).inner());
        let y_valid = values(model.valid().forward(x.clone().inner()));
        let y_frozen = values(frozen.forward(x.inner()));
        assert!(max_abs_diff(&y_frozen_stale, &y_valid) > 0.0);
        assert!(max_abs_diff(&y_frozen, &y_valid) < 1e-6);
    }

    /// Forward time of Small, batch 32, 1x128x128, inference mode on the flex backend.
    /// Run with `cargo test --release -p pleura-trainer bench_small_forward -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn bench_small_forward() {
        let device = Device::flex();
        let model = MobileNetV3Config::small().init(&device);
        let x = host_random([32, 1, 128, 128], -1.0, 1.0, 3, &device);
        let _ = values(model.forward(x.clone()));
        let runs = 5;
        let start = std::time::Instant::now();
        for _ in 0..runs {
            let _ = values(model.forward(x.clone()));
        }
        let eval = start.elapsed().as_secs_f64() / runs as f64;
        let ad = Device::flex().autodiff();
        let model = MobileNetV3Config::small().init(&ad);
        let x = host_random([32, 1, 128, 128], -1.0, 1.0, 3, &ad);
        let _ = values(model.forward(x.clone()));
        let start = std::time::Instant::now();
        for _ in 0..runs {
            let _ = values(model.forward(x.clone()));
        }
        let train = start.elapsed().as_secs_f64() / runs as f64;
        println!(
            "Small b32 1x128x128 flex: inference {eval:.4} s, training-mode forward {train:.4} s"
        );
    }
}
