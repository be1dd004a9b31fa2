//! Inference engine: a verified [`Pack`] turned into optimised tract plans.
//!
//! Lifecycle (tract's own): [`Engine::new`] pins every input shape to batch 1 and optimises the
//! plans once; [`Engine::session`] spawns per-stream state. A [`Session`] executes plans and
//! nothing else: [`Session::features`] runs the shared backbone, [`Session::head`] one task
//! head on its features, [`Session::network`] one whole network on an image (the per-task
//! fine-tuned networks the benchmark brings with [`Engine::with_networks`]). Which heads run on
//! a frame is the caller's question, answered by [`crate::tasks::TaskSet::runs`].
//!
//! Determinism: a plan's choices are fixed by rules, never by timings taken at start-up, so the
//! same input gives the same bits on every run of the same build on the same machine, however
//! loaded (a replayed recording is an audit trail). [`Engine::plan`] says what was chosen.
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

impl TractLayout {
    /// The layout [`TractLayout::Auto`] stands for on a `[1, C, H, W]` input: NHWC or NCHW,
    /// from the input size and whether pleura's depthwise kernel is on (see the variant).
    pub fn auto_for(input: [usize; 4]) -> TractLayout {
        if ops::depthwise::enabled() || input[2] * input[3] <= 160 * 160 {
            TractLayout::Nhwc
        } else {
            TractLayout::Nchw
        }
    }

    /// `auto`, `nhwc` or `nchw`.
    pub fn as_str(self) -> &'static str {
        match self {
            TractLayout::Auto => "auto",
            TractLayout::Nhwc => "nhwc",
            TractLayout::Nchw => "nchw",
        }
    }
}

impl FromStr for TractLayout {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(TractLayout::Auto),
            "nhwc" => Ok(TractLayout::Nhwc),
            "nchw" => Ok(TractLayout::Nchw),
            other => anyhow::bail!("layout `{other}`: expected `auto`, `nhwc` or `nchw`"),
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TractLayout {
    /// A fixed rule ([`TractLayout::auto_for`]), the same on every run: channel-last while
    /// pleura's own depthwise kernel runs (the default; it is 2.5x faster channel-last, and
    /// `make bench-engines` measured NHWC ahead at 128 and 224 px, 1 and 2 threads); with
    /// tract's own kernel (`PLEURA_TRACT_DEPTHWISE=tract`), channel-last up to 160x160 inputs
    /// and channel-first above (tract's squeeze-excitation `Mul` is slow channel-last). It
    /// used to time both layouts at start-up and keep the faster, but the two plans agree only
    /// to about 1e-7 and under load the choice flipped from run to run, so replays differed.
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
    let layout = match (layout, shape) {
        (TractLayout::Auto, &[n, c, h, w]) => TractLayout::auto_for([n, c, h, w]),
        _ => layout,
    };
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

/// What an engine's plans are: enough to tell two runs apart. A run records it (summary and
/// first record) so that a replay can be checked against the plan it was made with.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PlanInfo {
    /// The engine and its version, e.g. `tract 0.23.9`.
    pub engine: String,
    /// tract: the convolution layout of every plan (`nhwc` or `nchw`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<&'static str>,
    /// tract: who runs depthwise convolutions: `pleura <isa>` (avx512, avx2, neon, portable) or
    /// `tract`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depthwise: Option<String>,
    /// tract: who runs the channel-last squeeze-excitation `Mul` and pool sums: `pleura` or
    /// `tract`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_ops: Option<&'static str>,
    /// Threads one plan run may use.
    pub threads: usize,
    /// Per task (pack order): the head form that runs (`f32` or `int8`).
    pub heads: Vec<&'static str>,
}

/// Optimised plans of a pack.
#[derive(Debug)]
pub struct Engine {
    kind: EngineKind,
    tract_layout: Option<TractLayout>,
    plan: PlanInfo,
    input_shape: [usize; 4],
    feature_dim: usize,
    backbone: Plan,
    heads: Vec<Plan>,
    head_forms: Vec<Quantization>,
    networks: Vec<Plan>,
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
    /// Optimises the backbone and heads of `pack` to run on one thread, on tract.
    pub fn new(pack: &Pack) -> Result<Engine> {
        Engine::with_config(pack, &EngineConfig::default())
    }

    /// [`Engine::new`] with explicit settings; all plans share one thread pool.
    pub fn with_config(pack: &Pack, config: &EngineConfig) -> Result<Engine> {
        Engine::with_engine(pack, config, &EngineChoice::default())
    }

    /// [`Engine::with_config`] on the engine `choice` names (tract or ONNX Runtime).
    pub fn with_engine(
        pack: &Pack,
        config: &EngineConfig,
        choice: &EngineChoice,
    ) -> Result<Engine> {
        Engine::with_networks(pack, &[], config, choice)
    }

    /// [`Engine::with_engine`], and also a plan of each of `networks`: whole networks
    /// `image [1, C, H, W] -> probability [1, 1]` on the pack's input, run by
    /// [`Session::network`] (the benchmark's per-task networks, from [`Pack::load_networks`]).
    pub fn with_networks(
        pack: &Pack,
        networks: &[LoadedModel],
        config: &EngineConfig,
        choice: &EngineChoice,
    ) -> Result<Engine> {
        let threads = config.threads;
        let options = match choice.kind {
            EngineKind::Tract => run_options(threads)?,
            EngineKind::Ort => {
                ensure!(threads >= 1, "threads must be at least 1, got {threads}");
                RunOptions::default()
            }
        };
        let m = &pack.manifest;
        let input_shape = [1, m.input.channels, m.input.height, m.input.width];
        let feature_dim = m.backbone.feature_dim;
        // tract: one layout for every plan, by rule (the networks share the backbone's input).
        let mut choice = choice.clone();
        if choice.kind == EngineKind::Tract && choice.tract_layout == TractLayout::Auto {
            choice.tract_layout = TractLayout::auto_for(input_shape);
        }
        let choice = &choice;
        let plan =
            |model: &LoadedModel, shape: &[usize]| plan(model, shape, &options, choice, threads);
        let backbone = plan(&pack.backbone, &input_shape)?;
        // Each task's head in the form its manifest entry names (`Pack::select_heads` sets it).
        let heads = (0..m.tasks.len())
            .map(|i| plan(pack.head_model(i), &[1, feature_dim]))
            .collect::<Result<_>>()?;
        let networks = networks
            .iter()
            .map(|n| plan(n, &input_shape))
            .collect::<Result<_>>()?;
        let head_forms: Vec<Quantization> = m.tasks.iter().map(|t| t.head.quantization).collect();
        let tract = choice.kind == EngineKind::Tract;
        let plan = PlanInfo {
            engine: match choice.kind {
                EngineKind::Tract => TRACT_DESCRIPTION.to_string(),
                #[cfg(feature = "ort")]
                EngineKind::Ort => ort::describe(),
                #[cfg(not(feature = "ort"))]
                EngineKind::Ort => unreachable!("plan() refused the ort engine"),
            },
            layout: tract.then(|| choice.tract_layout.as_str()),
            depthwise: tract.then(|| {
                if ops::depthwise::enabled() {
                    format!("pleura {}", ops::depthwise::Isa::best().as_str())
                } else {
                    "tract".to_string()
                }
            }),
            channel_ops: tract.then(|| {
                if choice.tract_layout == TractLayout::Nchw {
                    "none (channel-first)"
                } else if ops::channel::enabled() {
                    "pleura"
                } else {
                    "tract"
                }
            }),
            threads,
            heads: head_forms.iter().map(|q| q.as_str()).collect(),
        };
        Ok(Engine {
            kind: choice.kind,
            tract_layout: tract.then_some(choice.tract_layout),
            plan,
            input_shape,
            feature_dim,
            backbone,
            heads,
            head_forms,
            networks,
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

    /// What the plans are (engine, layout, kernels, threads, head forms).
    pub fn plan(&self) -> &PlanInfo {
        &self.plan
    }

    /// The engine and its version, e.g. `tract 0.23.9` or `onnxruntime 1.32.0 (ort ...)`.
    pub fn description(&self) -> &str {
        &self.plan.engine
    }

    /// Per task (pack order): the form of the head this engine runs.
    pub fn head_forms(&self) -> &[Quantization] {
        &self.head_forms
    }

    /// Threads tract may use inside one plan run.
    pub fn threads(&self) -> usize {
        self.plan.threads
    }

    /// Number of heads (one per task, pack order).
    pub fn heads(&self) -> usize {
        self.heads.len()
    }

    /// Number of whole networks planned ([`Engine::with_networks`]).
    pub fn networks(&self) -> usize {
        self.networks.len()
    }

    /// `[1, channels, height, width]`.
    pub fn input_shape(&self) -> [usize; 4] {
        self.input_shape
    }

    /// Length of `input` slices given to [`Session::features`] and [`Session::network`].
    pub fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }

    /// Per-stream state over the shared plans.
    pub fn session(&self) -> Result<Session<'_>> {
        Ok(Session {
            engine: self,
            backbone: self.backbone.spawn()?,
            heads: self.heads.iter().map(Plan::spawn).collect::<Result<_>>()?,
            networks: self
                .networks
                .iter()
                .map(Plan::spawn)
                .collect::<Result<_>>()?,
        })
    }
}

/// Per-stream inference state: runs the engine's plans, one call a plan.
pub struct Session<'e> {
    engine: &'e Engine,
    backbone: PlanState,
    heads: Vec<PlanState>,
    networks: Vec<PlanState>,
}

impl Session<'_> {
    /// The backbone's feature vector (`[1, feature_dim]`) for `input` (`[channels, height,
    /// width]`, from [`crate::preprocess::Preprocessor`]).
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

    /// Probability of task `task`'s positive class from its head on `features` (`[1,
    /// feature_dim]`, from [`Session::features`]).
    pub fn head(&mut self, task: usize, features: &Tensor) -> Result<f32> {
        let count = self.heads.len();
        let head = self
            .heads
            .get_mut(task)
            .with_context(|| format!("head {task}: the engine has {count} heads"))?;
        scalar(&head.run(features.clone())?)
    }

    /// Probability from whole network `i` ([`Engine::with_networks`] order) on `input`
    /// (`[channels, height, width]`).
    pub fn network(&mut self, i: usize, input: &[f32]) -> Result<f32> {
        let count = self.networks.len();
        ensure!(
            i < count,
            "network {i}: the engine plans {count} networks (Engine::with_networks)"
        );
        let tensor = self.input_tensor(input)?;
        scalar(&self.networks[i].run(tensor)?)
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
