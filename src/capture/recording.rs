//! Recordings: raw frames written by `pleura record`, played back by `--source replay:DIR`.
//!
//! A recording is a folder:
//!
//! ```text
//! recording.json   what was recorded: source, frame count, lost frames, complete or not
//! frames.jsonl     one line per frame: seq, lost_before, t_us, format, width, height, stride,
//!                  offset, bytes, corrupt, range (of luma), truth (synthetic sources only)
//! frames.raw       the buffers, back to back, exactly as the source delivered them
//! ```
//!
//! Versions: 2 writes `truth` as a [`Truth`], per task name the true class name
//! (`{"effusion":"present","view":"pleural"}`); version 1 wrote the phantom's labels
//! (`{"view":"pleural","b_lines":null,"effusion":true}`), which are still read, mapped onto the
//! standard tasks ([`crate::tasks::phantom`]).
//!
//! Replay reads the buffers and converts them with the same code as live capture, so a
//! replayed scan gives bit for bit the frames (and the decisions) of the captured one. A
//! recording cut short (power loss, full disk) replays up to its last complete frame.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Deserializer, Serialize};

use super::pixfmt::{RawLayout, YuvRange};
use super::raw::{RawFrame, RawSource};
use super::BadFrame;
use crate::phantom::Labels;
use crate::tasks::{self, TaskSet, Truth};

/// Format name in `recording.json`.
pub const FORMAT: &str = "pleura-recording";
/// Version of the folder layout this runtime writes (it reads every version up to it).
pub const VERSION: u32 = 2;
const INFO: &str = "recording.json";
const INDEX: &str = "frames.jsonl";
const DATA: &str = "frames.raw";

/// `recording.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordingInfo {
    /// Always [`FORMAT`].
    pub format: String,
    /// Folder layout version.
    pub version: u32,
    /// The source, as `pleura run` describes it.
    pub source: String,
    /// Program and version that wrote it.
    pub created_by: String,
    /// Frames written.
    pub frames: u64,
    /// Frames the source lost during the recording (sequence gaps).
    pub lost: u64,
    /// `false` until the recording was closed properly.
    pub complete: bool,
}

/// One line of `frames.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameEntry {
    /// Sequence number.
    pub seq: u64,
    /// Frames lost just before this one.
    pub lost_before: u64,
    /// Microseconds since the first frame.
    pub t_us: u64,
    /// Format, size and stride of the buffer.
    #[serde(flatten)]
    pub layout: RawLayout,
    /// Offset of the buffer in `frames.raw`.
    pub offset: u64,
    /// Length of the buffer.
    pub bytes: u64,
    /// The driver flagged the buffer as corrupt.
    #[serde(default)]
    pub corrupt: bool,
    /// Range of the luma samples (YUV formats and GREY).
    pub range: YuvRange,
    /// Ground truth of synthetic frames.
    #[serde(
        default,
        deserialize_with = "truth_of_any_version",
        skip_serializing_if = "Option::is_none"
    )]
    pub truth: Option<Truth>,
}

/// A frame's `truth` as either version wrote it.
#[derive(Deserialize)]
#[serde(untagged)]
enum RecordedTruth {
    /// Version 2: task name -> class name (a v1 object never parses as one: it holds a null
    /// and a boolean).
    Truth(Truth),
    /// Version 1: the phantom's labels.
    Labels(Labels),
}

fn truth_of_any_version<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Truth>, D::Error> {
    Ok(Option::<RecordedTruth>::deserialize(d)?.map(|t| match t {
        RecordedTruth::Truth(truth) => truth,
        RecordedTruth::Labels(labels) => tasks::phantom(&labels, &TaskSet::standard()),
    }))
}

/// Writes a recording.
pub struct Recorder {
    dir: PathBuf,
    info: RecordingInfo,
    index: BufWriter<File>,
    data: BufWriter<File>,
    offset: u64,
}

impl Recorder {
    /// Creates the folder `dir` (which must not hold a recording already).
    pub fn create(dir: &Path, source: &str) -> Result<Recorder> {
        if dir.join(INDEX).exists() {
            bail!(
                "{} already holds a recording: choose another folder or delete it",
                dir.display()
            );
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let create = |name: &str| {
            let path = dir.join(name);
            File::create(&path)
                .map(BufWriter::new)
                .with_context(|| format!("creating {}", path.display()))
        };
        let mut recorder = Recorder {
            dir: dir.to_path_buf(),
            info: RecordingInfo {
                format: FORMAT.into(),
                version: VERSION,
                source: source.into(),
                created_by: format!("pleura {}", env!("CARGO_PKG_VERSION")),
                frames: 0,
                lost: 0,
                complete: false,
            },
            index: create(INDEX)?,
            data: create(DATA)?,
            offset: 0,
        };
        recorder.write_info()?;
        Ok(recorder)
    }

    fn write_info(&mut self) -> Result<()> {
        crate::fsutil::write_atomic(
            &self.dir.join(INFO),
            serde_json::to_string_pretty(&self.info)?.as_bytes(),
        )
    }

    /// Appends one frame.
    pub fn write(&mut self, frame: &RawFrame<'_>) -> Result<()> {
        let entry = FrameEntry {
            seq: frame.seq,
            lost_before: frame.lost_before,
            t_us: frame.timestamp.as_micros() as u64,
            layout: frame.layout,
            offset: self.offset,
            bytes: frame.data.len() as u64,
            corrupt: frame.corrupt,
            range: frame.range,
            truth: frame.truth.clone(),
        };
        self.data.write_all(frame.data).with_context(|| {
            format!(
                "writing frame {} to {}",
                frame.seq,
                self.dir.join(DATA).display()
            )
        })?;
        // The index line goes after its data: a reader never finds a line without its bytes
        // once both are flushed.
        let mut line = serde_json::to_vec(&entry)?;
        line.push(b'\n');
        self.index.write_all(&line).with_context(|| {
            format!(
                "writing frame {} to {}",
                frame.seq,
                self.dir.join(INDEX).display()
            )
        })?;
        self.offset += entry.bytes;
        self.info.frames += 1;
        self.info.lost += frame.lost_before;
        Ok(())
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.info.frames
    }

    /// Flushes everything to disk and marks the recording complete.
    pub fn finish(mut self) -> Result<RecordingInfo> {
        for (writer, name) in [(&mut self.data, DATA), (&mut self.index, INDEX)] {
            writer
                .flush()
                .and_then(|()| writer.get_ref().sync_all())
                .with_context(|| format!("writing {}", self.dir.join(name).display()))?;
        }
        self.info.complete = true;
        self.write_info()?;
        Ok(self.info.clone())
    }
}

/// How a replay paces its frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Timing {
    /// As fast as the consumer takes them; nothing is dropped.
    #[default]
    Fast,
    /// At the recorded times, as a real-time source: a slow consumer drops frames as it would
    /// have live.
    Recorded,
}

impl std::str::FromStr for Timing {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Timing> {
        match s {
            "fast" => Ok(Timing::Fast),
            "recorded" => Ok(Timing::Recorded),
            _ => bail!("timing `{s}`: expected `fast` or `recorded`"),
        }
    }
}

/// Plays a recording back.
pub struct Replay {
    dir: PathBuf,
    info: Option<RecordingInfo>,
    entries: Vec<FrameEntry>,
    next: usize,
    data: File,
    data_len: u64,
    buffer: Vec<u8>,
    timing: Timing,
    started: Option<Instant>,
}

impl Replay {
    /// `true` when `dir` holds a recording (rather than an image sequence).
    pub fn is_recording(dir: &Path) -> bool {
        dir.join(INDEX).is_file()
    }

    /// Opens the recording in `dir`.
    pub fn open(dir: &Path, timing: Timing) -> Result<Replay> {
        let info_path = dir.join(INFO);
        let info = match std::fs::read(&info_path) {
            Ok(bytes) => {
                let info: RecordingInfo = serde_json::from_slice(&bytes)
                    .with_context(|| format!("parsing {}", info_path.display()))?;
                if info.format != FORMAT || info.version > VERSION {
                    bail!(
                        "{}: format {} version {} (this pleura reads {FORMAT} up to version {VERSION})",
                        info_path.display(),
                        info.format,
                        info.version
                    );
                }
                if !info.complete {
                    log::warn!(
                        "{}: the recording was not closed properly; replaying its complete frames",
                        dir.display()
                    );
                }
                Some(info)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", info_path.display())),
        };
        let entries = read_index(&dir.join(INDEX))?;
        if entries.is_empty() {
            bail!("{}: the recording holds no frame", dir.display());
        }
        let data_path = dir.join(DATA);
        let data =
            File::open(&data_path).with_context(|| format!("opening {}", data_path.display()))?;
        let data_len = data
            .metadata()
            .with_context(|| format!("reading {}", data_path.display()))?
            .len();
        Ok(Replay {
            dir: dir.to_path_buf(),
            info,
            entries,
            next: 0,
            data,
            data_len,
            buffer: Vec::new(),
            timing,
            started: None,
        })
    }

    /// Number of frames in the recording.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` when the recording holds no frame (never: [`Replay::open`] refuses those).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Reads `frames.jsonl`; a broken last line (a recording cut short) is left out with a warning,
/// a broken line elsewhere is an error naming it.
fn read_index(path: &Path) -> Result<Vec<FrameEntry>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading {}", path.display()))?;
    let mut entries = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<FrameEntry>(line) {
            Ok(entry) => entries.push(entry),
            Err(e) if i + 1 == lines.len() => {
                log::warn!(
                    "{}:{}: incomplete last line left out ({e})",
                    path.display(),
                    i + 1
                )
            }
            Err(e) => bail!("{}:{}: {e}", path.display(), i + 1),
        }
    }
    Ok(entries)
}

impl RawSource for Replay {
    fn next_raw(&mut self) -> Result<Option<RawFrame<'_>>> {
        let Some(entry) = self.entries.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        let started = *self.started.get_or_insert_with(Instant::now);
        if self.timing == Timing::Recorded {
            let due = started + Duration::from_micros(entry.t_us);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let end = entry.offset.checked_add(entry.bytes);
        if end.is_none_or(|end| end > self.data_len) {
            return Err(BadFrame {
                seq: entry.seq,
                reason: format!(
                    "{} ends at byte {} (frame needs bytes {}..{}): recording truncated",
                    self.dir.join(DATA).display(),
                    self.data_len,
                    entry.offset,
                    entry.offset.saturating_add(entry.bytes)
                ),
            }
            .into());
        }
        self.buffer.resize(entry.bytes as usize, 0);
        read_exact_at(&self.data, &mut self.buffer, entry.offset)
            .with_context(|| format!("reading {}", self.dir.join(DATA).display()))?;
        Ok(Some(RawFrame {
            seq: entry.seq,
            lost_before: entry.lost_before,
            timestamp: Duration::from_micros(entry.t_us),
            captured_at: Instant::now(),
            layout: entry.layout,
            data: &self.buffer,
            corrupt: entry.corrupt,
            range: entry.range,
            truth: entry.truth.clone(),
        }))
    }

    fn layout(&self) -> RawLayout {
        self.entries[self.next.min(self.entries.len() - 1)].layout
    }

    fn describe(&self) -> String {
        let layout = self.layout();
        format!(
            "replay {} ({} frames, {} {}x{}{}{})",
            self.dir.display(),
            self.entries.len(),
            layout.format,
            layout.width,
            layout.height,
            self.info
                .as_ref()
                .map_or(String::new(), |i| format!(", recorded from {}", i.source)),
            match self.timing {
                Timing::Fast => "",
                Timing::Recorded => ", at recorded timing",
            }
        )
    }

    fn real_time(&self) -> bool {
        self.timing == Timing::Recorded
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(not(unix))]
fn read_exact_at(mut file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-1 recording (written before `truth` became a [`Truth`]) still replays, its
    /// phantom labels mapped onto the standard tasks.
    #[test]
    fn a_version_1_recording_replays_with_its_truth_mapped() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(
            dir.join(INFO),
            r#"{"format":"pleura-recording","version":1,"source":"phantom (seed 3, 4x2)",
               "created_by":"pleura 0.1.0","frames":3,"lost":0,"complete":true}"#,
        )
        .unwrap();
        let line = |seq: u64, truth: &str| {
            format!(
                r#"{{"seq":{seq},"lost_before":0,"t_us":{},"format":"GREY","width":4,"height":2,"stride":4,"offset":{},"bytes":8,"corrupt":false,"range":"full"{truth}}}"#,
                seq * 40_000,
                seq * 8
            )
        };
        let index = [
            line(
                0,
                r#","truth":{"view":"pleural","b_lines":null,"effusion":true}"#,
            ),
            line(
                1,
                r#","truth":{"view":"parenchymal","b_lines":false,"effusion":null}"#,
            ),
            line(2, ""),
        ];
        std::fs::write(dir.join(INDEX), index.join("\n") + "\n").unwrap();
        std::fs::write(dir.join(DATA), (0..24u8).collect::<Vec<_>>()).unwrap();

        let mut replay = Replay::open(dir, Timing::Fast).unwrap();
        let mut truths = Vec::new();
        while let Some(frame) = replay.next_raw().unwrap() {
            assert_eq!(frame.data.len(), 8);
            truths.push(frame.truth.clone());
        }
        let standard = TaskSet::standard();
        let classes: Vec<_> = truths
            .iter()
            .map(|t| t.as_ref().map(|t| standard.classes_of(t)))
            .collect();
        assert_eq!(
            classes,
            [
                Some(vec![Some(1), None, Some(1)]),
                Some(vec![Some(0), Some(0), None]),
                None
            ]
        );

        // Written again, the truth is version 2's and reads back the same.
        let entry = FrameEntry {
            truth: truths[0].clone(),
            ..read_index(&dir.join(INDEX)).unwrap().remove(0)
        };
        let text = serde_json::to_string(&entry).unwrap();
        assert!(
            text.contains(r#""truth":{"effusion":"present","view":"pleural"}"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<FrameEntry>(&text).unwrap(), entry);
    }
}
