//! `/stream.mjpg`: the frames with the decisions drawn on, as multipart MJPEG.
//!
//! ```text
//! inference thread  --offer (only when a viewer waits, at most `fps` a second)-->  slot
//! encoder thread    slot -> draw (overlay) -> JPEG -> `latest`
//! viewer threads    `latest` -> their socket (one thread each, at most `max_viewers`)
//! ```
//!
//! The inference thread never waits on the stream: it copies a frame into a one-frame slot
//! only when some viewer is waiting for a new frame, the encoder is idle and the rate cap
//! allows, and goes on. A viewer whose socket blocks (a slow or stalled client) stops waiting,
//! so it no longer causes frames to be encoded, and the frames inferred meanwhile are
//! skipped for it and counted. Nothing is drawn or encoded while nobody watches.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::state::Shared;
use super::RunInfo;
use crate::image::GreyImage;
use crate::overlay::decisions::frame_lines;
use crate::overlay::{colour, Canvas, Line, Panel};
use crate::pipeline::{ClipProgress, TaskState};

/// The multipart boundary.
const BOUNDARY: &str = "pleuraframe";
/// How often waiting threads look at the shutdown flag.
const POLL: Duration = Duration::from_millis(200);

/// A frame handed to the encoder.
pub(crate) struct Snapshot {
    /// Frames inferred up to and including this one.
    pub index: u64,
    pub seq: u64,
    pub image: GreyImage,
    pub states: Vec<TaskState>,
    pub fps: f64,
    pub latency_ms: f64,
    pub clip: Option<ClipProgress>,
}

/// An encoded frame.
pub(crate) struct Jpeg {
    index: u64,
    bytes: Vec<u8>,
}

/// One connected viewer.
struct Viewer {
    id: u64,
    since: Instant,
    /// Frames inferred when it connected.
    first_index: u64,
    sent: u64,
    waiting: bool,
    writing_since: Option<Instant>,
}

/// The stream's shared state (behind `Shared::stream`).
pub(crate) struct StreamState {
    offered: Option<Snapshot>,
    /// A frame buffer to reuse.
    spare: Option<GreyImage>,
    encoding: bool,
    latest: Option<Arc<Jpeg>>,
    viewers: Vec<Viewer>,
    next_id: u64,
    next_due: Instant,
    /// Frames inferred so far.
    inferred: u64,
    encoded: u64,
    sent: u64,
    /// Skipped frames of viewers that have left.
    skipped_closed: u64,
    refused: u64,
}

impl StreamState {
    pub fn new(now: Instant) -> Self {
        Self {
            offered: None,
            spare: None,
            encoding: false,
            latest: None,
            viewers: Vec::new(),
            next_id: 0,
            next_due: now,
            inferred: 0,
            encoded: 0,
            sent: 0,
            skipped_closed: 0,
            refused: 0,
        }
    }

    fn skipped(&self, v: &Viewer) -> u64 {
        self.inferred
            .saturating_sub(v.first_index)
            .saturating_sub(v.sent)
    }
}

/// Stream counters (also for `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StreamCounters {
    /// Viewers connected now.
    pub viewers: usize,
    /// Viewers turned away because `max_viewers` were connected.
    pub refused: u64,
    /// Frames drawn and encoded.
    pub encoded: u64,
    /// Frames sent, summed over viewers.
    pub sent: u64,
    /// Frames inferred while a viewer was connected that it did not get, summed over viewers.
    pub skipped: u64,
}

pub(crate) fn counters(shared: &Shared) -> StreamCounters {
    let s = shared.stream();
    StreamCounters {
        viewers: s.viewers.len(),
        refused: s.refused,
        encoded: s.encoded,
        sent: s.sent,
        skipped: s.skipped_closed + s.viewers.iter().map(|v| s.skipped(v)).sum::<u64>(),
    }
}

/// The `stream` part of `/status.json`.
pub(crate) fn status(shared: &Shared, now: Instant) -> Value {
    let c = counters(shared);
    let s = shared.stream();
    let viewers: Vec<Value> = s
        .viewers
        .iter()
        .map(|v| {
            json!({
                "id": v.id,
                "connected_s": now.saturating_duration_since(v.since).as_secs_f64(),
                "sent": v.sent,
                "skipped": s.skipped(v),
                "writing_for_s": v.writing_since.map(|t| now.saturating_duration_since(t).as_secs_f64()),
            })
        })
        .collect();
    json!({
        "max_viewers": shared.config.max_viewers,
        "fps_cap": shared.config.fps,
        "viewers": c.viewers,
        "refused": c.refused,
        "encoded": c.encoded,
        "sent": c.sent,
        "skipped": c.skipped,
        "connected": viewers,
    })
}

/// Called by the inference thread for each frame (`index`: frames inferred so far): a buffer
/// to copy the frame into when the stream wants it, `None` (the usual case) when not.
pub(crate) fn wanted(shared: &Shared, index: u64, now: Instant) -> Option<GreyImage> {
    let mut s = shared.stream();
    s.inferred = index;
    let wants = s.viewers.iter().any(|v| v.waiting)
        && s.offered.is_none()
        && !s.encoding
        && now >= s.next_due;
    if !wants {
        return None;
    }
    let period = Duration::from_secs_f64(1.0 / shared.config.fps);
    s.next_due = (s.next_due + period).max(now);
    Some(s.spare.take().unwrap_or_else(|| GreyImage::new(0, 0)))
}

/// Hands a copied frame to the encoder.
pub(crate) fn offer(shared: &Shared, snapshot: Snapshot) {
    shared.stream().offered = Some(snapshot);
    shared.stream_changed.notify_all();
}

/// The encoder thread: draws and encodes offered frames until shutdown.
pub(crate) fn encoder(shared: Arc<Shared>) {
    loop {
        let snapshot = {
            let mut s = shared.stream();
            loop {
                if shared.closing() {
                    return;
                }
                if let Some(snapshot) = s.offered.take() {
                    s.encoding = true;
                    break snapshot;
                }
                s = match shared.stream_changed.wait_timeout(s, POLL) {
                    Ok((s, _)) => s,
                    Err(poisoned) => poisoned.into_inner().0,
                };
            }
        };
        let encoded = encode(&shared.info, &shared.config, &snapshot);
        let mut s = shared.stream();
        s.encoding = false;
        s.spare = Some(snapshot.image);
        match encoded {
            Ok(bytes) => {
                s.latest = Some(Arc::new(Jpeg {
                    index: snapshot.index,
                    bytes,
                }));
                s.encoded += 1;
            }
            Err(err) => log::warn!("live view: frame {}: {err:#}", snapshot.seq),
        }
        drop(s);
        shared.stream_changed.notify_all();
    }
}

/// Draws the overlay on a frame and encodes it as JPEG.
pub(crate) fn encode(
    info: &RunInfo,
    config: &super::ServeConfig,
    snapshot: &Snapshot,
) -> Result<Vec<u8>> {
    let mut canvas = Canvas::from_grey(&snapshot.image, config.max_side);
    if let Some(rect) = info.crop {
        canvas.frame_rect(rect, colour::CROP);
    }
    Panel {
        lines: frame_lines(&info.tasks, &snapshot.states, &info.smoothing),
    }
    .draw(&mut canvas, false);
    let mut footer = format!(
        "{:.1} fps  {:.1} ms  #{}",
        snapshot.fps, snapshot.latency_ms, snapshot.seq
    );
    if let Some(clip) = snapshot.clip {
        footer += &format!("  clip {} {:.1} s", clip.index + 1, clip.seconds);
    }
    Panel {
        lines: vec![Line {
            label: footer,
            bar: None,
            text: String::new(),
            colour: colour::WHITE,
        }],
    }
    .draw(&mut canvas, true);
    let (w, h) = (
        u16::try_from(canvas.width).context("frame too wide for JPEG")?,
        u16::try_from(canvas.height).context("frame too tall for JPEG")?,
    );
    let mut bytes = Vec::with_capacity(canvas.pixels.len() / 8);
    jpeg_encoder::Encoder::new(&mut bytes, config.quality)
        .encode(&canvas.pixels, w, h, jpeg_encoder::ColorType::Rgb)
        .context("encoding JPEG")?;
    Ok(bytes)
}

/// Registers a viewer, or `None` when `max_viewers` are connected (counted as refused).
pub(crate) fn join(shared: &Shared) -> Option<u64> {
    let mut s = shared.stream();
    if s.viewers.len() >= shared.config.max_viewers {
        s.refused += 1;
        return None;
    }
    let id = s.next_id;
    s.next_id += 1;
    let first_index = s.inferred;
    s.viewers.push(Viewer {
        id,
        since: Instant::now(),
        first_index,
        sent: 0,
        waiting: false,
        writing_since: None,
    });
    Some(id)
}

/// Serves viewer `id` on `out` (the raw connection) until it leaves or the server closes.
pub(crate) fn serve_viewer(shared: Arc<Shared>, id: u64, mut out: Box<dyn Write + Send>) {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary={BOUNDARY}\r\n\
         Cache-Control: no-cache, no-store, must-revalidate\r\nPragma: no-cache\r\n\
         Connection: close\r\n\r\n"
    );
    let result = out
        .write_all(head.as_bytes())
        .and_then(|()| out.flush())
        .map_err(anyhow::Error::from)
        .and_then(|()| send_frames(&shared, id, &mut out));
    if let Err(err) = result {
        log::debug!("live view: viewer {id} left: {err:#}");
    }
    let mut s = shared.stream();
    if let Some(k) = s.viewers.iter().position(|v| v.id == id) {
        let v = s.viewers.remove(k);
        s.skipped_closed += s.skipped(&v);
    }
}

fn send_frames(shared: &Shared, id: u64, out: &mut dyn Write) -> Result<()> {
    let mut last: Option<u64> = None;
    loop {
        let jpeg = {
            let mut s = shared.stream();
            set_waiting(&mut s, id, true);
            shared.stream_changed.notify_all();
            loop {
                if shared.closing() {
                    return Ok(());
                }
                let newer = s
                    .latest
                    .as_ref()
                    .filter(|j| last.is_none_or(|l| j.index > l));
                if let Some(jpeg) = newer.cloned() {
                    set_waiting(&mut s, id, false);
                    if let Some(v) = s.viewers.iter_mut().find(|v| v.id == id) {
                        v.writing_since = Some(Instant::now());
                    }
                    break jpeg;
                }
                s = match shared.stream_changed.wait_timeout(s, POLL) {
                    Ok((s, _)) => s,
                    Err(poisoned) => poisoned.into_inner().0,
                };
            }
        };
        let part = format!(
            "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            jpeg.bytes.len()
        );
        out.write_all(part.as_bytes())
            .and_then(|()| out.write_all(&jpeg.bytes))
            .and_then(|()| out.write_all(b"\r\n"))
            .and_then(|()| out.flush())
            .context("writing a frame")?;
        last = Some(jpeg.index);
        let mut s = shared.stream();
        s.sent += 1;
        if let Some(v) = s.viewers.iter_mut().find(|v| v.id == id) {
            v.sent += 1;
            v.writing_since = None;
        }
    }
}

fn set_waiting(s: &mut StreamState, id: u64, waiting: bool) {
    if let Some(v) = s.viewers.iter_mut().find(|v| v.id == id) {
        v.waiting = waiting;
    }
}
