//! Frame sources: where frames come from before preprocessing.
//!
//! Every source implements [`FrameSource`]; the pipeline knows nothing else about it:
//!
//! - [`v4l2::V4l2Source`]: a capture card (Video4Linux), raw buffers in any [`pixfmt`] format;
//! - [`recording::Replay`]: raw frames recorded by `pleura record`, replayed bit for bit;
//! - [`images::ImageSequence`]: a folder of PNG or JPEG frames;
//! - [`phantom::PhantomSource`]: synthetic lung ultrasound with ground truth.
//!
//! Raw sources ([`raw::RawSource`]) deliver buffers as received; [`raw::Converted`] turns them
//! into grey frames. [`config::CaptureConfig`] says how to negotiate with a capture card;
//! [`spec::SourceSpec`] parses `--source` and opens any of them, optionally
//! paced to a frame rate by [`paced::Paced`]. [`live::Live`] runs any source on its own thread
//! and hands the inference loop the newest frame through a one-frame mailbox.
//!
//! A source reports a frame it could not deliver (a corrupt or mis-sized buffer) as a
//! [`BadFrame`] error: the run counts and skips it. Any other error ends the stream.

pub mod config;
pub mod images;
pub mod jpeg_dht;
pub mod live;
pub mod paced;
pub mod phantom;
pub mod pixfmt;
pub mod raw;
pub mod recording;
pub mod spec;
#[cfg(feature = "v4l2")]
pub mod v4l2;

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::Result;

use self::pixfmt::RawLayout;
use crate::image::GreyImage;
use crate::tasks::Truth;

/// One captured frame, already converted to grey.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Sequence number given by the source (gaps mean dropped frames).
    pub seq: u64,
    /// When the source delivered the frame.
    pub captured_at: Instant,
    /// Time the source spent producing the frame, conversion to grey included.
    pub capture_time: Duration,
    /// Of `capture_time`, the time spent converting the pixel format to grey; `None` for
    /// sources that produce grey directly.
    pub convert_time: Option<Duration>,
    /// The grey frame.
    pub image: GreyImage,
    /// Ground truth, known only for synthetic sources (and their recordings).
    pub truth: Option<Truth>,
    /// Pixel format, size and stride the frame arrived in (grey sources: GREY).
    pub layout: RawLayout,
    /// Time since the stream's first frame, from the driver's clock where there is one.
    pub timestamp: Duration,
    /// Frames the source lost just before this one (a gap in the driver's sequence numbers).
    pub lost_before: u64,
}

/// A stream of frames.
pub trait FrameSource {
    /// The next frame, or `None` at the end of the stream. A [`BadFrame`] error skips one frame;
    /// any other error ends the stream. Must return within a bounded time (a camera polls with
    /// a timeout) so that a run can stop.
    fn next_frame(&mut self) -> Result<Option<Frame>>;
    /// Size `(width, height)` of the frames this source delivers.
    fn frame_size(&self) -> (usize, usize);
    /// A short description for logs, e.g. `phantom (seed 7)`.
    fn describe(&self) -> String;
    /// `true` when frames arrive in real time whether or not they are consumed (a camera, a
    /// paced source): a slower consumer then gets the newest frame and the others are dropped.
    /// `false` (the default) for sources that can wait, such as files: none is dropped.
    fn real_time(&self) -> bool {
        false
    }
    /// Times the source reopened a lost device (a capture card with `reconnect`); 0 for
    /// sources that never reconnect.
    fn reconnects(&self) -> u64 {
        0
    }
}

impl<S: FrameSource + ?Sized> FrameSource for Box<S> {
    fn next_frame(&mut self) -> Result<Option<Frame>> {
        (**self).next_frame()
    }
    fn frame_size(&self) -> (usize, usize) {
        (**self).frame_size()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn real_time(&self) -> bool {
        (**self).real_time()
    }
    fn reconnects(&self) -> u64 {
        (**self).reconnects()
    }
}

/// A frame the source received but could not deliver; the stream goes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadFrame {
    /// Sequence number of the lost frame.
    pub seq: u64,
    /// What was wrong with it.
    pub reason: String,
}

impl fmt::Display for BadFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "frame {}: {}", self.seq, self.reason)
    }
}

impl std::error::Error for BadFrame {}
