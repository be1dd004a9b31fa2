//! What the live loop tells others while it runs: per frame, each task's [`TaskState`], the
//! frame and its timings ([`FrameEvent`]); per clip, its [`ClipRecord`]; at the end, the
//! summary. An [`Observer`] (the live view of `pleura run --serve`, the exam folder of
//! `--exam`) is called on the inference thread and must return quickly: anything slow (drawing,
//! encoding, writing to a network) belongs on a thread of its own.

use std::time::Duration;

use crate::capture::Frame;
use crate::clip::ClipRecord;
use crate::smoothing::Smoothed;

use super::RunSummary;

/// What one task did on one frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TaskState {
    /// The head ran: its probability (of `classes[1]`) and the smoothed result.
    Ran {
        /// The head's probability on this frame.
        p: f32,
        /// The moving average and the decision after hysteresis.
        smoothed: Smoothed,
    },
    /// The hierarchy did not run the head: its gate (the smoothed view) is closed or
    /// undecided. The smoother treats the frame as skipped ([`crate::smoothing::OnSkip`]).
    Skipped,
    /// No reading: the frame is unfit to be read (blank, frozen, not lung ultrasound), so the
    /// head's answer would mean nothing; the smoother treats the frame as skipped. Nothing
    /// produces this state yet: it is the place for a quality gate before the heads.
    NoReading {
        /// Why, as a short snake_case word (`blank`, `frozen`, `out_of_distribution`).
        reason: &'static str,
    },
}

impl TaskState {
    /// The head's probability, when it ran.
    pub fn probability(&self) -> Option<f32> {
        match self {
            TaskState::Ran { p, .. } => Some(*p),
            _ => None,
        }
    }

    /// The smoothed result, when the head ran.
    pub fn smoothed(&self) -> Option<Smoothed> {
        match self {
            TaskState::Ran { smoothed, .. } => Some(*smoothed),
            _ => None,
        }
    }
}

/// Cumulative counts of a run so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunCounts {
    /// Frames inferred.
    pub frames: u64,
    /// Frames the source handed over that a newer one replaced before inference took them.
    pub dropped: u64,
    /// Frames the source lost before delivering them (driver sequence gaps).
    pub lost: u64,
    /// Frames skipped as bad (reported by the source, or of the wrong size).
    pub bad: u64,
    /// Times the source reopened a lost device.
    pub reconnects: u64,
}

/// The clip in progress, as of a frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct ClipProgress {
    /// Its number in the run, from 0.
    pub index: u64,
    /// Frames so far, this one included.
    pub frames: u64,
    /// Source time it spans so far, in seconds.
    pub seconds: f64,
}

/// One inferred frame, as observers see it.
#[derive(Debug)]
pub struct FrameEvent<'a> {
    /// The frame (grey image, sequence number, timestamps, ground truth).
    pub frame: &'a Frame,
    /// Per task, in the pack's order.
    pub tasks: &'a [TaskState],
    /// Per stage of [`super::STAGES`], in milliseconds' worth of [`Duration`]; `None` where the
    /// stage does not apply.
    pub times: &'a [Option<Duration>],
    /// Counts including this frame.
    pub counts: RunCounts,
    /// The clip in progress, when the run tracks clips.
    pub clip: Option<ClipProgress>,
    /// Time since the run started.
    pub elapsed: Duration,
}

/// Receives what a run does, on the inference thread. Every method but [`Observer::frame`] has
/// an empty default.
pub trait Observer {
    /// One inferred frame, after its record was written.
    fn frame(&mut self, event: &FrameEvent<'_>);
    /// A clip ended (after its record was written).
    fn clip(&mut self, _clip: &ClipRecord) {}
    /// The run ended, successfully or not.
    fn finished(&mut self, _summary: &RunSummary) {}
}
