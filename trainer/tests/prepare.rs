//! `prepare` on clips the way they arrive: videos in several containers, an image folder, a
//! corrupt file and a missing clip. Needs the `ffmpeg` program (`make setup` installs it).

use std::path::Path;
use std::process::Command;

use pleura_trainer::data::frames::FrameSet;
use pleura_trainer::data::ingest::{prepare, Crop, PrepareOptions, SourceKind};
use pleura_trainer::data::labels;
use pleura_trainer::data::phantom::{write_cohort, PhantomOptions};
use pleura_trainer::data::split::{DatasetSplit, SplitOptions};
use pleura_trainer::tasks::TaskSet;

fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg is needed by this test: `apt-get install ffmpeg` (make setup does it)");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Encodes the PNG frames of `dir` into `out` (the container and codec follow the extension).
fn encode(dir: &Path, out: &Path) {
    let pattern = dir.join("frame_%04d.png");
    let ext = out.extension().unwrap().to_str().unwrap();
    // MPEG-2 allows only the standard frame rates.
    let rate = if ext == "mpeg" { "25" } else { "10" };
    let mut args = vec!["-framerate", rate, "-i", pattern.to_str().unwrap()];
    match ext {
        "mp4" => args.extend(["-c:v", "libx264", "-pix_fmt", "yuv420p"]),
        "avi" => args.extend(["-c:v", "mjpeg", "-q:v", "3"]),
        // An MPEG-2 program stream: its video stream carries side data, which made ffprobe's
        // CSV output `96x96x` and had such clips skipped (issue 15).
        "mpeg" => args.extend(["-c:v", "mpeg2video", "-f", "mpeg"]),
        _ => {}
    }
    args.push(out.to_str().unwrap());
    ffmpeg(&args);
}

#[test]
fn videos_images_and_broken_clips_become_a_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let phantom = tmp.path().join("phantom");
    write_cohort(
        &phantom,
        &PhantomOptions {
            clips: 12,
            frames: 6,
            size: 96,
            seed: 3,
        },
    )
    .unwrap();
    let rows = labels::read(&phantom.join("labels.csv"), &TaskSet::standard()).unwrap();

    // The archive: clips 0-2 as mp4, 3 as an MPEG-2 program stream, 4-5 as avi, 6 as gif, 7-9 as image folders (one JPEG
    // frame among the PNGs), 10 corrupt, 11 missing.
    let archive = tmp.path().join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    for (i, row) in rows.iter().enumerate() {
        let src = phantom.join("clips").join(&row.clip);
        match i {
            0..=2 => encode(&src, &archive.join(format!("{}.mp4", row.clip))),
            3 => encode(&src, &archive.join(format!("{}.mpeg", row.clip))),
            4..=5 => encode(&src, &archive.join(format!("{}.avi", row.clip))),
            6 => encode(&src, &archive.join(format!("{}.gif", row.clip))),
            7..=9 => {
                let dest = archive.join(&row.clip);
                std::fs::create_dir_all(&dest).unwrap();
                for f in std::fs::read_dir(&src).unwrap() {
                    let f = f.unwrap().path();
                    std::fs::copy(&f, dest.join(f.file_name().unwrap())).unwrap();
                }
                let first = dest.join("frame_0000.png");
                ffmpeg(&[
                    "-i",
                    first.to_str().unwrap(),
                    dest.join("frame_0000.jpg").to_str().unwrap(),
                ]);
                std::fs::remove_file(first).unwrap();
            }
            10 => std::fs::write(
                archive.join(format!("{}.mp4", row.clip)),
                b"not a video at all",
            )
            .unwrap(),
            _ => {}
        }
    }

    let out = tmp.path().join("dataset");
    let opts = PrepareOptions {
        clips: archive.clone(),
        labels: phantom.join("labels.csv"),
        out: out.clone(),
        stride: 2,
        max_frames: None,
        crop: Crop::Auto,
        max_side: Some(64),
        split: SplitOptions {
            validation: 0.25,
            test: 0.25,
            folds: 3,
            seed: 1,
        },
    };
    let report = prepare(&opts).unwrap();
    assert_eq!(report.prepared.len(), 10);
    assert_eq!(report.frames(), 10 * 3, "every 2nd of 6 frames");
    let kinds: Vec<SourceKind> = report.prepared.iter().map(|c| c.kind).collect();
    assert_eq!(kinds.iter().filter(|k| **k == SourceKind::Video).count(), 7);
    assert_eq!(
        kinds.iter().filter(|k| **k == SourceKind::Images).count(),
        3
    );
    // Seconds between stored frames (stride 2): from each video's frame rate; none for folders.
    let seconds: Vec<Option<f64>> = report.prepared.iter().map(|c| c.frame_seconds).collect();
    assert_eq!(seconds[..3], [Some(0.2); 3], "mp4 at 10 fps");
    assert_eq!(
        seconds[3],
        Some(0.08),
        "the MPEG-2 program stream at 25 fps"
    );
    assert_eq!(seconds[7..], [None; 3], "image folders");
    for c in &report.prepared {
        assert_eq!(c.source_size, [96, 96]);
        assert!(c.stored_size[0] <= 64 && c.stored_size[1] <= 64, "{c:?}");
        // The phantom's sector leaves dark margins: the crop finds the image inside the frame.
        assert!(
            c.crop.width <= 96 && c.crop.height <= 96 && c.crop.width > 40,
            "{c:?}"
        );
    }
    // Nothing dropped silently: each skipped clip is named with its reason.
    let skipped: Vec<(&str, &str)> = report
        .skipped
        .iter()
        .map(|s| (s.clip.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(skipped.len(), 2);
    assert_eq!(skipped[0].0, rows[10].clip);
    assert!(skipped[0].1.contains(".mp4"), "{}", skipped[0].1);
    assert_eq!(skipped[1].0, rows[11].clip);
    assert!(skipped[1].1.contains("no video"), "{}", skipped[1].1);
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(info["skipped"].as_array().unwrap().len(), 2);
    assert_eq!(info["synthetic"], false);

    // The dataset loads like any other, with the split prepare wrote.
    let frames = FrameSet::load(&out, &TaskSet::standard(), [32, 32], 1).unwrap();
    assert_eq!(frames.len(), 30);
    let split: DatasetSplit =
        serde_json::from_slice(&std::fs::read(out.join("split.json")).unwrap()).unwrap();
    let patients: std::collections::BTreeSet<&str> =
        frames.clips.iter().map(|c| c.patient.as_str()).collect();
    assert_eq!(split.patients.len(), patients.len());

    // A second run reuses every clip, with identical frames.
    let before =
        std::fs::read(out.join("clips").join(&rows[0].clip).join("frame_0001.png")).unwrap();
    let again = prepare(&opts).unwrap();
    assert!(again.prepared.iter().all(|c| c.cached));
    let after =
        std::fs::read(out.join("clips").join(&rows[0].clip).join("frame_0001.png")).unwrap();
    assert_eq!(before, after);
}

#[test]
fn unusable_inputs_are_errors_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = |labels: &Path, clips: &Path| PrepareOptions {
        clips: clips.to_path_buf(),
        labels: labels.to_path_buf(),
        out: tmp.path().join("out"),
        stride: 1,
        max_frames: None,
        crop: Crop::Full,
        max_side: Some(64),
        split: SplitOptions::default(),
    };
    let missing = tmp.path().join("nope.csv");
    let err = format!("{:#}", prepare(&opts(&missing, tmp.path())).unwrap_err());
    assert!(err.contains("nope.csv"), "{err}");

    let labels = tmp.path().join("labels.csv");
    std::fs::write(&labels, "clip,patient,lines\na,p1,b_lines\n").unwrap();
    let err = format!(
        "{:#}",
        prepare(&opts(&labels, &tmp.path().join("no-clips"))).unwrap_err()
    );
    assert!(err.contains("no-clips"), "{err}");

    // No clip at all could be prepared: an error, with the first reason.
    std::fs::create_dir_all(tmp.path().join("empty")).unwrap();
    let err = format!(
        "{:#}",
        prepare(&opts(&labels, &tmp.path().join("empty"))).unwrap_err()
    );
    assert!(err.contains("`a`"), "{err}");
}
