//! A dataset folder loaded into memory as preprocessed network inputs.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use burn::tensor::{Device, Tensor, TensorData};
use pleura::image::read_png;
use pleura::pack::InputSpec;
use pleura::preprocess::Preprocessor;

use crate::data::labels::{self, ClipLabels};
use crate::data::split::Part;
use crate::progress;
use crate::tasks::TaskDef;

/// Every `stride`-th frame of every clip, preprocessed to `[channels, height, width]` with the
/// runtime's own [`Preprocessor`] (scaled to `[0, 1]`, mean 0, std 1: normalise with
/// [`FrameSet::normalise`]).
#[derive(Clone, Debug)]
pub struct FrameSet {
    /// Shape of one frame: `[channels, height, width]`.
    pub dims: [usize; 3],
    /// All frames, concatenated.
    pub inputs: Vec<f32>,
    /// For each frame: the index of its clip in `clips`.
    pub frame_clip: Vec<usize>,
    /// The labels CSV rows.
    pub clips: Vec<ClipLabels>,
}

/// The frame files of a clip folder (`.png`), in name order.
fn frame_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("listing clip folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
        .collect();
    files.sort();
    Ok(files)
}

impl FrameSet {
    /// Loads `dir/labels.csv` and every `stride`-th frame of `dir/clips/<clip>/`, resized to
    /// `input`'s size. A clip whose folder is missing, empty or holds an unreadable frame is an
    /// error naming the file.
    pub fn load(
        dir: &Path,
        tasks: &[TaskDef],
        input: &InputSpec,
        stride: usize,
    ) -> Result<FrameSet> {
        ensure!(stride > 0, "frame stride must be positive");
        let clips = labels::read(&dir.join("labels.csv"), tasks)?;
        let spec = InputSpec {
            mean: 0.0,
            std: 1.0,
            ..input.clone()
        };
        let dims = [spec.channels, spec.height, spec.width];
        let frame_len = dims.iter().product::<usize>();
        let mut lists = Vec::with_capacity(clips.len());
        for clip in &clips {
            let folder = dir.join("clips").join(&clip.clip);
            let files = frame_files(&folder)?;
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
        let mut pre: Option<Preprocessor> = None;
        for (c, files) in lists.iter().enumerate() {
            for file in files {
                let image = read_png(file)?;
                let fits = pre
                    .as_ref()
                    .is_some_and(|p| p.source_size() == (image.width, image.height));
                if !fits {
                    pre = Some(Preprocessor::new(&spec, image.width, image.height, None)?);
                }
                let i = frame_clip.len();
                if let Some(p) = pre.as_mut() {
                    p.run(&image, &mut inputs[i * frame_len..(i + 1) * frame_len])
                        .with_context(|| format!("preprocessing {}", file.display()))?;
                }
                frame_clip.push(c);
                bar.inc(1);
            }
        }
        bar.finish_and_clear();
        Ok(FrameSet {
            dims,
            inputs,
            frame_clip,
            clips,
        })
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

    /// Class index of frame `i` for task number `task` (clip-level label).
    pub fn class(&self, i: usize, task: usize) -> Option<usize> {
        self.clips[self.frame_clip[i]].classes[task]
    }

    /// Mean and standard deviation of the pixel values of the given frames.
    pub fn stats(&self, frames: &[usize]) -> (f32, f32) {
        let (mut sum, mut sq, mut n) = (0.0f64, 0.0f64, 0usize);
        for &i in frames {
            for &v in self.frame(i) {
                sum += v as f64;
                sq += (v as f64) * (v as f64);
            }
            n += self.frame_len();
        }
        let mean = sum / n.max(1) as f64;
        let var = (sq / n.max(1) as f64 - mean * mean).max(1e-12);
        (mean as f32, var.sqrt() as f32)
    }

    /// Applies `(x - mean) / std` to every value, matching a manifest with that normalisation.
    pub fn normalise(&mut self, mean: f32, std: f32) {
        self.inputs.iter_mut().for_each(|v| *v = (*v - mean) / std);
    }
}
