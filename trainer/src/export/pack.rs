//! Writes a complete model pack (see `pleura::pack`): ONNX files plus `manifest.json`.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use pleura::pack::{
    model_file, BackboneEntry, Gate, HeadEntry, HeadKind as PackHeadKind, InputSpec, Manifest,
    Provenance, Quantization, TaskEntry, FORMAT_VERSION,
};

use super::onnx;
use super::quantize::{int8_head_model, QuantizedHead};
use crate::model::{FoldedBackbone, FoldedHead, HeadKind};
use crate::tasks::TaskSet;

/// One task of a pack to write.
pub struct TaskExport<'a> {
    /// Its index in `tasks`.
    pub index: usize,
    /// The task set it belongs to (name, classes, gate).
    pub tasks: &'a TaskSet,
    /// The head on the shared backbone.
    pub head: FoldedHead,
    /// Its kind.
    pub kind: HeadKind,
    /// Its int8 form (written as `heads/<task>.int8.onnx` beside the f32 head), if any.
    pub int8: Option<QuantizedHead>,
    /// Which head the runtime runs by default: `Int8` needs `int8`.
    pub quantization: Quantization,
    /// The whole fine-tuned network of the serial baseline.
    pub network: (FoldedBackbone, FoldedHead),
}

/// Everything a pack holds.
pub struct PackExport<'a> {
    /// Pack name.
    pub name: String,
    /// Description (say what it must not be used for).
    pub description: String,
    /// Network input and normalisation.
    pub input: InputSpec,
    /// The shared backbone.
    pub backbone: FoldedBackbone,
    /// Its architecture name.
    pub architecture: String,
    /// Its trainable parameter count.
    pub parameters: usize,
    /// The tasks, gating task first.
    pub tasks: Vec<TaskExport<'a>>,
    /// Provenance.
    pub provenance: Provenance,
}

/// Writes `export` into `dir`: `backbone.onnx`, `heads/<task>.onnx` (and
/// `heads/<task>.int8.onnx` for tasks with an int8 head), `networks/<task>.onnx` and
/// `manifest.json` (written last, so a pack with a manifest is complete).
pub fn write_pack(dir: &Path, export: &PackExport) -> Result<Manifest> {
    let (h, w) = (export.input.height, export.input.width);
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating pack folder {}", dir.display()))?;
    onnx::write(
        &onnx::backbone_model(&export.backbone, h, w),
        &dir.join("backbone.onnx"),
    )?;
    let mut tasks = Vec::new();
    for t in &export.tasks {
        let def = &t.tasks.tasks()[t.index];
        let name = def.name.as_str();
        let head_file = format!("heads/{name}.onnx");
        onnx::write(&onnx::head_model(&t.head, name), &dir.join(&head_file))?;
        ensure!(
            t.int8.is_some() || t.quantization == Quantization::F32,
            "task `{name}`: int8 asked for as the default head, but the task has no int8 head"
        );
        let int8 = match &t.int8 {
            Some(q) => {
                let file = format!("heads/{name}.int8.onnx");
                onnx::write(&int8_head_model(q, name), &dir.join(&file))?;
                Some(model_file(dir, &file)?)
            }
            None => None,
        };
        let net_file = format!("networks/{name}.onnx");
        onnx::write(
            &onnx::full_model(&t.network.0, &t.network.1, name, h, w),
            &dir.join(&net_file),
        )?;
        let (kind, hidden) = match t.kind {
            HeadKind::Linear => (PackHeadKind::Linear, None),
            HeadKind::Mlp { hidden } => (PackHeadKind::Mlp, Some(hidden)),
        };
        tasks.push(TaskEntry {
            name: name.to_string(),
            classes: def.classes.clone(),
            head: HeadEntry {
                model: model_file(dir, &head_file)?,
                kind,
                hidden,
                quantization: t.quantization,
                int8,
            },
            gate: t.tasks.gate_names(t.index).map(|(task, class)| Gate {
                task: task.to_string(),
                class: class.to_string(),
            }),
            serial_network: model_file(dir, &net_file)?,
            // Written out so a device engineer sees (and edits) what the runtime will use.
            smoothing: Some(pleura::smoothing::SmoothingConfig::default()),
        });
    }
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        name: export.name.clone(),
        description: export.description.clone(),
        input: export.input.clone(),
        backbone: BackboneEntry {
            model: model_file(dir, "backbone.onnx")?,
            architecture: export.architecture.clone(),
            feature_dim: export.backbone.feature_dim(),
            parameters: export.parameters,
        },
        tasks,
        provenance: export.provenance.clone(),
    };
    manifest.write(dir)?;
    Ok(manifest)
}
