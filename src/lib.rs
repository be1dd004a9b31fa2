//! # Pleura runtime
//!
//! Lung-ultrasound inference for edge boards: ONE shared self-supervised MobileNetV3 backbone
//! plus small per-task heads, following the clinical hierarchy of VanBerlo et al.,
//! "Self-Supervised Pretraining Improves Performance and Inference Efficiency in Multiple Lung
//! Ultrasound Interpretation Tasks" (IEEE Access 2023, arXiv 2309.02596): the view head decides
//! whether the A-/B-lines head (parenchymal view) or the effusion head (pleural view) runs.
//!
//! Data flows one way:
//!
//! ```text
//! capture (v4l2 | replay | phantom -> pixfmt to grey, Frame { image, truth })
//!     -> preprocess (Resize: crop + resize to pixel scale, then Normalise)
//!     -> engine::Session (features, head(i): plans only)
//!     -> smoothing -> tasks::TaskSet::runs (which heads run next) -> pipeline record -> summary
//! ```
//!
//! Principal types: [`pack::Pack`] (a verified model pack, with its [`tasks::TaskSet`]: the
//! clinical hierarchy, the one gating rule and the decision threshold), [`engine::Engine`]
//! (optimised tract plans, chosen by fixed rules so that runs repeat bit for bit) and its
//! per-stream [`engine::Session`], [`preprocess::Resize`] and [`preprocess::Normalise`] (the two
//! preprocessing steps, shared with the trainer; [`preprocess::Preprocessor`] runs both),
//! [`tasks::Truth`] (ground truth of a synthetic frame) and [`phantom`] (synthetic LUS with
//! labels). The `pleura` binary adds its command line and the shared-vs-serial benchmark.
//!
//! ```no_run
//! use pleura::{engine::Engine, pack::Pack, phantom, preprocess::Preprocessor, tasks::TaskMode};
//! # fn main() -> anyhow::Result<()> {
//! let pack = Pack::load("models/default")?;               // checksums, shapes, hierarchy
//! let engine = Engine::new(&pack)?;                        // plans optimised once
//! let mut session = engine.session()?;
//! let clip = phantom::cohort(1, 7).remove(0);
//! let mut frames = phantom::Clip::new(clip.params, 256, 256)?;
//! let mut pre = Preprocessor::new(&pack.manifest.input, 256, 256, None)?;
//! let mut input = vec![0.0; pre.output_len()];
//! pre.run(&frames.frame(0), &mut input)?;
//! let features = session.features(&input)?;
//! let tasks = &pack.tasks;
//! let mut decisions = vec![None; tasks.len()];
//! for (i, task) in tasks.iter().enumerate() {
//!     if tasks.runs(TaskMode::Hierarchy, i, &decisions) {
//!         let p = session.head(i, &features)?;
//!         decisions[i] = Some(task.decide(p));
//!         println!("{}: {p:.3} -> {}", task.name, task.decide_name(p));
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod capture;
pub mod clip;
pub mod engine;
pub mod exam;
pub mod fsutil;
pub mod image;
pub mod latency;
pub mod overlay;
pub mod pack;
pub mod phantom;
pub mod pipeline;
pub mod preprocess;
pub mod sector;
#[cfg(feature = "serve")]
pub mod serve;
pub mod smoothing;
pub mod tasks;
