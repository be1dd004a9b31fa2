//! Evaluation: ROC AUC, patient-level bootstrap intervals, plots.

pub mod auc;
pub mod bootstrap;
pub mod plots;
