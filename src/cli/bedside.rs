//! The bedside options of `pleura run`: clips, the exam folder and the live view.

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::json;

use pleura::clip::ClipOptions;
use pleura::exam::Exam;
use pleura::pack::Pack;
use pleura::pipeline::{Observer, RunConfig};
use pleura::preprocess::Rect;
use pleura::smoothing::SmoothingConfig;

/// Clip, exam and live-view options of `pleura run`.
#[derive(Debug, clap::Args)]
pub struct BedsideArgs {
    /// Serve the live view (a page, an MJPEG stream with the decisions drawn on, /status.json,
    /// /metrics, /healthz) at ADDR: `PORT` (on 127.0.0.1), `IP:PORT` (`0.0.0.0:8080` for the
    /// network). Without a value: 127.0.0.1:8080. Needs the cargo feature `serve`.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "8080")]
    serve: Option<String>,
    /// Live view: viewers of the stream at once (default 4; more are answered 503).
    #[arg(long, value_name = "N")]
    max_viewers: Option<usize>,
    /// Live view: most frames a second drawn and encoded for the stream (default 15).
    #[arg(long, value_name = "FPS")]
    stream_fps: Option<f64>,
    /// Live view: keep serving this many seconds after the run ends (the page shows the last
    /// frame and the clips; /healthz says 503). Ctrl-C ends it early.
    #[arg(long, value_name = "SECONDS")]
    linger: Option<f64>,
    /// End a clip every SECONDS of source time and write its clip-level decisions (a
    /// `{"clip": ...}` record among the frame records).
    #[arg(long, value_name = "SECONDS")]
    clip_seconds: Option<f64>,
    /// End a clip where the source's timestamps jump by more than SECONDS (default 1 while
    /// clips are tracked).
    #[arg(long, value_name = "SECONDS")]
    clip_gap: Option<f64>,
    /// Run length, in frames, of the clip rule "N consecutive frames above the threshold"
    /// (default: each task's smoothing `consecutive`).
    #[arg(long, value_name = "N")]
    clip_run: Option<usize>,
    /// Each line on standard input (Enter) ends the clip in progress.
    #[arg(long)]
    clip_stdin: bool,
    /// Keep the exam in DIR: exam.json (every clip's decisions) and contact_sheet.png (a frame
    /// of each clip with its decisions), rewritten as each clip ends.
    #[arg(long, value_name = "DIR")]
    exam: Option<PathBuf>,
}

/// What the bedside options set up for one run.
pub struct Bedside {
    /// `Some` when the run tracks clips.
    pub clips: Option<ClipOptions>,
    exam: Option<Exam>,
    #[cfg(feature = "serve")]
    server: Option<(pleura::serve::Server, pleura::serve::LiveView)>,
    linger: Option<f64>,
}

/// Facts about the run the live view and the exam show.
// Without the live view only the exam reads them.
#[cfg_attr(not(feature = "serve"), allow(dead_code))]
pub struct RunFacts<'a> {
    /// The pack.
    pub pack: &'a Pack,
    /// The source's description.
    pub source: String,
    /// Per task, the smoothing in force.
    pub smoothing: &'a [SmoothingConfig],
    /// The crop rectangle.
    pub crop: Option<Rect>,
    /// The source's frame size.
    pub frame_size: (usize, usize),
}

impl BedsideArgs {
    /// Checks the options against `config` and starts what they ask for: the clip tracking
    /// options, the exam folder, the server (listening once this returns).
    pub fn start(&self, config: &RunConfig, facts: &RunFacts) -> Result<Bedside> {
        let serve = self.serve.is_some() || config.serve.is_some();
        if !serve
            && (self.max_viewers.is_some() || self.stream_fps.is_some() || self.linger.is_some())
        {
            bail!("--max-viewers, --stream-fps and --linger go with --serve");
        }
        let section = config.clips.clone().unwrap_or_default();
        let tracked = serve
            || self.exam.is_some()
            || self.clip_stdin
            || self.clip_seconds.is_some()
            || self.clip_gap.is_some()
            || self.clip_run.is_some()
            || config.clips.is_some();
        let clips = tracked.then(|| ClipOptions {
            seconds: self.clip_seconds.or(section.seconds),
            gap_seconds: Some(self.clip_gap.or(section.gap_seconds).unwrap_or(1.0)),
            run: self.clip_run.or(section.run),
            marks: Arc::new(AtomicU64::new(0)),
        });
        if let Some(options) = &clips {
            options.validate().context("clip options")?;
            if self.clip_stdin {
                watch_stdin(Arc::clone(&options.marks))?;
            }
        }
        let manifest = &facts.pack.manifest;
        let exam = match &self.exam {
            Some(dir) => {
                let started = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                let header = json!({
                    "pleura": env!("CARGO_PKG_VERSION"),
                    "pack": {"name": manifest.name, "description": manifest.description},
                    "source": facts.source,
                    "started_unix_s": started,
                });
                Some(Exam::new(dir, &facts.pack.tasks, header).context("--exam")?)
            }
            None => None,
        };
        Ok(Bedside {
            #[cfg(feature = "serve")]
            server: match serve {
                true => Some(self.start_server(config, facts, clips.as_ref())?),
                false => None,
            },
            #[cfg(not(feature = "serve"))]
            linger: match serve {
                true => bail!(
                    "--serve: this pleura was built without the live view (cargo feature `serve`)"
                ),
                false => None,
            },
            #[cfg(feature = "serve")]
            linger: self.linger,
            clips,
            exam,
        })
    }

    #[cfg(feature = "serve")]
    fn start_server(
        &self,
        config: &RunConfig,
        facts: &RunFacts,
        clips: Option<&ClipOptions>,
    ) -> Result<(pleura::serve::Server, pleura::serve::LiveView)> {
        use pleura::serve::{parse_addr, RunInfo, ServeConfig, Server};
        let mut serve: ServeConfig = match &config.serve {
            Some(table) => toml::Value::Table(table.clone())
                .try_into()
                .context("section [serve]")?,
            None => ServeConfig::default(),
        };
        if let Some(addr) = &self.serve {
            serve.addr = parse_addr(addr).context("--serve")?;
        }
        if let Some(n) = self.max_viewers {
            serve.max_viewers = n;
        }
        if let Some(fps) = self.stream_fps {
            serve.fps = fps;
        }
        let mut info = RunInfo::new(facts.pack, facts.source.clone(), facts.smoothing.to_vec());
        info.crop = facts.crop;
        info.frame_size = facts.frame_size;
        info.exam = self.exam.clone();
        let marks = clips.map_or_else(Default::default, |c| Arc::clone(&c.marks));
        let server = Server::start(serve, info, marks).context("--serve")?;
        let addr = server.addr();
        eprintln!("live view: http://{addr}/ (also /stream.mjpg /status.json /metrics /healthz)");
        if addr.ip().is_unspecified() {
            eprintln!(
                "live view: open to the network: http://<this board's address>:{}/",
                addr.port()
            );
        }
        let view = server.view();
        Ok((server, view))
    }
}

impl Bedside {
    /// The observers of the run.
    pub fn observers(&mut self) -> Vec<&mut dyn Observer> {
        let mut observers: Vec<&mut dyn Observer> = Vec::new();
        if let Some(exam) = &mut self.exam {
            observers.push(exam);
        }
        #[cfg(feature = "serve")]
        if let Some((_, view)) = &mut self.server {
            observers.push(view);
        }
        observers
    }

    /// After the run: lingers if asked (until `stop`), reports the stream's counters, stops
    /// the server and closes the exam (its first write error, if any).
    pub fn finish(self, stop: &AtomicBool) -> Result<()> {
        if let Some(seconds) = self.linger {
            let until = Instant::now() + Duration::from_secs_f64(seconds.clamp(0.0, 1e7));
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        #[cfg(feature = "serve")]
        if let Some((server, _)) = self.server {
            let c = server.counters();
            eprintln!(
                "live view: {} frames encoded, {} sent, {} skipped by viewers, {} viewers refused",
                c.encoded, c.sent, c.skipped, c.refused
            );
            server.shutdown();
        }
        match self.exam {
            Some(exam) => {
                let dir = exam.dir().to_path_buf();
                exam.finish()
                    .with_context(|| format!("writing the exam into {}", dir.display()))
            }
            None => Ok(()),
        }
    }
}

/// Counts each line of standard input as a clip mark (a thread left to end with the process).
fn watch_stdin(marks: Arc<AtomicU64>) -> Result<()> {
    std::thread::Builder::new()
        .name("pleura-stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                if line.is_err() {
                    break;
                }
                marks.fetch_add(1, Ordering::Relaxed);
            }
        })
        .context("starting the thread that reads clip marks from standard input")?;
    Ok(())
}
