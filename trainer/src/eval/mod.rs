//! Evaluation: ROC AUC, patient-level bootstrap intervals, clip-level rules, plots.

pub mod auc;
pub mod bootstrap;
pub mod clip;
pub mod plots;
