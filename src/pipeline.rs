//! The live loop: capture thread -> newest-frame mailbox -> preprocess -> backbone -> heads on
//! smoothed decisions -> per-frame record -> summary.
//!
//! [`run`] starts the source on a capture thread ([`Live`]), so capture overlaps inference; a
//! real-time source hands over only its newest frame and the older ones are dropped and counted.
//! Each frame's head probabilities go through a per-task [`Smoother`]; the hierarchy gates the
//! A-/B-lines and effusion heads on the **smoothed** view decision, so gated heads do not flicker
//! on and off with single frames. A bad frame (wrong size, or reported bad by its source) is
//! counted and skipped with a message naming it; a source error, a failed inference or a closed
//! output ends the run, and a summary is produced in every case.

mod config;
mod histogram;
mod summary;

use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use crate::capture::live::{report_bad_frame, Live, Next};
use crate::capture::{Frame, FrameSource};
use crate::engine::{Engine, Session, Task, TaskMode};
use crate::pack::InputSpec;
use crate::phantom::{Labels, View};
use crate::preprocess::{Preprocessor, Rect};
use crate::smoothing::{Smoothed, Smoother, SmoothingConfig};
use histogram::Histogram;

pub use config::RunConfig;
pub use summary::{RunEnd, RunSummary, TaskAgreement};

/// Options of one run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Which heads run.
    pub mode: TaskMode,
    /// Region of the source frame that holds the ultrasound image.
    pub crop: Option<Rect>,
    /// Per task (engine order): temporal smoothing; empty = defaults for every task.
    pub smoothing: Vec<SmoothingConfig>,
    /// Raised (by Ctrl-C) to end the run after the current frame; the summary still comes.
    pub stop: Arc<AtomicBool>,
    /// End the run after this many inferred frames (dropped and bad frames do not count).
    pub max_frames: Option<u64>,
}

/// A finished run: its summary, and the error that ended it if it failed.
#[derive(Debug)]
pub struct RunOutcome {
    /// Always produced, whatever ended the run.
    pub summary: RunSummary,
    /// Why the run failed (the summary's `error` is its text).
    pub error: Option<anyhow::Error>,
}

/// Class index that the phantom's ground truth gives for a task of the standard hierarchy
/// (`view`: parenchymal/pleural, `lines`: A-lines/B-lines, `effusion`: absent/present).
pub fn truth_class(labels: &Labels, task: &str) -> Option<usize> {
    match task {
        "view" => Some(usize::from(labels.view == View::Pleural)),
        "lines" => labels.b_lines.map(usize::from),
        "effusion" => labels.effusion.map(usize::from),
        _ => None,
    }
}

/// Latency stages of a frame, in report order. `capture`: the source producing (and
/// converting) it; `convert`: of that, pixel-format conversion (sources that convert only);
/// `wait`: from delivery to the start of preprocessing (time in the mailbox: under a frame
/// period for a real-time source; about one inference for a source that waits, whose next frame
/// is ready while the current one is inferred); `total`: capture + wait + preprocess + backbone
/// + heads, the age of the frame when its decisions are out.
const STAGES: [&str; 7] = [
    "capture",
    "convert",
    "wait",
    "preprocess",
    "backbone",
    "heads",
    "total",
];

/// Runs frames from `source` through `engine` until the source ends, fails, or
/// `options.stop` is raised, writing one JSON object per frame to `out`. An `Err` means the run
/// could not start; once it has started, the outcome carries a summary whatever happens.
pub fn run<S>(
    source: S,
    engine: &Engine,
    options: &RunOptions,
    input_spec: &InputSpec,
    out: &mut dyn Write,
) -> Result<RunOutcome>
where
    S: FrameSource + Send + 'static,
{
    let description = source.describe();
    let tasks = engine.tasks();
    let smoothing = if options.smoothing.is_empty() {
        vec![SmoothingConfig::default(); tasks.len()]
    } else {
        options.smoothing.clone()
    };
    let mut stream = Stream::new(engine, options, input_spec, source.frame_size(), &smoothing)
        .with_context(|| format!("preparing to run {description}"))?;
    let mut report = Report {
        stages: vec![Histogram::default(); STAGES.len()],
        agreement: vec![TaskAgreement::default(); tasks.len()],
        frames: 0,
        bad: 0,
    };

    let rss_start_kib = proc_status_kib("VmRSS");
    let started = Instant::now();
    let live = Live::start(source, Arc::clone(&options.stop))?;
    let (end, error) = loop {
        let (frame, dropped) = match live.next() {
            Next::Frame { frame, dropped } => (frame, dropped),
            Next::End => break (RunEnd::SourceEnded, None),
            Next::Stopped => break (RunEnd::Interrupted, None),
            Next::Failed(err) => break (RunEnd::Failed, Some(err)),
        };
        let picked = Instant::now();
        if let Err(err) = stream.prepare(&frame) {
            report.bad += 1;
            let message = format!("{description}: frame {}: {err:#}", frame.seq);
            report_bad_frame(report.bad + live.counts().bad, &message);
            continue;
        }
        let result = stream
            .decide(picked, &frame)
            .with_context(|| format!("inference on frame {}", frame.seq))
            .and_then(|decided| {
                let line = report.record(tasks, &frame, dropped, started, &decided);
                writeln!(out, "{line}")
                    .and_then(|()| out.flush())
                    .with_context(|| format!("writing the record of frame {}", frame.seq))
            });
        if let Err(err) = result {
            break (RunEnd::Failed, Some(err));
        }
        if options
            .max_frames
            .is_some_and(|n| report.frames as u64 >= n)
        {
            break (RunEnd::FrameLimit, None);
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    let counts = live.finish();

    let summary = RunSummary {
        source: description,
        end,
        error: error.as_ref().map(|e| format!("{e:#}")),
        frames: report.frames,
        captured: counts.delivered + counts.bad,
        dropped: counts.dropped,
        lost: counts.lost,
        bad_frames: counts.bad + report.bad,
        elapsed_s: elapsed,
        fps: if elapsed > 0.0 {
            report.frames as f64 / elapsed
        } else {
            0.0
        },
        latency_ms: STAGES
            .iter()
            .zip(&report.stages)
            .filter(|(name, h)| **name != "convert" || h.len() > 0)
            .map(|(name, h)| (name.to_string(), h.summary()))
            .collect(),
        rss_start_kib,
        rss_end_kib: proc_status_kib("VmRSS"),
        rss_peak_kib: proc_status_kib("VmHWM"),
        smoothing: tasks
            .iter()
            .map(|t| t.name.clone())
            .zip(smoothing)
            .collect(),
        agreement: tasks
            .iter()
            .map(|t| t.name.clone())
            .zip(report.agreement)
            .collect(),
    };
    Ok(RunOutcome { summary, error })
}

/// Per-stream inference state: preprocessing, the engine session and the smoothers.
struct Stream<'e> {
    pre: Preprocessor,
    session: Session<'e>,
    tasks: &'e [Task],
    mode: TaskMode,
    smoothers: Vec<Smoother>,
    input: Vec<f32>,
    frame_size: (usize, usize),
}

/// One frame's outputs and timings.
struct Decided {
    /// Per task: the head's probability, `None` when it did not run.
    probabilities: Vec<Option<f32>>,
    /// Per task: the smoothed result, `None` when it did not run.
    smoothed: Vec<Option<Smoothed>>,
    /// Per stage of [`STAGES`], `None` where it does not apply.
    times: [Option<Duration>; 7],
}

impl<'e> Stream<'e> {
    fn new(
        engine: &'e Engine,
        options: &RunOptions,
        input_spec: &InputSpec,
        (width, height): (usize, usize),
        smoothing: &[SmoothingConfig],
    ) -> Result<Self> {
        let tasks = engine.tasks();
        ensure!(
            smoothing.len() == tasks.len(),
            "{} smoothing settings for {} tasks",
            smoothing.len(),
            tasks.len()
        );
        let pre = Preprocessor::new(input_spec, width, height, options.crop)
            .context("planning preprocessing")?;
        let smoothers = tasks
            .iter()
            .zip(smoothing)
            .map(|(t, c)| Smoother::new(c).with_context(|| format!("smoothing of `{}`", t.name)))
            .collect::<Result<_>>()?;
        Ok(Stream {
            input: vec![0.0; pre.output_len()],
            pre,
            session: engine.session()?,
            tasks,
            mode: options.mode,
            smoothers,
            frame_size: (width, height),
        })
    }

    /// Checks the frame's size and preprocesses it into `self.input`; an error makes it a bad
    /// frame.
    fn prepare(&mut self, frame: &Frame) -> Result<()> {
        let image = &frame.image;
        let (w, h) = self.frame_size;
        ensure!(
            image.width == w && image.height == h && image.pixels.len() == w * h,
            "frame is {}x{} with {} pixels, the source announced {w}x{h}",
            image.width,
            image.height,
            image.pixels.len()
        );
        self.pre.run(image, &mut self.input)
    }

    /// Runs the backbone and the heads on the prepared input: ungated tasks always, gated ones
    /// (in hierarchy mode) only while their gating task's smoothed decision opens the gate.
    fn decide(&mut self, picked: Instant, frame: &Frame) -> Result<Decided> {
        let preprocess = picked.elapsed();
        let start = Instant::now();
        let features = self.session.features(&self.input)?;
        let backbone = start.elapsed();
        let start = Instant::now();
        let n = self.tasks.len();
        let (mut probabilities, mut smoothed) = (vec![None; n], vec![None; n]);
        for (i, task) in self.tasks.iter().enumerate() {
            let runs = match (self.mode, task.gate) {
                (TaskMode::AllTasks, _) | (_, None) => true,
                (TaskMode::Hierarchy, Some((parent, class))) => {
                    self.smoothers[parent].decision() == Some(class)
                }
            };
            if runs {
                let p = self.session.head(i, &features)?;
                probabilities[i] = Some(p);
                smoothed[i] = Some(self.smoothers[i].push(p));
            } else {
                self.smoothers[i].skip();
            }
        }
        let heads = start.elapsed();
        let capture = frame.capture_time;
        let wait = picked.saturating_duration_since(frame.captured_at);
        let total = capture + wait + preprocess + backbone + heads;
        Ok(Decided {
            probabilities,
            smoothed,
            times: [
                Some(capture),
                frame.convert_time,
                Some(wait),
                Some(preprocess),
                Some(backbone),
                Some(heads),
                Some(total),
            ],
        })
    }
}

/// What the run accumulates: latency histograms, agreement, counts.
struct Report {
    stages: Vec<Histogram>,
    agreement: Vec<TaskAgreement>,
    frames: usize,
    bad: u64,
}

impl Report {
    /// Accounts for one inferred frame and returns its JSON record.
    fn record(
        &mut self,
        tasks: &[Task],
        frame: &Frame,
        dropped: u64,
        started: Instant,
        d: &Decided,
    ) -> Value {
        self.frames += 1;
        let mut latency = serde_json::Map::new();
        for ((name, time), hist) in STAGES.iter().zip(d.times).zip(&mut self.stages) {
            if let Some(t) = time {
                hist.push(t.as_secs_f64() * 1e3);
                latency.insert(name.to_string(), ms(t).into());
            }
        }
        let mut record = serde_json::Map::new();
        for (i, (task, agreement)) in tasks.iter().zip(&mut self.agreement).enumerate() {
            let (Some(p), Some(s)) = (d.probabilities[i], d.smoothed[i]) else {
                record.insert(task.name.clone(), Value::Null);
                continue;
            };
            let raw = usize::from(p >= 0.5);
            let truth = frame.truth.as_ref();
            if let Some(t) = truth.and_then(|truth| truth_class(truth, &task.name)) {
                agreement.frames += 1;
                agreement.correct += usize::from(t == raw);
                if let Some(decision) = s.decision {
                    agreement.smoothed_frames += 1;
                    agreement.smoothed_correct += usize::from(t == decision);
                }
            }
            let value = json!({
                "p": p,
                "class": task.classes[raw],
                "p_smoothed": s.probability,
                "decision": s.decision.map(|c| task.classes[c].as_str()),
            });
            record.insert(task.name.clone(), value);
        }
        json!({
            "seq": frame.seq,
            "t_ms": ms(frame.captured_at.saturating_duration_since(started)),
            "done_ms": ms(started.elapsed()),
            "dropped": dropped,
            "lost": frame.lost_before,
            "tasks": record,
            "truth": frame.truth.map(|t| json!({
                "view": t.view.as_str(), "b_lines": t.b_lines, "effusion": t.effusion
            })),
            "latency_ms": latency,
        })
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`); `None` where there is none.
fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim_start_matches(':')
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
