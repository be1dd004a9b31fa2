//! Recordings made by `pleura record` on a board (raw capture-card buffers in any pixel format)
//! as clips: the runtime's own replay and pixel-format conversion turn them into the grey
//! frames the board's inference saw, so a hospital can train on what its capture card delivers.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use pleura::capture::raw::Converted;
use pleura::capture::recording::{Replay, Timing};
use pleura::capture::{BadFrame, FrameSource};
use pleura::image::GreyImage;

/// `true` when `dir` is a `pleura record` folder.
pub fn is_recording(dir: &Path) -> bool {
    Replay::is_recording(dir)
}

/// Every `stride`-th frame of the recording in `dir` (at most `max_frames`), converted to grey
/// as the runtime converts it, and the mean seconds between two kept frames (from the recorded
/// timestamps). A frame the recording marks bad is skipped with a warning naming it.
pub fn read_frames(
    dir: &Path,
    stride: usize,
    max_frames: Option<usize>,
) -> Result<(Vec<GreyImage>, Option<f64>)> {
    ensure!(stride > 0, "frame stride must be positive");
    let replay = Replay::open(dir, Timing::Fast)
        .with_context(|| format!("opening recording {}", dir.display()))?;
    let mut source = Converted::new(replay);
    let (mut frames, mut times) = (Vec::new(), Vec::new());
    let mut index = 0usize;
    loop {
        let frame = match source.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(err) if err.downcast_ref::<BadFrame>().is_some() => {
                log::warn!("{}: frame {index} skipped: {err:#}", dir.display());
                index += 1;
                continue;
            }
            Err(err) => return Err(err.context(format!("reading recording {}", dir.display()))),
        };
        if index.is_multiple_of(stride) {
            times.push(frame.timestamp.as_secs_f64());
            frames.push(frame.image);
            if max_frames.is_some_and(|m| frames.len() >= m) {
                break;
            }
        }
        index += 1;
    }
    ensure!(
        !frames.is_empty(),
        "recording {} holds no frame",
        dir.display()
    );
    let seconds = (times.len() > 1)
        .then(|| (times[times.len() - 1] - times[0]) / (times.len() - 1) as f64)
        .filter(|s| *s > 0.0 && s.is_finite());
    Ok((frames, seconds))
}
