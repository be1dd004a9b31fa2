//! What the server knows of the run: updated by [`LiveView`] on the inference thread (one short
//! lock a frame), read by the HTTP thread for `/status.json`, `/metrics` and `/healthz`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::metrics::{escape, Buckets, Exposition};
use super::stream::{Snapshot, StreamState};
use super::{RunInfo, ServeConfig};
use crate::clip::ClipRecord;
use crate::pipeline::histogram::Histogram;
use crate::pipeline::{
    ClipProgress, FrameEvent, Observer, RunCounts, RunEnd, RunSummary, TaskState, STAGES,
};

/// Frame times kept for the frame rate.
const RECENT: usize = 64;
/// The frame rate is measured over this much of the recent past.
const FPS_WINDOW: Duration = Duration::from_secs(2);
/// Clip records the status keeps.
const CLIPS_KEPT: usize = 12;

/// Everything the threads share.
pub(crate) struct Shared {
    pub config: ServeConfig,
    pub info: RunInfo,
    pub started: Instant,
    pub status: Mutex<Status>,
    pub stream: Mutex<StreamState>,
    /// Signalled when the stream state changes (a frame offered, encoded, a viewer waiting).
    pub stream_changed: Condvar,
    /// Clip marks (`POST /clip`), read by the run's clip tracker.
    pub marks: Arc<AtomicU64>,
    pub shutdown: AtomicBool,
}

impl Shared {
    pub fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn stream(&self) -> MutexGuard<'_, StreamState> {
        self.stream.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn closing(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }
}

/// The run as of its latest frame.
pub(crate) struct Status {
    pub states: Vec<TaskState>,
    pub seq: Option<u64>,
    pub timestamp: Duration,
    pub counts: RunCounts,
    pub clip: Option<ClipProgress>,
    pub last_frame: Option<Instant>,
    recent: VecDeque<Instant>,
    stages: Vec<Histogram>,
    buckets: Vec<Buckets>,
    pub last_total_ms: f64,
    pub clips: VecDeque<ClipRecord>,
    pub clips_total: u64,
    pub ended: Option<(RunEnd, Option<String>)>,
}

impl Status {
    pub fn new(tasks: usize) -> Status {
        Status {
            states: vec![TaskState::Skipped; tasks],
            seq: None,
            timestamp: Duration::ZERO,
            counts: RunCounts::default(),
            clip: None,
            last_frame: None,
            recent: VecDeque::with_capacity(RECENT),
            stages: vec![Histogram::default(); STAGES.len()],
            buckets: vec![Buckets::default(); STAGES.len()],
            last_total_ms: f64::NAN,
            clips: VecDeque::with_capacity(CLIPS_KEPT),
            clips_total: 0,
            ended: None,
        }
    }

    /// Frames a second over the recent past (0 when none came lately).
    pub fn fps(&self, now: Instant, started: Instant) -> f64 {
        let window = FPS_WINDOW.min(now.saturating_duration_since(started));
        let n = self
            .recent
            .iter()
            .filter(|t| now.saturating_duration_since(**t) <= window)
            .count();
        if window.is_zero() {
            0.0
        } else {
            n as f64 / window.as_secs_f64()
        }
    }
}

/// Whether frames flow.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Health {
    /// A frame came within the stall time.
    Live,
    /// No frame yet, since this many seconds.
    Waiting(f64),
    /// No frame for this many seconds.
    Stalled(f64),
    /// The run is over; why.
    Ended(String),
}

impl Health {
    pub fn of(status: &Status, now: Instant, started: Instant, stall: Duration) -> Health {
        if let Some((end, error)) = &status.ended {
            let why = match (end, error) {
                (_, Some(e)) => format!("the run failed: {e}"),
                (RunEnd::SourceEnded, _) => "the source ended".into(),
                (RunEnd::Interrupted, _) => "the run was stopped".into(),
                (RunEnd::FrameLimit, _) => "the run reached its frame limit".into(),
                (RunEnd::Failed, None) => "the run failed".into(),
            };
            return Health::Ended(why);
        }
        match status.last_frame {
            None => {
                let since = now.saturating_duration_since(started);
                if since > stall {
                    Health::Stalled(since.as_secs_f64())
                } else {
                    Health::Waiting(since.as_secs_f64())
                }
            }
            Some(t) if now.saturating_duration_since(t) > stall => {
                Health::Stalled(now.saturating_duration_since(t).as_secs_f64())
            }
            Some(_) => Health::Live,
        }
    }

    pub fn is_live(&self) -> bool {
        matches!(self, Health::Live | Health::Waiting(_))
    }

    pub fn word(&self) -> &'static str {
        match self {
            Health::Live => "live",
            Health::Waiting(_) => "waiting",
            Health::Stalled(_) => "stalled",
            Health::Ended(_) => "ended",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Health::Live => "frames flow".into(),
            Health::Waiting(s) => format!("waiting for the first frame ({s:.1} s)"),
            Health::Stalled(s) => format!("no frame for {s:.1} s: the source is stalled or gone"),
            Health::Ended(why) => why.clone(),
        }
    }
}

/// The run's observer that feeds the server (see [`super::Server::view`]).
pub struct LiveView {
    pub(crate) shared: Arc<Shared>,
}

impl Observer for LiveView {
    fn frame(&mut self, event: &FrameEvent<'_>) {
        let now = Instant::now();
        let fps = {
            let mut s = self.shared.status();
            s.states.clear();
            s.states.extend_from_slice(event.tasks);
            s.seq = Some(event.frame.seq);
            s.timestamp = event.frame.timestamp;
            s.counts = event.counts;
            s.clip = event.clip;
            s.last_frame = Some(now);
            if s.recent.len() == RECENT {
                s.recent.pop_front();
            }
            s.recent.push_back(now);
            for (i, t) in event.times.iter().enumerate() {
                if let Some(t) = t {
                    s.stages[i].push(t.as_secs_f64() * 1e3);
                    s.buckets[i].push(t.as_secs_f64());
                }
            }
            s.last_total_ms =
                event.times[STAGES.len() - 1].map_or(f64::NAN, |t| t.as_secs_f64() * 1e3);
            s.fps(now, self.shared.started)
        };
        // The stream: a copy of the frame for the encoder, only when a viewer waits for one.
        let Some(mut image) = super::stream::wanted(&self.shared, event.counts.frames, now) else {
            return;
        };
        image.width = event.frame.image.width;
        image.height = event.frame.image.height;
        image.pixels.clear();
        image.pixels.extend_from_slice(&event.frame.image.pixels);
        let total = event.times[STAGES.len() - 1].map_or(f64::NAN, |t| t.as_secs_f64() * 1e3);
        super::stream::offer(
            &self.shared,
            Snapshot {
                index: event.counts.frames,
                seq: event.frame.seq,
                image,
                states: event.tasks.to_vec(),
                fps,
                latency_ms: total,
                clip: event.clip,
            },
        );
    }

    fn clip(&mut self, clip: &ClipRecord) {
        let mut s = self.shared.status();
        if s.clips.len() == CLIPS_KEPT {
            s.clips.pop_front();
        }
        s.clips.push_back(clip.clone());
        s.clips_total += 1;
    }

    fn finished(&mut self, summary: &RunSummary) {
        self.shared.status().ended = Some((summary.end, summary.error.clone()));
    }
}

/// `/status.json`.
pub(crate) fn status_json(shared: &Shared) -> Value {
    let now = Instant::now();
    let info = &shared.info;
    let stall = Duration::from_secs_f64(shared.config.stall_seconds);
    let s = shared.status();
    let health = Health::of(&s, now, shared.started, stall);
    let tasks: Vec<Value> = info
        .tasks
        .iter()
        .zip(&s.states)
        .enumerate()
        .map(|(i, (task, state))| {
            let band = info
                .smoothing
                .get(i)
                .map(|c| [c.negative_below, c.positive_above]);
            let gate = info
                .tasks
                .gate_names(i)
                .map(|(t, c)| json!({"task": t, "class": c}));
            let mut v = json!({
                "name": task.name,
                "classes": task.classes,
                "gate": gate,
                "band": band,
            });
            match *state {
                TaskState::Ran { p, smoothed } => {
                    v["state"] = json!(if smoothed.decision.is_some() {
                        "decided"
                    } else {
                        "undecided"
                    });
                    v["p"] = json!(p);
                    v["p_smoothed"] = json!(smoothed.probability);
                    v["decision"] = json!(smoothed.decision.map(|c| task.classes[c].as_str()));
                }
                TaskState::Skipped => {
                    v["state"] = json!(if s.seq.is_some() {
                        "skipped"
                    } else {
                        "no_frame"
                    });
                    v["decision"] = Value::Null;
                }
                TaskState::NoReading { reason } => {
                    v["state"] = json!("no_reading");
                    v["reason"] = json!(reason);
                    v["decision"] = Value::Null;
                }
            }
            v
        })
        .collect();
    let latency: serde_json::Map<String, Value> = STAGES
        .iter()
        .zip(&s.stages)
        .filter(|(_, h)| h.len() > 0)
        .map(|(name, h)| {
            let v = json!({"p50": h.percentile(0.5), "p99": h.percentile(0.99)});
            (name.to_string(), v)
        })
        .collect();
    let fps = s.fps(now, shared.started);
    let frame = s.seq.map(|seq| {
        json!({
            "seq": seq,
            "t_s": s.timestamp.as_secs_f64(),
            "age_s": s.last_frame.map(|t| now.saturating_duration_since(t).as_secs_f64()),
            "latency_ms": s.last_total_ms,
        })
    });
    let mut value = json!({
        "pleura": info.version,
        "pack": {"name": info.pack_name, "id": info.pack_id, "description": info.pack_description},
        "source": info.source,
        "state": health.word(),
        "health": health.message(),
        "uptime_s": now.saturating_duration_since(shared.started).as_secs_f64(),
        "frame": frame,
        "fps": fps,
        "latency_ms": latency,
        "counts": s.counts,
        "tasks": tasks,
        "crop": info.crop.map(|r| [r.x, r.y, r.width, r.height]),
        "frame_size": [info.frame_size.0, info.frame_size.1],
        "clip": s.clip,
        "clips": s.clips,
        "clips_total": s.clips_total,
        "exam": info.exam.as_ref().map(|p| p.display().to_string()),
    });
    drop(s);
    value["stream"] = super::stream::status(shared, now);
    value
}

/// `/metrics`.
pub(crate) fn metrics_text(shared: &Shared) -> String {
    let now = Instant::now();
    let stall = Duration::from_secs_f64(shared.config.stall_seconds);
    let info = &shared.info;
    let mut e = Exposition::default();
    let labels = format!(
        "version=\"{}\",pack=\"{}\",pack_id=\"{}\"",
        escape(&info.version),
        escape(&info.pack_name),
        escape(&info.pack_id)
    );
    e.labelled(
        "pleura_info",
        "gauge",
        "The running pleura and its pack.",
        &[(labels, 1.0)],
    );
    let stream = super::stream::counters(shared);
    let s = shared.status();
    let health = Health::of(&s, now, shared.started, stall);
    let c = s.counts;
    let uptime = now.saturating_duration_since(shared.started).as_secs_f64();
    e.value(
        "pleura_up",
        "gauge",
        "1 while frames flow (what /healthz says), else 0.",
        f64::from(u8::from(health.is_live())),
    );
    e.value(
        "pleura_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        uptime,
    );
    e.value(
        "pleura_frames_total",
        "counter",
        "Frames inferred.",
        c.frames as f64,
    );
    e.value(
        "pleura_dropped_frames_total",
        "counter",
        "Frames replaced by a newer one before inference took them.",
        c.dropped as f64,
    );
    e.value(
        "pleura_lost_frames_total",
        "counter",
        "Frames the source lost (driver sequence gaps).",
        c.lost as f64,
    );
    e.value(
        "pleura_bad_frames_total",
        "counter",
        "Frames skipped as bad.",
        c.bad as f64,
    );
    e.value(
        "pleura_reconnects_total",
        "counter",
        "Times the capture device was reopened.",
        c.reconnects as f64,
    );
    e.value(
        "pleura_clips_total",
        "counter",
        "Clips ended.",
        s.clips_total as f64,
    );
    e.value(
        "pleura_fps",
        "gauge",
        "Frames inferred a second over the last 2 s.",
        s.fps(now, shared.started),
    );
    let probabilities: Vec<(String, f64)> = info
        .tasks
        .iter()
        .zip(&s.states)
        .filter_map(|(t, st)| {
            let p = st.smoothed()?.probability;
            Some((format!("task=\"{}\"", escape(&t.name)), f64::from(p)))
        })
        .collect();
    e.labelled("pleura_task_probability", "gauge", "Smoothed probability of each task's positive class on the latest frame (absent: the task did not run).", &probabilities);
    let decisions: Vec<(String, f64)> = info
        .tasks
        .iter()
        .zip(&s.states)
        .flat_map(|(t, st)| {
            let decided = st.smoothed().and_then(|s| s.decision);
            t.classes.iter().enumerate().map(move |(k, class)| {
                let labels = format!("task=\"{}\",class=\"{}\"", escape(&t.name), escape(class));
                (labels, f64::from(u8::from(decided == Some(k))))
            })
        })
        .collect();
    e.labelled(
        "pleura_task_decision",
        "gauge",
        "1 for the class each task's smoothed decision names on the latest frame.",
        &decisions,
    );
    let series: Vec<(&str, &Buckets)> = STAGES
        .iter()
        .zip(&s.buckets)
        .filter(|(_, b)| b.count() > 0)
        .map(|(name, b)| (*name, b))
        .collect();
    e.histograms(
        "pleura_stage_latency_seconds",
        "Latency of each stage of a frame.",
        "stage",
        &series,
    );
    drop(s);
    e.value(
        "pleura_stream_viewers",
        "gauge",
        "Viewers of /stream.mjpg now.",
        stream.viewers as f64,
    );
    e.value(
        "pleura_stream_viewers_refused_total",
        "counter",
        "Viewers turned away (too many).",
        stream.refused as f64,
    );
    e.value(
        "pleura_stream_frames_encoded_total",
        "counter",
        "Frames drawn and encoded for the stream.",
        stream.encoded as f64,
    );
    e.value(
        "pleura_stream_frames_sent_total",
        "counter",
        "Frames sent to viewers (summed over viewers).",
        stream.sent as f64,
    );
    e.value("pleura_stream_frames_skipped_total", "counter", "Frames inferred while a viewer watched that it did not get (rate cap, or a slow viewer), summed over viewers.", stream.skipped as f64);
    e.finish()
}
