//! Live capture: the source runs on its own thread and feeds the inference loop through a
//! one-frame mailbox, so capture (and pixel conversion) overlaps inference.
//!
//! ```text
//! capture thread: source.next_frame() -> mailbox (one slot) -> Live::next(): inference loop
//! ```
//!
//! A [`real_time`](FrameSource::real_time) source never waits: a frame still in the slot when a
//! newer one arrives is dropped and counted, so a consumer slower than the frame rate always
//! gets the newest frame and latency does not grow over a scan. Any other source waits for the
//! slot to empty (nothing is dropped). At most three frames exist at once: the one being
//! captured, the one in the slot and the one being inferred.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::Serialize;

use super::{BadFrame, Frame, FrameSource};

/// How often blocked waits look at the stop flag.
const POLL: Duration = Duration::from_millis(20);
/// Bad frames reported one by one; later ones are only counted.
const BAD_FRAMES_LOGGED: u64 = 10;
/// How long [`Live::finish`] waits for the capture thread before leaving it behind.
const JOIN_WAIT: Duration = Duration::from_secs(2);

/// Frame counts of a live capture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CaptureCounts {
    /// Frames the source handed over (dropped ones included, bad ones not).
    pub delivered: u64,
    /// Delivered frames replaced in the mailbox by a newer one before inference took them.
    pub dropped: u64,
    /// Frames the source reported as [`BadFrame`] and that were skipped.
    pub bad: u64,
    /// Frames the source itself lost before delivering the next one (driver sequence gaps).
    pub lost: u64,
    /// Times the source reopened a lost device.
    pub reconnects: u64,
}

/// What [`Live::next`] returns.
#[derive(Debug)]
pub enum Next {
    /// The newest frame, and how many older frames were dropped since the previous one.
    Frame {
        /// The frame.
        frame: Frame,
        /// Frames dropped just before this one.
        dropped: u64,
    },
    /// The source ended.
    End,
    /// The source failed; the error names it.
    Failed(anyhow::Error),
    /// The stop flag was raised (Ctrl-C).
    Stopped,
}

#[derive(Default)]
struct State {
    slot: Option<Frame>,
    dropped_since_taken: u64,
    counts: CaptureCounts,
    /// `Some(Ok)`: the source ended; `Some(Err)`: it failed.
    end: Option<Result<()>>,
    /// The consumer is done: the capture thread must return.
    closing: bool,
    /// The capture thread has returned.
    finished: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: Arc<AtomicBool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        match self.changed.wait_timeout(guard, POLL) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        }
    }

    fn stopping(&self, state: &State) -> bool {
        state.closing || self.stop.load(Ordering::Relaxed)
    }

    /// Puts `frame` into the slot; `false` when the run is stopping.
    fn deliver(&self, frame: Frame, real_time: bool) -> bool {
        let mut state = self.lock();
        if real_time {
            if state.slot.is_some() {
                state.counts.dropped += 1;
                state.dropped_since_taken += 1;
            }
        } else {
            while state.slot.is_some() {
                if self.stopping(&state) {
                    return false;
                }
                state = self.wait(state);
            }
        }
        state.counts.lost += frame.lost_before;
        state.slot = Some(frame);
        state.counts.delivered += 1;
        self.changed.notify_all();
        true
    }

    fn end(&self, end: Result<()>) {
        let mut state = self.lock();
        if state.end.is_none() {
            state.end = Some(end);
        }
        self.changed.notify_all();
    }
}

/// Ends the stream if the capture thread leaves without saying why (a panicking source).
struct EndGuard<'a>(&'a Shared);

impl Drop for EndGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        if !state.closing && state.end.is_none() {
            state.end = Some(Err(anyhow!("the capture thread stopped unexpectedly")));
        }
        state.finished = true;
        self.0.changed.notify_all();
    }
}

/// A source running on its own capture thread.
pub struct Live {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Live {
    /// Starts the capture thread on `source`. Raising `stop` ends capture and makes
    /// [`Live::next`] return [`Next::Stopped`].
    pub fn start<S>(source: S, stop: Arc<AtomicBool>) -> Result<Live>
    where
        S: FrameSource + Send + 'static,
    {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            stop,
        });
        let name = source.describe();
        let thread = std::thread::Builder::new()
            .name("pleura-capture".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || capture(source, &shared)
            })
            .with_context(|| format!("starting the capture thread for {name}"))?;
        Ok(Live {
            shared,
            thread: Some(thread),
        })
    }

    /// Waits for the newest frame, the end of the stream, or the stop flag.
    pub fn next(&self) -> Next {
        let mut state = self.shared.lock();
        loop {
            if self.shared.stop.load(Ordering::Relaxed) {
                return Next::Stopped;
            }
            if let Some(frame) = state.slot.take() {
                let dropped = std::mem::take(&mut state.dropped_since_taken);
                self.shared.changed.notify_all();
                return Next::Frame { frame, dropped };
            }
            match state.end.take() {
                Some(Ok(())) => {
                    state.end = Some(Ok(()));
                    return Next::End;
                }
                Some(Err(err)) => {
                    state.end = Some(Ok(()));
                    return Next::Failed(err);
                }
                None => state = self.shared.wait(state),
            }
        }
    }

    /// Counts so far.
    pub fn counts(&self) -> CaptureCounts {
        self.shared.lock().counts
    }

    /// Stops the capture thread, waits for it, and returns the final counts.
    pub fn finish(mut self) -> CaptureCounts {
        self.close();
        self.counts()
    }

    /// Tells the capture thread to return and joins it. A source still inside `next_frame`
    /// after [`JOIN_WAIT`] (a long paced period, a stuck device) is left behind: the thread
    /// returns by itself once that call does.
    fn close(&mut self) {
        let Some(thread) = self.thread.take() else {
            return; // already closed
        };
        let deadline = std::time::Instant::now() + JOIN_WAIT;
        let finished = {
            let mut state = self.shared.lock();
            state.closing = true;
            self.shared.changed.notify_all();
            while !state.finished && std::time::Instant::now() < deadline {
                state = self.shared.wait(state);
            }
            state.finished
        };
        if finished {
            // A panic in the source was already turned into an error by `EndGuard`.
            let _ = thread.join();
        } else {
            log::warn!("the capture thread did not stop within {JOIN_WAIT:?}; leaving it");
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.close();
    }
}

fn capture<S: FrameSource>(mut source: S, shared: &Shared) {
    let _guard = EndGuard(shared);
    let real_time = source.real_time();
    loop {
        if shared.stopping(&shared.lock()) {
            return;
        }
        let next = source.next_frame();
        let reconnects = source.reconnects();
        if reconnects > 0 {
            shared.lock().counts.reconnects = reconnects;
        }
        match next {
            Ok(Some(frame)) => {
                if !shared.deliver(frame, real_time) {
                    return;
                }
            }
            Ok(None) => return shared.end(Ok(())),
            Err(err) => match err.downcast_ref::<BadFrame>() {
                Some(bad) => {
                    let count = {
                        let mut state = shared.lock();
                        state.counts.bad += 1;
                        state.counts.bad
                    };
                    report_bad_frame(count, &format!("{}: {bad}", source.describe()));
                }
                None => {
                    let name = source.describe();
                    return shared.end(Err(err.context(format!("capturing from {name}"))));
                }
            },
        }
    }
}

/// Logs the `count`-th bad frame of a run (`message` names it and says why), up to a limit.
pub fn report_bad_frame(count: u64, message: &str) {
    if count < BAD_FRAMES_LOGGED {
        log::warn!("{message}: skipped");
    } else if count == BAD_FRAMES_LOGGED {
        log::warn!("{message}: skipped (further bad frames are counted, not logged)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::paced::Paced;
    use crate::capture::phantom::PhantomSource;
    use std::time::Instant;

    #[test]
    fn a_waiting_source_loses_no_frame() {
        let source = PhantomSource::new(0, 32, 32, 4, 20).unwrap();
        let live = Live::start(source, Arc::default()).unwrap();
        let mut seqs = Vec::new();
        loop {
            match live.next() {
                Next::Frame { frame, dropped } => {
                    assert_eq!(dropped, 0);
                    std::thread::sleep(Duration::from_millis(2));
                    seqs.push(frame.seq);
                }
                Next::End => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seqs, (0..20).collect::<Vec<_>>());
        assert!(matches!(live.next(), Next::End));
        assert_eq!(
            live.finish(),
            CaptureCounts {
                delivered: 20,
                dropped: 0,
                bad: 0,
                lost: 0,
                reconnects: 0,
            }
        );
    }

    #[test]
    fn a_real_time_source_drops_old_frames_for_a_slow_consumer() {
        let source = Paced::new(PhantomSource::new(0, 32, 32, 4, 60).unwrap(), 500.0).unwrap();
        let live = Live::start(source, Arc::default()).unwrap();
        let (mut taken, mut dropped, mut last) = (0, 0, None);
        while let Next::Frame { frame, dropped: d } = live.next() {
            assert!(last.is_none_or(|l| frame.seq == l + 1 + d), "{last:?} {d}");
            assert!(frame.captured_at.elapsed() < Duration::from_millis(500));
            last = Some(frame.seq);
            taken += 1;
            dropped += d;
            std::thread::sleep(Duration::from_millis(10));
        }
        let counts = live.finish();
        assert!(
            counts.dropped > 0 && counts.dropped == dropped,
            "{counts:?}"
        );
        assert_eq!(taken + dropped, counts.delivered);
        assert_eq!(counts.delivered, 60);
    }

    #[test]
    fn stop_flag_ends_a_blocked_wait_and_errors_end_the_stream() {
        struct Failing(u64);
        impl FrameSource for Failing {
            fn next_frame(&mut self) -> Result<Option<Frame>> {
                self.0 += 1;
                match self.0 {
                    1 => Err(BadFrame {
                        seq: 0,
                        reason: "torn buffer".into(),
                    }
                    .into()),
                    _ => Err(anyhow!("device lost")),
                }
            }
            fn frame_size(&self) -> (usize, usize) {
                (32, 32)
            }
            fn describe(&self) -> String {
                "failing".into()
            }
        }
        let live = Live::start(Failing(0), Arc::default()).unwrap();
        match live.next() {
            Next::Failed(err) => {
                let text = format!("{err:#}");
                assert!(
                    text.contains("failing") && text.contains("device lost"),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(live.finish().bad, 1);

        let stop = Arc::new(AtomicBool::new(false));
        let slow = Paced::new(PhantomSource::new(0, 32, 32, 4, 10).unwrap(), 0.1).unwrap();
        let live = Live::start(slow, Arc::clone(&stop)).unwrap();
        assert!(matches!(live.next(), Next::Frame { .. }));
        let t = Instant::now();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            stop.store(true, Ordering::Relaxed);
        });
        assert!(matches!(live.next(), Next::Stopped));
        assert!(t.elapsed() < Duration::from_millis(1000));
        // The source sleeps 10 s before its next frame: finishing does not wait for it.
        let counts = live.finish();
        assert!(t.elapsed() < JOIN_WAIT + Duration::from_secs(2));
        assert_eq!(counts.delivered, 1);
    }
}
