//! Self-supervised pretraining of the backbone: two augmented views per frame, MobileNetV3 +
//! projector, the chosen method's loss, LARS (or AdamW) with warm-up and cosine decay.
//!
//! A run folder holds everything a run produces and needs to continue:
//! ```text
//! RUN/config.json                 the resolved PretrainConfig
//! RUN/loss.csv, loss.png/.svg     step, loss, lr, images/s, collapse statistics
//! RUN/checkpoints/step-NNNNNN/    model.bpk, optimizer.bpk, state.json (written, then pointed to)
//! RUN/latest                      name of the newest complete checkpoint (replaced atomically)
//! RUN/backbone.bpk, backbone.json the pretrained feature extractor and how to rebuild it
//! ```
//! Batches are drawn from a generator seeded by `(seed, step)`, so a resumed run sees exactly
//! the batches and views the uninterrupted run would have seen. Augmentation runs on a loader
//! thread, one batch ahead of the training step.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer, OptimizerRecord};
use burn::store::ModuleRecord;
use burn::tensor::{Device, Tensor, TensorData};
use pleura::fsutil::write_atomic;
use pleura::pack::InputSpec;
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use super::collapse::{collapse_stats, CollapseStats};
use super::lars::LarsConfig;
use super::schedule::{scaled_lr, WarmupCosine};
use super::to_vec;
use crate::augment::{normalise, AugmentConfig, Augmenter};
use crate::data::frames::FrameSet;
use crate::data::split::{dataset_parts, Part};
use crate::eval::plots::{line_chart, Chart, Series};
use crate::model::{MobileNetV3, MobileNetV3Config, Variant};
use crate::progress;
use crate::ssl::projector::{Projector, ProjectorConfig};
use crate::ssl::{ssl_loss, SslLossConfig, SslMethod};
use crate::tasks::STANDARD;

/// The optimiser of a pretraining run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// LARS, the recipe's optimiser.
    Lars,
    /// AdamW.
    Adamw,
}

/// Everything that defines a pretraining run. Saved as `RUN/config.json`; a TOML file with any
/// subset of the fields overrides the defaults (`--config`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainConfig {
    /// SimCLR, Barlow Twins or VICReg.
    pub method: SslMethod,
    /// Loss hyper-parameters.
    pub loss: SslLossConfig,
    /// Projector layer sizes: Linear-BN-ReLU blocks, then a bias-free Linear.
    pub projector: Vec<usize>,
    /// MobileNetV3 Small or Large.
    pub variant: Variant,
    /// Width multiplier of the backbone.
    pub width_mult: f64,
    /// Network input side in pixels.
    pub size: usize,
    /// Use every `stride`-th frame of each clip.
    pub stride: usize,
    /// Frames per step (each gives two views).
    pub batch: usize,
    /// Optimiser steps of the whole run.
    pub steps: usize,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// LARS (recipe) or AdamW.
    pub optimizer: OptimizerKind,
    /// Peak learning rate; default `0.2 x batch / 256` for LARS, `1e-3` for AdamW.
    pub lr: Option<f64>,
    /// LARS settings (weight decay 1e-6 as in the recipe).
    pub lars: LarsConfig,
    /// AdamW weight decay.
    pub adamw_weight_decay: f32,
    /// Augmentations of the two views.
    pub augment: AugmentConfig,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
    /// Steps between loss/collapse log rows.
    pub log_every: usize,
    /// Fractions of patients held out for validation and test: their frames are never seen
    /// by pretraining (same split as the heads use with the same seed).
    pub validation: f64,
    /// See `validation`.
    pub test: f64,
    /// Seed of initialisation, batches and augmentations.
    pub seed: u64,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        Self {
            method: SslMethod::Simclr,
            loss: SslLossConfig::default(),
            projector: vec![768, 768],
            variant: Variant::Small,
            width_mult: 1.0,
            size: 128,
            stride: 1,
            batch: 32,
            steps: 500,
            warmup_steps: 50,
            optimizer: OptimizerKind::Lars,
            lr: None,
            lars: LarsConfig::default(),
            adamw_weight_decay: 1e-6,
            augment: AugmentConfig::default(),
            checkpoint_every: 100,
            log_every: 10,
            validation: 0.2,
            test: 0.2,
            seed: 0,
        }
    }
}

impl PretrainConfig {
    /// Reads a TOML file of overrides on top of the defaults.
    pub fn from_toml(path: &Path) -> Result<Self> {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Checks ranges; errors name the field.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.batch >= 2,
            "`batch` must be at least 2 (the losses compare samples), got {}",
            self.batch
        );
        ensure!(self.steps > 0, "`steps` must be positive");
        ensure!(
            self.size >= 32,
            "`size` must be at least 32 pixels, got {}",
            self.size
        );
        ensure!(self.stride > 0, "`stride` must be positive");
        ensure!(
            !self.projector.is_empty() && self.projector.iter().all(|&d| d > 0),
            "`projector` needs positive sizes"
        );
        ensure!(
            self.checkpoint_every > 0 && self.log_every > 0,
            "`checkpoint_every` and `log_every` must be positive"
        );
        ensure!(
            self.width_mult > 0.0 && self.width_mult.is_finite(),
            "`width_mult` must be positive"
        );
        if let Some(lr) = self.lr {
            ensure!(
                lr > 0.0 && lr.is_finite(),
                "`lr` must be positive, got {lr}"
            );
        }
        self.augment.validate().context("field `augment`")
    }

    /// The peak learning rate.
    pub fn peak_lr(&self) -> f64 {
        self.lr.unwrap_or(match self.optimizer {
            OptimizerKind::Lars => scaled_lr(self.batch),
            OptimizerKind::Adamw => 1e-3,
        })
    }

    /// The backbone configuration.
    pub fn backbone(&self) -> MobileNetV3Config {
        let table = match self.variant {
            Variant::Small => MobileNetV3Config::small(),
            Variant::Large => MobileNetV3Config::large(),
        };
        table.with_width_mult(self.width_mult).with_seed(self.seed)
    }

    /// Backbone and projector, freshly initialised from the seed on `device` (an autodiff
    /// device to train them).
    pub fn network(&self, device: &Device) -> SslNetwork {
        let backbone = self.backbone().init(device);
        let projector = ProjectorConfig::new(backbone.feature_dim())
            .with_hidden(self.projector.clone())
            .with_seed(self.seed)
            .init(device);
        SslNetwork {
            backbone,
            projector,
        }
    }

    /// The configured optimiser, without state.
    pub fn optimizer(&self) -> ModuleOptimizer {
        match self.optimizer {
            OptimizerKind::Lars => self.lars.init(),
            OptimizerKind::Adamw => AdamWConfig::new()
                .with_weight_decay(self.adamw_weight_decay)
                .init(),
        }
    }
}

/// Backbone + projector, trained together.
#[derive(Module, Debug)]
pub struct SslNetwork {
    /// The feature extractor that is kept.
    pub backbone: MobileNetV3,
    /// The projector, discarded after pretraining.
    pub projector: Projector,
}

impl SslNetwork {
    /// Embeddings of a batch of images.
    ///
    /// # Shapes
    /// `[N, C, H, W] -> [N, projector output]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.projector.forward(self.backbone.forward(x))
    }

    /// One optimiser step on a batch of view pairs: `views` holds `config.batch` normalised
    /// `size x size` images per view, row-major. Returns the updated network, the loss (not
    /// checked for finiteness) and the first view's embeddings.
    pub fn step(
        self,
        optim: &mut ModuleOptimizer,
        config: &PretrainConfig,
        views: (Vec<f32>, Vec<f32>),
        lr: f64,
        device: &Device,
    ) -> (Self, f64, Tensor<2>) {
        let shape = [config.batch, 1, config.size, config.size];
        let input = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, shape), device);
        let za = self.forward(input(views.0));
        let zb = self.forward(input(views.1));
        let loss = ssl_loss(config.method, &config.loss, za.clone(), zb);
        let loss_value = f64::from(to_vec(loss.clone())[0]);
        let grads = GradientsParams::from_grads(loss.backward(), &self);
        (optim.step(lr, self, grads), loss_value, za)
    }
}

/// What `RUN/backbone.json` says about `RUN/backbone.bpk`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PretrainedBackbone {
    /// How to rebuild the module before loading the weights.
    pub backbone: MobileNetV3Config,
    /// Input size and the normalisation the backbone was trained with.
    pub input: InputSpec,
    /// Method it was pretrained with.
    pub method: SslMethod,
    /// Steps it was trained for.
    pub steps: usize,
}

/// Loads the backbone a finished run wrote (inference mode, on the flex CPU device).
pub fn load_backbone(run: &Path) -> Result<(MobileNetV3, PretrainedBackbone)> {
    let (model, info) = load_backbone_on(run, &Device::flex())?;
    Ok((model.valid(), info))
}

/// Loads the backbone a finished run wrote onto `device` (an autodiff device gives a model
/// ready for fine-tuning).
pub fn load_backbone_on(run: &Path, device: &Device) -> Result<(MobileNetV3, PretrainedBackbone)> {
    let info_path = run.join("backbone.json");
    let info: PretrainedBackbone = read_json(&info_path)?;
    let weights = run.join("backbone.bpk");
    let record = read_record(&weights)?;
    let model = info
        .backbone
        .init(device)
        .try_load_record(record)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| {
            format!(
                "{} does not fit the backbone in {}",
                weights.display(),
                info_path.display()
            )
        })?;
    Ok((model, info))
}

/// Reads and parses a JSON file, naming it in errors.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Reads a burnpack module record, naming the file in errors.
fn read_record(path: &Path) -> Result<ModuleRecord> {
    ModuleRecord::load(path)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("reading {}", path.display()))
}

/// One row of `loss.csv`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct LogRow {
    step: usize,
    loss: f64,
    lr: f64,
    images_per_s: f64,
    embedding_std: f64,
    effective_rank: f64,
}

/// `RUN/checkpoints/.../state.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct CheckpointState {
    /// The next step to run.
    next_step: usize,
    /// Log rows so far.
    log: Vec<LogRow>,
    /// Normalisation of the run's frames.
    mean: f32,
    /// See `mean`.
    std: f32,
}

/// How a run starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// A new run; the folder must not hold a checkpoint.
    Fresh,
    /// Continue from `RUN/latest` with the run's own `config.json`.
    Resume,
}

fn save_bytes(
    path: &Path,
    bytes: Result<burn::tensor::Bytes, burn::store::RecordError>,
) -> Result<()> {
    let bytes = bytes
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("encoding {}", path.display()))?;
    write_atomic(path, &bytes)
}

fn write_checkpoint(
    run: &Path,
    net: &SslNetwork,
    optim: &ModuleOptimizer,
    state: &CheckpointState,
) -> Result<()> {
    let name = format!("step-{:06}", state.next_step);
    let dir = run.join("checkpoints").join(&name);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    save_bytes(
        &dir.join("model.bpk"),
        net.clone().into_record().into_bytes(),
    )?;
    save_bytes(&dir.join("optimizer.bpk"), optim.to_record().into_bytes())?;
    write_atomic(
        &dir.join("state.json"),
        serde_json::to_string(state)?.as_bytes(),
    )?;
    // Only now does the run point at it: a kill before this line leaves the previous one.
    write_atomic(&run.join("latest"), name.as_bytes())?;
    // Keep the newest two.
    let mut old: Vec<PathBuf> = fs::read_dir(run.join("checkpoints"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().as_ref() < name.as_str())
        })
        .collect();
    old.sort();
    for p in old.iter().rev().skip(1) {
        let _ = fs::remove_dir_all(p);
    }
    Ok(())
}

fn read_checkpoint(
    run: &Path,
    net: SslNetwork,
    optim: ModuleOptimizer,
) -> Result<(SslNetwork, ModuleOptimizer, CheckpointState)> {
    let latest = run.join("latest");
    let name = fs::read_to_string(&latest).with_context(|| {
        format!(
            "reading {} (no checkpoint to resume from)",
            latest.display()
        )
    })?;
    let dir = run.join("checkpoints").join(name.trim());
    let state_path = dir.join("state.json");
    let state: CheckpointState = read_json(&state_path)?;
    let model_path = dir.join("model.bpk");
    let record = read_record(&model_path)?;
    let net = net
        .try_load_record(record)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("loading {}", model_path.display()))?;
    let optim_path = dir.join("optimizer.bpk");
    let record = OptimizerRecord::load(&optim_path)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("reading {}", optim_path.display()))?;
    Ok((net, optim.load_record(record), state))
}

fn step_rng(seed: u64, step: usize) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn write_log(run: &Path, log: &[LogRow]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in log {
        w.serialize(row)?;
    }
    write_atomic(
        &run.join("loss.csv"),
        &w.into_inner().context("encoding loss.csv")?,
    )?;
    if log.len() >= 2 {
        // A plot that cannot be drawn (no font, say) must not end a training run: the CSV
        // above holds the same numbers.
        if let Err(err) = plot_log(run, log) {
            log::warn!("loss curves not drawn: {err:#}");
        }
    }
    Ok(())
}

fn plot_log(run: &Path, log: &[LogRow]) -> Result<()> {
    let series = |f: fn(&LogRow) -> f64| log.iter().map(|r| (r.step as f64, f(r))).collect();
    line_chart(
        &run.join("loss"),
        &Chart {
            title: "self-supervised loss",
            x_label: "step",
            y_label: "loss",
        },
        &[Series {
            name: "loss",
            points: series(|r| r.loss),
        }],
    )?;
    line_chart(
        &run.join("collapse"),
        &Chart {
            title: "collapse monitor",
            x_label: "step",
            y_label: "effective rank",
        },
        &[Series {
            name: "effective rank",
            points: series(|r| r.effective_rank),
        }],
    )
}

/// Runs (or resumes) pretraining on the dataset folder `data`, writing into `run`.
/// `stop_after` ends the run early after that many steps in this process (for tests and
/// time-boxed jobs); the checkpoint then allows `Start::Resume`.
pub fn pretrain(
    data: &Path,
    run: &Path,
    config: &PretrainConfig,
    start: Start,
    stop_after: Option<usize>,
    device: &Device,
) -> Result<PretrainedBackbone> {
    let config = match start {
        Start::Fresh => {
            ensure!(
                !run.join("latest").exists(),
                "{} already holds a run: pass --resume to continue it, or choose another --out",
                run.display()
            );
            config.validate()?;
            fs::create_dir_all(run).with_context(|| format!("creating {}", run.display()))?;
            write_atomic(
                &run.join("config.json"),
                serde_json::to_string_pretty(config)?.as_bytes(),
            )?;
            config.clone()
        }
        Start::Resume => {
            let path = run.join("config.json");
            let saved: PretrainConfig = read_json(&path)?;
            if saved != *config {
                log::warn!(
                    "resuming with the run's own {} (options given now are ignored)",
                    path.display()
                );
            }
            saved
        }
    };
    let raw = InputSpec::unnormalised(config.size, config.size);
    let frames = FrameSet::load(data, &STANDARD, &raw, config.stride)?;
    let parts = dataset_parts(
        data,
        &frames.clips,
        config.validation,
        config.test,
        config.seed,
    )?;
    let index = frames.frames_in(&parts, Part::Train);
    ensure!(
        index.len() >= config.batch,
        "{} training frames are fewer than a batch of {}",
        index.len(),
        config.batch
    );

    let device = device.clone().autodiff();
    let backbone_config = config.backbone();
    let mut net = config.network(&device);
    let mut optim = config.optimizer();
    let (mean, std) = frames.stats(&index);
    let mut state = CheckpointState {
        next_step: 0,
        log: Vec::new(),
        mean,
        std,
    };
    if start == Start::Resume {
        (net, optim, state) = read_checkpoint(run, net, optim)?;
        log::info!("resuming {} at step {}", run.display(), state.next_step);
    }
    let schedule = WarmupCosine {
        base: config.peak_lr(),
        warmup: config.warmup_steps,
        total: config.steps,
        final_ratio: 0.0,
    };
    let augmenter = Augmenter::new(&config.augment, config.size, config.size)?;
    let (b, s) = (config.batch, config.size);
    let first = state.next_step;
    let last = stop_after.map_or(config.steps, |n| (first + n).min(config.steps));

    let bar = progress::bar(
        config.steps,
        &format!("pretrain {}", config.method),
        "steps",
    );
    bar.set_position(first as u64);
    let result: Result<SslNetwork> = std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<(usize, Vec<f32>, Vec<f32>)>(2);
        let (frames, index, augmenter, seed) = (&frames, &index, &augmenter, config.seed);
        scope.spawn(move || {
            for step in first..last {
                let mut rng = step_rng(seed, step);
                let chosen = sample(&mut rng, index.len(), b);
                let (mut va, mut vb) =
                    (Vec::with_capacity(b * s * s), Vec::with_capacity(b * s * s));
                for k in chosen.iter() {
                    let (a, v) = augmenter.two_views(frames.frame(index[k]), &mut rng);
                    va.extend(a);
                    vb.extend(v);
                }
                normalise(&mut va, mean, std);
                normalise(&mut vb, mean, std);
                if tx.send((step, va, vb)).is_err() {
                    return; // the training loop stopped
                }
            }
        });
        let mut window = Instant::now();
        for (step, va, vb) in rx {
            let lr = schedule.at(step);
            let za;
            let loss_value;
            (net, loss_value, za) = net.step(&mut optim, &config, (va, vb), lr, &device);
            if !loss_value.is_finite() {
                bail!(
                    "the loss became {loss_value} at step {step}: lower the learning rate ({lr})"
                );
            }
            state.next_step = step + 1;
            if step.is_multiple_of(config.log_every) || step + 1 == config.steps {
                let elapsed = window.elapsed().as_secs_f64();
                let done = (state.log.last().map_or(first, |r| r.step + 1)..=step)
                    .count()
                    .max(1);
                window = Instant::now();
                let dim = *config.projector.last().unwrap_or(&1);
                let CollapseStats {
                    embedding_std,
                    effective_rank,
                } = collapse_stats(&to_vec(za), b, dim);
                let row = LogRow {
                    step,
                    loss: loss_value,
                    lr,
                    images_per_s: (2 * b * done) as f64 / elapsed.max(1e-9),
                    embedding_std,
                    effective_rank,
                };
                bar.set_message(format!(
                    "loss {loss_value:.4} rank {effective_rank:.1} {:.1} img/s",
                    row.images_per_s
                ));
                state.log.push(row);
                write_log(run, &state.log)?;
            }
            if state.next_step.is_multiple_of(config.checkpoint_every)
                || state.next_step == config.steps
            {
                write_checkpoint(run, &net, &optim, &state)?;
            }
            bar.inc(1);
        }
        Ok(net)
    });
    bar.finish_and_clear();
    let net = result?;

    let info = PretrainedBackbone {
        backbone: backbone_config,
        input: InputSpec { mean, std, ..raw },
        method: config.method,
        steps: state.next_step,
    };
    if state.next_step == config.steps {
        save_bytes(
            &run.join("backbone.bpk"),
            net.backbone.valid().into_record().into_bytes(),
        )?;
        write_atomic(
            &run.join("backbone.json"),
            serde_json::to_string_pretty(&info)?.as_bytes(),
        )?;
        let mut done = fs::File::create(run.join("DONE")).context("marking the run done")?;
        writeln!(done, "{} steps", state.next_step)?;
    }
    Ok(info)
}
