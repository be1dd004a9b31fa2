//! Binary cross-entropy on logits, weighted per example.

use burn::tensor::activation::softplus;
use burn::tensor::Tensor;

/// Mean of `w * (softplus(z) - y * z)`, the numerically stable form of
/// `-w * (y log sigmoid(z) + (1 - y) log(1 - sigmoid(z)))`.
///
/// # Shapes
/// `logits`, `targets`, `weights`: `[N, 1]`; result `[1]`.
pub fn weighted_bce_with_logits(
    logits: Tensor<2>,
    targets: Tensor<2>,
    weights: Tensor<2>,
) -> Tensor<1> {
    let per_example = softplus(logits.clone(), 1.0) - targets * logits;
    (per_example * weights.clone()).sum() / weights.sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn matches_the_textbook_formula() {
        let device = Device::flex();
        let z = [-2.0f32, 0.5, 3.0];
        let y = [0.0f32, 1.0, 1.0];
        let w = [1.0f32, 2.0, 2.0];
        let t = |v: [f32; 3]| Tensor::<2>::from_data(TensorData::new(v.to_vec(), [3, 1]), &device);
        let got = super::super::to_vec(weighted_bce_with_logits(t(z), t(y), t(w)))[0];
        let sig = |x: f32| 1.0 / (1.0 + (-x).exp());
        let expected: f32 = z
            .iter()
            .zip(&y)
            .zip(&w)
            .map(|((&z, &y), &w)| -w * (y * sig(z).ln() + (1.0 - y) * (1.0 - sig(z)).ln()))
            .sum::<f32>()
            / 5.0;
        assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
    }
}
