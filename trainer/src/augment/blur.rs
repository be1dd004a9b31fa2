//! Separable Gaussian blur with replicated edges.

/// A normalised Gaussian kernel of radius `ceil(3 sigma)` (at least 1): `2 r + 1` taps.
pub(super) fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let r = ((3.0 * sigma).ceil() as usize).max(1);
    let k = -0.5 / (sigma * sigma);
    let mut kern: Vec<f32> = (0..=2 * r)
        .map(|i| {
            let d = i as f32 - r as f32;
            (k * d * d).exp()
        })
        .collect();
    let sum: f32 = kern.iter().sum();
    kern.iter_mut().for_each(|v| *v /= sum);
    kern
}

/// Blurs a `height` x `width` image in place with a Gaussian of `sigma` pixels: a horizontal
/// then a vertical pass, pixels beyond an edge taken equal to the edge pixel.
pub(super) fn gaussian_blur(img: &mut [f32], height: usize, width: usize, sigma: f32) {
    let kern = gaussian_kernel(sigma);
    let r = kern.len() / 2;
    let mut tmp = vec![0.0f32; height * width];
    // Horizontal: pad each row with its edge values, then accumulate tap by tap.
    let mut pad = vec![0.0f32; width + 2 * r];
    for (row, out) in img.chunks_exact(width).zip(tmp.chunks_exact_mut(width)) {
        pad[..r].fill(row[0]);
        pad[r..r + width].copy_from_slice(row);
        pad[r + width..].fill(row[width - 1]);
        out.fill(0.0);
        for (t, &kv) in kern.iter().enumerate() {
            for (o, &p) in out.iter_mut().zip(&pad[t..t + width]) {
                *o += kv * p;
            }
        }
    }
    // Vertical: whole rows at a time, the row index clamped.
    for (y, out) in img.chunks_exact_mut(width).enumerate() {
        out.fill(0.0);
        for (t, &kv) in kern.iter().enumerate() {
            let sy = (y + t).saturating_sub(r).min(height - 1);
            for (o, &p) in out.iter_mut().zip(&tmp[sy * width..(sy + 1) * width]) {
                *o += kv * p;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_var(v: &[f32]) -> (f64, f64) {
        let n = v.len() as f64;
        let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n;
        (m, var)
    }

    #[test]
    fn kernel_is_normalised_and_symmetric() {
        for sigma in [0.1, 0.5, 1.3, 2.0] {
            let k = gaussian_kernel(sigma);
            assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            assert!(k.iter().zip(k.iter().rev()).all(|(a, b)| a == b));
        }
    }

    #[test]
    fn blur_keeps_the_mean_of_a_constant_bordered_image_and_reduces_variance() {
        let (h, w) = (64, 80);
        // Border of 12 pixels at 0.2 (wider than 2 * radius at sigma 2), a pattern inside.
        let mut img = vec![0.2f32; h * w];
        for y in 12..h - 12 {
            for x in 12..w - 12 {
                img[y * w + x] = (((x * 7 + y * 13) % 17) as f32) / 16.0;
            }
        }
        let (m0, v0) = mean_var(&img);
        for sigma in [0.5, 1.0, 2.0] {
            let mut out = img.clone();
            gaussian_blur(&mut out, h, w, sigma);
            let (m1, v1) = mean_var(&out);
            assert!((m1 - m0).abs() < 1e-5, "sigma {sigma}: mean {m0} -> {m1}");
            assert!(v1 < v0 * 0.9, "sigma {sigma}: variance {v0} -> {v1}");
        }
    }

    #[test]
    fn blur_keeps_a_constant_image_constant() {
        let mut img = vec![0.6f32; 30 * 20];
        gaussian_blur(&mut img, 30, 20, 1.7);
        assert!(img.iter().all(|&v| (v - 0.6).abs() < 1e-5));
    }
}
