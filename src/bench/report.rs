//! The benchmark's summary: savings, their limits, where the rest goes, per-stage statistics,
//! and the machine it ran on; serialised as `bench.json` and printed as a table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::machine::{cpu_model, threading, CpuUse, ThreadCheck, Threading};
use super::{BenchConfig, ModeSamples};
use pleura::engine::{Engine, PlanInfo};
use pleura::latency::percentile;
use pleura::pack::{Pack, FORMAT_VERSION};

/// The tract version `Cargo.toml` pins (`=0.23.9`).
pub const TRACT_VERSION: &str = "0.23.9";
/// The saving VanBerlo et al. measured with the hierarchy (shared backbone vs serial networks).
pub const PAPER_SAVING_HIERARCHY: f64 = 0.49;

/// Statistics of one series, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Values in the series (frames the stage ran on).
    pub frames: usize,
    /// Nearest-rank median.
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest value.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Stats {
    /// Statistics of `values` (NaN fields when empty).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Stats {
        let mut v: Vec<f64> = values.into_iter().collect();
        v.sort_by(f64::total_cmp);
        Stats {
            frames: v.len(),
            median: percentile(&v, 0.5),
            p90: percentile(&v, 0.9),
            p99: percentile(&v, 0.99),
            max: v.last().copied().unwrap_or(f64::NAN),
            mean: v.iter().sum::<f64>() / v.len() as f64,
        }
    }
}

/// Where the part of the limit that the shared path did not reach went, as fractions of the
/// serial median: `limit - saving = heads + overhead`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Rest {
    /// Median time of the heads of a frame.
    pub heads: f64,
    /// Everything else in the shared path: input tensor, feature copies, gating, allocation
    /// (the remainder, so it absorbs the non-additivity of medians).
    pub overhead: f64,
}

/// Whether the shared and serial paths decided alike, and rightly, for one task.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Decisions {
    /// Frames where both paths ran the task.
    pub both_ran: usize,
    /// Frames whose phantom truth gives this task a class (0: the phantom knows no such task,
    /// and the `*_correct` fields are NaN).
    pub truth_frames: usize,
    /// Of those, the fraction where both decided the same class.
    pub agree: f64,
    /// Fraction of the shared path's decisions that match the phantom's truth.
    pub shared_correct: f64,
    /// Fraction of the serial path's decisions that match the phantom's truth.
    pub serial_correct: f64,
}

impl Decisions {
    fn of(shared: &[Option<usize>], serial: &[Option<usize>], truth: &[Option<usize>]) -> Self {
        let frac = |hits: usize, n: usize| hits as f64 / n as f64;
        let both: Vec<(usize, usize)> = shared
            .iter()
            .zip(serial)
            .filter_map(|(a, b)| a.zip(*b))
            .collect();
        let correct = |path: &[Option<usize>]| {
            let judged: Vec<bool> = path
                .iter()
                .zip(truth)
                .filter_map(|(d, t)| d.zip(*t).map(|(d, t)| d == t))
                .collect();
            frac(judged.iter().filter(|ok| **ok).count(), judged.len())
        };
        Decisions {
            both_ran: both.len(),
            truth_frames: truth.iter().flatten().count(),
            agree: frac(both.iter().filter(|(a, b)| a == b).count(), both.len()),
            shared_correct: correct(shared),
            serial_correct: correct(serial),
        }
    }
}

/// One mode's results.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ModeReport {
    /// Shared path per frame.
    pub shared_ms: Stats,
    /// Serial path per frame.
    pub serial_ms: Stats,
    /// `1 - median shared / median serial`.
    pub saving: f64,
    /// `1 - median backbone / median serial`: the saving if heads and overhead cost nothing.
    pub limit: f64,
    /// `1 - 1 / networks per frame`, if a network cost exactly one backbone.
    pub ideal: f64,
    /// `limit - saving`.
    pub gap: f64,
    /// The gap split into heads and overhead.
    pub rest: Rest,
    /// Mean number of networks the serial path ran per frame.
    pub networks_per_frame: f64,
    /// `backbone`, `heads` (all of a frame), `head.<task>` and `network.<task>`.
    pub stages_ms: BTreeMap<String, Stats>,
    /// Per task: do heads and networks decide alike (and like the phantom's truth)?
    pub decisions: BTreeMap<String, Decisions>,
}

/// The pack that was measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PackInfo {
    /// Folder it was loaded from.
    pub path: String,
    /// Manifest name.
    pub name: String,
    /// Backbone architecture.
    pub architecture: String,
    /// Network input `[1, C, H, W]`.
    pub input: [usize; 4],
    /// Trained on phantom data only.
    pub synthetic: bool,
}

/// The frames the benchmark ran on.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PhantomInfo {
    /// Cohort seed.
    pub seed: u64,
    /// Side of the square frames before preprocessing.
    pub size: usize,
    /// Frames per clip.
    pub clip_frames: usize,
    /// Distinct preprocessed frames (longer runs cycle through them).
    pub distinct_frames: usize,
}

/// Files written next to `bench.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Files {
    /// Raw per-frame times.
    pub csv: String,
    /// Latency histogram.
    pub histogram: String,
    /// How to read the histogram.
    pub caption: String,
}

/// What `pleura bench` reports (`bench.json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchReport {
    /// Inference engine and version.
    pub engine: String,
    /// The plans timed: engine, tract layout, kernels, threads, head forms.
    pub plan: PlanInfo,
    /// Threads tract was allowed (see `threading`).
    pub threads: usize,
    /// How tract used them.
    pub threading: Threading,
    /// CPU model (`/proc/cpuinfo`).
    pub cpu: String,
    /// Logical CPUs of the machine.
    pub logical_cpus: usize,
    /// One-minute load average before and after the timed loop: other load makes timings noisy.
    pub load_average: [Option<f64>; 2],
    /// Versions of what was measured.
    pub versions: BTreeMap<String, String>,
    /// The pack.
    pub pack: PackInfo,
    /// Timed frames per mode.
    pub frames: usize,
    /// Untimed warm-up frames per mode.
    pub warmup: usize,
    /// Where the frames came from.
    pub phantom: PhantomInfo,
    /// Hierarchy mode: `1 - median shared / median serial`.
    pub saving_hierarchy: f64,
    /// All-tasks mode: `1 - median shared / median serial`.
    pub saving_all_tasks: f64,
    /// Hierarchy mode: `1 - median backbone / median serial`.
    pub limit_hierarchy: f64,
    /// All-tasks mode: `1 - median backbone / median serial`.
    pub limit_all_tasks: f64,
    /// The paper's measured saving (hierarchy), for reference.
    pub paper_saving_hierarchy: f64,
    /// Medians of every stage over both modes: `backbone`, `head.<task>`, `network.<task>`.
    pub stage_medians_ms: BTreeMap<String, f64>,
    /// 99th percentiles per frame: `hierarchy.shared`, `hierarchy.serial`, `all_tasks.shared`,
    /// `all_tasks.serial`.
    pub p99_ms: BTreeMap<String, f64>,
    /// Hierarchy mode in detail.
    pub hierarchy: ModeReport,
    /// All-tasks mode in detail.
    pub all_tasks: ModeReport,
    /// Files written with `--out`.
    pub files: Option<Files>,
}

/// What [`summarise`] needs besides the samples.
pub(super) struct RunContext<'a> {
    pub pack: &'a Pack,
    pub pack_path: &'a Path,
    pub config: &'a BenchConfig,
    pub engine: &'a Engine,
    pub distinct_frames: usize,
    pub cpu: Option<CpuUse>,
    pub thread_check: Option<ThreadCheck>,
    pub load_average: [Option<f64>; 2],
}

fn mode_report(tasks: &[String], s: &ModeSamples) -> ModeReport {
    let shared = Stats::of(s.shared.iter().copied());
    let serial = Stats::of(s.serial.iter().copied());
    let backbone = Stats::of(s.backbone.iter().copied());
    let heads = Stats::of(s.heads.iter().copied());
    let mut stages = BTreeMap::new();
    let mut decisions = BTreeMap::new();
    for (i, name) in tasks.iter().enumerate() {
        let d = Decisions::of(&s.shared_class[i], &s.serial_class[i], &s.truth[i]);
        decisions.insert(name.clone(), d);
        stages.insert(
            format!("head.{name}"),
            Stats::of(s.head[i].iter().flatten().copied()),
        );
        let net = Stats::of(s.network[i].iter().flatten().copied());
        stages.insert(format!("network.{name}"), net);
    }
    let networks = s.network.iter().flatten().filter(|t| t.is_some()).count();
    let networks_per_frame = networks as f64 / s.serial.len().max(1) as f64;
    let saving = 1.0 - shared.median / serial.median;
    let limit = 1.0 - backbone.median / serial.median;
    let rest_heads = heads.median / serial.median;
    stages.insert("backbone".into(), backbone);
    stages.insert("heads".into(), heads);
    ModeReport {
        shared_ms: shared,
        serial_ms: serial,
        saving,
        limit,
        ideal: 1.0 - 1.0 / networks_per_frame,
        gap: limit - saving,
        rest: Rest {
            heads: rest_heads,
            overhead: limit - saving - rest_heads,
        },
        networks_per_frame,
        stages_ms: stages,
        decisions,
    }
}

pub(super) fn summarise(
    ctx: &RunContext,
    tasks: &[String],
    hierarchy: &ModeSamples,
    all_tasks: &ModeSamples,
) -> BenchReport {
    let h = mode_report(tasks, hierarchy);
    let a = mode_report(tasks, all_tasks);
    let mut stage_medians = BTreeMap::new();
    let pooled = |f: &dyn Fn(&ModeSamples) -> Vec<f64>| {
        Stats::of(f(hierarchy).into_iter().chain(f(all_tasks))).median
    };
    stage_medians.insert("backbone".to_string(), pooled(&|s| s.backbone.clone()));
    for (i, name) in tasks.iter().enumerate() {
        let head = pooled(&|s| s.head[i].iter().flatten().copied().collect());
        stage_medians.insert(format!("head.{name}"), head);
        let net = pooled(&|s| s.network[i].iter().flatten().copied().collect());
        stage_medians.insert(format!("network.{name}"), net);
    }
    let p99 = BTreeMap::from([
        ("hierarchy.shared".to_string(), h.shared_ms.p99),
        ("hierarchy.serial".to_string(), h.serial_ms.p99),
        ("all_tasks.shared".to_string(), a.shared_ms.p99),
        ("all_tasks.serial".to_string(), a.serial_ms.p99),
    ]);
    let m = &ctx.pack.manifest;
    let mut versions = BTreeMap::from([
        ("pleura".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ("tract".to_string(), TRACT_VERSION.to_string()),
        ("pack_format".to_string(), FORMAT_VERSION.to_string()),
        (
            "target".to_string(),
            format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
        ),
    ]);
    versions.insert("engine".to_string(), ctx.engine.description().to_string());
    BenchReport {
        engine: ctx.engine.description().to_string(),
        plan: ctx.engine.plan().clone(),
        threads: ctx.engine.threads(),
        threading: threading(ctx.engine.threads(), ctx.cpu, ctx.thread_check),
        cpu: cpu_model(),
        logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_average: ctx.load_average,
        versions,
        pack: PackInfo {
            path: ctx.pack_path.display().to_string(),
            name: m.name.clone(),
            architecture: m.backbone.architecture.clone(),
            input: ctx.engine.input_shape(),
            synthetic: m.provenance.synthetic,
        },
        frames: ctx.config.frames,
        warmup: ctx.config.warmup,
        phantom: PhantomInfo {
            seed: ctx.config.seed,
            size: ctx.config.phantom_size,
            clip_frames: ctx.config.clip_frames,
            distinct_frames: ctx.distinct_frames,
        },
        saving_hierarchy: h.saving,
        saving_all_tasks: a.saving,
        limit_hierarchy: h.limit,
        limit_all_tasks: a.limit,
        paper_saving_hierarchy: PAPER_SAVING_HIERARCHY,
        stage_medians_ms: stage_medians,
        p99_ms: p99,
        hierarchy: h,
        all_tasks: a,
        files: None,
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

impl BenchReport {
    /// A human-readable table of the report.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let load = |l: Option<f64>| l.map_or("?".into(), |l| format!("{l:.2}"));
        let _ = writeln!(
            s,
            "pleura bench: {} ({}), {} frames + {} warm-up per mode, {} thread(s), {}{}\n\
             cpu: {} ({} logical CPUs), load average {} -> {}{}",
            self.pack.path,
            self.pack.architecture,
            self.frames,
            self.warmup,
            self.threads,
            self.engine,
            self.plan
                .layout
                .map_or(String::new(), |l| format!(" ({l})")),
            self.cpu,
            self.logical_cpus,
            load(self.load_average[0]),
            load(self.load_average[1]),
            if self.load_average[0].unwrap_or(0.0) > 0.5 * self.logical_cpus as f64 {
                "  (busy machine: timings are noisy)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            "mode        path     median ms   p99 ms   saving   limit    gap = heads + overhead"
        );
        for (name, m) in [
            ("hierarchy", &self.hierarchy),
            ("all tasks", &self.all_tasks),
        ] {
            let _ = writeln!(
                s,
                "{name:<11} shared  {:>9.3} {:>8.3}",
                m.shared_ms.median, m.shared_ms.p99
            );
            let _ = writeln!(
                s,
                "{:<11} serial  {:>9.3} {:>8.3}   {:>6}  {:>6}   {} = {} + {}   ({:.1} networks/frame, ideal {})",
                "",
                m.serial_ms.median,
                m.serial_ms.p99,
                pct(m.saving),
                pct(m.limit),
                pct(m.gap),
                pct(m.rest.heads),
                pct(m.rest.overhead),
                m.networks_per_frame,
                pct(m.ideal),
            );
        }
        let _ = writeln!(
            s,
            "stage              hierarchy: median   p99  frames | all tasks: median   p99  frames"
        );
        for (stage, h) in &self.hierarchy.stages_ms {
            let a = &self.all_tasks.stages_ms[stage];
            let _ = writeln!(
                s,
                "{stage:<19} {:>16.3} {:>7.3} {:>5} | {:>16.3} {:>7.3} {:>5}",
                h.median, h.p99, h.frames, a.median, a.p99, a.frames
            );
        }
        for (name, m) in [
            ("hierarchy", &self.hierarchy),
            ("all tasks", &self.all_tasks),
        ] {
            let _ = write!(s, "decisions, {name}: head vs network agree");
            for (task, d) in &m.decisions {
                let right = if d.truth_frames == 0 {
                    "no phantom truth for this task".to_string()
                } else {
                    format!(
                        "right vs phantom: {} / {}",
                        pct(d.shared_correct),
                        pct(d.serial_correct)
                    )
                };
                let _ = write!(
                    s,
                    "  {task} {} ({} frames; {right})",
                    pct(d.agree),
                    d.both_ran,
                );
            }
            s.push('\n');
        }
        let _ = writeln!(s, "threads: {}", self.threading.note);
        let _ = writeln!(
            s,
            "paper (hierarchy): {}; measured here: hierarchy {}, all tasks {}",
            pct(self.paper_saving_hierarchy),
            pct(self.saving_hierarchy),
            pct(self.saving_all_tasks)
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_use_nearest_rank() {
        let s = Stats::of((1..=100).map(f64::from));
        assert_eq!((s.frames, s.median, s.p99, s.max), (100, 50.0, 99.0, 100.0));
        assert!((s.mean - 50.5).abs() < 1e-12);
        assert!(Stats::of([]).median.is_nan());
    }

    #[test]
    fn the_gap_splits_into_heads_and_overhead() {
        let tasks = vec!["view".to_string(), "lines".to_string()];
        let samples = ModeSamples {
            shared: vec![6.0; 4],
            serial: vec![10.0; 4],
            backbone: vec![5.0; 4],
            heads: vec![0.5; 4],
            head: vec![vec![Some(0.25); 4], vec![Some(0.25); 4]],
            network: vec![vec![Some(5.0); 4], vec![Some(5.0); 4]],
            shared_first: vec![true, false, true, false],
            shared_class: vec![vec![Some(0), Some(1), Some(1), Some(0)], vec![Some(1); 4]],
            serial_class: vec![vec![Some(0), Some(1), Some(0), None], vec![Some(1); 4]],
            truth: vec![vec![Some(0), Some(1), Some(1), Some(1)], vec![None; 4]],
        };
        let m = mode_report(&tasks, &samples);
        assert!((m.saving - 0.4).abs() < 1e-12);
        assert!((m.limit - 0.5).abs() < 1e-12);
        assert!((m.ideal - 0.5).abs() < 1e-12);
        assert!((m.rest.heads - 0.05).abs() < 1e-12);
        assert!((m.rest.overhead - 0.05).abs() < 1e-12);
        assert!((m.gap - m.rest.heads - m.rest.overhead).abs() < 1e-12);
        assert_eq!(m.stages_ms["network.lines"].frames, 4);
        let view = &m.decisions["view"];
        assert_eq!(view.both_ran, 3);
        assert!((view.agree - 2.0 / 3.0).abs() < 1e-12);
        assert!((view.shared_correct - 0.75).abs() < 1e-12);
        assert!((view.serial_correct - 2.0 / 3.0).abs() < 1e-12);
        assert!(m.decisions["lines"].shared_correct.is_nan());
    }
}
