//! Command line of the `pleura` binary: arguments -> validated plan -> library calls.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::capture::paced::Paced;
use crate::capture::phantom::PhantomSource;
use crate::capture::FrameSource;
use crate::engine::{Engine, TaskMode};
use crate::pack::{fmt_shape, Pack, Quantization};
use crate::pipeline::{self, RunConfig, RunOptions};

/// Pleura: lung-ultrasound inference with one shared backbone and small task heads.
#[derive(Debug, Parser)]
#[command(name = "pleura", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a model pack's manifest and shapes, verifying every checksum.
    Info {
        /// The model-pack folder.
        pack: PathBuf,
    },
    /// Run a pack on a frame source and print one JSON line per frame.
    Run(RunArgs),
    /// Time the shared backbone + heads against the serial per-task networks.
    Bench(crate::bench::cli::BenchArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The model-pack folder.
    #[arg(long, default_value = "models/default")]
    pack: PathBuf,
    /// Frame source: `phantom` or `phantom:SEED`.
    #[arg(long, default_value = "phantom")]
    source: String,
    /// Number of frames to process.
    #[arg(long, default_value_t = 300)]
    frames: u64,
    /// Frames per synthetic clip.
    #[arg(long, default_value_t = 30)]
    clip_frames: usize,
    /// Size of synthetic frames (square).
    #[arg(long, default_value_t = 256)]
    phantom_size: usize,
    /// Run every head on every frame instead of following the view hierarchy.
    #[arg(long)]
    all_tasks: bool,
    /// Head form to run: `f32` or `int8`. Default: per task, the manifest's
    /// `tasks[i].head.quantization`.
    #[arg(long, value_name = "f32|int8")]
    heads: Option<Quantization>,
    /// Write the per-frame JSON lines here instead of standard output.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Write the run summary as JSON here.
    #[arg(long)]
    summary: Option<PathBuf>,
    /// TOML file overriding the pack's smoothing per task (`[smoothing.view]` `window = 9`).
    #[arg(long, value_name = "FILE.toml")]
    config: Option<PathBuf>,
    /// Deliver source frames in real time at this rate; a slower inference then drops the
    /// older frames (counted) instead of falling behind. Default: as fast as inference takes them.
    #[arg(long, value_name = "N")]
    fps: Option<f64>,
}

/// A validated frame source.
enum SourcePlan {
    Phantom { seed: u64 },
}

impl SourcePlan {
    fn parse(text: &str) -> Result<SourcePlan> {
        match text.split_once(':') {
            None if text == "phantom" => Ok(SourcePlan::Phantom { seed: 0 }),
            Some(("phantom", seed)) => Ok(SourcePlan::Phantom {
                seed: seed
                    .parse()
                    .with_context(|| format!("--source {text}: seed `{seed}` is not a number"))?,
            }),
            _ => bail!("--source {text}: unknown source (expected `phantom` or `phantom:SEED`)"),
        }
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info { pack } => info(&pack),
        Command::Run(args) => run_pack(args),
        Command::Bench(args) => crate::bench::cli::run(args),
    }
}

fn info(dir: &PathBuf) -> Result<()> {
    let pack = Pack::load(dir)?;
    let m = &pack.manifest;
    let mut out = io::stdout().lock();
    writeln!(out, "pack        {} (format {})", m.name, m.format_version)?;
    writeln!(out, "            {}", m.description)?;
    writeln!(
        out,
        "input       {}x{}x{} (C x H x W), pixel/255 normalised with mean {} std {}",
        m.input.channels, m.input.height, m.input.width, m.input.mean, m.input.std
    )?;
    let b = &pack.backbone;
    writeln!(
        out,
        "backbone    {} {} -> {}  {} features, {} parameters, {} KiB  sha256 ok",
        m.backbone.architecture,
        fmt_shape(&b.input_shape),
        fmt_shape(&b.output_shape),
        m.backbone.feature_dim,
        m.backbone.parameters,
        b.bytes / 1024
    )?;
    for (((task, head), int8), net) in m
        .tasks
        .iter()
        .zip(&pack.heads)
        .zip(&pack.int8_heads)
        .zip(&pack.serial_networks)
    {
        let gate = task.gate.as_ref().map_or("every frame".to_string(), |g| {
            format!("when {} = {}", g.task, g.class)
        });
        writeln!(
            out,
            "task        {:<9} {} vs {}, {gate}",
            task.name, task.classes[0], task.classes[1]
        )?;
        // The f32 head, then the int8 head when the pack has one; the manifest names the default.
        let forms = match int8 {
            Some(int8) => vec![
                ("f32", head, task.head.quantization == Quantization::F32),
                ("int8", int8, task.head.quantization != Quantization::F32),
            ],
            None => vec![(task.head.quantization.as_str(), head, true)],
        };
        for (form, model, default) in forms {
            writeln!(
                out,
                "  head      {:?} {form} {} -> {}, {} bytes  sha256 ok{}",
                task.head.kind,
                fmt_shape(&model.input_shape),
                fmt_shape(&model.output_shape),
                model.bytes,
                if default { "  (default)" } else { "" }
            )?;
        }
        writeln!(
            out,
            "  network   {} -> {}, {} KiB  sha256 ok (serial baseline)",
            fmt_shape(&net.input_shape),
            fmt_shape(&net.output_shape),
            net.bytes / 1024
        )?;
    }
    let p = &m.provenance;
    writeln!(
        out,
        "provenance  data: {}{}; backbone: {}; by {}",
        p.data,
        if p.synthetic {
            " (synthetic only: not for clinical use)"
        } else {
            ""
        },
        p.backbone_init,
        p.created_by
    )?;
    writeln!(out, "            command: {}", p.command)?;
    for (k, v) in &p.metrics {
        writeln!(out, "  metric    {k} = {v:.4}")?;
    }
    writeln!(
        out,
        "verified    {} files, {} KiB in all",
        pack.model_files(),
        pack.total_bytes() / 1024
    )?;
    Ok(())
}

fn run_pack(args: RunArgs) -> Result<()> {
    let plan = SourcePlan::parse(&args.source)?;
    let mut pack = Pack::load(&args.pack)?;
    if let Some(form) = args.heads {
        pack.select_heads(form).context("--heads")?;
    }
    let smoothing = match &args.config {
        Some(path) => RunConfig::load(path)?
            .smoothing(&pack)
            .with_context(|| format!("--config {}", path.display()))?,
        None => pack.smoothing.clone(),
    };
    let engine = Engine::new(&pack, false)?;
    let source: Box<dyn FrameSource + Send> = match plan {
        SourcePlan::Phantom { seed } => Box::new(PhantomSource::new(
            seed,
            args.phantom_size,
            args.phantom_size,
            args.clip_frames,
            args.frames,
        )?),
    };
    let source: Box<dyn FrameSource + Send> = match args.fps {
        Some(fps) => Box::new(Paced::new(source, fps).context("--fps")?),
        None => source,
    };
    // Ctrl-C (or SIGTERM) raises `stop`: the run ends after the current frame with its summary.
    // A second one while it winds down ends the process at once, with status 130.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&stop)))
            .context("installing the Ctrl-C handler")?;
    }
    let options = RunOptions {
        mode: if args.all_tasks {
            TaskMode::AllTasks
        } else {
            TaskMode::Hierarchy
        },
        crop: None,
        smoothing,
        stop,
    };
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(io::stdout().lock())),
    };
    let outcome = pipeline::run(source, &engine, &options, &pack.manifest.input, &mut out)?;
    let flushed = out.flush().context("writing frame records");
    let summary = &outcome.summary;
    eprint!("{}", summary.to_text());
    if let Some(path) = &args.summary {
        crate::fsutil::write_atomic(path, serde_json::to_string_pretty(summary)?.as_bytes())?;
    }
    match outcome.error {
        Some(err) => Err(err),
        None => flushed,
    }
}
