//! A dataset's frames as preprocessed network inputs: all in memory ([`FrameSet`], read from the
//! frame store or the PNG clip folders) or listed and read one at a time from the frame store
//! ([`FrameCatalog`], for pretraining on archives larger than memory).

use std::fs;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use burn::tensor::{Device, Tensor, TensorData};
use pleura::image::{read_png, GreyImage};
use pleura::pack::InputSpec;
use pleura::preprocess::{Normalise, Resize};

use crate::data::labels::{self, ClipLabels};
use crate::data::split::Part;
use crate::data::store::{self, FrameStore};
use crate::progress;
use crate::tasks::TaskSet;

/// Every `stride`-th frame of every clip, through the runtime's own preprocessing steps: loaded
/// with step 1, [`Resize`] (antialiased resize to the network's size, pixel scale `[0, 1]`),
/// and normalised in place by [`FrameSet::normalise`] with step 2, [`Normalise`], so that a
/// frame the runtime reads from the same source pixels becomes the same tensor (tested in
/// `trainer/tests/parity.rs`).
#[derive(Clone, Debug)]
pub struct FrameSet {
    /// Shape of one frame: `[channels, height, width]` (one channel: grey).
    pub dims: [usize; 3],
    /// All frames, concatenated.
    pub inputs: Vec<f32>,
    /// For each frame: the index of its clip in `clips`.
    pub frame_clip: Vec<usize>,
    /// For each frame: its place among the stored frames of its clip (0, 1, ... in file-name
    /// order, before `stride`), which orders frames in time.
    pub position: Vec<usize>,
    /// The labels CSV rows.
    pub clips: Vec<ClipLabels>,
    /// For each clip: seconds between consecutive stored frames, when `dataset.json` says
    /// (prepared videos: `stride / fps`; the phantom: its frame period).
    pub clip_seconds: Vec<Option<f64>>,
}

/// The runtime's normalisation step for a one-channel network input of `mean` and `std`.
pub fn network_normalise(mean: f32, std: f32) -> Result<Normalise> {
    Normalise::new(&InputSpec {
        mean,
        std,
        ..InputSpec::unnormalised(1, 1)
    })
}

/// Seconds between stored frames per clip id, from `dir/dataset.json`: `records[].frame_seconds`
/// of a prepared dataset, or a dataset-wide `frame_seconds` (the phantom). Empty when the file
/// or the fields are missing (older datasets).
fn clip_timing(dir: &Path) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(bytes) = fs::read(dir.join(crate::data::phantom::DATASET_INFO)) else {
        return out;
    };
    let Ok(info) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        log::warn!("{}: not JSON; frame times unknown", dir.display());
        return out;
    };
    if let Some(records) = info["records"].as_array() {
        for r in records {
            if let (Some(clip), Some(s)) = (r["clip"].as_str(), r["frame_seconds"].as_f64()) {
                out.insert(clip.to_string(), s);
            }
        }
    }
    if let Some(s) = info["frame_seconds"].as_f64() {
        out.insert(String::new(), s);
    }
    out
}

/// Reusable buffers for reading a stored 8-bit frame and resizing it to the network's size.
#[derive(Debug)]
pub struct FrameScratch {
    image: GreyImage,
    resize: Option<Resize>,
    size: [usize; 2],
}

impl FrameScratch {
    /// Buffers for network inputs of `[height, width]`.
    pub fn new(size: [usize; 2]) -> Self {
        Self {
            image: GreyImage::new(1, 1),
            resize: None,
            size,
        }
    }

    /// The image buffer a reader fills before [`FrameScratch::resize_into`].
    pub fn image(&mut self) -> &mut GreyImage {
        &mut self.image
    }

    /// Step 1 of the runtime's preprocessing ([`Resize`]) of `image` into `out` (pixel scale,
    /// `[height, width]`); the plan is kept while the source size stays the same.
    pub fn resize(&mut self, image: &GreyImage, out: &mut [f32]) -> Result<()> {
        resize_with(&mut self.resize, self.size, image, out)
    }

    /// [`FrameScratch::resize`] of the image buffer.
    pub fn resize_into(&mut self, out: &mut [f32]) -> Result<()> {
        resize_with(&mut self.resize, self.size, &self.image, out)
    }
}

fn resize_with(
    plan: &mut Option<Resize>,
    [height, width]: [usize; 2],
    image: &GreyImage,
    out: &mut [f32],
) -> Result<()> {
    match plan {
        Some(r) if r.source_size() == (image.width, image.height) => r.run(image, out),
        _ => {
            let mut r = Resize::new(image.width, image.height, None, width, height)?;
            let result = r.run(image, out);
            *plan = Some(r);
            result
        }
    }
}

/// Which frames of which clips a dataset holds, without their pixels: what pretraining needs to
/// choose frames and pair them (a view of a [`FrameSet`] or a [`FrameCatalog`]).
#[derive(Clone, Copy, Debug)]
pub struct FrameTable<'a> {
    /// For each frame: the index of its clip in `clips`.
    pub frame_clip: &'a [usize],
    /// For each frame: its place among the stored frames of its clip.
    pub position: &'a [usize],
    /// The labels CSV rows.
    pub clips: &'a [ClipLabels],
    /// For each clip: seconds between consecutive stored frames, when known.
    pub clip_seconds: &'a [Option<f64>],
}

impl FrameTable<'_> {
    /// Number of frames.
    pub fn len(&self) -> usize {
        self.frame_clip.len()
    }

    /// `true` when there is no frame.
    pub fn is_empty(&self) -> bool {
        self.frame_clip.is_empty()
    }

    /// The frames whose clip is in `part` (`parts` holds the part of every clip).
    pub fn frames_in(&self, parts: &[Part], part: Part) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| parts[self.frame_clip[i]] == part)
            .collect()
    }

    /// Seconds from frame `i` to frame `j` of the same clip (absolute), with `fallback` seconds
    /// between stored frames where the dataset does not say; `None` across clips.
    pub fn seconds_apart(&self, i: usize, j: usize, fallback: f64) -> Option<f64> {
        let c = self.frame_clip[i];
        (c == self.frame_clip[j]).then(|| {
            let step = self.clip_seconds[c].unwrap_or(fallback);
            self.position[i].abs_diff(self.position[j]) as f64 * step
        })
    }
}

/// Sum and sum of squares of one frame's values, in `f64`.
fn frame_sums(values: &[f32]) -> (f64, f64) {
    values.iter().fold((0.0, 0.0), |(s, q), &v| {
        let v = f64::from(v);
        (s + v, q + v * v)
    })
}

/// Mean and standard deviation from per-frame sums (added in frame order) over `n` values.
fn sums_to_stats(sums: impl Iterator<Item = (f64, f64)>, n: usize) -> (f32, f32) {
    let (sum, sq) = sums.fold((0.0, 0.0), |(s, q), (a, b)| (s + a, q + b));
    let mean = sum / n.max(1) as f64;
    let var = (sq / n.max(1) as f64 - mean * mean).max(1e-12);
    (mean as f32, var.sqrt() as f32)
}

/// The labelled clips of `dir` that `keep` accepts, and their frame timing.
fn dataset_clips(
    dir: &Path,
    tasks: &TaskSet,
    stride: usize,
    keep: impl Fn(&ClipLabels) -> bool,
) -> Result<(Vec<ClipLabels>, Vec<Option<f64>>)> {
    ensure!(stride > 0, "frame stride must be positive");
    let mut clips = labels::read(&dir.join("labels.csv"), tasks)?;
    clips.retain(|c| keep(c));
    ensure!(
        !clips.is_empty(),
        "{}: no clip to load (none of {} is labelled for these tasks)",
        dir.display(),
        dir.join("labels.csv").display()
    );
    let timing = clip_timing(dir);
    let clip_seconds = clips
        .iter()
        .map(|c| timing.get(&c.clip).or(timing.get("")).copied())
        .collect();
    Ok((clips, clip_seconds))
}

/// A dataset's frames in its frame store ([`crate::data::store`]), listed but not loaded: every
/// `stride`-th frame of every chosen clip, read one at a time with [`FrameCatalog::read`].
/// Memory holds the list (a few words a frame), never the pixels, so it stays flat as the
/// archive grows. A frame read here is the tensor [`FrameSet`] holds for it, bit for bit.
#[derive(Debug)]
pub struct FrameCatalog {
    /// Shape of one frame: `[channels, height, width]` (one channel: grey).
    pub dims: [usize; 3],
    /// For each frame: the index of its clip in `clips`.
    pub frame_clip: Vec<usize>,
    /// For each frame: its place among the stored frames of its clip (before `stride`).
    pub position: Vec<usize>,
    /// The labels CSV rows.
    pub clips: Vec<ClipLabels>,
    /// For each clip: seconds between consecutive stored frames, when known.
    pub clip_seconds: Vec<Option<f64>>,
    store: FrameStore,
    /// For each clip: its number in the store.
    store_clip: Vec<usize>,
}

impl FrameCatalog {
    /// Lists every `stride`-th frame of every clip of `dir/labels.csv` in `dir/frames`, for
    /// network inputs of `[height, width]`. A labelled clip missing from the store is an error
    /// naming it.
    pub fn open(dir: &Path, tasks: &TaskSet, size: [usize; 2], stride: usize) -> Result<Self> {
        Self::open_clips(dir, tasks, size, stride, |_| true)
    }

    /// [`FrameCatalog::open`] of the clips that `keep` accepts only.
    pub fn open_clips(
        dir: &Path,
        tasks: &TaskSet,
        size: [usize; 2],
        stride: usize,
        keep: impl Fn(&ClipLabels) -> bool,
    ) -> Result<Self> {
        let (clips, clip_seconds) = dataset_clips(dir, tasks, stride, keep)?;
        let store = FrameStore::open(dir)?;
        let mut store_clip = Vec::with_capacity(clips.len());
        let mut frame_clip = Vec::new();
        let mut position = Vec::new();
        for (c, clip) in clips.iter().enumerate() {
            let Some(n) = store.clip_number(&clip.clip) else {
                bail!(
                    "clip `{}` of {} is not in the frame store {} (written before the clip was \
                     added?): rewrite it with `pleura-train convert --data {}`",
                    clip.clip,
                    dir.join("labels.csv").display(),
                    store.dir().display(),
                    dir.display()
                );
            };
            store_clip.push(n);
            for k in (0..store.clips()[n].frames).step_by(stride) {
                frame_clip.push(c);
                position.push(k);
            }
        }
        Ok(Self {
            dims: [1, size[0], size[1]],
            frame_clip,
            position,
            clips,
            clip_seconds,
            store,
            store_clip,
        })
    }

    /// The frame list, without pixels.
    pub fn table(&self) -> FrameTable<'_> {
        FrameTable {
            frame_clip: &self.frame_clip,
            position: &self.position,
            clips: &self.clips,
            clip_seconds: &self.clip_seconds,
        }
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.frame_clip.len()
    }

    /// `true` when there is no frame.
    pub fn is_empty(&self) -> bool {
        self.frame_clip.is_empty()
    }

    /// Values per frame: `channels * height * width`.
    pub fn frame_len(&self) -> usize {
        self.dims.iter().product()
    }

    /// Reads frame `i` and resizes it into `out` (pixel scale, `frame_len()` values) with the
    /// runtime's [`Resize`]: what [`FrameSet::frame`] holds for the same frame.
    pub fn read(&self, i: usize, scratch: &mut FrameScratch, out: &mut [f32]) -> Result<()> {
        let c = self.frame_clip[i];
        self.store
            .read_frame(self.store_clip[c], self.position[i], scratch.image())?;
        scratch.resize_into(out).with_context(|| {
            format!(
                "preprocessing frame {} of clip `{}`",
                self.position[i], self.clips[c].clip
            )
        })
    }

    /// Mean and standard deviation of the pixel values of the given frames (read in parallel;
    /// the same numbers as [`FrameSet::stats`] on the same frames).
    pub fn stats(&self, frames: &[usize]) -> Result<(f32, f32)> {
        use rayon::prelude::*;
        let n = self.frame_len();
        let bar = progress::bar(frames.len(), "statistics", "frames");
        let sums = frames
            .par_chunks(256)
            .map_init(
                || {
                    (
                        FrameScratch::new([self.dims[1], self.dims[2]]),
                        vec![0.0; n],
                    )
                },
                |(scratch, buf), chunk| -> Result<Vec<(f64, f64)>> {
                    let sums = chunk
                        .iter()
                        .map(|&i| {
                            self.read(i, scratch, buf)?;
                            Ok(frame_sums(buf))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    bar.inc(chunk.len() as u64);
                    Ok(sums)
                },
            )
            .collect::<Result<Vec<_>>>()?;
        bar.finish_and_clear();
        Ok(sums_to_stats(sums.into_iter().flatten(), frames.len() * n))
    }

    /// Every frame, read into memory: the [`FrameSet`] of the same clips.
    pub fn load_all(self) -> Result<FrameSet> {
        let frame_len = self.frame_len();
        let bar = progress::bar(self.len(), "loading", "frames");
        let mut inputs = vec![0.0f32; self.len() * frame_len];
        let mut scratch = FrameScratch::new([self.dims[1], self.dims[2]]);
        for (i, out) in inputs.chunks_exact_mut(frame_len).enumerate() {
            self.read(i, &mut scratch, out)?;
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(FrameSet {
            dims: self.dims,
            inputs,
            frame_clip: self.frame_clip,
            position: self.position,
            clips: self.clips,
            clip_seconds: self.clip_seconds,
        })
    }
}

impl FrameSet {
    /// Loads `dir/labels.csv` and every `stride`-th frame of each clip, resized to
    /// `[height, width]` in pixel scale: from the dataset's frame store (`dir/frames`) when it
    /// has one, else from `dir/clips/<clip>/*.png`. A clip whose folder is missing, empty or
    /// holds an unreadable frame is an error naming the file.
    pub fn load(dir: &Path, tasks: &TaskSet, size: [usize; 2], stride: usize) -> Result<FrameSet> {
        Self::load_clips(dir, tasks, size, stride, |_| true)
    }

    /// [`FrameSet::load`] of the clips that `keep` accepts only (e.g. the labelled ones: an
    /// experiment never reads the frames of a clip without labels).
    pub fn load_clips(
        dir: &Path,
        tasks: &TaskSet,
        size: [usize; 2],
        stride: usize,
        keep: impl Fn(&ClipLabels) -> bool,
    ) -> Result<FrameSet> {
        if store::exists(dir) {
            return FrameCatalog::open_clips(dir, tasks, size, stride, keep)?.load_all();
        }
        Self::load_png_clips(dir, tasks, size, stride, keep)
    }

    /// [`FrameSet::load_clips`] from the PNG clip folders, even where a frame store exists.
    pub fn load_png_clips(
        dir: &Path,
        tasks: &TaskSet,
        size: [usize; 2],
        stride: usize,
        keep: impl Fn(&ClipLabels) -> bool,
    ) -> Result<FrameSet> {
        let (clips, clip_seconds) = dataset_clips(dir, tasks, stride, keep)?;
        let [height, width] = size;
        let dims = [1, height, width];
        let frame_len = dims.iter().product::<usize>();
        let mut lists = Vec::with_capacity(clips.len());
        for clip in &clips {
            let folder = dir.join("clips").join(&clip.clip);
            let files = store::png_files(&folder)?;
            ensure!(
                !files.is_empty(),
                "clip folder {} holds no PNG frame",
                folder.display()
            );
            lists.push(files.into_iter().step_by(stride).collect::<Vec<_>>());
        }
        let total: usize = lists.iter().map(Vec::len).sum();
        let bar = progress::bar(total, "loading", "frames");
        let mut inputs = vec![0.0f32; total * frame_len];
        let mut frame_clip = Vec::with_capacity(total);
        let mut position = Vec::with_capacity(total);
        let mut scratch = FrameScratch::new(size);
        for (c, files) in lists.iter().enumerate() {
            for (k, file) in files.iter().enumerate() {
                let image = read_png(file)?;
                let i = frame_clip.len();
                scratch
                    .resize(&image, &mut inputs[i * frame_len..(i + 1) * frame_len])
                    .with_context(|| format!("preprocessing {}", file.display()))?;
                frame_clip.push(c);
                position.push(k * stride);
                bar.inc(1);
            }
        }
        bar.finish_and_clear();
        Ok(FrameSet {
            dims,
            inputs,
            frame_clip,
            position,
            clips,
            clip_seconds,
        })
    }

    /// The frame list, without pixels.
    pub fn table(&self) -> FrameTable<'_> {
        FrameTable {
            frame_clip: &self.frame_clip,
            position: &self.position,
            clips: &self.clips,
            clip_seconds: &self.clip_seconds,
        }
    }

    /// The frames whose clip is in `part` (`parts` holds the part of every clip).
    pub fn frames_in(&self, parts: &[Part], part: Part) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| parts[self.frame_clip[i]] == part)
            .collect()
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.frame_clip.len()
    }

    /// `true` when there is no frame.
    pub fn is_empty(&self) -> bool {
        self.frame_clip.is_empty()
    }

    /// Values per frame: `channels * height * width`.
    pub fn frame_len(&self) -> usize {
        self.dims.iter().product()
    }

    /// The input of frame `i`.
    pub fn frame(&self, i: usize) -> &[f32] {
        let n = self.frame_len();
        &self.inputs[i * n..(i + 1) * n]
    }

    /// Frames `index` as one batch on `device`.
    ///
    /// # Shapes
    /// `[index.len(), channels, height, width]`.
    pub fn batch(&self, index: &[usize], device: &Device) -> Tensor<4> {
        let [c, h, w] = self.dims;
        let mut data = Vec::with_capacity(index.len() * self.frame_len());
        for &i in index {
            data.extend_from_slice(self.frame(i));
        }
        Tensor::from_data(TensorData::new(data, [index.len(), c, h, w]), device)
    }

    /// Seconds from frame `i` to frame `j` of the same clip (absolute), with `fallback` seconds
    /// between stored frames where the dataset does not say; `None` across clips.
    pub fn seconds_apart(&self, i: usize, j: usize, fallback: f64) -> Option<f64> {
        let c = self.frame_clip[i];
        (c == self.frame_clip[j]).then(|| {
            let step = self.clip_seconds[c].unwrap_or(fallback);
            self.position[i].abs_diff(self.position[j]) as f64 * step
        })
    }

    /// The frames of each clip, in time order: `clip -> frame indices`.
    pub fn clip_frames(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.clips.len()];
        for (i, &c) in self.frame_clip.iter().enumerate() {
            out[c].push(i);
        }
        for frames in &mut out {
            frames.sort_by_key(|&i| self.position[i]);
        }
        out
    }

    /// Class index of frame `i` for task number `task` (clip-level label).
    pub fn class(&self, i: usize, task: usize) -> Option<usize> {
        self.clips[self.frame_clip[i]].classes[task]
    }

    /// Mean and standard deviation of the pixel values of the given frames (per-frame sums in
    /// `f64`, added in frame order).
    pub fn stats(&self, frames: &[usize]) -> (f32, f32) {
        sums_to_stats(
            frames.iter().map(|&i| frame_sums(self.frame(i))),
            frames.len() * self.frame_len(),
        )
    }

    /// Normalises every value in place with the runtime's step 2 ([`Normalise`]) for a network
    /// input of mean `mean` and standard deviation `std` (`std` must be positive).
    pub fn normalise(&mut self, mean: f32, std: f32) -> Result<()> {
        network_normalise(mean, std)?.in_place(&mut self.inputs);
        Ok(())
    }
}
