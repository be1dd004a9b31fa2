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

use std::borrow::Cow;
use std::fmt::Display;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use anyhow::{anyhow, bail, ensure, Context, Result};
use dicom_core::{DicomValue, PrimitiveValue, Tag};
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, FileMetaTable, OpenFileOptions};
use dicom_pixeldata::PixelDecoder;
use pleura::image::GreyImage;

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

/// How the pixel data of a transfer syntax is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    /// Uncompressed, in the data set's byte order.
    Native { big_endian: bool },
    /// Uncompressed frames in a fragment sequence.
    EncapsulatedUncompressed,
    /// RLE Lossless: one fragment per frame, decoded to interleaved samples.
    Rle,
    /// A JPEG process: colour is decoded to interleaved RGB.
    Jpeg,
}

/// Transfer syntaxes by UID: name and, when we can read it, how pixel data are stored.
const TRANSFER_SYNTAXES: &[(&str, &str, Option<Encoding>)] = &[
    (
        "1.2.840.10008.1.2",
        "Implicit VR Little Endian",
        Some(Encoding::Native { big_endian: false }),
    ),
    (
        "1.2.840.10008.1.2.1",
        "Explicit VR Little Endian",
        Some(Encoding::Native { big_endian: false }),
    ),
    (
        "1.2.840.10008.1.2.2",
        "Explicit VR Big Endian",
        Some(Encoding::Native { big_endian: true }),
    ),
    (
        "1.2.840.10008.1.2.1.98",
        "Encapsulated Uncompressed Explicit VR Little Endian",
        Some(Encoding::EncapsulatedUncompressed),
    ),
    (
        "1.2.840.10008.1.2.1.99",
        "Deflated Explicit VR Little Endian",
        None,
    ),
    ("1.2.840.10008.1.2.5", "RLE Lossless", Some(Encoding::Rle)),
    (
        "1.2.840.10008.1.2.4.50",
        "JPEG Baseline (Process 1)",
        Some(Encoding::Jpeg),
    ),
    (
        "1.2.840.10008.1.2.4.51",
        "JPEG Extended (Process 2 & 4)",
        Some(Encoding::Jpeg),
    ),
    (
        "1.2.840.10008.1.2.4.57",
        "JPEG Lossless, Non-Hierarchical (Process 14)",
        Some(Encoding::Jpeg),
    ),
    (
        "1.2.840.10008.1.2.4.70",
        "JPEG Lossless, First-Order Prediction",
        Some(Encoding::Jpeg),
    ),
    ("1.2.840.10008.1.2.4.80", "JPEG-LS Lossless", None),
    ("1.2.840.10008.1.2.4.81", "JPEG-LS Near-Lossless", None),
    ("1.2.840.10008.1.2.4.90", "JPEG 2000 (Lossless Only)", None),
    ("1.2.840.10008.1.2.4.91", "JPEG 2000", None),
    (
        "1.2.840.10008.1.2.4.100",
        "MPEG2 Main Profile / Main Level",
        None,
    ),
    (
        "1.2.840.10008.1.2.4.101",
        "MPEG2 Main Profile / High Level",
        None,
    ),
    (
        "1.2.840.10008.1.2.4.102",
        "MPEG-4 AVC/H.264 High Profile / Level 4.1",
        None,
    ),
    (
        "1.2.840.10008.1.2.4.103",
        "MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1",
        None,
    ),
    (
        "1.2.840.10008.1.2.4.107",
        "HEVC/H.265 Main Profile / Level 5.1",
        None,
    ),
    (
        "1.2.840.10008.1.2.4.201",
        "High-Throughput JPEG 2000 (Lossless Only)",
        None,
    ),
    ("1.2.840.10008.1.2.4.203", "High-Throughput JPEG 2000", None),
];

/// Checks the preamble, the `DICM` marker and the file meta group; returns how the pixel data
/// of the file's transfer syntax are stored.
fn check_file_meta(path: &Path) -> Result<Encoding> {
    let name = path.display();
    let file = std::fs::File::open(path).with_context(|| format!("{name}: cannot open"))?;
    let mut reader = std::io::BufReader::new(file);
    let mut head = [0u8; 132];
    let is_dicom = reader.read_exact(&mut head).is_ok() && &head[128..] == b"DICM";
    ensure!(
        is_dicom,
        "{name}: not a DICOM file (no \"DICM\" marker after the 128-byte preamble)"
    );
    let meta = FileMetaTable::from_reader(b"DICM".chain(reader)).with_context(|| {
        format!("{name}: not a DICOM file, or truncated (unreadable file meta information)")
    })?;
    let uid = meta.transfer_syntax();
    match TRANSFER_SYNTAXES.iter().find(|(u, _, _)| *u == uid) {
        Some((_, _, Some(encoding))) => Ok(*encoding),
        Some((_, ts_name, None)) => bail!("{name}: unsupported transfer syntax {uid} ({ts_name})"),
        None => bail!("{name}: unsupported transfer syntax {uid} (unknown)"),
    }
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

/// The element `tag` as a non-empty primitive value, if present.
fn primitive<'a>(
    obj: &'a DefaultDicomObject,
    tag: Tag,
    attr: &str,
    name: &impl Display,
) -> Result<Option<&'a PrimitiveValue>> {
    let elem = obj
        .element_opt(tag)
        .map_err(|e| anyhow!("{name}: cannot read {attr}: {e}"))?;
    match elem.map(|e| e.value()) {
        None | Some(DicomValue::Primitive(PrimitiveValue::Empty)) => Ok(None),
        Some(DicomValue::Primitive(p)) => Ok(Some(p)),
        Some(_) => bail!("{name}: {attr} is not a plain value"),
    }
}

/// An integer attribute, if present.
fn int_attr(
    obj: &DefaultDicomObject,
    tag: Tag,
    attr: &str,
    name: &impl Display,
) -> Result<Option<i64>> {
    primitive(obj, tag, attr, name)?
        .map(|p| {
            p.to_int::<i64>()
                .map_err(|e| anyhow!("{name}: bad {attr}: {e}"))
        })
        .transpose()
}

/// An integer attribute that must be present.
fn required_int(
    obj: &DefaultDicomObject,
    tag: Tag,
    attr: &str,
    name: &impl Display,
) -> Result<i64> {
    int_attr(obj, tag, attr, name)?.with_context(|| format!("{name}: missing {attr}"))
}

/// The first value of a decimal attribute, if present.
fn first_float(
    obj: &DefaultDicomObject,
    tag: Tag,
    attr: &str,
    name: &impl Display,
) -> Result<Option<f64>> {
    let Some(p) = primitive(obj, tag, attr, name)? else {
        return Ok(None);
    };
    let values = p
        .to_multi_float64()
        .map_err(|e| anyhow!("{name}: bad {attr}: {e}"))?;
    Ok(values.first().copied().filter(|v| v.is_finite()))
}

impl Props {
    fn read(obj: &DefaultDicomObject, name: &impl Display) -> Result<Self> {
        let rows = required_int(obj, tags::ROWS, "Rows", name)?;
        let cols = required_int(obj, tags::COLUMNS, "Columns", name)?;
        ensure!(
            (1..=65535).contains(&rows) && (1..=65535).contains(&cols),
            "{name}: bad image size {cols}x{rows}"
        );
        let samples = int_attr(obj, tags::SAMPLES_PER_PIXEL, "SamplesPerPixel", name)?.unwrap_or(1);
        let bits_allocated = required_int(obj, tags::BITS_ALLOCATED, "BitsAllocated", name)?;
        ensure!(
            bits_allocated == 8 || bits_allocated == 16,
            "{name}: unsupported BitsAllocated {bits_allocated} (8 or 16 are read)"
        );
        let bits_stored =
            int_attr(obj, tags::BITS_STORED, "BitsStored", name)?.unwrap_or(bits_allocated);
        ensure!(
            (1..=bits_allocated).contains(&bits_stored),
            "{name}: bad BitsStored {bits_stored} for BitsAllocated {bits_allocated}"
        );
        let signed = int_attr(obj, tags::PIXEL_REPRESENTATION, "PixelRepresentation", name)?
            .unwrap_or(0)
            == 1;
        let planar = int_attr(obj, tags::PLANAR_CONFIGURATION, "PlanarConfiguration", name)?
            .unwrap_or(0)
            == 1;
        let pi = match primitive(
            obj,
            tags::PHOTOMETRIC_INTERPRETATION,
            "PhotometricInterpretation",
            name,
        )? {
            Some(p) => p
                .to_str()
                .trim_matches(|c: char| c.is_whitespace() || c == '\0')
                .to_string(),
            None if samples == 1 => "MONOCHROME2".to_string(),
            None => bail!("{name}: missing PhotometricInterpretation"),
        };
        let (photometric, want_samples) = match pi.as_str() {
            "MONOCHROME1" => (Photometric::Monochrome1, 1),
            "MONOCHROME2" => (Photometric::Monochrome2, 1),
            "RGB" => (Photometric::Rgb, 3),
            "YBR_FULL" => (Photometric::YbrFull, 3),
            "YBR_FULL_422" => (Photometric::YbrFull422, 3),
            other => bail!("{name}: unsupported PhotometricInterpretation {other:?}"),
        };
        ensure!(
            samples == want_samples,
            "{name}: SamplesPerPixel {samples} does not fit PhotometricInterpretation {pi}"
        );
        let frames = int_attr(obj, tags::NUMBER_OF_FRAMES, "NumberOfFrames", name)?.unwrap_or(1);
        ensure!(
            (1..=i64::from(u32::MAX)).contains(&frames),
            "{name}: bad NumberOfFrames {frames}"
        );
        let center = first_float(obj, tags::WINDOW_CENTER, "WindowCenter", name)?;
        let width = first_float(obj, tags::WINDOW_WIDTH, "WindowWidth", name)?;
        let window = center.zip(width).filter(|&(_, w)| w >= 1.0);
        let slope = first_float(obj, tags::RESCALE_SLOPE, "RescaleSlope", name)?.unwrap_or(1.0);
        let intercept =
            first_float(obj, tags::RESCALE_INTERCEPT, "RescaleIntercept", name)?.unwrap_or(0.0);
        Ok(Self {
            rows: rows as usize,
            cols: cols as usize,
            samples_per_pixel: samples as usize,
            bits_allocated: bits_allocated as u16,
            bits_stored: bits_stored as u16,
            signed,
            planar,
            photometric,
            frames: frames as usize,
            window,
            rescale: (slope, intercept),
        })
    }

    /// Stored samples per frame (YBR_FULL_422 stores two samples per pixel).
    fn frame_samples(&self) -> Option<usize> {
        let pixels = self.rows.checked_mul(self.cols)?;
        match self.photometric {
            Photometric::YbrFull422 => pixels.checked_mul(2),
            _ => pixels.checked_mul(self.samples_per_pixel),
        }
    }
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

/// 16-bit words from bytes in the given order.
fn words(bytes: &[u8], big_endian: bool) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|b| {
            if big_endian {
                u16::from_be_bytes([b[0], b[1]])
            } else {
                u16::from_le_bytes([b[0], b[1]])
            }
        })
        .collect()
}

/// The clip's samples, decoded when compressed, and the image attributes adjusted to the
/// decoded layout.
fn pixel_samples<'a>(
    obj: &'a DefaultDicomObject,
    props: &Props,
    encoding: Encoding,
    name: &impl Display,
) -> Result<(Props, Samples<'a>)> {
    let elem = obj
        .element_opt(tags::PIXEL_DATA)
        .map_err(|e| anyhow!("{name}: cannot read PixelData: {e}"))?
        .with_context(|| format!("{name}: missing PixelData"))?;
    let mut props = props.clone();
    let samples = match (elem.value(), encoding) {
        (DicomValue::Primitive(p), Encoding::Native { big_endian }) => {
            match (props.bits_allocated, p) {
                // 8-bit samples read as words (OW) are byte pairs in the file's order.
                (8, PrimitiveValue::U16(v)) => Samples::U8(Cow::Owned(
                    v.iter()
                        .flat_map(|w| {
                            if big_endian {
                                w.to_be_bytes()
                            } else {
                                w.to_le_bytes()
                            }
                        })
                        .collect(),
                )),
                (8, p) => Samples::U8(p.to_bytes()),
                (_, PrimitiveValue::U16(v)) => Samples::U16(Cow::Borrowed(&v[..])),
                (_, PrimitiveValue::I16(v)) => {
                    Samples::U16(Cow::Owned(v.iter().map(|&x| x as u16).collect()))
                }
                (_, p) => Samples::U16(Cow::Owned(words(&p.to_bytes(), big_endian))),
            }
        }
        (DicomValue::Primitive(_), _) | (DicomValue::PixelSequence(_), Encoding::Native { .. }) => {
            bail!("{name}: PixelData encoding does not match the transfer syntax")
        }
        (DicomValue::PixelSequence(seq), _) => {
            let (table, fragments) = (seq.offset_table(), seq.fragments().len());
            let frames = props.frames;
            ensure!(fragments > 0, "{name}: PixelData has no fragments");
            ensure!(
                table.is_empty() || table.len() == frames,
                "{name}: frame count mismatch: NumberOfFrames is {frames} but the offset table \
                 lists {} frame(s)",
                table.len()
            );
            // A frame may span several fragments, but no fragment holds two frames.
            let one_per_frame =
                matches!(encoding, Encoding::Rle | Encoding::EncapsulatedUncompressed);
            ensure!(
                fragments >= frames && (!one_per_frame || fragments == frames),
                "{name}: frame count mismatch: NumberOfFrames is {frames} but PixelData has \
                 {fragments} fragment(s)"
            );
            let decoded = catch_unwind(AssertUnwindSafe(|| {
                obj.decode_pixel_data().map(|d| d.into_data())
            }))
            .map_err(|_| anyhow!("{name}: pixel data decoder failed (corrupt data)"))?
            .with_context(|| format!("{name}: cannot decode pixel data"))?;
            match encoding {
                Encoding::Jpeg => {
                    // Decoded colour is interleaved RGB.
                    if props.samples_per_pixel == 3 {
                        props.photometric = Photometric::Rgb;
                    }
                    props.planar = false;
                }
                Encoding::Rle => {
                    // Decoded samples are interleaved, in the stored colour space.
                    if props.photometric == Photometric::YbrFull422 {
                        props.photometric = Photometric::YbrFull;
                    }
                    props.planar = false;
                }
                _ => {}
            }
            if props.bits_allocated == 8 {
                Samples::U8(Cow::Owned(decoded))
            } else if encoding == Encoding::Jpeg {
                let words = decoded
                    .chunks_exact(2)
                    .map(|b| u16::from_ne_bytes([b[0], b[1]]))
                    .collect();
                Samples::U16(Cow::Owned(words))
            } else {
                Samples::U16(Cow::Owned(words(&decoded, false)))
            }
        }
        (DicomValue::Sequence(_), _) => bail!("{name}: PixelData is an item sequence"),
    };
    ensure!(
        props.photometric != Photometric::YbrFull422 || props.cols.is_multiple_of(2),
        "{name}: YBR_FULL_422 needs an even number of columns, got {}",
        props.cols
    );
    let frame_samples = props
        .frame_samples()
        .with_context(|| format!("{name}: image too large"))?;
    let needed = frame_samples
        .checked_mul(props.frames)
        .with_context(|| format!("{name}: image too large"))?;
    let held = samples.len() / frame_samples;
    ensure!(
        samples.len() >= needed && held == props.frames,
        "{name}: frame count mismatch: NumberOfFrames is {} but PixelData holds {held} whole \
         frame(s) of {}x{} ({} samples, {needed} needed)",
        props.frames,
        props.cols,
        props.rows,
        samples.len()
    );
    Ok((props, samples))
}

/// BT.601 luma of 8-bit RGB, rounded.
fn luma8(r: u8, g: u8, b: u8) -> u8 {
    ((299 * u32::from(r) + 587 * u32::from(g) + 114 * u32::from(b) + 500) / 1000) as u8
}

/// Where the three samples of pixel `k` lie in a frame of `n` pixels.
fn colour_index(k: usize, n: usize, planar: bool) -> [usize; 3] {
    if planar {
        [k, n + k, 2 * n + k]
    } else {
        [3 * k, 3 * k + 1, 3 * k + 2]
    }
}

/// Converts the clip to grey frames; `samples` holds exactly `props.frames` frames (or more
/// samples after them, which are ignored).
fn to_grey(props: &Props, samples: &Samples) -> Vec<Vec<u8>> {
    let n = props.rows * props.cols;
    let frame_samples = props.frame_samples().unwrap_or(0);
    let invert = props.photometric == Photometric::Monochrome1;
    let mono = matches!(
        props.photometric,
        Photometric::Monochrome1 | Photometric::Monochrome2
    );
    match samples {
        Samples::U8(s) if !props.signed && props.bits_stored == 8 => (0..props.frames)
            .map(|f| {
                let fs = &s[f * frame_samples..(f + 1) * frame_samples];
                (0..n)
                    .map(|k| {
                        let v = match props.photometric {
                            Photometric::Monochrome1 | Photometric::Monochrome2 => fs[k],
                            Photometric::Rgb => {
                                let [r, g, b] = colour_index(k, n, props.planar);
                                luma8(fs[r], fs[g], fs[b])
                            }
                            Photometric::YbrFull => fs[colour_index(k, n, props.planar)[0]],
                            Photometric::YbrFull422 => fs[4 * (k / 2) + k % 2],
                        };
                        if invert {
                            255 - v
                        } else {
                            v
                        }
                    })
                    .collect()
            })
            .collect(),
        _ => {
            // Wide path: values as numbers, then one mapping for the whole clip.
            let mask = if props.bits_stored >= 32 {
                u32::MAX
            } else {
                (1u32 << props.bits_stored) - 1
            };
            let sign_bit = 1u32 << (props.bits_stored - 1);
            let raw = |i: usize| -> f64 {
                let v = match samples {
                    Samples::U8(s) => u32::from(s[i]),
                    Samples::U16(s) => u32::from(s[i]),
                } & mask;
                if props.signed && v & sign_bit != 0 {
                    f64::from(v) - f64::from(mask) - 1.0
                } else {
                    f64::from(v)
                }
            };
            let (slope, intercept) = props.rescale;
            let values: Vec<f32> = (0..props.frames)
                .flat_map(|f| {
                    let base = f * frame_samples;
                    (0..n).map(move |k| {
                        let v = match props.photometric {
                            Photometric::Monochrome1 | Photometric::Monochrome2 => {
                                raw(base + k) * slope + intercept
                            }
                            Photometric::Rgb => {
                                let [r, g, b] = colour_index(k, n, props.planar);
                                0.299 * raw(base + r)
                                    + 0.587 * raw(base + g)
                                    + 0.114 * raw(base + b)
                            }
                            Photometric::YbrFull => raw(base + colour_index(k, n, props.planar)[0]),
                            Photometric::YbrFull422 => raw(base + 4 * (k / 2) + k % 2),
                        };
                        v as f32
                    })
                })
                .collect();
            let map: Box<dyn Fn(f32) -> u8> = match props.window {
                Some((c, w)) if mono => Box::new(move |v| window_linear(f64::from(v), c, w)),
                _ => {
                    let (lo, hi) = values
                        .iter()
                        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                            (lo.min(v), hi.max(v))
                        });
                    let (lo, hi) = (f64::from(lo), f64::from(hi));
                    Box::new(move |v| {
                        if hi > lo {
                            ((f64::from(v) - lo) / (hi - lo) * 255.0)
                                .round()
                                .clamp(0.0, 255.0) as u8
                        } else {
                            0
                        }
                    })
                }
            };
            values
                .chunks(n.max(1))
                .map(|frame| {
                    frame
                        .iter()
                        .map(|&v| {
                            let g = map(v);
                            if invert {
                                255 - g
                            } else {
                                g
                            }
                        })
                        .collect()
                })
                .collect()
        }
    }
}

/// The DICOM linear VOI function (PS3.3 C.11.2.1.2.1) to 0..=255, rounded.
fn window_linear(x: f64, center: f64, width: f64) -> u8 {
    let lower = center - 0.5 - (width - 1.0) / 2.0;
    let upper = center - 0.5 + (width - 1.0) / 2.0;
    if x <= lower {
        0
    } else if x > upper || width <= 1.0 {
        255
    } else {
        (((x - (center - 0.5)) / (width - 1.0) + 0.5) * 255.0)
            .round()
            .clamp(0.0, 255.0) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::value::PixelFragmentSequence;
    use dicom_core::{DataElement, VR};
    use dicom_object::mem::InMemElement;
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
    use std::path::PathBuf;

    const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
    const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
    const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";
    const RLE: &str = "1.2.840.10008.1.2.5";
    const JPEG_2000: &str = "1.2.840.10008.1.2.4.90";

    /// A US image data set without PixelData.
    fn image(rows: u16, cols: u16, samples: u16, bits: u16, pi: &str) -> InMemDicomObject {
        InMemDicomObject::from_element_iter([
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.3.1"),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, "2.25.31415926535"),
            DataElement::new(tags::MODALITY, VR::CS, "US"),
            DataElement::new(
                tags::SAMPLES_PER_PIXEL,
                VR::US,
                PrimitiveValue::from(samples),
            ),
            DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, pi),
            DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(rows)),
            DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(cols)),
            DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(bits)),
            DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(bits)),
            DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(bits - 1)),
            DataElement::new(
                tags::PIXEL_REPRESENTATION,
                VR::US,
                PrimitiveValue::from(0u16),
            ),
        ])
    }

    fn frames_elem(n: usize) -> InMemElement {
        DataElement::new(tags::NUMBER_OF_FRAMES, VR::IS, n.to_string())
    }

    fn pixels8(data: Vec<u8>) -> InMemElement {
        DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::from(data))
    }

    fn pixels16(data: Vec<u16>) -> InMemElement {
        DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(data.into()))
    }

    /// Writes `obj` as a DICOM file `file` in `dir` with transfer syntax `ts`.
    fn write(dir: &Path, file: &str, obj: InMemDicomObject, ts: &str) -> PathBuf {
        let path = dir.join(file);
        obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(ts))
            .unwrap()
            .write_to_file(&path)
            .unwrap();
        path
    }

    fn err_of(path: &Path) -> String {
        format!("{:#}", read_frames(path).unwrap_err())
    }

    #[test]
    fn single_frame_monochrome2_8bit() {
        let dir = tempfile::tempdir().unwrap();
        let mut obj = image(2, 3, 1, 8, "MONOCHROME2");
        let px: Vec<u8> = vec![0, 40, 80, 120, 160, 255];
        obj.put(pixels8(px.clone()));
        let path = write(dir.path(), "single.dcm", obj, EXPLICIT_LE);
        let frames = read_frames(&path).unwrap();
        assert_eq!(frames, vec![GreyImage::from_pixels(3, 2, px).unwrap()]);
    }

    #[test]
    fn multi_frame_monochrome2_8bit_keeps_every_frame_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (w, h) = (4, 3);
        let expected: Vec<Vec<u8>> = (0..3)
            .map(|f| (0..w * h).map(|k| (f * 50 + k * 7 + f * k) as u8).collect())
            .collect();
        let mut obj = image(h as u16, w as u16, 1, 8, "MONOCHROME2");
        obj.put(frames_elem(3));
        obj.put(pixels8(expected.concat()));
        let path = write(dir.path(), "multi.dcm", obj, EXPLICIT_LE);
        let frames = read_frames(&path).unwrap();
        assert_eq!(frames.len(), 3);
        for (frame, want) in frames.iter().zip(&expected) {
            assert_eq!((frame.width, frame.height), (w, h));
            assert_eq!(&frame.pixels, want);
        }
        assert_ne!(frames[0], frames[1]);
    }

    /// Two frames of 2x2 RGB pixels and their BT.601 luma.
    fn rgb_clip() -> (Vec<[u8; 3]>, Vec<u8>) {
        let rgb = vec![
            [255, 0, 0],
            [0, 255, 0],
            [0, 0, 255],
            [255, 255, 255],
            [10, 20, 30],
            [200, 100, 50],
            [0, 0, 0],
            [128, 128, 128],
        ];
        // 76.245, 149.685, 29.07, 255, 18.15, 124.2, 0, 128
        let luma = vec![76, 150, 29, 255, 18, 124, 0, 128];
        (rgb, luma)
    }

    #[test]
    fn rgb_8bit_multi_frame_becomes_bt601_luma() {
        let dir = tempfile::tempdir().unwrap();
        let (rgb, luma) = rgb_clip();
        let mut obj = image(2, 2, 3, 8, "RGB");
        obj.put(frames_elem(2));
        obj.put(DataElement::new(
            tags::PLANAR_CONFIGURATION,
            VR::US,
            PrimitiveValue::from(0u16),
        ));
        obj.put(pixels8(rgb.concat()));
        let path = write(dir.path(), "rgb.dcm", obj, EXPLICIT_LE);
        let frames = read_frames(&path).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].pixels, luma[..4]);
        assert_eq!(frames[1].pixels, luma[4..]);
    }

    #[test]
    fn rgb_planar_configuration_1_is_read_per_plane() {
        let dir = tempfile::tempdir().unwrap();
        let (rgb, luma) = rgb_clip();
        let planar: Vec<u8> = rgb
            .chunks(4)
            .flat_map(|frame| (0..3).flat_map(move |c| frame.iter().map(move |px| px[c])))
            .collect();
        let mut obj = image(2, 2, 3, 8, "RGB");
        obj.put(frames_elem(2));
        obj.put(DataElement::new(
            tags::PLANAR_CONFIGURATION,
            VR::US,
            PrimitiveValue::from(1u16),
        ));
        obj.put(pixels8(planar));
        let path = write(dir.path(), "planar.dcm", obj, EXPLICIT_LE);
        let frames = read_frames(&path).unwrap();
        assert_eq!(frames[0].pixels, luma[..4]);
        assert_eq!(frames[1].pixels, luma[4..]);
    }

    #[test]
    fn ybr_full_and_ybr_full_422_use_luma_y() {
        let dir = tempfile::tempdir().unwrap();
        let ys = [10u8, 20, 30, 40];
        let mut full = image(1, 4, 3, 8, "YBR_FULL");
        full.put(pixels8(ys.iter().flat_map(|&y| [y, 90, 200]).collect()));
        let path = write(dir.path(), "ybr.dcm", full, EXPLICIT_LE);
        assert_eq!(read_frames(&path).unwrap()[0].pixels, ys);

        // 4:2:2 stores each pixel pair as Y1 Y2 Cb Cr.
        let mut sub = image(1, 4, 3, 8, "YBR_FULL_422");
        sub.put(pixels8(vec![10, 20, 90, 200, 30, 40, 91, 201]));
        let path = write(dir.path(), "ybr422.dcm", sub, EXPLICIT_LE);
        assert_eq!(read_frames(&path).unwrap()[0].pixels, ys);
    }

    #[test]
    fn sixteen_bit_uses_window_center_and_width() {
        let dir = tempfile::tempdir().unwrap();
        let mut obj = image(2, 3, 1, 16, "MONOCHROME2");
        obj.put(DataElement::new(tags::WINDOW_CENTER, VR::DS, "1000\\40"));
        obj.put(DataElement::new(tags::WINDOW_WIDTH, VR::DS, "201\\80"));
        obj.put(pixels16(vec![0, 899, 1000, 1099, 1100, 60000]));
        let path = write(dir.path(), "win.dcm", obj, EXPLICIT_LE);
        let frames = read_frames(&path).unwrap();
        // Linear VOI: 899.5 and below -> 0, above 1099.5 -> 255.
        assert_eq!(frames[0].pixels, [0, 0, 128, 254, 255, 255]);
    }

    #[test]
    fn implicit_le_and_explicit_be_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        for (i, ts) in [IMPLICIT_LE, EXPLICIT_BE].into_iter().enumerate() {
            // 8-bit, odd length (3 frames of 3x1 = 9 bytes, padded in the file).
            let px: Vec<u8> = (0..9).map(|k| k * 25 + 3).collect();
            let mut obj = image(1, 3, 1, 8, "MONOCHROME2");
            obj.put(frames_elem(3));
            obj.put(pixels8(px.clone()));
            let path = write(dir.path(), &format!("ts{i}_8.dcm"), obj, ts);
            let got: Vec<u8> = read_frames(&path)
                .unwrap()
                .into_iter()
                .flat_map(|f| f.pixels)
                .collect();
            assert_eq!(got, px, "{ts}");

            let mut obj = image(1, 3, 1, 16, "MONOCHROME2");
            obj.put(DataElement::new(tags::WINDOW_CENTER, VR::DS, "1000"));
            obj.put(DataElement::new(tags::WINDOW_WIDTH, VR::DS, "201"));
            obj.put(pixels16(vec![899, 1000, 1100]));
            let path = write(dir.path(), &format!("ts{i}_16.dcm"), obj, ts);
            assert_eq!(read_frames(&path).unwrap()[0].pixels, [0, 128, 255], "{ts}");
        }
    }

    #[test]
    fn sixteen_bit_without_window_stretches_the_whole_clip() {
        let dir = tempfile::tempdir().unwrap();
        let mut obj = image(1, 2, 1, 16, "MONOCHROME2");
        obj.put(frames_elem(2));
        obj.put(pixels16(vec![100, 600, 1100, 350]));
        let path = write(dir.path(), "minmax.dcm", obj, EXPLICIT_LE);
        let frames = read_frames(&path).unwrap();
        assert_eq!(frames[0].pixels, [0, 128]);
        assert_eq!(frames[1].pixels, [255, 64]);
    }

    #[test]
    fn monochrome1_is_inverted() {
        let dir = tempfile::tempdir().unwrap();
        let mut obj = image(1, 3, 1, 8, "MONOCHROME1");
        obj.put(pixels8(vec![0, 10, 255]));
        let path = write(dir.path(), "mono1.dcm", obj, EXPLICIT_LE);
        assert_eq!(read_frames(&path).unwrap()[0].pixels, [255, 245, 0]);

        let mut obj = image(1, 3, 1, 16, "MONOCHROME1");
        obj.put(pixels16(vec![0, 500, 1000]));
        let path = write(dir.path(), "mono1_16.dcm", obj, EXPLICIT_LE);
        assert_eq!(read_frames(&path).unwrap()[0].pixels, [255, 127, 0]);
    }

    /// One RLE Lossless fragment holding 8-bit grey `pixels` as literal runs.
    fn rle_fragment(pixels: &[u8]) -> Vec<u8> {
        let mut header = vec![0u8; 64];
        header[..4].copy_from_slice(&1u32.to_le_bytes());
        header[4..8].copy_from_slice(&64u32.to_le_bytes());
        for run in pixels.chunks(128) {
            header.push((run.len() - 1) as u8);
            header.extend_from_slice(run);
        }
        if header.len() % 2 == 1 {
            header.push(0);
        }
        header
    }

    #[test]
    fn rle_multi_frame_is_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let expected: Vec<Vec<u8>> = (0..2u8)
            .map(|f| (0..8u8).map(|k| 30 * f + 11 * k).collect())
            .collect();
        let mut obj = image(2, 4, 1, 8, "MONOCHROME2");
        obj.put(frames_elem(2));
        let seq = PixelFragmentSequence::new_fragments(
            expected.iter().map(|f| rle_fragment(f)).collect::<Vec<_>>(),
        );
        obj.put(DataElement::new(tags::PIXEL_DATA, VR::OB, seq));
        let path = write(dir.path(), "rle.dcm", obj, RLE);
        let frames = read_frames(&path).unwrap();
        let got: Vec<Vec<u8>> = frames.into_iter().map(|f| f.pixels).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn jpeg_baseline_colour_is_decoded_to_luma() {
        use dicom_pixeldata::Transcode;
        use dicom_transfer_syntax_registry::entries::JPEG_BASELINE;
        let dir = tempfile::tempdir().unwrap();
        // Two 16x16 frames of flat colour, which baseline JPEG keeps almost exactly.
        let colours = [[200u8, 100, 50], [20, 40, 220]];
        let mut obj = image(16, 16, 3, 8, "RGB");
        obj.put(frames_elem(2));
        obj.put(DataElement::new(
            tags::PLANAR_CONFIGURATION,
            VR::US,
            PrimitiveValue::from(0u16),
        ));
        obj.put(pixels8(
            colours.iter().flat_map(|c| c.repeat(256)).collect(),
        ));
        let mut file = obj
            .with_meta(FileMetaTableBuilder::new().transfer_syntax(EXPLICIT_LE))
            .unwrap();
        file.transcode(&JPEG_BASELINE.erased()).unwrap();
        let path = dir.path().join("jpeg.dcm");
        file.write_to_file(&path).unwrap();
        let frames = read_frames(&path).unwrap();
        assert_eq!(frames.len(), 2);
        for (frame, c) in frames.iter().zip(colours) {
            let want = i32::from(luma8(c[0], c[1], c[2]));
            for &v in &frame.pixels {
                assert!((i32::from(v) - want).abs() <= 3, "{v} vs {want}");
            }
        }
    }

    #[test]
    fn truncated_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut obj = image(16, 16, 1, 8, "MONOCHROME2");
        obj.put(frames_elem(3));
        obj.put(pixels8(vec![7; 3 * 256]));
        let path = write(dir.path(), "cut.dcm", obj, EXPLICIT_LE);
        let bytes = std::fs::read(&path).unwrap();
        for len in [bytes.len() - 300, bytes.len() / 2, 200, 140, 100] {
            std::fs::write(&path, &bytes[..len]).unwrap();
            let err = err_of(&path);
            assert!(err.contains("cut.dcm"), "{len}: {err}");
        }
    }

    #[test]
    fn non_dicom_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for (file, bytes) in [
            ("short.txt", b"hello".to_vec()),
            ("long.png", vec![0x89; 4096]),
        ] {
            let path = dir.path().join(file);
            std::fs::write(&path, bytes).unwrap();
            let err = err_of(&path);
            assert!(err.contains(file), "{err}");
            assert!(err.contains("not a DICOM file"), "{err}");
        }
        let err = err_of(&dir.path().join("absent.dcm"));
        assert!(err.contains("absent.dcm"), "{err}");
    }

    #[test]
    fn frame_count_mismatch_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for (declared, file) in [(4, "four.dcm"), (2, "two.dcm")] {
            let mut obj = image(2, 2, 1, 8, "MONOCHROME2");
            obj.put(frames_elem(declared));
            obj.put(pixels8(vec![1; 12]));
            let path = write(dir.path(), file, obj, EXPLICIT_LE);
            let err = err_of(&path);
            assert!(err.contains(file), "{err}");
            assert!(err.contains("frame count mismatch"), "{err}");
        }
        let mut obj = image(2, 4, 1, 8, "MONOCHROME2");
        obj.put(frames_elem(3));
        let seq = PixelFragmentSequence::new_fragments(vec![rle_fragment(&[5; 8]); 2]);
        obj.put(DataElement::new(tags::PIXEL_DATA, VR::OB, seq));
        let path = write(dir.path(), "rle3.dcm", obj, RLE);
        let err = err_of(&path);
        assert!(
            err.contains("rle3.dcm") && err.contains("frame count mismatch"),
            "{err}"
        );
    }

    #[test]
    fn missing_pixel_data_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let obj = image(2, 2, 1, 8, "MONOCHROME2");
        let path = write(dir.path(), "empty.dcm", obj, EXPLICIT_LE);
        let err = err_of(&path);
        assert!(
            err.contains("empty.dcm") && err.contains("missing PixelData"),
            "{err}"
        );
    }

    #[test]
    fn unsupported_transfer_syntax_names_its_uid() {
        let dir = tempfile::tempdir().unwrap();
        let mut obj = image(2, 2, 1, 8, "MONOCHROME2");
        let seq = PixelFragmentSequence::new_fragments(vec![vec![0xFF, 0x4F, 0xFF, 0x51]]);
        obj.put(DataElement::new(tags::PIXEL_DATA, VR::OB, seq));
        let path = write(dir.path(), "j2k.dcm", obj, JPEG_2000);
        let err = err_of(&path);
        assert!(err.contains("j2k.dcm") && err.contains(JPEG_2000), "{err}");
    }

    #[test]
    fn window_linear_matches_the_dicom_formula() {
        assert_eq!(window_linear(0.0, 2048.0, 4096.0), 0);
        assert_eq!(window_linear(4095.0, 2048.0, 4096.0), 255);
        assert_eq!(window_linear(2048.0, 2048.0, 4096.0), 128);
        assert_eq!(window_linear(10.0, 10.0, 1.0), 255);
        assert_eq!(window_linear(9.0, 10.0, 1.0), 0);
    }
}
