//! Raw frames: buffers as a source received them, before conversion to grey.
//!
//! Capture cards and recordings deliver [`RawFrame`]s (a buffer in some [`PixelFormat`]);
//! [`Converted`] turns any [`RawSource`] into a [`FrameSource`] of grey frames. Recording
//! stores raw frames and replay reads them back through the same conversion, so a replayed
//! scan is bit for bit the scan that was captured.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::pixfmt::{to_grey, PixelFormat, RawLayout, YuvRange};
use super::{BadFrame, Frame, FrameSource};
use crate::image::GreyImage;
use crate::tasks::Truth;

/// One buffer from a [`RawSource`], valid until its next call.
#[derive(Debug)]
pub struct RawFrame<'a> {
    /// Sequence number (monotonic over the whole stream, reconnects included).
    pub seq: u64,
    /// Frames the source lost just before this one (a gap in the driver's sequence numbers).
    pub lost_before: u64,
    /// Time since the first frame of the stream, from the driver's clock where there is one.
    pub timestamp: Duration,
    /// When this process received the buffer.
    pub captured_at: Instant,
    /// Format, size and stride of `data`.
    pub layout: RawLayout,
    /// The bytes (an MJPEG buffer is cut to the driver's `bytesused`).
    pub data: &'a [u8],
    /// The driver flagged the buffer as corrupt.
    pub corrupt: bool,
    /// Range of the luma samples (YUV formats and GREY).
    pub range: YuvRange,
    /// Ground truth, known only for synthetic sources (and their recordings).
    pub truth: Option<Truth>,
}

/// A stream of raw buffers.
pub trait RawSource {
    /// The next buffer, or `None` at the end of the stream (see [`FrameSource::next_frame`]
    /// for errors and timing).
    fn next_raw(&mut self) -> Result<Option<RawFrame<'_>>>;
    /// Layout of the buffers this source delivers now.
    fn layout(&self) -> RawLayout;
    /// A short description for logs.
    fn describe(&self) -> String;
    /// See [`FrameSource::real_time`].
    fn real_time(&self) -> bool {
        false
    }
    /// See [`FrameSource::reconnects`].
    fn reconnects(&self) -> u64 {
        0
    }
}

impl<S: RawSource + ?Sized> RawSource for Box<S> {
    fn next_raw(&mut self) -> Result<Option<RawFrame<'_>>> {
        (**self).next_raw()
    }
    fn layout(&self) -> RawLayout {
        (**self).layout()
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

/// A [`FrameSource`] converting the buffers of a [`RawSource`] to grey.
pub struct Converted<S> {
    source: S,
}

impl<S: RawSource> Converted<S> {
    /// Converts `source`'s buffers, each with its own layout and luma range.
    pub fn new(source: S) -> Self {
        Self { source }
    }

    /// The raw source.
    pub fn inner(&self) -> &S {
        &self.source
    }
}

impl<S: RawSource> FrameSource for Converted<S> {
    fn next_frame(&mut self) -> Result<Option<Frame>> {
        let started = Instant::now();
        let Some(raw) = self.source.next_raw()? else {
            return Ok(None);
        };
        if raw.corrupt {
            return Err(BadFrame {
                seq: raw.seq,
                reason: "the driver flagged the buffer as corrupt".into(),
            }
            .into());
        }
        let converting = Instant::now();
        let mut image = GreyImage::new(0, 0);
        if let Err(err) = to_grey(&raw.layout, raw.data, raw.range, &mut image) {
            return Err(BadFrame {
                seq: raw.seq,
                reason: format!("{err:#}"),
            }
            .into());
        }
        let done = Instant::now();
        Ok(Some(Frame {
            seq: raw.seq,
            captured_at: raw.captured_at,
            capture_time: done.saturating_duration_since(started),
            convert_time: Some(done.saturating_duration_since(converting)),
            image,
            truth: raw.truth,
            layout: raw.layout,
            timestamp: raw.timestamp,
            lost_before: raw.lost_before,
        }))
    }

    fn frame_size(&self) -> (usize, usize) {
        let layout = self.source.layout();
        (layout.width, layout.height)
    }

    fn describe(&self) -> String {
        self.source.describe()
    }

    fn real_time(&self) -> bool {
        self.source.real_time()
    }

    fn reconnects(&self) -> u64 {
        self.source.reconnects()
    }
}

/// A grey [`FrameSource`] seen as a [`RawSource`] of GREY buffers (to record the phantom).
pub struct GreyAsRaw<S> {
    source: S,
    frame: Option<Frame>,
    first: Option<Instant>,
}

impl<S: FrameSource> GreyAsRaw<S> {
    /// Wraps `source`.
    pub fn new(source: S) -> Self {
        Self {
            source,
            frame: None,
            first: None,
        }
    }
}

impl<S: FrameSource> RawSource for GreyAsRaw<S> {
    fn next_raw(&mut self) -> Result<Option<RawFrame<'_>>> {
        self.frame = self.source.next_frame()?;
        let Some(frame) = &self.frame else {
            return Ok(None);
        };
        let first = *self.first.get_or_insert(frame.captured_at);
        let image = &frame.image;
        Ok(Some(RawFrame {
            seq: frame.seq,
            lost_before: frame.lost_before,
            timestamp: frame.captured_at.saturating_duration_since(first),
            captured_at: frame.captured_at,
            layout: RawLayout::new(PixelFormat::Grey, image.width, image.height, image.width)?,
            data: &image.pixels,
            corrupt: false,
            range: YuvRange::Full,
            truth: frame.truth.clone(),
        }))
    }

    fn layout(&self) -> RawLayout {
        let (width, height) = self.source.frame_size();
        RawLayout {
            format: PixelFormat::Grey,
            width,
            height,
            stride: width,
        }
    }

    fn describe(&self) -> String {
        self.source.describe()
    }

    fn real_time(&self) -> bool {
        self.source.real_time()
    }

    fn reconnects(&self) -> u64 {
        self.source.reconnects()
    }
}
