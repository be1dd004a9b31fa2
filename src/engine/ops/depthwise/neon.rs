//! NEON (aarch64, 4 lanes) instance of the kernels.

use core::arch::aarch64::*;

use super::kernel::{self, Simd};
use super::Geometry;

/// NEON: `float32x4_t`; tails through a small stack buffer.
pub(super) struct Neon;

impl Simd for Neon {
    const LANES: usize = 4;
    type V = float32x4_t;

    #[inline(always)]
    unsafe fn zero() -> float32x4_t {
        // SAFETY: NEON is available (the `Simd` contract).
        unsafe { vdupq_n_f32(0.0) }
    }

    #[inline(always)]
    unsafe fn splat(x: f32) -> float32x4_t {
        // SAFETY: NEON is available.
        unsafe { vdupq_n_f32(x) }
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> float32x4_t {
        // SAFETY: NEON is available; the caller guarantees 4 readable f32.
        unsafe { vld1q_f32(p) }
    }

    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> float32x4_t {
        let mut buf = [0.0f32; 4];
        // SAFETY: the caller guarantees `n` (< 4) readable f32; `buf` holds 4.
        unsafe {
            core::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), n.min(4));
            vld1q_f32(buf.as_ptr())
        }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: float32x4_t) {
        // SAFETY: NEON is available; the caller guarantees 4 writable f32.
        unsafe { vst1q_f32(p, v) }
    }

    #[inline(always)]
    unsafe fn store_partial(p: *mut f32, v: float32x4_t, n: usize) {
        let mut buf = [0.0f32; 4];
        // SAFETY: `buf` holds 4 f32; the caller guarantees `n` (< 4) writable f32 at `p`.
        unsafe {
            vst1q_f32(buf.as_mut_ptr(), v);
            core::ptr::copy_nonoverlapping(buf.as_ptr(), p, n.min(4));
        }
    }

    #[inline(always)]
    unsafe fn fma(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        // SAFETY: NEON is available; vfmaq_f32(c, a, b) = c + a * b.
        unsafe { vfmaq_f32(c, a, b) }
    }
}

/// [`kernel::run`] compiled for NEON.
///
/// # Safety
///
/// NEON must be available; the contract of [`kernel::run`] holds.
#[target_feature(enable = "neon")]
pub(super) unsafe fn run_neon(
    geo: &Geometry,
    batch: usize,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    output: &mut [f32],
) {
    // SAFETY: forwarded contract.
    unsafe { kernel::run::<Neon>(geo, batch, input, weights, bias, output) }
}
