//! `pleura-train probe`: heads on the frozen features of each backbone initialisation, every
//! task, several seeds, evaluated on the local test split and on external sets.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use burn::tensor::Device;
use pleura::pack::InputSpec;
use serde::Serialize;

use super::{evaluate, Evaluation, Init, NamedData};
use crate::data::frames::FrameSet;
use crate::data::split::{by_patient, Part};
use crate::model::HeadKind;
use crate::tasks::STANDARD;
use crate::train::labelled;
use crate::train::probe::{extract_features, train_probe, HeadTraining};

/// Settings of a probe experiment; saved in its `summary.json`.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeExperiment {
    /// The local dataset (train / validation / test split by patient).
    pub data: PathBuf,
    /// External test sets, evaluated whole.
    #[serde(skip)]
    pub externals: Vec<NamedData>,
    /// Backbones to compare.
    #[serde(skip)]
    pub inits: Vec<Init>,
    /// Head training (its `seed` is replaced by each of `seeds`).
    pub head: HeadTraining,
    /// Seeds of head initialisation and batch order.
    pub seeds: Vec<u64>,
    /// Input side in pixels.
    pub size: usize,
    /// Use every `stride`-th frame.
    pub stride: usize,
    /// Fractions of patients held out for validation and test.
    pub validation: f64,
    /// See `validation`.
    pub test: f64,
    /// Seed of the patient split (fixed across heads and seeds) and of the scratch weights.
    pub split_seed: u64,
    /// Bootstrap resamples per interval.
    pub bootstrap: usize,
}

/// One trained head: the row shape shared by every experiment's `summary.json`.
#[derive(Clone, Debug, Serialize)]
pub struct ResultRow {
    /// Task name.
    pub task: String,
    /// `scratch`, `simclr`, `barlow`, `vicreg`.
    pub init: String,
    /// `linear`, `mlp` or `finetune`.
    pub head: String,
    /// Fraction of the training patients' labels used.
    pub label_fraction: f64,
    /// Seed of this head.
    pub seed: u64,
    /// Validation AUC at the kept step (early stopping).
    pub val_auc: Option<f64>,
    /// Local test AUC (frame level).
    pub test_auc: Option<f64>,
    /// 95% interval of `test_auc`, bootstrap over patients.
    pub test_auc_ci: Option<[f64; 2]>,
    /// Local test, in full.
    pub test: Evaluation,
    /// Each external set by name.
    pub external: BTreeMap<String, Evaluation>,
}

/// The name of a head kind in tables.
pub fn head_name(kind: HeadKind) -> &'static str {
    match kind {
        HeadKind::Linear => "linear",
        HeadKind::Mlp { .. } => "mlp",
    }
}

/// Runs the experiment; one row per task x initialisation x seed.
pub fn run_probes(exp: &ProbeExperiment) -> Result<Vec<ResultRow>> {
    ensure!(!exp.seeds.is_empty(), "give at least one seed");
    ensure!(!exp.inits.is_empty(), "give at least one backbone");
    let raw_spec = InputSpec::unnormalised(exp.size, exp.size);
    let raw = FrameSet::load(&exp.data, &STANDARD, &raw_spec, exp.stride)?;
    let parts = by_patient(&raw.clips, exp.validation, exp.test, exp.split_seed)?;
    let train_frames: Vec<usize> = (0..raw.len())
        .filter(|&i| parts[raw.frame_clip[i]] == Part::Train)
        .collect();
    let externals: Vec<(String, FrameSet)> = exp
        .externals
        .iter()
        .map(|e| {
            FrameSet::load(e.path(), &STANDARD, &raw_spec, exp.stride)
                .with_context(|| format!("external test set `{}`", e.name))
                .map(|f| (e.name.clone(), f))
        })
        .collect::<Result<_>>()?;

    let plain = Device::flex();
    let mut rows = Vec::new();
    for init in &exp.inits {
        let backbone = init.load(&raw, &train_frames, exp.size, exp.split_seed)?;
        let dim = backbone.model.feature_dim();
        let features_of = |set: &FrameSet| {
            let mut frames = set.clone();
            frames.normalise(backbone.mean, backbone.std);
            extract_features(&backbone.model, &frames, 64, &plain)
        };
        let features = features_of(&raw);
        let external_features: Vec<Vec<f32>> =
            externals.iter().map(|(_, f)| features_of(f)).collect();
        for (t, def) in STANDARD.iter().enumerate() {
            let [train, val, test] = [Part::Train, Part::Validation, Part::Test]
                .map(|p| labelled(&raw, t, |c| parts[c] == p));
            ensure!(
                train.has_both_classes(),
                "{}: task `{}` needs training frames of both classes ({} labelled)",
                exp.data.display(),
                def.name,
                train.len()
            );
            for &seed in &exp.seeds {
                let opts = HeadTraining {
                    seed: seed * 1000 + t as u64,
                    ..exp.head.clone()
                };
                let label = format!("{} {} seed {seed}", backbone.name, def.name);
                let head = train_probe(&features, dim, &train, &val, &opts, &label);
                let scores = head.model.scores(&features, dim, &test.index, &plain);
                let local = evaluate(&scores, &test, &raw, exp.bootstrap, seed);
                let mut external = BTreeMap::new();
                for ((name, frames), feats) in externals.iter().zip(&external_features) {
                    let set = labelled(frames, t, |_| true);
                    let scores = head.model.scores(feats, dim, &set.index, &plain);
                    external.insert(
                        name.clone(),
                        evaluate(&scores, &set, frames, exp.bootstrap, seed),
                    );
                }
                rows.push(ResultRow {
                    task: def.name.to_string(),
                    init: backbone.name.clone(),
                    head: head_name(exp.head.kind).to_string(),
                    label_fraction: 1.0,
                    seed,
                    val_auc: head.val_auc,
                    test_auc: local.auc,
                    test_auc_ci: local.auc_ci,
                    test: local,
                    external,
                });
            }
        }
    }
    Ok(rows)
}
