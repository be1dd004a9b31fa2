//! The image attributes of a DICOM data set that decide how its pixel data become grey.

use std::fmt::Display;

use anyhow::{anyhow, bail, ensure, Context, Result};
use dicom_core::{DicomValue, PrimitiveValue, Tag};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;

use super::{Photometric, Props};

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
    pub(super) fn read(obj: &DefaultDicomObject, name: &impl Display) -> Result<Self> {
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
    pub(super) fn frame_samples(&self) -> Option<usize> {
        let pixels = self.rows.checked_mul(self.cols)?;
        match self.photometric {
            Photometric::YbrFull422 => pixels.checked_mul(2),
            _ => pixels.checked_mul(self.samples_per_pixel),
        }
    }
}
