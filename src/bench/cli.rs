//! `pleura bench`: arguments -> validated [`BenchConfig`] -> [`super::run`] -> table, JSON and
//! plots.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{ensure, Context, Result};

use super::{BenchConfig, MIN_FRAMES};
use pleura::engine::{EngineChoice, EngineKind, MULTITHREAD_AVAILABLE};
use pleura::pack::{Pack, Quantization};

/// The engines benchmark's server (`--engines-serve`); the module lives next to this file.
#[path = "engines.rs"]
pub mod engines;

/// Arguments of `pleura bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The model-pack folder (it must hold the per-task networks).
    #[arg(long, default_value = "models/default")]
    pack: PathBuf,
    /// Timed phantom frames per mode (at least 300).
    #[arg(long, default_value_t = MIN_FRAMES)]
    frames: usize,
    /// Threads tract may use inside one network run (1 = as on a board, the default).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Head form to run: `f32` or `int8`. Default: per task, the manifest's
    /// `tasks[i].head.quantization`.
    #[arg(long, value_name = "f32|int8")]
    heads: Option<Quantization>,
    /// Untimed frames run first.
    #[arg(long, default_value_t = BenchConfig::default().warmup)]
    warmup: usize,
    /// Print the report as one JSON object on standard output.
    #[arg(long)]
    json: bool,
    /// Write bench.json, latency.csv and latency_histogram.png into this folder.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Inference engine: `tract` (default) or `ort` (ONNX Runtime; cargo feature `ort`).
    #[arg(long, value_name = "tract|ort", default_value = "tract")]
    engine: EngineKind,
    /// `--engine ort`: the libonnxruntime shared library to load (default: $ORT_DYLIB_PATH).
    #[arg(long, value_name = "PATH")]
    ort_lib: Option<PathBuf>,
    /// Serve the engines benchmark's requests on standard input (driven by
    /// tools/bench_engines.py, `make bench-engines`).
    #[arg(long, hide = true)]
    engines_serve: bool,
}

impl BenchArgs {
    /// The arguments checked into a run configuration.
    fn plan(&self) -> Result<BenchConfig> {
        ensure!(
            self.frames >= MIN_FRAMES,
            "--frames {}: the benchmark times at least {MIN_FRAMES} frames per mode, so that \
             its medians and 99th percentiles mean something",
            self.frames
        );
        ensure!(self.threads >= 1, "--threads must be at least 1");
        ensure!(
            self.threads == 1 || MULTITHREAD_AVAILABLE,
            "--threads {}: this build of pleura runs tract on one thread (rebuild with the \
             default cargo feature `threads`; for a board: `make cross-aarch64 \
             FEATURES=threads,v4l2`)",
            self.threads
        );
        Ok(BenchConfig {
            frames: self.frames,
            warmup: self.warmup,
            threads: self.threads,
            engine: EngineChoice::new(self.engine, self.ort_lib.clone()),
            ..BenchConfig::default()
        })
    }
}

/// Runs `pleura bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    if args.engines_serve {
        return engines::serve(&args.pack, args.ort_lib);
    }
    let config = args.plan()?;
    let mut pack = Pack::load(&args.pack)?;
    if let Some(form) = args.heads {
        pack.select_heads(form).context("--heads")?;
    }
    let forms: Vec<String> = pack
        .manifest
        .tasks
        .iter()
        .map(|t| format!("{} {}", t.name, t.head.quantization.as_str()))
        .collect();
    eprintln!("heads: {}", forms.join(", "));
    let mut bench = super::run(&pack, &args.pack, &config)?;
    if let Some(dir) = &args.out {
        let json = bench.write(dir)?;
        eprintln!("wrote {}", json.display());
    }
    eprint!("{}", bench.report.to_text());
    if args.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &bench.report)?;
        writeln!(out).context("writing the report")?;
    }
    Ok(())
}
