//! A [`FrameSource`] of synthetic lung-ultrasound scans with ground truth (the phantom's labels
//! mapped onto the standard tasks, [`crate::tasks::phantom`]).
//!
//! The source plays a scan as a person does it: the probe dwells on one lung zone (one cohort
//! clip) for [`Scan::dwell_frames`], then slides to the next zone over
//! [`Scan::transition_frames`] (a cross-fade of the two zones, without ground truth: the
//! image belongs to neither), and so on through 8 zones, round and round. Frames are stamped at
//! [`PHANTOM_FPS`], the phantom's nominal rate, whatever rate they are consumed at, so that
//! clip durations (`pleura run --clip-seconds`) mean the same on every machine.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};

use super::pixfmt::{PixelFormat, RawLayout};
use super::{Frame, FrameSource};
use crate::image::GreyImage;
use crate::phantom::{cohort, Clip};
use crate::tasks::{self, TaskSet, Truth};

/// The nominal frame rate of the phantom, frames per second: timestamps advance by 40 ms a
/// frame.
pub const PHANTOM_FPS: f64 = 25.0;

/// How the phantom moves through the zones of a scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scan {
    /// Frames spent on each zone (at least 1).
    pub dwell_frames: usize,
    /// Frames of cross-fade between one zone and the next (0: a cut).
    pub transition_frames: usize,
}

impl Scan {
    /// The demo's scan: each zone held for 4 s, 0.4 s of transition (at [`PHANTOM_FPS`]):
    /// long enough for the smoothing (17-frame window, 7 frames to decide) to settle first on
    /// the view and then on the task it gates.
    pub const DEMO: Scan = Scan {
        dwell_frames: 100,
        transition_frames: 10,
    };

    /// A scan with zones held for `dwell` seconds and `transition` seconds between them, at
    /// [`PHANTOM_FPS`] (rounded to whole frames; the dwell at least one frame).
    pub fn from_seconds(dwell: f64, transition: f64) -> Result<Scan> {
        for (name, v) in [("dwell", dwell), ("transition", transition)] {
            ensure!(
                v.is_finite() && (0.0..=3600.0).contains(&v),
                "phantom {name} of {v} s: expected 0 to 3600 s"
            );
        }
        Ok(Scan {
            dwell_frames: ((dwell * PHANTOM_FPS).round() as usize).max(1),
            transition_frames: (transition * PHANTOM_FPS).round() as usize,
        })
    }

    /// Back-to-back clips of `frames` frames, no transition (the phantom of earlier versions).
    pub fn clips(frames: usize) -> Scan {
        Scan {
            dwell_frames: frames.max(1),
            transition_frames: 0,
        }
    }

    fn period(&self) -> u64 {
        (self.dwell_frames + self.transition_frames) as u64
    }
}

/// Plays a synthetic scan through 8 cohort clips, `total` frames in all.
pub struct PhantomSource {
    clips: Vec<Clip>,
    /// Per clip: its ground truth for the standard tasks.
    truths: Vec<Truth>,
    scan: Scan,
    total: u64,
    seq: u64,
    width: usize,
    height: usize,
    seed: u64,
}

impl PhantomSource {
    /// A source of `total` frames of `width x height`, cycling through 8 clips of a cohort
    /// drawn from `seed` (all four label kinds appear), `frames_per_clip` frames each, back to
    /// back.
    pub fn new(
        seed: u64,
        width: usize,
        height: usize,
        frames_per_clip: usize,
        total: u64,
    ) -> Result<Self> {
        Self::with_scan(seed, width, height, Scan::clips(frames_per_clip), total)
    }

    /// A source of `total` frames that scans the zones as `scan` says.
    pub fn with_scan(
        seed: u64,
        width: usize,
        height: usize,
        scan: Scan,
        total: u64,
    ) -> Result<Self> {
        let clips = cohort(8, seed)
            .into_iter()
            .map(|c| Clip::new(c.params, width, height))
            .collect::<Result<Vec<_>>>()?;
        let standard = TaskSet::standard();
        let truths = clips
            .iter()
            .map(|c| tasks::phantom(&c.labels(), &standard))
            .collect();
        Ok(Self {
            clips,
            truths,
            scan: Scan {
                dwell_frames: scan.dwell_frames.max(1),
                ..scan
            },
            total,
            seq: 0,
            width,
            height,
            seed,
        })
    }

    /// Frame `seq` of the scan and its truth (`None` during a transition).
    fn render(&mut self, seq: u64) -> (GreyImage, Option<Truth>) {
        let period = self.scan.period();
        let (zone, offset) = ((seq / period) as usize, (seq % period) as usize);
        let n = self.clips.len();
        // Frame indices run on through the transition, so motion does not jump.
        let image = self.clips[zone % n].frame(offset);
        let dwell = self.scan.dwell_frames;
        if offset < dwell {
            return (image, Some(self.truths[zone % n].clone()));
        }
        // Cross-fade towards the next zone, which starts at its own frame 0.
        let step = offset - dwell + 1;
        let next = self.clips[(zone + 1) % n].frame(0);
        let a = step as f32 / (self.scan.transition_frames + 1) as f32;
        let pixels = image
            .pixels
            .iter()
            .zip(&next.pixels)
            .map(|(&x, &y)| ((1.0 - a) * f32::from(x) + a * f32::from(y)).round() as u8)
            .collect();
        let blended = GreyImage { pixels, ..image };
        (blended, None)
    }
}

impl FrameSource for PhantomSource {
    fn next_frame(&mut self) -> Result<Option<Frame>> {
        if self.seq >= self.total {
            return Ok(None);
        }
        let start = Instant::now();
        let (image, truth) = self.render(self.seq);
        let frame = Frame {
            seq: self.seq,
            captured_at: Instant::now(),
            capture_time: start.elapsed(),
            convert_time: None,
            image,
            truth,
            layout: RawLayout {
                format: PixelFormat::Grey,
                width: self.width,
                height: self.height,
                stride: self.width,
            },
            timestamp: Duration::from_micros(self.seq * (1e6 / PHANTOM_FPS) as u64),
            lost_before: 0,
        };
        self.seq += 1;
        Ok(Some(frame))
    }

    fn frame_size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn describe(&self) -> String {
        let scan = if self.scan.transition_frames == 0 {
            format!("{}-frame clips", self.scan.dwell_frames)
        } else {
            format!(
                "{:.1} s a zone, {:.1} s transitions",
                self.scan.dwell_frames as f64 / PHANTOM_FPS,
                self.scan.transition_frames as f64 / PHANTOM_FPS
            )
        };
        format!(
            "phantom (seed {}, {}x{}, {scan})",
            self.seed, self.width, self.height
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_dwells_then_fades_without_truth() {
        let scan = Scan {
            dwell_frames: 3,
            transition_frames: 2,
        };
        let mut source = PhantomSource::with_scan(1, 32, 32, scan, 12).unwrap();
        let mut frames = Vec::new();
        while let Some(f) = source.next_frame().unwrap() {
            frames.push(f);
        }
        assert_eq!(frames.len(), 12);
        let truth: Vec<bool> = frames.iter().map(|f| f.truth.is_some()).collect();
        let expected = [true, true, true, false, false];
        assert_eq!(truth[..5], expected);
        assert_eq!(truth[5..10], expected);
        // Nominal 25 fps timestamps.
        assert_eq!(frames[10].timestamp, Duration::from_millis(400));
        // The fade starts from zone 0 and ends near zone 1's first frame.
        let zone1 = frames[5].image.pixels.clone();
        let mid = &frames[4].image.pixels;
        let d = |a: &[u8], b: &[u8]| {
            a.iter()
                .zip(b)
                .map(|(&x, &y)| (x as i32 - y as i32).abs())
                .sum::<i32>()
        };
        assert!(d(mid, &zone1) < d(&frames[2].image.pixels, &zone1));
        assert!(Scan::from_seconds(-1.0, 0.0).is_err());
        assert_eq!(Scan::from_seconds(4.0, 0.4).unwrap(), Scan::DEMO);
        assert!(
            source.describe().contains("transitions"),
            "{}",
            source.describe()
        );
    }
}
