//! Transfer syntaxes and pixel data: native (uncompressed) samples are read as stored, RLE
//! Lossless, the JPEG family and encapsulated uncompressed frames are decoded by
//! `dicom-pixeldata`, anything else is refused with its UID.

use std::borrow::Cow;
use std::fmt::Display;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use anyhow::{anyhow, bail, ensure, Context, Result};
use dicom_core::{DicomValue, PrimitiveValue};
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, FileMetaTable};
use dicom_pixeldata::PixelDecoder;

use super::{Photometric, Props, Samples};

/// How the pixel data of a transfer syntax is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Encoding {
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
pub(super) fn check_file_meta(path: &Path) -> Result<Encoding> {
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
pub(super) fn pixel_samples<'a>(
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
