//! Barlow Twins' redundancy-reduction loss, Zbontar et al. 2021
//! ([arXiv 2103.03230](https://arxiv.org/abs/2103.03230)), with the conventions of lightly's
//! `BarlowTwinsLoss`.
//!
//! Each view is standardised per dimension over the batch, as a training-mode BatchNorm without
//! affine parameters does (mean 0, *biased* variance, eps `1e-5` inside the square root). The
//! cross-correlation matrix of the two views is `C = z_a^T z_b / N` (`[D, D]`), and
//!
//! `L = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2`:
//!
//! the invariance term pulls matching dimensions of the two views to correlation 1, the
//! redundancy-reduction term decorrelates different dimensions.

use burn::tensor::Tensor;

use crate::ssl::{check_pair, off_diagonal};

/// Epsilon added to the batch variance before standardising (BatchNorm's default).
pub const BARLOW_EPSILON: f64 = 1e-5;

/// Each column of `z` standardised over the batch: `(z - mean) / sqrt(var_biased + eps)`.
fn standardize(z: Tensor<2>) -> Tensor<2> {
    let (var, mean) = z.clone().var_mean_bias(0);
    (z - mean) / (var + BARLOW_EPSILON).sqrt()
}

/// Barlow Twins loss of two views, with weight `lambda` on the off-diagonal term (recipe:
/// 0.005).
///
/// Row `i` of `z_a` and row `i` of `z_b` are the two views of frame `i`.
///
/// # Shapes
/// `z_a`, `z_b`: `[N, D]`; result `[1]`.
///
/// # Panics
/// If the shapes differ or `N < 2` (the batch statistics need two samples).
pub fn barlow_twins(z_a: Tensor<2>, z_b: Tensor<2>, lambda: f64) -> Tensor<1> {
    let [n, _] = check_pair("barlow_twins", &z_a, &z_b);
    assert!(n >= 2, "barlow_twins: the batch needs at least 2 samples");
    let (a, b) = (standardize(z_a), standardize(z_b));
    // The diagonal directly (sum over the batch of products), not read back out of C.
    let diag = (a.clone() * b.clone()).sum_dim(0) / n as f64;
    let c = a.transpose().matmul(b) / n as f64;
    let on_diagonal = (diag - 1.0).square().sum();
    let off = off_diagonal(c).square().sum();
    on_diagonal + off * lambda
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssl::tests::{grads_of, random, scalar, tensor, whitened};
    use burn::tensor::Device;

    /// Straightforward f64 Barlow Twins on the host.
    fn reference(a: &[f32], b: &[f32], n: usize, d: usize, lambda: f64) -> f64 {
        let standardize = |z: &[f32]| -> Vec<f64> {
            let mut out = vec![0.0; n * d];
            for j in 0..d {
                let col: Vec<f64> = (0..n).map(|i| z[i * d + j] as f64).collect();
                let mean = col.iter().sum::<f64>() / n as f64;
                let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
                for i in 0..n {
                    out[i * d + j] = (col[i] - mean) / (var + BARLOW_EPSILON).sqrt();
                }
            }
            out
        };
        let (a, b) = (standardize(a), standardize(b));
        let mut loss = 0.0;
        for p in 0..d {
            for q in 0..d {
                let c = (0..n).map(|i| a[i * d + p] * b[i * d + q]).sum::<f64>() / n as f64;
                loss += if p == q {
                    (1.0 - c).powi(2)
                } else {
                    lambda * c * c
                };
            }
        }
        loss
    }

    #[test]
    fn matches_a_host_reference() {
        let device = Device::flex();
        for (n, d, lambda) in [(4, 8, 0.005), (7, 3, 0.5), (2, 2, 1.0), (32, 16, 0.005)] {
            let (a, b) = (random(n * d, 40), random(n * d, 41));
            let got = scalar(barlow_twins(
                tensor(&a, n, d, &device),
                tensor(&b, n, d, &device),
                lambda,
            ));
            let want = reference(&a, &b, n, d, lambda);
            assert!(
                (got as f64 - want).abs() <= 1e-5 * want.abs().max(1.0),
                "n {n} d {d}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn perfectly_correlated_whitened_views_give_almost_zero() {
        let device = Device::flex();
        let a = whitened();
        // An affine copy per dimension: same standardised values.
        let b: Vec<f32> = a.iter().map(|v| 2.5 * v - 1.0).collect();
        let loss = scalar(barlow_twins(
            tensor(&a, 8, 4, &device),
            tensor(&b, 8, 4, &device),
            0.005,
        ));
        // Only eps keeps C_ii = 1 / (1 + 1e-5) from 1: 4 * 1e-10.
        assert!(loss.abs() < 1e-6, "{loss}");
        // Correlated but not whitened (all columns equal): the off-diagonal term shows.
        let col: Vec<f32> = (0..8).map(|r| a[r * 4]).collect();
        let same: Vec<f32> = col.iter().flat_map(|&v| [v; 4]).collect();
        let loss = scalar(barlow_twins(
            tensor(&same, 8, 4, &device),
            tensor(&same, 8, 4, &device),
            0.005,
        ));
        assert!((loss - 0.005 * 12.0).abs() < 1e-5, "{loss}");
        // Anti-correlated views: every diagonal entry is -1, so (1 - (-1))^2 = 4 each.
        let neg: Vec<f32> = a.iter().map(|v| -v).collect();
        let loss = scalar(barlow_twins(
            tensor(&a, 8, 4, &device),
            tensor(&neg, 8, 4, &device),
            0.005,
        ));
        assert!((loss - 16.0).abs() < 1e-3, "{loss}");
    }

    #[test]
    fn gradients_reach_both_views() {
        let (ga, gb) = grads_of(|a, b| barlow_twins(a, b, 0.005), 6, 5);
        assert!(ga.iter().any(|&g| g != 0.0));
        assert!(gb.iter().any(|&g| g != 0.0));
    }
}
