//! An exam folder (`pleura run --exam DIR`): the clips of one exam, kept as they end.
//!
//! An [`Exam`] is an [`Observer`] of the run. For each clip it keeps the clip record
//! ([`crate::clip`]) and a representative frame: the frame of the clip on which the first
//! ungated task (the view) was most confident, its smoothed probability farthest from the
//! decision threshold (the probe held still on the zone, not moving between zones). After
//! every clip it rewrites, atomically:
//!
//! - `DIR/exam.json`: the pack, the source, every clip record with its representative frame's
//!   sequence number, and per task how many clips decided each class;
//! - `DIR/contact_sheet.png`: one cell per clip, the representative frame with the clip's
//!   decisions drawn under it (bar: the run rule's score, tick at the decision threshold).
//!
//! Writing never stops the run: an error is logged, kept, and returned by [`Exam::finish`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::json;

use crate::clip::ClipRecord;
use crate::fsutil::write_atomic;
use crate::overlay::decisions::clip_lines;
use crate::overlay::{colour, Canvas, Panel};
use crate::pipeline::{FrameEvent, Observer, RunSummary, TaskState};
use crate::tasks::TaskSet;

/// Longer side of a contact-sheet cell's frame, pixels.
const CELL: usize = 256;
/// Cells per row of the contact sheet.
const COLUMNS: usize = 4;
/// A new representative frame must be this much more confident than the one kept.
const MARGIN: f32 = 0.01;

/// Name of the exam summary in the folder.
pub const EXAM_JSON: &str = "exam.json";
/// Name of the contact sheet in the folder.
pub const CONTACT_SHEET: &str = "contact_sheet.png";

/// A clip of the exam with its representative frame.
struct ExamClip {
    record: ClipRecord,
    /// Sequence number and thumbnail of the representative frame.
    frame: Option<(u64, Canvas)>,
}

/// Collects the clips of a run into an exam folder.
pub struct Exam {
    dir: PathBuf,
    tasks: TaskSet,
    header: serde_json::Value,
    clips: Vec<ExamClip>,
    /// The clip in progress: `(confidence, seq, thumbnail)` of its best frame so far.
    candidate: Option<(f32, u64, Canvas)>,
    /// The run's end, once known.
    end: Option<serde_json::Value>,
    error: Option<anyhow::Error>,
}

impl Exam {
    /// An exam written into `dir` (created) for a run of `tasks`; `header` (pack, source, ...)
    /// is copied into `exam.json` as is.
    pub fn new(dir: &Path, tasks: &TaskSet, header: serde_json::Value) -> Result<Exam> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the exam folder {}", dir.display()))?;
        Ok(Exam {
            dir: dir.to_path_buf(),
            tasks: tasks.clone(),
            header,
            clips: Vec::new(),
            candidate: None,
            end: None,
            error: None,
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Ends the exam: the first error met while writing it, if any.
    pub fn finish(self) -> Result<()> {
        match self.error {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    fn write(&mut self) {
        if let Err(err) = self.try_write() {
            log::warn!("exam {}: {err:#}", self.dir.display());
            self.error.get_or_insert(err);
        }
    }

    fn try_write(&self) -> Result<()> {
        write_atomic(
            &self.dir.join(EXAM_JSON),
            serde_json::to_string_pretty(&self.summary())?.as_bytes(),
        )?;
        let sheet = self.contact_sheet();
        let png = sheet.to_png().context("encoding the contact sheet")?;
        write_atomic(&self.dir.join(CONTACT_SHEET), &png)
    }

    /// `exam.json`'s content.
    fn summary(&self) -> serde_json::Value {
        #[derive(Serialize)]
        struct Clip<'a> {
            #[serde(flatten)]
            record: &'a ClipRecord,
            representative_seq: Option<u64>,
        }
        let mut per_task: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
        for task in &self.tasks {
            let counts = per_task.entry(&task.name).or_default();
            counts.insert("not_assessed", 0);
            for class in &task.classes {
                counts.insert(class, 0);
            }
        }
        for clip in &self.clips {
            for (task, decided) in self.tasks.iter().zip(clip.record.decisions(&self.tasks)) {
                let key = decided.map_or("not_assessed", |c| task.classes[c].as_str());
                if let Some(n) = per_task
                    .get_mut(task.name.as_str())
                    .and_then(|m| m.get_mut(key))
                {
                    *n += 1;
                }
            }
        }
        let clips: Vec<Clip> = self
            .clips
            .iter()
            .map(|c| Clip {
                record: &c.record,
                representative_seq: c.frame.as_ref().map(|(seq, _)| *seq),
            })
            .collect();
        let mut value = self.header.clone();
        value["clips"] = json!(clips);
        value["clip_decisions"] = json!(per_task);
        value["contact_sheet"] = json!(CONTACT_SHEET);
        value["run"] = self.end.clone().unwrap_or(serde_json::Value::Null);
        value
    }

    /// One cell per clip: its frame, then the clip's decisions.
    fn contact_sheet(&self) -> Canvas {
        let cells: Vec<Canvas> = self.clips.iter().map(|c| self.cell(c)).collect();
        let (cw, ch) = cells
            .iter()
            .fold((CELL, 0), |(w, h), c| (w.max(c.width), h.max(c.height)));
        let gap = 8;
        let columns = cells.len().clamp(1, COLUMNS);
        let rows = cells.len().div_ceil(COLUMNS).max(1);
        let mut sheet = Canvas::new(
            gap + columns * (cw + gap),
            gap + rows * (ch.max(1) + gap),
            [24, 24, 24],
        );
        for (k, cell) in cells.iter().enumerate() {
            let (col, row) = (k % COLUMNS, k / COLUMNS);
            sheet.blit(cell, gap + col * (cw + gap), gap + row * (ch + gap));
        }
        sheet
    }

    fn cell(&self, clip: &ExamClip) -> Canvas {
        let r = &clip.record;
        let title = format!(
            "clip {}  {:.1} s  {} frames  ({})",
            r.index + 1,
            r.seconds,
            r.frames,
            serde_json::to_value(r.end)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        );
        let panel = Panel {
            lines: clip_lines(&self.tasks, r),
        };
        let (fw, fh) = clip
            .frame
            .as_ref()
            .map_or((CELL, CELL / 2), |(_, c)| (c.width, c.height));
        let line = 11;
        let info = line * (panel.lines.len() + 1) + 10;
        let mut cell = Canvas::new(fw.max(CELL), fh + info, [0, 0, 0]);
        match &clip.frame {
            Some((_, frame)) => cell.blit(frame, 0, 0),
            None => {
                cell.text(4, fh / 2, "no frame", colour::GREY, 1);
            }
        }
        cell.text(3, fh + 4, &title, colour::WHITE, 1);
        let mut below = Canvas::new(cell.width, info - line - 4, [0, 0, 0]);
        panel.draw(&mut below, false);
        cell.blit(&below, 0, fh + line + 4);
        cell
    }
}

impl Observer for Exam {
    fn frame(&mut self, event: &FrameEvent<'_>) {
        // Confidence of the first ungated task (the view): distance of its smoothed
        // probability from the threshold.
        let first = self
            .tasks
            .iter()
            .position(|t| t.gate.is_none())
            .unwrap_or(0);
        let confidence = match event.tasks.get(first) {
            Some(TaskState::Ran { smoothed, .. }) if smoothed.probability.is_finite() => {
                (smoothed.probability - self.tasks[first].threshold).abs()
            }
            _ => return,
        };
        if self
            .candidate
            .as_ref()
            .is_none_or(|(best, _, _)| confidence > best + MARGIN)
        {
            let thumbnail = Canvas::reduced(&event.frame.image, CELL);
            self.candidate = Some((confidence, event.frame.seq, thumbnail));
        }
    }

    fn clip(&mut self, clip: &ClipRecord) {
        let frame = self.candidate.take().map(|(_, seq, canvas)| (seq, canvas));
        self.clips.push(ExamClip {
            record: clip.clone(),
            frame,
        });
        self.write();
    }

    fn finished(&mut self, summary: &RunSummary) {
        self.end = Some(json!({
            "end": summary.end,
            "error": summary.error,
            "frames": summary.frames,
            "elapsed_s": summary.elapsed_s,
            "fps": summary.fps,
            "dropped": summary.dropped,
            "bad_frames": summary.bad_frames,
        }));
        self.write();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clip::{ClipEnd, ClipOptions, ClipTracker, TaskFrame};

    #[test]
    fn an_exam_folder_holds_the_summary_and_the_contact_sheet() {
        let tasks = TaskSet::standard();
        let dir = tempfile::tempdir().unwrap();
        let mut exam = Exam::new(dir.path(), &tasks, json!({"source": "test"})).unwrap();
        let mut tracker = ClipTracker::new(ClipOptions::default(), &[2, 2, 2]).unwrap();
        for i in 0..3 {
            let f = TaskFrame {
                p: Some(0.9),
                smoothed: Some(1),
                truth: None,
            };
            let skipped = TaskFrame {
                p: None,
                smoothed: None,
                truth: None,
            };
            tracker.push(
                i,
                std::time::Duration::from_millis(40 * i),
                &[f, skipped, f],
            );
        }
        let record = tracker.finish(ClipEnd::Mark, &tasks).unwrap();
        exam.clip(&record);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(EXAM_JSON)).unwrap())
                .unwrap();
        assert_eq!(json["source"], "test");
        assert_eq!(json["clips"][0]["frames"], 3);
        assert_eq!(json["clips"][0]["end"], "mark");
        assert_eq!(json["clip_decisions"]["view"]["pleural"], 1);
        assert_eq!(json["clip_decisions"]["lines"]["not_assessed"], 1);
        let png = std::fs::read(dir.path().join(CONTACT_SHEET)).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        exam.finish().unwrap();
    }
}
