//! The labels CSV: one row per clip, naming its patient and its class for each task.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};

use crate::tasks::{class_of_cell, TaskSet};

/// One row of the labels CSV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClipLabels {
    /// Clip id: the name of its folder under `clips/`.
    pub clip: String,
    /// Patient id: splits never separate clips of one patient.
    pub patient: String,
    /// Per task (in the order of the task set): class index, `None` = not labelled.
    pub classes: Vec<Option<usize>>,
}

/// Reads `path`, whose header must have `clip`, `patient` and a column per task of `tasks`
/// (a missing task column means that task is not labelled anywhere).
pub fn read(path: &Path, tasks: &TaskSet) -> Result<Vec<ClipLabels>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("opening labels {}", path.display()))?;
    let header = reader
        .headers()
        .with_context(|| format!("{}: reading the header", path.display()))?
        .clone();
    let column = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (Some(clip_col), Some(patient_col)) = (column("clip"), column("patient")) else {
        bail!(
            "{}: the header needs `clip` and `patient` columns, found {:?}",
            path.display(),
            header
        );
    };
    let task_cols: Vec<Option<usize>> = tasks.iter().map(|t| column(&t.name)).collect();
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.with_context(|| format!("{}: line {line}", path.display()))?;
        let get = |col: usize| record.get(col).unwrap_or("").to_string();
        let clip = get(clip_col);
        ensure!(
            !clip.is_empty(),
            "{}: line {line}: empty `clip`",
            path.display()
        );
        ensure!(
            !clip.contains(['/', '\\']) && clip != "." && clip != "..",
            "{}: line {line}: clip id `{clip}` must be a plain folder name",
            path.display()
        );
        let patient = get(patient_col);
        ensure!(
            !patient.is_empty(),
            "{}: line {line}: clip `{clip}` has no `patient`",
            path.display()
        );
        let classes = tasks
            .iter()
            .zip(&task_cols)
            .map(|(task, col)| match col {
                Some(c) => class_of_cell(task, &get(*c)).map_err(|e| {
                    anyhow::anyhow!(
                        "{}: line {line}, column `{}`: {e}",
                        path.display(),
                        task.name
                    )
                }),
                None => Ok(None),
            })
            .collect::<Result<_>>()?;
        rows.push(ClipLabels {
            clip,
            patient,
            classes,
        });
    }
    ensure!(!rows.is_empty(), "{}: no clips listed", path.display());
    Ok(rows)
}

/// The file beside a labels CSV that records how it was made (an adapter's label rule and
/// class counts): `labels.csv` -> `labels.provenance.json`. `prepare` copies it into
/// `dataset.json`.
pub fn provenance_path(labels_csv: &Path) -> std::path::PathBuf {
    labels_csv.with_extension("provenance.json")
}

/// Writes `rows` with the header `clip,patient,<task names>`.
pub fn write(path: &Path, tasks: &TaskSet, rows: &[ClipLabels]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["clip", "patient"];
    header.extend(tasks.iter().map(|t| t.name.as_str()));
    w.write_record(&header)?;
    for row in rows {
        let mut rec = vec![row.clip.clone(), row.patient.clone()];
        rec.extend(
            tasks
                .iter()
                .zip(&row.classes)
                .map(|(t, c)| c.map_or(String::new(), |c| t.classes[c].to_string())),
        );
        w.write_record(&rec)?;
    }
    let bytes = w.into_inner().context("encoding labels CSV")?;
    pleura::fsutil::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_blank_cells() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.csv");
        let rows = vec![
            ClipLabels {
                clip: "c1".into(),
                patient: "p1".into(),
                classes: vec![Some(0), Some(1), None],
            },
            ClipLabels {
                clip: "c2".into(),
                patient: "p1".into(),
                classes: vec![Some(1), None, Some(0)],
            },
        ];
        write(&path, &TaskSet::standard(), &rows).unwrap();
        assert_eq!(read(&path, &TaskSet::standard()).unwrap(), rows);
    }

    #[test]
    fn bad_class_names_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.csv");
        std::fs::write(&path, "clip,patient,view\nc1,p1,pleural\nc2,p2,sideways\n").unwrap();
        let err = format!("{:#}", read(&path, &TaskSet::standard()).unwrap_err());
        assert!(
            err.contains("line 3") && err.contains("view") && err.contains("sideways"),
            "{err}"
        );
    }

    #[test]
    fn missing_columns_and_task_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.csv");
        std::fs::write(&path, "clip,view\nc1,pleural\n").unwrap();
        assert!(
            format!("{:#}", read(&path, &TaskSet::standard()).unwrap_err()).contains("patient")
        );
        std::fs::write(&path, "clip,patient,lines\nc1,p1,b_lines\n").unwrap();
        let rows = read(&path, &TaskSet::standard()).unwrap();
        assert_eq!(rows[0].classes, vec![None, Some(1), None]);
    }
}
