//! The shared-backbone vs serial-networks benchmark (issue 5): what the paper's 49% looks like
//! on this machine.
//!
//! Over the same phantom frames, preprocessed once before any timing, each frame runs
//!
//! - **hierarchy mode**: the shared path (backbone once, the view head, then the head the view
//!   selects) against serial execution (the fine-tuned view network, then the one network its
//!   decision selects). Both gate through [`TaskSet::runs`] on their own raw per-frame
//!   decisions (why raw: [`pleura::tasks`]);
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
//!
//! The per-task networks are the benchmark's own: it reads them with [`Pack::load_networks`]
//! and plans them with [`Engine::with_networks`]; the live path never loads them.

pub mod cli;
pub mod machine;
pub mod plot;
pub mod report;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context, Result};

use pleura::capture::phantom::PhantomSource;
use pleura::capture::FrameSource;
use pleura::engine::{Engine, EngineChoice, EngineConfig, Session};
use pleura::pack::Pack;
use pleura::preprocess::Preprocessor;
use pleura::tasks::{TaskMode, TaskSet};

use machine::{cpu_times, load_average};
pub use report::{BenchReport, Stats};

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

/// Runs the benchmark on `pack`, whose per-task networks it reads and optimises too.
pub fn run(pack: &Pack, pack_path: &Path, config: &BenchConfig) -> Result<BenchRun> {
    ensure!(config.frames >= 1, "the benchmark needs at least one frame");
    let networks = pack.load_networks()?;
    let engine = Engine::with_networks(
        pack,
        &networks,
        &EngineConfig {
            threads: config.threads,
        },
        &config.engine,
    )?;
    drop(networks);
    let tasks = &pack.tasks;
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
        pleura::fsutil::write_atomic(&json, text.as_bytes())?;
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
    let reference = Engine::with_config(pack, &EngineConfig::default())?;
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

/// The phantom frames, preprocessed into network input once, before any timing, with their
/// truth resolved against the pack's tasks (`None` for a task the phantom knows nothing of).
fn phantom_inputs(pack: &Pack, tasks: &TaskSet, config: &BenchConfig) -> Result<Vec<Input>> {
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
        let truth = match &frame.truth {
            Some(truth) => tasks.classes_of(truth),
            None => vec![None; tasks.len()],
        };
        inputs.push(Input { values, truth });
    }
    Ok(inputs)
}

/// Frame `k` in both modes; in each, the two paths run back to back, the shared one first on
/// even frames.
fn both_modes(
    session: &mut Session,
    tasks: &TaskSet,
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
            shared_path(session, tasks, values, mode, samples)?;
            serial_path(session, tasks, values, mode, samples)?;
        } else {
            serial_path(session, tasks, values, mode, samples)?;
            shared_path(session, tasks, values, mode, samples)?;
        }
        samples.shared_first.push(shared_first);
        for (log, t) in samples.truth.iter_mut().zip(&input.truth) {
            log.push(*t);
        }
    }
    Ok(())
}

/// The shared path: the backbone once, then each head [`TaskSet::runs`] allows on the heads'
/// own per-frame decisions.
fn shared_path(
    session: &mut Session,
    tasks: &TaskSet,
    input: &[f32],
    mode: TaskMode,
    samples: &mut ModeSamples,
) -> Result<()> {
    let start = Instant::now();
    let features = session.features(input)?;
    let backbone = ms(start);
    let heads_start = Instant::now();
    // Allocated per frame, as the live loop's records are.
    let mut decisions: Vec<Option<usize>> = vec![None; tasks.len()];
    let mut times: Vec<Option<f64>> = vec![None; tasks.len()];
    for (i, task) in tasks.iter().enumerate() {
        if tasks.runs(mode, i, &decisions) {
            let t = Instant::now();
            let p = session.head(i, &features)?;
            times[i] = Some(ms(t));
            decisions[i] = Some(task.decide(p));
        }
    }
    let heads = ms(heads_start);
    samples.shared.push(ms(start));
    samples.backbone.push(backbone);
    samples.heads.push(heads);
    for (log, t) in samples.head.iter_mut().zip(times) {
        log.push(t);
    }
    for (log, d) in samples.shared_class.iter_mut().zip(decisions) {
        log.push(d);
    }
    Ok(())
}

/// The baseline: whole fine-tuned networks one after another, gated like the heads (on the
/// serial view network's own decision in hierarchy mode).
fn serial_path(
    session: &mut Session,
    tasks: &TaskSet,
    input: &[f32],
    mode: TaskMode,
    samples: &mut ModeSamples,
) -> Result<()> {
    let start = Instant::now();
    let mut decisions: Vec<Option<usize>> = vec![None; tasks.len()];
    for (i, task) in tasks.iter().enumerate() {
        let mut time = None;
        if tasks.runs(mode, i, &decisions) {
            let t = Instant::now();
            let p = session.network(i, input)?;
            time = Some(ms(t));
            decisions[i] = Some(task.decide(p));
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn default_pack() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default")
    }

    #[test]
    fn bench_on_a_few_frames_reports_finite_savings_and_writes_its_files() {
        let pack = Pack::load(default_pack()).unwrap();
        let config = BenchConfig {
            frames: 6,
            warmup: 1,
            phantom_size: 64,
            clip_frames: 2,
            ..Default::default()
        };
        let mut bench = run(&pack, &default_pack(), &config).unwrap();
        for saving in [bench.report.saving_hierarchy, bench.report.saving_all_tasks] {
            assert!(
                saving.is_finite() && saving > -1.0 && saving < 1.0,
                "{saving}"
            );
        }
        // The hierarchy runs the view network and exactly one other; all-tasks mode runs three.
        assert!((bench.report.hierarchy.networks_per_frame - 2.0).abs() < 1e-12);
        assert!((bench.report.all_tasks.networks_per_frame - 3.0).abs() < 1e-12);

        let dir = tempfile::tempdir().unwrap();
        let json_path = bench.write(&dir.path().join("bench")).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
        for key in [
            "saving_hierarchy",
            "saving_all_tasks",
            "limit_hierarchy",
            "limit_all_tasks",
            "stage_medians_ms",
            "p99_ms",
            "engine",
            "threads",
            "cpu",
            "versions",
            "frames",
            "hierarchy",
            "all_tasks",
        ] {
            assert!(!json[key].is_null(), "bench.json lacks `{key}`: {json}");
        }
        assert_eq!(json["engine"], "tract 0.23.9");
        assert_eq!(json["threads"], 1);
        assert_eq!(json["frames"], 6);
        for stage in ["backbone", "head.view", "network.view", "network.effusion"] {
            assert!(
                json["stage_medians_ms"][stage].as_f64().unwrap() > 0.0,
                "{stage}"
            );
        }
        assert!(json["p99_ms"]["hierarchy.serial"].as_f64().unwrap() > 0.0);
        assert!(json["files"]["caption"]
            .as_str()
            .unwrap()
            .contains("latency.csv"));

        let csv = std::fs::read_to_string(dir.path().join("bench/latency.csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + 2 * 2 * 6);
        assert!(
            csv.starts_with("frame,mode,path,ran_first,total_ms"),
            "{csv}"
        );
        let png = pleura::image::read_png(&dir.path().join("bench/latency_histogram.png")).unwrap();
        assert!(png.width > 100 && png.height > 100);
    }
}
