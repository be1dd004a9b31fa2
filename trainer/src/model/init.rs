//! Seeded, order-independent parameter initialisation.
//!
//! burn's own initialisers ([`burn::module::Initializer`]) create *lazy* parameters that draw
//! from the device's random generator the first time they are read, and `Device::seed` may be
//! global to a backend. The values would then depend on which parameter is touched first and on
//! any other random tensor op in between (augmentation, dropout). Here every random parameter
//! instead gets its own seed, derived from the model seed and a running counter in
//! construction order, and draws its values on the host with `Xoshiro256PlusPlus`. The parameter
//! stays lazy (it is materialised on first use, on whatever device it lives on then), but its
//! values are a pure function of `(model seed, position)`: identical across runs, programs,
//! access orders and backends.

use burn::module::{Param, ParamId};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Shape, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// Hands out one independent seed per parameter.
#[derive(Clone, Debug)]
pub(crate) struct SeedStream {
    seed: u64,
    counter: u64,
}

/// SplitMix64's finaliser: a bijective, well-mixing hash of a 64-bit word.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SeedStream {
    /// A stream for the model seed `seed`. `domain` separates streams of different modules
    /// (backbone, head) that share one user seed.
    pub(crate) fn new(seed: u64, domain: u64) -> Self {
        Self {
            seed: splitmix64(seed ^ splitmix64(domain)),
            counter: 0,
        }
    }

    /// The seed of the next parameter.
    pub(crate) fn next_seed(&mut self) -> u64 {
        self.counter += 1;
        splitmix64(
            self.seed
                .wrapping_add(self.counter.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        )
    }
}

/// How a parameter's values are drawn.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Draw {
    /// Normal with mean 0 and the given standard deviation.
    Normal { std: f64 },
    /// Uniform on `[-bound, bound]`.
    Uniform { bound: f64 },
}

/// Draw `n` values on the host.
pub(crate) fn draw_values(n: usize, draw: Draw, seed: u64) -> Vec<f32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    match draw {
        Draw::Uniform { bound } => (0..n)
            .map(|_| (rng.random::<f64>() * 2.0 - 1.0) * bound)
            .map(|v| v as f32)
            .collect(),
        Draw::Normal { std } => {
            // Box-Muller, two values per pair of uniforms.
            let mut out = Vec::with_capacity(n + 1);
            while out.len() < n {
                let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
                let u2: f64 = rng.random::<f64>();
                let r = (-2.0 * u1.ln()).sqrt() * std;
                let theta = std::f64::consts::TAU * u2;
                out.push((r * theta.cos()) as f32);
                out.push((r * theta.sin()) as f32);
            }
            out.truncate(n);
            out
        }
    }
}

/// A lazy, trainable parameter of shape `dims` whose values are drawn with `draw` from the
/// generator seeded with `seed`.
pub(crate) fn random_param<const D: usize>(
    dims: [usize; D],
    draw: Draw,
    seed: u64,
    device: &Device,
) -> Param<Tensor<D>> {
    let shape = Shape::new(dims);
    Param::uninitialized(
        ParamId::new(),
        move |device: &Device, require_grad: bool| {
            let n = dims.iter().product();
            let data = TensorData::new(draw_values(n, draw, seed), dims);
            let tensor = Tensor::<D>::from_data(data, device);
            if require_grad {
                tensor.require_grad()
            } else {
                tensor
            }
        },
        device.clone(),
        true,
        shape,
    )
}

/// A lazy, trainable parameter filled with zeros.
pub(crate) fn zeros_param<const D: usize>(dims: [usize; D], device: &Device) -> Param<Tensor<D>> {
    Param::uninitialized(
        ParamId::new(),
        move |device: &Device, require_grad: bool| {
            let tensor = Tensor::<D>::zeros(dims, device);
            if require_grad {
                tensor.require_grad()
            } else {
                tensor
            }
        },
        device.clone(),
        true,
        Shape::new(dims),
    )
}

/// A dense layer initialised like PyTorch's `nn.Linear`: weight (and bias) uniform on
/// `[-1/sqrt(in), 1/sqrt(in)]`, drawn from `seeds`.
pub(crate) fn torch_linear(
    d_in: usize,
    d_out: usize,
    bias: bool,
    seeds: &mut SeedStream,
    device: &Device,
) -> Linear {
    let mut linear = LinearConfig::new(d_in, d_out).with_bias(bias).init(device);
    let bound = 1.0 / (d_in as f64).sqrt();
    // burn's default (row) layout stores the weight as [d_in, d_out].
    linear.weight = random_param(
        [d_in, d_out],
        Draw::Uniform { bound },
        seeds.next_seed(),
        device,
    );
    if bias {
        linear.bias = Some(random_param(
            [d_out],
            Draw::Uniform { bound },
            seeds.next_seed(),
            device,
        ));
    }
    linear
}

/// Read a float tensor back to the host as `f32` values (row-major).
pub(crate) fn to_vec<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("a float tensor converts to f32")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_repeatable_and_roughly_normal() {
        let a = draw_values(10_000, Draw::Normal { std: 2.0 }, 5);
        let b = draw_values(10_000, Draw::Normal { std: 2.0 }, 5);
        assert_eq!(a, b);
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.1, "mean {mean}");
        assert!((var.sqrt() - 2.0).abs() < 0.1, "std {}", var.sqrt());
        let mut s = SeedStream::new(1, 0);
        let (x, y) = (s.next_seed(), s.next_seed());
        assert_ne!(x, y);
        assert_ne!(
            SeedStream::new(1, 0).next_seed(),
            SeedStream::new(1, 1).next_seed()
        );
    }
}
