//! VICReg's variance-invariance-covariance loss, Bardes et al. 2022
//! ([arXiv 2105.04906](https://arxiv.org/abs/2105.04906)), with the conventions of lightly's
//! `VICRegLoss` (default eps `1e-4`).
//!
//! `L = sim * s(z_a, z_b) + var * (v(z_a) + v(z_b)) / 2 + cov * (c(z_a) + c(z_b))` with
//!
//! - invariance `s`: mean squared error over all `N x D` elements;
//! - variance `v(z) = mean_j relu(1 - sqrt(Var_j(z) + eps))`, `Var_j` the *unbiased* variance of
//!   dimension `j` over the batch: a hinge that keeps every dimension's standard deviation at 1
//!   or above (no collapse);
//! - covariance `c(z) = sum_{i != j} Cov(z)_ij^2 / D`, `Cov(z) = (z - mean)^T (z - mean) / (N - 1)`:
//!   decorrelates the dimensions.

use burn::tensor::activation::relu;
use burn::tensor::Tensor;

use crate::ssl::{check_pair, off_diagonal};

/// Epsilon added to the variance inside the square root of the variance term.
pub const VICREG_EPSILON: f64 = 1e-4;

/// `mean_j relu(1 - sqrt(Var_j(z) + eps))` with the unbiased variance.
fn variance_term(z: Tensor<2>) -> Tensor<1> {
    relu((z.var(0) + VICREG_EPSILON).sqrt().neg() + 1.0).mean()
}

/// Squared off-diagonal entries of the unbiased covariance matrix, summed, divided by `D`.
fn covariance_term(z: Tensor<2>) -> Tensor<1> {
    let [n, d] = z.dims();
    let centred = z.clone() - z.mean_dim(0);
    let cov = centred.clone().transpose().matmul(centred) / (n - 1) as f64;
    off_diagonal(cov).square().sum() / d as f64
}

/// VICReg loss of two views with weights `sim` (invariance), `var` (variance) and `cov`
/// (covariance); recipe: 25, 25, 1.
///
/// Row `i` of `z_a` and row `i` of `z_b` are the two views of frame `i`.
///
/// # Shapes
/// `z_a`, `z_b`: `[N, D]`; result `[1]`.
///
/// # Panics
/// If the shapes differ or `N < 2` (the unbiased variance needs two samples).
pub fn vicreg(z_a: Tensor<2>, z_b: Tensor<2>, sim: f64, var: f64, cov: f64) -> Tensor<1> {
    let [n, _] = check_pair("vicreg", &z_a, &z_b);
    assert!(n >= 2, "vicreg: the batch needs at least 2 samples");
    let invariance = (z_a.clone() - z_b.clone()).square().mean();
    let variance = (variance_term(z_a.clone()) + variance_term(z_b.clone())) * 0.5;
    let covariance = covariance_term(z_a) + covariance_term(z_b);
    invariance * sim + variance * var + covariance * cov
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssl::tests::{grads_of, random, scalar, tensor, whitened};
    use burn::tensor::Device;

    /// Straightforward f64 VICReg on the host.
    fn reference(a: &[f32], b: &[f32], n: usize, d: usize, w: (f64, f64, f64)) -> f64 {
        let inv = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
            .sum::<f64>()
            / (n * d) as f64;
        let stats = |z: &[f32]| -> (f64, f64) {
            let col = |j: usize| (0..n).map(move |i| z[i * d + j] as f64);
            let means: Vec<f64> = (0..d).map(|j| col(j).sum::<f64>() / n as f64).collect();
            let covar = |p: usize, q: usize| {
                (0..n)
                    .map(|i| (z[i * d + p] as f64 - means[p]) * (z[i * d + q] as f64 - means[q]))
                    .sum::<f64>()
                    / (n - 1) as f64
            };
            let v = (0..d)
                .map(|j| (1.0 - (covar(j, j) + VICREG_EPSILON).sqrt()).max(0.0))
                .sum::<f64>()
                / d as f64;
            let mut c = 0.0;
            for p in 0..d {
                for q in 0..d {
                    if p != q {
                        c += covar(p, q).powi(2);
                    }
                }
            }
            (v, c / d as f64)
        };
        let ((va, ca), (vb, cb)) = (stats(a), stats(b));
        w.0 * inv + w.1 * 0.5 * (va + vb) + w.2 * (ca + cb)
    }

    #[test]
    fn matches_a_host_reference() {
        let device = Device::flex();
        for (n, d, w) in [
            (4, 8, (25.0, 25.0, 1.0)),
            (7, 3, (1.0, 2.0, 3.0)),
            (2, 2, (25.0, 25.0, 1.0)),
            (32, 16, (25.0, 25.0, 1.0)),
        ] {
            let (a, b) = (random(n * d, 50), random(n * d, 51));
            let got = scalar(vicreg(
                tensor(&a, n, d, &device),
                tensor(&b, n, d, &device),
                w.0,
                w.1,
                w.2,
            ));
            let want = reference(&a, &b, n, d, w);
            assert!(
                (got as f64 - want).abs() <= 1e-5 * want.abs().max(1.0),
                "n {n} d {d}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn identical_decorrelated_wide_views_give_zero_and_collapse_costs_the_variance_term() {
        let device = Device::flex();
        // Columns orthogonal (no covariance) with unbiased std sqrt(8/7) * 2 > 1 (no hinge).
        let a: Vec<f32> = whitened().iter().map(|v| 2.0 * v).collect();
        let loss = scalar(vicreg(
            tensor(&a, 8, 4, &device),
            tensor(&a, 8, 4, &device),
            25.0,
            25.0,
            1.0,
        ));
        assert!(loss.abs() < 1e-6, "{loss}");
        // Collapsed embeddings (all equal): only the variance term, relu(1 - sqrt(1e-4)) = 0.99
        // per dimension and view.
        let constant = vec![0.3f32; 32];
        let loss = scalar(vicreg(
            tensor(&constant, 8, 4, &device),
            tensor(&constant, 8, 4, &device),
            25.0,
            25.0,
            1.0,
        ));
        assert!((loss - 25.0 * 0.99).abs() < 1e-4, "{loss}");
    }

    #[test]
    fn gradients_reach_both_views() {
        let (ga, gb) = grads_of(|a, b| vicreg(a, b, 25.0, 25.0, 1.0), 6, 5);
        assert!(ga.iter().any(|&g| g != 0.0));
        assert!(gb.iter().any(|&g| g != 0.0));
    }
}
