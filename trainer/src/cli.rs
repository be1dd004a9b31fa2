//! Command line of `pleura-train`.

use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::Device;
use clap::{Parser, Subcommand, ValueEnum};

use crate::augment::dump_views;
use crate::bench::time_steps;
use crate::data::covid_blues::{write_labels as write_blues_labels, LinesRule};
use crate::data::frames::FrameSet;
use crate::data::ingest::{prepare, Crop, PrepareOptions};
use crate::data::phantom::{write_cohort_as, CohortFormat, PhantomOptions};
use crate::data::split::SplitOptions;
use crate::data::store;
use crate::device::{Compute, DeviceSet};
use crate::experiment::report::{full_markdown, read_outcome, write_summary};
use crate::experiment::run::{execute, Experiment, Method};
use crate::experiment::{Init, NamedData};
use crate::model::HeadKind;
use crate::recipe::{build_pack, BackboneInit, PackRecipe};
use crate::ssl::SslMethod;
use crate::tasks::TaskSet;
use crate::train::finetune::FinetuneTraining;
use crate::train::pretrain::{
    default_loader_threads, pretrain_with, Loader, OptimizerKind, PretrainConfig, RunOptions, Start,
};
use crate::train::probe::HeadTraining;
use crate::train::step_check::compare_step;
use pleura::sector::parse_rect;

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

impl From<HeadArg> for HeadKind {
    fn from(h: HeadArg) -> Self {
        match h {
            HeadArg::Linear => HeadKind::Linear,
            HeadArg::Mlp => HeadKind::mlp(),
        }
    }
}

/// Shared-backbone sources on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum BackboneArg {
    /// Seeded random weights (BatchNorm statistics measured on the data), frozen.
    Scratch,
    /// Supervised training on all tasks at once, then frozen.
    Multitask,
}

/// SSL methods on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum MethodArg {
    /// SimCLR (NT-Xent).
    Simclr,
    /// Barlow Twins.
    Barlow,
    /// VICReg.
    Vicreg,
}

impl From<MethodArg> for SslMethod {
    fn from(m: MethodArg) -> Self {
        match m {
            MethodArg::Simclr => SslMethod::Simclr,
            MethodArg::Barlow => SslMethod::Barlow,
            MethodArg::Vicreg => SslMethod::Vicreg,
        }
    }
}

/// Optimisers on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum OptimizerArg {
    /// LARS (the recipe).
    Lars,
    /// AdamW.
    Adamw,
}

impl From<OptimizerArg> for OptimizerKind {
    fn from(o: OptimizerArg) -> Self {
        match o {
            OptimizerArg::Lars => OptimizerKind::Lars,
            OptimizerArg::Adamw => OptimizerKind::Adamw,
        }
    }
}

#[derive(Debug, clap::Args)]
struct PretrainArgs {
    /// SSL method (overrides the config file).
    #[arg(long, value_enum)]
    method: Option<MethodArg>,
    /// Dataset folder (labels.csv + clips/): labelled and unlabelled clips alike.
    #[arg(long)]
    data: PathBuf,
    /// Run folder (config, checkpoints, loss curve, pretrained backbone).
    #[arg(long)]
    out: PathBuf,
    /// TOML file with any fields of the run configuration (see `config.json` of a run).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Optimiser steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Frames per step.
    #[arg(long)]
    batch: Option<usize>,
    /// Network input side in pixels.
    #[arg(long)]
    size: Option<usize>,
    /// Optimiser.
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerArg>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Warm-up steps.
    #[arg(long)]
    warmup_steps: Option<usize>,
    /// Steps between checkpoints.
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Continue the run in `--out` from its last checkpoint, with its own configuration.
    #[arg(long)]
    resume: bool,
    /// Write N pairs of augmented views to OUT/views/ as PNG and stop.
    #[arg(long, value_name = "N")]
    dump_views: Option<usize>,
    /// Where to train: cpu, cuda, cuda:N, wgpu or wgpu:cpu (GPUs need a build with
    /// `--features cuda` or `--features wgpu`). Several CUDA devices, comma-separated
    /// (`cuda:0,cuda:1`), train data-parallel: the batch is split over them and burn
    /// all-reduces the gradients.
    #[arg(long, default_value = "cpu", value_delimiter = ',')]
    device: Vec<Compute>,
    /// Where frames come from: the dataset's frame store when it has one (auto), read as
    /// batches are drawn (stream: memory stays flat), or all preprocessed into memory first.
    #[arg(long, value_enum, default_value_t = LoaderArg::Auto)]
    loader: LoaderArg,
    /// Threads drawing batches ahead of the training step (default: half the cores, 1-8).
    #[arg(long, value_name = "N")]
    loader_threads: Option<usize>,
}

/// Frame loaders on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum LoaderArg {
    /// The frame store when there is one, else memory.
    Auto,
    /// Every frame preprocessed into memory first.
    Memory,
    /// Frames read from the frame store as batches are drawn.
    Stream,
}

impl From<LoaderArg> for Loader {
    fn from(l: LoaderArg) -> Self {
        match l {
            LoaderArg::Auto => Loader::Auto,
            LoaderArg::Memory => Loader::Memory,
            LoaderArg::Stream => Loader::Stream,
        }
    }
}

/// Phantom layouts on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum CohortArg {
    /// PNG clip folders only.
    Png,
    /// The frame store only (the cheap form of a large cohort).
    Store,
    /// Both.
    Both,
}

impl From<CohortArg> for CohortFormat {
    fn from(f: CohortArg) -> Self {
        match f {
            CohortArg::Png => CohortFormat::Png,
            CohortArg::Store => CohortFormat::Store,
            CohortArg::Both => CohortFormat::Both,
        }
    }
}

impl PretrainArgs {
    /// The configuration: defaults, then the TOML file, then the options given.
    fn config(&self) -> Result<PretrainConfig> {
        let mut c = match &self.config {
            Some(path) => PretrainConfig::from_toml(path)?,
            None => PretrainConfig::default(),
        };
        if let Some(m) = self.method {
            c.method = m.into();
        }
        if let Some(o) = self.optimizer {
            c.optimizer = o.into();
        }
        c.steps = self.steps.unwrap_or(c.steps);
        c.batch = self.batch.unwrap_or(c.batch);
        c.size = self.size.unwrap_or(c.size);
        c.lr = self.lr.or(c.lr);
        c.warmup_steps = self.warmup_steps.unwrap_or(c.warmup_steps);
        c.checkpoint_every = self.checkpoint_every.unwrap_or(c.checkpoint_every);
        c.seed = self.seed.unwrap_or(c.seed);
        c.validate()?;
        Ok(c)
    }
}

#[derive(Debug, clap::Args)]
struct BenchStepArgs {
    /// SSL method.
    #[arg(long, value_enum, default_value_t = MethodArg::Simclr)]
    method: MethodArg,
    /// Frames per step (two views each).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Input side in pixels.
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Optimiser.
    #[arg(long, value_enum, default_value_t = OptimizerArg::Adamw)]
    optimizer: OptimizerArg,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Where to run: cpu, cuda, cuda:N or wgpu. Threads: set `RAYON_NUM_THREADS`.
    #[arg(long, default_value = "cpu")]
    device: Compute,
}

/// What every experiment command takes: data, backbones, evaluation.
#[derive(Debug, clap::Args)]
struct ExperimentArgs {
    /// Local dataset (labels.csv + clips/): its split.json, or a split by patient.
    #[arg(long)]
    data: PathBuf,
    /// A finished `pretrain` run whose backbone to evaluate (repeat for several).
    #[arg(long = "backbone", value_name = "RUN")]
    backbones: Vec<PathBuf>,
    /// A MobileNetV3-Small ONNX file in torchvision's layout (e.g. ImageNet weights) to compare.
    #[arg(long, value_name = "ONNX")]
    imported: Option<PathBuf>,
    /// Leave out the random-initialisation baseline.
    #[arg(long)]
    no_scratch: bool,
    /// Floors every backbone must beat: `pixels` = logistic regression on the frames averaged
    /// down to `--pixels-side` pixels, with the same folds, head training and evaluation.
    #[arg(long = "baseline", value_enum, value_name = "KIND")]
    baselines: Vec<BaselineArg>,
    /// Side of the pixel baseline's downsampled frame.
    #[arg(long, default_value_t = 32)]
    pixels_side: usize,
    /// k-fold cross-validation by patient (the folds of the dataset's split.json): each fold's
    /// patients are tested once by a model trained on the others, and results are pooled
    /// out of fold. Without it, the fixed train/validation/test split.
    #[arg(long, value_name = "K")]
    folds: Option<usize>,
    /// Run length, in evaluated frames, of the clip rule "longest run above threshold".
    #[arg(long, default_value_t = 3)]
    clip_run: usize,
    /// External test set, `NAME=DIR` or `DIR` (repeat for several); evaluated whole.
    #[arg(long = "external", value_name = "NAME=DIR")]
    externals: Vec<String>,
    /// Seeds (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0,1,2")]
    seeds: Vec<u64>,
    /// Network input side in pixels (must match the pretraining runs).
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Use every N-th frame of each clip.
    #[arg(long, default_value_t = 1)]
    stride: usize,
    /// Seed of the patient split (datasets without split.json) and of the scratch backbone.
    #[arg(long, default_value_t = 0)]
    split_seed: u64,
    /// Bootstrap resamples per 95% interval.
    #[arg(long, default_value_t = 1000)]
    bootstrap: usize,
    /// Head kind (on frozen features, and on top of fine-tuned backbones).
    #[arg(long, value_enum, default_value_t = HeadArg::Linear)]
    head: HeadArg,
    /// Optimiser steps of each head on frozen features.
    #[arg(long, default_value_t = 400)]
    head_steps: usize,
    /// Optimiser steps of each fine-tuning.
    #[arg(long, default_value_t = 150)]
    finetune_steps: usize,
    /// Frames per fine-tuning step.
    #[arg(long, default_value_t = 32)]
    finetune_batch: usize,
    /// Fine-tuning learning rate of the backbone (Adam).
    #[arg(long, default_value_t = 1e-5)]
    backbone_lr: f64,
    /// Fine-tuning learning rate of the head.
    #[arg(long, default_value_t = 1e-4)]
    head_lr: f64,
    /// Report folder: summary.json, summary.md, ROC curves.
    #[arg(long)]
    out: PathBuf,
}

/// Baselines on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BaselineArg {
    /// Logistic regression on downsampled pixels.
    Pixels,
}

impl ExperimentArgs {
    fn experiment(&self, methods: Vec<Method>, fractions: Vec<f64>) -> Experiment {
        let mut inits: Vec<Init> = Vec::new();
        if self.baselines.contains(&BaselineArg::Pixels) {
            inits.push(Init::Pixels(self.pixels_side));
        }
        if !self.no_scratch {
            inits.push(Init::Scratch);
        }
        inits.extend(self.imported.iter().cloned().map(Init::Imported));
        inits.extend(self.backbones.iter().cloned().map(Init::Pretrained));
        let base = Experiment::new(self.data.clone());
        Experiment {
            externals: self.externals.iter().map(|e| NamedData::parse(e)).collect(),
            inits,
            methods,
            fractions,
            seeds: self.seeds.clone(),
            head: HeadTraining {
                kind: self.head.into(),
                steps: self.head_steps,
                ..HeadTraining::default()
            },
            finetune: FinetuneTraining {
                steps: self.finetune_steps,
                batch: self.finetune_batch,
                lr: self.backbone_lr,
                head_lr: Some(self.head_lr),
                ..base.finetune.clone()
            },
            size: self.size,
            stride: self.stride,
            split_seed: self.split_seed,
            bootstrap: self.bootstrap,
            folds: self.folds,
            clip_run: self.clip_run,
            ..base
        }
    }
}

#[derive(Debug, clap::Args)]
struct PrepareArgs {
    /// Folder with one video (mp4, avi, mov, mpeg, gif, ...), DICOM file or image folder per
    /// clip, named by clip id.
    #[arg(long)]
    clips: PathBuf,
    /// Labels CSV: `clip`, `patient`, and a column per task (empty cell = not labelled).
    #[arg(long)]
    labels: PathBuf,
    /// Dataset folder to write (clips already prepared there with the same settings are reused).
    #[arg(long)]
    out: PathBuf,
    /// Keep every N-th frame.
    #[arg(long, default_value_t = 1)]
    stride: usize,
    /// Keep at most this many frames per clip.
    #[arg(long)]
    max_frames: Option<usize>,
    /// `auto` (the region that moves over the clip), `full`, or `x,y,width,height`.
    #[arg(long, default_value = "auto")]
    crop: String,
    /// Scale stored frames down to this longest side in pixels (smaller datasets; the frames
    /// are then resized twice). Without it frames keep the crop's own resolution, and the
    /// trainer feeds the network exactly the tensor the runtime computes from the same pixels.
    #[arg(long)]
    max_side: Option<usize>,
    /// Fraction of patients for validation.
    #[arg(long, default_value_t = 0.2)]
    validation: f64,
    /// Fraction of patients for test.
    #[arg(long, default_value_t = 0.2)]
    test: f64,
    /// Cross-validation folds written to split.json.
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// Seed of the patient split.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Public datasets with an adapter.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum PublicDataset {
    /// COVID-BLUES: A-lines vs B-lines per clip from severity.csv.
    CovidBlues,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Self-supervised pretraining of the backbone (SimCLR, Barlow Twins or VICReg).
    Pretrain(PretrainArgs),
    /// Heads on frozen features of each backbone (and the scratch baseline): AUC on the local
    /// test split and external sets, with patient-bootstrap intervals.
    Probe(ExperimentArgs),
    /// Fine-tune backbone + head end to end from each initialisation; same evaluation as probe.
    Finetune(ExperimentArgs),
    /// Label efficiency: heads (and with --with-finetune, fine-tuning) on 1 ... 100% of the
    /// training patients' labelled clips, x initialisations x seeds, with AUC-vs-fraction plots.
    Sweep {
        #[command(flatten)]
        args: ExperimentArgs,
        /// Label fractions (comma-separated, in (0, 1]).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "0.01,0.05,0.1,0.25,0.5,1"
        )]
        fractions: Vec<f64>,
        /// Fine-tune too (slow on a CPU: one network per fraction x backbone x seed x task).
        #[arg(long)]
        with_finetune: bool,
    },
    /// Clips (videos, DICOM, image folders) + labels CSV -> a dataset folder with a fixed split.
    Prepare(PrepareArgs),
    /// Write the labels CSV of a public dataset from its own annotation files.
    Adapt {
        /// Which dataset.
        #[arg(value_enum)]
        dataset: PublicDataset,
        /// Its folder.
        #[arg(long)]
        root: PathBuf,
        /// Labels CSV to write (with `<name>.provenance.json` beside it: the rule and the
        /// class counts under every rule).
        #[arg(long)]
        out: PathBuf,
        /// How the A-/B-line notes become the `lines` label: `exclusive` (A only vs B only, the
        /// paper's task), `b-present` (any B-lines vs A only) or `severity` (score 0 vs >= 2).
        #[arg(long, value_enum, default_value_t = LinesRule::Exclusive)]
        lines_rule: LinesRule,
    },
    /// Print the tables of an experiment's summary.json again (and rewrite its summary.md).
    Report {
        /// The summary.json of a probe, finetune or sweep run.
        summary: PathBuf,
    },
    /// Time one pretraining step (forward, loss, backward, update) on random inputs; JSON out.
    BenchStep(BenchStepArgs),
    /// Write a synthetic lung-ultrasound cohort: labels.csv, and clips/<clip>/frame_NNNN.png
    /// and/or the frame store frames/ (`--format`).
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
        /// PNG clip folders, the frame store, or both.
        #[arg(long, value_enum, default_value_t = CohortArg::Both)]
        format: CohortArg,
    },
    /// Write the frame store (frames/) of a dataset from its PNG clip folders, replacing any
    /// earlier one: how a dataset prepared before the store existed is made streamable.
    Convert {
        /// Dataset folder (labels.csv + clips/).
        #[arg(long)]
        data: PathBuf,
        /// Read every stored frame back and check it afterwards.
        #[arg(long)]
        verify: bool,
    },
    /// Run one pretraining step on --device and on the CPU (flex) from the same weights and
    /// inputs and print how far apart they are (JSON); exits 1 beyond --tolerance.
    CheckStep {
        /// The device checked: wgpu, wgpu:cpu, cuda or cuda:N.
        #[arg(long)]
        device: Compute,
        /// SSL method.
        #[arg(long, value_enum, default_value_t = MethodArg::Simclr)]
        method: MethodArg,
        /// Frames per step.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Input side in pixels.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Largest relative difference accepted (loss, embeddings, weight updates).
        #[arg(long, default_value_t = 1e-3)]
        tolerance: f64,
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
        /// Use the backbone of this finished `pretrain` run (overrides --backbone).
        #[arg(long, value_name = "RUN")]
        pretrained: Option<PathBuf>,
        /// Optimiser steps of the multi-task backbone.
        #[arg(long, default_value_t = 200)]
        backbone_steps: usize,
        /// With --pretrained: steps of supervised multi-task fine-tuning of the shared backbone
        /// before it is frozen (0 = the self-supervised features as they are).
        #[arg(long, default_value_t = 0)]
        shared_steps: usize,
        /// Adam learning rate of that fine-tuning.
        #[arg(long, default_value_t = 1e-4)]
        shared_lr: f64,
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

fn run_pretrain(args: PretrainArgs) -> Result<()> {
    let config = args.config()?;
    if let Some(n) = args.dump_views {
        let frames = FrameSet::load(
            &args.data,
            &TaskSet::standard(),
            [config.size; 2],
            config.stride.max(1),
        )?;
        let picked: Vec<Vec<f32>> = (0..frames.len())
            .step_by((frames.len() / n.max(1)).max(1))
            .take(n)
            .map(|i| frames.frame(i).to_vec())
            .collect();
        let dir = args.out.join("views");
        dump_views(
            &picked,
            config.size,
            config.size,
            n,
            &config.augment,
            config.seed,
            &dir,
        )?;
        eprintln!(
            "wrote {n} pairs of views to {} (montage.png: original | view a | view b)",
            dir.display()
        );
        return Ok(());
    }
    let start = if args.resume {
        Start::Resume
    } else {
        Start::Fresh
    };
    let options = RunOptions {
        devices: DeviceSet::new(&args.device)?,
        loader: args.loader.into(),
        loader_threads: args.loader_threads.unwrap_or_else(default_loader_threads),
        stop_after: None,
    };
    let info = pretrain_with(&args.data, &args.out, &config, start, &options)?;
    eprintln!(
        "pretrained {} for {} steps: {} (loss curve {}, backbone {})",
        info.method,
        info.steps,
        args.out.display(),
        args.out.join("loss.png").display(),
        args.out.join("backbone.bpk").display()
    );
    Ok(())
}

fn run_prepare(args: PrepareArgs) -> Result<()> {
    let crop = match args.crop.as_str() {
        "auto" => Crop::Auto,
        "full" => Crop::Full,
        rect => Crop::Rect(parse_rect(rect)?),
    };
    let opts = PrepareOptions {
        clips: args.clips,
        labels: args.labels,
        out: args.out,
        stride: args.stride,
        max_frames: args.max_frames,
        crop,
        max_side: args.max_side,
        split: SplitOptions {
            validation: args.validation,
            test: args.test,
            folds: args.folds,
            seed: args.seed,
        },
    };
    let report = prepare(&opts)?;
    let cached = report.prepared.iter().filter(|c| c.cached).count();
    eprintln!(
        "prepared {} clips ({} frames, {cached} reused from an earlier run) in {}; skipped {}",
        report.prepared.len(),
        report.frames(),
        opts.out.display(),
        report.skipped.len()
    );
    for s in &report.skipped {
        eprintln!("  skipped {}: {}", s.clip, s.reason);
    }
    Ok(())
}

fn run_experiment(args: &ExperimentArgs, methods: Vec<Method>, fractions: Vec<f64>) -> Result<()> {
    let experiment = args.experiment(methods, fractions);
    let outcome = execute(&experiment)?;
    write_summary(&args.out, &experiment, &outcome)?;
    print!("{}", full_markdown(&outcome));
    eprintln!(
        "wrote {} (rows), {} (tables) and ROC curves in {}",
        args.out.join("summary.json").display(),
        args.out.join("summary.md").display(),
        args.out.display()
    );
    Ok(())
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Pretrain(args) => run_pretrain(args),
        Command::Probe(args) => {
            let methods = vec![Method::Probe(args.head.into())];
            run_experiment(&args, methods, vec![1.0])
        }
        Command::Finetune(args) => {
            let methods = vec![Method::Finetune(args.head.into())];
            run_experiment(&args, methods, vec![1.0])
        }
        Command::Sweep {
            args,
            fractions,
            with_finetune,
        } => {
            let mut methods = vec![Method::Probe(args.head.into())];
            if with_finetune {
                methods.push(Method::Finetune(args.head.into()));
            }
            run_experiment(&args, methods, fractions)
        }
        Command::Prepare(args) => run_prepare(args),
        Command::Report { summary } => {
            let outcome = read_outcome(&summary)?;
            let md = full_markdown(&outcome);
            let out = summary.with_file_name("summary.md");
            pleura::fsutil::write_atomic(&out, md.as_bytes())?;
            print!("{md}");
            Ok(())
        }
        Command::Adapt {
            dataset,
            root,
            out,
            lines_rule,
        } => {
            let PublicDataset::CovidBlues = dataset;
            let c = write_blues_labels(&root, &out, lines_rule)?;
            eprintln!(
                "wrote {} ({} patients), lines rule `{}`",
                out.display(),
                c.patients,
                lines_rule.name()
            );
            for (rule, n) in &c.counts {
                eprintln!(
                    "  {rule:<10} {:>4} a_lines {:>4} b_lines {:>4} unlabelled{}",
                    n.a_lines,
                    n.b_lines,
                    n.unlabelled,
                    if rule == lines_rule.name() {
                        "  <- written"
                    } else {
                        ""
                    }
                );
            }
            Ok(())
        }
        Command::BenchStep(args) => {
            let config = PretrainConfig {
                method: args.method.into(),
                optimizer: args.optimizer.into(),
                batch: args.batch,
                size: args.size,
                ..PretrainConfig::default()
            };
            let device = args.device.device()?;
            let bench = time_steps(
                &config,
                args.warmup,
                args.steps,
                &device,
                &args.device.to_string(),
            )?;
            println!("{}", serde_json::to_string(&bench)?);
            Ok(())
        }
        Command::Convert { data, verify } => {
            let summary = store::convert(&data)?;
            eprintln!(
                "wrote {} frames of {} clips in {} shards ({:.1} MiB) to {}",
                summary.frames,
                summary.clips,
                summary.shards,
                summary.bytes as f64 / (1 << 20) as f64,
                summary.dir.display()
            );
            if verify {
                let n = store::FrameStore::open(&data)?.verify()?;
                eprintln!("read back and checked {n} frames");
            }
            Ok(())
        }
        Command::CheckStep {
            device,
            method,
            batch,
            size,
            tolerance,
        } => {
            let config = PretrainConfig {
                method: method.into(),
                batch,
                size,
                ..PretrainConfig::default()
            };
            let reference = Device::flex();
            let checked = device.device()?;
            let c = compare_step(
                &config,
                (&reference, "cpu (flex)"),
                (&checked, &device.to_string()),
            )?;
            println!("{}", serde_json::to_string_pretty(&c)?);
            anyhow::ensure!(
                c.within(tolerance),
                "{device} differs from the CPU by more than {tolerance} (relative): loss {:.2e}, \
                 embeddings {:.2e}, weight updates {:.2e}",
                c.loss_rel_diff,
                c.embedding_rel_diff,
                c.update_rel_diff
            );
            Ok(())
        }
        Command::Phantom {
            out,
            clips,
            frames,
            size,
            seed,
            format,
        } => {
            write_cohort_as(
                &out,
                &PhantomOptions {
                    clips,
                    frames,
                    size,
                    seed,
                },
                format.into(),
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
            pretrained,
            backbone_steps,
            shared_steps,
            shared_lr,
            head,
            head_steps,
            finetune_steps,
            batch,
            seed,
        } => {
            let kind = head.into();
            let recipe = PackRecipe {
                data,
                size,
                stride,
                validation: 0.2,
                test: 0.2,
                seed,
                backbone: match (pretrained, backbone) {
                    (Some(run), _) => BackboneInit::Pretrained(run),
                    (None, BackboneArg::Scratch) => BackboneInit::Scratch,
                    (None, BackboneArg::Multitask) => BackboneInit::Multitask,
                },
                backbone_steps,
                shared_steps,
                shared_lr,
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
