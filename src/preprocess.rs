//! Frame preprocessing: crop and resize, then normalise. The ONE path used for training and
//! inference.
//!
//! Two public steps, which the runtime and the trainer both call, in this order:
//!
//! 1. [`Resize`]: crop a [`GreyImage`] to the ultrasound image and resample it to the network's
//!    `height x width`, as **pixel scale** `f32` in `[0, 1]` (grey level / 255), one plane
//!    `[height, width]` row-major. Planned once per source size (filter taps precomputed), it
//!    then runs without allocating.
//! 2. [`Normalise`]: pixel scale to network input, `(x - mean) / std` with the pack's
//!    [`InputSpec`] statistics, the plane repeated over `channels`: `[channels, height, width]`.
//!
//! The trainer may work between the two (augmentations are defined on pixel scale) and must
//! then call the same [`Normalise`]; a frame that goes through both steps unchanged becomes the
//! same tensor bit for bit on either side. [`Preprocessor`] runs both, as the runtime does.
//!
//! Resizing is separable linear interpolation with a triangle filter whose support widens by the
//! scale factor when shrinking (antialiased, like PIL's `BILINEAR`), so a 350-pixel ultrasound
//! sector shrunk to 128 keeps its speckle statistics instead of aliasing.

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

use crate::image::GreyImage;
use crate::pack::InputSpec;

/// A rectangle of the source frame, in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rect {
    /// Left column.
    pub x: usize,
    /// Top row.
    pub y: usize,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
}

/// Precomputed taps of a 1-D resampling: for output index `i`, `weights[i]` applies to source
/// samples `start[i]..start[i] + weights[i].len()`.
#[derive(Clone, Debug)]
struct Taps {
    start: Vec<usize>,
    weights: Vec<Vec<f32>>,
}

impl Taps {
    fn new(src: usize, dst: usize) -> Taps {
        let scale = src as f64 / dst as f64;
        let support = scale.max(1.0); // filter radius in source pixels
        let mut start = Vec::with_capacity(dst);
        let mut weights = Vec::with_capacity(dst);
        for i in 0..dst {
            let center = (i as f64 + 0.5) * scale;
            let lo = ((center - support).floor().max(0.0)) as usize;
            let hi = ((center + support).ceil() as usize).min(src);
            let mut w: Vec<f64> = (lo..hi)
                .map(|j| {
                    let d = ((j as f64 + 0.5) - center).abs() / support;
                    (1.0 - d).max(0.0)
                })
                .collect();
            let sum: f64 = w.iter().sum();
            if sum > 0.0 {
                w.iter_mut().for_each(|v| *v /= sum);
            }
            start.push(lo);
            weights.push(w.into_iter().map(|v| v as f32).collect());
        }
        Taps { start, weights }
    }
}

/// Step 1: crop and antialiased resize of grey frames of one source size to pixel scale.
#[derive(Clone, Debug)]
pub struct Resize {
    src_width: usize,
    src_height: usize,
    crop: Rect,
    width: usize,
    height: usize,
    columns: Taps,
    rows: Taps,
    /// Horizontal pass result, `[crop.height, width]`.
    scratch: Vec<f32>,
}

impl Resize {
    /// Plans resizing `src_width x src_height` frames to `width x height`, reading only `crop`
    /// of each frame (the whole frame when `None`).
    pub fn new(
        src_width: usize,
        src_height: usize,
        crop: Option<Rect>,
        width: usize,
        height: usize,
    ) -> Result<Self> {
        ensure!(
            src_width > 0 && src_height > 0,
            "source frame size {src_width}x{src_height} is empty"
        );
        ensure!(
            width > 0 && height > 0,
            "network input size {width}x{height} is empty"
        );
        let crop = crop.unwrap_or(Rect {
            x: 0,
            y: 0,
            width: src_width,
            height: src_height,
        });
        ensure!(
            crop.width > 0
                && crop.height > 0
                && crop.x + crop.width <= src_width
                && crop.y + crop.height <= src_height,
            "crop {}x{} at ({}, {}) does not fit in the {src_width}x{src_height} frame",
            crop.width,
            crop.height,
            crop.x,
            crop.y
        );
        Ok(Self {
            src_width,
            src_height,
            crop,
            width,
            height,
            columns: Taps::new(crop.width, width),
            rows: Taps::new(crop.height, height),
            scratch: vec![0.0; crop.height * width],
        })
    }

    /// Number of `f32` values one frame becomes: `height * width`.
    pub fn output_len(&self) -> usize {
        self.width * self.height
    }

    /// Source frame size `(width, height)` this step was planned for.
    pub fn source_size(&self) -> (usize, usize) {
        (self.src_width, self.src_height)
    }

    /// Output size `(width, height)`.
    pub fn output_size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// Writes `frame`, cropped and resized, into `out` (`[height, width]`, pixel scale: each
    /// value the resampled grey level divided by 255, in `[0, 1]`).
    pub fn run(&mut self, frame: &GreyImage, out: &mut [f32]) -> Result<()> {
        ensure!(
            frame.width == self.src_width && frame.height == self.src_height,
            "frame is {}x{}, preprocessing was planned for {}x{}",
            frame.width,
            frame.height,
            self.src_width,
            self.src_height
        );
        ensure!(
            out.len() == self.output_len(),
            "output buffer holds {} values, {} needed",
            out.len(),
            self.output_len()
        );
        let w = self.width;
        // Horizontal pass over the crop's rows: u8 -> f32 in [0, 255].
        for r in 0..self.crop.height {
            let row =
                &frame.pixels[(self.crop.y + r) * frame.width + self.crop.x..][..self.crop.width];
            let dst = &mut self.scratch[r * w..(r + 1) * w];
            for (i, d) in dst.iter_mut().enumerate() {
                let s = self.columns.start[i];
                *d = self.columns.weights[i]
                    .iter()
                    .zip(&row[s..])
                    .map(|(wt, &p)| wt * p as f32)
                    .sum();
            }
        }
        // Vertical pass, then grey levels to pixel scale.
        for (i, dst) in out.chunks_exact_mut(w).enumerate() {
            dst.fill(0.0);
            let s = self.rows.start[i];
            for (k, &wt) in self.rows.weights[i].iter().enumerate() {
                let src = &self.scratch[(s + k) * w..(s + k + 1) * w];
                dst.iter_mut().zip(src).for_each(|(d, &v)| *d += wt * v);
            }
            dst.iter_mut().for_each(|d| *d /= 255.0);
        }
        Ok(())
    }
}

/// Step 2: pixel scale to network input, `(x - mean) / std`, repeated over the channels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalise {
    mean: f32,
    std: f32,
    channels: usize,
}

impl Normalise {
    /// The normalisation of `spec` (its `mean`, `std` and `channels`).
    pub fn new(spec: &InputSpec) -> Result<Self> {
        ensure!(
            spec.std > 0.0 && spec.std.is_finite(),
            "normalisation std {} must be positive",
            spec.std
        );
        ensure!(
            spec.mean.is_finite(),
            "normalisation mean {} must be finite",
            spec.mean
        );
        ensure!(spec.channels > 0, "the network input has no channel");
        Ok(Self {
            mean: spec.mean,
            std: spec.std,
            channels: spec.channels,
        })
    }

    /// Channels the plane is repeated over.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// One value: `(x - mean) / std`.
    #[inline]
    pub fn value(&self, x: f32) -> f32 {
        (x - self.mean) / self.std
    }

    /// Normalises `values` (pixel scale, any shape) in place, without repeating channels.
    pub fn in_place(&self, values: &mut [f32]) {
        values.iter_mut().for_each(|v| *v = self.value(*v));
    }

    /// Writes `plane` (`[height, width]`, pixel scale) normalised into `out` (`[channels,
    /// height, width]`: the plane repeated over channels).
    pub fn run(&self, plane: &[f32], out: &mut [f32]) -> Result<()> {
        ensure!(
            out.len() == plane.len() * self.channels,
            "output buffer holds {} values, {} channels of {} needed",
            out.len(),
            self.channels,
            plane.len()
        );
        let (first, rest) = out.split_at_mut(plane.len());
        first
            .iter_mut()
            .zip(plane)
            .for_each(|(o, &x)| *o = self.value(x));
        for channel in rest.chunks_exact_mut(plane.len()) {
            channel.copy_from_slice(first);
        }
        Ok(())
    }
}

/// Both steps, as the runtime runs them: frames of one source size to network input.
#[derive(Clone, Debug)]
pub struct Preprocessor {
    resize: Resize,
    normalise: Normalise,
    /// The resized plane, pixel scale.
    plane: Vec<f32>,
}

impl Preprocessor {
    /// Plans preprocessing of `src_width x src_height` frames into `spec`'s input, reading only
    /// `crop` of each frame (the whole frame when `None`).
    pub fn new(
        spec: &InputSpec,
        src_width: usize,
        src_height: usize,
        crop: Option<Rect>,
    ) -> Result<Self> {
        let resize = Resize::new(src_width, src_height, crop, spec.width, spec.height)?;
        let normalise = Normalise::new(spec)?;
        Ok(Self {
            plane: vec![0.0; resize.output_len()],
            resize,
            normalise,
        })
    }

    /// Number of `f32` values one frame becomes: `channels * height * width`.
    pub fn output_len(&self) -> usize {
        self.normalise.channels * self.resize.output_len()
    }

    /// Source frame size this preprocessor was planned for.
    pub fn source_size(&self) -> (usize, usize) {
        self.resize.source_size()
    }

    /// Step 1, as this preprocessor runs it.
    pub fn resize(&self) -> &Resize {
        &self.resize
    }

    /// Step 2, as this preprocessor runs it.
    pub fn normalise(&self) -> &Normalise {
        &self.normalise
    }

    /// Writes the network input of `frame` into `out` (`[channels, height, width]`):
    /// [`Resize::run`], then [`Normalise::run`].
    pub fn run(&mut self, frame: &GreyImage, out: &mut [f32]) -> Result<()> {
        ensure!(
            out.len() == self.output_len(),
            "output buffer holds {} values, {} needed",
            out.len(),
            self.output_len()
        );
        self.resize.run(frame, &mut self.plane)?;
        self.normalise.run(&self.plane, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(width: usize, height: usize) -> InputSpec {
        InputSpec::unnormalised(height, width)
    }

    fn run(p: &mut Preprocessor, img: &GreyImage) -> Vec<f32> {
        let mut out = vec![0.0; p.output_len()];
        p.run(img, &mut out).unwrap();
        out
    }

    #[test]
    fn constant_image_stays_constant_at_any_scale() {
        for (sw, sh, dw, dh) in [(350, 350, 128, 128), (64, 48, 128, 100), (17, 9, 5, 3)] {
            let img = GreyImage::from_pixels(sw, sh, vec![200; sw * sh]).unwrap();
            let mut p = Preprocessor::new(&spec(dw, dh), sw, sh, None).unwrap();
            for v in run(&mut p, &img) {
                assert!((v - 200.0 / 255.0).abs() < 1e-5, "{v}");
            }
        }
    }

    #[test]
    fn identity_size_is_exact_and_normalised() {
        let px: Vec<u8> = (0..=255).collect();
        let img = GreyImage::from_pixels(16, 16, px.clone()).unwrap();
        let s = InputSpec {
            mean: 0.5,
            std: 0.25,
            ..spec(16, 16)
        };
        let mut p = Preprocessor::new(&s, 16, 16, None).unwrap();
        for (v, &q) in run(&mut p, &img).iter().zip(&px) {
            assert!((v - (q as f32 / 255.0 - 0.5) / 0.25).abs() < 1e-5);
        }
    }

    #[test]
    fn halving_averages_pixel_pairs_smoothly() {
        // A column ramp halved: outputs lie between neighbours and keep the ramp's mean.
        let img = GreyImage::from_pixels(8, 1, vec![0, 0, 100, 100, 200, 200, 250, 250]).unwrap();
        let mut p = Preprocessor::new(&spec(4, 1), 8, 1, None).unwrap();
        let out: Vec<f32> = run(&mut p, &img).iter().map(|v| v * 255.0).collect();
        assert!(out.windows(2).all(|w| w[0] < w[1]), "{out:?}");
        let mean = out.iter().sum::<f32>() / 4.0;
        assert!((mean - 137.5).abs() < 10.0, "{mean}");
    }

    #[test]
    fn crop_reads_only_the_rectangle() {
        let mut px = vec![0u8; 20 * 10];
        for y in 2..6 {
            for x in 5..9 {
                px[y * 20 + x] = 255;
            }
        }
        let img = GreyImage::from_pixels(20, 10, px).unwrap();
        let crop = Rect {
            x: 5,
            y: 2,
            width: 4,
            height: 4,
        };
        let mut p = Preprocessor::new(&spec(2, 2), 20, 10, Some(crop)).unwrap();
        assert!(run(&mut p, &img).iter().all(|v| (v - 1.0).abs() < 1e-6));
    }

    #[test]
    fn channels_repeat_the_grey_plane() {
        let img = GreyImage::from_pixels(4, 4, (0..16).map(|v| v * 10).collect()).unwrap();
        let s = InputSpec {
            channels: 3,
            ..spec(4, 4)
        };
        let mut p = Preprocessor::new(&s, 4, 4, None).unwrap();
        let out = run(&mut p, &img);
        assert_eq!(out[..16], out[16..32]);
        assert_eq!(out[..16], out[32..]);
    }

    #[test]
    fn the_two_steps_are_the_preprocessor_bit_for_bit() {
        let img =
            GreyImage::from_pixels(37, 23, (0..37 * 23).map(|v| (v * 7 % 256) as u8).collect())
                .unwrap();
        let s = InputSpec {
            mean: 0.15,
            std: 0.21,
            channels: 2,
            ..spec(16, 12)
        };
        let mut pre = Preprocessor::new(&s, 37, 23, None).unwrap();
        let whole = run(&mut pre, &img);
        let mut resize = Resize::new(37, 23, None, 16, 12).unwrap();
        let mut plane = vec![0.0; resize.output_len()];
        resize.run(&img, &mut plane).unwrap();
        assert!(plane.iter().all(|v| (0.0..=1.0).contains(v)));
        let normalise = Normalise::new(&s).unwrap();
        let mut steps = vec![0.0; 2 * plane.len()];
        normalise.run(&plane, &mut steps).unwrap();
        assert_eq!(whole, steps);
        normalise.in_place(&mut plane);
        assert_eq!(plane[..], steps[..plane.len()]);
        assert!(normalise.run(&plane, &mut [0.0; 3]).is_err());
    }

    #[test]
    fn bad_sizes_are_errors_not_panics() {
        assert!(Preprocessor::new(
            &spec(8, 8),
            10,
            10,
            Some(Rect {
                x: 5,
                y: 5,
                width: 6,
                height: 2
            })
        )
        .is_err());
        assert!(Preprocessor::new(&spec(8, 8), 0, 10, None).is_err());
        let mut p = Preprocessor::new(&spec(8, 8), 10, 10, None).unwrap();
        let wrong = GreyImage::new(11, 10);
        let mut out = vec![0.0; 64];
        let err = p.run(&wrong, &mut out).unwrap_err().to_string();
        assert!(err.contains("11x10"), "{err}");
    }
}
