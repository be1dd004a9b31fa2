//! The run configuration file (`pleura run --config FILE.toml`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::pack::Pack;
use crate::smoothing::SmoothingConfig;

/// The TOML file of `pleura run --config`: every section and field is optional.
///
/// ```toml
/// [smoothing.view]        # fields override the pack's smoothing of task `view`
/// window = 9
/// consecutive = 5
///
/// [smoothing.effusion]
/// on_skip = "hold"
/// ```
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Per task name: fields of [`SmoothingConfig`] that replace the pack's values.
    pub smoothing: BTreeMap<String, toml::Table>,
}

impl RunConfig {
    /// Reads a run configuration file.
    pub fn load(path: &Path) -> Result<RunConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Per task of `pack` (manifest order): its smoothing with this file's overrides applied.
    /// A section naming no task of the pack is an error.
    pub fn smoothing(&self, pack: &Pack) -> Result<Vec<SmoothingConfig>> {
        let tasks = &pack.manifest.tasks;
        for name in self.smoothing.keys() {
            if !tasks.iter().any(|t| &t.name == name) {
                let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
                bail!(
                    "section [smoothing.{name}]: the pack has no task `{name}` (tasks: {})",
                    names.join(", ")
                );
            }
        }
        tasks
            .iter()
            .zip(&pack.smoothing)
            .map(|(task, base)| match self.smoothing.get(&task.name) {
                Some(overrides) => base
                    .with_overrides(overrides)
                    .with_context(|| format!("section [smoothing.{}]", task.name)),
                None => Ok(base.clone()),
            })
            .collect()
    }
}
