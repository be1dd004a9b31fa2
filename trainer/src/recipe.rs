//! The supervised recipe that turns a labelled dataset into a complete model pack.
//!
//! 1. Load frames through the runtime's preprocessing; split by patient.
//! 2. Shared backbone: MobileNetV3-Small from `backbone_init` (today: `scratch`, i.e. a seeded
//!    random initialisation, kept frozen; self-supervised pretraining replaces it in its issue).
//! 3. One head per task on the frozen features (linear or MLP), early-stopped on validation AUC.
//! 4. One whole network per task, trained end to end: the serial baseline.
//! 5. An int8 form of each head, calibrated on the head's training features; the test AUC of
//!    the f32 and the int8 head files through tract decides which one the runtime runs.
//! 6. Export everything as a pack, with test AUCs in the provenance.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Result};
use burn::tensor::Device;
use pleura::pack::{InputSpec, Provenance, Quantization};
use serde::Serialize;

use crate::data::frames::FrameSet;
use crate::data::split::{dataset_parts, Part};
use crate::eval::auc::roc_auc;
use crate::export::pack::{write_pack, PackExport, TaskExport};
use crate::export::quantize::{int8_head_model, QuantizedHead};
use crate::export::{onnx, tract_eval};
use crate::model::{FullNetwork, FullNetworkConfig, HeadConfig, MobileNetV3Config};
use crate::tasks::TaskSet;
use crate::train::calibrate::scratch_backbone;
use crate::train::finetune::{finetune, network_scores, FinetuneTraining};
use crate::train::labelled;
use crate::train::multitask::train_shared_backbone;
use crate::train::pretrain::{load_backbone, load_backbone_on};
use crate::train::probe::{extract_features, train_probe, HeadTraining};

/// Where the shared backbone comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackboneInit {
    /// Seeded random weights, BatchNorm statistics measured on training frames, frozen.
    Scratch,
    /// Trained with every task's labels at once (supervised), then frozen.
    Multitask,
    /// The backbone of a finished `pleura-train pretrain` run (self-supervised), frozen; its
    /// normalisation is kept, and the per-task networks are fine-tuned from it.
    Pretrained(PathBuf),
}

impl BackboneInit {
    /// Text for the manifest's provenance.
    pub fn describe(&self) -> String {
        match self {
            BackboneInit::Scratch => {
                "scratch (seeded random initialisation, BatchNorm statistics recalibrated on training frames, frozen)".into()
            }
            BackboneInit::Multitask => "supervised multi-task training on the pack's training split, then frozen".into(),
            BackboneInit::Pretrained(run) => format!("self-supervised pretraining run {}, frozen", run.display()),
        }
    }
}

/// Settings of [`build_pack`]; saved as `training.json` beside the pack.
#[derive(Clone, Debug, Serialize)]
pub struct PackRecipe {
    /// Dataset folder (labels.csv + clips/).
    pub data: PathBuf,
    /// Network input side in pixels (square).
    pub size: usize,
    /// Use every `stride`-th frame.
    pub stride: usize,
    /// Fractions of patients for validation and test.
    pub validation: f64,
    /// See `validation`.
    pub test: f64,
    /// Seed of split, initialisation and batch order.
    pub seed: u64,
    /// Where the shared backbone comes from.
    pub backbone: BackboneInit,
    /// Optimiser steps of the multi-task backbone training.
    pub backbone_steps: usize,
    /// With a pretrained backbone: steps of supervised multi-task fine-tuning of the shared
    /// backbone (all tasks' labels at once, learning rate `shared_lr`) before it is frozen
    /// for the heads; 0 keeps the self-supervised features as they are.
    pub shared_steps: usize,
    /// Adam learning rate of that fine-tuning.
    pub shared_lr: f64,
    /// Head training.
    pub head: HeadTraining,
    /// Whole-network training.
    pub finetune: FinetuneTraining,
    /// Command line, recorded in the manifest.
    pub command: String,
}

/// `true` when `data` was written by the phantom generator (its `dataset.json` says so).
fn is_synthetic(data: &Path) -> bool {
    std::fs::read_to_string(data.join(crate::data::phantom::DATASET_INFO))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["synthetic"].as_bool())
        .unwrap_or(false)
}

/// Per-task result of the recipe.
#[derive(Clone, Debug, Serialize)]
pub struct TaskReport {
    /// Task name.
    pub task: String,
    /// Frames per part.
    pub frames: BTreeMap<String, usize>,
    /// Test clips of the negative and the positive class. A test AUC over a few clips is a
    /// coarse number: with 2 clips a class it can only be a multiple of 0.25 (frames of one
    /// clip score alike), so a head that ranks one clip of each class wrong reads 0.5.
    pub test_clips: [usize; 2],
    /// Validation / test AUC of the head on frozen features.
    pub head_val_auc: Option<f64>,
    /// See `head_val_auc`.
    pub head_test_auc: Option<f64>,
    /// Validation / test AUC of the whole fine-tuned network.
    pub network_val_auc: Option<f64>,
    /// See `network_val_auc`.
    pub network_test_auc: Option<f64>,
    /// Test AUC of the exported f32 head file, run in tract.
    pub head_f32_test_auc: Option<f64>,
    /// Test AUC of the exported int8 head file, run in tract.
    pub head_int8_test_auc: Option<f64>,
    /// `head_int8_test_auc - head_f32_test_auc`.
    pub head_int8_auc_delta: Option<f64>,
    /// Size of the f32 head's ONNX file in bytes.
    pub head_f32_bytes: usize,
    /// Size of the int8 head's ONNX file in bytes.
    pub head_int8_bytes: usize,
    /// The head the runtime runs by default (f32; see [`INT8_AUC_TOLERANCE`]).
    pub head_default: Quantization,
}

/// Fewer test clips of a class than this make the pack's test AUC a coarse number (warned).
pub const MIN_TEST_CLIPS: usize = 5;

/// The goal for an int8 head: its test AUC within this of the f32 head's (issue 5). Meeting it
/// does not make int8 the default: in tract 0.23.9 an int8 head at batch 1 takes about twice the
/// time of the f32 one (its quantise / rescale ops cost more than the 576x32 product saves), so
/// packs keep `quantization: f32` and `--heads int8` opts in where the 3x smaller file matters.
pub const INT8_AUC_TOLERANCE: f64 = 0.005;

/// The int8 head of a task and its comparison with the f32 head, both scored from their ONNX
/// files in tract on the test rows.
struct Int8Check {
    head: QuantizedHead,
    f32_auc: Option<f64>,
    int8_auc: Option<f64>,
    f32_bytes: usize,
    int8_bytes: usize,
}

impl Int8Check {
    fn run(
        folded: &crate::model::FoldedHead,
        name: &str,
        features: &[f32],
        dim: usize,
        train: &[usize],
        test: &crate::train::Labelled,
    ) -> Result<Int8Check> {
        use prost::Message;
        let head = QuantizedHead::calibrate(folded, features, dim, train)?;
        let f32_model = onnx::head_model(folded, name);
        let int8_model = int8_head_model(&head, name);
        let auc = |model| -> Result<Option<f64>> {
            let scores = tract_eval::head_scores(model, features, dim, &test.index)?;
            Ok(roc_auc(&scores, &test.positive))
        };
        Ok(Int8Check {
            f32_auc: auc(&f32_model)?,
            int8_auc: auc(&int8_model)?,
            f32_bytes: f32_model.encoded_len(),
            int8_bytes: int8_model.encoded_len(),
            head,
        })
    }

    fn delta(&self) -> Option<f64> {
        Some(self.int8_auc? - self.f32_auc?)
    }

    fn within_goal(&self) -> bool {
        self.delta().is_some_and(|d| d.abs() <= INT8_AUC_TOLERANCE)
    }
}

/// Runs the recipe and writes the pack to `out`. Returns the per-task report.
pub fn build_pack(recipe: &PackRecipe, out: &Path) -> Result<Vec<TaskReport>> {
    let task_set = TaskSet::standard();
    let tasks = &task_set;
    ensure!(
        recipe.size >= 32,
        "--size must be at least 32 pixels (MobileNetV3 downsamples 32x), got {}",
        recipe.size
    );
    ensure!(
        recipe.head.steps > 0
            && recipe.head.batch > 0
            && recipe.finetune.steps > 0
            && recipe.finetune.batch > 0,
        "training steps and batch sizes must be positive"
    );
    let raw = InputSpec::unnormalised(recipe.size, recipe.size);
    let mut frames = FrameSet::load(&recipe.data, tasks, [recipe.size; 2], recipe.stride)?;
    let parts = dataset_parts(
        &recipe.data,
        &frames.clips,
        recipe.validation,
        recipe.test,
        recipe.seed,
    )?;
    let train_frames = frames.frames_in(&parts, Part::Train);
    let pretrained = match &recipe.backbone {
        BackboneInit::Pretrained(run) => {
            let (model, info) = load_backbone(run)?;
            ensure!(
                (info.input.height, info.input.width) == (recipe.size, recipe.size),
                "{}: the backbone was pretrained at {}x{}, the pack asks for {}x{} (--size)",
                run.display(),
                info.input.width,
                info.input.height,
                recipe.size,
                recipe.size
            );
            Some((model, info))
        }
        _ => None,
    };
    // A pretrained backbone keeps the normalisation it was trained with.
    let (mean, std) = match &pretrained {
        Some((_, info)) => (info.input.mean, info.input.std),
        None => frames.stats(&train_frames),
    };
    frames.normalise(mean, std)?;
    let input = InputSpec { mean, std, ..raw };
    log::info!(
        "{} frames of {} clips; normalisation mean {mean:.4} std {std:.4}",
        frames.len(),
        frames.clips.len()
    );

    let plain = Device::flex();
    let backbone_config = MobileNetV3Config::small().with_seed(recipe.seed);
    let backbone = match (&pretrained, &recipe.backbone) {
        (Some(_), BackboneInit::Pretrained(run)) if recipe.shared_steps > 0 => {
            let opts = FinetuneTraining {
                steps: recipe.shared_steps,
                lr: recipe.shared_lr,
                head_lr: None,
                ..recipe.finetune.clone()
            };
            let start = load_backbone_on(run, &plain.clone().autodiff())?.0;
            train_shared_backbone(
                &backbone_config,
                Some(start),
                tasks.len(),
                &frames,
                &train_frames,
                &opts,
            )
        }
        (Some((model, _)), _) => model.clone(),
        (None, BackboneInit::Multitask) => {
            let opts = FinetuneTraining {
                steps: recipe.backbone_steps,
                ..recipe.finetune.clone()
            };
            train_shared_backbone(
                &backbone_config,
                None,
                tasks.len(),
                &frames,
                &train_frames,
                &opts,
            )
        }
        (None, _) => scratch_backbone(&backbone_config, &frames, &train_frames),
    };
    let dim = backbone.feature_dim();
    let features = extract_features(&backbone, &frames, 64, &plain);

    let mut exports = Vec::new();
    let mut reports = Vec::new();
    let mut metrics = BTreeMap::new();
    for (t, def) in tasks.iter().enumerate() {
        let [train, val, test] = [Part::Train, Part::Validation, Part::Test]
            .map(|p| labelled(&frames, t, |c| parts[c] == p));
        ensure!(
            train.has_both_classes(),
            "task `{}`: the training split needs frames of both classes ({} labelled frames)",
            def.name,
            train.len()
        );
        let head_opts = HeadTraining {
            seed: recipe.seed + t as u64,
            ..recipe.head.clone()
        };
        let head = train_probe(&features, dim, &train, &val, &head_opts, &def.name);
        let head_test = roc_auc(
            &head.model.scores(&features, dim, &test.index, &plain),
            &test.positive,
        );

        let net = match &recipe.backbone {
            // Fine-tune from the pretrained backbone (the paper's full fine-tuning), loaded
            // afresh for each task so the networks share no parameters.
            BackboneInit::Pretrained(run) => FullNetwork::new(
                load_backbone_on(run, &plain.clone().autodiff())?.0,
                HeadConfig::new(recipe.head.kind, dim)
                    .with_seed(recipe.seed + 200 + t as u64)
                    .init(&plain.clone().autodiff()),
            ),
            _ => FullNetworkConfig::new(
                backbone_config
                    .clone()
                    .with_seed(recipe.seed + 100 + t as u64),
                recipe.head.kind,
            )
            .init(&plain.clone().autodiff()),
        };
        let ft_opts = FinetuneTraining {
            seed: recipe.seed + t as u64,
            ..recipe.finetune.clone()
        };
        let net = finetune(net, &frames, &train, &val, &ft_opts, &def.name);
        let net_test = roc_auc(
            &network_scores(&net.model, &frames, &test.index, &plain),
            &test.positive,
        );

        let folded = head.model.fold();
        let int8 = Int8Check::run(&folded, &def.name, &features, dim, &train.index, &test)?;
        // See INT8_AUC_TOLERANCE: f32 stays the head the runtime runs by default.
        let head_default = Quantization::F32;
        log::info!(
            "task `{}`: int8 head test AUC {:?} vs f32 {:?} ({} the {INT8_AUC_TOLERANCE} goal)",
            def.name,
            int8.int8_auc,
            int8.f32_auc,
            if int8.within_goal() {
                "within"
            } else {
                "outside"
            }
        );

        let test_clips = [false, true].map(|positive| {
            let mut clips: Vec<usize> = test
                .index
                .iter()
                .zip(&test.positive)
                .filter(|(_, &p)| p == positive)
                .map(|(&i, _)| frames.frame_clip[i])
                .collect();
            clips.sort_unstable();
            clips.dedup();
            clips.len()
        });
        if test_clips.iter().any(|&n| n < MIN_TEST_CLIPS) {
            log::warn!(
                "task `{}`: the test split holds {} / {} clips of {} / {}: its test AUC is a coarse \
                 number (use more clips, or `pleura-train probe --folds 5` for an estimate)",
                def.name,
                test_clips[0],
                test_clips[1],
                def.classes[0],
                def.classes[1]
            );
        }
        let report = TaskReport {
            task: def.name.clone(),
            test_clips,
            frames: [
                ("train", train.len()),
                ("validation", val.len()),
                ("test", test.len()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            head_val_auc: head.val_auc,
            head_test_auc: head_test,
            network_val_auc: net.val_auc,
            network_test_auc: net_test,
            head_f32_test_auc: int8.f32_auc,
            head_int8_test_auc: int8.int8_auc,
            head_int8_auc_delta: int8.delta(),
            head_f32_bytes: int8.f32_bytes,
            head_int8_bytes: int8.int8_bytes,
            head_default,
        };
        for (key, value) in [
            ("head.val_auc", head.val_auc),
            ("head.test_auc", head_test),
            ("network.val_auc", net.val_auc),
            ("network.test_auc", net_test),
            ("head.f32.test_auc", int8.f32_auc),
            ("head.int8.test_auc", int8.int8_auc),
            ("head.int8.test_auc_delta", int8.delta()),
            ("head.f32.bytes", Some(int8.f32_bytes as f64)),
            ("head.int8.bytes", Some(int8.int8_bytes as f64)),
        ] {
            if let Some(v) = value {
                metrics.insert(format!("{}.{key}", def.name), v);
            }
        }
        log::info!("{report:?}");
        reports.push(report);
        exports.push(TaskExport {
            index: t,
            tasks,
            head: folded,
            kind: recipe.head.kind,
            int8: Some(int8.head),
            quantization: head_default,
            network: net.model.fold(),
        });
    }

    let synthetic = is_synthetic(&recipe.data);
    let mut seeds: BTreeMap<String, u64> = [("split_init_batches".to_string(), recipe.seed)].into();
    let backbone_init = match (&recipe.backbone, &pretrained) {
        (BackboneInit::Pretrained(run), Some((_, info))) => {
            seeds.insert("pretrain".into(), info.backbone.seed);
            let shared = if recipe.shared_steps > 0 {
                format!(
                    ", then {} steps of supervised multi-task fine-tuning of the shared backbone (Adam, lr {})",
                    recipe.shared_steps, recipe.shared_lr
                )
            } else {
                String::new()
            };
            format!(
                "{} self-supervised pretraining, {} steps (run {}; its config.json has the settings){shared}, frozen",
                info.method,
                info.steps,
                run.display()
            )
        }
        (init, _) => init.describe(),
    };
    let provenance = Provenance {
        data: recipe.data.display().to_string(),
        synthetic,
        backbone_init,
        seeds,
        command: recipe.command.clone(),
        created_by: format!("pleura-train {}", env!("CARGO_PKG_VERSION")),
        metrics,
    };
    let parameters = backbone.num_trainable_params();
    write_pack(
        out,
        &PackExport {
            name: out
                .file_name()
                .map_or("pleura-pack".into(), |n| n.to_string_lossy().into_owned()),
            description: if synthetic {
                "MobileNetV3-Small backbone and view / A-B-lines / effusion heads trained on synthetic \
                 phantom frames only: for testing the runtime, not for clinical use."
                    .into()
            } else {
                format!(
                    "MobileNetV3-Small backbone and view / A-B-lines / effusion heads trained on {}: \
                     research use, not a medical device.",
                    recipe.data.display()
                )
            },
            input,
            backbone: backbone.fold(),
            architecture: "mobilenet_v3_small".into(),
            parameters,
            tasks: exports,
            provenance,
        },
    )?;
    let training = serde_json::json!({ "recipe": recipe, "report": reports });
    pleura::fsutil::write_atomic(
        &out.join("training.json"),
        serde_json::to_string_pretty(&training)?.as_bytes(),
    )?;
    Ok(reports)
}
