//! Our own f32 depthwise convolution for tract, put in place of tract's `Conv` nodes by a model
//! patch (issue 8, see `docs/performance/inference.md`).
//!
//! tract 0.23.9 runs depthwise convolutions in generic Rust without hand-written SIMD; on the
//! MobileNetV3 backbone they were 43% (channel-last) to 77% (channel-first) of tract's time.
//! [`patch_depthwise`] replaces every f32 depthwise `Conv` with constant kernel and bias (group
//! = input channels = output channels, 2-D, dilation 1) by [`DepthwiseConv`], which holds the
//! pre-packed weights and runs explicit SIMD kernels:
//!
//! - channel-last (`[n][h][w][c]`): vectors across channels (AVX-512F 16 lanes, AVX2 + FMA 8
//!   lanes, NEON 4 lanes, lane masks or partial vectors for channel counts that are not
//!   multiples), borders apart from the interior, whose rows run without bounds checks with
//!   the weights of 3x3 and 5x5 kernels held in registers, four pixels at a time;
//! - channel-first (`[n][c][h][w]`): each channel copied into a zero-padded plane split into
//!   `stride` column phases, vectors across the output width.
//!
//! The instruction set is picked at run time (`is_x86_feature_detected!`); other targets
//! (armv7, ...) run a portable version written for LLVM's auto-vectoriser. Everything else
//! (the graph, the other ops, the optimiser) stays tract's.

mod kernel;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod x86;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::Conv;

/// Instruction sets the kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Isa {
    /// Portable code, auto-vectorised by LLVM for the build target.
    Portable,
    /// x86-64 AVX2 + FMA, 8 lanes.
    Avx2,
    /// x86-64 AVX-512F, 16 lanes.
    Avx512,
    /// aarch64 NEON, 4 lanes.
    Neon,
}

impl Isa {
    /// Whether this machine runs `self`.
    pub(crate) fn available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Lower-case name: `portable`, `avx2`, `avx512` or `neon`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// The widest instruction set this machine runs.
    pub(crate) fn best() -> Isa {
        [Isa::Avx512, Isa::Avx2, Isa::Neon]
            .into_iter()
            .find(|isa| isa.available())
            .unwrap_or(Isa::Portable)
    }
}

/// The shape of one depthwise convolution, all concrete.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Geometry {
    /// Channels (in = out).
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Vertical stride.
    pub sh: usize,
    /// Horizontal stride.
    pub sw: usize,
    /// Zero rows above the input.
    pub ph: usize,
    /// Zero columns left of the input.
    pub pw: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// `[h][w][c]` when true, `[c][h][w]` otherwise.
    pub channel_last: bool,
}

impl Geometry {
    /// Refuses geometries the kernels cannot run (zero sizes, windows that start past the
    /// input's zero padding).
    fn check(&self) -> TractResult<()> {
        ensure!(
            self.c > 0 && self.kh > 0 && self.kw > 0,
            "empty depthwise geometry {self:?}"
        );
        ensure!(self.sh > 0 && self.sw > 0, "zero stride in {self:?}");
        ensure!(
            self.ph < self.kh && self.pw < self.kw,
            "padding at least the kernel size in {self:?}"
        );
        Ok(())
    }

    /// `(c, h, w)` of the input or `(c, oh, ow)` of the output in this layout.
    fn dims(&self, output: bool) -> [usize; 3] {
        let (h, w) = if output {
            (self.oh, self.ow)
        } else {
            (self.h, self.w)
        };
        if self.channel_last {
            [h, w, self.c]
        } else {
            [self.c, h, w]
        }
    }
}

/// f32 depthwise 2-D convolution with bias and pre-packed weights (see the module docs).
///
/// Input and output are `[n][h][w][c]` / `[h][w][c]` (channel-last) or `[n][c][h][w]` /
/// `[c][h][w]`; weights `[kh][kw][c]` (channel-last) or `[c][kh][kw]`.
#[derive(Clone, Debug)]
pub(crate) struct DepthwiseConv {
    geo: Geometry,
    has_n: bool,
    weights: Arc<[f32]>,
    bias: Arc<[f32]>,
    isa: Isa,
}

impl PartialEq for DepthwiseConv {
    fn eq(&self, other: &Self) -> bool {
        let same = |a: &[f32], b: &[f32]| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
        };
        self.geo == other.geo
            && self.has_n == other.has_n
            && self.isa == other.isa
            && same(&self.weights, &other.weights)
            && same(&self.bias, &other.bias)
    }
}

impl Eq for DepthwiseConv {}

impl DepthwiseConv {
    /// The expected input shape (`n` = 1) or output shape.
    fn shape(&self, n: Option<&TDim>, output: bool) -> TVec<TDim> {
        let mut shape: TVec<TDim> = tvec!();
        if self.has_n {
            shape.push(n.cloned().unwrap_or_else(|| 1.into()));
        }
        shape.extend(self.geo.dims(output).iter().map(|&d| d.to_dim()));
        shape
    }
}

impl Op for DepthwiseConv {
    fn name(&self) -> StaticName {
        "PleuraDepthwiseConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{:?} {:?} batch axis: {}",
            self.isa, self.geo, self.has_n
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for DepthwiseConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 1, "PleuraDepthwiseConv takes one input");
        let input = &inputs[0];
        ensure!(
            input.datum_type() == f32::datum_type(),
            "PleuraDepthwiseConv runs f32 only"
        );
        let shape = input.shape();
        let (batch, dims) = if self.has_n {
            ensure!(
                shape.len() == 4,
                "PleuraDepthwiseConv: input {shape:?} is not 4-D"
            );
            (shape[0], &shape[1..])
        } else {
            (1, shape)
        };
        ensure!(
            dims == self.geo.dims(false),
            "PleuraDepthwiseConv: input {shape:?} does not match {:?}",
            self.geo
        );
        let mut out_shape: TVec<usize> = tvec!();
        if self.has_n {
            out_shape.push(batch);
        }
        out_shape.extend(self.geo.dims(true));
        let mut output = Tensor::zero::<f32>(&out_shape)?;
        {
            let input = input.try_as_plain_ram()?.as_slice::<f32>()?;
            let mut view = output.try_as_plain_ram_mut()?;
            let out = view.as_slice_mut::<f32>()?;
            self.run(batch, input, out)?;
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl DepthwiseConv {
    /// Runs the kernel of `self.isa` on `batch` images, on the calling thread (splitting the
    /// rows across tract's pool with `par_chunks_mut` measured slower on the 2-core test
    /// machine, see `docs/performance/inference.md`). Checks every size the kernels rely on.
    fn run(&self, batch: usize, input: &[f32], output: &mut [f32]) -> TractResult<()> {
        let g = &self.geo;
        g.check()?;
        ensure!(
            input.len() == batch * g.c * g.h * g.w && output.len() == batch * g.c * g.oh * g.ow,
            "PleuraDepthwiseConv: buffer sizes do not match {g:?}"
        );
        ensure!(
            self.weights.len() == g.c * g.kh * g.kw && self.bias.len() == g.c,
            "PleuraDepthwiseConv: weights do not match {g:?}"
        );
        ensure!(
            self.isa.available(),
            "{:?} is not available on this machine",
            self.isa
        );
        let (w, b) = (&*self.weights, &*self.bias);
        match self.isa {
            // SAFETY (all arms): the instruction set is available, the geometry passed
            // `check`, and the buffer sizes match it (all checked above).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { x86::run_avx512(g, batch, input, w, b, output) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::run_avx2(g, batch, input, w, b, output) },
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => unsafe { neon::run_neon(g, batch, input, w, b, output) },
            _ => unsafe { kernel::run::<kernel::Portable>(g, batch, input, w, b, output) },
        }
        Ok(())
    }
}

impl TypedOp for DepthwiseConv {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1, "PleuraDepthwiseConv takes one input");
        let fact = inputs[0];
        ensure!(
            fact.datum_type == f32::datum_type(),
            "PleuraDepthwiseConv runs f32 only"
        );
        let n = self.has_n.then(|| &fact.shape[0]);
        let skip = usize::from(self.has_n);
        let expected = self.shape(None, false);
        ensure!(
            fact.rank() == 3 + skip && fact.shape.iter().skip(skip).eq(expected[skip..].iter()),
            "PleuraDepthwiseConv: input {fact:?} does not match {:?}",
            self.geo
        );
        Ok(tvec!(f32::fact(self.shape(n, true))))
    }

    fn change_axes(
        &self,
        _model: &TypedModel,
        _node: &TypedNode,
        _io: InOut,
        change: &AxisOp,
    ) -> TractResult<Option<AxisChangeConsequence>> {
        // Only the batch axis may come and go (tract drops it at batch 1).
        let has_n = match change {
            AxisOp::Rm(0) if self.has_n => false,
            AxisOp::Add(0) if !self.has_n => true,
            _ => return Ok(None),
        };
        Ok(Some(AxisChangeConsequence {
            substitute_op: Some(Box::new(DepthwiseConv {
                has_n,
                ..self.clone()
            })),
            wire_changes: tvec!(
                (InOut::In(0), change.clone()),
                (InOut::Out(0), change.clone())
            ),
        }))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let n = if self.has_n {
            inputs[0].shape[0].clone()
        } else {
            1.into()
        };
        let g = &self.geo;
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            n * (g.c * g.oh * g.ow * g.kh * g.kw)
        )))
    }
}

/// What a `Conv` node becomes: its geometry in its own layout and weights `[c][kh][kw]`.
struct Candidate {
    geo: Geometry,
    has_n: bool,
    c_axis: usize,
    rank: usize,
    weights_ckk: Vec<f32>,
    bias: Vec<f32>,
}

/// `Some` when `node` is a `Conv` we replace: f32, 2-D, depthwise with channel multiplier 1,
/// constant kernel and bias, dilation 1, strides 1 or 2, concrete input shape.
fn candidate(model: &TypedModel, node: &TypedNode) -> TractResult<Option<Candidate>> {
    let Some(conv) = node.op_as::<Conv>() else {
        return Ok(None);
    };
    let spec = &conv.pool_spec;
    let c = conv.input_channels();
    if conv.q_params.is_some()
        || node.inputs.len() != 3
        || spec.rank() != 2
        || conv.group != c
        || conv.output_channels() != c
        || c == 0
        || spec.dilations().iter().any(|&d| d != 1)
        || spec.strides().iter().any(|&s| s != 1 && s != 2)
    {
        return Ok(None);
    }
    let facts = model.node_input_facts(node.id)?;
    let (x, kernel, bias) = (facts[0], facts[1], facts[2]);
    if x.datum_type != f32::datum_type() || kernel.datum_type != f32::datum_type() {
        return Ok(None);
    }
    let (Some(x_shape), Some(kernel_t), Some(bias_t)) = (
        x.shape.as_concrete(),
        kernel.konst.as_ref(),
        bias.konst.as_ref(),
    ) else {
        return Ok(None);
    };
    if bias_t.datum_type() != f32::datum_type() || kernel_t.rank() != 4 {
        return Ok(None);
    }
    let shape = spec.data_format.shape(x_shape)?;
    let (&h, &w) = (&shape.hw_dims()[0], &shape.hw_dims()[1]);
    if *shape.c() != c {
        return Ok(None);
    }
    let (kh, kw) = (spec.kernel_shape[0], spec.kernel_shape[1]);
    let fmt = conv.kernel_fmt;
    let k_shape = kernel_t.shape();
    if *fmt.o(k_shape) != c || *fmt.i(k_shape) != 1 || fmt.hw(k_shape) != [kh, kw] {
        return Ok(None);
    }
    let padding = spec.computed_padding(&[h, w]);
    let geo = Geometry {
        c,
        h,
        w,
        kh,
        kw,
        sh: spec.stride(0),
        sw: spec.stride(1),
        ph: padding[0].pad_before,
        pw: padding[1].pad_before,
        oh: padding[0].convoluted,
        ow: padding[1].convoluted,
        channel_last: spec.data_format.c_is_last(),
    };
    if geo.check().is_err() {
        return Ok(None);
    }
    let kernel_v = kernel_t.to_plain_array_view::<f32>()?;
    let (o_axis, i_axis, h_axis) = (fmt.o_axis(k_shape), fmt.i_axis(k_shape), fmt.h_axis());
    let mut weights_ckk = Vec::with_capacity(c * kh * kw);
    let mut coords = [0usize; 4];
    for ch in 0..c {
        for ky in 0..kh {
            for kx in 0..kw {
                coords[o_axis] = ch;
                coords[i_axis] = 0;
                coords[h_axis] = ky;
                coords[h_axis + 1] = kx;
                weights_ckk.push(kernel_v[&coords[..]]);
            }
        }
    }
    let bias_v = bias_t.try_as_plain_ram()?.as_slice::<f32>()?;
    let bias = match bias_v.len() {
        1 => vec![bias_v[0]; c],
        n if n == c => bias_v.to_vec(),
        _ => return Ok(None),
    };
    Ok(Some(Candidate {
        geo,
        has_n: spec.data_format.has_n(),
        c_axis: shape.c_axis(),
        rank: x_shape.len(),
        weights_ckk,
        bias,
    }))
}

/// Replaces every depthwise `Conv` of `model` (decluttered, before tract's `conv_nhwc`
/// transform and `into_optimized()`) with [`DepthwiseConv`], channel-last (between two axis
/// moves, as tract's `conv_nhwc` does) when `channel_last`, else in the node's own layout.
/// Returns how many nodes were replaced; nodes that do not qualify are left to tract.
pub(crate) fn patch_depthwise(model: &mut TypedModel, channel_last: bool) -> TractResult<usize> {
    patch_depthwise_with(model, channel_last, Isa::best())
}

/// [`patch_depthwise`] with the instruction set `isa` (tests force each one).
pub(crate) fn patch_depthwise_with(
    model: &mut TypedModel,
    channel_last: bool,
    isa: Isa,
) -> TractResult<usize> {
    ensure!(isa.available(), "{isa:?} is not available on this machine");
    let ids = model.eval_order()?;
    let mut replaced = 0;
    for id in ids {
        let node = model.node(id);
        let Some(cand) = candidate(model, node)? else {
            continue;
        };
        let Candidate {
            mut geo,
            has_n,
            c_axis,
            rank,
            weights_ckk,
            bias,
        } = cand;
        let name = node.name.clone();
        let mut patch = TypedModelPatch::new(format!("pleura-depthwise {name}"));
        let mut x = patch.tap_model(model, node.inputs[0])?;
        let moved = channel_last && !geo.channel_last;
        if moved {
            x = patch.wire_node(
                format!("{name}.pleura_nhwc_in"),
                AxisOp::Move(c_axis, rank - 1),
                &[x],
            )?[0];
            geo.channel_last = true;
        }
        let weights: Vec<f32> = if geo.channel_last {
            let taps = geo.kh * geo.kw;
            (0..taps * geo.c)
                .map(|i| weights_ckk[(i % geo.c) * taps + i / geo.c])
                .collect()
        } else {
            weights_ckk
        };
        let op = DepthwiseConv {
            geo,
            has_n,
            weights: weights.into(),
            bias: bias.into(),
            isa,
        };
        let mut y = patch.wire_node(&name, op, &[x])?[0];
        if moved {
            y = patch.wire_node(
                format!("{name}.pleura_nhwc_out"),
                AxisOp::Move(rank - 1, c_axis),
                &[y],
            )?[0];
        }
        patch.shunt_outside(model, id.into(), y)?;
        patch.obliterate(id)?;
        patch.apply(model)?;
        replaced += 1;
    }
    Ok(replaced)
}

/// Whether tract plans get [`DepthwiseConv`]: yes unless the environment variable
/// `PLEURA_TRACT_DEPTHWISE` is `tract` (tract's own depthwise kernel).
pub(crate) fn enabled() -> bool {
    std::env::var("PLEURA_TRACT_DEPTHWISE").map_or(true, |v| v.trim() != "tract")
}

#[cfg(test)]
mod tests;
