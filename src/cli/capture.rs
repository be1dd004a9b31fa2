//! `pleura devices`, `pleura calibrate` and `pleura record`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::run::SourceArgs;
use pleura::capture::recording::Recorder;
use pleura::capture::BadFrame;
use pleura::image::GreyImage;
use pleura::preprocess::Rect;

/// Arguments of `pleura devices`.
#[derive(Debug, clap::Args)]
pub struct DevicesArgs {
    /// Only this device (`/dev/videoN` or `N`); default: every /dev/video* node.
    device: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Lists the V4L2 devices.
#[cfg(feature = "v4l2")]
pub fn devices(args: DevicesArgs) -> Result<()> {
    use pleura::capture::spec::SourceSpec;
    use pleura::capture::v4l2::devices;
    let paths = match &args.device {
        Some(dev) => match format!("v4l2:{dev}").parse::<SourceSpec>()? {
            SourceSpec::V4l2 { path } => vec![path],
            _ => unreachable!("a v4l2: spec parses as V4l2"),
        },
        None => devices::nodes(),
    };
    let found: Vec<Result<devices::DeviceInfo>> =
        paths.iter().map(|p| devices::describe(p)).collect();
    if args.json {
        let list: Vec<serde_json::Value> = found
            .iter()
            .map(|d| match d {
                Ok(d) => serde_json::to_value(d).unwrap_or_default(),
                Err(e) => serde_json::json!({ "error": format!("{e:#}") }),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        print!("{}", devices::to_text(&found));
    }
    if args.device.is_some() {
        if let Some(Err(err)) = found.into_iter().next() {
            return Err(err);
        }
    }
    Ok(())
}

/// Lists the V4L2 devices (this build has no V4L2 support).
#[cfg(not(feature = "v4l2"))]
pub fn devices(_args: DevicesArgs) -> Result<()> {
    bail!("this pleura was built without V4L2 capture (cargo feature `v4l2`)")
}

/// Arguments of `pleura calibrate`.
#[derive(Debug, clap::Args)]
pub struct CalibrateArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Frames to look at (a few seconds of scanning: the sector is where the image moves).
    #[arg(long, default_value_t = 60)]
    frames: u64,
    /// Also write the mean frame with the proposed rectangle drawn on it (PNG).
    #[arg(long, value_name = "FILE.png")]
    preview: Option<PathBuf>,
}

/// Proposes a crop rectangle: the moving, bright area of the source's frames.
pub fn calibrate(args: CalibrateArgs) -> Result<()> {
    let config = args.source.config()?;
    let stop = super::stop_flag()?;
    let (spec, options) = args
        .source
        .plan(&config, args.frames, Some(Arc::clone(&stop)))?;
    let mut source = spec.open(&options)?;
    let description = source.describe();
    let mut frames: Vec<GreyImage> = Vec::new();
    let mut bad = 0u64;
    while (frames.len() as u64) < args.frames && !stop.load(Ordering::Relaxed) {
        match source.next_frame() {
            Ok(Some(frame)) => frames.push(frame.image),
            Ok(None) => break,
            Err(err) if err.downcast_ref::<BadFrame>().is_some() => {
                bad += 1;
                log::warn!("{description}: {err:#}");
            }
            Err(err) => return Err(err.context(format!("reading {description}"))),
        }
    }
    let Some(first) = frames.first() else {
        bail!("{description}: no frame to calibrate on ({bad} bad)");
    };
    let (w, h) = (first.width, first.height);
    frames.retain(|f| (f.width, f.height) == (w, h));
    let rect = pleura::sector::detect_sector(&frames).with_context(|| {
        format!("{description}: the frames are blank: no image area found (is the scanner's output live?)")
    })?;
    println!(
        "# pleura calibrate: {} frames of {description}, {w}x{h}{}",
        frames.len(),
        if bad > 0 {
            format!(" ({bad} bad skipped)")
        } else {
            String::new()
        }
    );
    if frames.len() < 2 {
        println!("# one frame only: the largest bright area (no motion to go by)");
    }
    println!(
        "# use it with `pleura run --crop {},{},{},{}` or in the board configuration:",
        rect.x, rect.y, rect.width, rect.height
    );
    println!(
        "[crop]\nx = {}\ny = {}\nwidth = {}\nheight = {}",
        rect.x, rect.y, rect.width, rect.height
    );
    if let Some(path) = &args.preview {
        pleura::image::write_png(&preview(&frames, rect), path)?;
        eprintln!("preview: {}", path.display());
    }
    Ok(())
}

/// The mean of `frames` with `rect` outlined in white (2 px).
fn preview(frames: &[GreyImage], rect: Rect) -> GreyImage {
    let (w, h) = (frames[0].width, frames[0].height);
    let mut sum = vec![0u32; w * h];
    for f in frames {
        sum.iter_mut()
            .zip(&f.pixels)
            .for_each(|(s, &p)| *s += u32::from(p));
    }
    let n = frames.len() as u32;
    let mut pixels: Vec<u8> = sum.iter().map(|s| ((s + n / 2) / n) as u8).collect();
    let (x1, y1) = (rect.x + rect.width - 1, rect.y + rect.height - 1);
    for y in rect.y..=y1 {
        for x in rect.x..=x1 {
            let edge = x < rect.x + 2 || x + 2 > x1 || y < rect.y + 2 || y + 2 > y1;
            if edge {
                pixels[y * w + x] = 255;
            }
        }
    }
    GreyImage {
        width: w,
        height: h,
        pixels,
    }
}

/// Arguments of `pleura record`.
#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Folder to write (created; it must not hold a recording already).
    #[arg(long)]
    out: PathBuf,
    /// Frames to record (0: until the source ends or Ctrl-C).
    #[arg(long, default_value_t = 300)]
    frames: u64,
}

/// Records raw frames.
pub fn record(args: RecordArgs) -> Result<()> {
    let config = args.source.config()?;
    let stop = super::stop_flag()?;
    let (spec, options) = args
        .source
        .plan(&config, args.frames, Some(Arc::clone(&stop)))?;
    let mut source = spec.open_raw(&options)?;
    let description = source.describe();
    let mut recorder = Recorder::create(&args.out, &description)?;
    let started = Instant::now();
    let mut corrupt = 0u64;
    let mut last_report = Instant::now();
    while (args.frames == 0 || recorder.frames() < args.frames) && !stop.load(Ordering::Relaxed) {
        let frame = match source.next_raw() {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(err) if err.downcast_ref::<BadFrame>().is_some() => {
                log::warn!("{description}: {err:#}");
                continue;
            }
            Err(err) => {
                // What was recorded stays usable: close it properly, then report.
                let info = recorder.finish()?;
                return Err(err.context(format!(
                    "recording {description} stopped after {} frames (kept in {})",
                    info.frames,
                    args.out.display()
                )));
            }
        };
        corrupt += u64::from(frame.corrupt);
        recorder.write(&frame)?;
        if last_report.elapsed().as_secs() >= 5 {
            eprintln!(
                "recorded {} frames in {:.0} s",
                recorder.frames(),
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
    let info = recorder.finish()?;
    eprintln!(
        "recorded {} frames of {description} to {} in {:.1} s ({} lost by the source, {corrupt} flagged corrupt)",
        info.frames,
        args.out.display(),
        started.elapsed().as_secs_f64(),
        info.lost
    );
    Ok(())
}
