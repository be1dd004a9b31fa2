//! A [`FrameSource`] of synthetic lung-ultrasound clips with ground-truth labels.

use std::time::Instant;

use anyhow::Result;

use super::pixfmt::{PixelFormat, RawLayout};
use super::{Frame, FrameSource};
use crate::phantom::{cohort, Clip};

/// Plays a synthetic cohort clip after clip, `frames_per_clip` frames each, `total` frames in all.
pub struct PhantomSource {
    clips: Vec<Clip>,
    frames_per_clip: usize,
    total: u64,
    seq: u64,
    width: usize,
    height: usize,
    seed: u64,
    started: Option<Instant>,
}

impl PhantomSource {
    /// A source of `total` frames of `width x height`, cycling through 8 clips of a cohort
    /// drawn from `seed` (all four label kinds appear).
    pub fn new(
        seed: u64,
        width: usize,
        height: usize,
        frames_per_clip: usize,
        total: u64,
    ) -> Result<Self> {
        let clips = cohort(8, seed)
            .into_iter()
            .map(|c| Clip::new(c.params, width, height))
            .collect::<Result<_>>()?;
        Ok(Self {
            clips,
            frames_per_clip: frames_per_clip.max(1),
            total,
            seq: 0,
            width,
            height,
            seed,
            started: None,
        })
    }
}

impl FrameSource for PhantomSource {
    fn next_frame(&mut self) -> Result<Option<Frame>> {
        if self.seq >= self.total {
            return Ok(None);
        }
        let start = Instant::now();
        let index = self.seq as usize / self.frames_per_clip;
        let n = self.clips.len();
        let clip = &mut self.clips[index % n];
        let image = clip.frame(self.seq as usize % self.frames_per_clip);
        let frame = Frame {
            seq: self.seq,
            captured_at: Instant::now(),
            capture_time: start.elapsed(),
            convert_time: None,
            image,
            truth: Some(clip.labels()),
            layout: RawLayout {
                format: PixelFormat::Grey,
                width: self.width,
                height: self.height,
                stride: self.width,
            },
            timestamp: self.started.get_or_insert_with(Instant::now).elapsed(),
            lost_before: 0,
        };
        self.seq += 1;
        Ok(Some(frame))
    }

    fn frame_size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn describe(&self) -> String {
        format!(
            "phantom (seed {}, {}x{})",
            self.seed, self.width, self.height
        )
    }
}
