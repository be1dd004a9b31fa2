//! Capture tests against a real V4L2 driver: the `vivid` virtual capture card.
//!
//! They need a device, so they are `#[ignore]`d in `make test`; `make test-v4l2` boots Debian's
//! kernel under QEMU with vivid loaded and runs them there (`--ignored --test-threads=1`), with
//! `PLEURA_V4L2_DEVICE` naming the node (default /dev/video0). vivid's "Disconnect" control
//! unregisters the node like an unplugged card; it comes back once its last file is closed.
#![cfg(feature = "v4l2")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pleura::capture::config::CaptureConfig;
use pleura::capture::pixfmt::{to_grey, PixelFormat};
use pleura::capture::raw::{Converted, RawSource};
use pleura::capture::recording::{Recorder, Replay, Timing};
use pleura::capture::v4l2::V4l2Source;
use pleura::capture::{BadFrame, FrameSource};
use pleura::image::GreyImage;
use v4l::control::{Control, Value};
use v4l::Device;

fn device() -> PathBuf {
    std::env::var_os("PLEURA_V4L2_DEVICE")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/dev/video0".into())
}

fn config(format: PixelFormat) -> CaptureConfig {
    CaptureConfig {
        formats: vec![format],
        width: Some(640),
        height: Some(480),
        // vivid's webcam input runs at 5 fps unless asked.
        fps: Some(25),
        ..CaptureConfig::default()
    }
}

/// Sets the vivid control called `name` (a button when `value` is `None`).
fn set_control(name: &str, value: Option<i64>) {
    let dev = Device::with_path(device()).expect("opening the device for its controls");
    let controls = dev.query_controls().expect("listing controls");
    let control = controls
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("vivid has no control `{name}`"));
    let value = value.map_or(Value::None, Value::Integer);
    dev.set_control(Control {
        id: control.id,
        value,
    })
    .unwrap_or_else(|e| panic!("setting `{name}`: {e}"));
}

/// `n` frames converted to grey, the source's layout checked on every one.
fn capture(format: PixelFormat, n: usize) -> Vec<GreyImage> {
    let source = V4l2Source::open(&device(), config(format), None)
        .unwrap_or_else(|e| panic!("{format}: {e:#}"));
    let layout = source.layout();
    eprintln!("{}", source.describe());
    assert_eq!(layout.format, format);
    assert_eq!((layout.width, layout.height), (640, 480), "{layout:?}");
    assert!(layout.stride >= format.min_stride(640), "{layout:?}");
    let mut source = Converted::new(source);
    let mut frames = Vec::new();
    let mut last_seq = None;
    while frames.len() < n {
        let frame = source
            .next_frame()
            .unwrap_or_else(|e| panic!("{format}: {e:#}"))
            .expect("a device stream does not end");
        assert_eq!(frame.layout, layout);
        assert!(last_seq.is_none_or(|s| frame.seq > s));
        last_seq = Some(frame.seq);
        frames.push(frame.image);
    }
    frames
}

#[test]
#[ignore = "needs a V4L2 device: run by `make test-v4l2`"]
fn a_recording_replays_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = V4l2Source::open(&device(), config(PixelFormat::Nv12), None).unwrap();
    let mut recorder = Recorder::create(dir.path(), &source.describe()).unwrap();
    let mut live = Vec::new();
    for _ in 0..20 {
        let raw = source.next_raw().unwrap().unwrap();
        recorder.write(&raw).unwrap();
        let mut image = GreyImage::new(0, 0);
        to_grey(&raw.layout, raw.data, raw.range, &mut image).unwrap();
        live.push((raw.seq, image));
    }
    let info = recorder.finish().unwrap();
    assert_eq!(info.frames, 20);
    for _ in 0..2 {
        let mut replay = Converted::new(Replay::open(dir.path(), Timing::Fast).unwrap());
        for (seq, image) in &live {
            let frame = replay.next_frame().unwrap().unwrap();
            assert_eq!(frame.seq, *seq);
            assert!(frame.image == *image, "frame {seq} differs");
        }
        assert!(replay.next_frame().unwrap().is_none());
    }
}

#[test]
#[ignore = "needs a V4L2 device: run by `make test-v4l2`"]
fn every_vivid_format_gives_the_same_grey_picture() {
    // vivid draws the same 75% colour bars in every format (a still pattern, no text): the grey
    // pictures must agree, which checks each conversion (and its stride and range handling)
    // against a real driver's buffers. The white and black bars are compared: their grey does
    // not depend on the luma coefficients a format's colour encoding uses.
    set_control("Test Pattern", Some(0));
    set_control("OSD Text Mode", Some(2));
    let mut reference: Option<(PixelFormat, [f64; 8])> = None;
    for format in [
        PixelFormat::Yuyv,
        PixelFormat::Nv12,
        PixelFormat::Grey,
        PixelFormat::Rgb24,
    ] {
        let image = capture(format, 3).pop().unwrap();
        let bars = bar_means(&image);
        eprintln!("{format:>5}: bars {bars:.1?}");
        assert!(
            bars[0] - bars[7] > 150.0,
            "{format}: white vs black {bars:?}"
        );
        match &reference {
            None => reference = Some((format, bars)),
            Some((ref_format, ref_bars)) => {
                for bar in [0, 7] {
                    let diff = (bars[bar] - ref_bars[bar]).abs();
                    assert!(diff < 2.0, "{format} vs {ref_format}, bar {bar}: {diff:.2}");
                }
            }
        }
    }
}

/// Mean grey of the middle half of each of 8 vertical bars.
fn bar_means(image: &GreyImage) -> [f64; 8] {
    let (w, h) = (image.width, image.height);
    let mut means = [0.0; 8];
    for (bar, mean) in means.iter_mut().enumerate() {
        let (x0, x1) = (bar * w / 8 + w / 32, (bar + 1) * w / 8 - w / 32);
        let (mut sum, mut n) = (0u64, 0u64);
        for y in h / 8..h * 7 / 8 {
            for x in x0..x1 {
                sum += u64::from(image.pixels[y * w + x]);
                n += 1;
            }
        }
        *mean = sum as f64 / n as f64;
    }
    means
}

#[test]
#[ignore = "needs a V4L2 device: run by `make test-v4l2`"]
fn dropped_buffers_show_as_sequence_gaps() {
    set_control("Percentage of Dropped Buffers", Some(50));
    let mut source = V4l2Source::open(&device(), config(PixelFormat::Yuyv), None).unwrap();
    let (mut lost, mut frames, mut last) = (0, 0, None);
    while frames < 30 {
        let frame = source.next_raw().unwrap().unwrap();
        if let Some(last) = last {
            assert_eq!(frame.seq, last + 1 + frame.lost_before, "gaps add up");
        }
        last = Some(frame.seq);
        lost += frame.lost_before;
        frames += 1;
    }
    drop(source);
    set_control("Percentage of Dropped Buffers", Some(0));
    eprintln!("30 frames delivered, {lost} lost by the driver");
    assert!(
        lost >= 5,
        "about half of the buffers should be lost, got {lost}"
    );
}

#[test]
#[ignore = "needs a V4L2 device: run by `make test-v4l2`"]
fn corrupt_buffers_are_bad_frames_and_capture_goes_on() {
    let mut source =
        Converted::new(V4l2Source::open(&device(), config(PixelFormat::Yuyv), None).unwrap());
    source.next_frame().unwrap().unwrap();
    set_control("Inject V4L2_BUF_FLAG_ERROR", None);
    let (mut bad, mut good) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while good < 5 && Instant::now() < deadline {
        match source.next_frame() {
            Ok(Some(_)) => good += 1,
            Ok(None) => panic!("the stream ended"),
            Err(e) => {
                let bad_frame = e
                    .downcast_ref::<BadFrame>()
                    .expect("a bad frame, not a failure");
                assert!(bad_frame.reason.contains("corrupt"), "{bad_frame}");
                bad += 1;
            }
        }
    }
    assert_eq!((bad, good), (1, 5));
}

#[test]
#[ignore = "needs a V4L2 device: run by `make test-v4l2`"]
fn a_disconnected_card_is_an_error_naming_the_device() {
    // After "Disconnect" every call on the node fails with ENODEV.
    let mut source = V4l2Source::open(&device(), config(PixelFormat::Yuyv), None).unwrap();
    source.next_raw().unwrap().unwrap();
    set_control("Disconnect", None);
    let err = loop {
        match source.next_raw() {
            Ok(Some(_)) => continue, // frames already queued before the disconnect
            Ok(None) => panic!("the stream ended without an error"),
            Err(err) => break format!("{err:#}"),
        }
    };
    eprintln!("after disconnect: {err}");
    assert!(err.contains(&device().display().to_string()), "{err}");
    assert!(
        err.contains("gone") || err.contains("No such device"),
        "{err}"
    );
    drop(source);
    wait_for_device();
}

#[test]
#[ignore = "needs a V4L2 device: run by `make test-v4l2`"]
fn a_reconnecting_source_survives_an_unplug() {
    let mut config = config(PixelFormat::Yuyv);
    config.reconnect = true;
    config.reconnect_give_up_ms = Some(60_000);
    let mut source = V4l2Source::open(&device(), config, None).unwrap();
    let first = source.next_raw().unwrap().unwrap().seq;
    set_control("Disconnect", None);
    // The node comes back when the source closes it to reopen it.
    let mut seqs = vec![first];
    while source.reconnects() == 0 || seqs.len() < 10 {
        let frame = source
            .next_raw()
            .unwrap()
            .expect("a device stream does not end");
        seqs.push(frame.seq);
    }
    assert_eq!(source.reconnects(), 1);
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "{seqs:?}");
}

/// Waits until the device opens again (vivid re-registers a disconnected node once its last
/// file is closed).
fn wait_for_device() {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Device::with_path(device()).is_err() {
        assert!(Instant::now() < deadline, "the device did not come back");
        std::thread::sleep(Duration::from_millis(100));
    }
}
