//! The live loop: source -> preprocess -> engine -> per-frame record -> summary.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use crate::capture::FrameSource;
use crate::engine::{Engine, TaskMode};
use crate::latency::{LatencyLog, StageSummary, StageTimes};
use crate::phantom::{Labels, View};
use crate::preprocess::{Preprocessor, Rect};

/// Options of one run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Which heads run.
    pub mode: TaskMode,
    /// Region of the source frame that holds the ultrasound image.
    pub crop: Option<Rect>,
}

/// Agreement of one task's decisions with the ground truth of a synthetic source.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TaskAgreement {
    /// Frames where the task ran and the truth was known.
    pub frames: usize,
    /// Of those, frames decided correctly.
    pub correct: usize,
}

/// What a run reports at the end.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    /// Source description.
    pub source: String,
    /// Frames processed.
    pub frames: usize,
    /// Frames per second over the whole run.
    pub fps: f64,
    /// Latency percentiles per stage, in milliseconds.
    pub latency_ms: Vec<(String, StageSummary)>,
    /// Per task: agreement with ground truth (synthetic sources only).
    pub agreement: Vec<(String, TaskAgreement)>,
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

/// Runs frames from `source` through `engine` until the source ends, writing one JSON object
/// per frame to `out`.
pub fn run(
    source: &mut dyn FrameSource,
    engine: &Engine,
    options: &RunOptions,
    input_spec: &crate::pack::InputSpec,
    out: &mut dyn Write,
) -> Result<RunSummary> {
    let (width, height) = source.frame_size();
    let mut pre = Preprocessor::new(input_spec, width, height, options.crop)
        .with_context(|| format!("planning preprocessing for {}", source.describe()))?;
    let mut session = engine.session()?;
    let tasks = engine.tasks();
    let mut input = vec![0.0f32; pre.output_len()];
    let mut log = LatencyLog::default();
    let mut agreement: Vec<TaskAgreement> = vec![TaskAgreement::default(); tasks.len()];
    let started = Instant::now();
    loop {
        let wait = Instant::now();
        let Some(frame) = source.next_frame()? else {
            break;
        };
        let capture = wait.elapsed().max(frame.capture_time);
        let t0 = Instant::now();
        pre.run(&frame.image, &mut input)
            .with_context(|| format!("preprocessing frame {}", frame.seq))?;
        let preprocess = t0.elapsed();
        let result = session
            .infer(&input, options.mode)
            .with_context(|| format!("inference on frame {}", frame.seq))?;
        let times = StageTimes([
            capture,
            preprocess,
            result.backbone,
            result.heads,
            capture + preprocess + result.backbone + result.heads,
        ]);
        log.push(&times);

        let mut record = serde_json::Map::new();
        for (i, task) in tasks.iter().enumerate() {
            let value = match (result.probabilities[i], result.decision(i)) {
                (Some(p), Some(d)) => json!({"p": p, "class": task.classes[d]}),
                _ => Value::Null,
            };
            record.insert(task.name.clone(), value);
            if let (Some(truth), Some(d)) = (frame.truth.as_ref(), result.decision(i)) {
                if let Some(t) = truth_class(truth, &task.name) {
                    agreement[i].frames += 1;
                    agreement[i].correct += usize::from(t == d);
                }
            }
        }
        let line = json!({
            "seq": frame.seq,
            "t_ms": ms(frame.captured_at.duration_since(started)),
            "tasks": record,
            "truth": frame.truth.map(|t| json!({
                "view": t.view.as_str(), "b_lines": t.b_lines, "effusion": t.effusion
            })),
            "latency_ms": times.millis(),
        });
        writeln!(out, "{line}").context("writing the frame record")?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(RunSummary {
        source: source.describe(),
        frames: log.len(),
        fps: if elapsed > 0.0 {
            log.len() as f64 / elapsed
        } else {
            0.0
        },
        latency_ms: log
            .summary()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        agreement: tasks
            .iter()
            .map(|t| t.name.clone())
            .zip(agreement)
            .collect(),
    })
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl RunSummary {
    /// A human-readable table of the summary.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{} frames from {} at {:.1} fps\nstage        p50 ms   p90 ms   p99 ms   max ms\n",
            self.frames, self.source, self.fps
        );
        for (name, v) in &self.latency_ms {
            s += &format!(
                "{name:<10} {:>8.3} {:>8.3} {:>8.3} {:>8.3}\n",
                v.p50, v.p90, v.p99, v.max
            );
        }
        for (name, a) in &self.agreement {
            if a.frames > 0 {
                s += &format!(
                    "{name}: {}/{} frames agree with the phantom's truth ({:.1}%)\n",
                    a.correct,
                    a.frames,
                    100.0 * a.correct as f64 / a.frames as f64
                );
            }
        }
        s
    }
}
