//! Speckle: complex Gaussian scatterer fields blurred by a point-spread function that is
//! longer laterally than axially. The envelope of such a field is Rayleigh distributed, which
//! is what fully developed ultrasound speckle is. Fields live on the polar grid and are
//! computed once per clip; frames sample them (shifted when the tissue moves).

use rand::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;

/// A standard normal sample (Box-Muller).
pub(crate) fn normal(rng: &mut Xoshiro256PlusPlus) -> f32 {
    let u1: f32 = rng.random::<f32>().max(1e-7);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// White Gaussian noise of `w * h` samples.
pub(crate) fn white(rng: &mut Xoshiro256PlusPlus, w: usize, h: usize) -> Vec<f32> {
    (0..w * h).map(|_| normal(rng)).collect()
}

fn kernel(sigma: f32) -> Vec<f32> {
    let sigma = sigma.max(0.3);
    let r = (3.0 * sigma).ceil() as isize;
    let k: Vec<f32> = (-r..=r)
        .map(|x| (-(x * x) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f32 = k.iter().sum();
    k.into_iter().map(|v| v / s).collect()
}

/// Separable Gaussian blur (clamped edges) of a `w`-wide row-major field, in place.
/// `sx` is the lateral (along a row) and `sy` the axial standard deviation, in samples.
pub(crate) fn blur(field: &mut [f32], w: usize, h: usize, sx: f32, sy: f32) {
    let mut tmp = vec![0.0f32; field.len()];
    let kx = kernel(sx);
    let rx = (kx.len() / 2) as isize;
    for y in 0..h {
        let row = &field[y * w..(y + 1) * w];
        for x in 0..w {
            let mut acc = 0.0;
            for (t, kv) in kx.iter().enumerate() {
                let xx = (x as isize + t as isize - rx).clamp(0, w as isize - 1) as usize;
                acc += kv * row[xx];
            }
            tmp[y * w + x] = acc;
        }
    }
    let ky = kernel(sy);
    let ry = (ky.len() / 2) as isize;
    for y in 0..h {
        let out = &mut field[y * w..(y + 1) * w];
        out.fill(0.0);
        for (t, kv) in ky.iter().enumerate() {
            let yy = (y as isize + t as isize - ry).clamp(0, h as isize - 1) as usize;
            let src = &tmp[yy * w..(yy + 1) * w];
            for (o, s) in out.iter_mut().zip(src) {
                *o += kv * s;
            }
        }
    }
}

/// Scales a field to unit mean square.
fn normalise_power(fields: &mut [&mut Vec<f32>]) {
    let n: usize = fields.iter().map(|f| f.len()).sum();
    let p: f64 = fields
        .iter()
        .flat_map(|f| f.iter())
        .map(|v| (*v as f64).powi(2))
        .sum::<f64>()
        / n as f64;
    let g = (1.0 / p.max(1e-12)).sqrt() as f32;
    for f in fields.iter_mut() {
        f.iter_mut().for_each(|v| *v *= g);
    }
}

/// A complex speckle field: `re + i im`, with `E|z|^2 = 2` (each part has unit power).
#[derive(Clone, Debug)]
pub(crate) struct ComplexField {
    pub re: Vec<f32>,
    pub im: Vec<f32>,
}

impl ComplexField {
    /// Blurred complex white noise on a `w` x `h` grid; `sx`, `sy` are the PSF's lateral and
    /// axial standard deviations in grid samples.
    pub fn new(rng: &mut Xoshiro256PlusPlus, w: usize, h: usize, sx: f32, sy: f32) -> Self {
        let mut re = white(rng, w, h);
        let mut im = white(rng, w, h);
        blur(&mut re, w, h, sx, sy);
        blur(&mut im, w, h, sx, sy);
        normalise_power(&mut [&mut re]);
        normalise_power(&mut [&mut im]);
        Self { re, im }
    }

    /// Intensity `|z|^2 / 2` (mean 1, exponential distribution) at index `k`.
    #[inline]
    pub fn intensity(&self, k: usize) -> f32 {
        0.5 * (self.re[k] * self.re[k] + self.im[k] * self.im[k])
    }
}

/// A real, smooth, zero-mean unit-variance random field (for textures such as muscle
/// striation or organ inhomogeneity).
pub(crate) fn smooth_field(
    rng: &mut Xoshiro256PlusPlus,
    w: usize,
    h: usize,
    sx: f32,
    sy: f32,
) -> Vec<f32> {
    let mut f = white(rng, w, h);
    blur(&mut f, w, h, sx, sy);
    normalise_power(&mut [&mut f]);
    f
}

/// Two independent speckle fields on a padded grid. A frame samples `cos(φ) a + sin(φ) b`
/// (itself a speckle field with the same statistics) at a shifted position: the shift moves the
/// speckle with the tissue and a slowly turning `φ` lets it decorrelate (shimmer).
#[derive(Clone, Debug)]
pub(crate) struct MovingSpeckle {
    a: ComplexField,
    b: ComplexField,
    w: usize,
    pad_x: usize,
    pad_y: usize,
}

/// A [`MovingSpeckle`] fixed for one frame: shift and phase.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SpeckleFrame<'a> {
    field: &'a MovingSpeckle,
    offset: isize,
    wi: f32,
    wj: f32,
    c: f32,
    s: f32,
}

impl MovingSpeckle {
    /// Fields covering `rows` x `cols` plus `pad_y` rows and `pad_x` columns on every side.
    pub fn new(
        rng: &mut Xoshiro256PlusPlus,
        rows: usize,
        cols: usize,
        pad_y: usize,
        pad_x: usize,
        sx: f32,
        sy: f32,
    ) -> Self {
        let (w, h) = (cols + 2 * pad_x, rows + 2 * pad_y);
        Self {
            a: ComplexField::new(rng, w, h, sx, sy),
            b: ComplexField::new(rng, w, h, sx, sy),
            w,
            pad_x,
            pad_y,
        }
    }

    /// The field as seen in a frame where the tissue moved by (`di` rows, `dj` columns), at
    /// decorrelation phase `phase`. Shifts are clamped to the padding.
    pub fn frame(&self, di: f32, dj: f32, phase: f32) -> SpeckleFrame<'_> {
        let lim_y = self.pad_y as f32 - 1.0;
        let lim_x = self.pad_x as f32 - 1.0;
        let (fi, fj) = (-di.clamp(-lim_y, lim_y), -dj.clamp(-lim_x, lim_x));
        let (oi, oj) = (fi.floor(), fj.floor());
        let offset = (oi as isize + self.pad_y as isize) * self.w as isize
            + oj as isize
            + self.pad_x as isize;
        SpeckleFrame {
            field: self,
            offset,
            wi: fi - oi,
            wj: fj - oj,
            c: phase.cos(),
            s: phase.sin(),
        }
    }
}

impl SpeckleFrame<'_> {
    /// Speckle intensity (mean 1) at grid point (i, j).
    #[inline]
    pub fn intensity(&self, i: usize, j: usize) -> f32 {
        let f = self.field;
        let k = (self.offset + (i * f.w + j) as isize) as usize;
        let z = |k: usize| {
            (
                self.c * f.a.re[k] + self.s * f.b.re[k],
                self.c * f.a.im[k] + self.s * f.b.im[k],
            )
        };
        let (r00, i00) = z(k);
        let (r01, i01) = z(k + 1);
        let (r10, i10) = z(k + f.w);
        let (r11, i11) = z(k + f.w + 1);
        let re_t = r00 + (r01 - r00) * self.wj;
        let im_t = i00 + (i01 - i00) * self.wj;
        let re_b = r10 + (r11 - r10) * self.wj;
        let im_b = i10 + (i11 - i10) * self.wj;
        let re = re_t + (re_b - re_t) * self.wi;
        let im = im_t + (im_b - im_t) * self.wi;
        0.5 * (re * re + im * im)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn speckle_intensity_has_unit_mean_and_exponential_spread() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let f = ComplexField::new(&mut rng, 128, 128, 2.0, 0.8);
        let n = 128 * 128;
        let vals: Vec<f32> = (0..n).map(|k| f.intensity(k)).collect();
        let mean = vals.iter().sum::<f32>() / n as f32;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n as f32;
        assert!((mean - 1.0).abs() < 0.02, "mean {mean}");
        // Exponential intensity: std == mean (speckle contrast 1), within sampling error.
        assert!((var.sqrt() - 1.0).abs() < 0.25, "std {}", var.sqrt());
    }

    #[test]
    fn psf_is_longer_laterally() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
        let (w, h) = (96, 96);
        let f = ComplexField::new(&mut rng, w, h, 3.0, 0.8);
        let corr = |dx: usize, dy: usize| {
            let mut acc = 0.0;
            for y in 0..h - dy {
                for x in 0..w - dx {
                    acc += f.re[y * w + x] * f.re[(y + dy) * w + x + dx];
                }
            }
            acc / ((h - dy) * (w - dx)) as f32
        };
        assert!(corr(2, 0) > corr(0, 2) + 0.2);
    }

    #[test]
    fn moving_speckle_follows_the_shift() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let m = MovingSpeckle::new(&mut rng, 40, 40, 4, 6, 2.0, 0.8);
        let (f0, f3) = (m.frame(0.0, 0.0, 0.0), m.frame(0.0, 3.0, 0.0));
        for (i, j) in [(5, 5), (20, 17), (39, 30)] {
            assert!((f0.intensity(i, j) - f3.intensity(i, j + 3)).abs() < 1e-5);
        }
        let g = m.frame(2.0, -1.0, 0.0);
        assert!((f0.intensity(10, 10) - g.intensity(12, 9)).abs() < 1e-5);
    }
}
