//! # Pleura trainer
//!
//! Trains the shared lung-ultrasound feature extractor and its task heads, evaluates them, and
//! exports model packs that the `pleura` runtime runs. Depends on the runtime crate for
//! everything both sides must agree on (preprocessing, the pack format, the phantom), never
//! the other way round.
//!
//! - [`data`]: datasets on disk (labels CSV + clip folders), phantom cohorts, patient splits.
//! - [`model`]: MobileNetV3 in burn, task heads, BatchNorm-folded inference form.
//! - [`train`]: heads on frozen features and end-to-end fine-tuning.
//! - [`eval`]: ROC AUC.
//! - [`export`]: ONNX graphs and model packs.
//! - [`recipe`]: dataset -> complete pack.

pub mod augment;
pub mod cli;
pub mod data;
pub mod eval;
pub mod export;
pub mod model;
pub mod progress;
pub mod recipe;
pub mod ssl;
pub mod tasks;
pub mod train;
