//! V4L2 capture: a capture card (or any Video4Linux device) as a [`RawSource`].
//!
//! Opening negotiates the pixel format (the first of the configured preference order that the
//! device offers), the size and the frame rate, then streams through [`stream::MmapStream`]
//! and polls with our own timeout. Sequence numbers from the driver give the frames it
//! dropped; a buffer the driver flags as corrupt becomes a bad frame. A device that disappears
//! (the card is unplugged: ENODEV) ends the stream with an error naming it, or, when
//! reconnecting is configured, is reopened with backoff without restarting the process.

pub mod devices;
pub mod stream;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use v4l::format::{Colorspace, Quantization};
use v4l::video::Capture;
use v4l::{Device, FourCC};

use self::stream::MmapStream;
use super::config::CaptureConfig;
use super::pixfmt::{PixelFormat, RawLayout, YuvRange};
use super::raw::{RawFrame, RawSource};

/// An open, streaming device.
struct Open {
    stream: MmapStream,
    range: YuvRange,
    // Dropped after the stream (fields drop in order): the stream's ioctls need the device.
    _device: Device,
    layout: RawLayout,
    card: String,
}

/// Frames from a V4L2 capture device.
pub struct V4l2Source {
    path: PathBuf,
    config: CaptureConfig,
    open: Option<Open>,
    layout: RawLayout,
    card: String,
    /// Sequence number given to the first frame of the current stream (after a reconnect the
    /// driver counts from 0 again).
    seq_base: u64,
    /// Driver sequence number of the previous frame of the current stream.
    last_driver_seq: Option<u32>,
    /// Our sequence number of the previous frame.
    last_seq: Option<u64>,
    first_timestamp: Option<Duration>,
    /// When the last frame (or the stream start) happened: the frame timeout counts from it.
    last_progress: Instant,
    reconnects: u64,
    stop: Option<Arc<AtomicBool>>,
}

/// How long one poll waits before looking at the stop flag and the frame timeout again.
const POLL_SLICE: Duration = Duration::from_millis(100);
/// First wait between reconnection attempts.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

impl V4l2Source {
    /// Opens `path` and starts streaming as `config` says. `stop`, when given, ends a
    /// reconnection wait (Ctrl-C).
    pub fn open(
        path: &Path,
        config: CaptureConfig,
        stop: Option<Arc<AtomicBool>>,
    ) -> Result<V4l2Source> {
        let open = open_device(path, &config)?;
        Ok(V4l2Source {
            path: path.to_path_buf(),
            layout: open.layout,
            card: open.card.clone(),
            config,
            open: Some(open),
            seq_base: 0,
            last_driver_seq: None,
            last_seq: None,
            first_timestamp: None,
            last_progress: Instant::now(),
            reconnects: 0,
            stop,
        })
    }

    /// Times the device was reopened after it disappeared or stalled.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    fn stopping(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    }

    /// Reopens the device with backoff; `Ok(false)` when stopped first.
    fn reconnect(&mut self, cause: &anyhow::Error) -> Result<bool> {
        self.open = None;
        log::warn!("{}: {cause:#}; reconnecting", self.path.display());
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let max = Duration::from_millis(self.config.reconnect_max_backoff_ms.max(100));
        let mut attempts = 0u64;
        loop {
            let wake = Instant::now() + backoff;
            while Instant::now() < wake {
                if self.stopping() {
                    return Ok(false);
                }
                std::thread::sleep(POLL_SLICE.min(wake - Instant::now()));
            }
            attempts += 1;
            match open_device(&self.path, &self.config) {
                Ok(open) => {
                    if open.layout != self.layout {
                        log::warn!(
                            "{}: reopened with {:?} (was {:?})",
                            self.path.display(),
                            open.layout,
                            self.layout
                        );
                    }
                    log::warn!(
                        "{}: reconnected after {attempts} attempt(s), {:.1} s",
                        self.path.display(),
                        started.elapsed().as_secs_f64()
                    );
                    self.layout = open.layout;
                    self.open = Some(open);
                    self.seq_base = self.last_seq.map_or(0, |s| s + 1);
                    self.last_driver_seq = None;
                    self.last_progress = Instant::now();
                    self.reconnects += 1;
                    return Ok(true);
                }
                Err(err) => {
                    if attempts == 1 || attempts.is_power_of_two() {
                        log::info!(
                            "{}: still unavailable after {attempts} attempt(s): {err:#}",
                            self.path.display()
                        );
                    }
                    if let Some(limit) = self.config.reconnect_give_up_ms {
                        if started.elapsed() >= Duration::from_millis(limit) {
                            return Err(err.context(format!(
                                "{}: gave up reconnecting after {:.1} s",
                                self.path.display(),
                                started.elapsed().as_secs_f64()
                            )));
                        }
                    }
                }
            }
            backoff = (backoff * 2).min(max);
        }
    }
}

impl RawSource for V4l2Source {
    fn next_raw(&mut self) -> Result<Option<RawFrame<'_>>> {
        let timeout = Duration::from_millis(self.config.frame_timeout_ms.max(1));
        loop {
            if self.stopping() {
                return Ok(None);
            }
            let failure = match &mut self.open {
                None => anyhow!("the device is closed"),
                Some(open) => match open.stream.next(POLL_SLICE) {
                    Ok(true) => break,
                    Ok(false) if self.last_progress.elapsed() < timeout => continue,
                    Ok(false) => anyhow!(
                        "no frame for {:.1} s (no input signal, or the device hung)",
                        timeout.as_secs_f64()
                    ),
                    Err(err) => describe_io_error(err),
                },
            };
            if !self.config.reconnect {
                return Err(failure.context(format!("capturing from {}", self.path.display())));
            }
            if !self.reconnect(&failure)? {
                return Ok(None);
            }
        }
        let Some(open) = self.open.as_ref() else {
            bail!("{}: the device closed", self.path.display());
        };
        let frame = open
            .stream
            .current()
            .ok_or_else(|| anyhow!("{}: the dequeued buffer vanished", self.path.display()))?;
        let captured_at = Instant::now();
        self.last_progress = captured_at;
        let lost_before = match self.last_driver_seq {
            Some(last) if frame.sequence > last => u64::from(frame.sequence - last - 1),
            _ => 0,
        };
        self.last_driver_seq = Some(frame.sequence);
        // Our numbers never go back, whatever the driver does (a restart, a wrap-around).
        let mut seq = self.seq_base + u64::from(frame.sequence);
        if let Some(last) = self.last_seq {
            if seq <= last {
                self.seq_base += last + 1 - seq;
                seq = last + 1;
            }
        }
        self.last_seq = Some(seq);
        let first = *self.first_timestamp.get_or_insert(frame.timestamp);
        Ok(Some(RawFrame {
            seq,
            lost_before,
            timestamp: frame.timestamp.saturating_sub(first),
            captured_at,
            layout: open.layout,
            data: frame.data,
            corrupt: frame.corrupt,
            range: open.range,
            truth: None,
        }))
    }

    fn layout(&self) -> RawLayout {
        self.layout
    }

    fn reconnects(&self) -> u64 {
        self.reconnects
    }

    fn describe(&self) -> String {
        let l = &self.layout;
        let range = match &self.open {
            Some(open) if l.format.is_luma() => format!(", {} range", open.range),
            _ => String::new(),
        };
        format!(
            "v4l2 {} ({}, {} {}x{}{range})",
            self.path.display(),
            self.card,
            l.format,
            l.width,
            l.height
        )
    }

    fn real_time(&self) -> bool {
        true
    }
}

/// Names the usual capture errors in words a device engineer acts on.
fn describe_io_error(err: std::io::Error) -> anyhow::Error {
    let hint = match err.raw_os_error() {
        Some(libc::ENODEV) | Some(libc::ENXIO) => "the device is gone (capture card unplugged?)",
        Some(libc::EIO) => "I/O error (the card lost its input or failed)",
        Some(libc::EPIPE) => "the stream broke (input format changed?)",
        _ => "capture failed",
    };
    anyhow!(err).context(hint)
}

fn open_device(path: &Path, config: &CaptureConfig) -> Result<Open> {
    let device = Device::with_path(path).map_err(|e| {
        let hint = match e.raw_os_error() {
            Some(libc::ENOENT) => {
                " (no such device: is the capture card plugged in? `pleura devices` lists them)"
            }
            Some(libc::EACCES) => " (permission denied: add the user to the `video` group)",
            Some(libc::EBUSY) => " (the device is busy: another program is capturing)",
            _ => "",
        };
        anyhow!(e).context(format!("opening {}{hint}", path.display()))
    })?;
    let name = path.display();
    let caps = device
        .query_caps()
        .with_context(|| format!("{name}: querying capabilities (is it a V4L2 device?)"))?;
    if !caps
        .capabilities
        .contains(v4l::capability::Flags::VIDEO_CAPTURE)
    {
        bail!(
            "{name} ({}) is not a single-planar video capture device (capabilities: {})",
            caps.card,
            caps.capabilities
        );
    }
    let offered: Vec<FourCC> = device
        .enum_formats()
        .with_context(|| format!("{name}: listing pixel formats"))?
        .into_iter()
        .map(|d| d.fourcc)
        .collect();
    let format = config
        .formats
        .iter()
        .copied()
        .find(|f| offered.contains(&FourCC::new(&f.fourcc())))
        .ok_or_else(|| {
            anyhow!(
                "{name} offers {} and none is in the preference list {}",
                fourcc_list(&offered),
                config
                    .formats
                    .iter()
                    .map(|f| f.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    let current = device
        .format()
        .with_context(|| format!("{name}: reading the current format"))?;
    // A fresh request: stride and size left at 0 for the driver to fill in (copying the current
    // format would send the old format's stride and size).
    let mut request = current;
    request.width = config.width.unwrap_or(current.width);
    request.height = config.height.unwrap_or(current.height);
    request.fourcc = FourCC::new(&format.fourcc());
    request.stride = 0;
    request.size = 0;
    // Colour description too: the driver fills in the one its format uses.
    request.colorspace = Colorspace::Default;
    request.quantization = Quantization::Default;
    request.transfer = v4l::format::TransferFunction::Default;
    let granted = device.set_format(&request).with_context(|| {
        format!(
            "{name}: setting {format} {}x{}",
            request.width, request.height
        )
    })?;
    if granted.fourcc != request.fourcc {
        bail!(
            "{name}: asked for {format}, the driver set {}",
            fourcc_list(&[granted.fourcc])
        );
    }
    if (config.width.is_some() || config.height.is_some())
        && (granted.width, granted.height) != (request.width, request.height)
    {
        log::warn!(
            "{name}: asked for {}x{}, the driver set {}x{}",
            request.width,
            request.height,
            granted.width,
            granted.height
        );
    }
    if let Some(fps) = config.fps {
        match device.set_params(&v4l::video::capture::Parameters::with_fps(fps)) {
            Ok(p) if p.interval.numerator > 0 => {
                let got = p.interval.denominator as f64 / p.interval.numerator as f64;
                if (got - fps as f64).abs() > 0.5 {
                    log::warn!("{name}: asked for {fps} fps, the driver set {got:.2}");
                }
            }
            Ok(_) => {}
            Err(e) => log::warn!("{name}: setting {fps} fps failed ({e}); using the device's rate"),
        }
    }
    let stride = if format == PixelFormat::Mjpeg {
        0
    } else {
        granted.stride as usize
    };
    let layout = RawLayout::new(
        format,
        granted.width as usize,
        granted.height as usize,
        stride,
    )
    .with_context(|| format!("{name}: the format the driver set"))?;
    // The driver's quantization; its default is limited range for YUV (V4L2's rule) and full
    // range for GREY (what vivid, the reference driver, sends while reporting the default).
    let range = config.yuv_range.unwrap_or(match granted.quantization {
        Quantization::FullRange => YuvRange::Full,
        Quantization::LimitedRange => YuvRange::Limited,
        Quantization::Default if matches!(granted.colorspace, Colorspace::JPEG) => YuvRange::Full,
        Quantization::Default if format == PixelFormat::Grey => YuvRange::Full,
        Quantization::Default => YuvRange::Limited,
    });
    let stream = MmapStream::start(&device, config.buffers.max(2))
        .map_err(describe_io_error)
        .with_context(|| format!("{name}: starting the stream"))?;
    Ok(Open {
        stream,
        range,
        _device: device,
        layout,
        card: caps.card,
    })
}

/// `YUYV, MJPG` for messages.
pub fn fourcc_list(codes: &[FourCC]) -> String {
    codes
        .iter()
        .map(|c| {
            c.str()
                .map_or_else(|_| format!("{:?}", c.repr), str::to_string)
        })
        .collect::<Vec<_>>()
        .join(", ")
}
