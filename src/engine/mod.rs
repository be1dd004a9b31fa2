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
//!
//! Engines: tract (always, the default) runs every plan; with the cargo feature `ort`,
//! [`EngineKind::Ort`] runs backbone and heads in ONNX Runtime instead, loaded at run time from a
//! user-provided `libonnxruntime` ([`EngineChoice::ort_lib`], else `ORT_DYLIB_PATH`), see
//! `docs/performance/inference.md`.

mod ops;
#[cfg(feature = "ort")]
mod ort;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use tract_onnx::prelude::*;

use crate::pack::{LoadedModel, Pack, Quantization};

/// Which engine runs an [`Engine`]'s plans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EngineKind {
    /// tract (pure Rust, always built): the default.
    #[default]
    Tract,
    /// ONNX Runtime through a user-provided shared library (cargo feature `ort`).
    Ort,
}

impl EngineKind {
    /// `tract` or `ort`.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Tract => "tract",
            EngineKind::Ort => "ort",
        }
    }
}

impl FromStr for EngineKind {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tract" => Ok(EngineKind::Tract),
            "ort" => Ok(EngineKind::Ort),
            other => anyhow::bail!("engine `{other}`: expected `tract` or `ort`"),
        }
    }
}

/// `true` when this build offers [`EngineKind::Ort`] (cargo feature `ort`).
pub const ORT_AVAILABLE: bool = cfg!(feature = "ort");

/// How tract lays out convolutions (see `docs/performance/inference.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TractLayout {
    /// The faster of [`TractLayout::Nhwc`] and [`TractLayout::Nchw`] for the backbone on this
    /// machine, timed when the engine is built (a few runs of each, interleaved); the per-task
    /// networks follow the backbone's choice. The default: channel-last depthwise kernels are
    /// 2x faster, but tract's broadcast `Mul` of the squeeze-excitation blocks falls to a slow
    /// generic path channel-last, which outweighs that gain on large inputs.
    #[default]
    Auto,
    /// tract's `conv_nhwc` transform: convolutions run channel-last.
    Nhwc,
    /// The ONNX file's own NCHW layout, as optimised by `into_optimized()` alone.
    Nchw,
}

/// The engine to build and its options.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct EngineChoice {
    /// tract or ONNX Runtime.
    pub kind: EngineKind,
    /// [`EngineKind::Ort`]: the `libonnxruntime` shared library to load (default: the
    /// `ORT_DYLIB_PATH` environment variable). One library per process.
    pub ort_lib: Option<PathBuf>,
    /// [`EngineKind::Tract`]: convolution layout.
    pub tract_layout: TractLayout,
}

impl EngineChoice {
    /// `tract`, or `ort` with the library named by `ort_lib` / `ORT_DYLIB_PATH`.
    pub fn new(kind: EngineKind, ort_lib: Option<PathBuf>) -> Self {
        Self {
            kind,
            ort_lib,
            ..Self::default()
        }
    }
}

/// tract's runnable plan of `model` with its input pinned to `shape`, built exactly as
/// [`Engine`] builds its tract plans (for profiling, `pleura bench --engines-serve`).
pub fn tract_plan_for(
    model: &LoadedModel,
    shape: &[usize],
    threads: usize,
    layout: TractLayout,
) -> Result<Arc<TypedRunnableModel>> {
    tract_plan(model, shape, &run_options(threads)?, layout)
}

/// A runnable model: one optimised tract plan, or one ONNX Runtime session.
#[derive(Debug)]
enum Plan {
    Tract(Arc<TypedRunnableModel>),
    #[cfg(feature = "ort")]
    Ort(Arc<ort::OrtPlan>),
}

/// Per-stream state of a [`Plan`].
enum PlanState {
    Tract(TypedSimpleState),
    #[cfg(feature = "ort")]
    Ort(Arc<ort::OrtPlan>),
}

impl Plan {
    fn spawn(&self) -> Result<PlanState> {
        Ok(match self {
            Plan::Tract(plan) => PlanState::Tract(plan.spawn()?),
            #[cfg(feature = "ort")]
            Plan::Ort(plan) => PlanState::Ort(Arc::clone(plan)),
        })
    }
}

impl PlanState {
    /// Runs the plan on one input; returns its first output.
    fn run(&mut self, input: Tensor) -> Result<Tensor> {
        match self {
            PlanState::Tract(state) => {
                let mut out = state.run(tvec!(input.into()))?;
                Ok(out.remove(0).into_tensor())
            }
            #[cfg(feature = "ort")]
            PlanState::Ort(plan) => plan.run(&input),
        }
    }
}

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

/// What [`Engine::description`] says of tract.
pub const TRACT_DESCRIPTION: &str = "tract 0.23.9";

/// Threads of an engine's pool are named this, then `-0`, `-1`, ...
pub const POOL_THREAD_NAME: &str = "pleura-tract";

/// Optimised plans of a pack.
#[derive(Debug)]
pub struct Engine {
    kind: EngineKind,
    tract_layout: Option<TractLayout>,
    description: String,
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

/// Builds one runnable model with its input pinned to `shape`.
fn plan(
    model: &LoadedModel,
    shape: &[usize],
    options: &RunOptions,
    choice: &EngineChoice,
    threads: usize,
) -> Result<Plan> {
    match choice.kind {
        EngineKind::Tract => Ok(Plan::Tract(tract_plan(
            model,
            shape,
            options,
            choice.tract_layout,
        )?)),
        #[cfg(feature = "ort")]
        EngineKind::Ort => Ok(Plan::Ort(Arc::new(ort::OrtPlan::new(
            model,
            shape,
            threads,
            choice.ort_lib.as_deref(),
        )?))),
        #[cfg(not(feature = "ort"))]
        EngineKind::Ort => {
            let _ = threads;
            anyhow::bail!(
                "--engine ort: this build of pleura has no ONNX Runtime engine (rebuild with the \
                 cargo feature `ort`)"
            )
        }
    }
}

/// The tract plan of `model`: input pinned, decluttered, convolutions laid out as `layout`
/// asks, optimised.
fn tract_plan(
    model: &LoadedModel,
    shape: &[usize],
    options: &RunOptions,
    layout: TractLayout,
) -> Result<Arc<TypedRunnableModel>> {
    let context = || format!("preparing {} for tract", model.path.display());
    let mut typed = tract_onnx::onnx()
        .model_for_proto_model(&model.proto)
        .with_context(context)?
        .with_input_fact(0, f32::fact(shape).into())
        .with_context(context)?
        .into_typed()
        .with_context(context)?
        .into_decluttered()
        .with_context(context)?;
    // Our SIMD depthwise convolution in place of tract's (src/engine/ops/depthwise/), before
    // `conv_nhwc` (which lowers depthwise convolutions to tract's kernel itself);
    // `PLEURA_TRACT_DEPTHWISE=tract` keeps tract's.
    if ops::depthwise::enabled() {
        let replaced = ops::depthwise::patch_depthwise(&mut typed, layout != TractLayout::Nchw)
            .with_context(context)?;
        log::debug!(
            "{}: {replaced} depthwise convolutions replaced by pleura's ({layout:?})",
            model.path.display()
        );
    }
    if layout != TractLayout::Nchw {
        let transform = tract_onnx::tract_core::transform::get_transform("conv_nhwc")?
            .context("tract lacks its `conv_nhwc` transform")?;
        transform.transform(&mut typed).with_context(context)?;
    }
    let mut typed = typed.into_optimized().with_context(context)?;
    // The squeeze-excitation `Mul` and the global pools channel-last, which tract leaves on
    // slow paths (src/engine/ops/channel.rs); `PLEURA_TRACT_CHANNEL_OPS=tract` keeps
    // tract's.
    if ops::channel::enabled() {
        let (muls, sums) = ops::channel::patch_channel_ops(&mut typed).with_context(context)?;
        log::debug!(
            "{}: {muls} channel-broadcast Mul and {sums} channel sums replaced by pleura's \
             ({layout:?})",
            model.path.display()
        );
    }
    let plan = typed
        .into_runnable_with_options(options)
        .with_context(context)?;
    Ok(plan)
}

/// The faster layout for `model` (see [`TractLayout::Auto`]) and its plan: both plans run
/// alternately on a constant input, 2 runs each discarded, then the median of 5.
fn fastest_layout(
    model: &LoadedModel,
    shape: &[usize],
    options: &RunOptions,
) -> Result<(TractLayout, Arc<TypedRunnableModel>)> {
    let layouts = [TractLayout::Nhwc, TractLayout::Nchw];
    let plans = layouts
        .iter()
        .map(|&l| tract_plan(model, shape, options, l))
        .collect::<Result<Vec<_>>>()?;
    let mut states = plans
        .iter()
        .map(|p| p.spawn())
        .collect::<TractResult<Vec<_>>>()?;
    let input = Tensor::from_shape(shape, &vec![0.5f32; shape.iter().product()])?;
    let mut times = vec![Vec::new(); plans.len()];
    for round in 0..7 {
        for (state, log) in states.iter_mut().zip(&mut times) {
            let start = Instant::now();
            state.run(tvec!(input.clone().into()))?;
            if round >= 2 {
                log.push(start.elapsed());
            }
        }
    }
    let median = |log: &mut Vec<Duration>| {
        log.sort();
        log[log.len() / 2]
    };
    let best = if median(&mut times[0]) <= median(&mut times[1]) {
        0
    } else {
        1
    };
    log::debug!(
        "{}: tract layout {:?} ({:?} nhwc, {:?} nchw)",
        model.path.display(),
        layouts[best],
        times[0][2],
        times[1][2]
    );
    Ok((layouts[best], Arc::clone(&plans[best])))
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

    /// [`Engine::new`] with explicit settings, on tract; all plans share one thread pool.
    pub fn with_config(pack: &Pack, with_serial: bool, config: &EngineConfig) -> Result<Engine> {
        Engine::with_engine(pack, with_serial, config, &EngineChoice::default())
    }

    /// [`Engine::with_config`] on the engine `choice` names (tract or ONNX Runtime).
    pub fn with_engine(
        pack: &Pack,
        with_serial: bool,
        config: &EngineConfig,
        choice: &EngineChoice,
    ) -> Result<Engine> {
        ensure!(
            !with_serial || pack.serial_networks.len() == pack.manifest.tasks.len(),
            "{}: the per-task networks were released (Pack::release_serial_networks)",
            pack.dir.display()
        );
        let threads = config.threads;
        let options = match choice.kind {
            EngineKind::Tract => run_options(threads)?,
            EngineKind::Ort => {
                ensure!(threads >= 1, "threads must be at least 1, got {threads}");
                RunOptions::default()
            }
        };
        // tract: the backbone decides the layout when asked to pick (the per-task networks share
        // its architecture and input).
        let mut choice = choice.clone();
        let mut backbone = None;
        if choice.kind == EngineKind::Tract && choice.tract_layout == TractLayout::Auto {
            let shape = [
                1,
                pack.manifest.input.channels,
                pack.manifest.input.height,
                pack.manifest.input.width,
            ];
            let (layout, plan) = fastest_layout(&pack.backbone, &shape, &options)?;
            choice.tract_layout = layout;
            backbone = Some(Plan::Tract(plan));
        }
        let choice = &choice;
        let plan =
            |model: &LoadedModel, shape: &[usize]| plan(model, shape, &options, choice, threads);
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
        let backbone = match backbone {
            Some(plan) => plan,
            None => plan(&pack.backbone, &input_shape)?,
        };
        // Each task's head in the form its manifest entry names (`Pack::select_heads` sets it).
        let heads = (0..m.tasks.len())
            .map(|i| plan(pack.head_model(i), &[1, feature_dim]))
            .collect::<Result<_>>()?;
        let head_forms = m.tasks.iter().map(|t| t.head.quantization).collect();
        let serial = with_serial
            .then(|| {
                pack.serial_networks
                    .iter()
                    .map(|n| plan(n, &input_shape))
                    .collect()
            })
            .transpose()?;
        let description = match choice.kind {
            EngineKind::Tract => TRACT_DESCRIPTION.to_string(),
            #[cfg(feature = "ort")]
            EngineKind::Ort => ort::describe(),
            #[cfg(not(feature = "ort"))]
            EngineKind::Ort => unreachable!("plan() refused the ort engine"),
        };
        Ok(Engine {
            kind: choice.kind,
            tract_layout: (choice.kind == EngineKind::Tract).then_some(choice.tract_layout),
            description,
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

    /// The engine that runs the plans.
    pub fn kind(&self) -> EngineKind {
        self.kind
    }

    /// tract: the convolution layout its plans run (never [`TractLayout::Auto`]).
    pub fn tract_layout(&self) -> Option<TractLayout> {
        self.tract_layout
    }

    /// The engine and its version, e.g. `tract 0.23.9` or `onnxruntime 1.32.0 (ort ...)`.
    pub fn description(&self) -> &str {
        &self.description
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
            heads: self.heads.iter().map(Plan::spawn).collect::<Result<_>>()?,
            serial: match &self.serial {
                Some(plans) => plans.iter().map(Plan::spawn).collect::<Result<_>>()?,
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
        let features = self.backbone.run(tensor)?;
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
        let out = self.heads[task].run(features.clone())?;
        scalar(&out)
    }

    /// Probability from the whole fine-tuned network of `task` (the serial baseline). The
    /// engine must have been built with `with_serial`.
    pub fn serial(&mut self, task: usize, input: &[f32]) -> Result<f32> {
        ensure!(
            !self.serial.is_empty(),
            "the engine was built without the serial networks"
        );
        let tensor = self.input_tensor(input)?;
        let out = self.serial[task].run(tensor)?;
        scalar(&out)
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

fn scalar(value: &Tensor) -> Result<f32> {
    let view = value.to_plain_array_view::<f32>()?;
    view.iter()
        .next()
        .copied()
        .context("model produced an empty output")
}
