//! The depthwise kernels, written once over a small vector abstraction ([`Simd`]) and
//! instantiated per instruction set (`x86.rs`, `neon.rs`, and [`Portable`] here).
//!
//! Every function here is `#[inline(always)]`: each instruction set has one entry point with
//! its `#[target_feature]` attribute, and the whole kernel is inlined into it so that the
//! intrinsics are compiled for that instruction set.

use super::Geometry;

/// A vector of `LANES` f32 and the handful of operations the kernels need.
///
/// # Safety
///
/// Implementations are only called where the instruction set they use is available (checked
/// by the caller, see `Isa::available`). Loads and stores take raw pointers that must be valid
/// for `LANES` (full) or `n` (partial) f32.
pub(super) trait Simd {
    /// f32 per vector.
    const LANES: usize;
    /// The vector type.
    type V: Copy;
    /// All lanes zero.
    unsafe fn zero() -> Self::V;
    /// All lanes `x`.
    unsafe fn splat(x: f32) -> Self::V;
    /// `LANES` f32 from `p` (unaligned).
    unsafe fn load(p: *const f32) -> Self::V;
    /// The first `n < LANES` f32 from `p`, the other lanes zero.
    unsafe fn load_partial(p: *const f32, n: usize) -> Self::V;
    /// `LANES` f32 to `p` (unaligned).
    unsafe fn store(p: *mut f32, v: Self::V);
    /// The first `n < LANES` lanes of `v` to `p`.
    unsafe fn store_partial(p: *mut f32, v: Self::V, n: usize);
    /// `a * b + c` (fused where the instruction set has it).
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
}

/// Portable "vectors" of 8 f32 as arrays: element-wise loops that LLVM auto-vectorises for
/// whatever the target offers (SSE2, NEON on armv7 with `+neon`, or scalar code).
pub(super) struct Portable;

impl Simd for Portable {
    const LANES: usize = 8;
    type V = [f32; 8];

    #[inline(always)]
    unsafe fn zero() -> [f32; 8] {
        [0.0; 8]
    }

    #[inline(always)]
    unsafe fn splat(x: f32) -> [f32; 8] {
        [x; 8]
    }

    #[inline(always)]
    unsafe fn load(p: *const f32) -> [f32; 8] {
        // SAFETY: the caller guarantees 8 readable f32 at `p`.
        unsafe { p.cast::<[f32; 8]>().read_unaligned() }
    }

    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> [f32; 8] {
        let mut v = [0.0; 8];
        // SAFETY: the caller guarantees `n` (< 8) readable f32 at `p`.
        unsafe { core::ptr::copy_nonoverlapping(p, v.as_mut_ptr(), n.min(8)) };
        v
    }

    #[inline(always)]
    unsafe fn store(p: *mut f32, v: [f32; 8]) {
        // SAFETY: the caller guarantees 8 writable f32 at `p`.
        unsafe { p.cast::<[f32; 8]>().write_unaligned(v) }
    }

    #[inline(always)]
    unsafe fn store_partial(p: *mut f32, v: [f32; 8], n: usize) {
        // SAFETY: the caller guarantees `n` (< 8) writable f32 at `p`.
        unsafe { core::ptr::copy_nonoverlapping(v.as_ptr(), p, n.min(8)) };
    }

    #[inline(always)]
    unsafe fn fma(a: [f32; 8], b: [f32; 8], c: [f32; 8]) -> [f32; 8] {
        let mut r = [0.0; 8];
        for i in 0..8 {
            r[i] = a[i] * b[i] + c[i];
        }
        r
    }
}

/// Loads `n` f32: a full vector when `FULL`, else a partial one.
#[inline(always)]
unsafe fn ld<S: Simd, const FULL: bool>(p: *const f32, n: usize) -> S::V {
    // SAFETY: forwarded contract of `Simd::load` / `Simd::load_partial`.
    unsafe {
        if FULL {
            S::load(p)
        } else {
            S::load_partial(p, n)
        }
    }
}

/// Stores `n` f32: a full vector when `FULL`, else a partial one.
#[inline(always)]
unsafe fn st<S: Simd, const FULL: bool>(p: *mut f32, v: S::V, n: usize) {
    // SAFETY: forwarded contract of `Simd::store` / `Simd::store_partial`.
    unsafe {
        if FULL {
            S::store(p, v)
        } else {
            S::store_partial(p, v, n)
        }
    }
}

/// For output index `o` along one axis: the first input index its window reads (may be
/// negative) and the range of taps `lo..hi` that fall inside the input (`0..n`).
#[inline(always)]
fn taps(o: usize, stride: usize, pad: usize, k: usize, n: usize) -> (isize, usize, usize) {
    let start = (o * stride) as isize - pad as isize;
    let lo = if start < 0 {
        ((-start) as usize).min(k)
    } else {
        0
    };
    let hi = (n as isize - start).clamp(0, k as isize) as usize;
    (start, lo, hi.max(lo))
}

/// Output indices `lo..hi` along one axis whose whole window lies inside the input.
pub(super) fn interior(
    out: usize,
    stride: usize,
    pad: usize,
    k: usize,
    n: usize,
) -> (usize, usize) {
    let lo = pad.div_ceil(stride).min(out);
    let hi = if n + pad >= k {
        ((n + pad - k) / stride + 1).min(out)
    } else {
        0
    };
    (lo, hi.max(lo))
}

/// Runs the convolution on `batch` images.
///
/// # Safety
///
/// `S`'s instruction set must be available. `input` holds `batch * c * h * w` f32, `output`
/// `batch * c * oh * ow`, `weights` `c * kh * kw` in the layout of `geo.channel_last`, `bias`
/// `c`; `geo` is consistent (checked by `Geometry::check`).
#[inline(always)]
pub(super) unsafe fn run<S: Simd>(
    geo: &Geometry,
    batch: usize,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    output: &mut [f32],
) {
    let in_len = geo.c * geo.h * geo.w;
    let out_len = geo.c * geo.oh * geo.ow;
    if geo.channel_last {
        for b in 0..batch {
            // SAFETY: image `b` lies inside both buffers (lengths checked by the caller).
            unsafe {
                nhwc_image::<S>(
                    geo,
                    input.as_ptr().add(b * in_len),
                    weights.as_ptr(),
                    bias.as_ptr(),
                    output.as_mut_ptr().add(b * out_len),
                )
            }
        }
    } else {
        let (rows, cols) = nchw_plane(geo, S::LANES);
        let mut scratch = vec![0.0f32; geo.sw * rows * cols];
        for b in 0..batch {
            // SAFETY: as above; `scratch` has the size `nchw_image` expects.
            unsafe {
                nchw_image::<S>(
                    geo,
                    input.as_ptr().add(b * in_len),
                    weights.as_ptr(),
                    bias.as_ptr(),
                    output.as_mut_ptr().add(b * out_len),
                    &mut scratch,
                    rows,
                    cols,
                )
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Channel-last: vectors across channels.

/// One image, channel-last (`[h][w][c]` in, `[oh][ow][c]` out, weights `[kh][kw][c]`).
#[inline(always)]
unsafe fn nhwc_image<S: Simd>(
    g: &Geometry,
    inp: *const f32,
    w: *const f32,
    b: *const f32,
    out: *mut f32,
) {
    let (ix_lo, ix_hi) = interior(g.ow, g.sw, g.pw, g.kw, g.w);
    for oy in 0..g.oh {
        let (iy0, ky_lo, ky_hi) = taps(oy, g.sh, g.ph, g.kh, g.h);
        let full_rows = ky_lo == 0 && ky_hi == g.kh;
        let (a, z) = if full_rows { (ix_lo, ix_hi) } else { (0, 0) };
        // SAFETY: `out_row` is row `oy` of the output; every pixel routine only reads taps
        // inside the input (tap ranges from `taps`, or the interior range).
        unsafe {
            let out_row = out.add(oy * g.ow * g.c);
            for ox in (0..a).chain(z.max(a)..g.ow) {
                let (ix0, kx_lo, kx_hi) = taps(ox, g.sw, g.pw, g.kw, g.w);
                nhwc_pixel::<S>(
                    g,
                    inp,
                    w,
                    b,
                    out_row.add(ox * g.c),
                    (iy0, ky_lo, ky_hi),
                    (ix0, kx_lo, kx_hi),
                );
            }
            if a < z {
                // full_rows implies iy0 >= 0.
                let iy0 = iy0 as usize;
                match (g.kh, g.kw) {
                    (3, 3) => nhwc_interior::<S, 3>(g, inp, w, b, out_row, iy0, a, z),
                    (5, 5) => nhwc_interior::<S, 5>(g, inp, w, b, out_row, iy0, a, z),
                    _ => {
                        for ox in a..z {
                            let ix0 = (ox * g.sw - g.pw) as isize;
                            nhwc_pixel::<S>(
                                g,
                                inp,
                                w,
                                b,
                                out_row.add(ox * g.c),
                                (iy0 as isize, 0, g.kh),
                                (ix0, 0, g.kw),
                            );
                        }
                    }
                }
            }
        }
    }
}

/// One output pixel (all channels), taps restricted to the given ranges (borders).
#[inline(always)]
unsafe fn nhwc_pixel<S: Simd>(
    g: &Geometry,
    inp: *const f32,
    w: *const f32,
    b: *const f32,
    out_px: *mut f32,
    (iy0, ky_lo, ky_hi): (isize, usize, usize),
    (ix0, kx_lo, kx_hi): (isize, usize, usize),
) {
    let c = g.c;
    let mut cb = 0;
    // SAFETY: taps in `ky_lo..ky_hi` x `kx_lo..kx_hi` address pixels inside the input, so
    // `iy0 + ky` and `ix0 + kx` are in range; channel offsets stay below `c`.
    unsafe {
        while cb + S::LANES <= c {
            nhwc_pixel_block::<S, true>(
                g,
                inp,
                w,
                b,
                out_px,
                (iy0, ky_lo, ky_hi),
                (ix0, kx_lo, kx_hi),
                cb,
                S::LANES,
            );
            cb += S::LANES;
        }
        if cb < c {
            nhwc_pixel_block::<S, false>(
                g,
                inp,
                w,
                b,
                out_px,
                (iy0, ky_lo, ky_hi),
                (ix0, kx_lo, kx_hi),
                cb,
                c - cb,
            );
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn nhwc_pixel_block<S: Simd, const FULL: bool>(
    g: &Geometry,
    inp: *const f32,
    w: *const f32,
    b: *const f32,
    out_px: *mut f32,
    (iy0, ky_lo, ky_hi): (isize, usize, usize),
    (ix0, kx_lo, kx_hi): (isize, usize, usize),
    cb: usize,
    n: usize,
) {
    let c = g.c;
    // SAFETY: see `nhwc_pixel`.
    unsafe {
        let mut acc = ld::<S, FULL>(b.add(cb), n);
        for ky in ky_lo..ky_hi {
            let iy = (iy0 + ky as isize) as usize;
            for kx in kx_lo..kx_hi {
                let ix = (ix0 + kx as isize) as usize;
                let x = ld::<S, FULL>(inp.add((iy * g.w + ix) * c + cb), n);
                let k = ld::<S, FULL>(w.add((ky * g.kw + kx) * c + cb), n);
                acc = S::fma(k, x, acc);
            }
        }
        st::<S, FULL>(out_px.add(cb), acc, n);
    }
}

/// Interior pixels `a..z` of one output row whose input rows start at `iy0`, square kernel
/// `K`: no bounds to check, weights held in registers, four pixels at a time.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn nhwc_interior<S: Simd, const K: usize>(
    g: &Geometry,
    inp: *const f32,
    w: *const f32,
    b: *const f32,
    out_row: *mut f32,
    iy0: usize,
    a: usize,
    z: usize,
) {
    let c = g.c;
    let mut cb = 0;
    // SAFETY: the caller guarantees that pixels `a..z` have their whole window inside the
    // input; channel blocks stay below `c`.
    unsafe {
        while cb + S::LANES <= c {
            nhwc_interior_block::<S, K, true>(g, inp, w, b, out_row, iy0, a, z, cb, S::LANES);
            cb += S::LANES;
        }
        if cb < c {
            nhwc_interior_block::<S, K, false>(g, inp, w, b, out_row, iy0, a, z, cb, c - cb);
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn nhwc_interior_block<S: Simd, const K: usize, const FULL: bool>(
    g: &Geometry,
    inp: *const f32,
    w: *const f32,
    b: *const f32,
    out_row: *mut f32,
    iy0: usize,
    a: usize,
    z: usize,
    cb: usize,
    n: usize,
) {
    let c = g.c;
    let row = g.w * c;
    let step = g.sw * c;
    // SAFETY: see `nhwc_interior`: for ox in a..z, ox * sw >= pw and the window's last column
    // ox * sw - pw + K - 1 < w; rows iy0..iy0 + K are inside the input.
    unsafe {
        let mut wv = [[S::zero(); K]; K];
        for (ky, wrow) in wv.iter_mut().enumerate() {
            for (kx, wk) in wrow.iter_mut().enumerate() {
                *wk = ld::<S, FULL>(w.add((ky * K + kx) * c + cb), n);
            }
        }
        let bv = ld::<S, FULL>(b.add(cb), n);
        let base = inp.add(iy0 * row + cb);
        let mut ox = a;
        while ox + 4 <= z {
            let p = base.add((ox * g.sw - g.pw) * c);
            let (mut a0, mut a1, mut a2, mut a3) = (bv, bv, bv, bv);
            for (ky, wrow) in wv.iter().enumerate() {
                for (kx, &wk) in wrow.iter().enumerate() {
                    let q = p.add(ky * row + kx * c);
                    a0 = S::fma(wk, ld::<S, FULL>(q, n), a0);
                    a1 = S::fma(wk, ld::<S, FULL>(q.add(step), n), a1);
                    a2 = S::fma(wk, ld::<S, FULL>(q.add(2 * step), n), a2);
                    a3 = S::fma(wk, ld::<S, FULL>(q.add(3 * step), n), a3);
                }
            }
            let o = out_row.add(ox * c + cb);
            st::<S, FULL>(o, a0, n);
            st::<S, FULL>(o.add(c), a1, n);
            st::<S, FULL>(o.add(2 * c), a2, n);
            st::<S, FULL>(o.add(3 * c), a3, n);
            ox += 4;
        }
        while ox < z {
            let p = base.add((ox * g.sw - g.pw) * c);
            let mut acc = bv;
            for (ky, wrow) in wv.iter().enumerate() {
                for (kx, &wk) in wrow.iter().enumerate() {
                    acc = S::fma(wk, ld::<S, FULL>(p.add(ky * row + kx * c), n), acc);
                }
            }
            st::<S, FULL>(out_row.add(ox * c + cb), acc, n);
            ox += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Channel-first: one channel at a time, copied into a zero-padded plane split into `sw`
// column phases, so that every tap reads a contiguous run of the plane; vectors across the
// output width.

/// Rows and columns (per phase) of the padded plane for `geo` and vectors of `lanes`.
pub(super) fn nchw_plane(g: &Geometry, lanes: usize) -> (usize, usize) {
    let rows = (g.oh.max(1) - 1) * g.sh + g.kh;
    let cols = g.ow.div_ceil(lanes) * lanes + (g.kw - 1) / g.sw;
    (rows, cols)
}

/// One image, channel-first (`[c][h][w]` in, `[c][oh][ow]` out, weights `[c][kh][kw]`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn nchw_image<S: Simd>(
    g: &Geometry,
    inp: *const f32,
    w: *const f32,
    b: *const f32,
    out: *mut f32,
    scratch: &mut [f32],
    rows: usize,
    cols: usize,
) {
    let s = g.sw;
    let plane = rows * cols;
    let sp = scratch.as_mut_ptr();
    // Column range per phase that maps into the input: j * s + p - pw in 0..w.
    let col_range = |p: usize| {
        let lo = if g.pw > p { (g.pw - p).div_ceil(s) } else { 0 };
        let hi = if g.w + g.pw > p {
            (g.w + g.pw - p).div_ceil(s).min(cols)
        } else {
            0
        };
        (lo.min(hi), hi)
    };
    for ch in 0..g.c {
        // SAFETY: plane writes stay inside `scratch` (rows x cols per phase, sized by
        // `nchw_plane`); input reads use iy in 0..h and ix in 0..w.
        unsafe {
            let src = inp.add(ch * g.h * g.w);
            for r in 0..rows {
                let iy = r as isize - g.ph as isize;
                if iy < 0 || iy >= g.h as isize {
                    continue;
                }
                let srow = src.add(iy as usize * g.w);
                for p in 0..s {
                    let (lo, hi) = col_range(p);
                    let drow = sp.add(p * plane + r * cols);
                    for j in lo..hi {
                        *drow.add(j) = *srow.add(j * s + p - g.pw);
                    }
                }
            }
            let wc = w.add(ch * g.kh * g.kw);
            let bias = S::splat(*b.add(ch));
            let dst = out.add(ch * g.oh * g.ow);
            let mut oy = 0;
            // Four rows at a time: four independent accumulator chains per tap.
            while oy + 4 <= g.oh {
                let mut ox = 0;
                while ox < g.ow {
                    let accs = nchw_block4::<S>(g, sp, wc, bias, plane, cols, oy, ox);
                    let n = (g.ow - ox).min(S::LANES);
                    for (r, acc) in accs.into_iter().enumerate() {
                        let o = dst.add((oy + r) * g.ow + ox);
                        if n == S::LANES {
                            S::store(o, acc);
                        } else {
                            S::store_partial(o, acc, n);
                        }
                    }
                    ox += S::LANES;
                }
                oy += 4;
            }
            for oy in oy..g.oh {
                let orow = dst.add(oy * g.ow);
                let mut ox = 0;
                while ox + S::LANES <= g.ow {
                    let acc = nchw_block::<S>(g, sp, wc, bias, plane, cols, oy, ox);
                    S::store(orow.add(ox), acc);
                    ox += S::LANES;
                }
                if ox < g.ow {
                    let acc = nchw_block::<S>(g, sp, wc, bias, plane, cols, oy, ox);
                    S::store_partial(orow.add(ox), acc, g.ow - ox);
                }
            }
        }
    }
}

/// `LANES` outputs of row `oy` from column `ox` (reads stay inside the padded plane: its
/// columns are rounded up to whole vectors).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn nchw_block<S: Simd>(
    g: &Geometry,
    sp: *const f32,
    wc: *const f32,
    bias: S::V,
    plane: usize,
    cols: usize,
    oy: usize,
    ox: usize,
) -> S::V {
    let mut acc = bias;
    // SAFETY: row oy * sh + ky < rows and column ox + kx / sw + LANES <= cols by
    // construction of the plane.
    unsafe {
        for ky in 0..g.kh {
            let r = oy * g.sh + ky;
            for kx in 0..g.kw {
                let q = sp.add((kx % g.sw) * plane + r * cols + ox + kx / g.sw);
                acc = S::fma(S::splat(*wc.add(ky * g.kw + kx)), S::load(q), acc);
            }
        }
    }
    acc
}

/// [`nchw_block`] for rows `oy..oy + 4`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn nchw_block4<S: Simd>(
    g: &Geometry,
    sp: *const f32,
    wc: *const f32,
    bias: S::V,
    plane: usize,
    cols: usize,
    oy: usize,
    ox: usize,
) -> [S::V; 4] {
    let mut acc = [bias; 4];
    let rs = g.sh * cols;
    // SAFETY: as in `nchw_block`, for rows oy..oy + 4 < oh.
    unsafe {
        for ky in 0..g.kh {
            let r = oy * g.sh + ky;
            for kx in 0..g.kw {
                let q = sp.add((kx % g.sw) * plane + r * cols + ox + kx / g.sw);
                let k = S::splat(*wc.add(ky * g.kw + kx));
                acc[0] = S::fma(k, S::load(q), acc[0]);
                acc[1] = S::fma(k, S::load(q.add(rs)), acc[1]);
                acc[2] = S::fma(k, S::load(q.add(2 * rs)), acc[2]);
                acc[3] = S::fma(k, S::load(q.add(3 * rs)), acc[3]);
            }
        }
    }
    acc
}
