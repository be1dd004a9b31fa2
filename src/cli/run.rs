//! `pleura run`, and the source options `run`, `record` and `calibrate` share.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use pleura::capture::paced::Paced;
use pleura::capture::phantom::Scan;
use pleura::capture::pixfmt::{PixelFormat, YuvRange};
use pleura::capture::recording::Timing;
use pleura::capture::spec::{SourceOptions, SourceSpec};
use pleura::capture::FrameSource;
use pleura::engine::{Engine, EngineChoice, EngineConfig, EngineKind, TractLayout};
use pleura::pack::{Pack, Quantization};
use pleura::pipeline::{self, RunConfig, RunOptions};
use pleura::sector::parse_rect;
use pleura::tasks::TaskMode;

use super::bedside::{BedsideArgs, RunFacts};

/// Frames a phantom run processes when neither `--frames` nor the configuration says.
const PHANTOM_FRAMES: u64 = 300;

/// Where frames come from: shared by `run`, `record` and `calibrate`.
#[derive(Debug, clap::Args)]
pub struct SourceArgs {
    /// Frame source: `phantom[:SEED]`, `v4l2:/dev/videoN` (or `v4l2:N`), or `replay:DIR` (a
    /// recording of `pleura record`, or a folder of PNG/JPEG frames). Default: the
    /// configuration's `source`, else `phantom`.
    #[arg(long)]
    pub source: Option<String>,
    /// Board configuration (TOML): pack, source, [capture], [crop], [output], [smoothing.TASK].
    /// Command-line options win over it.
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// V4L2 pixel formats in order of preference, e.g. `YUYV,NV12,MJPEG`.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub formats: Option<Vec<PixelFormat>>,
    /// V4L2 frame size to ask for, e.g. `1920x1080`.
    #[arg(long, value_name = "WxH")]
    pub size: Option<String>,
    /// V4L2: reopen a device that disappears or stalls, with backoff, instead of failing.
    #[arg(long)]
    pub reconnect: bool,
    /// How YUV and GREY luma maps to grey: `limited` (video range 16-235, most capture cards)
    /// or `full`. Default: what the driver reports.
    #[arg(long, value_name = "limited|full")]
    pub yuv_range: Option<YuvRange>,
    /// Replay pacing: `fast` (as fast as taken, nothing dropped) or `recorded` (at the recorded
    /// times, dropping frames a slow consumer misses, as live).
    #[arg(long, value_name = "fast|recorded", default_value = "fast")]
    pub timing: Timing,
    /// Phantom: seconds the probe dwells on each lung zone (at the phantom's nominal 25 fps).
    #[arg(long, value_name = "SECONDS", default_value_t = 4.0)]
    pub dwell_seconds: f64,
    /// Phantom: seconds of cross-fade from one zone to the next (frames without ground truth).
    #[arg(long, value_name = "SECONDS", default_value_t = 0.4)]
    pub transition_seconds: f64,
    /// Phantom: back-to-back clips of N frames without transitions instead (the phantom of
    /// earlier versions; overrides the two options above).
    #[arg(long, value_name = "N")]
    pub clip_frames: Option<usize>,
    /// Phantom: size of synthetic frames (square).
    #[arg(long, default_value_t = 256)]
    pub phantom_size: usize,
}

impl SourceArgs {
    /// The configuration file, or an empty one.
    pub fn config(&self) -> Result<RunConfig> {
        match &self.config {
            Some(path) => RunConfig::load(path),
            None => Ok(RunConfig::default()),
        }
    }

    /// The source to open and how, the command line over `config`. `frames` (0: no limit)
    /// bounds the phantom, which otherwise never ends.
    pub fn plan(
        &self,
        config: &RunConfig,
        frames: u64,
        stop: Option<Arc<AtomicBool>>,
    ) -> Result<(SourceSpec, SourceOptions)> {
        let text = self
            .source
            .as_deref()
            .or(config.source.as_deref())
            .unwrap_or("phantom");
        let spec: SourceSpec = text.parse().context("--source")?;
        let mut capture = config.capture.clone();
        if let Some(formats) = &self.formats {
            capture.formats = formats.clone();
        }
        if let Some(size) = &self.size {
            let (w, h) = size
                .split_once(['x', 'X'])
                .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
                .with_context(|| format!("--size {size}: expected WIDTHxHEIGHT, e.g. 1920x1080"))?;
            (capture.width, capture.height) = (Some(w), Some(h));
        }
        capture.reconnect |= self.reconnect;
        if let Some(range) = self.yuv_range {
            capture.yuv_range = Some(range);
        }
        let options = SourceOptions {
            phantom_frames: if frames == 0 { u64::MAX } else { frames },
            phantom_scan: match self.clip_frames {
                Some(n) => Scan::clips(n),
                None => Scan::from_seconds(self.dwell_seconds, self.transition_seconds)
                    .context("--dwell-seconds / --transition-seconds")?,
            },
            phantom_size: self.phantom_size,
            capture,
            timing: self.timing,
            stop,
        };
        Ok((spec, options))
    }
}

/// Arguments of `pleura run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The model-pack folder. Default: the configuration's `pack`, else `models/default`.
    #[arg(long)]
    pack: Option<PathBuf>,
    #[command(flatten)]
    source: SourceArgs,
    /// Frames to process (0: until the source ends or Ctrl-C). Default: the configuration's
    /// `frames`, else 300 for the phantom and no limit for other sources.
    #[arg(long)]
    frames: Option<u64>,
    /// Run every head on every frame instead of following the view hierarchy.
    #[arg(long)]
    all_tasks: bool,
    /// Head form to run: `f32` or `int8`. Default: per task, the manifest's
    /// `tasks[i].head.quantization`.
    #[arg(long, value_name = "f32|int8")]
    heads: Option<Quantization>,
    /// Crop every frame to this rectangle first (`x,y,width,height`, from `pleura calibrate`).
    #[arg(long, value_name = "X,Y,W,H")]
    crop: Option<String>,
    /// Write the per-frame JSON lines here (replacing the file) instead of standard output
    /// (`-`: standard output, whatever the configuration says).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Write the run summary as JSON here.
    #[arg(long)]
    summary: Option<PathBuf>,
    /// Deliver source frames in real time at this rate; a slower inference then drops the
    /// older frames (counted) instead of falling behind. Default: as fast as inference takes them.
    #[arg(long, value_name = "N")]
    fps: Option<f64>,
    /// Inference engine: `tract` (default) or `ort` (ONNX Runtime; cargo feature `ort`).
    #[arg(long, value_name = "tract|ort", default_value = "tract")]
    engine: EngineKind,
    /// `--engine ort`: the libonnxruntime shared library to load (default: $ORT_DYLIB_PATH).
    #[arg(long, value_name = "PATH")]
    ort_lib: Option<PathBuf>,
    /// tract's convolution layout: `auto` (a fixed rule, the same on every run), `nhwc` or
    /// `nchw`. Default: the configuration's `tract_layout`, else `auto`.
    #[arg(long, value_name = "auto|nhwc|nchw")]
    tract_layout: Option<TractLayout>,
    #[command(flatten)]
    bedside: BedsideArgs,
}

/// Runs `pleura run`.
pub fn run(args: RunArgs) -> Result<()> {
    let config = args.source.config()?;
    let stop = super::stop_flag()?;
    let frames = args.frames.or(config.frames);
    let (spec, source_options) = args.source.plan(
        &config,
        frames.unwrap_or(PHANTOM_FRAMES),
        Some(Arc::clone(&stop)),
    )?;
    let pack_dir = args
        .pack
        .clone()
        .or(config.pack.clone())
        .unwrap_or_else(|| PathBuf::from("models/default"));
    let mut pack = Pack::load(&pack_dir)?;
    if let Some(form) = args.heads.or(config.heads) {
        pack.select_heads(form).context("--heads")?;
    }
    let smoothing = config
        .smoothing(&pack)
        .with_context(|| match &args.source.config {
            Some(path) => format!("--config {}", path.display()),
            None => "smoothing".into(),
        })?;
    let crop = match &args.crop {
        Some(text) => Some(parse_rect(text).context("--crop")?),
        None => config.crop,
    };
    let choice = EngineChoice {
        tract_layout: args
            .tract_layout
            .or(config.tract_layout)
            .unwrap_or_default(),
        ..EngineChoice::new(args.engine, args.ort_lib.clone())
    };
    let engine = Engine::with_engine(&pack, &EngineConfig::default(), &choice)?;
    let source = spec.open(&source_options)?;
    let source: Box<dyn FrameSource + Send> = match args.fps {
        Some(fps) => Box::new(Paced::new(source, fps).context("--fps")?),
        None => source,
    };
    if let Some(rect) = crop {
        let (w, h) = source.frame_size();
        if rect.x + rect.width > w || rect.y + rect.height > h {
            bail!(
                "crop {},{},{},{} does not fit the {w}x{h} frames of {} (run `pleura calibrate`)",
                rect.x,
                rect.y,
                rect.width,
                rect.height,
                source.describe()
            );
        }
    }
    let facts = RunFacts {
        pack: &pack,
        source: source.describe(),
        smoothing: &smoothing,
        crop,
        frame_size: source.frame_size(),
    };
    let mut bedside = args.bedside.start(&config, &facts)?;
    let options = RunOptions {
        mode: if args.all_tasks || config.all_tasks == Some(true) {
            TaskMode::AllTasks
        } else {
            TaskMode::Hierarchy
        },
        crop,
        smoothing,
        stop: Arc::clone(&stop),
        clips: bedside.clips.clone(),
        // The phantom's length is its frame count; other sources run until N are inferred.
        max_frames: match (&spec, frames) {
            (SourceSpec::Phantom { .. }, _) | (_, None | Some(0)) => None,
            (_, Some(n)) => Some(n),
        },
    };
    let stdout = |p: &PathBuf| p.as_os_str() == "-";
    let mut out: Box<dyn Write> = match (&args.output, &config.output.frames) {
        (Some(path), _) if !stdout(path) => Box::new(BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        (None, Some(path)) if !stdout(path) => Box::new(BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {} to append to", path.display()))?,
        )),
        _ => Box::new(BufWriter::new(io::stdout().lock())),
    };
    let outcome = pipeline::run_observed(
        source,
        &pack,
        &engine,
        &options,
        &mut out,
        &mut bedside.observers(),
    )?;
    let flushed = out.flush().context("writing frame records");
    let summary = &outcome.summary;
    eprint!("{}", summary.to_text());
    if let Some(path) = args.summary.as_ref().or(config.output.summary.as_ref()) {
        pleura::fsutil::write_atomic(path, serde_json::to_string_pretty(summary)?.as_bytes())?;
    }
    let finished = bedside.finish(&stop);
    match outcome.error {
        Some(err) => Err(err),
        None => flushed.and(finished),
    }
}
