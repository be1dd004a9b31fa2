//! Evaluation: ROC AUC.

pub mod auc;
pub mod plots;
