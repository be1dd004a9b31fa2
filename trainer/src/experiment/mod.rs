//! Experiments that compare backbone initialisations the paper's way: heads on frozen features,
//! evaluated by ROC AUC on a held-out test split (by patient) and on external test sets, with
//! patient-bootstrap intervals, at frame and clip level.

pub mod probe;
pub mod report;

use std::path::{Path, PathBuf};

use anyhow::{ensure, Result};
use burn::module::Module;
use serde::Serialize;

use crate::data::frames::FrameSet;
use crate::eval::auc::roc_auc;
use crate::eval::bootstrap::patient_bootstrap_ci;
use crate::model::{MobileNetV3, MobileNetV3Config};
use crate::train::calibrate::scratch_backbone;
use crate::train::pretrain::load_backbone;
use crate::train::Labelled;

/// Where a frozen backbone comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Init {
    /// Seeded random weights with BatchNorm statistics measured on training frames: the
    /// baseline that pretraining must beat.
    Scratch,
    /// The backbone of a finished `pleura-train pretrain` run.
    Pretrained(PathBuf),
}

/// A backbone in inference mode with the input normalisation it expects.
#[derive(Clone, Debug)]
pub struct FrozenBackbone {
    /// `scratch` or the SSL method (`simclr`, `barlow`, `vicreg`).
    pub name: String,
    /// The network.
    pub model: MobileNetV3,
    /// Normalisation of `[0, 1]` pixels.
    pub mean: f32,
    /// See `mean`.
    pub std: f32,
}

impl Init {
    /// Builds the backbone for frames of `size` pixels. `raw` holds unnormalised frames and
    /// `train` the training frames among them (the scratch baseline measures its
    /// normalisation and BatchNorm statistics there; `seed` sets its weights).
    pub fn load(
        &self,
        raw: &FrameSet,
        train: &[usize],
        size: usize,
        seed: u64,
    ) -> Result<FrozenBackbone> {
        match self {
            Init::Scratch => {
                let (mean, std) = raw.stats(train);
                let mut frames = raw.clone();
                frames.normalise(mean, std);
                let config = MobileNetV3Config::small().with_seed(seed);
                Ok(FrozenBackbone {
                    name: "scratch".into(),
                    model: scratch_backbone(&config, &frames, train),
                    mean,
                    std,
                })
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
                Ok(FrozenBackbone {
                    name: info.method.to_string(),
                    model: model.valid(),
                    mean: info.input.mean,
                    std: info.input.std,
                })
            }
        }
    }
}

/// A dataset to evaluate on, with a display name.
#[derive(Clone, Debug)]
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
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
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
}

/// Evaluates `scores` (one per example of `set`, in order) against the labels of `set`, whose
/// indices are frames of `frames`. `reps` bootstrap resamples from `seed`.
pub fn evaluate(
    scores: &[f32],
    set: &Labelled,
    frames: &FrameSet,
    reps: usize,
    seed: u64,
) -> Evaluation {
    let clip_of: Vec<usize> = set.index.iter().map(|&i| frames.frame_clip[i]).collect();
    let mut patient_names: Vec<&str> = clip_of
        .iter()
        .map(|&c| frames.clips[c].patient.as_str())
        .collect();
    let patient_of: Vec<usize> = {
        let mut sorted = patient_names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        patient_names
            .iter()
            .map(|p| sorted.binary_search(p).unwrap_or(0))
            .collect()
    };
    patient_names.sort_unstable();
    patient_names.dedup();

    let mut clips: Vec<usize> = clip_of.clone();
    clips.sort_unstable();
    clips.dedup();
    let (mut clip_scores, mut clip_labels) = (Vec::new(), Vec::new());
    for &c in &clips {
        let members: Vec<usize> = (0..clip_of.len()).filter(|&k| clip_of[k] == c).collect();
        let mean = members.iter().map(|&k| scores[k]).sum::<f32>() / members.len() as f32;
        clip_scores.push(mean);
        clip_labels.push(set.positive[members[0]]);
    }
    Evaluation {
        frames: set.len(),
        clips: clips.len(),
        patients: patient_names.len(),
        auc: roc_auc(scores, &set.positive),
        auc_ci: patient_bootstrap_ci(scores, &set.positive, &patient_of, reps, 0.95, seed),
        clip_auc: roc_auc(&clip_scores, &clip_labels),
    }
}
