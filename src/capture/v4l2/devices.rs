//! `pleura devices`: the V4L2 devices of this machine, their formats, sizes and frame rates.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::video::Capture;
use v4l::{Device, FourCC};

use super::fourcc_list;
use crate::capture::pixfmt::PixelFormat;

/// One device node.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceInfo {
    /// Device node, e.g. `/dev/video0`.
    pub path: PathBuf,
    /// Card name reported by the driver.
    pub card: String,
    /// Driver name.
    pub driver: String,
    /// Bus the card sits on.
    pub bus: String,
    /// The node captures video (metadata and output nodes do not).
    pub capture: bool,
    /// Pixel formats offered for capture.
    pub formats: Vec<FormatInfo>,
}

/// One pixel format of a device.
#[derive(Clone, Debug, Serialize)]
pub struct FormatInfo {
    /// Four-character code, e.g. `YUYV`.
    pub fourcc: String,
    /// The driver's description.
    pub description: String,
    /// Our name for it when pleura can convert it.
    pub pleura: Option<PixelFormat>,
    /// Frame sizes: `640x480`, or a range `16x16..1920x1080 step 2x2`, each with its rates.
    pub sizes: Vec<SizeInfo>,
}

/// A frame size and its frame rates.
#[derive(Clone, Debug, Serialize)]
pub struct SizeInfo {
    /// `WIDTHxHEIGHT` or a stepwise range.
    pub size: String,
    /// Frame rates in frames per second (`30`, `29.97`, or a range), when the driver lists them.
    pub fps: Vec<String>,
}

/// The device nodes under /dev, sorted by number.
pub fn nodes() -> Vec<PathBuf> {
    let mut nodes: Vec<(usize, PathBuf)> = v4l::context::enum_devices()
        .into_iter()
        .map(|n| (n.index(), n.path().to_path_buf()))
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, p)| p).collect()
}

/// Describes the device at `path`.
pub fn describe(path: &Path) -> Result<DeviceInfo> {
    let device = Device::with_path(path).with_context(|| format!("opening {}", path.display()))?;
    let caps = device
        .query_caps()
        .with_context(|| format!("{}: querying capabilities", path.display()))?;
    let capture = caps
        .capabilities
        .contains(v4l::capability::Flags::VIDEO_CAPTURE);
    let mut formats = Vec::new();
    if capture {
        let descriptions = device
            .enum_formats()
            .with_context(|| format!("{}: listing formats", path.display()))?;
        for d in descriptions {
            formats.push(FormatInfo {
                fourcc: fourcc_list(&[d.fourcc]),
                description: d.description,
                pleura: PixelFormat::from_fourcc(d.fourcc.repr),
                sizes: sizes(&device, d.fourcc),
            });
        }
    }
    Ok(DeviceInfo {
        path: path.to_path_buf(),
        card: caps.card,
        driver: caps.driver,
        bus: caps.bus,
        capture,
        formats,
    })
}

fn sizes(device: &Device, fourcc: FourCC) -> Vec<SizeInfo> {
    let Ok(sizes) = device.enum_framesizes(fourcc) else {
        return Vec::new();
    };
    sizes
        .into_iter()
        .map(|s| match s.size {
            FrameSizeEnum::Discrete(d) => SizeInfo {
                size: format!("{}x{}", d.width, d.height),
                fps: rates(device, fourcc, d.width, d.height),
            },
            FrameSizeEnum::Stepwise(s) => SizeInfo {
                size: format!(
                    "{}x{}..{}x{} step {}x{}",
                    s.min_width,
                    s.min_height,
                    s.max_width,
                    s.max_height,
                    s.step_width,
                    s.step_height
                ),
                fps: rates(device, fourcc, s.max_width, s.max_height),
            },
        })
        .collect()
}

fn rates(device: &Device, fourcc: FourCC, width: u32, height: u32) -> Vec<String> {
    let fps = |n: u32, d: u32| {
        if n == 0 {
            "?".to_string()
        } else {
            let v = d as f64 / n as f64;
            if (v - v.round()).abs() < 1e-6 {
                format!("{}", v.round())
            } else {
                format!("{v:.2}")
            }
        }
    };
    device
        .enum_frameintervals(fourcc, width, height)
        .unwrap_or_default()
        .into_iter()
        .map(|i| match i.interval {
            FrameIntervalEnum::Discrete(f) => fps(f.numerator, f.denominator),
            // The longest interval is the lowest rate.
            FrameIntervalEnum::Stepwise(s) => format!(
                "{}..{}",
                fps(s.max.numerator, s.max.denominator),
                fps(s.min.numerator, s.min.denominator)
            ),
        })
        .collect()
}

/// The listing as text.
pub fn to_text(devices: &[Result<DeviceInfo>]) -> String {
    let mut out = String::new();
    if devices.is_empty() {
        out.push_str(
            "no V4L2 devices (/dev/video*): plug in the capture card; on a VM or container, \
             check that /dev is shared and the driver is loaded (lsmod | grep -i video)\n",
        );
    }
    for device in devices {
        let d = match device {
            Ok(d) => d,
            Err(err) => {
                let _ = writeln!(out, "{err:#}");
                continue;
            }
        };
        let _ = writeln!(
            out,
            "{}  {} (driver {}, {}){}",
            d.path.display(),
            d.card,
            d.driver,
            d.bus,
            if d.capture {
                ""
            } else {
                "  [not a capture node]"
            }
        );
        for f in &d.formats {
            let _ = writeln!(
                out,
                "  {:<4}  {:<28} {}",
                f.fourcc,
                f.description,
                match f.pleura {
                    Some(p) => format!("-> pleura {p}"),
                    None => "(not supported by pleura)".into(),
                }
            );
            for s in &f.sizes {
                let _ = writeln!(
                    out,
                    "        {:<28} {}",
                    s.size,
                    if s.fps.is_empty() {
                        String::new()
                    } else {
                        format!("{} fps", s.fps.join(", "))
                    }
                );
            }
        }
    }
    out
}
