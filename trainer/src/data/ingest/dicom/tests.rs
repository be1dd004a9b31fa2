//! Tests of the DICOM reader: files written with `dicom-object` in every supported layout
//! (8 / 16 bits, grey / RGB / YBR, native / RLE / JPEG), and the errors.

use super::pixels::{luma8, window_linear};
use super::*;
use dicom_core::value::PixelFragmentSequence;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
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
