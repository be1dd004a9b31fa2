//! COVID-BLUES (Wiedemann et al., IEEE JBHI 2025; CC BY-NC-ND 4.0): 362 convex-probe clips at
//! the six BLUE points of 63 patients, with per-clip expert notes on A-lines and B-lines in
//! `severity.csv`. This adapter writes Pleura's labels CSV for it; the clips themselves are read
//! in place by `prepare` (never copied into a repository).
//!
//! Task `lines` per clip: B-lines yes -> `b_lines`; otherwise A-lines yes -> `a_lines`; neither
//! -> not labelled (the clip still serves self-supervised pretraining). There are no view or
//! effusion labels.

use std::path::Path;

use anyhow::{ensure, Context, Result};

use super::labels::{self, ClipLabels};
use crate::tasks::STANDARD;

/// Counts of the written labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BluesLabels {
    /// Clips with B-lines.
    pub b_lines: usize,
    /// Clips with A-lines and no B-lines.
    pub a_lines: usize,
    /// Clips with neither (unlabelled).
    pub unlabelled: usize,
    /// Patients.
    pub patients: usize,
}

fn yes(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "yes" | "y" | "1" | "true" => Some(true),
        "no" | "n" | "0" | "false" => Some(false),
        _ => None,
    }
}

/// Reads `ROOT/severity.csv` and writes the labels CSV to `out`.
pub fn write_labels(root: &Path, out: &Path) -> Result<BluesLabels> {
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
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h.eq_ignore_ascii_case(name))
            .with_context(|| format!("{}: no `{name}` column in {:?}", path.display(), header))
    };
    let (file_col, a_col, b_col) = (col("video_file")?, col("A-lines")?, col("B-lines")?);
    let lines = STANDARD
        .iter()
        .position(|t| t.name == "lines")
        .context("the standard task set has no `lines` task")?;
    let mut rows = Vec::new();
    let mut counts = BluesLabels::default();
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
        let (a, b) = (field(a_col, "A-lines")?, field(b_col, "B-lines")?);
        let class = if b {
            counts.b_lines += 1;
            Some(1)
        } else if a {
            counts.a_lines += 1;
            Some(0)
        } else {
            counts.unlabelled += 1;
            None
        };
        let mut classes = vec![None; STANDARD.len()];
        classes[lines] = class;
        rows.push(ClipLabels {
            clip,
            patient,
            classes,
        });
    }
    ensure!(!rows.is_empty(), "{}: no clips", path.display());
    let mut patients: Vec<&str> = rows.iter().map(|r| r.patient.as_str()).collect();
    patients.sort_unstable();
    patients.dedup();
    counts.patients = patients.len();
    labels::write(out, &STANDARD, &rows)?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b_lines_win_then_a_lines_then_unlabelled() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("severity.csv"),
            "video_file,Severity Score,A-lines,B-lines,comments\n\
             patient_62_R1,2.0,yes,yes,\"broken pleura, B-lines\"\n\
             patient_62_R2,0.0,yes,no,\n\
             patient_7_L2_2,1.0,no,yes ,\n\
             patient_7_L3,0.0,no,no,\n",
        )
        .unwrap();
        let out = tmp.path().join("labels.csv");
        let counts = write_labels(tmp.path(), &out).unwrap();
        assert_eq!(
            counts,
            BluesLabels {
                b_lines: 2,
                a_lines: 1,
                unlabelled: 1,
                patients: 2
            }
        );
        let rows = labels::read(&out, &STANDARD).unwrap();
        let lines: Vec<Option<usize>> = rows.iter().map(|r| r.classes[1]).collect();
        assert_eq!(lines, vec![Some(1), Some(0), Some(1), None]);
        assert_eq!(
            (rows[2].clip.as_str(), rows[2].patient.as_str()),
            ("patient_7_L2_2", "7")
        );

        std::fs::write(
            tmp.path().join("severity.csv"),
            "video_file,A-lines,B-lines\nx_1,yes,maybe\n",
        )
        .unwrap();
        let err = format!("{:#}", write_labels(tmp.path(), &out).unwrap_err());
        assert!(err.contains("x_1") || err.contains("line 2"), "{err}");
    }
}
