//! The shared-backbone vs serial-networks benchmark (issue 5): what the paper's 49% looks like
//! on this machine.
//!
//! Over the same phantom frames, preprocessed once before any timing, each frame runs
//!
//! - **hierarchy mode**: the shared path ([`Session::infer`]: backbone once, the view head, then
//!   the head the view selects) against serial execution (the fine-tuned view network, then the
//!   one network its decision selects);
//! - **all-tasks mode**: the shared path with every head against all networks one after another.
//!
//! The two paths of a mode run back to back on the same frame, and which goes first alternates
//! from frame to frame, so both see the same machine state (caches, clock, other load). Warm-up
//! frames run the same way and are discarded. Each path is timed by wall clock around the whole
//! path; stages (backbone, each head, each network) inside it.
//!
//! The saving of a mode is `1 - median(shared) / median(serial)`. Its limit, if heads and
//! bookkeeping cost nothing, is `1 - median(backbone) / median(serial)` (about 1/2 for the
//! hierarchy's two networks, 2/3 for three); the difference ("gap") splits into the heads' time
//! and the rest of the shared path (input tensor, feature copies, gating), as fractions of the
//! serial median. [`report`] summarises, [`machine`] describes the CPU, its load and what tract
//! did with its threads, [`plot`] writes the histogram and raw CSV.

pub mod cli;
pub mod machine;
pub mod plot;
pub mod report;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context, Result};

use crate::capture::phantom::PhantomSource;
use crate::capture::FrameSource;
use crate::engine::{Engine, EngineChoice, EngineConfig, Session, Task, TaskMode};
use crate::pack::Pack;
use crate::phantom::{Labels, View};
use crate::preprocess::Preprocessor;

use machine::{cpu_times, load_average};
pub use report::{BenchReport, ModeReport, Stats};

/// The bar: at least this many timed frames per mode for published figures.
pub const MIN_FRAMES: usize = 300;
/// At most this many distinct preprocessed frames are kept (64 KiB each at 1x128x128); longer
/// runs cycle through them.
const MAX_DISTINCT_FRAMES: usize = 1024;

/// Settings of one benchmark run.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchConfig {
    /// Timed frames per mode ([`MIN_FRAMES`] for figures that count; fewer for quick checks).
    pub frames: usize,
    /// Untimed frames run first, the same way.
    pub warmup: usize,
    /// Threads tract may use inside one plan run.
    pub threads: usize,
    /// Seed of the phantom cohort the frames come from.
    pub seed: u64,
    /// Side of the square phantom frames before preprocessing.
    pub phantom_size: usize,
    /// Frames per phantom clip (the cohort cycles through 8 clips of all four label kinds).
    pub clip_frames: usize,
    /// The engine timed (tract unless `--engine ort`).
    pub engine: EngineChoice,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            frames: MIN_FRAMES,
            warmup: 30,
            threads: 1,
            seed: 0,
            phantom_size: 256,
            clip_frames: 30,
            engine: EngineChoice::default(),
        }
    }
}

/// Per-frame times of one mode, in milliseconds.
#[derive(Clone, Debug, Default)]
pub struct ModeSamples {
    /// Wall time of the shared path per frame.
    pub shared: Vec<f64>,
    /// Wall time of the serial path per frame.
    pub serial: Vec<f64>,
    /// Backbone time per frame (inside the shared path).
    pub backbone: Vec<f64>,
    /// All heads of a frame together (inside the shared path).
    pub heads: Vec<f64>,
    /// Per task (pack order), per frame: its head's time, `None` when the hierarchy skipped it.
    pub head: Vec<Vec<Option<f64>>>,
    /// Per task (pack order), per frame: its network's time, `None` when skipped.
    pub network: Vec<Vec<Option<f64>>>,
    /// Per frame: `true` when the shared path ran first.
    pub shared_first: Vec<bool>,
    /// Per task, per frame: the class the shared path decided, `None` when skipped.
    pub shared_class: Vec<Vec<Option<usize>>>,
    /// Per task, per frame: the class the serial path decided, `None` when skipped.
    pub serial_class: Vec<Vec<Option<usize>>>,
    /// Per task, per frame: the phantom's true class, `None` when it has none for the task.
    pub truth: Vec<Vec<Option<usize>>>,
}

impl ModeSamples {
    fn new(tasks: usize) -> Self {
        Self {
            head: vec![Vec::new(); tasks],
            network: vec![Vec::new(); tasks],
            shared_class: vec![Vec::new(); tasks],
            serial_class: vec![Vec::new(); tasks],
            truth: vec![Vec::new(); tasks],
            ..Self::default()
        }
    }
}

/// Everything one run measured: the summary and the raw per-frame times.
#[derive(Clone, Debug)]
pub struct BenchRun {
    /// The summary (what `bench.json` holds).
    pub report: BenchReport,
    /// Task names, pack order.
    pub tasks: Vec<String>,
    /// Raw times of hierarchy mode.
    pub hierarchy: ModeSamples,
    /// Raw times of all-tasks mode.
    pub all_tasks: ModeSamples,
}

/// Runs the benchmark on `pack` (its serial networks are optimised too).
pub fn run(pack: &Pack, pack_path: &Path, config: &BenchConfig) -> Result<BenchRun> {
    ensure!(config.frames >= 1, "the benchmark needs at least one frame");
    let engine = Engine::with_engine(
        pack,
        true,
        &EngineConfig {
            threads: config.threads,
        },
        &config.engine,
    )?;
    let tasks = engine.tasks();
    let inputs = phantom_inputs(pack, tasks, config)?;
    let mut session = engine.session()?;
    let names: Vec<String> = tasks.iter().map(|t| t.name.clone()).collect();
    let mut hierarchy = ModeSamples::new(names.len());
    let mut all_tasks = ModeSamples::new(names.len());
    let mut warm = (ModeSamples::new(names.len()), ModeSamples::new(names.len()));
    for k in 0..config.warmup {
        let input = &inputs[k % inputs.len()];
        both_modes(&mut session, tasks, input, k, &mut warm.0, &mut warm.1)?;
    }
    let load_before = load_average();
    let cpu_before = cpu_times();
    let started = Instant::now();
    for k in 0..config.frames {
        let input = &inputs[k % inputs.len()];
        both_modes(
            &mut session,
            tasks,
            input,
            k,
            &mut hierarchy,
            &mut all_tasks,
        )
        .with_context(|| format!("timed frame {k}"))?;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = match (cpu_before, cpu_times()) {
        (Some(a), Some(b)) if wall > 0.0 && b.process > a.process => Some(machine::CpuUse {
            per_wall: (b.process - a.process) / wall,
            pool_fraction: (b.pool - a.pool) / (b.process - a.process),
        }),
        _ => None,
    };
    let thread_check = if config.threads > 1 {
        Some(thread_check(pack, &mut session, &inputs, config.frames)?)
    } else {
        None
    };
    let context = report::RunContext {
        pack,
        pack_path,
        config,
        engine: &engine,
        distinct_frames: inputs.len(),
        cpu,
        thread_check,
        load_average: [load_before, load_average()],
    };
    let report = report::summarise(&context, &names, &hierarchy, &all_tasks);
    Ok(BenchRun {
        report,
        tasks: names,
        hierarchy,
        all_tasks,
    })
}

impl BenchRun {
    /// Writes `bench.json`, `latency.csv` and `latency_histogram.png` into `dir` (created if
    /// needed) and returns the path of `bench.json`.
    pub fn write(&mut self, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let csv = dir.join("latency.csv");
        plot::write_csv(self, &csv)?;
        let png = dir.join("latency_histogram.png");
        let axis = plot::write_histogram(self, &png)?;
        self.report.files = Some(report::Files {
            csv: csv.display().to_string(),
            histogram: png.display().to_string(),
            caption: axis.caption(),
        });
        let json = dir.join("bench.json");
        let text = serde_json::to_string_pretty(&self.report)?;
        crate::fsutil::write_atomic(&json, text.as_bytes())?;
        Ok(json)
    }
}

/// The backbone on the engine's threads against the backbone on one thread, interleaved over
/// the same frames (alternating which goes first), after the timed loop.
fn thread_check(
    pack: &Pack,
    session: &mut Session,
    inputs: &[Input],
    frames: usize,
) -> Result<machine::ThreadCheck> {
    let reference = Engine::with_config(pack, false, &EngineConfig::default())?;
    let mut one = reference.session()?;
    let (mut many_ms, mut one_ms) = (Vec::new(), Vec::new());
    for k in 0..frames {
        let input = &inputs[k % inputs.len()].values;
        for turn in 0..2 {
            let start = Instant::now();
            if (turn == 0) == k.is_multiple_of(2) {
                session.features(input)?;
                many_ms.push(ms(start));
            } else {
                one.features(input)?;
                one_ms.push(ms(start));
            }
        }
    }
    let (many, one) = (Stats::of(many_ms).median, Stats::of(one_ms).median);
    Ok(machine::ThreadCheck {
        one_thread_ms: one,
        threads_ms: many,
        speedup: one / many,
    })
}

/// A preprocessed phantom frame and its true class per task.
struct Input {
    values: Vec<f32>,
    truth: Vec<Option<usize>>,
}

/// Class index the phantom's labels give a task of the standard hierarchy.
fn truth_class(labels: &Labels, task: &str) -> Option<usize> {
    match task {
        "view" => Some(usize::from(labels.view == View::Pleural)),
        "lines" => labels.b_lines.map(usize::from),
        "effusion" => labels.effusion.map(usize::from),
        _ => None,
    }
}

/// The phantom frames, preprocessed into network input once, before any timing.
fn phantom_inputs(pack: &Pack, tasks: &[Task], config: &BenchConfig) -> Result<Vec<Input>> {
    let size = config.phantom_size;
    let distinct = config.frames.min(MAX_DISTINCT_FRAMES);
    let mut source =
        PhantomSource::new(config.seed, size, size, config.clip_frames, distinct as u64)?;
    let mut pre = Preprocessor::new(&pack.manifest.input, size, size, None)?;
    let mut inputs = Vec::with_capacity(distinct);
    while let Some(frame) = source.next_frame()? {
        let mut values = vec![0.0f32; pre.output_len()];
        pre.run(&frame.image, &mut values)
            .with_context(|| format!("preprocessing phantom frame {}", frame.seq))?;
        let truth = tasks
            .iter()
            .map(|t| frame.truth.as_ref().and_then(|l| truth_class(l, &t.name)))
            .collect();
        inputs.push(Input { values, truth });
    }
    Ok(inputs)
}

/// Frame `k` in both modes; in each, the two paths run back to back, the shared one first on
/// even frames.
fn both_modes(
    session: &mut Session,
    tasks: &[Task],
    input: &Input,
    k: usize,
    hierarchy: &mut ModeSamples,
    all_tasks: &mut ModeSamples,
) -> Result<()> {
    let shared_first = k.is_multiple_of(2);
    for (mode, samples) in [
        (TaskMode::Hierarchy, hierarchy),
        (TaskMode::AllTasks, all_tasks),
    ] {
        let values = &input.values;
        if shared_first {
            shared_path(session, values, mode, samples)?;
            serial_path(session, tasks, values, mode, samples)?;
        } else {
            serial_path(session, tasks, values, mode, samples)?;
            shared_path(session, values, mode, samples)?;
        }
        samples.shared_first.push(shared_first);
        for (log, t) in samples.truth.iter_mut().zip(&input.truth) {
            log.push(*t);
        }
    }
    Ok(())
}

fn shared_path(
    session: &mut Session,
    input: &[f32],
    mode: TaskMode,
    samples: &mut ModeSamples,
) -> Result<()> {
    let start = Instant::now();
    let result = session.infer(input, mode)?;
    samples.shared.push(ms(start));
    samples.backbone.push(result.backbone.as_secs_f64() * 1e3);
    samples.heads.push(result.heads.as_secs_f64() * 1e3);
    for (log, t) in samples.head.iter_mut().zip(session.last_head_times()) {
        log.push(t.map(|d| d.as_secs_f64() * 1e3));
    }
    for (i, log) in samples.shared_class.iter_mut().enumerate() {
        log.push(result.decision(i));
    }
    Ok(())
}

/// The baseline: whole fine-tuned networks one after another, gated like the heads (on the
/// serial view network's own decision in hierarchy mode).
fn serial_path(
    session: &mut Session,
    tasks: &[Task],
    input: &[f32],
    mode: TaskMode,
    samples: &mut ModeSamples,
) -> Result<()> {
    let start = Instant::now();
    // Allocated per frame, as `Session::infer` does for its own decisions.
    let mut decisions: Vec<Option<usize>> = vec![None; tasks.len()];
    for (i, task) in tasks.iter().enumerate() {
        let enabled = match (mode, task.gate) {
            (TaskMode::AllTasks, _) | (_, None) => true,
            (TaskMode::Hierarchy, Some((parent, class))) => decisions[parent] == Some(class),
        };
        let mut time = None;
        if enabled {
            let t = Instant::now();
            let p = session.serial(i, input)?;
            time = Some(ms(t));
            decisions[i] = Some(usize::from(p >= 0.5));
        }
        samples.network[i].push(time);
    }
    samples.serial.push(ms(start));
    for (log, d) in samples.serial_class.iter_mut().zip(decisions) {
        log.push(d);
    }
    Ok(())
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}
