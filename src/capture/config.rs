//! The `[capture]` section of a run configuration: how to negotiate with a V4L2 device.

use serde::Deserialize;

use super::pixfmt::{PixelFormat, YuvRange};

/// The pixel formats tried when the configuration names none, cheapest conversion first.
pub const DEFAULT_FORMATS: [PixelFormat; 8] = [
    PixelFormat::Grey,
    PixelFormat::Yuyv,
    PixelFormat::Uyvy,
    PixelFormat::Nv12,
    PixelFormat::I420,
    PixelFormat::Bgr24,
    PixelFormat::Rgb24,
    PixelFormat::Mjpeg,
];

/// How to capture from a V4L2 device: the `[capture]` section of a run configuration.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// Pixel formats in order of preference (names such as `"YUYV"`, `"NV12"`, `"MJPEG"`).
    pub formats: Vec<PixelFormat>,
    /// Requested frame width; default: the device's current one.
    pub width: Option<u32>,
    /// Requested frame height; default: the device's current one.
    pub height: Option<u32>,
    /// Requested frame rate; default: the device's current one.
    pub fps: Option<u32>,
    /// Number of driver buffers.
    pub buffers: u32,
    /// How YUV and GREY luma maps to grey; default: what the driver reports (V4L2
    /// quantization; limited unless it says full range).
    pub yuv_range: Option<YuvRange>,
    /// A device that delivers no frame for this long has failed (no input signal, hung card).
    pub frame_timeout_ms: u64,
    /// Reopen a device that disappeared or stalled instead of ending the run.
    pub reconnect: bool,
    /// Longest wait between two reconnection attempts (the wait doubles from 100 ms).
    pub reconnect_max_backoff_ms: u64,
    /// Give up reconnecting after this long; default: never.
    pub reconnect_give_up_ms: Option<u64>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            formats: DEFAULT_FORMATS.to_vec(),
            width: None,
            height: None,
            fps: None,
            buffers: 4,
            yuv_range: None,
            frame_timeout_ms: 2000,
            reconnect: false,
            reconnect_max_backoff_ms: 5000,
            reconnect_give_up_ms: None,
        }
    }
}
