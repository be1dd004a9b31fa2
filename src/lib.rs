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
//! capture (v4l2 | replay | phantom -> pixfmt to grey) -> preprocess::Preprocessor (crop, resize)
//!     -> engine::Session (backbone, heads) -> smoothing (decisions) -> pipeline record -> latency summary
//! ```
//!
//! Principal types: [`pack::Pack`] (a verified model pack), [`engine::Engine`] (optimised tract
//! plans) and its per-stream [`engine::Session`], [`preprocess::Preprocessor`] (the one
//! preprocessing path, shared with the trainer), and [`phantom`] (synthetic LUS with labels).
//!
//! ```no_run
//! use pleura::{engine::{Engine, TaskMode}, pack::Pack, phantom, preprocess::Preprocessor};
//! # fn main() -> anyhow::Result<()> {
//! let pack = Pack::load("models/default")?;               // checksums and shapes verified
//! let engine = Engine::new(&pack, false)?;                 // plans optimised once
//! let mut session = engine.session()?;
//! let clip = phantom::cohort(1, 7).remove(0);
//! let mut frames = phantom::Clip::new(clip.params, 256, 256)?;
//! let mut pre = Preprocessor::new(&pack.manifest.input, 256, 256, None)?;
//! let mut input = vec![0.0; pre.output_len()];
//! pre.run(&frames.frame(0), &mut input)?;
//! let result = session.infer(&input, TaskMode::Hierarchy)?;
//! println!("{:?}", result.probabilities);
//! # Ok(()) }
//! ```

pub mod bench;
pub mod capture;
pub mod cli;
pub mod engine;
pub mod fsutil;
pub mod image;
pub mod latency;
pub mod pack;
pub mod phantom;
pub mod pipeline;
pub mod preprocess;
pub mod sector;
pub mod smoothing;
