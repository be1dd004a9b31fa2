//! DICOM ultrasound files, single- and multi-frame, read into 8-bit grey frames.
//!
//! Native (uncompressed) pixel data is read as stored; RLE Lossless and the JPEG family
//! (baseline, extended, lossless) are decoded in pure Rust by `dicom-pixeldata`. Other
//! compressions (JPEG-LS, JPEG 2000, MPEG, H.264, ...) are refused with their UID.
//!
//! Conversion to grey:
//! - MONOCHROME2 as is, MONOCHROME1 inverted (`255 - v`);
//! - RGB to ITU-R BT.601 luma (`0.299 R + 0.587 G + 0.114 B`, rounded), either planar
//!   configuration;
//! - YBR_FULL and YBR_FULL_422 to their luma Y;
//! - 8-bit unsigned samples are kept; 16-bit (or signed) samples go through the modality
//!   rescale and then the first VOI window (WindowCenter / WindowWidth, DICOM linear
//!   function) when the file has one, else through the minimum and maximum of the whole clip,
//!   so that all frames of a clip share one grey scale.

// `decode`: transfer syntaxes and the pixel data as stored or decoded; `attrs`: the image
// attributes (`Props`); `pixels`: samples to 8-bit grey (photometric conversion, windowing).
mod attrs;
mod decode;
mod pixels;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use dicom_object::OpenFileOptions;
use pleura::image::GreyImage;

use self::decode::{check_file_meta, pixel_samples};
use self::pixels::to_grey;

/// Every frame of the DICOM file at `path` as 8-bit grey images.
///
/// Frames come in file order; a file without NumberOfFrames has one frame. Errors name the
/// file and the problem: not a DICOM file, corrupt or truncated data, missing PixelData or
/// image attributes, an unsupported transfer syntax (with its UID) or photometric
/// interpretation, or a NumberOfFrames that does not match the pixel data.
pub fn read_frames(path: &Path) -> Result<Vec<GreyImage>> {
    let name = path.display();
    let encoding = check_file_meta(path)?;
    let obj = catch_unwind(AssertUnwindSafe(|| OpenFileOptions::new().open_file(path)))
        .map_err(|_| anyhow!("{name}: DICOM parser failed (corrupt file)"))?
        .with_context(|| format!("{name}: corrupt or truncated DICOM data"))?;
    let props = Props::read(&obj, &name)?;
    let (props, samples) = pixel_samples(&obj, &props, encoding, &name)?;
    to_grey(&props, &samples)
        .into_iter()
        .map(|frame| {
            GreyImage::from_pixels(props.cols, props.rows, frame)
                .with_context(|| format!("{name}: frame of wrong size"))
        })
        .collect()
}

/// Photometric interpretations we read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Photometric {
    Monochrome1,
    Monochrome2,
    Rgb,
    YbrFull,
    /// Native YBR_FULL_422: each horizontal pixel pair stored as `Y1 Y2 Cb Cr`.
    YbrFull422,
}

/// The image attributes that decide how pixel data become grey.
#[derive(Clone, Debug)]
struct Props {
    rows: usize,
    cols: usize,
    samples_per_pixel: usize,
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
    /// Planar configuration 1: all R, then all G, then all B of a frame.
    planar: bool,
    photometric: Photometric,
    frames: usize,
    /// First (center, width) pair, when present and usable (width >= 1).
    window: Option<(f64, f64)>,
    /// Modality rescale (slope, intercept).
    rescale: (f64, f64),
}

/// Raw samples of the whole clip, as stored (8-bit bytes or 16-bit words).
enum Samples<'a> {
    U8(Cow<'a, [u8]>),
    U16(Cow<'a, [u16]>),
}

impl Samples<'_> {
    fn len(&self) -> usize {
        match self {
            Samples::U8(s) => s.len(),
            Samples::U16(s) => s.len(),
        }
    }
}
