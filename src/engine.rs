//! Inference engine: a verified [`Pack`] turned into optimised tract plans.
//!
//! Lifecycle (tract's own): [`Engine::new`] pins every input shape to batch 1 and optimises the
//! plans once; [`Engine::session`] spawns per-stream state; [`Session::infer`] runs the shared
//! backbone once per frame and the heads the task hierarchy asks for. [`Session::serial`] runs
//! one whole fine-tuned network, the baseline the shared path is measured against.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use tract_onnx::prelude::*;

use crate::pack::{LoadedModel, Pack};

type Plan = Arc<TypedRunnableModel>;
type PlanState = TypedSimpleState;

/// Which heads run on a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TaskMode {
    /// Ungated tasks, then only the tasks their decisions enable (the clinical workflow).
    #[default]
    Hierarchy,
    /// Every head on every frame.
    AllTasks,
}

/// One task as the engine runs it.
#[derive(Clone, Debug)]
pub struct Task {
    /// Task name.
    pub name: String,
    /// `[negative, positive]` class names.
    pub classes: [String; 2],
    /// `(index of the gating task, class index of it that enables this task)`.
    pub gate: Option<(usize, usize)>,
}

/// Optimised plans of a pack.
#[derive(Debug)]
pub struct Engine {
    tasks: Vec<Task>,
    input_shape: [usize; 4],
    feature_dim: usize,
    backbone: Plan,
    heads: Vec<Plan>,
    serial: Option<Vec<Plan>>,
}

/// What the engine produced for one frame.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inference {
    /// Per task (pack order): the probability of its positive class, `None` when the
    /// hierarchy did not run it.
    pub probabilities: Vec<Option<f32>>,
    /// Time spent in the backbone.
    pub backbone: Duration,
    /// Time spent in all heads together.
    pub heads: Duration,
}

impl Inference {
    /// Decision of task `i`: the class index (probability >= 0.5 means the positive class).
    pub fn decision(&self, i: usize) -> Option<usize> {
        self.probabilities[i].map(|p| usize::from(p >= 0.5))
    }
}

fn plan(model: &LoadedModel, shape: &[usize]) -> Result<Plan> {
    let context = || format!("preparing {} for tract", model.path.display());
    let plan = tract_onnx::onnx()
        .model_for_proto_model(&model.proto)
        .with_context(context)?
        .with_input_fact(0, f32::fact(shape).into())
        .with_context(context)?
        .into_optimized()
        .with_context(context)?
        .into_runnable()
        .with_context(context)?;
    Ok(plan)
}

impl Engine {
    /// Optimises the backbone and heads of `pack`, and its per-task full networks when
    /// `with_serial` (only the benchmark needs those).
    pub fn new(pack: &Pack, with_serial: bool) -> Result<Engine> {
        let m = &pack.manifest;
        let input_shape = [1, m.input.channels, m.input.height, m.input.width];
        let feature_dim = m.backbone.feature_dim;
        let tasks = m
            .tasks
            .iter()
            .map(|t| {
                let gate = t.gate.as_ref().map(|g| {
                    let parent = m.tasks.iter().position(|p| p.name == g.task).unwrap_or(0);
                    let class = m.tasks[parent].classes.iter().position(|c| *c == g.class);
                    (parent, class.unwrap_or(0))
                });
                Task {
                    name: t.name.clone(),
                    classes: t.classes.clone(),
                    gate,
                }
            })
            .collect();
        let backbone = plan(&pack.backbone, &input_shape)?;
        let heads = pack
            .heads
            .iter()
            .map(|h| plan(h, &[1, feature_dim]))
            .collect::<Result<_>>()?;
        let serial = with_serial
            .then(|| {
                pack.serial_networks
                    .iter()
                    .map(|n| plan(n, &input_shape))
                    .collect()
            })
            .transpose()?;
        Ok(Engine {
            tasks,
            input_shape,
            feature_dim,
            backbone,
            heads,
            serial,
        })
    }

    /// The tasks, in pack order.
    pub fn tasks(&self) -> &[Task] {
        &self.tasks
    }

    /// `[1, channels, height, width]`.
    pub fn input_shape(&self) -> [usize; 4] {
        self.input_shape
    }

    /// Length of `input` slices given to [`Session::infer`].
    pub fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }

    /// Per-stream state over the shared plans.
    pub fn session(&self) -> Result<Session<'_>> {
        Ok(Session {
            engine: self,
            backbone: self.backbone.spawn()?,
            heads: self
                .heads
                .iter()
                .map(|p| p.spawn())
                .collect::<TractResult<_>>()?,
            serial: match &self.serial {
                Some(plans) => plans
                    .iter()
                    .map(|p| p.spawn())
                    .collect::<TractResult<_>>()?,
                None => Vec::new(),
            },
        })
    }
}

/// Per-stream inference state.
pub struct Session<'e> {
    engine: &'e Engine,
    backbone: PlanState,
    heads: Vec<PlanState>,
    serial: Vec<PlanState>,
}

impl Session<'_> {
    /// Runs the shared backbone once on `input` (`[channels, height, width]`, from
    /// [`crate::preprocess::Preprocessor`]) and the heads that `mode` selects.
    pub fn infer(&mut self, input: &[f32], mode: TaskMode) -> Result<Inference> {
        let start = Instant::now();
        let features = self.features(input)?;
        let backbone = start.elapsed();
        let start = Instant::now();
        let tasks = &self.engine.tasks;
        let mut probabilities: Vec<Option<f32>> = vec![None; tasks.len()];
        let mut decisions: Vec<Option<usize>> = vec![None; tasks.len()];
        for (i, task) in tasks.iter().enumerate() {
            let enabled = match (mode, task.gate) {
                (TaskMode::AllTasks, _) | (_, None) => true,
                (TaskMode::Hierarchy, Some((parent, class))) => decisions[parent] == Some(class),
            };
            if enabled {
                let p = self.head(i, &features)?;
                probabilities[i] = Some(p);
                decisions[i] = Some(usize::from(p >= 0.5));
            }
        }
        Ok(Inference {
            probabilities,
            backbone,
            heads: start.elapsed(),
        })
    }

    /// The backbone's feature vector for `input`.
    pub fn features(&mut self, input: &[f32]) -> Result<Tensor> {
        let tensor = self.input_tensor(input)?;
        let mut out = self.backbone.run(tvec!(tensor.into()))?;
        let features = out.remove(0).into_tensor();
        ensure!(
            features.len() == self.engine.feature_dim,
            "backbone produced {} features, the pack says {}",
            features.len(),
            self.engine.feature_dim
        );
        Ok(features)
    }

    /// Probability from head `task` on `features` (`[1, feature_dim]`).
    pub fn head(&mut self, task: usize, features: &Tensor) -> Result<f32> {
        let out = self.heads[task].run(tvec!(features.clone().into()))?;
        scalar(&out[0])
    }

    /// Probability from the whole fine-tuned network of `task` (the serial baseline). The
    /// engine must have been built with `with_serial`.
    pub fn serial(&mut self, task: usize, input: &[f32]) -> Result<f32> {
        ensure!(
            !self.serial.is_empty(),
            "the engine was built without the serial networks"
        );
        let tensor = self.input_tensor(input)?;
        let out = self.serial[task].run(tvec!(tensor.into()))?;
        scalar(&out[0])
    }

    fn input_tensor(&self, input: &[f32]) -> Result<Tensor> {
        ensure!(
            input.len() == self.engine.input_len(),
            "input holds {} values, the backbone takes {:?}",
            input.len(),
            self.engine.input_shape
        );
        Tensor::from_shape(&self.engine.input_shape, input)
    }
}

fn scalar(value: &TValue) -> Result<f32> {
    let view = value.to_plain_array_view::<f32>()?;
    view.iter()
        .next()
        .copied()
        .context("model produced an empty output")
}
