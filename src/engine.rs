//! Inference engine: a verified [`Pack`] turned into optimised tract plans.
//!
//! Lifecycle (tract's own): [`Engine::new`] pins every input shape to batch 1 and optimises the
//! plans once; [`Engine::session`] spawns per-stream state; [`Session::infer`] runs the shared
//! backbone once per frame and the heads the task hierarchy asks for. [`Session::serial`] runs
//! one whole fine-tuned network, the baseline the shared path is measured against.
//!
//! Threads: tract runs every plan on the calling thread unless it is given an executor.
//! [`EngineConfig::threads`] above 1 builds one rayon pool (tract-linalg's `multithread-mm`
//! executor, cargo feature `threads`) shared by all plans of the engine. tract then splits
//! matrix products of at least 64 panels and depthwise / element-wise ops over at least 32,768
//! values across the pool; smaller ops (the heads, the late backbone layers) stay inline. One
//! thread is the default, as on a board whose other cores capture and convert frames.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use tract_onnx::prelude::*;

use crate::pack::{LoadedModel, Pack, Quantization};

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

/// How the engine runs its plans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Threads tract may use inside one plan run (1 = the calling thread only).
    pub threads: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { threads: 1 }
    }
}

/// `true` when this build's tract can run a plan on several threads (cargo feature `threads`).
pub const MULTITHREAD_AVAILABLE: bool = cfg!(feature = "threads");

/// Threads of an engine's pool are named this, then `-0`, `-1`, ...
pub const POOL_THREAD_NAME: &str = "pleura-tract";

/// Optimised plans of a pack.
#[derive(Debug)]
pub struct Engine {
    threads: usize,
    tasks: Vec<Task>,
    input_shape: [usize; 4],
    feature_dim: usize,
    backbone: Plan,
    heads: Vec<Plan>,
    head_forms: Vec<Quantization>,
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

fn plan(model: &LoadedModel, shape: &[usize], options: &RunOptions) -> Result<Plan> {
    let context = || format!("preparing {} for tract", model.path.display());
    let plan = tract_onnx::onnx()
        .model_for_proto_model(&model.proto)
        .with_context(context)?
        .with_input_fact(0, f32::fact(shape).into())
        .with_context(context)?
        .into_optimized()
        .with_context(context)?
        .into_runnable_with_options(options)
        .with_context(context)?;
    Ok(plan)
}

/// tract's run options for `threads`: no executor (the calling thread) for one thread.
fn run_options(threads: usize) -> Result<RunOptions> {
    ensure!(threads >= 1, "threads must be at least 1, got {threads}");
    if threads == 1 {
        return Ok(RunOptions::default());
    }
    #[cfg(feature = "threads")]
    {
        let executor = tract_onnx::prelude::multithread::Executor::multithread_with_name(
            threads,
            POOL_THREAD_NAME,
        );
        Ok(RunOptions {
            executor: Some(executor),
            ..RunOptions::default()
        })
    }
    #[cfg(not(feature = "threads"))]
    anyhow::bail!(
        "{threads} threads asked for, but this build of pleura runs tract on one thread \
         (rebuild with the cargo feature `threads`)"
    )
}

impl Engine {
    /// Optimises the backbone and heads of `pack`, and its per-task full networks when
    /// `with_serial` (only the benchmark needs those), to run on one thread.
    pub fn new(pack: &Pack, with_serial: bool) -> Result<Engine> {
        Engine::with_config(pack, with_serial, &EngineConfig::default())
    }

    /// [`Engine::new`] with explicit settings; all plans share one thread pool.
    pub fn with_config(pack: &Pack, with_serial: bool, config: &EngineConfig) -> Result<Engine> {
        let options = run_options(config.threads)?;
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
        let backbone = plan(&pack.backbone, &input_shape, &options)?;
        // Each task's head in the form its manifest entry names (`Pack::select_heads` sets it).
        let heads = (0..m.tasks.len())
            .map(|i| plan(pack.head_model(i), &[1, feature_dim], &options))
            .collect::<Result<_>>()?;
        let head_forms = m.tasks.iter().map(|t| t.head.quantization).collect();
        let serial = with_serial
            .then(|| {
                pack.serial_networks
                    .iter()
                    .map(|n| plan(n, &input_shape, &options))
                    .collect()
            })
            .transpose()?;
        Ok(Engine {
            threads: config.threads,
            tasks,
            input_shape,
            feature_dim,
            backbone,
            heads,
            head_forms,
            serial,
        })
    }

    /// Per task (pack order): the form of the head this engine runs.
    pub fn head_forms(&self) -> &[Quantization] {
        &self.head_forms
    }

    /// Threads tract may use inside one plan run.
    pub fn threads(&self) -> usize {
        self.threads
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
            head_times: vec![None; self.heads.len()],
        })
    }
}

/// Per-stream inference state.
pub struct Session<'e> {
    engine: &'e Engine,
    backbone: PlanState,
    heads: Vec<PlanState>,
    serial: Vec<PlanState>,
    /// Per task: time of its head in the last [`Session::infer`], `None` when skipped.
    head_times: Vec<Option<Duration>>,
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
            self.head_times[i] = None;
            if enabled {
                let head_start = Instant::now();
                let p = self.head(i, &features)?;
                self.head_times[i] = Some(head_start.elapsed());
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

    /// Per task (pack order): how long its head took in the last [`Session::infer`], `None`
    /// when the hierarchy skipped it (timing detail for the benchmark).
    pub fn last_head_times(&self) -> &[Option<Duration>] {
        &self.head_times
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
