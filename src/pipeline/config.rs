//! The run configuration file (`pleura run --config FILE.toml`): a board's settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::capture::config::CaptureConfig;
use crate::engine::TractLayout;
use crate::pack::{Pack, Quantization};
use crate::preprocess::Rect;
use crate::smoothing::SmoothingConfig;

/// The TOML file of `pleura run --config`: every section and field is optional, and a
/// command-line option given as well wins. Relative paths are relative to the file's folder.
///
/// ```toml
/// pack = "/opt/pleura/pack"
/// source = "v4l2:/dev/video0"
/// heads = "f32"                 # or "int8"
/// frames = 0                    # 0: until stopped
/// tract_layout = "auto"         # or "nhwc" / "nchw" (auto: a fixed rule, see `pleura bench`)
///
/// [capture]                     # V4L2 negotiation (see `pleura devices`)
/// formats = ["YUYV", "NV12", "MJPEG"]
/// width = 1920
/// height = 1080
/// fps = 30
/// yuv_range = "limited"         # or "full"
/// frame_timeout_ms = 2000
/// reconnect = true
///
/// [crop]                        # from `pleura calibrate`
/// x = 412
/// y = 96
/// width = 1024
/// height = 860
///
/// [output]
/// frames = "-"                  # "-": standard output (the journal); a path is appended to
/// summary = "/var/lib/pleura/summary.json"
///
/// [smoothing.view]              # fields override the pack's smoothing of task `view`
/// window = 9
/// consecutive = 5
///
/// [clips]                       # cut the stream into clips (see `pleura::clip`)
/// seconds = 6                   # a clip every 6 s of source time
/// gap_seconds = 1               # and where the source's timestamps jump by more
///
/// [serve]                       # the live view (cargo feature `serve`; `pleura::serve`)
/// addr = "0.0.0.0:8080"         # default 127.0.0.1:8080: this machine only
/// max_viewers = 4
/// fps = 15
/// ```
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// The model-pack folder.
    pub pack: Option<PathBuf>,
    /// The frame source, as `--source`.
    pub source: Option<String>,
    /// Head form, as `--heads`.
    pub heads: Option<Quantization>,
    /// Frames to process; 0 means until the source ends or the run is stopped.
    pub frames: Option<u64>,
    /// Run every head on every frame, as `--all-tasks`.
    pub all_tasks: Option<bool>,
    /// tract's convolution layout, as `--tract-layout`.
    pub tract_layout: Option<TractLayout>,
    /// Capture settings of raw sources.
    pub capture: CaptureConfig,
    /// The region of the captured frame holding the ultrasound image.
    pub crop: Option<Rect>,
    /// Where records and the summary go.
    pub output: OutputConfig,
    /// Per task name: fields of [`SmoothingConfig`] that replace the pack's values.
    pub smoothing: BTreeMap<String, toml::Table>,
    /// Where clips end; present: clips are tracked.
    pub clips: Option<ClipsConfig>,
    /// The live view's settings (`ServeConfig` of the `serve` feature), checked by the
    /// command line; present: the live view is served.
    pub serve: Option<toml::Table>,
}

/// The `[clips]` section (see [`crate::clip::ClipOptions`]).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClipsConfig {
    /// End a clip once it spans this many seconds of source time.
    pub seconds: Option<f64>,
    /// End a clip where the source's timestamps jump by more than this many seconds.
    pub gap_seconds: Option<f64>,
    /// Run length of the clip rule, in frames (default: each task's smoothing `consecutive`).
    pub run: Option<usize>,
}

/// The `[output]` section.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputConfig {
    /// Per-frame JSON lines: `-` for standard output, or a file appended to.
    pub frames: Option<PathBuf>,
    /// The run summary (JSON), written when the run ends.
    pub summary: Option<PathBuf>,
}

impl RunConfig {
    /// Reads a run configuration file.
    pub fn load(path: &Path) -> Result<RunConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut config: RunConfig =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() && p.as_os_str() != "-" {
                *p = base.join(&*p);
            }
        };
        config.pack.as_mut().map(resolve);
        config.output.frames.as_mut().map(resolve);
        config.output.summary.as_mut().map(resolve);
        if let Some(source) = &mut config.source {
            if let Some(dir) = source.strip_prefix("replay:") {
                let mut dir = PathBuf::from(dir);
                resolve(&mut dir);
                *source = format!("replay:{}", dir.display());
            }
        }
        Ok(config)
    }

    /// Per task of `pack` (manifest order): its smoothing with this file's overrides applied.
    /// A section naming no task of the pack is an error.
    pub fn smoothing(&self, pack: &Pack) -> Result<Vec<SmoothingConfig>> {
        let tasks = &pack.manifest.tasks;
        for name in self.smoothing.keys() {
            if !tasks.iter().any(|t| &t.name == name) {
                let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
                bail!(
                    "section [smoothing.{name}]: the pack has no task `{name}` (tasks: {})",
                    names.join(", ")
                );
            }
        }
        tasks
            .iter()
            .zip(&pack.smoothing)
            .map(|(task, base)| match self.smoothing.get(&task.name) {
                Some(overrides) => base
                    .with_overrides(overrides)
                    .with_context(|| format!("section [smoothing.{}]", task.name)),
                None => Ok(base.clone()),
            })
            .collect()
    }
}
