//! Command line of the `pleura` binary: arguments -> validated plan -> library calls.

mod bedside;
mod capture;
mod info;
mod run;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGINT, SIGTERM};

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
    Run(Box<run::RunArgs>),
    /// Time the shared backbone + heads against the serial per-task networks.
    Bench(crate::bench::cli::BenchArgs),
    /// List the V4L2 capture devices with their pixel formats, sizes and frame rates.
    Devices(capture::DevicesArgs),
    /// Propose the crop rectangle holding the ultrasound image of a source (the moving sector).
    Calibrate(capture::CalibrateArgs),
    /// Record raw frames of a source into a folder, for `--source replay:DIR`.
    Record(capture::RecordArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info { pack } => info::info(&pack),
        Command::Run(args) => run::run(*args),
        Command::Bench(args) => crate::bench::cli::run(args),
        Command::Devices(args) => capture::devices(args),
        Command::Calibrate(args) => capture::calibrate(args),
        Command::Record(args) => capture::record(args),
    }
}

/// A flag raised by Ctrl-C (or SIGTERM): long work ends cleanly after the current frame. A
/// second signal while it winds down ends the process at once, with status 130.
fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&stop)))
            .context("installing the Ctrl-C handler")?;
    }
    Ok(stop)
}
