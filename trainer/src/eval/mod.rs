//! Evaluation: ROC AUC.

pub mod auc;
