//! Progress bars for long work: one style everywhere (label, bar, count, rate, message, ETA).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` units (`unit`: "frames", "steps", ...) labelled `label`. Hidden when standard
/// error is not a terminal (indicatif's default), so logs stay clean.
pub fn bar(len: usize, label: &str, unit: &str) -> ProgressBar {
    let template =
        format!("{label:<18} {{bar:30}} {{pos}}/{{len}} {unit}, {{per_sec}} {{msg}} eta {{eta}}");
    let style =
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(len as u64).with_style(style)
}
