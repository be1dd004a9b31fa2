//! Ultrasound augmentations for self-supervised pretraining: two random views of each frame.
//!
//! # Scale of the values
//! An [`Augmenter`] works on one frame as a single-channel `[height, width]` plane of `f32`
//! in **pixel scale `[0, 1]`** (0 = black, 1 = white), *before* normalisation: that is what
//! [`FrameSet`](crate::data::frames::FrameSet) holds until
//! [`FrameSet::normalise`](crate::data::frames::FrameSet::normalise) is called. Views come back
//! in the same scale, clamped to `[0, 1]` (the display saturates, as a scanner's does); apply the
//! pack's normalisation afterwards with the runtime's own step
//! ([`network_normalise`](crate::data::frames::network_normalise)), or go back first with
//! [`denormalise`] when only normalised frames are at hand. Brightness and contrast are therefore relative to
//! the grey levels a person sees, whatever the normalisation.
//!
//! # The pipeline (in this order, each step drawn independently)
//! 1. random resized crop (probability [`crop_p`](AugmentConfig::crop_p)): a window of
//!    `crop_scale` of the frame's area with aspect ratio (width / height) log-uniform in
//!    `crop_ratio`, resized back to the frame's size with bilinear interpolation. With
//!    [`keep_sector`](AugmentConfig::keep_sector) the window must contain the top-centre point
//!    of the frame, `(width / 2, 0)`, where the probe face sits: its top edge is row 0 (the
//!    probe footprint and the shallow tissue, pleura included, stay in view; crops only drop
//!    depth at the bottom and width at the sides) and its horizontal span covers the centre
//!    column;
//! 2. horizontal flip (`hflip_p`), merged into the resampling of step 1. **Never a vertical
//!    flip**: depth is meaningful (probe face at the top, A-lines below the pleura, shadows
//!    below ribs), so nothing here ever changes the depth order of structures: every step maps
//!    row `y` to a row that grows with `y`;
//! 3. depth-dependent gain (`gain_p`): each row is multiplied by a smooth, positive random gain
//!    curve along depth, like an operator moving the time-gain-compensation sliders;
//! 4. multiplicative speckle (`speckle_p`): each pixel is multiplied by an independent
//!    gamma-distributed factor of mean 1 (`speckle_looks` looks: 1 look = exponential
//!    intensity, i.e. Rayleigh amplitude speckle; more looks = milder);
//! 5. brightness then contrast jitter (together, `jitter_p`): `x * b` with `b` uniform in
//!    `1 +- brightness`, then `(x - m) * c + m` with `m` the frame's mean and `c` uniform in
//!    `1 +- contrast` (torchvision's `ColorJitter` in a fixed order);
//! 6. Gaussian blur (`blur_p`), sigma uniform in `blur_sigma` pixels, separable kernel of radius
//!    `ceil(3 sigma)`, edges replicated.
//!
//! Values are clamped to `[0, 1]` after each of steps 3-5. Everything is deterministic in the
//! random generator's state.

mod blur;
mod dump;
mod geometry;
mod intensity;

pub use dump::dump_views;

use anyhow::{ensure, Result};
use rand::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use geometry::Window;
use intensity::SpeckleTable;

/// What [`Augmenter`] does and how often. `Default` is the published recipe (random resized
/// crop 0.7-1.0 p 0.8, horizontal flip p 0.5, brightness and contrast +-0.25 p 0.7, Gaussian
/// blur sigma 0.1-2 p 0.2) plus mild ultrasound-aware extras: crops keep the sector, depth gain
/// jitter +-15 % (p 0.5); speckle noise off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Probability of a random resized crop.
    pub crop_p: f32,
    /// Range of the crop's area as a fraction of the frame's, `0 < lo <= hi <= 1`.
    pub crop_scale: [f32; 2],
    /// Range of the crop's aspect ratio (width / height), drawn log-uniformly.
    pub crop_ratio: [f32; 2],
    /// Crops contain the top-centre point of the frame (the probe face): top edge on row 0,
    /// centre column inside.
    pub keep_sector: bool,
    /// Probability of a horizontal flip (there is never a vertical one).
    pub hflip_p: f32,
    /// Probability of brightness and contrast jitter (both together).
    pub jitter_p: f32,
    /// Brightness factor range `1 +- brightness`, `0 <= brightness < 1`.
    pub brightness: f32,
    /// Contrast factor range `1 +- contrast`, `0 <= contrast <= 1`.
    pub contrast: f32,
    /// Probability of a Gaussian blur.
    pub blur_p: f32,
    /// Range of the blur's sigma, pixels, `0 < lo <= hi <= 10`.
    pub blur_sigma: [f32; 2],
    /// Probability of a depth-dependent gain change.
    pub gain_p: f32,
    /// Largest log-gain: the gain curve lies in `[exp(-s), exp(s)]`.
    pub gain_strength: f32,
    /// Number of segments of the gain curve along depth (more = wigglier), 1..=32.
    pub gain_knots: usize,
    /// Probability of multiplicative speckle noise.
    pub speckle_p: f32,
    /// Looks of the speckle (gamma shape; std of the factor = `1 / sqrt(looks)`), 1..=1000.
    pub speckle_looks: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            crop_p: 0.8,
            crop_scale: [0.7, 1.0],
            crop_ratio: [3.0 / 4.0, 4.0 / 3.0],
            keep_sector: true,
            hflip_p: 0.5,
            jitter_p: 0.7,
            brightness: 0.25,
            contrast: 0.25,
            blur_p: 0.2,
            blur_sigma: [0.1, 2.0],
            gain_p: 0.5,
            gain_strength: 0.15,
            gain_knots: 4,
            speckle_p: 0.0,
            speckle_looks: 16.0,
        }
    }
}

impl AugmentConfig {
    /// Checks every field's range; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let prob = |name: &str, p: f32| {
            ensure!(
                (0.0..=1.0).contains(&p),
                "augment {name} = {p}: must be in 0..=1"
            );
            Ok(())
        };
        prob("crop_p", self.crop_p)?;
        prob("hflip_p", self.hflip_p)?;
        prob("jitter_p", self.jitter_p)?;
        prob("blur_p", self.blur_p)?;
        prob("gain_p", self.gain_p)?;
        prob("speckle_p", self.speckle_p)?;
        let [s0, s1] = self.crop_scale;
        ensure!(
            0.0 < s0 && s0 <= s1 && s1 <= 1.0,
            "augment crop_scale = [{s0}, {s1}]: need 0 < lo <= hi <= 1"
        );
        let [r0, r1] = self.crop_ratio;
        ensure!(
            0.0 < r0 && r0 <= r1 && r1.is_finite(),
            "augment crop_ratio = [{r0}, {r1}]: need 0 < lo <= hi"
        );
        ensure!(
            (0.0..1.0).contains(&self.brightness),
            "augment brightness = {}: must be in 0..1",
            self.brightness
        );
        ensure!(
            (0.0..=1.0).contains(&self.contrast),
            "augment contrast = {}: must be in 0..=1",
            self.contrast
        );
        let [b0, b1] = self.blur_sigma;
        ensure!(
            0.0 < b0 && b0 <= b1 && b1 <= 10.0,
            "augment blur_sigma = [{b0}, {b1}]: need 0 < lo <= hi <= 10"
        );
        ensure!(
            (0.0..=2.0).contains(&self.gain_strength),
            "augment gain_strength = {}: must be in 0..=2",
            self.gain_strength
        );
        ensure!(
            (1..=32).contains(&self.gain_knots),
            "augment gain_knots = {}: must be in 1..=32",
            self.gain_knots
        );
        ensure!(
            (1.0..=1000.0).contains(&self.speckle_looks),
            "augment speckle_looks = {}: must be in 1..=1000",
            self.speckle_looks
        );
        Ok(())
    }
}

/// Undoes the runtime's normalisation: `x * std + mean`, back to pixel scale `[0, 1]`.
pub fn denormalise(values: &mut [f32], mean: f32, std: f32) {
    values.iter_mut().for_each(|v| *v = *v * std + mean);
}

/// Everything drawn for one view; rendering it consumes further draws only for speckle.
#[derive(Clone, Debug, PartialEq)]
struct Draw {
    /// Crop window in source pixels, `None` = the whole frame.
    crop: Option<Window>,
    flip: bool,
    /// Knot values in `[-1, 1]` of the gain curve.
    gain: Option<Vec<f32>>,
    speckle: bool,
    /// Brightness and contrast factors.
    jitter: Option<(f32, f32)>,
    /// Blur sigma, pixels.
    blur: Option<f32>,
}

/// Uniform in `[lo, hi)` (`lo` when the range is empty).
#[inline]
fn uniform(rng: &mut Xoshiro256PlusPlus, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}

/// `true` with probability `p` (always one draw, so streams stay aligned).
#[inline]
fn chance(rng: &mut Xoshiro256PlusPlus, p: f32) -> bool {
    rng.random::<f32>() < p
}

/// Draws random views of `[height, width]` frames. Cheap to share between threads (`&self`);
/// each caller brings its own random generator.
#[derive(Clone, Debug)]
pub struct Augmenter {
    config: AugmentConfig,
    height: usize,
    width: usize,
    /// Quantiles of the speckle factor's distribution (only when speckle can happen).
    speckle: Option<SpeckleTable>,
}

impl Augmenter {
    /// Prepares an augmenter for frames of `height` x `width` (each at least 2 pixels): checks
    /// the configuration and precomputes the speckle distribution.
    pub fn new(config: &AugmentConfig, height: usize, width: usize) -> Result<Self> {
        config.validate()?;
        ensure!(
            height >= 2 && width >= 2,
            "augmenting {width}x{height} frames: each side must be at least 2 pixels"
        );
        let speckle = (config.speckle_p > 0.0).then(|| SpeckleTable::new(config.speckle_looks));
        Ok(Self {
            config: config.clone(),
            height,
            width,
            speckle,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AugmentConfig {
        &self.config
    }

    /// Frame size as `(height, width)`.
    pub fn size(&self) -> (usize, usize) {
        (self.height, self.width)
    }

    /// Draws the parameters of one view.
    fn draw(&self, rng: &mut Xoshiro256PlusPlus) -> Draw {
        let c = &self.config;
        let crop = chance(rng, c.crop_p).then(|| {
            geometry::draw_window(
                rng,
                self.height,
                self.width,
                c.crop_scale,
                c.crop_ratio,
                c.keep_sector,
            )
        });
        let flip = chance(rng, c.hflip_p);
        let gain = chance(rng, c.gain_p).then(|| {
            (0..=c.gain_knots)
                .map(|_| uniform(rng, -1.0, 1.0))
                .collect()
        });
        let speckle = chance(rng, c.speckle_p);
        let jitter = chance(rng, c.jitter_p).then(|| {
            let b = uniform(rng, 1.0 - c.brightness, 1.0 + c.brightness);
            let k = uniform(rng, 1.0 - c.contrast, 1.0 + c.contrast);
            (b, k)
        });
        let blur = chance(rng, c.blur_p).then(|| uniform(rng, c.blur_sigma[0], c.blur_sigma[1]));
        Draw {
            crop,
            flip,
            gain,
            speckle,
            jitter,
            blur,
        }
    }

    /// Renders the view `d` of `src` into `dst`.
    fn render(&self, d: &Draw, src: &[f32], dst: &mut [f32], rng: &mut Xoshiro256PlusPlus) {
        let (h, w) = (self.height, self.width);
        match d.crop {
            Some(win) => geometry::resample(src, (h, w), win, d.flip, dst, (h, w)),
            None => {
                dst.copy_from_slice(src);
                if d.flip {
                    geometry::hflip(dst, h, w);
                }
            }
        }
        if let Some(knots) = &d.gain {
            let curve = intensity::gain_curve(knots, self.config.gain_strength, h);
            intensity::apply_gain(dst, w, &curve);
        }
        if d.speckle {
            if let Some(table) = &self.speckle {
                table.apply(dst, rng);
            }
        }
        if let Some((b, k)) = d.jitter {
            intensity::brightness(dst, b);
            intensity::contrast(dst, k);
        }
        if let Some(sigma) = d.blur {
            blur::gaussian_blur(dst, h, w, sigma);
        }
        // Only reached with non-finite input: keep the network's input finite regardless.
        dst.iter_mut()
            .for_each(|v| *v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) });
    }

    /// Writes one random view of `src` into `dst` (both `height * width`, pixel scale `[0, 1]`,
    /// row 0 = the probe face). Deterministic in `rng`'s state. Panics when a length is wrong.
    pub fn apply(&self, src: &[f32], dst: &mut [f32], rng: &mut Xoshiro256PlusPlus) {
        let n = self.height * self.width;
        assert_eq!(
            src.len(),
            n,
            "augment: source is not {}x{}",
            self.width,
            self.height
        );
        assert_eq!(
            dst.len(),
            n,
            "augment: destination is not {}x{}",
            self.width,
            self.height
        );
        let d = self.draw(rng);
        self.render(&d, src, dst, rng);
    }

    /// Two independent random views of `src` (the positive pair of contrastive and
    /// redundancy-reduction losses).
    pub fn two_views(&self, src: &[f32], rng: &mut Xoshiro256PlusPlus) -> (Vec<f32>, Vec<f32>) {
        let n = self.height * self.width;
        let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
        self.apply(src, &mut a, rng);
        self.apply(src, &mut b, rng);
        (a, b)
    }
}

#[cfg(test)]
mod tests;
