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
//! the batches and views the uninterrupted run would have seen. Loader threads read, augment and
//! normalise the batches of the coming steps while the current one trains: from memory, or
//! straight from the dataset's frame store ([`crate::data::store`]), one positioned read per
//! frame, so memory stays flat however large the archive (the same batches either way). Frames
//! are drawn uniformly from the whole archive at every step, across all shards.
//!
//! Several CUDA devices train data-parallel through burn's own collective support
//! ([`DistributedContext`]): one replica and one thread per device, each on its rows of the
//! batch, gradients averaged by the all-reduce inside `backward()`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use burn::module::{Module, ModuleMapper, Param};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer, OptimizerRecord};
use burn::store::ModuleRecord;
use burn::tensor::distributed::{DistributedConfig, DistributedContext, ReduceOperation};
use burn::tensor::{Device, Tensor, TensorData};
use pleura::fsutil::write_atomic;
use pleura::pack::InputSpec;
use pleura::preprocess::Normalise;
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use super::collapse::{collapse_stats, CollapseStats};
use super::lars::LarsConfig;
use super::schedule::{scaled_lr, WarmupCosine};
use super::to_vec;
use crate::augment::{AugmentConfig, Augmenter};
use crate::data::frames::{network_normalise, FrameCatalog, FrameScratch, FrameSet, FrameTable};
use crate::data::split::{dataset_parts, Part};
use crate::data::store;
use crate::device::DeviceSet;
use crate::eval::plots::{line_chart, Chart, Series};
use crate::model::{MobileNetV3, MobileNetV3Config, Variant};
use crate::progress;
use crate::ssl::projector::{Projector, ProjectorConfig};
use crate::ssl::{ssl_loss, SslLossConfig, SslMethod};
use crate::tasks::TaskSet;

/// The optimiser of a pretraining run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// LARS, the recipe's optimiser.
    Lars,
    /// AdamW.
    Adamw,
}

/// Which clips of the dataset pretraining learns from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PretrainClips {
    /// The training part of the patient split (`validation` and `test` held out): heads
    /// evaluated on the same split's test patients never meet their frames.
    #[default]
    Train,
    /// Only clips without any label: they belong to no cross-validation fold, so one
    /// pretraining serves every fold without seeing a labelled test frame.
    Unlabelled,
    /// Every clip (for a backbone evaluated only on other datasets).
    All,
}

/// How the two members of a positive pair are chosen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PairConfig {
    /// Probability that the second view comes from another frame of the same clip, up to
    /// `max_seconds` away (intra-video positive pairs, VanBerlo et al. 2024), rather than
    /// from the same frame (the paper's two augmented views). 0 = always the same frame.
    pub temporal_p: f32,
    /// Farthest partner frame, seconds. Closer frames are drawn more often: weight
    /// `1 - dt / (max_seconds + frame period)`.
    pub max_seconds: f64,
    /// Seconds between stored frames for datasets that do not record it (`dataset.json`).
    pub fallback_frame_seconds: f64,
}

impl Default for PairConfig {
    fn default() -> Self {
        Self {
            temporal_p: 0.0,
            max_seconds: 1.0,
            fallback_frame_seconds: 0.04,
        }
    }
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
    /// Which clips it learns from.
    pub clips: PretrainClips,
    /// Same-frame or nearby-frame positive pairs.
    pub pairs: PairConfig,
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
            clips: PretrainClips::Train,
            pairs: PairConfig::default(),
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
        ensure!(
            (0.0..=1.0).contains(&self.pairs.temporal_p),
            "`pairs.temporal_p` must be in 0..=1, got {}",
            self.pairs.temporal_p
        );
        ensure!(
            self.pairs.max_seconds >= 0.0 && self.pairs.fallback_frame_seconds > 0.0,
            "`pairs.max_seconds` must be >= 0 and `pairs.fallback_frame_seconds` positive"
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
    /// Which clips it saw (older runs: the training part of the split).
    #[serde(default)]
    pub clips: PretrainClips,
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

/// The frames pretraining learns from, as `config.clips` says.
fn pretraining_frames(
    data: &Path,
    table: FrameTable<'_>,
    config: &PretrainConfig,
) -> Result<Vec<usize>> {
    Ok(match config.clips {
        PretrainClips::Train => {
            let parts = dataset_parts(
                data,
                table.clips,
                config.validation,
                config.test,
                config.seed,
            )?;
            table.frames_in(&parts, Part::Train)
        }
        PretrainClips::Unlabelled => (0..table.len())
            .filter(|&i| {
                table.clips[table.frame_clip[i]]
                    .classes
                    .iter()
                    .all(Option::is_none)
            })
            .collect(),
        PretrainClips::All => (0..table.len()).collect(),
    })
}

/// For each pretraining frame, the other pretraining frames of its clip within
/// `pairs.max_seconds`, with their draw weights (closer = heavier). Computed at each draw from
/// the clip's frame list, so memory is one word per pretraining frame, not one list per frame.
struct Partners<'a> {
    table: FrameTable<'a>,
    index: &'a [usize],
    pairs: PairConfig,
    /// Per clip: the positions in the pretraining index of its frames, in index order.
    members: Vec<Vec<usize>>,
}

impl<'a> Partners<'a> {
    fn new(table: FrameTable<'a>, index: &'a [usize], pairs: &PairConfig) -> Self {
        let mut members = vec![
            Vec::new();
            if pairs.temporal_p > 0.0 {
                table.clips.len()
            } else {
                0
            }
        ];
        if pairs.temporal_p > 0.0 {
            for (k, &i) in index.iter().enumerate() {
                members[table.frame_clip[i]].push(k);
            }
        }
        Self {
            table,
            index,
            pairs: pairs.clone(),
            members,
        }
    }

    /// The candidates of pretraining frame `k` with their cumulative weights, in index order.
    fn candidates(&self, k: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
        let i = self.index[k];
        let c = self.table.frame_clip[i];
        let fallback = self.pairs.fallback_frame_seconds;
        let period = self.table.clip_seconds[c].unwrap_or(fallback);
        let mut total = 0.0;
        self.members[c]
            .iter()
            .filter(move |&&m| self.index[m] != i)
            .filter_map(move |&m| {
                let dt = self.table.seconds_apart(i, self.index[m], fallback)?;
                (dt <= self.pairs.max_seconds).then(|| {
                    total += 1.0 - dt / (self.pairs.max_seconds + period);
                    (m, total)
                })
            })
    }

    /// The partner of pretraining frame `k`, or `None` for a same-frame pair. Always draws
    /// once from `rng` (and once more for a partner), so streams stay reproducible.
    fn draw(&self, k: usize, rng: &mut Xoshiro256PlusPlus) -> Option<usize> {
        use rand::Rng;
        if self.pairs.temporal_p <= 0.0 || rng.random::<f32>() >= self.pairs.temporal_p {
            return None;
        }
        let (last, total) = self.candidates(k).last()?;
        let x = rng.random::<f64>() * total;
        self.candidates(k)
            .find(|(_, cum)| x < *cum)
            .map_or(Some(last), |(p, _)| Some(p))
    }
}

/// Where pretraining reads its frames from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loader {
    /// The frame store when the dataset has one (`DIR/frames`), else memory.
    #[default]
    Auto,
    /// Every frame preprocessed into memory first (from the store or the PNG folders).
    Memory,
    /// Frames read from the frame store as batches are drawn: memory stays flat as the
    /// archive grows.
    Stream,
}

/// How a run executes. None of it changes what a single-device run computes: the batches and
/// views depend on the seed and the step only, whichever loader and however many loader
/// threads draw them.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The device(s): several CUDA devices train data-parallel.
    pub devices: DeviceSet,
    /// Where frames come from.
    pub loader: Loader,
    /// Threads reading, augmenting and normalising batches ahead of the training step.
    pub loader_threads: usize,
    /// End early after that many steps in this process (tests and time-boxed jobs); the
    /// checkpoint then allows [`Start::Resume`].
    pub stop_after: Option<usize>,
}

impl RunOptions {
    /// One device, the automatic loader, [`default_loader_threads`] threads, no early stop.
    pub fn on(device: &Device) -> Self {
        Self {
            devices: DeviceSet::one(device.clone()),
            loader: Loader::Auto,
            loader_threads: default_loader_threads(),
            stop_after: None,
        }
    }
}

/// Loader threads when not given: half the cores (the training step uses the rest), 1 to 8.
pub fn default_loader_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get() / 2)
        .clamp(1, 8)
}

/// A run's frames: preprocessed in memory, or listed and read from the frame store.
enum Frames {
    Memory(FrameSet),
    Stream(FrameCatalog),
}

impl Frames {
    fn open(data: &Path, config: &PretrainConfig, loader: Loader) -> Result<Self> {
        let tasks = TaskSet::standard();
        let size = [config.size; 2];
        let stream = match loader {
            Loader::Auto => store::exists(data),
            Loader::Memory => false,
            Loader::Stream => {
                ensure!(
                    store::exists(data),
                    "{} has no frame store ({}/{}/{}) to stream from: write one with \
                     `pleura-train convert --data {}`",
                    data.display(),
                    data.display(),
                    store::STORE_DIR,
                    store::INDEX_FILE,
                    data.display()
                );
                true
            }
        };
        Ok(if stream {
            Frames::Stream(FrameCatalog::open(data, &tasks, size, config.stride)?)
        } else {
            Frames::Memory(FrameSet::load(data, &tasks, size, config.stride)?)
        })
    }

    fn table(&self) -> FrameTable<'_> {
        match self {
            Frames::Memory(f) => f.table(),
            Frames::Stream(f) => f.table(),
        }
    }

    fn stats(&self, index: &[usize]) -> Result<(f32, f32)> {
        match self {
            Frames::Memory(f) => Ok(f.stats(index)),
            Frames::Stream(f) => f.stats(index),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Frames::Memory(_) => "memory",
            Frames::Stream(_) => "frame store (streamed)",
        }
    }
}

/// One loader thread's buffers.
struct LoaderScratch {
    frame: FrameScratch,
    buf: Vec<f32>,
    /// The frame now in `buf`.
    held: Option<usize>,
}

/// Everything a loader thread needs to draw the batch of a step.
struct BatchMaker<'a> {
    frames: &'a Frames,
    index: &'a [usize],
    partners: &'a Partners<'a>,
    augmenter: &'a Augmenter,
    normalise: &'a Normalise,
    seed: u64,
    batch: usize,
    size: usize,
}

impl BatchMaker<'_> {
    /// Calls `f` with the pixel-scale input of frame `i`.
    fn with_frame<R>(
        &self,
        i: usize,
        scratch: &mut LoaderScratch,
        f: impl FnOnce(&[f32]) -> R,
    ) -> Result<R> {
        match self.frames {
            Frames::Memory(set) => Ok(f(set.frame(i))),
            Frames::Stream(catalog) => {
                if scratch.held != Some(i) {
                    scratch.held = None;
                    catalog.read(i, &mut scratch.frame, &mut scratch.buf)?;
                    scratch.held = Some(i);
                }
                Ok(f(&scratch.buf))
            }
        }
    }

    /// The two normalised views of the batch of `step`: frames drawn by a generator seeded
    /// by `(seed, step)`, partners and augmentations from the same generator.
    fn make(&self, step: usize, scratch: &mut LoaderScratch) -> Result<(Vec<f32>, Vec<f32>)> {
        let (b, s) = (self.batch, self.size);
        let mut rng = step_rng(self.seed, step);
        let chosen = sample(&mut rng, self.index.len(), b);
        let (mut va, mut vb) = (vec![0.0; b * s * s], vec![0.0; b * s * s]);
        for (n, k) in chosen.iter().enumerate() {
            let anchor = self.index[k];
            let partner = self
                .partners
                .draw(k, &mut rng)
                .map_or(anchor, |p| self.index[p]);
            let out = n * s * s..(n + 1) * s * s;
            self.with_frame(anchor, scratch, |f| {
                self.augmenter.apply(f, &mut va[out.clone()], &mut rng)
            })?;
            self.with_frame(partner, scratch, |f| {
                self.augmenter.apply(f, &mut vb[out], &mut rng)
            })?;
        }
        self.normalise.in_place(&mut va);
        self.normalise.in_place(&mut vb);
        Ok((va, vb))
    }
}

/// A batch of view pairs for one step, or why it could not be made.
type Batch = Result<(usize, Vec<f32>, Vec<f32>)>;

/// Starts `threads` loader threads for steps `first..last`: thread `t` makes steps
/// `first + t`, `first + t + threads`, ... and hands each over on its own channel, so the
/// training loop takes step `s` from receiver `(s - first) % threads`, in order, and at most
/// two batches per thread wait in memory.
fn spawn_loaders<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    maker: &'scope BatchMaker<'scope>,
    steps: std::ops::Range<usize>,
    threads: usize,
) -> Vec<Receiver<Batch>> {
    let frame_len = maker.size * maker.size;
    (0..threads.max(1))
        .map(|t| {
            let (tx, rx) = sync_channel::<Batch>(1);
            let steps = steps.clone();
            let stride = threads.max(1);
            scope.spawn(move || {
                let mut scratch = LoaderScratch {
                    frame: FrameScratch::new([maker.size; 2]),
                    buf: vec![0.0; frame_len],
                    held: None,
                };
                for step in steps.skip(t).step_by(stride) {
                    let batch = maker
                        .make(step, &mut scratch)
                        .map(|(va, vb)| (step, va, vb))
                        .with_context(|| format!("making the batch of step {step}"));
                    let failed = batch.is_err();
                    if tx.send(batch).is_err() || failed {
                        return; // the training loop stopped, or this batch could not be made
                    }
                }
            });
            rx
        })
        .collect()
}

/// Marks every trainable parameter for burn's gradient all-reduce (data-parallel training):
/// `backward()` then averages its gradient over the devices of the [`DistributedContext`].
struct MarkDistributed;

impl ModuleMapper for MarkDistributed {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor = if tensor.is_require_grad() {
            tensor.set_distributed(id)
        } else {
            tensor
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// Work for a replica on another device: the step, its learning rate and its share of the
/// two views.
type ReplicaWork = (usize, f64, Vec<f32>, Vec<f32>);

/// Starts one thread per replica (devices 1.. of a data-parallel run). Each owns its copy of
/// the network and its optimiser, takes its rows of every batch, and answers with its loss.
/// All replicas start from the same weights and optimiser state and receive the same
/// all-reduced gradients, so they stay equal (BatchNorm running statistics aside: each keeps
/// those of its own rows, and the checkpoints hold device 0's).
fn spawn_replicas<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    net: &SslNetwork,
    optim: &ModuleOptimizer,
    config: &'scope PretrainConfig,
    devices: &[Device],
) -> Vec<(SyncSender<ReplicaWork>, Receiver<Result<f64>>)> {
    devices
        .iter()
        .map(|device| {
            let (work_tx, work_rx) = sync_channel::<ReplicaWork>(1);
            let (loss_tx, loss_rx) = sync_channel::<Result<f64>>(1);
            let mut replica = net.clone().fork(device).map(&mut MarkDistributed);
            let mut optim = config.optimizer().load_record(optim.to_record());
            let device = device.clone();
            scope.spawn(move || {
                for (step, lr, va, vb) in work_rx {
                    let loss;
                    (replica, loss, _) = replica.step(&mut optim, config, (va, vb), lr, &device);
                    let answer = if loss.is_finite() {
                        Ok(loss)
                    } else {
                        Err(anyhow::anyhow!(
                            "the loss became {loss} at step {step} on {device:?}"
                        ))
                    };
                    if loss_tx.send(answer).is_err() {
                        return;
                    }
                }
            });
            (work_tx, loss_rx)
        })
        .collect()
}

/// Runs (or resumes) pretraining on the dataset folder `data`, writing into `run`, on one
/// device with the automatic loader ([`pretrain_with`] says more).
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
    pretrain_with(
        data,
        run,
        config,
        start,
        &RunOptions {
            stop_after,
            ..RunOptions::on(device)
        },
    )
}

/// Runs (or resumes) pretraining on the dataset folder `data`, writing into `run`.
///
/// Frames come from memory or stream from the dataset's frame store (`options.loader`); the
/// batch of step `s` is drawn by a generator seeded by `(config.seed, s)` on one of
/// `options.loader_threads` threads, so both loaders, any thread count and a resumed run draw
/// the same batches and views. With several devices (CUDA only) the network is replicated,
/// every device takes `batch / devices` rows of each batch, and burn's all-reduce averages the
/// gradients in `backward()`; the loss is then the mean of the per-device losses (an
/// SSL loss compares the rows of one device with each other).
pub fn pretrain_with(
    data: &Path,
    run: &Path,
    config: &PretrainConfig,
    start: Start,
    options: &RunOptions,
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
    let replicas = options.devices.len();
    ensure!(
        config.batch.is_multiple_of(replicas) && config.batch / replicas >= 2,
        "a batch of {} does not split into at least 2 frames on each of {replicas} devices",
        config.batch
    );
    let raw = InputSpec::unnormalised(config.size, config.size);
    let frames = Frames::open(data, &config, options.loader)?;
    let table = frames.table();
    let index = pretraining_frames(data, table, &config)?;
    ensure!(
        index.len() >= config.batch,
        "{} pretraining frames ({:?} clips) are fewer than a batch of {}",
        index.len(),
        config.clips,
        config.batch
    );
    log::info!(
        "pretraining on {} frames from {} with {} loader threads on {}",
        index.len(),
        frames.name(),
        options.loader_threads.max(1),
        options.devices
    );
    let partners = Partners::new(table, &index, &config.pairs);

    let devices: Vec<Device> = options
        .devices
        .devices()
        .iter()
        .map(|d| d.clone().autodiff())
        .collect();
    let device = devices[0].clone();
    let backbone_config = config.backbone();
    let mut net = config.network(&device);
    let mut optim = config.optimizer();
    let mut state = if start == Start::Resume {
        let state;
        (net, optim, state) = read_checkpoint(run, net, optim)?;
        log::info!("resuming {} at step {}", run.display(), state.next_step);
        state
    } else {
        let (mean, std) = frames.stats(&index)?;
        CheckpointState {
            next_step: 0,
            log: Vec::new(),
            mean,
            std,
        }
    };
    let (mean, std) = (state.mean, state.std);
    let normalise = network_normalise(mean, std)?;
    let schedule = WarmupCosine {
        base: config.peak_lr(),
        warmup: config.warmup_steps,
        total: config.steps,
        final_ratio: 0.0,
    };
    let augmenter = Augmenter::new(&config.augment, config.size, config.size)?;
    let (b, s) = (config.batch, config.size);
    let first = state.next_step;
    let last = options
        .stop_after
        .map_or(config.steps, |n| (first + n).min(config.steps));
    // Each device's share of a batch.
    let local = PretrainConfig {
        batch: b / replicas,
        ..config.clone()
    };
    let rows = b / replicas * s * s;

    // Data-parallel: burn's collective context over the devices, every trainable parameter
    // marked for the gradient all-reduce. Dropped (closing the context) after the replicas.
    let _context = (replicas > 1).then(|| {
        DistributedContext::init(
            devices.clone(),
            DistributedConfig {
                all_reduce_op: ReduceOperation::Mean,
            },
        )
    });
    if replicas > 1 {
        net = net.map(&mut MarkDistributed);
    }

    let bar = progress::bar(
        config.steps,
        &format!("pretrain {}", config.method),
        "steps",
    );
    bar.set_position(first as u64);
    let maker = BatchMaker {
        frames: &frames,
        index: &index,
        partners: &partners,
        augmenter: &augmenter,
        normalise: &normalise,
        seed: config.seed,
        batch: b,
        size: s,
    };
    let result: Result<SslNetwork> = std::thread::scope(|scope| {
        let loaders = spawn_loaders(scope, &maker, first..last, options.loader_threads);
        let others = spawn_replicas(scope, &net, &optim, &local, &devices[1..]);
        let mut window = Instant::now();
        for step in first..last {
            let (got, va, vb) = loaders[(step - first) % loaders.len()]
                .recv()
                .context("a loader thread stopped")??;
            debug_assert_eq!(got, step);
            let lr = schedule.at(step);
            for (r, (tx, _)) in others.iter().enumerate() {
                let part = (r + 1) * rows..(r + 2) * rows;
                tx.send((step, lr, va[part.clone()].to_vec(), vb[part].to_vec()))
                    .map_err(|_| anyhow::anyhow!("replica {} stopped", r + 1))?;
            }
            let (own_a, own_b) = if replicas > 1 {
                (va[..rows].to_vec(), vb[..rows].to_vec())
            } else {
                (va, vb)
            };
            let za;
            let mut loss_value;
            (net, loss_value, za) = net.step(&mut optim, &local, (own_a, own_b), lr, &device);
            for (r, (_, rx)) in others.iter().enumerate() {
                loss_value += rx
                    .recv()
                    .map_err(|_| anyhow::anyhow!("replica {} stopped", r + 1))??;
            }
            loss_value /= replicas as f64;
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
                } = collapse_stats(&to_vec(za), local.batch, dim);
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
        clips: config.clips,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::labels::ClipLabels;

    /// Two clips of 10 frames (0.1 s apart in clip 0; unknown timing in clip 1).
    fn frames() -> FrameSet {
        FrameSet {
            dims: [1, 1, 1],
            inputs: vec![0.0; 20],
            frame_clip: (0..20).map(|i| i / 10).collect(),
            position: (0..20).map(|i| i % 10).collect(),
            clips: (0..2)
                .map(|c| ClipLabels {
                    clip: format!("c{c}"),
                    patient: "p".into(),
                    classes: vec![None; 3],
                })
                .collect(),
            clip_seconds: vec![Some(0.1), None],
        }
    }

    #[test]
    fn partners_are_nearby_frames_of_the_same_clip_closer_ones_likelier() {
        let frames = frames();
        let index: Vec<usize> = (0..20).collect();
        let pairs = PairConfig {
            temporal_p: 1.0,
            max_seconds: 0.35,
            fallback_frame_seconds: 0.2,
        };
        let partners = Partners::new(frames.table(), &index, &pairs);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let mut counts = [0usize; 10];
        for _ in 0..4000 {
            let p = partners.draw(4, &mut rng).expect("frame 4 has partners");
            assert_eq!(frames.frame_clip[p], 0);
            assert_ne!(p, 4);
            counts[p] += 1;
        }
        // Up to 0.35 s at 0.1 s a frame: frames 1-3 and 5-7; one frame away over twice as likely
        // as three: weights 1 - dt / 0.45 = 0.78, 0.56, 0.33.
        assert_eq!(counts[0] + counts[8] + counts[9], 0, "{counts:?}");
        assert!(counts[3] > counts[2] && counts[2] > counts[1], "{counts:?}");
        let ratio = counts[5] as f64 / counts[7] as f64;
        assert!((1.8..3.0).contains(&ratio), "{counts:?}");
        // Clip 1 has no frame rate: 0.2 s a frame, so only the neighbours qualify.
        for _ in 0..200 {
            let p = partners.draw(14, &mut rng).unwrap();
            assert!(p == 13 || p == 15, "{p}");
        }
        // Same-frame pairs when temporal_p = 0, without touching the random stream.
        let same = Partners::new(frames.table(), &index, &PairConfig::default());
        let mut a = Xoshiro256PlusPlus::seed_from_u64(2);
        assert_eq!(same.draw(4, &mut a), None);
        use rand::Rng;
        assert_eq!(
            a.random::<u64>(),
            Xoshiro256PlusPlus::seed_from_u64(2).random::<u64>()
        );
    }
}
