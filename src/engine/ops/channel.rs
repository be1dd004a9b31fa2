//! The squeeze-excitation block's channel-last ops: the scale `x [.., C] * s [1, .., 1, C]`
//! and the global pool's sum over every axis but the channels.
//!
//! tract 0.23.9 runs this broadcast `Mul` on its generic binary path unless C is a multiple of
//! its vector size (64 f32 on AVX-512), which none of MobileNetV3-Small's SE blocks but the
//! last is: 19% of the channel-last backbone's time; its `Reduce<Sum>` over the leading axes
//! is 2-3x slower than over the contiguous ones. [`patch_channel_ops`] replaces such nodes of
//! an optimised model with [`ChannelMul`], a row-by-row multiply (in place when tract hands it
//! the only reference to `x`), and [`ChannelSum`], a sum of rows.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::nn::{Reduce, Reducer};

/// `x * s` where `s` is `[1, .., 1, C]` and `x` `[.., C]` (same rank), f32.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ChannelMul {
    /// Which input is `x` (the other one is `s`).
    x_input: usize,
}

impl Op for ChannelMul {
    fn name(&self) -> StaticName {
        "PleuraChannelMul".into()
    }

    op_as_typed_op!();
}

impl EvalOp for ChannelMul {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, mut inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(
            inputs.len() == 2 && self.x_input < 2,
            "PleuraChannelMul takes two inputs"
        );
        let s = inputs.remove(1 - self.x_input);
        let x = inputs.remove(0);
        check_shapes(x.shape(), s.shape())?;
        ensure!(
            x.datum_type() == f32::datum_type() && s.datum_type() == f32::datum_type(),
            "PleuraChannelMul runs f32 only"
        );
        let mut out = x.into_tensor();
        {
            let scale = s.try_as_plain_ram()?.as_slice::<f32>()?;
            let mut view = out.try_as_plain_ram_mut()?;
            let data = view.as_slice_mut::<f32>()?;
            if !scale.is_empty() {
                for row in data.chunks_exact_mut(scale.len()) {
                    for (v, k) in row.iter_mut().zip(scale) {
                        *v *= *k;
                    }
                }
            }
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

/// `x` and `s` have the same rank, `s` is 1 everywhere but on the last axis, equal to `x`'s.
fn check_shapes(x: &[usize], s: &[usize]) -> TractResult<()> {
    ensure!(
        !x.is_empty()
            && x.len() == s.len()
            && s[..s.len() - 1].iter().all(|&d| d == 1)
            && x.last() == s.last(),
        "PleuraChannelMul: shapes {x:?} and {s:?} are not [.., C] and [1, .., 1, C]"
    );
    Ok(())
}

impl TypedOp for ChannelMul {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.len() == 2 && self.x_input < 2,
            "PleuraChannelMul takes two inputs"
        );
        let (x, s) = (inputs[self.x_input], inputs[1 - self.x_input]);
        let (Some(xs), Some(ss)) = (x.shape.as_concrete(), s.shape.as_concrete()) else {
            bail!("PleuraChannelMul needs concrete shapes, got {x:?} and {s:?}");
        };
        check_shapes(xs, ss)?;
        Ok(tvec!(f32::fact(x.shape.clone())))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            inputs[self.x_input].shape.volume()
        )))
    }
}

/// `Some(index of x)` when `node` is an f32 `Mul` of `[.., C]` by `[1, .., 1, C]`, C > 1,
/// concrete shapes, `x` not itself all ones but on the last axis.
fn candidate(model: &TypedModel, node: &TypedNode) -> TractResult<Option<usize>> {
    let Some(op) = node.op_as::<TypedBinOp>() else {
        return Ok(None);
    };
    if op.0.name() != "Mul" || node.inputs.len() != 2 {
        return Ok(None);
    }
    let facts = model.node_input_facts(node.id)?;
    if facts.iter().any(|f| f.datum_type != f32::datum_type())
        || model.outlet_fact(node.id.into())?.datum_type != f32::datum_type()
    {
        return Ok(None);
    }
    let (Some(a), Some(b)) = (facts[0].shape.as_concrete(), facts[1].shape.as_concrete()) else {
        return Ok(None);
    };
    let is_scale = |s: &[usize]| s.len() >= 2 && s[..s.len() - 1].iter().all(|&d| d == 1);
    let x_input = match (is_scale(a), is_scale(b)) {
        (false, true) => 0,
        (true, false) => 1,
        _ => return Ok(None),
    };
    let (x, s) = if x_input == 0 { (a, b) } else { (b, a) };
    if check_shapes(x, s).is_err() || x.last().is_none_or(|&c| c < 2) {
        return Ok(None);
    }
    Ok(Some(x_input))
}

/// `[.., C]` summed over every axis but the last into `[1, .., 1, C]`, f32.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ChannelSum;

impl Op for ChannelSum {
    fn name(&self) -> StaticName {
        "PleuraChannelSum".into()
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for ChannelSum {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 1, "PleuraChannelSum takes one input");
        let x = &inputs[0];
        ensure!(
            x.datum_type() == f32::datum_type(),
            "PleuraChannelSum runs f32 only"
        );
        let shape = x.shape();
        let (Some(&c), true) = (shape.last(), shape.len() >= 2) else {
            bail!("PleuraChannelSum: input {shape:?} has no channel axis");
        };
        let mut out_shape: TVec<usize> = shape.iter().map(|_| 1).collect();
        out_shape[shape.len() - 1] = c;
        let mut sum = vec![0.0f32; c];
        let data = x.try_as_plain_ram()?.as_slice::<f32>()?;
        if c > 0 {
            for row in data.chunks_exact(c) {
                for (acc, v) in sum.iter_mut().zip(row) {
                    *acc += *v;
                }
            }
        }
        Ok(tvec!(Tensor::from_shape(&out_shape, &sum)?.into_tvalue()))
    }
}

impl TypedOp for ChannelSum {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1, "PleuraChannelSum takes one input");
        let x = inputs[0];
        ensure!(x.datum_type == f32::datum_type() && x.rank() >= 2);
        let mut shape: TVec<TDim> = x.shape.iter().map(|_| 1.to_dim()).collect();
        shape[x.rank() - 1] = x.shape[x.rank() - 1].clone();
        Ok(tvec!(f32::fact(shape)))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        Ok(tvec!((
            Cost::FMA(f32::datum_type()),
            inputs[0].shape.volume()
        )))
    }
}

/// `true` when `node` is an f32 `Reduce<Sum>` of a concrete `[.., C]` (C > 1) over every
/// axis but the last (axes of size 1 may be left out).
fn is_channel_sum(model: &TypedModel, node: &TypedNode) -> TractResult<bool> {
    let Some(op) = node.op_as::<Reduce>() else {
        return Ok(false);
    };
    if op.reducer != Reducer::Sum || node.inputs.len() != 1 {
        return Ok(false);
    }
    let fact = model.outlet_fact(node.inputs[0])?;
    let Some(shape) = fact.shape.as_concrete() else {
        return Ok(false);
    };
    Ok(fact.datum_type == f32::datum_type()
        && shape.len() >= 2
        && shape[shape.len() - 1] >= 2
        && !op.axes.contains(&(shape.len() - 1))
        && (0..shape.len() - 1).all(|a| op.axes.contains(&a) || shape[a] == 1))
}

/// Replaces, in an optimised `model`, every channel-last squeeze-excitation `Mul` with
/// [`ChannelMul`] and every sum over all axes but the channels with [`ChannelSum`]; returns
/// how many of each.
pub(crate) fn patch_channel_ops(model: &mut TypedModel) -> TractResult<(usize, usize)> {
    let (mut muls, mut sums) = (0, 0);
    for id in model.eval_order()? {
        let node = model.node(id);
        let inputs = node.inputs.clone();
        let patch = if let Some(x_input) = candidate(model, node)? {
            muls += 1;
            TypedModelPatch::replace_single_op(model, node, &inputs, ChannelMul { x_input })?
        } else if is_channel_sum(model, node)? {
            sums += 1;
            TypedModelPatch::replace_single_op(model, node, &inputs, ChannelSum)?
        } else {
            continue;
        };
        patch.apply(model)?;
    }
    Ok((muls, sums))
}

/// Whether tract plans get [`ChannelMul`] and [`ChannelSum`]: yes unless the environment
/// variable `PLEURA_TRACT_CHANNEL_OPS` is `tract`.
pub(crate) fn enabled() -> bool {
    std::env::var("PLEURA_TRACT_CHANNEL_OPS").map_or(true, |v| v.trim() != "tract")
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;
    use tract_onnx::tract_core::ops::math::mul;

    use super::*;

    fn random(rng: &mut Xoshiro256PlusPlus, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        Tensor::from_shape(shape, &v).unwrap()
    }

    #[test]
    fn matches_tract_mul() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
        for (x_shape, s_shape, swap) in [
            (vec![1, 8, 8, 96], vec![1, 1, 1, 96], false),
            (vec![16, 16, 88], vec![1, 1, 88], true),
            (vec![4, 4, 576], vec![1, 1, 576], false),
            (vec![3, 5, 17], vec![1, 1, 17], false),
        ] {
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact(&x_shape)).unwrap();
            let s = model.add_source("s", f32::fact(&s_shape)).unwrap();
            let inputs = if swap { [s, x] } else { [x, s] };
            let y = model.wire_node("mul", mul(), &inputs).unwrap();
            model.select_output_outlets(&y).unwrap();
            let xv = random(&mut rng, &x_shape);
            let sv = random(&mut rng, &s_shape);
            let run = |m: TypedModel| {
                m.into_runnable()
                    .unwrap()
                    .run(tvec!(xv.clone().into(), sv.clone().into()))
                    .unwrap()[0]
                    .clone()
                    .into_tensor()
            };
            let reference = run(model.clone());
            let mut patched = model;
            assert_eq!(patch_channel_ops(&mut patched).unwrap(), (1, 0));
            assert_eq!(run(patched.clone()), reference);
            assert_eq!(run(patched.into_optimized().unwrap()), reference);
        }
    }

    #[test]
    fn matches_tract_sum() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(12);
        for shape in [
            vec![64, 64, 16],
            vec![1, 8, 8, 96],
            vec![4, 4, 576],
            vec![3, 17],
        ] {
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact(&shape)).unwrap();
            let reduce = Reduce::new((0..shape.len() - 1).collect(), Reducer::Sum);
            let y = model.wire_node("sum", reduce, &[x]).unwrap();
            model.select_output_outlets(&y).unwrap();
            let xv = random(&mut rng, &shape);
            let run = |m: TypedModel| {
                m.into_runnable()
                    .unwrap()
                    .run(tvec!(xv.clone().into()))
                    .unwrap()[0]
                    .clone()
                    .into_tensor()
            };
            let reference = run(model.clone());
            let mut patched = model;
            assert_eq!(patch_channel_ops(&mut patched).unwrap(), (0, 1));
            for out in [run(patched.clone()), run(patched.into_optimized().unwrap())] {
                assert_eq!(out.shape(), reference.shape());
                let (a, b) = (
                    out.to_plain_array_view::<f32>().unwrap(),
                    reference.to_plain_array_view::<f32>().unwrap(),
                );
                let diff = a
                    .iter()
                    .zip(b.iter())
                    .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(diff <= 1e-4, "{shape:?}: max diff {diff}");
            }
        }
    }
}
