//! The live view of `pleura run --serve ADDR` (cargo feature `serve`): a small HTTP server on
//! threads of its own, fed by a [`LiveView`] observer of the run.
//!
//! | path | what |
//! |---|---|
//! | `/` | one HTML page (no build step, no external asset): the stream and each task's state |
//! | `/stream.mjpg` | multipart MJPEG: the frames as captured, with the crop rectangle, each task's smoothed probability as a bar, its decision or why there is none, fps and latency |
//! | `/status.json` | the latest frame's decisions per task, the clip in progress and the last clips, fps, per-stage p50/p99, counts, uptime, pack and version |
//! | `/metrics` | Prometheus text: counters (frames, dropped, lost, bad, reconnects, clips, stream), gauges, per-stage latency histograms |
//! | `/healthz` | 200 while frames flow; 503 when none came for `stall_seconds`, or the run is over |
//! | `POST /clip` | ends the clip in progress (before the next frame) |
//!
//! ```text
//! run (inference thread) --LiveView::frame: one short lock--> status  <-- HTTP thread (tiny_http)
//!                        --only when a viewer waits--> encoder thread --> viewer threads
//! ```
//!
//! Inference never waits on the server: the observer updates the status under a lock held for
//! microseconds and hands the stream a copy of the frame only while a viewer is waiting for one
//! (see [`stream`] for how slow viewers skip frames, counted). Requests are parsed by
//! `tiny_http`; JPEGs are made by `jpeg-encoder` (pure Rust).

mod http;
mod metrics;
mod state;
mod stream;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{anyhow, ensure, Context, Result};
use serde::Deserialize;

use crate::pack::Pack;
use crate::preprocess::Rect;
use crate::smoothing::SmoothingConfig;
use crate::tasks::TaskSet;

pub use state::LiveView;
pub use stream::StreamCounters;

/// Settings of the live view (`[serve]` of a board configuration; `--serve` and friends).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// Address to listen on. Default `127.0.0.1:8080` (this machine only); `0.0.0.0:8080`
    /// opens it to the network.
    pub addr: SocketAddr,
    /// Viewers of the stream at once; more are answered 503. Default 4.
    pub max_viewers: usize,
    /// Most frames a second drawn and encoded for the stream. Default 15.
    pub fps: f64,
    /// Streamed frames are reduced by an integer factor until their longer side is at most
    /// this (small frames are enlarged to at least 480). Default 960.
    pub max_side: usize,
    /// JPEG quality, 1-100. Default 80.
    pub quality: u8,
    /// `/healthz` says 503 after this many seconds without a frame. Default 2.
    pub stall_seconds: f64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            max_viewers: 4,
            fps: 15.0,
            max_side: 960,
            quality: 80,
            stall_seconds: 2.0,
        }
    }
}

impl ServeConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        ensure!(self.max_viewers >= 1, "`max_viewers` must be at least 1");
        ensure!(
            self.fps.is_finite() && self.fps > 0.0 && self.fps <= 120.0,
            "`fps` of the stream must lie in (0, 120], not {}",
            self.fps
        );
        ensure!(self.max_side >= 64, "`max_side` must be at least 64 pixels");
        ensure!(
            (1..=100).contains(&self.quality),
            "`quality` must lie in 1..=100, not {}",
            self.quality
        );
        ensure!(
            self.stall_seconds.is_finite() && self.stall_seconds > 0.0,
            "`stall_seconds` must be above 0"
        );
        Ok(())
    }
}

/// Parses `--serve`'s value: `PORT` (on 127.0.0.1), `HOST:PORT`, or `[IPv6]:PORT`.
pub fn parse_addr(text: &str) -> Result<SocketAddr> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    text.parse().map_err(|_| {
        anyhow!("`{text}`: expected PORT, IP:PORT or [IPv6]:PORT, e.g. 8080 or 0.0.0.0:8080")
    })
}

/// What the server says about the run: fixed for its length.
#[derive(Clone, Debug)]
pub struct RunInfo {
    /// Version of pleura.
    pub version: String,
    /// The pack's name.
    pub pack_name: String,
    /// A short id of the pack: the first 12 hex digits of its backbone's sha256.
    pub pack_id: String,
    /// The pack's description (what it must not be used for).
    pub pack_description: String,
    /// The source's description.
    pub source: String,
    /// The tasks, gating tasks first.
    pub tasks: TaskSet,
    /// Per task: its smoothing (the bars tick its bounds).
    pub smoothing: Vec<SmoothingConfig>,
    /// The crop rectangle in source pixels.
    pub crop: Option<Rect>,
    /// `(width, height)` of the source's frames.
    pub frame_size: (usize, usize),
    /// The exam folder, if the run keeps one.
    pub exam: Option<PathBuf>,
}

impl RunInfo {
    /// The fixed facts of a run of `pack` on a source described as `source`.
    pub fn new(pack: &Pack, source: String, smoothing: Vec<SmoothingConfig>) -> RunInfo {
        let manifest = &pack.manifest;
        RunInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pack_name: manifest.name.clone(),
            pack_id: manifest.backbone.model.sha256.chars().take(12).collect(),
            pack_description: manifest.description.clone(),
            source,
            tasks: pack.tasks.clone(),
            smoothing,
            crop: None,
            frame_size: (0, 0),
            exam: None,
        }
    }
}

/// The running server. Dropping it (or [`Server::shutdown`]) stops it.
pub struct Server {
    shared: Arc<Shared>,
    addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
}

use state::Shared;

impl Server {
    /// Binds `config.addr` and starts the HTTP and encoder threads. `marks` is incremented by
    /// `POST /clip` (give the run's [`crate::clip::ClipOptions::marks`]).
    pub fn start(config: ServeConfig, info: RunInfo, marks: Arc<AtomicU64>) -> Result<Server> {
        config.validate().context("live view settings")?;
        let http = tiny_http::Server::http(config.addr)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("listening on {}", config.addr))?;
        let addr = http
            .server_addr()
            .to_ip()
            .with_context(|| format!("{}: not an IP address", config.addr))?;
        let now = Instant::now();
        let shared = Arc::new(Shared {
            status: Mutex::new(state::Status::new(info.tasks.len())),
            stream: Mutex::new(stream::StreamState::new(now)),
            stream_changed: Condvar::new(),
            config,
            info,
            started: now,
            marks,
            shutdown: AtomicBool::new(false),
        });
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .with_context(|| format!("starting the live view's {name} thread"))
        };
        let threads = vec![
            spawn("pleura-http", {
                let shared = Arc::clone(&shared);
                Box::new(move || http::serve(http, shared))
            })?,
            spawn("pleura-encoder", {
                let shared = Arc::clone(&shared);
                Box::new(move || stream::encoder(shared))
            })?,
        ];
        Ok(Server {
            shared,
            addr,
            threads,
        })
    }

    /// The address it listens on (the port the system chose for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The observer to give the run.
    pub fn view(&self) -> LiveView {
        LiveView {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The stream's counters so far.
    pub fn counters(&self) -> StreamCounters {
        stream::counters(&self.shared)
    }

    /// Stops the threads it started (a viewer blocked in a write is left to the system).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Relaxed);
        self.shared.stream_changed.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_default_to_this_machine() {
        assert_eq!(
            parse_addr("8080").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            parse_addr("0.0.0.0:80").unwrap(),
            "0.0.0.0:80".parse().unwrap()
        );
        assert_eq!(parse_addr("[::1]:9").unwrap(), "[::1]:9".parse().unwrap());
        let err = format!("{:#}", parse_addr("localhost").unwrap_err());
        assert!(err.contains("0.0.0.0:8080"), "{err}");
        assert!(ServeConfig::default().validate().is_ok());
        let bad = ServeConfig {
            quality: 0,
            ..ServeConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
