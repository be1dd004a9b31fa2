//! Geometric steps: random resized crop (bilinear) and horizontal flip. Rows map to rows
//! monotonically: depth order never inverts.

use rand_xoshiro::Xoshiro256PlusPlus;

use super::uniform;

/// A crop window in continuous source coordinates: pixel `i` covers `[i, i + 1)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Window {
    pub x0: f32,
    pub y0: f32,
    pub w: f32,
    pub h: f32,
}

impl Window {
    /// The whole `height` x `width` frame.
    pub fn full(height: usize, width: usize) -> Self {
        Self {
            x0: 0.0,
            y0: 0.0,
            w: width as f32,
            h: height as f32,
        }
    }
}

/// Draws a crop window like torchvision's `RandomResizedCrop`: up to 10 tries of an area
/// fraction uniform in `scale` and a log-uniform aspect ratio in `ratio`; the whole frame when
/// none fits. With `keep_sector`, the window's top edge is row 0 and its span covers the centre
/// column (the probe face at the top centre stays in view); otherwise its position is uniform.
pub(super) fn draw_window(
    rng: &mut Xoshiro256PlusPlus,
    height: usize,
    width: usize,
    scale: [f32; 2],
    ratio: [f32; 2],
    keep_sector: bool,
) -> Window {
    let (fh, fw) = (height as f32, width as f32);
    let area = fh * fw;
    let (lr0, lr1) = (ratio[0].ln(), ratio[1].ln());
    for _ in 0..10 {
        let target = area * uniform(rng, scale[0], scale[1]);
        let r = uniform(rng, lr0, lr1).exp();
        let (w, h) = ((target * r).sqrt(), (target / r).sqrt());
        if w <= fw && h <= fh {
            let (x0, y0) = if keep_sector {
                let cx = fw * 0.5;
                let lo = (cx - w).max(0.0);
                let hi = (fw - w).min(cx);
                (uniform(rng, lo, hi), 0.0)
            } else {
                (uniform(rng, 0.0, fw - w), uniform(rng, 0.0, fh - h))
            };
            return Window { x0, y0, w, h };
        }
    }
    Window::full(height, width)
}

/// For each output index: the two source indices and the weight of the second (bilinear,
/// pixel centres aligned as in `align_corners = false`), reversed when `flip`.
fn taps(start: f32, len: f32, n_out: usize, n_src: usize, flip: bool) -> Vec<(usize, usize, f32)> {
    let step = len / n_out as f32;
    let last = (n_src - 1) as f32;
    (0..n_out)
        .map(|o| {
            let o = if flip { n_out - 1 - o } else { o };
            let s = (start + (o as f32 + 0.5) * step - 0.5).clamp(0.0, last);
            let i0 = s as usize;
            let i1 = (i0 + 1).min(n_src - 1);
            (i0, i1, s - i0 as f32)
        })
        .collect()
}

/// Resamples the window `win` of `src` (`src_size` = (height, width)) into `dst`
/// (`dst_size`) with bilinear interpolation, mirrored left-right when `flip`.
pub(super) fn resample(
    src: &[f32],
    src_size: (usize, usize),
    win: Window,
    flip: bool,
    dst: &mut [f32],
    dst_size: (usize, usize),
) {
    let ((sh, sw), (oh, ow)) = (src_size, dst_size);
    let cols = taps(win.x0, win.w, ow, sw, flip);
    let rows = taps(win.y0, win.h, oh, sh, false);
    for (out, &(r0, r1, fy)) in dst.chunks_exact_mut(ow).zip(&rows) {
        let (a, b) = (&src[r0 * sw..(r0 + 1) * sw], &src[r1 * sw..(r1 + 1) * sw]);
        for (o, &(c0, c1, fx)) in out.iter_mut().zip(&cols) {
            let top = a[c0] + (a[c1] - a[c0]) * fx;
            let bottom = b[c0] + (b[c1] - b[c0]) * fx;
            *o = top + (bottom - top) * fy;
        }
    }
}

/// Mirrors a `height` x `width` image left-right in place.
pub(super) fn hflip(img: &mut [f32], _height: usize, width: usize) {
    img.chunks_exact_mut(width).for_each(|row| row.reverse());
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn ramp(h: usize, w: usize) -> Vec<f32> {
        (0..h * w)
            .map(|k| ((k * 37 % 101) as f32) / 100.0)
            .collect()
    }

    #[test]
    fn crop_resize_of_a_constant_image_stays_constant() {
        let (h, w) = (40, 56);
        let src = vec![0.37; h * w];
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        for keep in [false, true] {
            for _ in 0..50 {
                let win = draw_window(&mut rng, h, w, [0.3, 1.0], [0.5, 2.0], keep);
                let mut dst = vec![0.0; h * w];
                resample(&src, (h, w), win, keep, &mut dst, (h, w));
                assert!(dst.iter().all(|&v| (v - 0.37).abs() < 1e-6));
            }
        }
    }

    #[test]
    fn full_window_resample_is_the_identity() {
        let (h, w) = (9, 13);
        let src = ramp(h, w);
        let mut dst = vec![0.0; h * w];
        resample(&src, (h, w), Window::full(h, w), false, &mut dst, (h, w));
        assert_eq!(dst, src);
        let mut flipped = src.clone();
        hflip(&mut flipped, h, w);
        resample(&src, (h, w), Window::full(h, w), true, &mut dst, (h, w));
        assert_eq!(dst, flipped);
    }

    #[test]
    fn windows_respect_scale_ratio_and_sector() {
        let (h, w) = (128, 128);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
        for keep in [false, true] {
            for _ in 0..500 {
                let win = draw_window(&mut rng, h, w, [0.7, 1.0], [0.75, 4.0 / 3.0], keep);
                let frac = win.w * win.h / (h * w) as f32;
                assert!((0.7 - 1e-4..=1.0 + 1e-4).contains(&frac), "{win:?}");
                assert!(
                    win.x0 >= 0.0 && win.x0 + win.w <= w as f32 + 1e-3,
                    "{win:?}"
                );
                assert!(
                    win.y0 >= 0.0 && win.y0 + win.h <= h as f32 + 1e-3,
                    "{win:?}"
                );
                if keep {
                    assert_eq!(win.y0, 0.0);
                    assert!(win.x0 <= 64.0 && win.x0 + win.w >= 64.0, "{win:?}");
                }
            }
        }
    }

    #[test]
    fn flip_twice_is_the_identity_and_keeps_row_statistics() {
        let (h, w) = (7, 10);
        let src = ramp(h, w);
        let mut img = src.clone();
        hflip(&mut img, h, w);
        assert_ne!(img, src);
        for (a, b) in img.chunks(w).zip(src.chunks(w)) {
            let (mut a, mut b) = (a.to_vec(), b.to_vec());
            a.sort_by(f32::total_cmp);
            b.sort_by(f32::total_cmp);
            assert_eq!(a, b, "a row keeps its values");
        }
        hflip(&mut img, h, w);
        assert_eq!(img, src);
    }

    #[test]
    fn crop_maps_rows_monotonically() {
        // Each source row r holds the value r: output rows must be non-decreasing.
        let (h, w) = (64, 48);
        let src: Vec<f32> = (0..h * w).map(|k| (k / w) as f32).collect();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        for _ in 0..100 {
            let win = draw_window(&mut rng, h, w, [0.5, 1.0], [0.5, 2.0], false);
            let mut dst = vec![0.0; h * w];
            resample(&src, (h, w), win, true, &mut dst, (h, w));
            for y in 1..h {
                assert!(dst[y * w] >= dst[(y - 1) * w], "{win:?} row {y}");
            }
        }
    }
}
