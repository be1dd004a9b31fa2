//! Self-supervised pretraining objectives and the projector they are computed on.
//!
//! The paper (VanBerlo et al. 2023) pretrains the MobileNetV3 backbone with three joint-embedding
//! methods and compares them on lung-ultrasound tasks. Each method embeds two augmented views of
//! the same frames, `backbone -> projector -> z`, and scores the pair `(z_a, z_b)`:
//!
//! - [`SslMethod::Simclr`]: SimCLR's NT-Xent contrastive loss, Chen et al., "A Simple Framework
//!   for Contrastive Learning of Visual Representations", ICML 2020
//!   ([arXiv 2002.05709](https://arxiv.org/abs/2002.05709)); see [`mod@simclr`].
//! - [`SslMethod::Barlow`]: Barlow Twins' cross-correlation loss, Zbontar et al., "Barlow Twins:
//!   Self-Supervised Learning via Redundancy Reduction", ICML 2021
//!   ([arXiv 2103.03230](https://arxiv.org/abs/2103.03230)); see [`mod@barlow_twins`].
//! - [`SslMethod::Vicreg`]: VICReg's variance-invariance-covariance loss, Bardes et al.,
//!   "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning",
//!   ICLR 2022 ([arXiv 2105.04906](https://arxiv.org/abs/2105.04906)); see [`mod@vicreg`].
//!
//! The losses follow the conventions of the `lightly` library (version 1.6.0), which the group's
//! PyTorch code uses; `tests/ssl_losses.rs` checks them against float64 reference values
//! computed with it (`tests/fixtures/ssl_losses_and_auc.json`). Hyperparameters default to the
//! recipe: temperature 0.1, Barlow Twins lambda 0.005, VICReg weights (25, 25, 1), and a
//! projector of Linear-BN-ReLU blocks then a bias-free Linear, sizes `[768, 768]`
//! ([`projector`]).
//!
//! All losses are built from differentiable burn tensor operations: on an autodiff device
//! (`Device::autodiff()`) `loss.backward()` gives gradients for the embeddings and, through
//! them, for the projector and the backbone.

pub mod barlow_twins;
pub mod projector;
pub mod simclr;
pub mod vicreg;

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

pub use barlow_twins::barlow_twins;
pub use projector::{Projector, ProjectorBlock, ProjectorConfig};
pub use simclr::nt_xent;
pub use vicreg::vicreg;

/// A self-supervised pretraining method (which loss is applied to the two views' embeddings).
///
/// Serialised in snake case: `"simclr"`, `"barlow"`, `"vicreg"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SslMethod {
    /// SimCLR: NT-Xent contrastive loss ([`nt_xent()`]).
    Simclr,
    /// Barlow Twins: cross-correlation towards the identity ([`barlow_twins()`]).
    Barlow,
    /// VICReg: invariance, variance and covariance terms ([`vicreg()`]).
    Vicreg,
}

impl SslMethod {
    /// Every method, in the paper's order.
    pub const ALL: [SslMethod; 3] = [SslMethod::Simclr, SslMethod::Barlow, SslMethod::Vicreg];

    /// The method's serialised name (`"simclr"`, `"barlow"`, `"vicreg"`).
    pub fn as_str(self) -> &'static str {
        match self {
            SslMethod::Simclr => "simclr",
            SslMethod::Barlow => "barlow",
            SslMethod::Vicreg => "vicreg",
        }
    }
}

impl std::fmt::Display for SslMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Recipe default of the NT-Xent temperature.
pub const DEFAULT_TEMPERATURE: f64 = 0.1;
/// Recipe default of Barlow Twins' off-diagonal weight lambda.
pub const DEFAULT_BARLOW_LAMBDA: f64 = 0.005;
/// Recipe default of VICReg's invariance (similarity) weight.
pub const DEFAULT_VICREG_SIM: f64 = 25.0;
/// Recipe default of VICReg's variance weight.
pub const DEFAULT_VICREG_VAR: f64 = 25.0;
/// Recipe default of VICReg's covariance weight.
pub const DEFAULT_VICREG_COV: f64 = 1.0;

fn default_temperature() -> f64 {
    DEFAULT_TEMPERATURE
}
fn default_barlow_lambda() -> f64 {
    DEFAULT_BARLOW_LAMBDA
}
fn default_vicreg_sim() -> f64 {
    DEFAULT_VICREG_SIM
}
fn default_vicreg_var() -> f64 {
    DEFAULT_VICREG_VAR
}
fn default_vicreg_cov() -> f64 {
    DEFAULT_VICREG_COV
}

/// Hyperparameters of the three losses (each method reads only its own).
///
/// Every field is optional when deserialising and defaults to the recipe's value, so `{}` is
/// the recipe and `{"temperature": 0.5}` changes only SimCLR's temperature.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SslLossConfig {
    /// NT-Xent temperature (SimCLR), default [`DEFAULT_TEMPERATURE`].
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Weight of the off-diagonal (redundancy reduction) term of Barlow Twins, default
    /// [`DEFAULT_BARLOW_LAMBDA`].
    #[serde(default = "default_barlow_lambda")]
    pub barlow_lambda: f64,
    /// Weight of VICReg's invariance (mean squared error) term, default [`DEFAULT_VICREG_SIM`].
    #[serde(default = "default_vicreg_sim")]
    pub vicreg_sim: f64,
    /// Weight of VICReg's variance (hinge on the standard deviation) term, default
    /// [`DEFAULT_VICREG_VAR`].
    #[serde(default = "default_vicreg_var")]
    pub vicreg_var: f64,
    /// Weight of VICReg's covariance term, default [`DEFAULT_VICREG_COV`].
    #[serde(default = "default_vicreg_cov")]
    pub vicreg_cov: f64,
}

impl Default for SslLossConfig {
    fn default() -> Self {
        Self {
            temperature: DEFAULT_TEMPERATURE,
            barlow_lambda: DEFAULT_BARLOW_LAMBDA,
            vicreg_sim: DEFAULT_VICREG_SIM,
            vicreg_var: DEFAULT_VICREG_VAR,
            vicreg_cov: DEFAULT_VICREG_COV,
        }
    }
}

/// The loss of `method` for one batch of paired embeddings, with the hyperparameters in
/// `config`.
///
/// Row `i` of `z_a` and row `i` of `z_b` embed two views of the same frame.
///
/// # Shapes
/// `z_a`, `z_b`: `[N, D]` (the projector's output); result `[1]`.
///
/// # Panics
/// If the shapes differ, or the batch is too small for the method (see each loss).
pub fn ssl_loss(
    method: SslMethod,
    config: &SslLossConfig,
    z_a: Tensor<2>,
    z_b: Tensor<2>,
) -> Tensor<1> {
    match method {
        SslMethod::Simclr => nt_xent(z_a, z_b, config.temperature),
        SslMethod::Barlow => barlow_twins(z_a, z_b, config.barlow_lambda),
        SslMethod::Vicreg => vicreg(
            z_a,
            z_b,
            config.vicreg_sim,
            config.vicreg_var,
            config.vicreg_cov,
        ),
    }
}

/// Panic unless both views have the same shape; return `[N, D]`.
pub(crate) fn check_pair(name: &str, z_a: &Tensor<2>, z_b: &Tensor<2>) -> [usize; 2] {
    let (a, b) = (z_a.dims(), z_b.dims());
    assert_eq!(a, b, "{name}: both views must have the same shape");
    assert!(
        a[1] > 0,
        "{name}: embeddings must have at least one dimension"
    );
    a
}

/// `x` with its diagonal set to zero (a square matrix).
pub(crate) fn off_diagonal(x: Tensor<2>) -> Tensor<2> {
    let [n, m] = x.dims();
    assert_eq!(n, m, "off_diagonal needs a square matrix");
    let eye = Tensor::<2, burn::tensor::Bool>::from_data(
        burn::tensor::TensorData::new(
            (0..n * n).map(|k| k / n == k % n).collect::<Vec<_>>(),
            [n, n],
        ),
        &x.device(),
    );
    x.mask_fill(eye, 0.0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    /// A `[rows, cols]` tensor of host values.
    pub(crate) fn tensor(values: &[f32], rows: usize, cols: usize, device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(values.to_vec(), [rows, cols]), device)
    }

    /// Seeded uniform values on `[-1, 1]`.
    pub(crate) fn random(n: usize, seed: u64) -> Vec<f32> {
        crate::model::init::draw_values(n, crate::model::init::Draw::Uniform { bound: 1.0 }, seed)
    }

    /// The single value of a loss.
    pub(crate) fn scalar(t: Tensor<1>) -> f32 {
        let v = crate::model::init::to_vec(t);
        assert_eq!(v.len(), 1);
        v[0]
    }

    /// `[8, 4]` with zero-mean, mutually orthogonal columns of +-1 (columns 1..5 of the
    /// 8x8 Sylvester-Hadamard matrix): already whitened (batch variance 1, no correlation).
    pub(crate) fn whitened() -> Vec<f32> {
        let mut v = Vec::with_capacity(32);
        for r in 0..8u32 {
            for c in 1..5u32 {
                v.push(if (r & c).count_ones() % 2 == 0 {
                    1.0
                } else {
                    -1.0
                });
            }
        }
        v
    }

    /// Gradients of `loss(z_a, z_b)` with respect to both views, on an autodiff device.
    pub(crate) fn grads_of(
        loss: impl Fn(Tensor<2>, Tensor<2>) -> Tensor<1>,
        n: usize,
        d: usize,
    ) -> (Vec<f32>, Vec<f32>) {
        let device = Device::flex().autodiff();
        let z_a = tensor(&random(n * d, 1), n, d, &device).require_grad();
        let z_b = tensor(&random(n * d, 2), n, d, &device).require_grad();
        let grads = loss(z_a.clone(), z_b.clone()).backward();
        let ga = crate::model::init::to_vec(z_a.grad(&grads).expect("grad of z_a"));
        let gb = crate::model::init::to_vec(z_b.grad(&grads).expect("grad of z_b"));
        assert!(ga.iter().chain(&gb).all(|g| g.is_finite()));
        (ga, gb)
    }

    #[test]
    fn method_names_and_serde() {
        for m in SslMethod::ALL {
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.as_str()));
            assert_eq!(serde_json::from_str::<SslMethod>(&json).unwrap(), m);
            assert_eq!(m.to_string(), m.as_str());
        }
        assert_eq!(SslMethod::Barlow.as_str(), "barlow");
    }

    #[test]
    fn loss_config_defaults_are_the_recipe() {
        let c: SslLossConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, SslLossConfig::default());
        assert_eq!(c.temperature, 0.1);
        assert_eq!(c.barlow_lambda, 0.005);
        assert_eq!(
            (c.vicreg_sim, c.vicreg_var, c.vicreg_cov),
            (25.0, 25.0, 1.0)
        );
        let c: SslLossConfig = serde_json::from_str(r#"{"temperature": 0.5}"#).unwrap();
        assert_eq!(c.temperature, 0.5);
        assert_eq!(c.vicreg_sim, 25.0);
        assert!(serde_json::from_str::<SslLossConfig>(r#"{"temprature": 0.5}"#).is_err());
        let back: SslLossConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn ssl_loss_dispatches_with_config() {
        let device = Device::flex();
        let (a, b) = (random(6 * 5, 3), random(6 * 5, 4));
        let za = || tensor(&a, 6, 5, &device);
        let zb = || tensor(&b, 6, 5, &device);
        let c = SslLossConfig {
            temperature: 0.3,
            barlow_lambda: 0.01,
            vicreg_sim: 2.0,
            vicreg_var: 3.0,
            vicreg_cov: 4.0,
        };
        let pairs = [
            (
                ssl_loss(SslMethod::Simclr, &c, za(), zb()),
                nt_xent(za(), zb(), 0.3),
            ),
            (
                ssl_loss(SslMethod::Barlow, &c, za(), zb()),
                barlow_twins(za(), zb(), 0.01),
            ),
            (
                ssl_loss(SslMethod::Vicreg, &c, za(), zb()),
                vicreg(za(), zb(), 2.0, 3.0, 4.0),
            ),
        ];
        for (got, want) in pairs {
            assert_eq!(scalar(got), scalar(want));
        }
    }

    #[test]
    fn off_diagonal_zeroes_the_diagonal() {
        let device = Device::flex();
        let x = tensor(
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
            3,
            3,
            &device,
        );
        assert_eq!(
            crate::model::init::to_vec(off_diagonal(x)),
            vec![0.0, 2.0, 3.0, 4.0, 0.0, 6.0, 7.0, 8.0, 0.0]
        );
    }
}
