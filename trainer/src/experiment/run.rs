//! One engine for `probe`, `finetune` and `sweep`: for every backbone initialisation, task,
//! label fraction and seed, train a model on the training patients, keep it at its best
//! validation AUC, and evaluate it on the local test split and on external sets.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use burn::tensor::Device;
use pleura::pack::InputSpec;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use super::{evaluate, roc_points, Evaluation, FrozenBackbone, Init, NamedData};
use crate::data::frames::FrameSet;
use crate::data::split::{dataset_parts, Part};
use crate::model::{FullNetwork, HeadConfig, HeadKind};
use crate::tasks::STANDARD;
use crate::train::finetune::{finetune, network_scores, FinetuneTraining};
use crate::train::probe::{extract_features, train_probe, HeadTraining};
use crate::train::{labelled, Labelled};

/// How a task model is made from a backbone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// A head on frozen features.
    Probe(HeadKind),
    /// Backbone and head trained end to end.
    Finetune(HeadKind),
}

impl Method {
    /// Name in tables: `linear`, `mlp` or `finetune`.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Probe(HeadKind::Linear) => "linear",
            Method::Probe(HeadKind::Mlp { .. }) => "mlp",
            Method::Finetune(_) => "finetune",
        }
    }
}

/// Settings of an experiment; saved in its `summary.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Experiment {
    /// The local dataset (split by patient: its `split.json`, or `split_seed`).
    pub data: PathBuf,
    /// External test sets, evaluated whole.
    pub externals: Vec<NamedData>,
    /// Backbones to compare.
    pub inits: Vec<Init>,
    /// Models to make from each backbone.
    pub methods: Vec<Method>,
    /// Fractions of the training patients' labelled clips to train on (1.0 = all).
    pub fractions: Vec<f64>,
    /// Seeds of head initialisation, batch order and label subsets.
    pub seeds: Vec<u64>,
    /// Head training on frozen features (its `kind` and `seed` are set per run).
    pub head: HeadTraining,
    /// End-to-end training (its `seed` is set per run).
    pub finetune: FinetuneTraining,
    /// Input side in pixels.
    pub size: usize,
    /// Use every `stride`-th frame.
    pub stride: usize,
    /// Fractions of patients held out when the dataset has no `split.json`.
    pub validation: f64,
    /// See `validation`.
    pub test: f64,
    /// Seed of that split and of the scratch backbone's weights.
    pub split_seed: u64,
    /// Bootstrap resamples per interval.
    pub bootstrap: usize,
}

impl Experiment {
    /// Defaults for `data`: scratch baseline only, linear probe, all labels, seeds 0-2.
    pub fn new(data: PathBuf) -> Self {
        Self {
            data,
            externals: Vec::new(),
            inits: vec![Init::Scratch],
            methods: vec![Method::Probe(HeadKind::Linear)],
            fractions: vec![1.0],
            seeds: vec![0, 1, 2],
            head: HeadTraining::default(),
            finetune: FinetuneTraining {
                lr: 1e-5,
                head_lr: Some(1e-4),
                ..FinetuneTraining::default()
            },
            size: 128,
            stride: 1,
            validation: 0.2,
            test: 0.2,
            split_seed: 0,
            bootstrap: 1000,
        }
    }
}

/// One trained model: the row shape of every experiment's `summary.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResultRow {
    /// Task name.
    pub task: String,
    /// `scratch`, `simclr`, `barlow`, `vicreg`, `imported`.
    pub init: String,
    /// `linear`, `mlp` or `finetune`.
    pub head: String,
    /// Fraction of the training patients' labelled clips used.
    pub label_fraction: f64,
    /// Seed of this model.
    pub seed: u64,
    /// Training frames used.
    pub train_frames: usize,
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
    /// ROC curves (false positive rate, true positive rate) per evaluation set, for plots.
    #[serde(skip, default)]
    pub roc: BTreeMap<String, Vec<(f64, f64)>>,
}

/// The labelled clips of `train` cut to `fraction` (by clip, per class, at least one clip of
/// each class), drawn from `seed`.
pub fn subsample(train: &Labelled, frames: &FrameSet, fraction: f64, seed: u64) -> Labelled {
    if fraction >= 1.0 {
        return train.clone();
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut keep = Vec::new();
    for class in [false, true] {
        let mut clips: Vec<usize> = train
            .index
            .iter()
            .zip(&train.positive)
            .filter(|(_, &p)| p == class)
            .map(|(&i, _)| frames.frame_clip[i])
            .collect();
        clips.sort_unstable();
        clips.dedup();
        clips.shuffle(&mut rng);
        let n = ((clips.len() as f64 * fraction).round() as usize).clamp(1, clips.len().max(1));
        keep.extend(clips.into_iter().take(n));
    }
    let mut out = Labelled::default();
    for (&i, &p) in train.index.iter().zip(&train.positive) {
        if keep.contains(&frames.frame_clip[i]) {
            out.index.push(i);
            out.positive.push(p);
        }
    }
    out
}

/// A dataset normalised for one backbone.
struct Prepared {
    frames: FrameSet,
    features: Vec<f32>,
}

fn normalised(
    set: &FrameSet,
    backbone: &FrozenBackbone,
    with_features: bool,
    plain: &Device,
) -> Prepared {
    let mut frames = set.clone();
    frames.normalise(backbone.mean, backbone.std);
    let features = if with_features {
        extract_features(&backbone.model, &frames, 64, plain)
    } else {
        Vec::new()
    };
    Prepared { frames, features }
}

/// Runs the experiment: one row per initialisation x method x task x fraction x seed.
pub fn execute(exp: &Experiment) -> Result<Vec<ResultRow>> {
    ensure!(!exp.seeds.is_empty(), "give at least one seed");
    ensure!(!exp.inits.is_empty(), "give at least one backbone");
    ensure!(
        !exp.methods.is_empty(),
        "give at least one head or fine-tuning"
    );
    ensure!(
        exp.fractions.iter().all(|f| *f > 0.0 && *f <= 1.0),
        "label fractions must be in (0, 1], got {:?}",
        exp.fractions
    );
    let raw_spec = InputSpec::unnormalised(exp.size, exp.size);
    let raw = FrameSet::load(&exp.data, &STANDARD, &raw_spec, exp.stride)?;
    let parts = dataset_parts(
        &exp.data,
        &raw.clips,
        exp.validation,
        exp.test,
        exp.split_seed,
    )?;
    let train_frames = raw.frames_in(&parts, Part::Train);
    let externals: Vec<(String, FrameSet)> = exp
        .externals
        .iter()
        .map(|e| {
            FrameSet::load(e.path(), &STANDARD, &raw_spec, exp.stride)
                .with_context(|| format!("external test set `{}`", e.name))
                .map(|f| (e.name.clone(), f))
        })
        .collect::<Result<_>>()?;
    let probes = exp.methods.iter().any(|m| matches!(m, Method::Probe(_)));

    let plain = Device::flex();
    let mut rows = Vec::new();
    for init in &exp.inits {
        let backbone = init.load(&raw, &train_frames, exp.size, exp.split_seed)?;
        let local = normalised(&raw, &backbone, probes, &plain);
        let ext: Vec<Prepared> = externals
            .iter()
            .map(|(_, f)| normalised(f, &backbone, probes, &plain))
            .collect();
        let dim = backbone.model.feature_dim();
        for (t, def) in STANDARD.iter().enumerate() {
            let [train, val, test] = [Part::Train, Part::Validation, Part::Test]
                .map(|p| labelled(&raw, t, |c| parts[c] == p));
            if train.is_empty() {
                log::info!("task `{}`: no labelled training frames, skipped", def.name);
                continue;
            }
            ensure!(
                train.has_both_classes(),
                "{}: task `{}` needs training frames of both classes ({} labelled)",
                exp.data.display(),
                def.name,
                train.len()
            );
            let ext_sets: Vec<Labelled> = externals
                .iter()
                .map(|(_, f)| labelled(f, t, |_| true))
                .collect();
            for method in &exp.methods {
                for &fraction in &exp.fractions {
                    for &seed in &exp.seeds {
                        let subset = subsample(&train, &raw, fraction, seed * 7919 + t as u64);
                        let label = format!(
                            "{} {} {} {:.0}% seed {seed}",
                            backbone.name,
                            method.name(),
                            def.name,
                            fraction * 100.0
                        );
                        // Scores on local test and each external set, from one trained model.
                        let (val_auc, scores): (Option<f64>, Vec<Vec<f32>>) = match method {
                            Method::Probe(kind) => {
                                let opts = HeadTraining {
                                    kind: *kind,
                                    seed: seed * 1000 + t as u64,
                                    ..exp.head.clone()
                                };
                                let head =
                                    train_probe(&local.features, dim, &subset, &val, &opts, &label);
                                let mut scores = vec![head.model.scores(
                                    &local.features,
                                    dim,
                                    &test.index,
                                    &plain,
                                )];
                                for (p, set) in ext.iter().zip(&ext_sets) {
                                    scores.push(head.model.scores(
                                        &p.features,
                                        dim,
                                        &set.index,
                                        &plain,
                                    ));
                                }
                                (head.val_auc, scores)
                            }
                            Method::Finetune(kind) => {
                                let ad = plain.clone().autodiff();
                                let net = FullNetwork::new(
                                    init.trainable(exp.size, exp.split_seed, &ad)?,
                                    HeadConfig::new(*kind, dim)
                                        .with_seed(seed * 1000 + 200 + t as u64)
                                        .init(&ad),
                                );
                                let opts = FinetuneTraining {
                                    seed: seed * 1000 + t as u64,
                                    ..exp.finetune.clone()
                                };
                                let net =
                                    finetune(net, &local.frames, &subset, &val, &opts, &label);
                                let mut scores = vec![network_scores(
                                    &net.model,
                                    &local.frames,
                                    &test.index,
                                    &plain,
                                )];
                                for (p, set) in ext.iter().zip(&ext_sets) {
                                    scores.push(network_scores(
                                        &net.model, &p.frames, &set.index, &plain,
                                    ));
                                }
                                (net.val_auc, scores)
                            }
                        };
                        let eval_seed = seed + 17 * t as u64;
                        let local_eval =
                            evaluate(&scores[0], &test, &raw, exp.bootstrap, eval_seed);
                        let mut roc = BTreeMap::from([(
                            "local test".to_string(),
                            roc_points(&scores[0], &test.positive),
                        )]);
                        let mut external = BTreeMap::new();
                        for (k, (name, frames)) in externals.iter().enumerate() {
                            let s = &scores[k + 1];
                            external.insert(
                                name.clone(),
                                evaluate(s, &ext_sets[k], frames, exp.bootstrap, eval_seed),
                            );
                            roc.insert(name.clone(), roc_points(s, &ext_sets[k].positive));
                        }
                        rows.push(ResultRow {
                            task: def.name.to_string(),
                            init: backbone.name.clone(),
                            head: method.name().to_string(),
                            label_fraction: fraction,
                            seed,
                            train_frames: subset.len(),
                            val_auc,
                            test_auc: local_eval.auc,
                            test_auc_ci: local_eval.auc_ci,
                            test: local_eval,
                            external,
                            roc,
                        });
                    }
                }
            }
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::labels::ClipLabels;

    #[test]
    fn subsets_keep_both_classes_and_whole_clips() {
        // 20 clips of 3 frames; clips 0-4 positive.
        let frames = FrameSet {
            dims: [1, 1, 1],
            inputs: vec![0.0; 60],
            frame_clip: (0..60).map(|i| i / 3).collect(),
            clips: (0..20)
                .map(|c| ClipLabels {
                    clip: format!("c{c}"),
                    patient: format!("p{c}"),
                    classes: vec![None, Some(usize::from(c < 5)), None],
                })
                .collect(),
        };
        let train = labelled(&frames, 1, |_| true);
        let one = subsample(&train, &frames, 0.01, 4);
        assert_eq!(one.len(), 6, "one clip of each class");
        assert!(one.has_both_classes());
        let half = subsample(&train, &frames, 0.5, 4);
        assert_eq!(
            half.len(),
            3 * (3 + 8),
            "half of 5 positive (rounded) and of 15 negative clips"
        );
        assert_eq!(
            subsample(&train, &frames, 0.5, 4).index,
            half.index,
            "seeded"
        );
        assert_eq!(subsample(&train, &frames, 1.0, 4).len(), 60);
    }
}
