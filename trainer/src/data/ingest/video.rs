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

/// Width and height of the first video stream of `path`.
pub fn probe_size(path: &Path) -> Result<(usize, usize)> {
    let ffprobe = program("PLEURA_FFPROBE", "ffprobe");
    let out = Command::new(&ffprobe)
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=width,height", "-of", "csv=p=0:s=x"])
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
    let line = text.lines().next().unwrap_or("").trim();
    let parsed = line
        .split_once('x')
        .and_then(|(w, h)| Some((w.trim().parse().ok()?, h.trim().parse().ok()?)));
    match parsed {
        Some((w, h)) if w > 0 && h > 0 => Ok((w, h)),
        _ => bail!(
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
) -> Result<Vec<GreyImage>> {
    ensure!(stride > 0, "frame stride must be positive");
    let (width, height) = probe_size(path)?;
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
    Ok(frames)
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
