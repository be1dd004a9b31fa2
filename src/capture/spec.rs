//! `--source` arguments: which source, and how to open it.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::config::CaptureConfig;
use super::images::ImageSequence;
use super::phantom::{PhantomSource, Scan};
use super::raw::{Converted, GreyAsRaw, RawSource};
use super::recording::{Replay, Timing};
use super::FrameSource;
use anyhow::{bail, Context, Result};

/// A parsed `--source`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// `phantom` or `phantom:SEED`: synthetic clips with ground truth.
    Phantom {
        /// Cohort seed.
        seed: u64,
    },
    /// `v4l2:/dev/videoN` or `v4l2:N`: a capture device.
    V4l2 {
        /// Device node.
        path: PathBuf,
    },
    /// `replay:DIR`: a recording made by `pleura record`, or a folder of PNG/JPEG frames.
    Replay {
        /// The folder.
        dir: PathBuf,
    },
}

impl std::str::FromStr for SourceSpec {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<SourceSpec> {
        Ok(match text.split_once(':') {
            None if text == "phantom" => SourceSpec::Phantom { seed: 0 },
            Some(("phantom", seed)) => SourceSpec::Phantom {
                seed: seed
                    .parse()
                    .with_context(|| format!("source `{text}`: seed `{seed}` is not a number"))?,
            },
            Some(("v4l2", dev)) if !dev.is_empty() => SourceSpec::V4l2 {
                path: match dev.parse::<usize>() {
                    Ok(index) => PathBuf::from(format!("/dev/video{index}")),
                    Err(_) => PathBuf::from(dev),
                },
            },
            Some(("replay", dir)) if !dir.is_empty() => SourceSpec::Replay { dir: dir.into() },
            _ => bail!(
                "source `{text}`: expected `phantom[:SEED]`, `v4l2:/dev/videoN` (or `v4l2:N`) \
                 or `replay:DIR`"
            ),
        })
    }
}

/// How to open a source (the parts that apply to its kind).
#[derive(Clone, Debug)]
pub struct SourceOptions {
    /// Phantom: frames in all.
    pub phantom_frames: u64,
    /// Phantom: how it dwells on each zone and moves to the next.
    pub phantom_scan: Scan,
    /// Phantom: frame side in pixels.
    pub phantom_size: usize,
    /// Raw sources: format negotiation, timeouts, reconnection (V4L2), luma range (also
    /// recordings).
    pub capture: CaptureConfig,
    /// Replay: recorded timing or as fast as possible.
    pub timing: Timing,
    /// Raised by Ctrl-C: ends waits (a device reconnecting).
    pub stop: Option<Arc<AtomicBool>>,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            phantom_frames: 300,
            phantom_scan: Scan::DEMO,
            phantom_size: 256,
            capture: CaptureConfig::default(),
            timing: Timing::Fast,
            stop: None,
        }
    }
}

impl SourceSpec {
    /// `true` for sources that run until stopped (a capture device).
    pub fn is_live(&self) -> bool {
        matches!(self, SourceSpec::V4l2 { .. })
    }

    /// Opens the source as grey frames.
    pub fn open(&self, options: &SourceOptions) -> Result<Box<dyn FrameSource + Send>> {
        Ok(match self {
            SourceSpec::Phantom { seed } => Box::new(open_phantom(*seed, options)?),
            SourceSpec::Replay { dir } if !Replay::is_recording(dir) => {
                Box::new(ImageSequence::open(dir)?)
            }
            _ => Box::new(Converted::new(self.open_raw(options)?)),
        })
    }

    /// Opens the source as raw buffers (what `pleura record` writes). Grey sources (the
    /// phantom, image sequences) give GREY buffers.
    pub fn open_raw(&self, options: &SourceOptions) -> Result<Box<dyn RawSource + Send>> {
        Ok(match self {
            SourceSpec::Phantom { seed } => Box::new(GreyAsRaw::new(open_phantom(*seed, options)?)),
            SourceSpec::Replay { dir } => {
                if Replay::is_recording(dir) {
                    Box::new(Replay::open(dir, options.timing)?)
                } else {
                    Box::new(GreyAsRaw::new(ImageSequence::open(dir)?))
                }
            }
            #[cfg(feature = "v4l2")]
            SourceSpec::V4l2 { path } => Box::new(super::v4l2::V4l2Source::open(
                path,
                options.capture.clone(),
                options.stop.clone(),
            )?),
            #[cfg(not(feature = "v4l2"))]
            SourceSpec::V4l2 { path } => bail!(
                "{}: this pleura was built without V4L2 capture (cargo feature `v4l2`)",
                path.display()
            ),
        })
    }
}

fn open_phantom(seed: u64, options: &SourceOptions) -> Result<PhantomSource> {
    PhantomSource::with_scan(
        seed,
        options.phantom_size,
        options.phantom_size,
        options.phantom_scan,
        options.phantom_frames,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_and_bad_ones_say_what_is_accepted() {
        let parse = |s: &str| s.parse::<SourceSpec>();
        assert_eq!(parse("phantom").unwrap(), SourceSpec::Phantom { seed: 0 });
        assert_eq!(parse("phantom:7").unwrap(), SourceSpec::Phantom { seed: 7 });
        assert_eq!(
            parse("v4l2:2").unwrap(),
            SourceSpec::V4l2 {
                path: "/dev/video2".into()
            }
        );
        assert_eq!(
            parse("v4l2:/dev/v4l/by-id/usb-card").unwrap(),
            SourceSpec::V4l2 {
                path: "/dev/v4l/by-id/usb-card".into()
            }
        );
        assert_eq!(
            parse("replay:scan1").unwrap(),
            SourceSpec::Replay {
                dir: "scan1".into()
            }
        );
        for bad in ["camera", "v4l2:", "replay:"] {
            let err = format!("{:#}", parse(bad).unwrap_err());
            assert!(
                err.contains(bad) && err.contains("v4l2:/dev/videoN"),
                "{err}"
            );
        }
        assert!(format!("{:#}", parse("phantom:x").unwrap_err()).contains("not a number"));
    }
}
