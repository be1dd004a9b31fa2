//! Intensity steps: brightness, contrast, depth-dependent gain, multiplicative speckle. Every
//! step clamps its result to `[0, 1]`.

use rand::RngCore;
use rand_xoshiro::Xoshiro256PlusPlus;

/// Multiplies every value by `factor`.
pub(super) fn brightness(img: &mut [f32], factor: f32) {
    img.iter_mut()
        .for_each(|v| *v = (*v * factor).clamp(0.0, 1.0));
}

/// Scales every value's distance to the image's mean by `factor`.
pub(super) fn contrast(img: &mut [f32], factor: f32) {
    let mean = (img.iter().map(|&v| v as f64).sum::<f64>() / img.len().max(1) as f64) as f32;
    let offset = mean * (1.0 - factor);
    img.iter_mut()
        .for_each(|v| *v = (*v * factor + offset).clamp(0.0, 1.0));
}

/// The gain of each of `rows` rows: `exp(strength * s(y))`, `s` running through the knot values
/// (in `[-1, 1]`, evenly spaced from the top row to the bottom one) with smoothstep
/// interpolation: smooth (continuous slope), positive, within `[exp(-strength), exp(strength)]`.
pub(super) fn gain_curve(knots: &[f32], strength: f32, rows: usize) -> Vec<f32> {
    let segments = knots.len().saturating_sub(1).max(1);
    let per_row = segments as f32 / rows.saturating_sub(1).max(1) as f32;
    (0..rows)
        .map(|y| {
            let t = y as f32 * per_row;
            let k = (t as usize).min(segments - 1);
            let f = (t - k as f32).clamp(0.0, 1.0);
            let s = f * f * (3.0 - 2.0 * f);
            let a = knots[k];
            let b = *knots.get(k + 1).unwrap_or(&a);
            (strength * (a + (b - a) * s)).exp()
        })
        .collect()
}

/// Multiplies row `y` of a `width`-wide image by `gains[y]`.
pub(super) fn apply_gain(img: &mut [f32], width: usize, gains: &[f32]) {
    for (row, &g) in img.chunks_exact_mut(width).zip(gains) {
        row.iter_mut().for_each(|v| *v = (*v * g).clamp(0.0, 1.0));
    }
}

/// Bits of the random index into [`SpeckleTable`].
const TABLE_BITS: u32 = 10;

/// Quantiles of a gamma distribution of shape `looks` and mean 1 (the multi-look speckle
/// model: 1 look = exponential intensity, Rayleigh amplitude), so drawing a factor is one
/// random index.
#[derive(Clone, Debug)]
pub(super) struct SpeckleTable {
    quantiles: Vec<f32>,
}

impl SpeckleTable {
    /// Tabulates `2^10` mid-quantiles by integrating the density numerically, then rescales
    /// them to mean exactly 1.
    pub fn new(looks: f32) -> Self {
        let l = looks.max(1.0) as f64;
        let n_cells = 1 << 15;
        let x_max = 1.0 + 16.0 / l.sqrt();
        let dx = x_max / n_cells as f64;
        // Unnormalised density at cell centres (log form: no overflow for many looks).
        let dens: Vec<f64> = (0..n_cells)
            .map(|i| {
                let x = (i as f64 + 0.5) * dx;
                ((l - 1.0) * x.ln() - l * (x - 1.0)).exp()
            })
            .collect();
        let total: f64 = dens.iter().sum();
        let n_q = 1usize << TABLE_BITS;
        let mut quantiles = Vec::with_capacity(n_q);
        let (mut cell, mut below) = (0usize, 0.0f64);
        for q in 0..n_q {
            let target = (q as f64 + 0.5) / n_q as f64 * total;
            while cell < n_cells - 1 && below + dens[cell] < target {
                below += dens[cell];
                cell += 1;
            }
            let frac = ((target - below) / dens[cell].max(1e-300)).clamp(0.0, 1.0);
            quantiles.push((cell as f64 + frac) * dx);
        }
        let mean = quantiles.iter().sum::<f64>() / n_q as f64;
        Self {
            quantiles: quantiles.iter().map(|&x| (x / mean) as f32).collect(),
        }
    }

    /// Multiplies every value by an independent speckle factor.
    pub fn apply(&self, img: &mut [f32], rng: &mut Xoshiro256PlusPlus) {
        for v in img.iter_mut() {
            let i = (rng.next_u32() >> (32 - TABLE_BITS)) as usize;
            *v = (*v * self.quantiles[i]).clamp(0.0, 1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn mean_std(v: &[f32]) -> (f64, f64) {
        let n = v.len() as f64;
        let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n;
        (m, var.sqrt())
    }

    /// Values in 0.3..0.6: no factor within 1 +- 0.25 can push them out of [0, 1].
    fn mid_image(rng: &mut Xoshiro256PlusPlus) -> Vec<f32> {
        (0..64 * 64).map(|_| rng.random_range(0.3..0.6)).collect()
    }

    #[test]
    fn brightness_and_contrast_change_mean_and_std_by_the_drawn_factors() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
        let img = mid_image(&mut rng);
        let (m0, s0) = mean_std(&img);
        for _ in 0..20 {
            let b = rng.random_range(0.75..1.25f32);
            let c = rng.random_range(0.75..1.25f32);
            let mut out = img.clone();
            brightness(&mut out, b);
            let (m1, s1) = mean_std(&out);
            assert!(
                (m1 - m0 * b as f64).abs() < 1e-4,
                "brightness {b}: mean {m0} -> {m1}"
            );
            assert!(
                (s1 - s0 * b as f64).abs() < 1e-4,
                "brightness {b}: std {s0} -> {s1}"
            );
            contrast(&mut out, c);
            let (m2, s2) = mean_std(&out);
            assert!((m2 - m1).abs() < 1e-4, "contrast {c}: mean {m1} -> {m2}");
            assert!(
                (s2 - s1 * c as f64).abs() < 1e-4,
                "contrast {c}: std {s1} -> {s2}"
            );
            assert!(out.iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    fn brightness_and_contrast_stay_finite_and_in_range_at_the_extremes() {
        let mut img: Vec<f32> = (0..256).map(|k| k as f32 / 255.0).collect();
        brightness(&mut img, 1.99);
        contrast(&mut img, 2.0);
        contrast(&mut img, 0.0);
        assert!(img.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)));
    }

    #[test]
    fn gain_curve_is_smooth_positive_and_bounded() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(12);
        let (rows, strength) = (128, 0.3);
        for knots in [1, 4, 8] {
            for _ in 0..50 {
                let k: Vec<f32> = (0..=knots).map(|_| rng.random_range(-1.0..1.0)).collect();
                let g = gain_curve(&k, strength, rows);
                assert_eq!(g.len(), rows);
                let (lo, hi) = ((-strength).exp() - 1e-6, strength.exp() + 1e-6);
                assert!(g.iter().all(|&v| v > 0.0 && (lo..=hi).contains(&v)));
                // First differences: at most 1.5 x the steepest knot-to-knot slope.
                let slope = strength.exp() * strength * 2.0 * 1.5 * knots as f32 / 127.0;
                assert!(g.windows(2).all(|p| (p[1] - p[0]).abs() <= slope + 1e-6));
                // Second differences: no kinks (smoothstep's slope is continuous), so they are
                // O(per_row^2), not O(per_row) as at the corners of a piecewise-linear curve.
                let per_row = knots as f32 / 127.0;
                let bend = strength.exp() * strength * 2.0 * 6.0 * per_row * per_row * 1.5;
                let kink = g
                    .windows(3)
                    .map(|p| (p[2] - 2.0 * p[1] + p[0]).abs())
                    .fold(0.0f32, f32::max);
                assert!(kink <= bend + 1e-6, "{kink} vs {bend}");
                assert!((g[0] - (strength * k[0]).exp()).abs() < 1e-5);
                assert!((g[rows - 1] - (strength * k[knots]).exp()).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn gain_multiplies_whole_rows() {
        let mut img = vec![0.5f32; 3 * 4];
        apply_gain(&mut img, 4, &[0.5, 1.0, 1.5]);
        assert_eq!(&img[..4], &[0.25; 4]);
        assert_eq!(&img[4..8], &[0.5; 4]);
        assert_eq!(&img[8..], &[0.75; 4]);
    }

    #[test]
    fn speckle_factor_has_mean_one_and_the_gamma_spread() {
        for looks in [1.0f32, 4.0, 16.0, 100.0] {
            let t = SpeckleTable::new(looks);
            let (m, s) = mean_std(&t.quantiles);
            assert!((m - 1.0).abs() < 1e-5, "looks {looks}: mean {m}");
            let want = 1.0 / (looks as f64).sqrt();
            assert!(
                (s - want).abs() < 0.03 * want + 0.005,
                "looks {looks}: std {s} vs {want}"
            );
            assert!(t.quantiles.iter().all(|&q| q > 0.0 && q.is_finite()));
            assert!(t.quantiles.windows(2).all(|p| p[0] <= p[1]));
        }
    }

    #[test]
    fn speckle_keeps_the_mean_roughly_and_stays_in_range() {
        let t = SpeckleTable::new(8.0);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(13);
        let mut img = vec![0.4f32; 128 * 128];
        t.apply(&mut img, &mut rng);
        let (m, s) = mean_std(&img);
        assert!((m - 0.4).abs() < 0.01, "{m}");
        assert!((s - 0.4 / 8f64.sqrt()).abs() < 0.01, "{s}");
        assert!(img.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}
