//! # Pleura trainer
//!
//! Trains the shared lung-ultrasound feature extractor and its task heads, evaluates them, and
//! exports model packs that the `pleura` runtime runs. Depends on the runtime crate for
//! everything both sides must agree on (preprocessing, the pack format, the phantom), never
//! the other way round.
//!
//! - [`data`]: datasets on disk (labels CSV + clip folders), phantom cohorts, patient splits.
//! - [`device`]: where training runs (CPU; CUDA and wgpu behind cargo features).
//! - [`model`]: MobileNetV3 in burn, task heads, BatchNorm-folded inference form.
//! - [`train`]: heads on frozen features and end-to-end fine-tuning.
//! - [`eval`]: ROC AUC.
//! - [`experiment`]: backbone comparisons (probes on frozen features), reports.
//! - [`export`]: ONNX graphs and model packs.
//! - [`bench`]: speed of one pretraining step.
//! - [`recipe`]: dataset -> complete pack.

pub mod augment;
pub mod bench;
pub mod cli;
pub mod data;
pub mod device;
pub mod eval;
pub mod experiment;
pub mod export;
pub mod model;
pub mod progress;
pub mod recipe;
pub mod ssl;
pub mod tasks;
pub mod train;
