//! Real-time pacing: a source that delivers frames at a fixed rate, like a camera.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};

use super::{Frame, FrameSource};

/// Delivers the frames of `S` no faster than `fps`, one every `1 / fps` seconds, and marks the
/// stream [`real_time`](FrameSource::real_time): a slower consumer then loses frames, as it
/// would with a capture card. A frame is produced first and handed over at its tick (its
/// `captured_at` is the tick); a source slower than the rate delivers as fast as it can,
/// without a catch-up burst afterwards.
pub struct Paced<S> {
    inner: S,
    period: Duration,
    next_due: Option<Instant>,
}

impl<S: FrameSource> Paced<S> {
    /// Paces `inner` at `fps` frames per second (finite, above 0 and at most 100,000).
    pub fn new(inner: S, fps: f64) -> Result<Self> {
        ensure!(
            fps.is_finite() && fps > 0.0 && fps <= 1e5,
            "frame rate {fps} must lie in (0, 100000] frames per second"
        );
        Ok(Self {
            inner,
            period: Duration::from_secs_f64(1.0 / fps),
            next_due: None,
        })
    }
}

impl<S: FrameSource> FrameSource for Paced<S> {
    fn next_frame(&mut self) -> Result<Option<Frame>> {
        let Some(mut frame) = self.inner.next_frame()? else {
            return Ok(None);
        };
        let now = Instant::now();
        let due = self.next_due.unwrap_or(now);
        if due > now {
            std::thread::sleep(due - now);
        }
        let delivered = Instant::now();
        // Behind by more than a period (a slow source): start the ticks again from now.
        let next = due + self.period;
        self.next_due = Some(if next + self.period < delivered {
            delivered + self.period
        } else {
            next
        });
        frame.captured_at = delivered;
        Ok(Some(frame))
    }

    fn frame_size(&self) -> (usize, usize) {
        self.inner.frame_size()
    }

    fn describe(&self) -> String {
        format!(
            "{} at {:.1} fps",
            self.inner.describe(),
            1.0 / self.period.as_secs_f64()
        )
    }

    fn real_time(&self) -> bool {
        true
    }

    fn reconnects(&self) -> u64 {
        self.inner.reconnects()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::phantom::PhantomSource;

    #[test]
    fn paced_source_keeps_its_rate() {
        let source = PhantomSource::new(1, 32, 32, 4, 11).unwrap();
        let mut paced = Paced::new(source, 200.0).unwrap();
        assert!(paced.real_time());
        let mut stamps = Vec::new();
        while let Some(frame) = paced.next_frame().unwrap() {
            stamps.push(frame.captured_at);
        }
        assert_eq!(stamps.len(), 11);
        let span = stamps[10].duration_since(stamps[0]);
        // 10 periods of 5 ms; sleeping never returns early.
        assert!(span >= Duration::from_millis(50), "{span:?}");
        assert!(span < Duration::from_millis(500), "{span:?}");
        assert!(Paced::new(PhantomSource::new(1, 32, 32, 4, 1).unwrap(), 0.0).is_err());
    }
}
