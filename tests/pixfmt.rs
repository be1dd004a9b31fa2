//! Golden tests of `pleura::capture::pixfmt` against ffmpeg.
//!
//! The fixtures in `tests/data/pixfmt/` come from `tools/make_pixfmt_fixtures.sh`: one 75x48
//! (odd width) ultrasound-like frame with a small colour-Doppler patch, turned by ffmpeg into a
//! raw frame per capture format (`<name>.raw`), and each raw frame converted by ffmpeg to `gray`
//! (`<name>.gray`, the expected output). ffmpeg treats `gray` as full range and the YUV formats
//! as limited (tv) range, so its YUV -> gray expands Y 16..235 to 0..255: our
//! `YuvRange::Limited`. RGB -> gray is BT.601 luma at full range. `mjpeg.jpg` is a 4:2:2 JPEG
//! with the standard Huffman tables; `mjpeg_nodht.jpg` is the same without its DHT segment.

use std::path::PathBuf;
use std::time::Instant;

use pleura::capture::jpeg_dht::STANDARD_DHT;
use pleura::capture::pixfmt::{to_grey, PixelFormat, RawLayout, YuvRange};
use pleura::image::GreyImage;

const W: usize = 75;
const H: usize = 48;

/// One fixture: file stem, format and the stride ffmpeg wrote (ffmpeg pads odd-width packed
/// 4:2:2 lines to whole macropixels: 4 * ceil(75 / 2) = 152 bytes), and the file size.
struct Fixture {
    name: &'static str,
    format: PixelFormat,
    stride: usize,
    bytes: usize,
}

const FIXTURES: [Fixture; 7] = [
    Fixture {
        name: "yuyv",
        format: PixelFormat::Yuyv,
        stride: 152,
        bytes: 152 * 48,
    },
    Fixture {
        name: "uyvy",
        format: PixelFormat::Uyvy,
        stride: 152,
        bytes: 152 * 48,
    },
    // NV12: Y 75x48, then 24 lines of 76 bytes of CbCr (38 pairs).
    Fixture {
        name: "nv12",
        format: PixelFormat::Nv12,
        stride: 75,
        bytes: 75 * 48 + 76 * 24,
    },
    // I420: Y 75x48, then U and V, each 38x24.
    Fixture {
        name: "i420",
        format: PixelFormat::I420,
        stride: 75,
        bytes: 75 * 48 + 2 * 38 * 24,
    },
    Fixture {
        name: "grey",
        format: PixelFormat::Grey,
        stride: 75,
        bytes: 75 * 48,
    },
    Fixture {
        name: "rgb24",
        format: PixelFormat::Rgb24,
        stride: 225,
        bytes: 225 * 48,
    },
    Fixture {
        name: "bgr24",
        format: PixelFormat::Bgr24,
        stride: 225,
        bytes: 225 * 48,
    },
];

fn data(name: &str) -> Vec<u8> {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests/data/pixfmt", name]
        .iter()
        .collect();
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn convert(layout: &RawLayout, buf: &[u8]) -> GreyImage {
    let mut out = GreyImage::new(0, 0);
    // ffmpeg's `gray` is full range; its YUV formats are limited (tv) range.
    let range = if layout.format == PixelFormat::Grey {
        YuvRange::Full
    } else {
        YuvRange::Limited
    };
    to_grey(layout, buf, range, &mut out).unwrap_or_else(|e| panic!("{layout}: {e:#}"));
    assert_eq!((out.width, out.height), (layout.width, layout.height));
    out
}

/// (max abs diff, mean abs diff) between our grey and ffmpeg's.
fn compare(ours: &GreyImage, expected: &[u8]) -> (u8, f64) {
    assert_eq!(ours.pixels.len(), expected.len());
    let diffs: Vec<u8> = ours
        .pixels
        .iter()
        .zip(expected)
        .map(|(a, b)| a.abs_diff(*b))
        .collect();
    let max = diffs.iter().copied().max().unwrap_or(0);
    let mean = diffs.iter().map(|&d| d as f64).sum::<f64>() / diffs.len() as f64;
    (max, mean)
}

/// The first plane of a tightly packed frame copied into lines of `stride` bytes (padding
/// 0xA5), followed by the rest of the frame (chroma planes) rebuilt for the new stride.
fn repad(f: &Fixture, raw: &[u8], stride: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let line = |buf: &[u8], at: usize, n: usize, stride: usize, out: &mut Vec<u8>| {
        out.extend_from_slice(&buf[at..at + n]);
        out.resize(out.len() + stride - n, 0xA5);
    };
    for r in 0..H {
        line(raw, r * f.stride, f.stride, stride, &mut out);
    }
    let chroma = &raw[f.stride * H..];
    match f.format {
        PixelFormat::Nv12 => {
            for r in 0..H.div_ceil(2) {
                line(chroma, r * 76, 76, stride.max(76), &mut out);
            }
        }
        PixelFormat::I420 => {
            let cw = W.div_ceil(2);
            for r in 0..2 * H.div_ceil(2) {
                line(chroma, r * cw, cw, stride.div_ceil(2), &mut out);
            }
        }
        _ => {}
    }
    out
}

#[test]
fn fixtures_have_the_recorded_sizes() {
    for f in &FIXTURES {
        let raw = data(&format!("{}.raw", f.name));
        assert_eq!(raw.len(), f.bytes, "{}.raw", f.name);
        let layout = RawLayout::new(f.format, W, H, f.stride).unwrap();
        assert_eq!(
            layout.frame_bytes(),
            Some(f.bytes),
            "{}: V4L2 size = ffmpeg size",
            f.name
        );
        assert_eq!(data(&format!("{}.gray", f.name)).len(), W * H);
    }
}

#[test]
fn raw_formats_match_ffmpeg() {
    for f in &FIXTURES {
        let raw = data(&format!("{}.raw", f.name));
        let expected = data(&format!("{}.gray", f.name));
        let layout = RawLayout::new(f.format, W, H, f.stride).unwrap();
        let (max, mean) = compare(&convert(&layout, &raw), &expected);
        println!("{:6} max diff {max}, mean {mean:.3}", f.name);
        assert!(max <= 1, "{}: max diff {max} (mean {mean:.3})", f.name);

        // The same frame with padded lines (and chroma planes laid out for that stride).
        for extra in [1, 8, 64] {
            let stride = f.stride + extra;
            let padded = repad(f, &raw, stride);
            let layout = RawLayout::new(f.format, W, H, stride).unwrap();
            assert_eq!(
                layout.frame_bytes(),
                Some(padded.len()),
                "{} stride {stride}",
                f.name
            );
            let (max, _) = compare(&convert(&layout, &padded), &expected);
            assert!(max <= 1, "{} stride {stride}: max diff {max}", f.name);
            // one byte short
            let mut out = GreyImage::new(0, 0);
            let err = to_grey(
                &layout,
                &padded[..padded.len() - 1],
                YuvRange::Limited,
                &mut out,
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains(f.format.name()) && err.contains("needs"),
                "{err}"
            );
        }
    }
}

#[test]
fn mjpeg_matches_ffmpeg_with_and_without_dht() {
    let layout = RawLayout::new(PixelFormat::Mjpeg, W, H, 0).unwrap();
    let expected = data("mjpeg.gray");
    let with = convert(&layout, &data("mjpeg.jpg"));
    let without = convert(&layout, &data("mjpeg_nodht.jpg"));
    assert_eq!(
        with, without,
        "the standard tables are the ones ffmpeg wrote"
    );
    let (max, mean) = compare(&with, &expected);
    println!("mjpeg  max diff {max}, mean {mean:.3}");
    assert!(
        max <= 2 && mean < 0.5,
        "MJPEG: max diff {max}, mean {mean:.3}"
    );
}

#[test]
fn standard_dht_is_what_ffmpeg_writes() {
    let jpeg = data("mjpeg.jpg");
    let at = jpeg
        .windows(2)
        .position(|p| p == [0xFF, 0xC4])
        .expect("a DHT segment");
    assert_eq!(&jpeg[at..at + STANDARD_DHT.len()], &STANDARD_DHT[..]);
    let stripped = data("mjpeg_nodht.jpg");
    assert_eq!(stripped.len() + STANDARD_DHT.len(), jpeg.len());
}

/// `cargo test --release --test pixfmt -- --ignored --nocapture`: 1920x1080 conversion times.
#[test]
#[ignore]
fn timing_1080p() {
    let (w, h) = (1920, 1080);
    let mut out = GreyImage::new(0, 0);
    // Best of 30 runs (the machine may be shared).
    let time = |layout: &RawLayout, buf: &[u8], range: YuvRange, out: &mut GreyImage| {
        to_grey(layout, buf, range, out).unwrap();
        (0..30)
            .map(|_| {
                let start = Instant::now();
                to_grey(layout, buf, range, out).unwrap();
                start.elapsed().as_secs_f64() * 1e3
            })
            .fold(f64::INFINITY, f64::min)
    };
    let buf: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
    for format in PixelFormat::ALL
        .into_iter()
        .filter(|&f| f != PixelFormat::Mjpeg)
    {
        let layout = RawLayout::tight(format, w, h).unwrap();
        println!(
            "{format:6} 1920x1080: {:.3} ms",
            time(&layout, &buf, YuvRange::Limited, &mut out)
        );
    }
    let yuyv = RawLayout::tight(PixelFormat::Yuyv, w, h).unwrap();
    let ms = time(&yuyv, &buf, YuvRange::Full, &mut out);
    println!("YUYV   1920x1080 full range: {ms:.3} ms");

    // An MJPEG frame from ffmpeg (4:2:2, quality 4), if ffmpeg is installed, with and without
    // its Huffman tables.
    let dir = std::env::temp_dir().join(format!("pixfmt-timing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let jpg = dir.join("frame.jpg");
    let made = std::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg("testsrc2=size=1920x1080:rate=1,format=yuvj422p")
        .args([
            "-frames:v",
            "1",
            "-c:v",
            "mjpeg",
            "-huffman",
            "default",
            "-q:v",
            "4",
        ])
        .args(["-f", "mjpeg"])
        .arg(&jpg)
        .status()
        .is_ok_and(|s| s.success());
    if made {
        let jpeg = std::fs::read(&jpg).unwrap();
        let layout = RawLayout::new(PixelFormat::Mjpeg, w, h, 0).unwrap();
        println!(
            "MJPEG  1920x1080 ({} KiB): {:.3} ms",
            jpeg.len() / 1024,
            time(&layout, &jpeg, YuvRange::Limited, &mut out)
        );
        let at = jpeg
            .windows(STANDARD_DHT.len())
            .position(|s| s == STANDARD_DHT)
            .expect("standard tables");
        let stripped = [&jpeg[..at], &jpeg[at + STANDARD_DHT.len()..]].concat();
        println!(
            "MJPEG  1920x1080 without DHT: {:.3} ms",
            time(&layout, &stripped, YuvRange::Limited, &mut out)
        );
    } else {
        println!("MJPEG: ffmpeg not available, skipped");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
