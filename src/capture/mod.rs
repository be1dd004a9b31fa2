//! Frame sources: where frames come from before preprocessing.
//!
//! Every source implements [`FrameSource`]; the pipeline knows nothing else about it. Today:
//! [`phantom::PhantomSource`] (synthetic lung ultrasound with ground truth).

pub mod phantom;

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::image::GreyImage;
use crate::phantom::Labels;

/// One captured frame, already converted to grey.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Sequence number given by the source (gaps mean dropped frames).
    pub seq: u64,
    /// When the source delivered the frame.
    pub captured_at: Instant,
    /// Time the source spent producing or converting it.
    pub capture_time: Duration,
    /// The grey frame.
    pub image: GreyImage,
    /// Ground truth, known only for synthetic sources.
    pub truth: Option<Labels>,
}

/// A stream of frames.
pub trait FrameSource {
    /// The next frame, or `None` at the end of the stream.
    fn next_frame(&mut self) -> Result<Option<Frame>>;
    /// Size `(width, height)` of the frames this source delivers.
    fn frame_size(&self) -> (usize, usize);
    /// A short description for logs, e.g. `phantom (seed 7)`.
    fn describe(&self) -> String;
}
