//! What a run reports at the end, as JSON and as a table.

use serde::Serialize;

use crate::engine::PlanInfo;
use crate::latency::StageSummary;
use crate::smoothing::SmoothingConfig;

/// Agreement of one task's decisions with the ground truth of a synthetic source.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TaskAgreement {
    /// Frames whose ground truth gives this task a class (whether or not the task ran). Zero
    /// while other tasks got truth: the source's truth does not name this task.
    pub truth_frames: usize,
    /// Frames where the task ran and the truth was known.
    pub frames: usize,
    /// Of those, frames whose per-frame decision ([`crate::tasks::Task::decide`]) was right.
    pub correct: usize,
    /// Frames where the task ran, had a smoothed decision, and the truth was known.
    pub smoothed_frames: usize,
    /// Of those, frames whose smoothed decision was right.
    pub smoothed_correct: usize,
    /// Frames where the task ran with the truth known, once its smoothing had settled: past
    /// the first `window + consecutive` frames the task ran in the current zone (a run of
    /// frames with the same true class).
    pub settled_frames: usize,
    /// Of those, frames still undecided (they count as not agreeing).
    pub settled_undecided: usize,
    /// Of those, frames whose smoothed decision was right.
    pub settled_correct: usize,
    /// Zones: runs of consecutive frames whose truth gives the task the same class (a lung
    /// zone of a synthetic scan; frames without truth, such as transitions, separate them).
    pub zones: usize,
    /// Zones whose last frame had a smoothed decision of the task.
    pub zones_decided: usize,
    /// Of those, zones where that decision was right: what the screen said as the probe left.
    pub zones_correct: usize,
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
    /// Times the source reopened a lost device (V4L2 with `reconnect`).
    pub reconnects: u64,
    /// Clips ended (runs that track clips: `--clip-seconds`, `--clip-gap`, `--serve`, ...).
    pub clips: u64,
    /// Seconds from the start of capture to the end of the run.
    pub elapsed_s: f64,
    /// Frames inferred per second over the whole run.
    pub fps: f64,
    /// The engine's plan (engine, layout, kernels, threads, head forms): the decisions depend
    /// on it, so a replay is compared against the plan it was made with.
    pub plan: PlanInfo,
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
    /// Inferred frames that came with a ground truth (synthetic sources and their recordings).
    pub truth_frames: usize,
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
        let layout = self.plan.layout.map_or(String::new(), |l| format!(", {l}"));
        let mut s = format!(
            "{} frames from {} in {:.1} s at {:.1} fps ({end}); {} dropped, {} lost by the source, {} bad{}\n\
             plan: {}{layout}, {} thread(s)\n\
             stage        p50 ms   p90 ms   p99 ms   max ms\n",
            self.frames,
            self.source,
            self.elapsed_s,
            self.fps,
            self.dropped,
            self.lost,
            self.bad_frames,
            match (self.reconnects, self.clips) {
                (0, 0) => String::new(),
                (r, 0) => format!(", {r} reconnects"),
                (0, c) => format!("; {c} clips"),
                (r, c) => format!(", {r} reconnects; {c} clips"),
            },
            self.plan.engine,
            self.plan.threads,
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
        if self.truth_frames == 0 && self.frames > 0 {
            s += "agreement: none (the source gives no ground truth)\n";
        }
        for (name, a) in &self.agreement {
            if self.truth_frames > 0 && a.truth_frames == 0 {
                s += &format!(
                    "{name}: no agreement figures: the source's ground truth has no class for this \
                     task\n"
                );
            } else if a.frames > 0 {
                s += &format!(
                    "{name}: per frame {}/{} agree with the phantom's truth ({:.1}%), smoothed {}/{} ({:.1}%)\n",
                    a.correct,
                    a.frames,
                    percent(a.correct, a.frames),
                    a.smoothed_correct,
                    a.smoothed_frames,
                    percent(a.smoothed_correct, a.smoothed_frames),
                );
                s += &format!(
                    "{:w$}  settled {}/{} ({:.1}%, {} undecided); zones right at their end {}/{} \
                     ({:.1}%, {} undecided)\n",
                    "",
                    a.settled_correct,
                    a.settled_frames,
                    percent(a.settled_correct, a.settled_frames),
                    a.settled_undecided,
                    a.zones_correct,
                    a.zones,
                    percent(a.zones_correct, a.zones),
                    a.zones - a.zones_decided,
                    w = name.len(),
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
