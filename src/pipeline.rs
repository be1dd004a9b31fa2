//! The live loop: capture thread -> newest-frame mailbox -> preprocess -> backbone -> heads on
//! smoothed decisions -> per-frame record -> summary.
//!
//! [`run`] starts the source on a capture thread ([`Live`]), so capture overlaps inference; a
//! real-time source hands over only its newest frame and the older ones are dropped and counted.
//! Each frame's head probabilities go through a per-task [`Smoother`]; the pack's [`TaskSet`]
//! gates the A-/B-lines and effusion heads on the **smoothed** view decision
//! ([`TaskSet::runs`]; why smoothed: [`crate::tasks`]), so gated heads do not flicker on and
//! off with single frames. A bad frame (wrong size, or reported bad by its source) is counted
//! and skipped with a message naming it; a source error, a failed inference or a closed output
//! ends the run, and a summary is produced in every case.
//!
//! The per-frame records depend only on the frames and the engine's plan (recorded in the
//! first record and the summary), apart from their timing fields (`t_ms`, `done_ms`,
//! `latency_ms`): a recording replayed twice gives the same decisions byte for byte.
//!
//! Each task's outcome on a frame is a [`TaskState`]: the head ran, the hierarchy skipped it,
//! or (the hook for a quality gate) the frame had no reading. With [`RunOptions::clips`] the
//! loop also cuts the stream into clips ([`crate::clip`]) and writes one `{"clip": ...}` record
//! as each ends. [`run_observed`] hands every frame, clip and the summary to [`Observer`]s
//! (the live view, the exam folder) on the inference thread.

mod config;
pub(crate) mod histogram;
mod observe;
mod report;
mod summary;

use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::json;

use crate::capture::live::{report_bad_frame, Live, Next};
use crate::capture::{Frame, FrameSource};
use crate::clip::{ClipEnd, ClipOptions, ClipTracker, TaskFrame};
use crate::engine::{Engine, Session};
use crate::pack::Pack;
use crate::preprocess::{Preprocessor, Rect};
use crate::smoothing::{Smoother, SmoothingConfig};
use crate::tasks::{TaskMode, TaskSet};
use report::Report;

pub use config::RunConfig;
pub use observe::{ClipProgress, FrameEvent, Observer, RunCounts, TaskState};
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
    /// Cut the stream into clips and write a clip record as each ends; `None`: no clips.
    pub clips: Option<ClipOptions>,
}

/// A finished run: its summary, and the error that ended it if it failed.
#[derive(Debug)]
pub struct RunOutcome {
    /// Always produced, whatever ended the run.
    pub summary: RunSummary,
    /// Why the run failed (the summary's `error` is its text).
    pub error: Option<anyhow::Error>,
}

/// Latency stages of a frame, in report order. `capture`: the source producing (and
/// converting) it; `convert`: of that, pixel-format conversion (sources that convert only);
/// `wait`: from delivery to the start of preprocessing (time in the mailbox: under a frame
/// period for a real-time source; about one inference for a source that waits, whose next frame
/// is ready while the current one is inferred); `total`: capture + wait + preprocess + backbone
/// + heads, the age of the frame when its decisions are out.
pub const STAGES: [&str; 7] = [
    "capture",
    "convert",
    "wait",
    "preprocess",
    "backbone",
    "heads",
    "total",
];

/// Runs frames from `source` through `engine` (built from `pack`) until the source ends, fails,
/// or `options.stop` is raised, writing one JSON object per frame to `out`. An `Err` means the
/// run could not start; once it has started, the outcome carries a summary whatever happens.
pub fn run<S>(
    source: S,
    pack: &Pack,
    engine: &Engine,
    options: &RunOptions,
    out: &mut dyn Write,
) -> Result<RunOutcome>
where
    S: FrameSource + Send + 'static,
{
    run_observed(source, pack, engine, options, out, &mut [])
}

/// [`run`], telling `observers` about every frame, clip and the summary (in this order of
/// calls: a frame's record is written before its observers hear of it).
pub fn run_observed<S>(
    source: S,
    pack: &Pack,
    engine: &Engine,
    options: &RunOptions,
    out: &mut dyn Write,
    observers: &mut [&mut dyn Observer],
) -> Result<RunOutcome>
where
    S: FrameSource + Send + 'static,
{
    let description = source.describe();
    let tasks = &pack.tasks;
    ensure!(
        engine.heads() == tasks.len(),
        "the engine runs {} heads, the pack has {} tasks",
        engine.heads(),
        tasks.len()
    );
    let smoothing = if options.smoothing.is_empty() {
        vec![SmoothingConfig::default(); tasks.len()]
    } else {
        options.smoothing.clone()
    };
    let mut stream = Stream::new(pack, engine, options, source.frame_size(), &smoothing)
        .with_context(|| format!("preparing to run {description}"))?;
    let mut clips = match &options.clips {
        Some(clip_options) => {
            let runs: Vec<usize> = smoothing.iter().map(|c| c.consecutive).collect();
            Some(ClipTracker::new(clip_options.clone(), &runs).context("clip options")?)
        }
        None => None,
    };
    let mut report = Report::new(engine.plan(), &smoothing);
    let mut clip_frames = vec![
        TaskFrame {
            p: None,
            smoothed: None,
            truth: None
        };
        tasks.len()
    ];

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
                if let Some(tracker) = &mut clips {
                    if let Some(why) = tracker.boundary(frame.timestamp) {
                        end_clip(tracker, why, tasks, out, observers)?;
                    }
                    let truth = frame.truth.as_ref().map(|t| tasks.classes_of(t));
                    for (i, f) in clip_frames.iter_mut().enumerate() {
                        f.p = decided.states[i].probability();
                        f.smoothed = decided.states[i].smoothed().and_then(|s| s.decision);
                        f.truth = truth.as_ref().and_then(|t| t[i]);
                    }
                    tracker.push(frame.seq, frame.timestamp, &clip_frames);
                }
                let line = report.record(
                    tasks,
                    &frame,
                    dropped,
                    started,
                    &decided.states,
                    &decided.times,
                );
                writeln!(out, "{line}")
                    .and_then(|()| out.flush())
                    .with_context(|| format!("writing the record of frame {}", frame.seq))?;
                Ok(decided)
            });
        let decided = match result {
            Ok(decided) => decided,
            Err(err) => break (RunEnd::Failed, Some(err)),
        };
        if !observers.is_empty() {
            let counts = live.counts();
            let event = FrameEvent {
                frame: &frame,
                tasks: &decided.states,
                times: &decided.times,
                counts: RunCounts {
                    frames: report.frames as u64,
                    dropped: counts.dropped,
                    lost: counts.lost,
                    bad: counts.bad + report.bad,
                    reconnects: counts.reconnects,
                },
                clip: clips.as_ref().map(|c| ClipProgress {
                    index: c.index(),
                    frames: c.frames(),
                    seconds: c.seconds(),
                }),
                elapsed: started.elapsed(),
            };
            for observer in observers.iter_mut() {
                observer.frame(&event);
            }
        }
        if options
            .max_frames
            .is_some_and(|n| report.frames as u64 >= n)
        {
            break (RunEnd::FrameLimit, None);
        }
    };
    // The last clip ends with the run (its record, when the output still takes one).
    let mut error = error;
    if let Some(tracker) = &mut clips {
        if let Err(err) = end_clip(tracker, ClipEnd::RunEnded, tasks, out, observers) {
            error.get_or_insert(err);
        }
    }
    let end = if error.is_some() { RunEnd::Failed } else { end };
    report.close_zones();
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
        reconnects: counts.reconnects,
        clips: clips.as_ref().map_or(0, |c| c.index()),
        elapsed_s: elapsed,
        plan: engine.plan().clone(),
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
        truth_frames: report.truth_frames,
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
    for observer in observers.iter_mut() {
        observer.finished(&summary);
    }
    Ok(RunOutcome { summary, error })
}

/// Ends the clip in progress: its `{"clip": ...}` record to `out`, then the observers.
fn end_clip(
    tracker: &mut ClipTracker,
    why: ClipEnd,
    tasks: &TaskSet,
    out: &mut dyn Write,
    observers: &mut [&mut dyn Observer],
) -> Result<()> {
    let Some(clip) = tracker.finish(why, tasks) else {
        return Ok(());
    };
    writeln!(out, "{}", json!({ "clip": clip }))
        .and_then(|()| out.flush())
        .with_context(|| format!("writing the record of clip {}", clip.index))?;
    for observer in observers.iter_mut() {
        observer.clip(&clip);
    }
    Ok(())
}

/// Per-stream inference state: preprocessing, the engine session and the smoothers.
struct Stream<'e> {
    pre: Preprocessor,
    session: Session<'e>,
    tasks: &'e TaskSet,
    mode: TaskMode,
    smoothers: Vec<Smoother>,
    /// Per task: the smoothed decision that gates on this frame (reused buffer).
    decisions: Vec<Option<usize>>,
    input: Vec<f32>,
    frame_size: (usize, usize),
}

/// One frame's outputs and timings.
struct Decided {
    /// Per task, in the pack's order.
    states: Vec<TaskState>,
    /// Per stage of [`STAGES`], `None` where it does not apply.
    times: [Option<Duration>; 7],
}

impl<'e> Stream<'e> {
    fn new(
        pack: &'e Pack,
        engine: &'e Engine,
        options: &RunOptions,
        (width, height): (usize, usize),
        smoothing: &[SmoothingConfig],
    ) -> Result<Self> {
        let tasks = &pack.tasks;
        ensure!(
            smoothing.len() == tasks.len(),
            "{} smoothing settings for {} tasks",
            smoothing.len(),
            tasks.len()
        );
        let pre = Preprocessor::new(&pack.manifest.input, width, height, options.crop)
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
            decisions: vec![None; tasks.len()],
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

    /// Runs the backbone and the heads on the prepared input, each task when
    /// [`TaskSet::runs`] says so on the smoothed decisions of the frame so far.
    fn decide(&mut self, picked: Instant, frame: &Frame) -> Result<Decided> {
        let preprocess = picked.elapsed();
        let start = Instant::now();
        let features = self.session.features(&self.input)?;
        let backbone = start.elapsed();
        let start = Instant::now();
        let n = self.tasks.len();
        let mut states = vec![TaskState::Skipped; n];
        // A quality gate ("no reading") goes here: it would set `TaskState::NoReading` and skip
        // the smoother, as for a task the hierarchy does not run.
        for (i, state) in states.iter_mut().enumerate() {
            if self.tasks.runs(self.mode, i, &self.decisions) {
                let p = self.session.head(i, &features)?;
                let smoothed = self.smoothers[i].push(p);
                *state = TaskState::Ran { p, smoothed };
            } else {
                self.smoothers[i].skip();
            }
            self.decisions[i] = self.smoothers[i].decision();
        }
        let heads = start.elapsed();
        let capture = frame.capture_time;
        let wait = picked.saturating_duration_since(frame.captured_at);
        let total = capture + wait + preprocess + backbone + heads;
        Ok(Decided {
            states,
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
