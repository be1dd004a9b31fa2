//! Model packs: a folder with `manifest.json` and the ONNX files it names.
//!
//! A pack holds ONE shared backbone (`image -> features`), one small head per task
//! (`features -> probability`), and, per task, the whole fine-tuned network
//! (`image -> probability`) that the serial baseline runs. The manifest records shapes,
//! normalisation, checksums, the task hierarchy (which view gates which task) and provenance.
//! The format is documented in `models/README.md`.
//!
//! [`Pack::load`] verifies everything the live path relies on before any inference: the format
//! version, the SHA-256 of the backbone and every head, the task hierarchy (into a
//! [`TaskSet`]), and the input/output shapes written in each ONNX graph against the manifest.
//! The per-task networks are the benchmark's business: [`Pack::load_networks`] reads and
//! verifies them the same way, only when asked (`pleura bench`, `pleura info`). Each error names
//! the file and the manifest field.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use prost::Message;
use serde::{Deserialize, Serialize};
use tract_onnx::pb;

use crate::fsutil::{sha256_file, write_atomic};
use crate::smoothing::SmoothingConfig;
use crate::tasks::{TaskDecl, TaskSet};

/// The manifest format this runtime reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// File name of the manifest inside a pack folder.
pub const MANIFEST: &str = "manifest.json";

/// Input of the backbone and of the full networks, and how pixels are normalised.
///
/// A grey pixel `p` in `0..=255` becomes `(p / 255 - mean) / std`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Rows of the network input.
    pub height: usize,
    /// Columns of the network input.
    pub width: usize,
    /// Channels of the network input (1 for B-mode grey).
    pub channels: usize,
    /// Mean subtracted after scaling to `[0, 1]`.
    pub mean: f32,
    /// Standard deviation divided by after subtracting the mean.
    pub std: f32,
}

impl InputSpec {
    /// A single-channel `height x width` input scaled to `[0, 1]` only (mean 0, std 1): the
    /// form training data is loaded in before its own normalisation is measured.
    pub fn unnormalised(height: usize, width: usize) -> InputSpec {
        InputSpec {
            height,
            width,
            channels: 1,
            mean: 0.0,
            std: 1.0,
        }
    }
}

/// An ONNX file of the pack and its checksum.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// Path relative to the pack folder.
    pub file: String,
    /// Lower-case hex SHA-256 of the file.
    pub sha256: String,
}

/// The shared feature extractor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackboneEntry {
    /// The ONNX file, `image [batch, C, H, W] -> features [batch, feature_dim]`.
    #[serde(flatten)]
    pub model: ModelFile,
    /// Architecture name, e.g. `mobilenet_v3_small`.
    pub architecture: String,
    /// Length of the feature vector.
    pub feature_dim: usize,
    /// Trainable parameters of the feature extractor.
    pub parameters: usize,
}

/// Kind of a task head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    /// One dense layer on the features.
    Linear,
    /// Dense, ReLU, dense.
    Mlp,
}

/// Numeric form of a head's weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantization {
    /// 32-bit float weights.
    F32,
    /// 8-bit integer weights.
    Int8,
}

impl Quantization {
    /// `f32` or `int8`, as in the manifest and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Quantization::F32 => "f32",
            Quantization::Int8 => "int8",
        }
    }
}

impl std::str::FromStr for Quantization {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "f32" => Ok(Quantization::F32),
            "int8" => Ok(Quantization::Int8),
            _ => bail!("`{text}` is not a head form (expected `f32` or `int8`)"),
        }
    }
}

/// A task head on the shared features.
///
/// With `int8` present, `file` is the f32 head, `int8.file` the int8 head (same interface), and
/// `quantization` says which of the two the runtime runs by default. Without `int8`, `file` is
/// the only head and `quantization` is its form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadEntry {
    /// The ONNX file, `features [batch, feature_dim] -> probability [batch, 1]`.
    #[serde(flatten)]
    pub model: ModelFile,
    /// Linear or MLP.
    pub kind: HeadKind,
    /// Hidden width of an MLP head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<usize>,
    /// The form the runtime runs by default (see the type's notes).
    pub quantization: Quantization,
    /// The int8 form of the head (int8 weights and activations, integer matrix products).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8: Option<ModelFile>,
}

impl HeadEntry {
    /// `true` when the entry has a head of `form`.
    pub fn offers(&self, form: Quantization) -> bool {
        self.int8.is_some() || form == self.quantization
    }
}

/// Runs a task only on frames whose `task` decision is `class` (the clinical hierarchy:
/// the view decides whether A/B-lines or effusion applies).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    /// The gating task (its own entry must not be gated).
    pub task: String,
    /// The class of the gating task that enables this one.
    pub class: String,
}

/// One binary task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskEntry {
    /// Task name, e.g. `view`, `lines`, `effusion`.
    pub name: String,
    /// `[negative, positive]`: the head outputs the probability of `classes[1]`.
    pub classes: [String; 2],
    /// The head on the shared backbone.
    pub head: HeadEntry,
    /// `None` for a task run on every frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<Gate>,
    /// The whole fine-tuned network for this task, run by the serial baseline (read only by
    /// [`Pack::load_networks`]).
    pub serial_network: ModelFile,
    /// Temporal smoothing of this task's probabilities (defaults when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoothing: Option<SmoothingConfig>,
}

/// Where the pack came from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// Training data, e.g. `phantom (synthetic)`.
    pub data: String,
    /// `true` when every weight was trained on synthetic phantom frames only.
    pub synthetic: bool,
    /// How the shared backbone was initialised/pretrained: `scratch`, `simclr`, ...
    pub backbone_init: String,
    /// Seeds used.
    pub seeds: BTreeMap<String, u64>,
    /// Command line that produced the pack.
    pub command: String,
    /// Producer and version.
    pub created_by: String,
    /// Metrics measured at export time (e.g. validation AUC per task and head).
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

/// The parsed `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Must equal [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Short name of the pack.
    pub name: String,
    /// What the pack is for, and what it must not be used for.
    pub description: String,
    /// Network input.
    pub input: InputSpec,
    /// The shared backbone.
    pub backbone: BackboneEntry,
    /// The tasks, gating tasks first.
    pub tasks: Vec<TaskEntry>,
    /// Where it came from.
    pub provenance: Provenance,
}

impl Manifest {
    /// Writes `manifest.json` into `dir` (atomically).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        write_atomic(&dir.join(MANIFEST), format!("{text}\n").as_bytes())
    }

    /// The task called `name`.
    pub fn task(&self, name: &str) -> Option<&TaskEntry> {
        self.tasks.iter().find(|t| t.name == name)
    }

    /// The task hierarchy, checked: unique names, gates naming an ungated earlier task and one
    /// of its classes. Errors name the field (`tasks[i] (name).gate.class`, ...).
    pub fn task_set(&self) -> Result<TaskSet> {
        TaskSet::new(self.tasks.iter().map(|t| TaskDecl {
            name: &t.name,
            classes: [&t.classes[0], &t.classes[1]],
            gate: t.gate.as_ref().map(|g| (g.task.as_str(), g.class.as_str())),
        }))
    }
}

/// Makes a [`ModelFile`] entry for `file` (relative to `dir`) with its current checksum.
pub fn model_file(dir: &Path, file: &str) -> Result<ModelFile> {
    Ok(ModelFile {
        file: file.to_string(),
        sha256: sha256_file(&dir.join(file))?,
    })
}

/// A verified, parsed ONNX model of a pack.
#[derive(Clone, Debug)]
pub struct LoadedModel {
    /// Absolute or pack-relative path it was read from.
    pub path: PathBuf,
    /// The parsed protobuf, handed to the engine.
    pub proto: pb::ModelProto,
    /// Declared input shape (`None` = symbolic dimension).
    pub input_shape: Vec<Option<usize>>,
    /// Declared output shape (`None` = symbolic dimension).
    pub output_shape: Vec<Option<usize>>,
    /// Size of the file in bytes.
    pub bytes: usize,
}

/// A pack whose manifest, hierarchy, and the checksums and shapes of its backbone and heads
/// have been verified.
#[derive(Clone, Debug)]
pub struct Pack {
    /// The pack folder.
    pub dir: PathBuf,
    /// The manifest.
    pub manifest: Manifest,
    /// The task hierarchy of the manifest, gates resolved.
    pub tasks: TaskSet,
    /// The backbone model.
    pub backbone: LoadedModel,
    /// Per task (manifest order): its head file (`tasks[i].head.file`, the f32 head when the
    /// task also has an int8 one).
    pub heads: Vec<LoadedModel>,
    /// Per task (manifest order): its int8 head (`tasks[i].head.int8`), when the pack has one.
    pub int8_heads: Vec<Option<LoadedModel>>,
    /// Per task (manifest order): temporal smoothing, from the optional `tasks[i].smoothing`
    /// (defaults where absent).
    pub smoothing: Vec<SmoothingConfig>,
}

impl Pack {
    /// Reads and verifies the pack in `dir`.
    pub fn load(dir: impl AsRef<Path>) -> Result<Pack> {
        let dir = dir.as_ref().to_path_buf();
        ensure!(dir.is_dir(), "model pack {} is not a folder", dir.display());
        let manifest_path = dir.join(MANIFEST);
        let text = fs::read_to_string(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?;
        let manifest: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", manifest_path.display()))?;
        Self::verify(dir, manifest)
            .with_context(|| format!("verifying model pack {}", manifest_path.display()))
    }

    fn verify(dir: PathBuf, manifest: Manifest) -> Result<Pack> {
        ensure!(
            manifest.format_version == FORMAT_VERSION,
            "field `format_version`: this runtime reads version {FORMAT_VERSION}, the pack is version {}",
            manifest.format_version
        );
        let input = &manifest.input;
        ensure!(
            input.height > 0 && input.width > 0 && input.channels > 0,
            "field `input`: height, width and channels must be positive"
        );
        ensure!(
            input.std.is_finite() && input.std > 0.0 && input.mean.is_finite(),
            "field `input.std`/`input.mean`: std must be finite and positive, mean finite"
        );
        let tasks = manifest.task_set()?;
        let feature_dim = manifest.backbone.feature_dim;
        let image = [
            None,
            Some(input.channels),
            Some(input.height),
            Some(input.width),
        ];

        let backbone = load_model(&dir, &manifest.backbone.model, "backbone")?;
        check_shape(
            &backbone,
            "backbone",
            "input",
            &backbone.input_shape,
            &image,
        )?;
        check_shape(
            &backbone,
            "backbone.feature_dim",
            "output",
            &backbone.output_shape,
            &[None, Some(feature_dim)],
        )?;

        let mut heads = Vec::new();
        let mut int8_heads = Vec::new();
        for (i, task) in manifest.tasks.iter().enumerate() {
            let field = format!("tasks[{i}].head");
            heads.push(load_head(&dir, &task.head.model, &field, feature_dim)?);
            int8_heads.push(
                task.head
                    .int8
                    .as_ref()
                    .map(|m| load_head(&dir, m, &format!("{field}.int8"), feature_dim))
                    .transpose()?,
            );
        }
        let smoothing = manifest
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let config = t.smoothing.clone().unwrap_or_default();
                config
                    .validate()
                    .with_context(|| format!("field `tasks[{i}].smoothing`"))?;
                Ok(config)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Pack {
            smoothing,
            dir,
            manifest,
            tasks,
            backbone,
            heads,
            int8_heads,
        })
    }

    /// Reads and verifies the per-task fine-tuned networks (`tasks[i].serial_network`), in
    /// manifest order: checksum, and `image [batch, C, H, W] -> probability [batch, 1]`. Only
    /// the benchmark runs them (each is as large as the backbone, which counts on a board), so
    /// [`Pack::load`] leaves them on disk.
    pub fn load_networks(&self) -> Result<Vec<LoadedModel>> {
        let input = &self.manifest.input;
        let image = [
            None,
            Some(input.channels),
            Some(input.height),
            Some(input.width),
        ];
        self.manifest
            .tasks
            .iter()
            .enumerate()
            .map(|(i, task)| {
                let field = format!("tasks[{i}].serial_network");
                let net = load_model(&self.dir, &task.serial_network, &field)?;
                check_shape(
                    &net,
                    &format!("{field} (input)"),
                    "input",
                    &net.input_shape,
                    &image,
                )?;
                check_shape(&net, &field, "output", &net.output_shape, &[None, Some(1)])?;
                Ok(net)
            })
            .collect::<Result<_>>()
            .with_context(|| {
                format!(
                    "verifying the per-task networks of model pack {}",
                    self.dir.join(MANIFEST).display()
                )
            })
    }

    /// Number of model files the manifest names: backbone, heads (f32 and int8) and the
    /// per-task networks (loaded or not).
    pub fn model_files(&self) -> usize {
        1 + self.heads.len() + self.int8_heads.iter().flatten().count() + self.manifest.tasks.len()
    }

    /// The head of task `i` that the runtime runs: the form `tasks[i].head.quantization` names.
    pub fn head_model(&self, i: usize) -> &LoadedModel {
        match (
            &self.int8_heads[i],
            self.manifest.tasks[i].head.quantization,
        ) {
            (Some(int8), Quantization::Int8) => int8,
            _ => &self.heads[i],
        }
    }

    /// Makes every task run its `form` head (`pleura run --heads`): sets each
    /// `tasks[i].head.quantization`, failing, with the field named, when a task lacks that form.
    pub fn select_heads(&mut self, form: Quantization) -> Result<()> {
        for (i, task) in self.manifest.tasks.iter_mut().enumerate() {
            ensure!(
                task.head.offers(form),
                "field `tasks[{i}].head`: task `{}` has no {} head in this pack (it offers {})",
                task.name,
                form.as_str(),
                task.head.quantization.as_str()
            );
            if task.head.int8.is_some() {
                task.head.quantization = form;
            }
        }
        Ok(())
    }
}

/// Reads a head file and checks its interface: `[batch, feature_dim] -> [batch, 1]`.
fn load_head(
    dir: &Path,
    entry: &ModelFile,
    field: &str,
    feature_dim: usize,
) -> Result<LoadedModel> {
    let head = load_model(dir, entry, field)?;
    check_shape(
        &head,
        &format!("{field} (backbone.feature_dim)"),
        "input",
        &head.input_shape,
        &[None, Some(feature_dim)],
    )?;
    check_shape(&head, field, "output", &head.output_shape, &[None, Some(1)])?;
    Ok(head)
}

/// Reads one model file, checks its SHA-256 and parses its graph interface.
fn load_model(dir: &Path, entry: &ModelFile, field: &str) -> Result<LoadedModel> {
    ensure!(
        !entry.file.is_empty()
            && !Path::new(&entry.file).is_absolute()
            && !entry.file.contains(".."),
        "field `{field}.file`: `{}` must be a path inside the pack folder",
        entry.file
    );
    let path = dir.join(&entry.file);
    let bytes = fs::read(&path)
        .with_context(|| format!("field `{field}.file`: reading {}", path.display()))?;
    let actual = crate::fsutil::sha256_bytes(&bytes);
    ensure!(
        actual == entry.sha256.to_ascii_lowercase(),
        "field `{field}.sha256`: checksum mismatch for {}: manifest says {}, file has {actual}",
        path.display(),
        entry.sha256
    );
    let proto = pb::ModelProto::decode(bytes.as_slice()).with_context(|| {
        format!(
            "field `{field}.file`: {} is not an ONNX model",
            path.display()
        )
    })?;
    let graph = proto
        .graph
        .as_ref()
        .with_context(|| format!("{}: ONNX model has no graph", path.display()))?;
    let initializers: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<_> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(&i.name.as_str()))
        .collect();
    ensure!(
        inputs.len() == 1 && graph.output.len() == 1,
        "{}: expected one input and one output, found {} and {}",
        path.display(),
        inputs.len(),
        graph.output.len()
    );
    Ok(LoadedModel {
        input_shape: declared_shape(inputs[0], &path)?,
        output_shape: declared_shape(&graph.output[0], &path)?,
        path,
        bytes: bytes.len(),
        proto,
    })
}

fn declared_shape(info: &pb::ValueInfoProto, path: &Path) -> Result<Vec<Option<usize>>> {
    use pb::tensor_shape_proto::dimension::Value;
    let Some(pb::type_proto::Value::TensorType(t)) =
        info.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        bail!("{}: `{}` is not a tensor", path.display(), info.name);
    };
    ensure!(
        t.elem_type == pb::tensor_proto::DataType::Float as i32,
        "{}: `{}` must be float32",
        path.display(),
        info.name
    );
    let shape = t
        .shape
        .as_ref()
        .with_context(|| format!("{}: `{}` has no declared shape", path.display(), info.name))?;
    Ok(shape
        .dim
        .iter()
        .map(|d| match d.value {
            Some(Value::DimValue(n)) if n > 0 => Some(n as usize),
            _ => None,
        })
        .collect())
}

/// Requires `actual` to match `expected` where `expected` is fixed (the batch dimension is free).
fn check_shape(
    model: &LoadedModel,
    field: &str,
    which: &str,
    actual: &[Option<usize>],
    expected: &[Option<usize>],
) -> Result<()> {
    let fits = actual.len() == expected.len()
        && actual
            .iter()
            .zip(expected)
            .all(|(a, e)| e.is_none() || a == e);
    ensure!(
        fits,
        "field `{field}`: {} {which} shape is {}, manifest requires {}",
        model.path.display(),
        fmt_shape(actual),
        fmt_shape(expected)
    );
    Ok(())
}

/// Formats a shape with `?` for free dimensions, e.g. `[?, 1, 128, 128]`.
pub fn fmt_shape(shape: &[Option<usize>]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| d.map_or("?".to_string(), |n| n.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}
