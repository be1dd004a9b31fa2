//! Collapse monitor for self-supervised training: does the embedding still spread out?
//!
//! Two numbers per logged step, from one batch of embeddings `Z` (`[N, D]`):
//! - `embedding_std`: mean over dimensions of the standard deviation of the L2-normalised rows.
//!   Collapse to a point gives 0; well-spread embeddings approach `1 / sqrt(D)`.
//! - `effective_rank`: `exp(entropy(p))` with `p_i = s_i / sum(s)` over the singular values of the
//!   centred `Z` (Roy & Vetterli 2007; RankMe, Garrido et al. 2023). Dimensional collapse
//!   drives it towards 1; it is at most `min(N - 1, D)`.

/// Collapse statistics of one batch.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct CollapseStats {
    /// Mean per-dimension std of the L2-normalised embeddings.
    pub embedding_std: f64,
    /// Entropy-based effective rank of the centred embeddings.
    pub effective_rank: f64,
}

/// Statistics of `z` (`[n, d]`, row-major).
pub fn collapse_stats(z: &[f32], n: usize, d: usize) -> CollapseStats {
    assert_eq!(z.len(), n * d, "z must hold n * d values");
    if n < 2 || d == 0 {
        return CollapseStats {
            embedding_std: 0.0,
            effective_rank: 0.0,
        };
    }
    let rows: Vec<Vec<f64>> = z
        .chunks_exact(d)
        .map(|r| {
            let norm = r
                .iter()
                .map(|&v| (v as f64).powi(2))
                .sum::<f64>()
                .sqrt()
                .max(1e-12);
            r.iter().map(|&v| v as f64 / norm).collect()
        })
        .collect();
    let mut mean = vec![0.0; d];
    for r in &rows {
        mean.iter_mut().zip(r).for_each(|(m, v)| *m += v / n as f64);
    }
    let centred: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| r.iter().zip(&mean).map(|(v, m)| v - m).collect())
        .collect();
    let embedding_std = (0..d)
        .map(|k| (centred.iter().map(|r| r[k] * r[k]).sum::<f64>() / n as f64).sqrt())
        .sum::<f64>()
        / d as f64;
    // Singular values of the centred Z are the square roots of the eigenvalues of the n x n Gram
    // matrix Z Z^T, which is small (n = batch size).
    let mut gram = vec![0.0; n * n];
    for i in 0..n {
        for j in i..n {
            let v: f64 = centred[i].iter().zip(&centred[j]).map(|(a, b)| a * b).sum();
            gram[i * n + j] = v;
            gram[j * n + i] = v;
        }
    }
    let singular: Vec<f64> = symmetric_eigenvalues(gram, n)
        .into_iter()
        .map(|e| e.max(0.0).sqrt())
        .collect();
    let total: f64 = singular.iter().sum();
    let effective_rank = if total > 0.0 {
        let entropy: f64 = singular
            .iter()
            .map(|s| s / total)
            .filter(|&p| p > 0.0)
            .map(|p| -p * p.ln())
            .sum();
        entropy.exp()
    } else {
        0.0
    };
    CollapseStats {
        embedding_std,
        effective_rank,
    }
}

/// Eigenvalues of a symmetric `n x n` matrix by cyclic Jacobi rotations.
fn symmetric_eigenvalues(mut a: Vec<f64>, n: usize) -> Vec<f64> {
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum();
        let scale: f64 = (0..n)
            .map(|i| a[i * n + i].powi(2))
            .sum::<f64>()
            .max(1e-300);
        if off <= 1e-22 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
            }
        }
    }
    (0..n).map(|i| a[i * n + i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigenvalues_of_a_known_matrix() {
        let mut e = symmetric_eigenvalues(vec![2.0, 1.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 5.0], 3);
        e.sort_by(f64::total_cmp);
        for (got, want) in e.iter().zip([1.0, 3.0, 5.0]) {
            assert!((got - want).abs() < 1e-9, "{e:?}");
        }
    }

    #[test]
    fn collapsed_embeddings_score_zero_and_spread_ones_score_high() {
        let collapsed = vec![0.3f32; 8 * 4];
        let s = collapse_stats(&collapsed, 8, 4);
        assert!(s.embedding_std < 1e-9 && s.effective_rank < 1e-9, "{s:?}");
        // 8 orthogonal directions in 8 dimensions, +-: full rank after centring.
        let mut spread = vec![0.0f32; 16 * 8];
        for i in 0..16 {
            spread[i * 8 + i % 8] = if i < 8 { 1.0 } else { -1.0 };
        }
        let s = collapse_stats(&spread, 16, 8);
        assert!((s.effective_rank - 8.0).abs() < 1e-6, "{s:?}");
        assert!(s.embedding_std > 0.3, "{s:?}");
        // Rank one: all rows on one line.
        let line: Vec<f32> = (0..10)
            .flat_map(|i| [i as f32 - 4.5, 2.0 * (i as f32 - 4.5), 0.1])
            .collect();
        assert!(collapse_stats(&line, 10, 3).effective_rank < 1.6);
    }
}
