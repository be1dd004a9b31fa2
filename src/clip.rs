//! Clips: where a live scan is cut into clips, and the clip-level decision of each task.
//!
//! A lung-ultrasound exam is a sequence of clips, one per lung zone. `pleura run` ends a clip
//! at a boundary ([`ClipOptions`]: every `seconds` of source time, a gap in the source's
//! timestamps, or a mark from outside: a line on standard input, a `POST /clip`) and at the end
//! of the run, and gives each task a clip-level decision by the rule the trainer reports for
//! recorded clips (`pleura-train`, `eval/clip.rs`):
//!
//! - **run** (Arntfield et al. 2021): the clip's score is the highest threshold that `N`
//!   consecutive frame probabilities all exceed, i.e. the maximum over windows of `N`
//!   consecutive frames of the window's minimum (a clip with fewer than `N` frames scores its
//!   minimum). The clip is positive when the score exceeds the task's decision threshold: some
//!   `N` frames in a row all said so. `N` defaults to the task's smoothing `consecutive` (7),
//!   the live smoothing's own persistence rule;
//! - **mean**: the mean probability, reported beside it.
//!
//! The frames are those on which the task's head ran, in time order: frames where the
//! hierarchy skipped the task (or, later, a "no reading" gate held it) are left out, as the
//! trainer scores the evaluated frames of a clip. [`RunScore`] computes the run score as frames
//! arrive in `O(N)` memory, so a clip may be any length.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use serde::Serialize;

use crate::tasks::{Task, TaskSet};

/// When clips end. Every clip also ends with the run.
#[derive(Clone, Debug, Default)]
pub struct ClipOptions {
    /// End a clip once it spans this much source time (frame timestamps).
    pub seconds: Option<f64>,
    /// End a clip where the source's timestamps jump by more than this (the signal was lost,
    /// the scanner frozen or the probe put down), in seconds.
    pub gap_seconds: Option<f64>,
    /// Run length of the clip rule, in frames; `None`: each task's smoothing `consecutive`.
    pub run: Option<usize>,
    /// Marks from outside (standard input, `POST /clip`): each increment ends the current clip
    /// before the next frame.
    pub marks: Arc<AtomicU64>,
}

impl ClipOptions {
    /// Checks the ranges: positive, finite seconds; a run of at least one frame.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("clip seconds", self.seconds),
            ("clip gap", self.gap_seconds),
        ] {
            if let Some(v) = v {
                ensure!(
                    v.is_finite() && v > 0.0,
                    "{name} must be above 0 s, not {v}"
                );
            }
        }
        ensure!(
            self.run != Some(0),
            "the clip run must be at least one frame"
        );
        Ok(())
    }
}

/// Why a clip ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClipEnd {
    /// It reached `ClipOptions::seconds`.
    Duration,
    /// The source's timestamps jumped by more than `ClipOptions::gap_seconds`.
    Gap,
    /// Someone marked it (standard input, `POST /clip`).
    Mark,
    /// The run ended.
    RunEnded,
}

/// The run rule's score, computed as frames arrive: the maximum over windows of `n`
/// consecutive values of the window's minimum; the minimum of all values while fewer than `n`
/// have come.
#[derive(Clone, Debug)]
pub struct RunScore {
    n: usize,
    /// `(index, value)` with increasing values: the minima of the last `n` values.
    window: VecDeque<(u64, f32)>,
    count: u64,
    min: f32,
    best: f32,
}

impl RunScore {
    /// An empty score for runs of `n` frames (at least 1).
    pub fn new(n: usize) -> Self {
        let n = n.max(1);
        Self {
            n,
            window: VecDeque::with_capacity(n),
            count: 0,
            min: f32::INFINITY,
            best: f32::NEG_INFINITY,
        }
    }

    /// Adds the next value (non-finite values are ignored).
    pub fn push(&mut self, value: f32) {
        if !value.is_finite() {
            return;
        }
        let i = self.count;
        self.count += 1;
        self.min = self.min.min(value);
        while self.window.back().is_some_and(|&(_, v)| v >= value) {
            self.window.pop_back();
        }
        self.window.push_back((i, value));
        while self
            .window
            .front()
            .is_some_and(|&(j, _)| j + (self.n as u64) <= i)
        {
            self.window.pop_front();
        }
        if self.count >= self.n as u64 {
            self.best = self.best.max(self.window[0].1);
        }
    }

    /// Values pushed.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// `true` before the first value.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The score; `None` before the first value.
    pub fn score(&self) -> Option<f32> {
        match self.count {
            0 => None,
            c if c < self.n as u64 => Some(self.min),
            _ => Some(self.best),
        }
    }
}

/// One task's clip-level result.
#[derive(Clone, Debug, Serialize)]
pub struct TaskClip {
    /// Frames of the clip on which the task's head ran.
    pub frames: u64,
    /// Run length of the rule, in frames.
    pub run: usize,
    /// The run score; `None` when the task never ran in the clip.
    pub run_score: Option<f32>,
    /// Mean probability; `None` when the task never ran.
    pub mean: Option<f32>,
    /// The class the run rule decides (run score above the task's threshold); `None` when the
    /// task never ran in the clip.
    pub decision: Option<String>,
    /// The smoothed decision on the clip's last frame where the task ran.
    pub last_smoothed: Option<String>,
    /// The ground truth, when every frame of the clip that has one gives the task the same
    /// class (synthetic sources).
    pub truth: Option<String>,
}

/// One clip: the record `pleura run` writes when it ends (`{"clip": ...}` in the JSON lines).
#[derive(Clone, Debug, Serialize)]
pub struct ClipRecord {
    /// Clip number in the run, from 0.
    pub index: u64,
    /// Why it ended.
    pub end: ClipEnd,
    /// Sequence number of its first and last frame.
    pub first_seq: u64,
    /// See `first_seq`.
    pub last_seq: u64,
    /// Frames inferred in the clip.
    pub frames: u64,
    /// Source time from its first to its last frame, in seconds.
    pub seconds: f64,
    /// Per task name, in the pack's order.
    pub tasks: Vec<(String, TaskClip)>,
}

impl ClipRecord {
    /// Per task (pack order): the class index the clip rule decided, `None` where the task did
    /// not run.
    pub fn decisions(&self, tasks: &TaskSet) -> Vec<Option<usize>> {
        tasks
            .iter()
            .zip(&self.tasks)
            .map(|(t, (_, c))| c.decision.as_deref().and_then(|d| t.class_index(d)))
            .collect()
    }
}

/// What one task gathers over a clip.
#[derive(Clone, Debug)]
struct TaskAccumulator {
    run: RunScore,
    sum: f64,
    last_smoothed: Option<usize>,
    /// `None` before any truth; `Some(Some(c))` while all truths agree; `Some(None)` if mixed.
    truth: Option<Option<usize>>,
}

/// Cuts a stream of inferred frames into clips and accumulates each task's clip result.
#[derive(Debug)]
pub struct ClipTracker {
    options: ClipOptions,
    runs: Vec<usize>,
    tasks: Vec<TaskAccumulator>,
    index: u64,
    first: Option<(u64, Duration)>,
    last: Option<(u64, Duration)>,
    frames: u64,
    marks_seen: u64,
}

/// One task's contribution of a frame to its clip.
#[derive(Clone, Copy, Debug)]
pub struct TaskFrame {
    /// The head's probability, `None` when it did not run on the frame.
    pub p: Option<f32>,
    /// The smoothed decision after the frame (class index).
    pub smoothed: Option<usize>,
    /// The true class, where known.
    pub truth: Option<usize>,
}

impl ClipTracker {
    /// A tracker for `tasks`; `smoothing_runs[i]` is task i's smoothing `consecutive`, the run
    /// length used unless `options.run` says otherwise.
    pub fn new(options: ClipOptions, smoothing_runs: &[usize]) -> Result<Self> {
        options.validate()?;
        let runs: Vec<usize> = smoothing_runs
            .iter()
            .map(|&n| options.run.unwrap_or(n).max(1))
            .collect();
        let marks_seen = options.marks.load(Ordering::Relaxed);
        Ok(Self {
            tasks: runs.iter().map(|&n| Self::accumulator(n)).collect(),
            runs,
            options,
            index: 0,
            first: None,
            last: None,
            frames: 0,
            marks_seen,
        })
    }

    fn accumulator(n: usize) -> TaskAccumulator {
        TaskAccumulator {
            run: RunScore::new(n),
            sum: 0.0,
            last_smoothed: None,
            truth: None,
        }
    }

    /// Index of the clip in progress (the next one while none is).
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Frames in the clip so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Source time the clip in progress spans, in seconds.
    pub fn seconds(&self) -> f64 {
        match (self.first, self.last) {
            (Some((_, a)), Some((_, b))) => b.saturating_sub(a).as_secs_f64(),
            _ => 0.0,
        }
    }

    /// Whether the clip in progress must end before a frame stamped `timestamp` (source time):
    /// the reason, or `None` to go on. Call before [`ClipTracker::push`].
    pub fn boundary(&mut self, timestamp: Duration) -> Option<ClipEnd> {
        let marks = self.options.marks.load(Ordering::Relaxed);
        let marked = marks != self.marks_seen;
        self.marks_seen = marks;
        let (Some((_, first)), Some((_, last))) = (self.first, self.last) else {
            return None; // nothing to end (a mark on an empty clip is void)
        };
        if marked {
            return Some(ClipEnd::Mark);
        }
        let since = |t: Duration, from: Duration| t.saturating_sub(from).as_secs_f64();
        if self
            .options
            .gap_seconds
            .is_some_and(|gap| since(timestamp, last) > gap || timestamp < last)
        {
            return Some(ClipEnd::Gap);
        }
        if self
            .options
            .seconds
            .is_some_and(|s| since(timestamp, first) >= s)
        {
            return Some(ClipEnd::Duration);
        }
        None
    }

    /// Adds one inferred frame (`seq`, source `timestamp`, per task its [`TaskFrame`]).
    pub fn push(&mut self, seq: u64, timestamp: Duration, tasks: &[TaskFrame]) {
        self.first.get_or_insert((seq, timestamp));
        self.last = Some((seq, timestamp));
        self.frames += 1;
        for (acc, f) in self.tasks.iter_mut().zip(tasks) {
            if let Some(p) = f.p.filter(|p| p.is_finite()) {
                acc.run.push(p);
                acc.sum += f64::from(p);
                acc.last_smoothed = f.smoothed;
            }
            if let Some(t) = f.truth {
                acc.truth = Some(match acc.truth {
                    None => Some(t),
                    Some(Some(c)) if c == t => Some(c),
                    Some(_) => None,
                });
            }
        }
    }

    /// Ends the clip in progress and returns its record; `None` when it has no frame.
    pub fn finish(&mut self, end: ClipEnd, tasks: &TaskSet) -> Option<ClipRecord> {
        let ((first_seq, _), (last_seq, _)) = (self.first?, self.last?);
        let seconds = self.seconds();
        let name = |task: &Task, c: Option<usize>| c.map(|c| task.classes[c].clone());
        let records = tasks
            .iter()
            .zip(&self.tasks)
            .zip(&self.runs)
            .map(|((task, acc), &run)| {
                let n = acc.run.len();
                let score = acc.run.score();
                let clip = TaskClip {
                    frames: n,
                    run,
                    run_score: score,
                    mean: (n > 0).then(|| (acc.sum / n as f64) as f32),
                    decision: name(task, score.map(|s| usize::from(s > task.threshold))),
                    last_smoothed: name(task, acc.last_smoothed),
                    truth: name(task, acc.truth.flatten()),
                };
                (task.name.clone(), clip)
            })
            .collect();
        let record = ClipRecord {
            index: self.index,
            end,
            first_seq,
            last_seq,
            frames: self.frames,
            seconds,
            tasks: records,
        };
        self.index += 1;
        self.first = None;
        self.last = None;
        self.frames = 0;
        self.tasks = self.runs.iter().map(|&n| Self::accumulator(n)).collect();
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The trainer's definition, verbatim in spirit: max over windows of the window minimum.
    fn reference(frames: &[f32], n: usize) -> Option<f32> {
        if frames.is_empty() {
            return None;
        }
        let n = n.clamp(1, frames.len());
        frames
            .windows(n)
            .map(|w| w.iter().copied().fold(f32::INFINITY, f32::min))
            .reduce(f32::max)
    }

    #[test]
    fn the_streaming_run_score_is_the_trainers_rule() {
        let clip = [0.1, 0.9, 0.8, 0.2, 0.7, 0.95, 0.9, 0.1];
        let mut s = RunScore::new(3);
        assert_eq!(s.score(), None);
        clip.iter().for_each(|&p| s.push(p));
        assert_eq!(s.score(), Some(0.7));
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(3);
        for _ in 0..200 {
            let len = rng.random_range(1..60);
            let n = rng.random_range(1..12);
            let frames: Vec<f32> = (0..len).map(|_| rng.random::<f32>()).collect();
            let mut s = RunScore::new(n);
            frames.iter().for_each(|&p| s.push(p));
            assert_eq!(s.score(), reference(&frames, n), "{frames:?} n={n}");
        }
    }

    #[test]
    fn a_clip_decides_by_the_run_rule_and_reports_the_mean() {
        let tasks = TaskSet::standard();
        let options = ClipOptions {
            seconds: Some(1.0),
            ..ClipOptions::default()
        };
        let mut tracker = ClipTracker::new(options, &[3, 3, 3]).unwrap();
        let ms = Duration::from_millis;
        // View: three frames in a row above 0.5 once; lines skipped (never ran); effusion low.
        let views = [0.9, 0.2, 0.6, 0.7, 0.8, 0.3];
        for (i, &p) in views.iter().enumerate() {
            assert_eq!(tracker.boundary(ms(100 * i as u64)), None);
            let frame = [
                TaskFrame {
                    p: Some(p),
                    smoothed: Some(1),
                    truth: Some(1),
                },
                TaskFrame {
                    p: None,
                    smoothed: None,
                    truth: None,
                },
                TaskFrame {
                    p: Some(0.1),
                    smoothed: Some(0),
                    truth: Some(i % 2),
                },
            ];
            tracker.push(i as u64, ms(100 * i as u64), &frame);
        }
        assert_eq!(tracker.boundary(ms(1000)), Some(ClipEnd::Duration));
        let clip = tracker.finish(ClipEnd::Duration, &tasks).unwrap();
        assert_eq!(
            (clip.index, clip.frames, clip.first_seq, clip.last_seq),
            (0, 6, 0, 5)
        );
        let (view, lines, effusion) = (&clip.tasks[0].1, &clip.tasks[1].1, &clip.tasks[2].1);
        assert_eq!(view.run_score, Some(0.6));
        assert_eq!(view.decision.as_deref(), Some("pleural"));
        assert!((view.mean.unwrap() - 3.5 / 6.0).abs() < 1e-6);
        assert_eq!(view.truth.as_deref(), Some("pleural"));
        assert_eq!((lines.frames, lines.decision.as_ref()), (0, None));
        assert_eq!(effusion.decision.as_deref(), Some("absent"));
        assert_eq!(effusion.truth, None, "mixed truth");
        assert_eq!(clip.decisions(&tasks), [Some(1), None, Some(0)]);
        // The next clip starts empty; an empty clip has no record.
        assert_eq!(tracker.index(), 1);
        assert!(tracker.finish(ClipEnd::RunEnded, &tasks).is_none());
    }

    #[test]
    fn gaps_and_marks_end_clips() {
        let marks = Arc::new(AtomicU64::new(0));
        let options = ClipOptions {
            gap_seconds: Some(0.5),
            marks: Arc::clone(&marks),
            ..ClipOptions::default()
        };
        let mut tracker = ClipTracker::new(options, &[7]).unwrap();
        let none = [TaskFrame {
            p: Some(0.5),
            smoothed: None,
            truth: None,
        }];
        marks.fetch_add(1, Ordering::Relaxed); // before any frame: void
        assert_eq!(tracker.boundary(Duration::ZERO), None);
        tracker.push(0, Duration::ZERO, &none);
        assert_eq!(tracker.boundary(Duration::from_millis(400)), None);
        tracker.push(1, Duration::from_millis(400), &none);
        assert_eq!(
            tracker.boundary(Duration::from_millis(1000)),
            Some(ClipEnd::Gap)
        );
        marks.fetch_add(1, Ordering::Relaxed);
        assert_eq!(
            tracker.boundary(Duration::from_millis(1010)),
            Some(ClipEnd::Mark)
        );
        assert!(ClipTracker::new(
            ClipOptions {
                seconds: Some(0.0),
                ..ClipOptions::default()
            },
            &[7]
        )
        .is_err());
    }
}
