//! What a run reports at the end, as JSON and as a table.

use serde::Serialize;

use crate::latency::StageSummary;
use crate::smoothing::SmoothingConfig;

/// Agreement of one task's decisions with the ground truth of a synthetic source.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TaskAgreement {
    /// Frames where the task ran and the truth was known.
    pub frames: usize,
    /// Of those, frames whose per-frame decision (probability >= 0.5) was right.
    pub correct: usize,
    /// Frames where the task ran, had a smoothed decision, and the truth was known.
    pub smoothed_frames: usize,
    /// Of those, frames whose smoothed decision was right.
    pub smoothed_correct: usize,
}

/// Why a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEnd {
    /// The source had no more frames.
    SourceEnded,
    /// The stop flag was raised (Ctrl-C).
    Interrupted,
    /// The frames asked for were inferred.
    FrameLimit,
    /// The source, the engine or the output failed; see [`RunSummary::error`].
    Failed,
}

/// What a run reports at the end.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    /// Source description.
    pub source: String,
    /// Why the run ended.
    pub end: RunEnd,
    /// The error that ended a failed run.
    pub error: Option<String>,
    /// Frames inferred.
    pub frames: usize,
    /// Frames the source handed over (inferred, dropped and bad ones).
    pub captured: u64,
    /// Frames dropped because a newer one arrived before inference was ready for them.
    pub dropped: u64,
    /// Frames the source lost before they reached us (gaps in the capture driver's sequence).
    pub lost: u64,
    /// Frames skipped as bad (wrong size, or reported bad by the source).
    pub bad_frames: u64,
    /// Seconds from the start of capture to the end of the run.
    pub elapsed_s: f64,
    /// Frames inferred per second over the whole run.
    pub fps: f64,
    /// Latency percentiles per stage, in milliseconds (within 0.5%; max exact).
    pub latency_ms: Vec<(String, StageSummary)>,
    /// Resident memory when the loop started, in KiB (Linux only).
    pub rss_start_kib: Option<u64>,
    /// Resident memory when it ended, in KiB (Linux only).
    pub rss_end_kib: Option<u64>,
    /// Highest resident memory of the process, in KiB (Linux only).
    pub rss_peak_kib: Option<u64>,
    /// The smoothing in force, per task.
    pub smoothing: Vec<(String, SmoothingConfig)>,
    /// Per task: agreement with ground truth (synthetic sources only).
    pub agreement: Vec<(String, TaskAgreement)>,
}

impl RunSummary {
    /// A human-readable table of the summary.
    pub fn to_text(&self) -> String {
        let end = match self.end {
            RunEnd::SourceEnded => "source ended",
            RunEnd::Interrupted => "interrupted",
            RunEnd::FrameLimit => "frame limit",
            RunEnd::Failed => "failed",
        };
        let mut s = format!(
            "{} frames from {} in {:.1} s at {:.1} fps ({end}); {} dropped, {} lost by the source, {} bad\n\
             stage        p50 ms   p90 ms   p99 ms   max ms\n",
            self.frames,
            self.source,
            self.elapsed_s,
            self.fps,
            self.dropped,
            self.lost,
            self.bad_frames
        );
        for (name, v) in &self.latency_ms {
            s += &format!(
                "{name:<10} {:>8.3} {:>8.3} {:>8.3} {:>8.3}\n",
                v.p50, v.p90, v.p99, v.max
            );
        }
        if let (Some(start), Some(end)) = (self.rss_start_kib, self.rss_end_kib) {
            s += &format!(
                "memory: RSS {:.1} MiB at start, {:.1} MiB at end",
                start as f64 / 1024.0,
                end as f64 / 1024.0
            );
            if let Some(peak) = self.rss_peak_kib {
                s += &format!(" (process peak {:.1} MiB)", peak as f64 / 1024.0);
            }
            s += "\n";
        }
        for (name, a) in &self.agreement {
            if a.frames > 0 {
                s += &format!(
                    "{name}: per frame {}/{} agree with the phantom's truth ({:.1}%), smoothed {}/{} ({:.1}%)\n",
                    a.correct,
                    a.frames,
                    percent(a.correct, a.frames),
                    a.smoothed_correct,
                    a.smoothed_frames,
                    percent(a.smoothed_correct, a.smoothed_frames),
                );
            }
        }
        s
    }
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}
