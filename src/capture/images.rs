//! An image sequence (a folder of PNG or JPEG frames, in name order) as a frame source.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};

use super::pixfmt::{PixelFormat, RawLayout};
use super::{BadFrame, Frame, FrameSource};
use crate::image::{frame_files, read_image};

/// Frames read from image files; a file that cannot be read is a bad frame naming it.
pub struct ImageSequence {
    dir: PathBuf,
    files: Vec<PathBuf>,
    next: usize,
    size: (usize, usize),
    started: Option<Instant>,
}

impl ImageSequence {
    /// The PNG and JPEG files of `dir`; the first one gives the frame size.
    pub fn open(dir: &Path) -> Result<ImageSequence> {
        let files = frame_files(dir)?;
        let Some(first) = files.first() else {
            bail!(
                "{}: neither a recording (no frames.jsonl) nor an image sequence (no PNG or JPEG files)",
                dir.display()
            );
        };
        let image = read_image(first)?;
        Ok(ImageSequence {
            dir: dir.to_path_buf(),
            size: (image.width, image.height),
            files,
            next: 0,
            started: None,
        })
    }
}

impl FrameSource for ImageSequence {
    fn next_frame(&mut self) -> Result<Option<Frame>> {
        let Some(path) = self.files.get(self.next) else {
            return Ok(None);
        };
        let seq = self.next as u64;
        self.next += 1;
        let start = Instant::now();
        let first = *self.started.get_or_insert(start);
        let image = read_image(path).map_err(|err| BadFrame {
            seq,
            reason: format!("{err:#}"),
        })?;
        let layout = RawLayout {
            format: PixelFormat::Grey,
            width: image.width,
            height: image.height,
            stride: image.width,
        };
        Ok(Some(Frame {
            seq,
            captured_at: Instant::now(),
            capture_time: start.elapsed(),
            convert_time: None,
            image,
            truth: None,
            layout,
            timestamp: start.saturating_duration_since(first),
            lost_before: 0,
        }))
    }

    fn frame_size(&self) -> (usize, usize) {
        self.size
    }

    fn describe(&self) -> String {
        format!(
            "images {} ({} files, {}x{})",
            self.dir.display(),
            self.files.len(),
            self.size.0,
            self.size.1
        )
    }
}
