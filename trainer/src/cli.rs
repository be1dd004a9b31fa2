//! Command line of `pleura-train`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

use crate::data::phantom::{write_cohort, PhantomOptions};
use crate::model::HeadKind;
use crate::recipe::{build_pack, BackboneInit, PackRecipe};
use crate::train::finetune::FinetuneTraining;
use crate::train::probe::HeadTraining;

/// Pleura trainer: phantom data, training and model-pack export.
#[derive(Debug, Parser)]
#[command(name = "pleura-train", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Head kinds on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum HeadArg {
    /// One dense layer.
    Linear,
    /// Dense (32 hidden units), ReLU, dense.
    Mlp,
}

/// Shared-backbone sources on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum BackboneArg {
    /// Seeded random weights (BatchNorm statistics measured on the data), frozen.
    Scratch,
    /// Supervised training on all tasks at once, then frozen.
    Multitask,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a synthetic lung-ultrasound cohort: clips/<clip>/frame_NNNN.png + labels.csv.
    Phantom {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Number of clips (balanced over the four label kinds).
        #[arg(long, default_value_t = 48)]
        clips: usize,
        /// Frames per clip.
        #[arg(long, default_value_t = 16)]
        frames: usize,
        /// Frame side in pixels.
        #[arg(long, default_value_t = 256)]
        size: usize,
        /// Seed (same seed, same pixels).
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Train heads on a frozen backbone and per-task whole networks, and export a model pack.
    BuildPack {
        /// Dataset folder (labels.csv + clips/).
        #[arg(long)]
        data: PathBuf,
        /// Pack folder to write.
        #[arg(long)]
        out: PathBuf,
        /// Network input side in pixels.
        #[arg(long, default_value_t = 128)]
        size: usize,
        /// Use every N-th frame of each clip.
        #[arg(long, default_value_t = 1)]
        stride: usize,
        /// Where the shared backbone comes from.
        #[arg(long, value_enum, default_value_t = BackboneArg::Multitask)]
        backbone: BackboneArg,
        /// Optimiser steps of the multi-task backbone.
        #[arg(long, default_value_t = 200)]
        backbone_steps: usize,
        /// Head kind.
        #[arg(long, value_enum, default_value_t = HeadArg::Mlp)]
        head: HeadArg,
        /// Optimiser steps of each head.
        #[arg(long, default_value_t = 400)]
        head_steps: usize,
        /// Optimiser steps of each whole network.
        #[arg(long, default_value_t = 150)]
        finetune_steps: usize,
        /// Frames per fine-tuning step.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Seed of split, initialisation and batch order.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Phantom {
            out,
            clips,
            frames,
            size,
            seed,
        } => {
            write_cohort(
                &out,
                &PhantomOptions {
                    clips,
                    frames,
                    size,
                    seed,
                },
            )?;
            eprintln!(
                "wrote {clips} clips of {frames} frames to {}",
                out.display()
            );
            Ok(())
        }
        Command::BuildPack {
            data,
            out,
            size,
            stride,
            backbone,
            backbone_steps,
            head,
            head_steps,
            finetune_steps,
            batch,
            seed,
        } => {
            let kind = match head {
                HeadArg::Linear => HeadKind::Linear,
                HeadArg::Mlp => HeadKind::mlp(),
            };
            let recipe = PackRecipe {
                data,
                size,
                stride,
                validation: 0.2,
                test: 0.2,
                seed,
                backbone: match backbone {
                    BackboneArg::Scratch => BackboneInit::Scratch,
                    BackboneArg::Multitask => BackboneInit::Multitask,
                },
                backbone_steps,
                head: HeadTraining {
                    kind,
                    steps: head_steps,
                    seed,
                    ..HeadTraining::default()
                },
                finetune: FinetuneTraining {
                    steps: finetune_steps,
                    batch,
                    seed,
                    ..FinetuneTraining::default()
                },
                command: std::env::args().collect::<Vec<_>>().join(" "),
            };
            let reports = build_pack(&recipe, &out)?;
            eprintln!("task       head val/test AUC   network val/test AUC");
            let f = |v: Option<f64>| v.map_or("  n/a".to_string(), |v| format!("{v:.3}"));
            for r in &reports {
                eprintln!(
                    "{:<10} {} / {}       {} / {}",
                    r.task,
                    f(r.head_val_auc),
                    f(r.head_test_auc),
                    f(r.network_val_auc),
                    f(r.network_test_auc)
                );
            }
            eprintln!("wrote model pack {}", out.display());
            Ok(())
        }
    }
}
