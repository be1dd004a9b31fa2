//! The file's convolutions matched, in build order, to the layers of a [`MobileNetV3Config`],
//! with every shape and attribute checked and the weights converted to our layout: a folded
//! file's bias becomes an identity BatchNorm, an unfolded file's BatchNorm is carried over (or,
//! after a squeeze-and-excitation conv, folded into it).

use anyhow::{anyhow, ensure, Result};

use super::{describe, FileConv, OnnxMobileNetV3};
use crate::model::folded::Act;
use crate::model::spec::{MobileNetV3Config, BN_EPSILON};

/// What our model expects at one convolution, derived from a [`MobileNetV3Config`] in the
/// order in which [`MobileNetV3Config::init`] builds the layers.
#[derive(Clone, Debug)]
struct Expected {
    /// Our name of the layer (`stem`, `blocks.3.depthwise`, `blocks.3.se.reduce`, `last`).
    role: String,
    /// `[out, in / groups, k, k]`.
    dims: [usize; 4],
    stride: usize,
    groups: usize,
    act: Act,
    /// Conv + BatchNorm ([`ConvBnAct`](crate::model::blocks::ConvBnAct)) or a plain conv with
    /// bias (squeeze-and-excitation).
    with_batch_norm: bool,
}

/// Weights of one layer, converted to our layout.
#[derive(Clone, Debug)]
pub(super) struct Loaded {
    pub(super) dims: [usize; 4],
    pub(super) weight: Vec<f32>,
    pub(super) params: LoadedParams,
}

#[derive(Clone, Debug)]
pub(super) enum LoadedParams {
    /// BatchNorm after a bias-free conv.
    BatchNorm {
        gamma: Vec<f32>,
        beta: Vec<f32>,
        mean: Vec<f32>,
        var: Vec<f32>,
    },
    /// The conv's own bias.
    Bias(Vec<f32>),
}

impl OnnxMobileNetV3 {
    /// Matches the file against `config` and converts every layer to our layout.
    pub(super) fn check(&self, config: &MobileNetV3Config) -> Result<Vec<Loaded>> {
        let path = self.path.display();
        let expected = expected_layers(config);
        ensure!(
            self.convs.len() == expected.len(),
            "ONNX file {path} has {} Conv nodes, {} has {}",
            self.convs.len(),
            describe(config),
            expected.len()
        );
        let residual = config.blocks().iter().filter(|b| b.residual()).count();
        ensure!(
            self.residual_adds == residual,
            "ONNX file {path} has {} residual Add nodes, {} has {residual} skip connections",
            self.residual_adds,
            describe(config)
        );
        let n = expected.len();
        self.convs
            .iter()
            .zip(&expected)
            .enumerate()
            .map(|(i, (conv, want))| {
                let at = format!(
                    "ONNX file {path}: Conv {} of {n}, node {}, layer {} of {}",
                    i + 1,
                    conv.label,
                    want.role,
                    describe(config)
                );
                convert(conv, want).map_err(|e| anyhow!("{at}: {e:#}"))
            })
            .collect()
    }
}

/// The convolutions of `config` in build order (mirrors [`MobileNetV3Config::init`] and
/// `InvertedResidual::new`).
fn expected_layers(config: &MobileNetV3Config) -> Vec<Expected> {
    let layer = |role: String, dims, stride, groups, act, with_batch_norm| Expected {
        role,
        dims,
        stride,
        groups,
        act,
        with_batch_norm,
    };
    let stem = config.stem_channels();
    let mut out = vec![layer(
        "stem".into(),
        [stem, config.in_channels, 3, 3],
        2,
        1,
        Act::HardSwish,
        true,
    )];
    let specs = config.blocks();
    for (i, spec) in specs.iter().enumerate() {
        let act = spec.activation.to_act();
        if spec.has_expansion() {
            out.push(layer(
                format!("blocks.{i}.expand"),
                [spec.expanded, spec.input, 1, 1],
                1,
                1,
                act,
                true,
            ));
        }
        out.push(layer(
            format!("blocks.{i}.depthwise"),
            [spec.expanded, 1, spec.kernel, spec.kernel],
            spec.stride,
            spec.expanded,
            act,
            true,
        ));
        if spec.use_se {
            let squeeze = spec.squeeze_channels();
            out.push(layer(
                format!("blocks.{i}.se.reduce"),
                [squeeze, spec.expanded, 1, 1],
                1,
                1,
                Act::Relu,
                false,
            ));
            out.push(layer(
                format!("blocks.{i}.se.expand"),
                [spec.expanded, squeeze, 1, 1],
                1,
                1,
                Act::HardSigmoid,
                false,
            ));
        }
        out.push(layer(
            format!("blocks.{i}.project"),
            [spec.out, spec.expanded, 1, 1],
            1,
            1,
            Act::Identity,
            true,
        ));
    }
    let last_in = specs.last().map_or(stem, |b| b.out);
    out.push(layer(
        "last".into(),
        [config.last_channels(), last_in, 1, 1],
        1,
        1,
        Act::HardSwish,
        true,
    ));
    out
}

/// Checks one file convolution against what our layer expects and converts its weights.
fn convert(conv: &FileConv, want: &Expected) -> Result<Loaded> {
    let k = want.dims[2];
    let p = (k - 1) / 2;
    let s = want.stride;
    ensure!(
        conv.kernel == [k, k],
        "kernel_shape {:?}, expected [{k}, {k}]",
        conv.kernel
    );
    ensure!(
        conv.strides == [s, s],
        "strides {:?}, expected [{s}, {s}]",
        conv.strides
    );
    ensure!(
        conv.pads == [p, p, p, p],
        "pads {:?}, expected [{p}, {p}, {p}, {p}]",
        conv.pads
    );
    ensure!(
        conv.dilations == [1, 1],
        "dilations {:?}, expected [1, 1] (dilated MobileNetV3 is not supported)",
        conv.dilations
    );
    ensure!(
        conv.group == want.groups,
        "group {}, expected {}",
        conv.group,
        want.groups
    );
    ensure!(
        conv.act == want.act,
        "is followed by activation {:?}, expected {:?}",
        conv.act,
        want.act
    );

    let mut dims = conv.weight_dims;
    let mut weight = conv.weight.clone();
    if want.role == "stem" && want.dims[1] == 1 && dims[1] > 1 && dims[2] * dims[3] > 0 {
        // Sum the kernel over its input channels: [out, C, k, k] -> [out, 1, k, k].
        let (c, kk) = (dims[1], dims[2] * dims[3]);
        weight = weight
            .chunks_exact(c * kk)
            .flat_map(|filter| {
                (0..kk)
                    .map(move |j| (0..c).map(|ch| filter[ch * kk + j] as f64).sum::<f64>() as f32)
            })
            .collect();
        dims[1] = 1;
    }
    ensure!(
        dims == want.dims,
        "weight '{}' has shape {:?}, expected {:?}",
        conv.weight_name,
        conv.weight_dims,
        want.dims
    );

    let out = dims[0];
    let bias: Vec<f64> = conv.bias.as_ref().map_or_else(
        || vec![0.0; out],
        |(_, b)| b.iter().map(|&v| v as f64).collect(),
    );
    let f32s = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
    let params = match (&conv.batch_norm, want.with_batch_norm) {
        // Folded: identity BatchNorm shifted by the conv bias.
        (None, true) => {
            let eps = BN_EPSILON;
            let (gamma, var) = if eps < 1.0 {
                (1.0, 1.0 - eps)
            } else {
                ((1.0 + eps).sqrt(), 1.0)
            };
            LoadedParams::BatchNorm {
                gamma: vec![gamma as f32; out],
                beta: f32s(bias),
                mean: vec![0.0; out],
                var: vec![var as f32; out],
            }
        }
        // Unfolded: the file's statistics; the conv bias moves into the mean, and a different
        // epsilon into the variance (or, where that would not stay positive, into gamma).
        (Some(bn), true) => {
            let eps = BN_EPSILON;
            let (mut gamma, mut mean, mut var) = (vec![], vec![], vec![]);
            for (c, &b) in bias.iter().enumerate() {
                let (g, v) = (bn.gamma[c] as f64, bn.var[c] as f64);
                ensure!(
                    v + bn.epsilon > 0.0,
                    "BatchNormalization node {} has variance {v} at channel {c}",
                    bn.label
                );
                let shifted = v + bn.epsilon - eps;
                if shifted > 0.0 {
                    gamma.push(g);
                    var.push(shifted);
                } else {
                    gamma.push(g * ((v + eps) / (v + bn.epsilon)).sqrt());
                    var.push(v);
                }
                mean.push(bn.mean[c] as f64 - b);
            }
            LoadedParams::BatchNorm {
                gamma: f32s(gamma),
                beta: bn.beta.clone(),
                mean: f32s(mean),
                var: f32s(var),
            }
        }
        (None, false) => LoadedParams::Bias(f32s(bias)),
        // A BatchNorm after a squeeze-and-excitation conv: fold it into the conv.
        (Some(bn), false) => {
            let per_out = weight.len() / out;
            let mut shift = Vec::with_capacity(out);
            for c in 0..out {
                let v = bn.var[c] as f64 + bn.epsilon;
                ensure!(
                    v > 0.0,
                    "BatchNormalization node {} has variance {} at channel {c}",
                    bn.label,
                    bn.var[c]
                );
                let scale = bn.gamma[c] as f64 / v.sqrt();
                for w in &mut weight[c * per_out..(c + 1) * per_out] {
                    *w = (*w as f64 * scale) as f32;
                }
                shift.push(bn.beta[c] as f64 + (bias[c] - bn.mean[c] as f64) * scale);
            }
            LoadedParams::Bias(f32s(shift))
        }
    };
    Ok(Loaded {
        dims,
        weight,
        params,
    })
}
