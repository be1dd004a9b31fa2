//! AVX2 + FMA (8 lanes) and AVX-512F (16 lanes) instances of the kernels.

use core::arch::x86_64::*;

use super::kernel::{self, Simd};
use super::Geometry;

/// AVX2 with FMA: `__m256`.
pub(super) struct Avx2;

/// 8 ones then 8 zeros: the mask for the first `n` lanes starts at `8 - n`.
static MASK_AVX2: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

#[inline(always)]
unsafe fn mask_avx2(n: usize) -> __m256i {
    // SAFETY: 8 - n in 0..=8 (n < 8 by the `Simd` contract), so 8 i32 are readable.
    unsafe { _mm256_loadu_si256(MASK_AVX2.as_ptr().add(8 - n.min(8)).cast()) }
}

impl Simd for Avx2 {
    const LANES: usize = 8;
    type V = __m256;

    #[inline(always)]
    unsafe fn zero() -> __m256 {
        // SAFETY: AVX is available (the `Simd` contract).
        unsafe { _mm256_setzero_ps() }
    }

    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        // SAFETY: AVX is available.
        unsafe { _mm256_set1_ps(x) }
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: AVX is available; the caller guarantees 8 readable f32.
        unsafe { _mm256_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> __m256 {
        // SAFETY: AVX2 is available; masked lanes are not read.
        unsafe { _mm256_maskload_ps(p, mask_avx2(n)) }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        // SAFETY: AVX is available; the caller guarantees 8 writable f32.
        unsafe { _mm256_storeu_ps(p, v) }
    }

    #[inline(always)]
    unsafe fn store_partial(p: *mut f32, v: __m256, n: usize) {
        // SAFETY: AVX2 is available; masked lanes are not written.
        unsafe { _mm256_maskstore_ps(p, mask_avx2(n), v) }
    }

    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: FMA is available.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
}

/// AVX-512F: `__m512`, tails with lane masks.
pub(super) struct Avx512;

#[inline(always)]
fn mask16(n: usize) -> __mmask16 {
    ((1u32 << n.min(16)) - 1) as __mmask16
}

impl Simd for Avx512 {
    const LANES: usize = 16;
    type V = __m512;

    #[inline(always)]
    unsafe fn zero() -> __m512 {
        // SAFETY: AVX-512F is available (the `Simd` contract).
        unsafe { _mm512_setzero_ps() }
    }

    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        // SAFETY: AVX-512F is available.
        unsafe { _mm512_set1_ps(x) }
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: AVX-512F is available; the caller guarantees 16 readable f32.
        unsafe { _mm512_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> __m512 {
        // SAFETY: AVX-512F is available; masked-off lanes are not read.
        unsafe { _mm512_maskz_loadu_ps(mask16(n), p) }
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        // SAFETY: AVX-512F is available; the caller guarantees 16 writable f32.
        unsafe { _mm512_storeu_ps(p, v) }
    }

    #[inline(always)]
    unsafe fn store_partial(p: *mut f32, v: __m512, n: usize) {
        // SAFETY: AVX-512F is available; masked-off lanes are not written.
        unsafe { _mm512_mask_storeu_ps(p, mask16(n), v) }
    }

    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: AVX-512F is available.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
}

/// [`kernel::run`] compiled for AVX2 + FMA.
///
/// # Safety
///
/// AVX2 and FMA must be available; the contract of [`kernel::run`] holds.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn run_avx2(
    geo: &Geometry,
    batch: usize,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    output: &mut [f32],
) {
    // SAFETY: forwarded contract.
    unsafe { kernel::run::<Avx2>(geo, batch, input, weights, bias, output) }
}

/// [`kernel::run`] compiled for AVX-512F.
///
/// # Safety
///
/// AVX-512F must be available; the contract of [`kernel::run`] holds.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn run_avx512(
    geo: &Geometry,
    batch: usize,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    output: &mut [f32],
) {
    // SAFETY: forwarded contract.
    unsafe { kernel::run::<Avx512>(geo, batch, input, weights, bias, output) }
}
