//! Video clips (mp4, avi, mov, mpeg, gif, ...) decoded to grey frames by the `ffmpeg` program,
//! which the setup installs: one external process per clip, frames read from its raw output.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use pleura::image::GreyImage;

/// File extensions decoded as video.
pub const VIDEO_EXTENSIONS: [&str; 9] = [
    "mp4", "avi", "mov", "mpeg", "mpg", "mkv", "webm", "gif", "m4v",
];

/// The ffmpeg programs: `PLEURA_FFMPEG` / `PLEURA_FFPROBE` or `ffmpeg` / `ffprobe` on `PATH`.
fn program(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

fn spawn_error(name: &str, e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        anyhow::anyhow!(
            "`{name}` was not found: install FFmpeg (Debian/Ubuntu: `apt-get install ffmpeg`; \
             `make setup` does it) or point PLEURA_FFMPEG / PLEURA_FFPROBE at the programs"
        )
    } else {
        anyhow::anyhow!("starting `{name}`: {e}")
    }
}

/// What ffprobe says of a clip's first video stream.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VideoInfo {
    /// Frame width in pixels.
    pub width: usize,
    /// Frame height in pixels.
    pub height: usize,
    /// Frames per second (`avg_frame_rate`, else `r_frame_rate`), when the container says.
    pub fps: Option<f64>,
}

/// `"25/1"` -> 25.0; `"0/0"` and anything unparsable -> `None`.
fn rate(text: &str) -> Option<f64> {
    let (n, d) = text.split_once('/').unwrap_or((text, "1"));
    let (n, d): (f64, f64) = (n.trim().parse().ok()?, d.trim().parse().ok()?);
    (n > 0.0 && d > 0.0)
        .then(|| n / d)
        .filter(|r| r.is_finite())
}

/// Parses ffprobe's `-of json` answer for `-show_entries stream=width,height,...`. JSON rather
/// than `-of csv`: a stream with side data (MPEG-2 program streams) makes the CSV writer print
/// `370x370x`, which broke the parsing of a plain `WxH` line.
fn parse_probe(json: &str) -> Option<VideoInfo> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let stream = value.get("streams")?.as_array()?.first()?;
    let dim = |k: &str| {
        stream
            .get(k)?
            .as_u64()
            .filter(|&v| v > 0)
            .map(|v| v as usize)
    };
    let fps = ["avg_frame_rate", "r_frame_rate"]
        .iter()
        .find_map(|k| rate(stream.get(*k)?.as_str()?));
    Some(VideoInfo {
        width: dim("width")?,
        height: dim("height")?,
        fps,
    })
}

/// Size and frame rate of the first video stream of `path`.
pub fn probe(path: &Path) -> Result<VideoInfo> {
    let ffprobe = program("PLEURA_FFPROBE", "ffprobe");
    let out = Command::new(&ffprobe)
        .args(["-v", "error", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=width,height,avg_frame_rate,r_frame_rate",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .map_err(|e| spawn_error(&ffprobe, e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "{}: not a readable video ({})",
        path.display(),
        stderr.trim()
    );
    match parse_probe(&text) {
        Some(info) => Ok(info),
        None => bail!(
            "{}: no video stream found ({})",
            path.display(),
            stderr.trim()
        ),
    }
}

/// Every `stride`-th frame of the video at `path` (at most `max_frames` when given) as grey
/// images. A file ffmpeg cannot decode, or whose stream ends inside a frame, is an error naming
/// it with ffmpeg's own message.
pub fn read_frames(
    path: &Path,
    stride: usize,
    max_frames: Option<usize>,
) -> Result<(Vec<GreyImage>, VideoInfo)> {
    ensure!(stride > 0, "frame stride must be positive");
    let info = probe(path)?;
    let (width, height) = (info.width, info.height);
    let ffmpeg = program("PLEURA_FFMPEG", "ffmpeg");
    let mut child = Command::new(&ffmpeg)
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        // Every decoded frame, no duplication or dropping to a frame rate; grey bytes out.
        .args(["-map", "0:v:0", "-fps_mode", "passthrough"])
        .args(["-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(&ffmpeg, e))?;
    let mut stdout = child.stdout.take().context("ffmpeg's output pipe")?;
    let mut stderr = child.stderr.take().context("ffmpeg's error pipe")?;
    // Drain stderr on its own thread so a chatty ffmpeg never blocks on a full pipe.
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let frame_len = width * height;
    let mut frames = Vec::new();
    let mut buf = vec![0u8; frame_len];
    let mut index = 0usize;
    let mut partial = 0usize;
    loop {
        let n = read_full(&mut stdout, &mut buf)
            .with_context(|| format!("{}: reading decoded frames", path.display()))?;
        if n < frame_len {
            partial = n;
            break;
        }
        if index.is_multiple_of(stride) {
            frames.push(GreyImage::from_pixels(width, height, buf.clone())?);
            if max_frames.is_some_and(|m| frames.len() >= m) {
                break;
            }
        }
        index += 1;
    }
    drop(stdout);
    let stopped_early = max_frames.is_some_and(|m| frames.len() >= m);
    if stopped_early {
        let _ = child.kill();
    }
    let status = child.wait().context("waiting for ffmpeg")?;
    let messages = errors.join().unwrap_or_default();
    if !stopped_early {
        ensure!(
            status.success(),
            "{}: ffmpeg could not decode it: {}",
            path.display(),
            messages.trim()
        );
        ensure!(
            partial == 0,
            "{}: the stream ended inside frame {index} ({partial} of {frame_len} bytes)",
            path.display()
        );
    }
    ensure!(!frames.is_empty(), "{}: no frames decoded", path.display());
    Ok((frames, info))
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_json_with_and_without_side_data() {
        // ffprobe 5.1 on an MPEG-2 program stream with side data (its CSV said `370x370x`).
        let mpeg = r#"{"programs": [], "streams": [{"width": 370, "height": 370,
            "r_frame_rate": "25/1", "avg_frame_rate": "25/1",
            "side_data_list": [{"side_data_type": "CPB properties"}]}]}"#;
        assert_eq!(
            parse_probe(mpeg),
            Some(VideoInfo {
                width: 370,
                height: 370,
                fps: Some(25.0)
            })
        );
        let gif = r#"{"streams": [{"width": 64, "height": 48, "r_frame_rate": "100/9",
            "avg_frame_rate": "0/0"}]}"#;
        let info = parse_probe(gif).unwrap();
        assert_eq!((info.width, info.height), (64, 48));
        assert!((info.fps.unwrap() - 100.0 / 9.0).abs() < 1e-9);
        assert_eq!(parse_probe(r#"{"streams": []}"#), None);
        assert_eq!(
            parse_probe(r#"{"streams": [{"width": 0, "height": 5}]}"#),
            None
        );
        assert_eq!(parse_probe("370x370x"), None);
    }
}
