//! SimCLR's NT-Xent loss (normalised temperature-scaled cross-entropy), Chen et al. 2020
//! ([arXiv 2002.05709](https://arxiv.org/abs/2002.05709)), with the conventions of lightly's
//! `NTXentLoss` (no memory bank).
//!
//! The `2N` embeddings of a batch (both views) are L2-normalised; for each of them (the anchor)
//! the other view of the same frame is the positive and the `2N - 2` embeddings of the other
//! frames are the negatives. With `s_ij = cos(z_i, z_j) / t`, the anchor's loss is the
//! cross-entropy of picking its positive `p(i)` among positive and negatives,
//!
//! `l_i = -log( exp(s_ip) / sum_{j != i} exp(s_ij) )`,
//!
//! and the batch loss is the mean of `l_i` over all `2N` anchors.

use burn::tensor::{Bool, Tensor, TensorData};

use crate::ssl::check_pair;

/// Norms below this are clamped before dividing (PyTorch's `F.normalize` default).
const NORMALIZE_EPS: f64 = 1e-12;

/// Rows of `x` divided by their L2 norm (clamped below at [`NORMALIZE_EPS`]).
fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x
        .clone()
        .square()
        .sum_dim(1)
        .sqrt()
        .clamp_min(NORMALIZE_EPS);
    x / norm
}

/// NT-Xent loss of two views, averaged over all `2N` anchors.
///
/// Row `i` of `z_a` and row `i` of `z_b` are the two views of frame `i` (positives); every other
/// row of either view is a negative. The embeddings are L2-normalised here, so their scale does
/// not matter. `temperature` divides the cosine similarities (recipe: 0.1).
///
/// Computed as `l_i = log(1 + sum_neg exp(s_ij - s_ip))` with a detached shift, which stays
/// accurate (relative error ~1e-6 in f32) when the positive dominates and the loss is small, and
/// does not overflow for small temperatures.
///
/// # Shapes
/// `z_a`, `z_b`: `[N, D]`; result `[1]`.
///
/// # Panics
/// If the shapes differ, `N == 0`, or `temperature` is not finite and positive.
pub fn nt_xent(z_a: Tensor<2>, z_b: Tensor<2>, temperature: f64) -> Tensor<1> {
    let [n, _] = check_pair("nt_xent", &z_a, &z_b);
    assert!(n > 0, "nt_xent: the batch is empty");
    assert!(
        temperature.is_finite() && temperature > 0.0,
        "nt_xent: temperature must be finite and positive"
    );
    let device = z_a.device();
    let (a, b) = (l2_normalize(z_a), l2_normalize(z_b));
    // Anchors [2N, D] and, row for row, their positives.
    let anchors = Tensor::cat(vec![a.clone(), b.clone()], 0);
    let positives = Tensor::cat(vec![b, a], 0);
    let inv_t = 1.0 / temperature;
    // s_ij [2N, 2N] and s_ip [2N, 1].
    let sim = anchors.clone().matmul(anchors.clone().transpose()) * inv_t;
    let pos = (anchors * positives).sum_dim(1) * inv_t;
    // Exclude the anchor itself and its positive: what is left are the negatives.
    let m = 2 * n;
    let excluded = (0..m * m)
        .map(|k| {
            let (i, j) = (k / m, k % m);
            j == i || j == (i + n) % m
        })
        .collect::<Vec<_>>();
    let excluded = Tensor::<2, Bool>::from_data(TensorData::new(excluded, [m, m]), &device);
    let x = (sim - pos).mask_fill(excluded, f32::NEG_INFINITY);
    // l_i = log(exp(0) + sum_neg exp(x_ij)) = c + log(exp(-c) + sum_neg exp(x_ij - c)),
    // c = max(0, max_neg x_ij) (a constant for the gradient). exp(-c) - 1 is folded into
    // log1p so that the common case c = 0 is log1p(sum), exact for small sums.
    let c = x.clone().max_dim(1).clamp_min(0.0).detach();
    let sum = (x - c.clone()).exp().sum_dim(1);
    let per_anchor = c.clone() + ((-c).exp() - 1.0 + sum).log1p();
    per_anchor.mean()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssl::tests::{grads_of, random, scalar, tensor};
    use burn::tensor::Device;

    /// Straightforward f64 NT-Xent on the host.
    fn reference(a: &[f32], b: &[f32], n: usize, d: usize, t: f64) -> f64 {
        let rows: Vec<Vec<f64>> = a
            .chunks(d)
            .chain(b.chunks(d))
            .map(|r| {
                let norm = r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
                r.iter().map(|&v| v as f64 / norm).collect()
            })
            .collect();
        let dot = |i: usize, j: usize| -> f64 {
            rows[i]
                .iter()
                .zip(&rows[j])
                .map(|(x, y)| x * y)
                .sum::<f64>()
                / t
        };
        let m = 2 * n;
        (0..m)
            .map(|i| {
                let lse = (0..m)
                    .filter(|&j| j != i)
                    .map(|j| dot(i, j).exp())
                    .sum::<f64>()
                    .ln();
                lse - dot(i, (i + n) % m)
            })
            .sum::<f64>()
            / m as f64
    }

    #[test]
    fn matches_a_host_reference() {
        let device = Device::flex();
        for (n, d, t) in [
            (4, 8, 0.1),
            (5, 3, 0.5),
            (1, 4, 0.1),
            (16, 32, 0.07),
            (8, 8, 1.0),
        ] {
            let (a, b) = (random(n * d, 10), random(n * d, 11));
            let got = scalar(nt_xent(
                tensor(&a, n, d, &device),
                tensor(&b, n, d, &device),
                t,
            ));
            let want = reference(&a, &b, n, d, t);
            assert!(
                (got as f64 - want).abs() <= 1e-5 * want.abs().max(1.0),
                "n {n} d {d} t {t}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn identical_views_score_lower_than_random_views() {
        let device = Device::flex();
        let (n, d) = (8, 16);
        let a = random(n * d, 20);
        let b = random(n * d, 21);
        let same = scalar(nt_xent(
            tensor(&a, n, d, &device),
            tensor(&a, n, d, &device),
            0.1,
        ));
        let other = scalar(nt_xent(
            tensor(&a, n, d, &device),
            tensor(&b, n, d, &device),
            0.1,
        ));
        assert!(same < other, "{same} vs {other}");
        // Scale of either view does not matter (cosine similarity).
        let scaled: Vec<f32> = b.iter().map(|v| 3.0 * v).collect();
        let again = scalar(nt_xent(
            tensor(&a, n, d, &device),
            tensor(&scaled, n, d, &device),
            0.1,
        ));
        assert!(
            (again - other).abs() <= 1e-5 * other.abs(),
            "{again} vs {other}"
        );
        // Both views' roles are symmetric.
        let swapped = scalar(nt_xent(
            tensor(&b, n, d, &device),
            tensor(&a, n, d, &device),
            0.1,
        ));
        assert!((swapped - other).abs() <= 1e-5 * other.abs());
    }

    #[test]
    fn tiny_temperature_does_not_overflow() {
        let device = Device::flex();
        let (n, d) = (6, 4);
        let (a, b) = (random(n * d, 30), random(n * d, 31));
        let got = scalar(nt_xent(
            tensor(&a, n, d, &device),
            tensor(&b, n, d, &device),
            1e-3,
        ));
        assert!(got.is_finite() && got > 0.0, "{got}");
    }

    #[test]
    fn gradients_reach_both_views() {
        let (ga, gb) = grads_of(|a, b| nt_xent(a, b, 0.1), 6, 5);
        assert!(ga.iter().any(|&g| g != 0.0));
        assert!(gb.iter().any(|&g| g != 0.0));
    }
}
