//! `pleura-train prepare`: clips as they come from a hospital archive — videos, folders of
//! images, DICOM files, `pleura record` folders from a board — plus a labels CSV, turned into a
//! dataset folder the trainer reads:
//!
//! ```text
//! OUT/labels.csv            the labels of the clips that were prepared
//! OUT/clips/<clip>/*.png    every `stride`-th frame, cropped to the sector (at its own
//!                           resolution, or scaled down to `max_side` px when given)
//! OUT/frames/               the same frames in a frame store (shards + index), what the
//!                           trainer reads (see [`crate::data::store`])
//! OUT/dataset.json          source, settings, per-clip record, and every clip skipped, with why
//! OUT/split.json            train / validation / test by patient, and k folds
//! ```
//!
//! Frames are cropped with the runtime's own resize step ([`Resize`]). Kept at the crop's own
//! resolution (no `max_side`), a stored frame holds exactly the source pixels the runtime
//! reads, and the trainer's load ([`crate::data::frames::FrameSet`]) then applies the same
//! resize and normalisation to them as the runtime does to a live frame: the same tensor
//! (`trainer/tests/parity.rs`). With `max_side`, frames are resized twice and rounded to
//! 8 bits in between: smaller datasets, inputs within a small bound of the runtime's. A clip that cannot be read is reported by name and
//! skipped, never silently dropped. Clips already prepared with the same source and settings
//! are reused (the cache key is in `OUT/clips/<clip>/.prepared`).

pub mod dicom;
pub mod images;
pub mod recording;
pub mod video;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use pleura::fsutil::write_atomic;
use pleura::image::{write_png, GreyImage};
use pleura::preprocess::{Rect, Resize};
use serde::Serialize;

use super::labels::{self, ClipLabels};
use super::phantom::DATASET_INFO;
use super::split::{write_split, SplitOptions};
use crate::progress;
use crate::tasks::TaskSet;

/// How each clip is cropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Crop {
    /// The region that moves over the clip (the ultrasound image), found per clip.
    Auto,
    /// The whole frame.
    Full,
    /// The same rectangle for every clip (a fixed screen layout).
    Rect(Rect),
}

/// Settings of [`prepare`]; saved in `dataset.json`.
#[derive(Clone, Debug, Serialize)]
pub struct PrepareOptions {
    /// Folder holding one video file, DICOM file or image folder per clip, named by clip id.
    pub clips: PathBuf,
    /// CSV with `clip`, `patient` and one column per task.
    pub labels: PathBuf,
    /// Dataset folder to write.
    pub out: PathBuf,
    /// Keep every `stride`-th frame.
    pub stride: usize,
    /// Keep at most this many frames per clip.
    pub max_frames: Option<usize>,
    /// Cropping.
    pub crop: Crop,
    /// Longest side of the stored frames; larger crops are scaled down. `None` keeps the crop's
    /// own resolution (the exact path: see the module documentation).
    pub max_side: Option<usize>,
    /// Patient split written to `split.json`.
    pub split: SplitOptions,
}

/// What kind of source a clip is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A video file decoded by ffmpeg.
    Video,
    /// A DICOM file (single- or multi-frame).
    Dicom,
    /// A folder of PNG/JPEG frames.
    Images,
    /// A `pleura record` folder: raw capture-card buffers, converted by the runtime.
    Recording,
}

/// One prepared clip.
#[derive(Clone, Debug, Serialize)]
pub struct ClipRecord {
    /// Clip id.
    pub clip: String,
    /// Where it came from.
    pub source: PathBuf,
    /// Its kind.
    pub kind: SourceKind,
    /// Frames stored.
    pub frames: usize,
    /// Size of the source frames `[width, height]`.
    pub source_size: [usize; 2],
    /// The crop applied, in source pixels.
    pub crop: Rect,
    /// Size of the stored frames `[width, height]`.
    pub stored_size: [usize; 2],
    /// Seconds between consecutive stored frames (`stride / fps`), when the source says its
    /// frame rate (videos); pretraining pairs nearby frames of a clip by it.
    pub frame_seconds: Option<f64>,
    /// `true` when the clip was reused from an earlier run.
    pub cached: bool,
}

/// A clip that was left out, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    /// Clip id.
    pub clip: String,
    /// The error, with its context.
    pub reason: String,
}

/// What [`prepare`] did.
#[derive(Clone, Debug, Serialize)]
pub struct PrepareReport {
    /// Clips in the dataset.
    pub prepared: Vec<ClipRecord>,
    /// Clips listed in the labels but not in the dataset.
    pub skipped: Vec<Skipped>,
}

impl PrepareReport {
    /// Frames in the dataset.
    pub fn frames(&self) -> usize {
        self.prepared.iter().map(|c| c.frames).sum()
    }
}

const DICOM_EXTENSIONS: [&str; 2] = ["dcm", "dicom"];

fn has_extension(path: &Path, list: &[&str]) -> bool {
    path.extension()
        .is_some_and(|e| list.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// `true` for a file with DICOM's `DICM` marker at byte 128.
fn is_dicom_file(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 132];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head[128..] == b"DICM"
}

/// Every clip source under `dir`, by clip id (file stem or folder name).
fn index_sources(dir: &Path) -> Result<BTreeMap<String, (PathBuf, SourceKind)>> {
    let mut sources: BTreeMap<String, (PathBuf, SourceKind)> = BTreeMap::new();
    let entries =
        fs::read_dir(dir).with_context(|| format!("listing clips folder {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        let kind = if path.is_dir() && recording::is_recording(&path) {
            Some(SourceKind::Recording)
        } else if path.is_dir() {
            Some(SourceKind::Images)
        } else if has_extension(&path, &video::VIDEO_EXTENSIONS) {
            Some(SourceKind::Video)
        } else if has_extension(&path, &DICOM_EXTENSIONS)
            || (path.extension().is_none() && is_dicom_file(&path))
        {
            Some(SourceKind::Dicom)
        } else {
            None
        };
        let (Some(kind), Some(stem)) = (kind, path.file_stem()) else {
            continue;
        };
        let id = if path.is_dir() {
            path.file_name().unwrap_or(stem)
        } else {
            stem
        }
        .to_string_lossy()
        .into_owned();
        if let Some((other, _)) = sources.get(&id) {
            bail!(
                "clip `{id}` has two sources, {} and {}: keep one",
                other.display(),
                path.display()
            );
        }
        sources.insert(id, (path, kind));
    }
    Ok(sources)
}

/// The clip's frames and the seconds between two of them, when known.
fn decode(
    path: &Path,
    kind: SourceKind,
    opts: &PrepareOptions,
) -> Result<(Vec<GreyImage>, Option<f64>)> {
    let mut seconds = None;
    let frames = match kind {
        SourceKind::Video => {
            let (frames, info) = video::read_frames(path, opts.stride, opts.max_frames)?;
            seconds = info.fps.map(|fps| opts.stride as f64 / fps);
            frames
        }
        SourceKind::Images => images::read_frames(path, opts.stride, opts.max_frames)?,
        SourceKind::Recording => {
            let (frames, s) = recording::read_frames(path, opts.stride, opts.max_frames)?;
            seconds = s;
            frames
        }
        SourceKind::Dicom => {
            let all = dicom::read_frames(path)?;
            all.into_iter()
                .step_by(opts.stride)
                .take(opts.max_frames.unwrap_or(usize::MAX))
                .collect()
        }
    };
    ensure!(!frames.is_empty(), "{}: no frames", path.display());
    Ok((frames, seconds))
}

/// The cache key of a clip: source, its size and modification time, and the settings.
fn cache_key(path: &Path, opts: &PrepareOptions) -> String {
    let meta = fs::metadata(path).ok();
    let modified = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}|{}|{modified}|{}|{:?}|{:?}|{:?}",
        path.display(),
        meta.map_or(0, |m| m.len()),
        opts.stride,
        opts.max_frames,
        opts.crop,
        opts.max_side
    )
}

/// Decodes, crops and stores one clip in `OUT/clips/<clip>/`.
fn prepare_clip(
    id: &str,
    path: &Path,
    kind: SourceKind,
    opts: &PrepareOptions,
) -> Result<ClipRecord> {
    let dest = opts.out.join("clips").join(id);
    let key = cache_key(path, opts);
    let marker = dest.join(".prepared");
    if let Ok(text) = fs::read_to_string(&marker) {
        if let Some(record) = text
            .split_once('\n')
            .filter(|(k, _)| *k == key)
            .and_then(|(_, json)| serde_json::from_str::<serde_json::Value>(json).ok())
            .and_then(|v| cached_record(&v, id, path, kind))
        {
            return Ok(record);
        }
    }
    let (frames, frame_seconds) = decode(path, kind, opts)?;
    let (w, h) = (frames[0].width, frames[0].height);
    let crop = match opts.crop {
        Crop::Full => Rect {
            x: 0,
            y: 0,
            width: w,
            height: h,
        },
        Crop::Rect(r) => r,
        Crop::Auto => pleura::sector::detect_sector(&frames).unwrap_or(Rect {
            x: 0,
            y: 0,
            width: w,
            height: h,
        }),
    };
    let scale = opts.max_side.map_or(1.0, |side| {
        (side as f64 / crop.width.max(crop.height) as f64).min(1.0)
    });
    let (ow, oh) = (
        ((crop.width as f64 * scale).round() as usize).max(1),
        ((crop.height as f64 * scale).round() as usize).max(1),
    );
    let mut resize = Resize::new(w, h, Some(crop), ow, oh)
        .with_context(|| format!("{}: crop", path.display()))?;
    // Write into a scratch folder, then swap it in: an interrupted run leaves no half clip.
    let scratch = opts.out.join("clips").join(format!(".{id}.partial"));
    if scratch.exists() {
        fs::remove_dir_all(&scratch).with_context(|| format!("removing {}", scratch.display()))?;
    }
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let mut buf = vec![0.0f32; ow * oh];
    for (i, frame) in frames.iter().enumerate() {
        ensure!(
            (frame.width, frame.height) == (w, h),
            "{}: frame {i} is {}x{}, the first is {w}x{h}",
            path.display(),
            frame.width,
            frame.height
        );
        resize
            .run(frame, &mut buf)
            .with_context(|| format!("{}: frame {i}", path.display()))?;
        let pixels = buf
            .iter()
            .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
            .collect();
        write_png(
            &GreyImage::from_pixels(ow, oh, pixels)?,
            &scratch.join(format!("frame_{i:04}.png")),
        )?;
    }
    let record = ClipRecord {
        clip: id.to_string(),
        source: path.to_path_buf(),
        kind,
        frames: frames.len(),
        source_size: [w, h],
        crop,
        stored_size: [ow, oh],
        frame_seconds,
        cached: false,
    };
    write_atomic(
        &scratch.join(".prepared"),
        format!("{key}\n{}", serde_json::to_string(&record)?).as_bytes(),
    )?;
    if dest.exists() {
        fs::remove_dir_all(&dest).with_context(|| format!("removing {}", dest.display()))?;
    }
    fs::rename(&scratch, &dest)
        .with_context(|| format!("moving {} to {}", scratch.display(), dest.display()))?;
    Ok(record)
}

fn cached_record(
    v: &serde_json::Value,
    id: &str,
    path: &Path,
    kind: SourceKind,
) -> Option<ClipRecord> {
    let pair = |k: &str| -> Option<[usize; 2]> {
        let a = v[k].as_array()?;
        Some([a.first()?.as_u64()? as usize, a.get(1)?.as_u64()? as usize])
    };
    let crop: Rect = serde_json::from_value(v["crop"].clone()).ok()?;
    Some(ClipRecord {
        clip: id.to_string(),
        source: path.to_path_buf(),
        kind,
        frames: v["frames"].as_u64()? as usize,
        source_size: pair("source_size")?,
        crop,
        stored_size: pair("stored_size")?,
        frame_seconds: v["frame_seconds"].as_f64(),
        cached: true,
    })
}

/// Prepares every clip listed in the labels CSV. Fails only on problems that concern the whole
/// dataset (unreadable labels, clips folder, output folder, or no clip prepared at all); a clip
/// that cannot be prepared is recorded in the report's `skipped` with the reason.
pub fn prepare(opts: &PrepareOptions) -> Result<PrepareReport> {
    ensure!(opts.stride > 0, "--stride must be positive");
    ensure!(
        opts.max_side.is_none_or(|s| s >= 32),
        "--max-side must be at least 32 pixels"
    );
    let tasks = TaskSet::standard();
    let rows = labels::read(&opts.labels, &tasks)?;
    let sources = index_sources(&opts.clips)?;
    fs::create_dir_all(opts.out.join("clips"))
        .with_context(|| format!("creating {}", opts.out.display()))?;

    let bar = progress::bar(rows.len(), "prepare", "clips");
    let mut kept: Vec<ClipLabels> = Vec::new();
    let mut report = PrepareReport {
        prepared: Vec::new(),
        skipped: Vec::new(),
    };
    for row in &rows {
        bar.set_message(row.clip.clone());
        let outcome = match sources.get(&row.clip) {
            None => Err(anyhow::anyhow!(
                "no video, DICOM file or image folder named `{}` in {}",
                row.clip,
                opts.clips.display()
            )),
            Some((path, kind)) => prepare_clip(&row.clip, path, *kind, opts),
        };
        match outcome {
            Ok(record) => {
                report.prepared.push(record);
                kept.push(row.clone());
            }
            Err(e) => {
                log::warn!("skipping clip `{}`: {e:#}", row.clip);
                report.skipped.push(Skipped {
                    clip: row.clip.clone(),
                    reason: format!("{e:#}"),
                });
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    ensure!(
        !kept.is_empty(),
        "no clip of {} could be prepared (first problem: {})",
        opts.labels.display(),
        report.skipped.first().map_or("none", |s| s.reason.as_str())
    );
    labels::write(&opts.out.join("labels.csv"), &tasks, &kept)?;
    write_split(&opts.out, &kept, &opts.split)?;
    // The store is rebuilt from the clip folders (fresh and reused clips alike), so it always
    // holds exactly the frames of the dataset's labels.
    let stored = super::store::convert(&opts.out)?;
    log::info!(
        "frame store {}: {} frames in {} shards",
        stored.dir.display(),
        stored.frames,
        stored.shards
    );
    // How the labels were made (an adapter's rule and counts), when it says so beside them.
    let provenance_file = labels::provenance_path(&opts.labels);
    let provenance: Option<serde_json::Value> = match fs::read(&provenance_file) {
        Ok(bytes) => Some(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("{}: not JSON", provenance_file.display()))?,
        ),
        Err(_) => None,
    };
    let info = serde_json::json!({
        "source": opts.clips.display().to_string(),
        "labels_provenance": provenance,
        "synthetic": false,
        "prepared_by": format!("pleura-train {}", env!("CARGO_PKG_VERSION")),
        "options": opts,
        "clips": report.prepared.len(),
        "frames": report.frames(),
        "skipped": report.skipped,
        "records": report.prepared,
    });
    write_atomic(
        &opts.out.join(DATASET_INFO),
        serde_json::to_string_pretty(&info)?.as_bytes(),
    )?;
    Ok(report)
}
