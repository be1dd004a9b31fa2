//! Experiments that compare backbone initialisations the paper's way: heads on frozen features,
//! evaluated by ROC AUC on a held-out test split (by patient), or by k-fold cross-validation
//! over patients, and on external test sets, with patient-bootstrap intervals, at frame and
//! clip level, against a random-initialisation baseline and a pixel floor.

pub mod cv;
pub mod pixels;
pub mod report;
pub mod run;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Result};
use burn::module::Module;
use burn::tensor::Device;
use serde::Serialize;

use crate::data::frames::FrameSet;
use crate::eval::auc::roc_auc;
use crate::eval::bootstrap::patient_bootstrap_ci;
use crate::eval::clip::ClipRule;
use crate::model::import::import_onnx;
use crate::model::{MobileNetV3, MobileNetV3Config};
use crate::train::calibrate::{recalibrate_batchnorm, scratch_backbone};
use crate::train::pretrain::{load_backbone, load_backbone_on};
use crate::train::Labelled;

/// Where a frozen backbone comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Seeded random weights with BatchNorm statistics measured on training frames: the
    /// baseline that pretraining must beat.
    Scratch,
    /// The backbone of a finished `pleura-train pretrain` run.
    Pretrained(PathBuf),
    /// A torchvision-layout MobileNetV3-Small ONNX file the user brings (ImageNet weights, say);
    /// BatchNorm statistics are measured on training frames as for scratch.
    Imported(PathBuf),
    /// No network: the frame averaged down to `side x side` pixels, so that a linear head on
    /// it is a logistic regression on pixels. The floor any learned feature must clear.
    Pixels(usize),
}

/// A backbone in inference mode with the input normalisation it expects.
#[derive(Clone, Debug)]
pub struct FrozenBackbone {
    /// How it was made: `scratch`, `imported`, or the SSL method (`simclr`, `barlow`, `vicreg`).
    pub method: String,
    /// The network.
    pub model: MobileNetV3,
    /// Normalisation of `[0, 1]` pixels.
    pub mean: f32,
    /// See `mean`.
    pub std: f32,
}

/// What turns frames into the features a head reads.
#[derive(Clone, Debug)]
pub enum Extractor {
    /// A frozen network.
    Network(Box<FrozenBackbone>),
    /// Frames averaged down to `side x side` pixels.
    Pixels(usize),
}

impl Extractor {
    /// `scratch`, `imported`, `pixels` or the SSL method.
    pub fn method(&self) -> String {
        match self {
            Extractor::Network(b) => b.method.clone(),
            Extractor::Pixels(_) => "pixels".into(),
        }
    }

    /// Features per frame.
    pub fn dim(&self) -> usize {
        match self {
            Extractor::Network(b) => b.model.feature_dim(),
            Extractor::Pixels(side) => side * side,
        }
    }
}

impl Init {
    /// `true` when the features do not depend on which frames are training frames (a
    /// pretrained backbone, the pixels), so one extraction serves every fold.
    pub fn fold_independent(&self) -> bool {
        matches!(self, Init::Pretrained(_) | Init::Pixels(_))
    }

    /// Builds the feature extractor for frames of `size` pixels. `raw` holds unnormalised
    /// frames and `train` the training frames among them (the scratch baseline measures its
    /// normalisation and BatchNorm statistics there; `seed` sets its weights).
    pub fn load(
        &self,
        raw: &FrameSet,
        train: &[usize],
        size: usize,
        seed: u64,
    ) -> Result<Extractor> {
        match self {
            Init::Pixels(side) => {
                ensure!(
                    *side >= 1 && *side <= size,
                    "pixel baseline side {side} must be in 1..={size}"
                );
                Ok(Extractor::Pixels(*side))
            }
            Init::Scratch | Init::Imported(_) => {
                let (mean, std) = raw.stats(train);
                let mut frames = raw.clone();
                frames.normalise(mean, std)?;
                let config = MobileNetV3Config::small().with_seed(seed);
                let model = match self {
                    Init::Imported(path) => {
                        let model = import_onnx(path, &config, &Device::flex())?;
                        recalibrate_batchnorm(&model, &frames, &calibration_frames(train), 32)
                    }
                    _ => scratch_backbone(&config, &frames, train),
                };
                Ok(Extractor::Network(Box::new(FrozenBackbone {
                    method: self.name(),
                    model,
                    mean,
                    std,
                })))
            }
            Init::Pretrained(run) => {
                let (model, info) = load_backbone(run)?;
                ensure!(
                    (info.input.height, info.input.width) == (size, size),
                    "{}: the backbone was pretrained at {}x{}, this experiment uses {size}x{size} (--size)",
                    run.display(),
                    info.input.width,
                    info.input.height
                );
                Ok(Extractor::Network(Box::new(FrozenBackbone {
                    method: info.method.to_string(),
                    model: model.valid(),
                    mean: info.input.mean,
                    std: info.input.std,
                })))
            }
        }
    }
}

impl Init {
    /// `scratch`, `imported`, `pixels`, or for a pretraining run its folder name (two runs of
    /// one method are two rows).
    pub fn name(&self) -> String {
        match self {
            Init::Scratch => "scratch".into(),
            Init::Imported(_) => "imported".into(),
            Init::Pixels(_) => "pixels".into(),
            Init::Pretrained(run) => run.file_name().map_or_else(
                || run.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
        }
    }

    /// A fresh copy of the backbone on the autodiff device `device`, to fine-tune (its
    /// BatchNorms train on batch statistics). `seed` sets the scratch weights.
    pub fn trainable(&self, size: usize, seed: u64, device: &Device) -> Result<MobileNetV3> {
        let config = MobileNetV3Config::small().with_seed(seed);
        match self {
            Init::Pixels(_) => anyhow::bail!("the pixel baseline has no network to fine-tune"),
            Init::Scratch => Ok(config.init(device)),
            Init::Imported(path) => import_onnx(path, &config, device),
            Init::Pretrained(run) => {
                let (model, info) = load_backbone_on(run, device)?;
                ensure!(
                    (info.input.height, info.input.width) == (size, size),
                    "{}: pretrained at {}x{}, not {size}x{size}",
                    run.display(),
                    info.input.width,
                    info.input.height
                );
                Ok(model)
            }
        }
    }
}

fn calibration_frames(train: &[usize]) -> Vec<usize> {
    train
        .iter()
        .copied()
        .step_by((train.len() / 256).max(1))
        .collect()
}

/// The points of the ROC curve of `scores` against `labels` (`(0, 0)` to `(1, 1)`, one point
/// per distinct score). Empty when a class is missing.
pub fn roc_points(scores: &[f32], labels: &[bool]) -> Vec<(f64, f64)> {
    let pos = labels.iter().filter(|&&l| l).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut points = vec![(0.0, 0.0)];
    for (k, &i) in order.iter().enumerate() {
        if labels[i] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        let last_of_tie = order.get(k + 1).is_none_or(|&j| scores[j] != scores[i]);
        if last_of_tie {
            points.push((fp / neg, tp / pos));
        }
    }
    points
}

/// A dataset to evaluate on, with a display name.
#[derive(Clone, Debug, Serialize)]
pub struct NamedData {
    /// Short name used in tables (`local`, an external set's name).
    pub name: String,
    /// Folder with `labels.csv` and `clips/`.
    pub path: PathBuf,
}

impl NamedData {
    /// Parses `NAME=DIR`, or `DIR` (named after its last path component).
    pub fn parse(text: &str) -> Self {
        match text.split_once('=') {
            Some((name, dir)) if !name.is_empty() => Self {
                name: name.to_string(),
                path: PathBuf::from(dir),
            },
            _ => {
                let path = PathBuf::from(text);
                let name = path
                    .file_name()
                    .map_or_else(|| text.to_string(), |n| n.to_string_lossy().into_owned());
                Self { name, path }
            }
        }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// AUC of one model on one labelled set, with its interval and the clip-level AUC.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Evaluation {
    /// Labelled frames.
    pub frames: usize,
    /// Clips they come from.
    pub clips: usize,
    /// Patients they come from.
    pub patients: usize,
    /// Frame-level ROC AUC (`None` when a class is missing).
    pub auc: Option<f64>,
    /// 95% interval of `auc`, bootstrap over patients.
    pub auc_ci: Option<[f64; 2]>,
    /// ROC AUC of clip scores (mean of the clip's frame probabilities).
    pub clip_auc: Option<f64>,
    /// ROC AUC of clip scores under each clip rule ([`ClipRule::name`]), `mean` included.
    #[serde(default)]
    pub clip: BTreeMap<String, f64>,
}

/// One clip of an evaluation set: its label, patient and frame scores in time order.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipScores {
    /// `true` = positive class.
    pub positive: bool,
    /// Patient index (any id, equal for one patient).
    pub patient: usize,
    /// Frame scores in time order.
    pub scores: Vec<f32>,
}

/// Groups the scored frames `index` (frames of `frames`, with `scores` and labels `positive`
/// alongside) into clips, each in time order.
pub fn clips_of(
    index: &[usize],
    scores: &[f32],
    positive: &[bool],
    frames: &FrameSet,
    patient_of: &[usize],
) -> Vec<ClipScores> {
    let mut by_clip: BTreeMap<usize, Vec<(usize, f32, bool, usize)>> = BTreeMap::new();
    for (k, &i) in index.iter().enumerate() {
        by_clip.entry(frames.frame_clip[i]).or_default().push((
            frames.position[i],
            scores[k],
            positive[k],
            patient_of[k],
        ));
    }
    by_clip
        .into_values()
        .map(|mut members| {
            members.sort_by_key(|m| m.0);
            ClipScores {
                positive: members[0].2,
                patient: members[0].3,
                scores: members.iter().map(|m| m.1).collect(),
            }
        })
        .collect()
}

/// ROC AUC of the clips under `rule`.
pub fn clip_rule_auc(clips: &[ClipScores], rule: ClipRule) -> Option<f64> {
    let (scores, labels): (Vec<f32>, Vec<bool>) = clips
        .iter()
        .filter_map(|c| Some((rule.score(&c.scores)?, c.positive)))
        .unzip();
    roc_auc(&scores, &labels)
}

/// Patient indices (`0..`) of the clips of `frames`' examples `index`.
pub fn patient_indices(index: &[usize], frames: &FrameSet) -> Vec<usize> {
    let names: Vec<&str> = index
        .iter()
        .map(|&i| frames.clips[frames.frame_clip[i]].patient.as_str())
        .collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    names
        .iter()
        .map(|p| sorted.binary_search(p).unwrap_or(0))
        .collect()
}

/// Evaluates `scores` (one per example of `set`, in order) against the labels of `set`, whose
/// indices are frames of `frames`: frame AUC with its patient-bootstrap interval (`reps`
/// resamples from `seed`), and clip AUC under each of `rules`.
pub fn evaluate(
    scores: &[f32],
    set: &Labelled,
    frames: &FrameSet,
    rules: &[ClipRule],
    reps: usize,
    seed: u64,
) -> Evaluation {
    let patient_of = patient_indices(&set.index, frames);
    let clips = clips_of(&set.index, scores, &set.positive, frames, &patient_of);
    let mut patients = patient_of.clone();
    patients.sort_unstable();
    patients.dedup();
    let clip: BTreeMap<String, f64> = rules
        .iter()
        .filter_map(|r| Some((r.name(), clip_rule_auc(&clips, *r)?)))
        .collect();
    Evaluation {
        frames: set.len(),
        clips: clips.len(),
        patients: patients.len(),
        auc: roc_auc(scores, &set.positive),
        auc_ci: patient_bootstrap_ci(scores, &set.positive, &patient_of, reps, 0.95, seed),
        clip_auc: clip_rule_auc(&clips, ClipRule::Mean),
        clip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roc_points_run_from_corner_to_corner_and_merge_ties() {
        let p = roc_points(&[0.9, 0.8, 0.8, 0.1], &[true, false, true, false]);
        assert_eq!(p, vec![(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]);
        assert!(roc_points(&[0.1], &[true]).is_empty());
    }

    #[test]
    fn names_and_external_sets_parse() {
        assert_eq!(
            Init::Pretrained(PathBuf::from("runs/vicreg")).name(),
            "vicreg"
        );
        let d = NamedData::parse("mmc=/data/mmc");
        assert_eq!((d.name.as_str(), d.path()), ("mmc", Path::new("/data/mmc")));
        assert_eq!(NamedData::parse("/data/other").name, "other");
    }
}
