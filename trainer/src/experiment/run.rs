//! One engine for `probe`, `finetune` and `sweep`: for every backbone initialisation, fold, task,
//! label fraction and seed, train a model on the training patients, keep it at its best
//! validation AUC, and evaluate it on the test patients and on external sets. With
//! `folds = Some(k)` every patient is tested once, by the model of its fold, and [`super::cv`]
//! pools the folds; otherwise the dataset's fixed train / validation / test split is used.
//! Only labelled clips are read (unlabelled ones serve pretraining alone).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use burn::tensor::Device;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use super::pixels::pixel_features;
use super::{evaluate, roc_points, Evaluation, Extractor, Init, NamedData};
use crate::data::frames::FrameSet;
use crate::data::labels::ClipLabels;
use crate::data::split::{dataset_parts, fold_parts, Part};
use crate::eval::clip::ClipRule;
use crate::model::{FullNetwork, HeadConfig, HeadKind};
use crate::tasks::TaskSet;
use crate::train::finetune::{finetune, network_scores, FinetuneTraining};
use crate::train::pretrain::{PretrainClips, PretrainedBackbone};
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
    /// `Some(k)`: k-fold cross-validation over patients (each fold tested once, the next fold
    /// validates, the rest train; results pooled out of fold). `None`: the fixed split.
    pub folds: Option<usize>,
    /// Run length (evaluated frames) of the clip rule "longest run above threshold".
    pub clip_run: usize,
}

impl Experiment {
    /// Defaults for `data`: scratch baseline only, linear probe, all labels, seeds 0-2, the
    /// fixed split.
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
            folds: None,
            clip_run: 3,
        }
    }

    /// The clip rules every evaluation reports.
    pub fn clip_rules(&self) -> [ClipRule; 3] {
        ClipRule::standard(self.clip_run)
    }
}

/// One trained model: the row shape of every experiment's `summary.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResultRow {
    /// Task name.
    pub task: String,
    /// The backbone's name: `scratch`, `pixels`, `imported`, or a pretraining run's folder.
    pub init: String,
    /// How that backbone was made: `scratch`, `pixels`, `imported`, `simclr`, `barlow`, `vicreg`.
    #[serde(default)]
    pub method: String,
    /// `linear`, `mlp` or `finetune`.
    pub head: String,
    /// Fraction of the training patients' labelled clips used.
    pub label_fraction: f64,
    /// Seed of this model.
    pub seed: u64,
    /// Cross-validation fold whose patients were the test part (`None`: the fixed split).
    #[serde(default)]
    pub fold: Option<usize>,
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
    /// The scores behind the evaluations, for pooling over folds.
    #[serde(skip, default)]
    pub scores: RowScores,
}

/// The frame scores of one model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RowScores {
    /// Local test frames (indices into the dataset's frames) and their scores.
    pub test_index: Vec<usize>,
    /// See `test_index`.
    pub test: Vec<f32>,
    /// Per external set (in the experiment's order), a score per labelled frame, in the order
    /// of that set's labelled frames.
    pub external: Vec<Vec<f32>>,
}

/// What an experiment produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// One row per trained model.
    pub rows: Vec<ResultRow>,
    /// Cross-validation results pooled over folds (empty for the fixed split).
    pub cv: Vec<super::cv::CvRow>,
    /// What the report needs to say about the data and the backbones.
    pub notes: Vec<String>,
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

/// Features (and, for fine-tuning, normalised frames) of one dataset for one extractor.
struct Prepared {
    frames: Option<FrameSet>,
    features: Vec<f32>,
}

fn prepare_set(
    set: &FrameSet,
    extractor: &Extractor,
    probes: bool,
    finetunes: bool,
    plain: &Device,
) -> Result<Prepared> {
    match extractor {
        Extractor::Pixels(side) => Ok(Prepared {
            frames: None,
            features: if probes {
                pixel_features(set, *side)
            } else {
                Vec::new()
            },
        }),
        Extractor::Network(backbone) => {
            let mut frames = set.clone();
            frames.normalise(backbone.mean, backbone.std)?;
            let features = if probes {
                extract_features(&backbone.model, &frames, 64, plain)
            } else {
                Vec::new()
            };
            Ok(Prepared {
                frames: finetunes.then_some(frames),
                features,
            })
        }
    }
}

/// The extractor and prepared sets of one initialisation for one fold.
struct FoldInputs {
    extractor: Extractor,
    local: Prepared,
    external: Vec<Prepared>,
}

/// Runs the experiment: one row per initialisation x fold x task x method x fraction x seed,
/// and with folds the pooled cross-validation rows.
pub fn execute(exp: &Experiment) -> Result<Outcome> {
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
    let labelled_clip = |c: &ClipLabels| c.classes.iter().any(Option::is_some);
    let tasks = TaskSet::standard();
    let raw = FrameSet::load_clips(&exp.data, &tasks, [exp.size; 2], exp.stride, labelled_clip)?;
    let folds: Vec<(Option<usize>, Vec<Part>)> = match exp.folds {
        None => vec![(
            None,
            dataset_parts(
                &exp.data,
                &raw.clips,
                exp.validation,
                exp.test,
                exp.split_seed,
            )?,
        )],
        Some(k) => fold_parts(&exp.data, &raw.clips, k, exp.split_seed)?
            .into_iter()
            .enumerate()
            .map(|(f, parts)| (Some(f), parts))
            .collect(),
    };
    let externals: Vec<(String, FrameSet)> = exp
        .externals
        .iter()
        .map(|e| {
            FrameSet::load_clips(e.path(), &tasks, [exp.size; 2], exp.stride, labelled_clip)
                .with_context(|| format!("external test set `{}`", e.name))
                .map(|f| (e.name.clone(), f))
        })
        .collect::<Result<_>>()?;
    let probes = exp.methods.iter().any(|m| matches!(m, Method::Probe(_)));
    let finetunes = exp.methods.iter().any(|m| matches!(m, Method::Finetune(_)));
    let rules = exp.clip_rules();
    let mut notes = data_notes(exp);

    let plain = Device::flex();
    let mut rows = Vec::new();
    for init in &exp.inits {
        if let Init::Pretrained(run) = init {
            if let Some(note) = pretraining_note(run, exp.folds.is_some())? {
                notes.push(note);
            }
        }
        let mut shared: Option<FoldInputs> = None;
        for (fold, parts) in &folds {
            let train_frames = raw.frames_in(parts, Part::Train);
            let build = || -> Result<FoldInputs> {
                let extractor = init.load(&raw, &train_frames, exp.size, exp.split_seed)?;
                let local = prepare_set(&raw, &extractor, probes, finetunes, &plain)?;
                let external = externals
                    .iter()
                    .map(|(_, f)| prepare_set(f, &extractor, probes, finetunes, &plain))
                    .collect::<Result<_>>()?;
                Ok(FoldInputs {
                    extractor,
                    local,
                    external,
                })
            };
            let fresh;
            let inputs = if init.fold_independent() {
                if shared.is_none() {
                    shared = Some(build()?);
                }
                shared.as_ref().context("features extracted above")?
            } else {
                fresh = build()?;
                &fresh
            };
            rows.extend(fold_rows(
                exp, init, inputs, &raw, &externals, parts, *fold, &rules,
            )?);
        }
    }
    let cv = if exp.folds.is_some() {
        super::cv::pool(&rows, &raw, &externals, &rules, exp.bootstrap)
    } else {
        Vec::new()
    };
    Ok(Outcome { rows, cv, notes })
}

/// What the report says about the labels: the rule and class counts `prepare` recorded.
fn data_notes(exp: &Experiment) -> Vec<String> {
    let path = exp.data.join(crate::data::phantom::DATASET_INFO);
    let Ok(bytes) = std::fs::read(&path) else {
        return Vec::new();
    };
    let Ok(info) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return vec![format!("{}: not JSON", path.display())];
    };
    let p = &info["labels_provenance"];
    if p.is_null() {
        return Vec::new();
    }
    let mut note = format!(
        "Labels: {} task `{}` under rule `{}`.",
        p["dataset"].as_str().unwrap_or("?"),
        p["task"].as_str().unwrap_or("?"),
        p["lines_rule"].as_str().unwrap_or("?")
    );
    if let Some(rules) = p["counts_per_rule"].as_object() {
        note.push_str(" Clips per class under each rule (a_lines / b_lines / unlabelled):");
        for (rule, c) in rules {
            note.push_str(&format!(
                " {rule} {} / {} / {};",
                c["a_lines"], c["b_lines"], c["unlabelled"]
            ));
        }
    }
    vec![note]
}

/// Which clips a pretraining run saw, and whether that matters for cross-validation.
fn pretraining_note(run: &std::path::Path, folds: bool) -> Result<Option<String>> {
    let path = run.join("backbone.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let info: PretrainedBackbone =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let name = Init::Pretrained(run.to_path_buf()).name();
    Ok(Some(match info.clips {
        PretrainClips::Unlabelled => format!(
            "`{name}` ({}, {} steps) was pretrained on unlabelled clips only: no labelled frame of any fold.",
            info.method, info.steps
        ),
        PretrainClips::Train if !folds => format!(
            "`{name}` ({}, {} steps) was pretrained on the training patients of the split.",
            info.method, info.steps
        ),
        other => format!(
            "`{name}` ({}, {} steps) was pretrained on {other:?} clips, which include labelled \
             frames of some cross-validation test folds (unlabelled pretraining would not): \
             read its fold results with that in mind.",
            info.method, info.steps
        ),
    }))
}

/// Every model of one initialisation on one fold.
#[allow(clippy::too_many_arguments)]
fn fold_rows(
    exp: &Experiment,
    init: &Init,
    inputs: &FoldInputs,
    raw: &FrameSet,
    externals: &[(String, FrameSet)],
    parts: &[Part],
    fold: Option<usize>,
    rules: &[ClipRule],
) -> Result<Vec<ResultRow>> {
    let plain = Device::flex();
    let dim = inputs.extractor.dim();
    let name = init.name();
    let mut rows = Vec::new();
    for (t, def) in TaskSet::standard().iter().enumerate() {
        let [train, val, test] = [Part::Train, Part::Validation, Part::Test]
            .map(|p| labelled(raw, t, |c| parts[c] == p));
        if train.is_empty() {
            log::info!("task `{}`: no labelled training frames, skipped", def.name);
            continue;
        }
        ensure!(
            train.has_both_classes(),
            "{}: task `{}` needs training frames of both classes ({} labelled{})",
            exp.data.display(),
            def.name,
            train.len(),
            fold.map_or(String::new(), |f| format!(", fold {f}"))
        );
        let ext_sets: Vec<Labelled> = externals
            .iter()
            .map(|(_, f)| labelled(f, t, |_| true))
            .collect();
        for method in &exp.methods {
            if matches!(method, Method::Finetune(_)) && matches!(init, Init::Pixels(_)) {
                log::info!("the pixel baseline has no network to fine-tune: skipped");
                continue;
            }
            for &fraction in &exp.fractions {
                for &seed in &exp.seeds {
                    let subset = subsample(&train, raw, fraction, seed * 7919 + t as u64);
                    let label = format!(
                        "{name} {} {} {:.0}% seed {seed}{}",
                        method.name(),
                        def.name,
                        fraction * 100.0,
                        fold.map_or(String::new(), |f| format!(" fold {f}"))
                    );
                    // Scores on local test and each external set, from one trained model.
                    let (val_auc, mut scores): (Option<f64>, Vec<Vec<f32>>) = match method {
                        Method::Probe(kind) => {
                            let opts = HeadTraining {
                                kind: *kind,
                                seed: seed * 1000 + t as u64,
                                ..exp.head.clone()
                            };
                            let local = &inputs.local.features;
                            let head = train_probe(local, dim, &subset, &val, &opts, &label);
                            let mut scores =
                                vec![head.model.scores(local, dim, &test.index, &plain)];
                            for (p, set) in inputs.external.iter().zip(&ext_sets) {
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
                            let frames = inputs
                                .local
                                .frames
                                .as_ref()
                                .context("normalised frames are kept for fine-tuning")?;
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
                            let net = finetune(net, frames, &subset, &val, &opts, &label);
                            let mut scores =
                                vec![network_scores(&net.model, frames, &test.index, &plain)];
                            for (p, set) in inputs.external.iter().zip(&ext_sets) {
                                let f = p.frames.as_ref().context("external frames")?;
                                scores.push(network_scores(&net.model, f, &set.index, &plain));
                            }
                            (net.val_auc, scores)
                        }
                    };
                    let eval_seed = seed + 17 * t as u64;
                    let local_eval =
                        evaluate(&scores[0], &test, raw, rules, exp.bootstrap, eval_seed);
                    let mut roc = BTreeMap::from([(
                        "local test".to_string(),
                        roc_points(&scores[0], &test.positive),
                    )]);
                    let mut external = BTreeMap::new();
                    for (k, (set_name, frames)) in externals.iter().enumerate() {
                        let s = &scores[k + 1];
                        external.insert(
                            set_name.clone(),
                            evaluate(s, &ext_sets[k], frames, rules, exp.bootstrap, eval_seed),
                        );
                        roc.insert(set_name.clone(), roc_points(s, &ext_sets[k].positive));
                    }
                    let test_scores = scores.remove(0);
                    rows.push(ResultRow {
                        task: def.name.clone(),
                        init: name.clone(),
                        method: inputs.extractor.method(),
                        head: method.name().to_string(),
                        label_fraction: fraction,
                        seed,
                        fold,
                        train_frames: subset.len(),
                        val_auc,
                        test_auc: local_eval.auc,
                        test_auc_ci: local_eval.auc_ci,
                        test: local_eval,
                        external,
                        roc,
                        scores: RowScores {
                            test_index: test.index.clone(),
                            test: test_scores,
                            external: scores,
                        },
                    });
                }
            }
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_keep_both_classes_and_whole_clips() {
        // 20 clips of 3 frames; clips 0-4 positive.
        let frames = FrameSet {
            dims: [1, 1, 1],
            inputs: vec![0.0; 60],
            frame_clip: (0..60).map(|i| i / 3).collect(),
            position: (0..60).map(|i| i % 3).collect(),
            clip_seconds: vec![None; 20],
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
