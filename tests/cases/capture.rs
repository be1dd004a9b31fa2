//! Recording, replay, image sequences, calibration and the board configuration, end to end
//! through the `pleura` binary (the V4L2 device itself is tested under QEMU: tests/v4l2_vivid.rs).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pleura::capture::raw::Converted;
use pleura::capture::recording::{Replay, Timing};
use pleura::capture::{BadFrame, FrameSource};
use pleura::pipeline::RunConfig;

use crate::util::{default_pack, json_lines, pleura, stderr};

fn record_phantom(dir: &Path, frames: u32) {
    let out = pleura(&[
        "record",
        "--source",
        "phantom:3",
        "--frames",
        &frames.to_string(),
        "--phantom-size",
        "96",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("recorded {frames} frames")));
}

fn run_records(args: &[&str]) -> Vec<serde_json::Value> {
    let pack = default_pack();
    let mut all = vec!["run", "--pack", pack.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = pleura(&all);
    assert!(out.status.success(), "{}", stderr(&out));
    json_lines(&out.stdout)
}

/// The parts of a record that must repeat exactly: outputs, decisions, truth.
fn outputs(records: &[serde_json::Value]) -> Vec<(serde_json::Value, serde_json::Value)> {
    records
        .iter()
        .map(|r| (r["tasks"].clone(), r["truth"].clone()))
        .collect()
}

#[test]
fn a_recorded_phantom_replays_to_the_same_decisions() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = tmp.path().join("rec");
    record_phantom(&rec, 40);
    let live = run_records(&[
        "--source",
        "phantom:3",
        "--frames",
        "40",
        "--phantom-size",
        "96",
    ]);
    let replay = format!("replay:{}", rec.display());
    let first = run_records(&["--source", &replay]);
    let second = run_records(&["--source", &replay, "--timing", "recorded"]);
    assert_eq!(first.len(), 40);
    assert_eq!(outputs(&live), outputs(&first));
    // At recorded timing a replay is a real-time source: a frame can be dropped, never changed.
    for r in &second {
        let seq = r["seq"].as_u64().unwrap() as usize;
        assert_eq!(r["truth"], first[seq]["truth"]);
    }
    // A recording is never overwritten.
    let out = pleura(&[
        "record",
        "--source",
        "phantom",
        "--frames",
        "1",
        "--out",
        rec.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("already holds a recording"),
        "{}",
        stderr(&out)
    );
}

/// Issue 16: the same recording replayed twice gives byte-identical records however loaded the
/// machine (the engine's plan no longer depends on timings taken at start-up). Every record
/// carries timing fields (`t_ms`, `done_ms`, `latency_ms`): they are removed, and the rest of
/// each record (decisions, probabilities, smoothing, truth, the plan in the first record) is
/// compared as serialised text, byte for byte.
#[test]
fn issue_16_replays_repeat_byte_for_byte_under_cpu_load() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = tmp.path().join("rec");
    record_phantom(&rec, 30);
    // Busy threads, two per CPU, for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let busy: Vec<_> = (0..2 * cpus)
        .map(|k| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut x = k as u64 + 1;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..10_000 {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                }
            })
        })
        .collect();
    let replay = format!("replay:{}", rec.display());
    let runs: Vec<Vec<String>> = (0..2)
        .map(|_| {
            run_records(&["--source", &replay])
                .into_iter()
                .map(|mut r| {
                    let record = r.as_object_mut().unwrap();
                    for timing in ["t_ms", "done_ms", "latency_ms"] {
                        assert!(record.remove(timing).is_some(), "no `{timing}`");
                    }
                    serde_json::to_string(&r).unwrap()
                })
                .collect()
        })
        .collect();
    stop.store(true, Ordering::Relaxed);
    busy.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(runs[0].len(), 30);
    for (a, b) in runs[0].iter().zip(&runs[1]) {
        assert_eq!(a.as_bytes(), b.as_bytes(), "\n{a}\n{b}");
    }
    // The first record names the plan that made the decisions.
    let first: serde_json::Value = serde_json::from_str(&runs[0][0]).unwrap();
    assert_eq!(first["plan"]["engine"], "tract 0.23.9");
    assert!(["nhwc", "nchw"].contains(&first["plan"]["layout"].as_str().unwrap()));
    assert!(runs[0][1..].iter().all(|r| !r.contains("\"plan\"")));
}

#[test]
fn a_damaged_recording_replays_what_is_left_and_names_the_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = tmp.path().join("rec");
    record_phantom(&rec, 10);
    // Power lost mid-write: the data file lacks the last frame and a half, the index has a
    // half-written last line.
    let data = rec.join("frames.raw");
    let len = std::fs::metadata(&data).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
    file.set_len(len - 96 * 96 * 3 / 2).unwrap();
    let index = rec.join("frames.jsonl");
    let mut text = std::fs::read_to_string(&index).unwrap();
    text.push_str("{\"seq\":10,\"lost_bef");
    std::fs::write(&index, &text).unwrap();

    let mut replay = Converted::new(Replay::open(&rec, Timing::Fast).unwrap());
    let (mut good, mut bad) = (0, Vec::new());
    loop {
        match replay.next_frame() {
            Ok(Some(_)) => good += 1,
            Ok(None) => break,
            Err(e) => bad.push(e.downcast::<BadFrame>().expect("a bad frame").to_string()),
        }
    }
    assert_eq!((good, bad.len()), (8, 2), "{bad:?}");
    assert!(
        bad[0].starts_with("frame 8:") && bad[0].contains("frames.raw"),
        "{}",
        bad[0]
    );
    assert!(bad[0].contains("truncated"), "{}", bad[0]);

    // Through the binary: the run goes on past bad frames and counts them.
    let out = pleura(&[
        "run",
        "--pack",
        default_pack().to_str().unwrap(),
        "--source",
        &format!("replay:{}", rec.display()),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_lines(&out.stdout).len(), 8);
    assert!(stderr(&out).contains("2 bad"), "{}", stderr(&out));

    // A broken line that is not the last is an error naming the file and line.
    text = text.replacen("\"seq\":3,", "\"seq\":\"three\",", 1);
    std::fs::write(&index, &text).unwrap();
    let err = format!("{:#}", Replay::open(&rec, Timing::Fast).err().unwrap());
    assert!(err.contains("frames.jsonl:4"), "{err}");
}

#[test]
fn an_image_sequence_replays_in_name_order_and_a_corrupt_file_is_one_bad_frame() {
    let tmp = tempfile::tempdir().unwrap();
    let mut source = pleura::capture::phantom::PhantomSource::new(1, 64, 48, 5, 5).unwrap();
    let mut expected = Vec::new();
    for i in 0..5 {
        let frame = source.next_frame().unwrap().unwrap();
        pleura::image::write_png(&frame.image, &tmp.path().join(format!("f{i:03}.png"))).unwrap();
        expected.push(frame.image);
    }
    std::fs::write(tmp.path().join("f002.png"), b"\x89PNG\r\n\x1a\nbroken").unwrap();
    std::fs::write(tmp.path().join("notes.txt"), b"not a frame").unwrap();
    let spec: pleura::capture::spec::SourceSpec =
        format!("replay:{}", tmp.path().display()).parse().unwrap();
    let mut images = spec.open(&Default::default()).unwrap();
    assert_eq!(images.frame_size(), (64, 48));
    let mut got = Vec::new();
    loop {
        match images.next_frame() {
            Ok(Some(f)) => got.push((f.seq, f.image)),
            Ok(None) => break,
            Err(e) => {
                let bad = e.downcast::<BadFrame>().unwrap();
                assert_eq!(bad.seq, 2);
                assert!(bad.reason.contains("f002.png"), "{bad}");
            }
        }
    }
    let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, [0, 1, 3, 4]);
    assert!(got[2].1 == expected[3]);
}

#[test]
fn calibrate_finds_the_moving_image_inside_a_screen_grab() {
    // A 200x150 "screen" with the 96x96 phantom image at (60, 30) and a static bright logo.
    let tmp = tempfile::tempdir().unwrap();
    let mut source = pleura::capture::phantom::PhantomSource::new(2, 96, 96, 10, 12).unwrap();
    for i in 0..12 {
        let frame = source.next_frame().unwrap().unwrap();
        let mut screen = pleura::image::GreyImage::new(200, 150);
        for y in 0..96 {
            let row = &frame.image.pixels[y * 96..(y + 1) * 96];
            screen.pixels[(30 + y) * 200 + 60..(30 + y) * 200 + 156].copy_from_slice(row);
        }
        for y in 5..15 {
            for x in 5..40 {
                screen.pixels[y * 200 + x] = 230;
            }
        }
        pleura::image::write_png(&screen, &tmp.path().join(format!("{i:02}.png"))).unwrap();
    }
    let preview = tmp.path().join("preview.png");
    let out = pleura(&[
        "calibrate",
        "--source",
        &format!("replay:{}", tmp.path().display()),
        "--frames",
        "12",
        "--preview",
        preview.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let config: RunConfig = toml::from_str(
        &text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let crop = config.crop.expect("a [crop] section");
    // The phantom's sector does not fill its square: the box lies inside it, well away
    // from the logo.
    assert!(crop.x >= 60 && crop.y >= 30, "{crop:?}");
    assert!(
        crop.x + crop.width <= 156 && crop.y + crop.height <= 126,
        "{crop:?}"
    );
    assert!(crop.width > 48 && crop.height > 48, "{crop:?}");
    let image = pleura::image::read_png(&preview).unwrap();
    assert_eq!((image.width, image.height), (200, 150));
    assert!(text.contains(&format!(
        "--crop {},{},{},{}",
        crop.x, crop.y, crop.width, crop.height
    )));
}

#[test]
fn a_board_configuration_drives_the_run_and_the_command_line_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("board.toml");
    let pack = default_pack();
    std::fs::write(
        &config,
        format!(
            "pack = \"{}\"\nsource = \"phantom:4\"\nframes = 12\nheads = \"int8\"\n\n\
             [capture]\nformats = [\"YUYV\", \"MJPEG\"]\nreconnect = true\n\n\
             [crop]\nx = 16\ny = 16\nwidth = 200\nheight = 200\n\n\
             [output]\nframes = \"frames.jsonl\"\nsummary = \"summary.json\"\n\n\
             [smoothing.view]\nwindow = 5\n",
            pack.display()
        ),
    )
    .unwrap();
    let parsed = RunConfig::load(&config).unwrap();
    assert_eq!(
        parsed.output.frames.as_deref(),
        Some(tmp.path().join("frames.jsonl").as_path())
    );
    assert_eq!(parsed.capture.formats.len(), 2);
    assert_eq!(parsed.capture.yuv_range, None);

    let cfg = config.to_str().unwrap();
    for _ in 0..2 {
        let out = pleura(&["run", "--config", cfg]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // Records are appended run after run; the summary is replaced.
    let text = std::fs::read(tmp.path().join("frames.jsonl")).unwrap();
    assert_eq!(json_lines(&text).len(), 24);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["frames"], 12);
    assert_eq!(summary["smoothing"][0][1]["window"], 5);

    let out = pleura(&["run", "--config", cfg, "--frames", "3", "--output", "-"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Mistakes name the file and the field.
    std::fs::write(&config, "[capture]\nformats = [\"H264\"]\n").unwrap();
    let err = stderr(&pleura(&["run", "--config", cfg]));
    assert!(err.contains("board.toml") && err.contains("H264"), "{err}");
    std::fs::write(&config, "[crop]\nx = 0\ny = 0\nwidth = 999\nheight = 10\n").unwrap();
    let err = stderr(&pleura(&["run", "--config", cfg, "--frames", "1"]));
    assert!(err.contains("does not fit"), "{err}");
    std::fs::write(&config, "sourse = \"phantom\"\n").unwrap();
    let err = stderr(&pleura(&["run", "--config", cfg]));
    assert!(err.contains("sourse"), "{err}");
}

#[test]
fn capture_errors_name_the_device_and_what_to_do() {
    let out = pleura(&["run", "--source", "v4l2:/dev/video99", "--frames", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("/dev/video99") && err.contains("pleura devices"),
        "{err}"
    );
    let out = pleura(&["devices", "/dev/video99"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/dev/video99"));
    // A file that is not a device.
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let out = pleura(&[
        "record",
        "--source",
        &format!("v4l2:{}", tmp.path().display()),
        "--out",
        "/tmp/never",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&tmp.path().display().to_string()),
        "{}",
        stderr(&out)
    );
}
