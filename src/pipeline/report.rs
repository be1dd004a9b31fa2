//! What a run accumulates frame by frame: latency histograms, agreement with ground truth (per
//! frame, once the smoothing has settled, and per zone), and each frame's JSON record.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::histogram::Histogram;
use super::observe::TaskState;
use super::summary::TaskAgreement;
use super::STAGES;
use crate::capture::Frame;
use crate::engine::PlanInfo;
use crate::smoothing::SmoothingConfig;
use crate::tasks::{Task, TaskSet};

/// A run of consecutive inferred frames whose ground truth gives one task the same class: one
/// lung zone of a synthetic scan (a frame without truth for the task, e.g. a transition between
/// zones, ends it).
#[derive(Clone, Copy, Debug, Default)]
struct Zone {
    /// The true class, `None` outside a zone.
    class: Option<usize>,
    /// Frames of the zone on which the task ran so far.
    ran: usize,
    /// The smoothed decision on the zone's latest frame (`None`: undecided, or not run).
    decision: Option<usize>,
}

/// The accumulators of one run.
pub(super) struct Report<'e> {
    pub(super) stages: Vec<Histogram>,
    pub(super) agreement: Vec<TaskAgreement>,
    pub(super) frames: usize,
    /// Frames that came with a ground truth.
    pub(super) truth_frames: usize,
    pub(super) bad: u64,
    /// The engine's plan, until the first record has carried it.
    plan: Option<&'e PlanInfo>,
    zones: Vec<Zone>,
    /// Per task: frames of a zone the task must have run before its smoothing counts as
    /// settled (`window + consecutive`).
    settle: Vec<usize>,
}

impl<'e> Report<'e> {
    pub(super) fn new(plan: &'e PlanInfo, smoothing: &[SmoothingConfig]) -> Self {
        Report {
            stages: vec![Histogram::default(); STAGES.len()],
            agreement: vec![TaskAgreement::default(); smoothing.len()],
            frames: 0,
            truth_frames: 0,
            bad: 0,
            plan: Some(plan),
            zones: vec![Zone::default(); smoothing.len()],
            settle: smoothing.iter().map(|c| c.window + c.consecutive).collect(),
        }
    }

    /// Accounts for one inferred frame and returns its JSON record.
    pub(super) fn record(
        &mut self,
        tasks: &TaskSet,
        frame: &Frame,
        dropped: u64,
        started: Instant,
        states: &[TaskState],
        times: &[Option<Duration>],
    ) -> Value {
        self.frames += 1;
        let mut latency = serde_json::Map::new();
        for ((name, time), hist) in STAGES.iter().zip(times).zip(&mut self.stages) {
            if let Some(t) = time {
                hist.push(t.as_secs_f64() * 1e3);
                latency.insert(name.to_string(), ms(*t).into());
            }
        }
        let truth = frame.truth.as_ref().map(|t| tasks.classes_of(t));
        self.truth_frames += usize::from(truth.is_some());
        let mut record = serde_json::Map::new();
        for (i, task) in tasks.iter().enumerate() {
            let truth = truth.as_ref().and_then(|t| t[i]);
            self.agree(i, task, truth, &states[i]);
            let value = match states[i] {
                TaskState::Ran { p, smoothed } => json!({
                    "p": p,
                    "class": task.decide_name(p),
                    "p_smoothed": smoothed.probability,
                    "decision": smoothed.decision.map(|c| task.classes[c].as_str()),
                }),
                TaskState::Skipped => Value::Null,
                TaskState::NoReading { reason } => json!({ "no_reading": reason }),
            };
            record.insert(task.name.clone(), value);
        }
        let mut line = json!({
            "seq": frame.seq,
            "t_ms": ms(frame.captured_at.saturating_duration_since(started)),
            "done_ms": ms(started.elapsed()),
            "dropped": dropped,
            "lost": frame.lost_before,
            "tasks": record,
            "truth": frame.truth,
            "latency_ms": latency,
        });
        // The first record says which plan made the decisions (also in the summary).
        if let Some(plan) = self.plan.take() {
            line["plan"] = json!(plan);
        }
        line
    }

    /// Agreement of task `i` with its true class on this frame: per frame (raw and smoothed),
    /// on settled frames, and per zone (the smoothed decision at the zone's last frame).
    fn agree(&mut self, i: usize, task: &Task, truth: Option<usize>, state: &TaskState) {
        let a = &mut self.agreement[i];
        a.truth_frames += usize::from(truth.is_some());
        let zone = &mut self.zones[i];
        if zone.class != truth {
            close_zone(a, zone);
            *zone = Zone {
                class: truth,
                ..Zone::default()
            };
        }
        let Some(t) = truth else {
            return;
        };
        let (p, smoothed) = match *state {
            TaskState::Ran { p, smoothed } => (p, smoothed),
            TaskState::Skipped | TaskState::NoReading { .. } => {
                zone.decision = None;
                return;
            }
        };
        zone.ran += 1;
        zone.decision = smoothed.decision;
        a.frames += 1;
        a.correct += usize::from(task.decide(p) == t);
        if let Some(decision) = smoothed.decision {
            a.smoothed_frames += 1;
            a.smoothed_correct += usize::from(t == decision);
        }
        if zone.ran > self.settle[i] {
            a.settled_frames += 1;
            a.settled_undecided += usize::from(smoothed.decision.is_none());
            a.settled_correct += usize::from(smoothed.decision == Some(t));
        }
    }

    /// Closes the zones still open (the run ended).
    pub(super) fn close_zones(&mut self) {
        for (a, zone) in self.agreement.iter_mut().zip(&mut self.zones) {
            close_zone(a, zone);
            *zone = Zone::default();
        }
    }
}

fn close_zone(a: &mut TaskAgreement, zone: &Zone) {
    if let Some(class) = zone.class {
        a.zones += 1;
        if let Some(decision) = zone.decision {
            a.zones_decided += 1;
            a.zones_correct += usize::from(decision == class);
        }
    }
}

pub(super) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
