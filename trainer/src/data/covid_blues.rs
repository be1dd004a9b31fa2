//! COVID-BLUES (Wiedemann et al., IEEE JBHI 2025; CC BY-NC-ND 4.0): 362 convex-probe clips at
//! the six BLUE points of 63 patients, with per-clip expert notes on A-lines and B-lines and a
//! severity score 0-3 (Soldati et al. 2020) in `severity.csv`. This adapter writes Pleura's
//! labels CSV for it; the clips themselves are read in place by `prepare` (never copied into a
//! repository). There are no view or effusion labels.
//!
//! The notes are not exclusive (A only 93 clips, B only 77, both 158, neither 34), so the task
//! `lines` depends on a rule, [`LinesRule`]; clips a rule leaves unlabelled still serve
//! self-supervised pretraining. The rule and the counts under every rule are written beside the
//! labels (`<labels>.provenance.json`), from where `prepare` copies them into `dataset.json`
//! and the experiment reports show them.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde::Serialize;

use super::labels::{self, provenance_path, ClipLabels};
use crate::tasks::TaskSet;

/// How the per-clip notes become the `lines` label (`a_lines` = 0, `b_lines` = 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LinesRule {
    /// A-lines only vs B-lines only; clips with both or neither stay unlabelled. The paper's
    /// A/B task: each label names the one artefact pattern the clip shows.
    Exclusive,
    /// B-lines noted (with or without A-lines) vs A-lines only; neither stays unlabelled.
    BPresent,
    /// Severity score 0 (continuous pleura, horizontal artefacts) vs score >= 2 (broken pleura,
    /// white lung below); score 1 and missing scores stay unlabelled.
    Severity,
}

impl LinesRule {
    /// Every rule, in the order reports list them.
    pub const ALL: [LinesRule; 3] = [
        LinesRule::Exclusive,
        LinesRule::BPresent,
        LinesRule::Severity,
    ];

    /// The class of a clip: `Some(0)` a-lines, `Some(1)` b-lines, `None` unlabelled.
    pub fn class(self, notes: &ClipNotes) -> Option<usize> {
        match self {
            LinesRule::Exclusive => match (notes.a_lines, notes.b_lines) {
                (true, false) => Some(0),
                (false, true) => Some(1),
                _ => None,
            },
            LinesRule::BPresent => match (notes.a_lines, notes.b_lines) {
                (_, true) => Some(1),
                (true, false) => Some(0),
                (false, false) => None,
            },
            LinesRule::Severity => match notes.severity {
                Some(s) if s < 0.5 => Some(0),
                Some(s) if s >= 1.5 => Some(1),
                _ => None,
            },
        }
    }

    /// Name as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            LinesRule::Exclusive => "exclusive",
            LinesRule::BPresent => "b-present",
            LinesRule::Severity => "severity",
        }
    }
}

/// What the experts noted for one clip.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipNotes {
    /// A-lines seen.
    pub a_lines: bool,
    /// B-lines seen.
    pub b_lines: bool,
    /// Severity score 0-3, when given.
    pub severity: Option<f64>,
}

/// Clips per class under one rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RuleCounts {
    /// Clips labelled `a_lines`.
    pub a_lines: usize,
    /// Clips labelled `b_lines`.
    pub b_lines: usize,
    /// Clips left unlabelled (pretraining only).
    pub unlabelled: usize,
}

/// What [`write_labels`] wrote, and what each rule would have given; saved as
/// `<labels>.provenance.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BluesLabels {
    /// The dataset.
    pub dataset: &'static str,
    /// The rule used for the `lines` column.
    pub lines_rule: LinesRule,
    /// Clips per class under every rule, by rule name.
    pub counts: Vec<(String, RuleCounts)>,
    /// Patients.
    pub patients: usize,
    /// Clips, patterns: `a_only`, `b_only`, `both`, `neither`.
    pub patterns: [usize; 4],
}

impl BluesLabels {
    /// Counts under the rule used.
    pub fn used(&self) -> &RuleCounts {
        let name = self.lines_rule.name();
        &self
            .counts
            .iter()
            .find(|(n, _)| n == name)
            .expect("counts hold every rule")
            .1
    }
}

fn yes(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "yes" | "y" | "1" | "true" => Some(true),
        "no" | "n" | "0" | "false" => Some(false),
        _ => None,
    }
}

/// Reads `ROOT/severity.csv`, writes the labels CSV to `out` under `rule`, and its provenance
/// beside it ([`provenance_path`]).
pub fn write_labels(root: &Path, out: &Path, rule: LinesRule) -> Result<BluesLabels> {
    let path = root.join("severity.csv");
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(&path)
        .with_context(|| {
            format!(
                "opening {} (is this the COVID-BLUES folder?)",
                path.display()
            )
        })?;
    let header = reader
        .headers()
        .with_context(|| format!("{}: header", path.display()))?
        .clone();
    let find = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
    let col = |name: &str| {
        find(name)
            .with_context(|| format!("{}: no `{name}` column in {:?}", path.display(), header))
    };
    let (file_col, a_col, b_col) = (col("video_file")?, col("A-lines")?, col("B-lines")?);
    let severity_col = find("Severity Score");
    ensure!(
        severity_col.is_some() || rule != LinesRule::Severity,
        "{}: no `Severity Score` column for --lines-rule severity",
        path.display()
    );
    let tasks = TaskSet::standard();
    let lines = tasks
        .index("lines")
        .context("the standard task set has no `lines` task")?;
    let mut rows = Vec::new();
    let mut notes_all = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.with_context(|| format!("{}: line {line}", path.display()))?;
        let clip = record
            .get(file_col)
            .unwrap_or("")
            .trim_end_matches(".mp4")
            .to_string();
        let patient = clip
            .strip_prefix("patient_")
            .and_then(|rest| rest.split('_').next())
            .filter(|p| !p.is_empty())
            .with_context(|| {
                format!(
                    "{}: line {line}: clip `{clip}` is not named patient_<ID>_<POINT>",
                    path.display()
                )
            })?
            .to_string();
        let field = |c: usize, name: &str| {
            yes(record.get(c).unwrap_or("")).with_context(|| {
                format!(
                    "{}: line {line}, column `{name}`: expected yes or no",
                    path.display()
                )
            })
        };
        let severity = match severity_col.map(|c| record.get(c).unwrap_or("").trim()) {
            None | Some("") => None,
            Some(text) => Some(
                text.parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite())
                    .with_context(|| {
                        format!(
                            "{}: line {line}, column `Severity Score`: `{text}` is not a number",
                            path.display()
                        )
                    })?,
            ),
        };
        let notes = ClipNotes {
            a_lines: field(a_col, "A-lines")?,
            b_lines: field(b_col, "B-lines")?,
            severity,
        };
        let mut classes = vec![None; tasks.len()];
        classes[lines] = rule.class(&notes);
        rows.push(ClipLabels {
            clip,
            patient,
            classes,
        });
        notes_all.push(notes);
    }
    ensure!(!rows.is_empty(), "{}: no clips", path.display());
    let mut patients: Vec<&str> = rows.iter().map(|r| r.patient.as_str()).collect();
    patients.sort_unstable();
    patients.dedup();
    let counts = LinesRule::ALL
        .iter()
        .map(|r| {
            let mut c = RuleCounts::default();
            for n in &notes_all {
                match r.class(n) {
                    Some(0) => c.a_lines += 1,
                    Some(_) => c.b_lines += 1,
                    None => c.unlabelled += 1,
                }
            }
            (r.name().to_string(), c)
        })
        .collect();
    let mut patterns = [0usize; 4];
    for n in &notes_all {
        patterns[match (n.a_lines, n.b_lines) {
            (true, false) => 0,
            (false, true) => 1,
            (true, true) => 2,
            (false, false) => 3,
        }] += 1;
    }
    let written = BluesLabels {
        dataset: "covid-blues",
        lines_rule: rule,
        counts,
        patients: patients.len(),
        patterns,
    };
    labels::write(out, &tasks, &rows)?;
    let provenance = serde_json::json!({
        "dataset": written.dataset,
        "task": "lines",
        "lines_rule": written.lines_rule,
        "counts_per_rule": written.counts.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "patterns": {"a_only": patterns[0], "b_only": patterns[1], "both": patterns[2], "neither": patterns[3]},
        "patients": written.patients,
    });
    pleura::fsutil::write_atomic(
        &provenance_path(out),
        serde_json::to_string_pretty(&provenance)?.as_bytes(),
    )?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEVERITY: &str = "video_file,Severity Score,A-lines,B-lines,comments\n\
         patient_62_R1,2.0,yes,yes,\"broken pleura, B-lines\"\n\
         patient_62_R2,0.0,yes,no,\n\
         patient_7_L2_2,1.0,no,yes ,\n\
         patient_7_L3,0.0,no,no,\n\
         patient_7_L1,3.0,no,yes,\n";

    fn lines_of(out: &Path) -> Vec<Option<usize>> {
        labels::read(out, &TaskSet::standard())
            .unwrap()
            .iter()
            .map(|r| r.classes[1])
            .collect()
    }

    #[test]
    fn each_rule_labels_the_clips_it_should() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("severity.csv"), SEVERITY).unwrap();
        let out = tmp.path().join("labels.csv");

        let c = write_labels(tmp.path(), &out, LinesRule::Exclusive).unwrap();
        assert_eq!(lines_of(&out), vec![None, Some(0), Some(1), None, Some(1)]);
        assert_eq!(
            *c.used(),
            RuleCounts {
                a_lines: 1,
                b_lines: 2,
                unlabelled: 2
            }
        );
        assert_eq!((c.patients, c.patterns), (2, [1, 2, 1, 1]));
        let rows = labels::read(&out, &TaskSet::standard()).unwrap();
        assert_eq!(
            (rows[2].clip.as_str(), rows[2].patient.as_str()),
            ("patient_7_L2_2", "7")
        );
        let provenance: serde_json::Value =
            serde_json::from_slice(&std::fs::read(provenance_path(&out)).unwrap()).unwrap();
        assert_eq!(provenance["lines_rule"], "exclusive");
        assert_eq!(provenance["counts_per_rule"]["b-present"]["b_lines"], 3);

        write_labels(tmp.path(), &out, LinesRule::BPresent).unwrap();
        assert_eq!(
            lines_of(&out),
            vec![Some(1), Some(0), Some(1), None, Some(1)]
        );
        write_labels(tmp.path(), &out, LinesRule::Severity).unwrap();
        assert_eq!(
            lines_of(&out),
            vec![Some(1), Some(0), None, Some(0), Some(1)]
        );
    }

    #[test]
    fn bad_cells_name_the_line_and_column() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("labels.csv");
        std::fs::write(
            tmp.path().join("severity.csv"),
            "video_file,A-lines,B-lines\nx_1,yes,maybe\n",
        )
        .unwrap();
        let err = format!(
            "{:#}",
            write_labels(tmp.path(), &out, LinesRule::Exclusive).unwrap_err()
        );
        assert!(err.contains("x_1") || err.contains("line 2"), "{err}");
        let err = format!(
            "{:#}",
            write_labels(tmp.path(), &out, LinesRule::Severity).unwrap_err()
        );
        assert!(err.contains("Severity Score"), "{err}");
        std::fs::write(
            tmp.path().join("severity.csv"),
            "video_file,Severity Score,A-lines,B-lines\npatient_1_L1,high,yes,no\n",
        )
        .unwrap();
        let err = format!(
            "{:#}",
            write_labels(tmp.path(), &out, LinesRule::Severity).unwrap_err()
        );
        assert!(err.contains("line 2") && err.contains("high"), "{err}");
    }
}
