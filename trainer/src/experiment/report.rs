//! `summary.json` and a Markdown table shaped like the paper's: one block per evaluation set,
//! one line per initialisation and head, one column per task, mean AUC over seeds with the
//! mean 95% patient-bootstrap interval, and the difference to the scratch baseline.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::cv::{CvRow, CvSet, Delta, Estimate};
use super::run::{Outcome, ResultRow};
use super::Evaluation;
use crate::eval::plots::{line_chart, Chart, Series};
use pleura::fsutil::write_atomic;

/// Mean AUC and mean interval of a group of rows (`None` when no row has an AUC).
fn mean_auc<'a>(evals: impl Iterator<Item = &'a Evaluation>) -> Option<(f64, Option<[f64; 2]>)> {
    let (mut sum, mut n, mut lo, mut hi, mut n_ci) = (0.0, 0usize, 0.0, 0.0, 0usize);
    for e in evals {
        if let Some(a) = e.auc {
            sum += a;
            n += 1;
        }
        if let Some([l, h]) = e.auc_ci {
            lo += l;
            hi += h;
            n_ci += 1;
        }
    }
    (n > 0).then(|| {
        let ci = (n_ci > 0).then(|| [lo / n_ci as f64, hi / n_ci as f64]);
        (sum / n as f64, ci)
    })
}

/// The Markdown tables of `rows`.
pub fn markdown(rows: &[ResultRow]) -> String {
    let tasks: Vec<&str> = unique(rows.iter().map(|r| r.task.as_str()));
    let models: Vec<(&str, &str, String)> = unique(rows.iter().map(|r| {
        (
            r.init.as_str(),
            r.head.as_str(),
            format!("{}", r.label_fraction),
        )
    }));
    let mut sets: Vec<String> = vec!["local test".into()];
    for r in rows {
        for name in r.external.keys() {
            if !sets.contains(name) {
                sets.push(name.clone());
            }
        }
    }
    let mut out = String::new();
    for (set, clip_level) in sets.iter().flat_map(|s| [(s, false), (s, true)]) {
        // Clip level: the AUC of clip scores (mean frame probability), no interval.
        let eval_of = |r: &ResultRow| -> Option<Evaluation> {
            let e = if set == "local test" {
                Some(r.test.clone())
            } else {
                r.external.get(set).cloned()
            }?;
            Some(if clip_level {
                Evaluation {
                    auc: e.clip_auc,
                    auc_ci: None,
                    ..e
                }
            } else {
                e
            })
        };
        let first = rows.iter().find_map(eval_of);
        let _ = writeln!(
            out,
            "### {set}, {}{}\n",
            if clip_level {
                "clip level"
            } else {
                "frame level"
            },
            first.map_or(String::new(), |e| format!(
                " ({} patients, {} clips, {} frames)",
                e.patients, e.clips, e.frames
            ))
        );
        let _ = write!(out, "| backbone | head | labels |");
        for t in &tasks {
            let _ = write!(out, " {t} |");
        }
        let _ = writeln!(out, " mean | vs scratch |");
        let _ = writeln!(out, "|---|---|---|{}---|---|", "---|".repeat(tasks.len()));
        let mean_of = |init: &str, head: &str, fraction: &str, task: &str| {
            let evals: Vec<Evaluation> = rows
                .iter()
                .filter(|r| {
                    r.init == init
                        && r.head == head
                        && format!("{}", r.label_fraction) == fraction
                        && r.task == task
                })
                .filter_map(eval_of)
                .collect();
            mean_auc(evals.iter())
        };
        for (init, head, fraction) in &models {
            let _ = write!(out, "| {init} | {head} | {}% |", percent(fraction));
            let mut means = Vec::new();
            let mut deltas = Vec::new();
            for t in &tasks {
                match mean_of(init, head, fraction, t) {
                    Some((m, ci)) => {
                        means.push(m);
                        if let Some((s, _)) = mean_of("scratch", head, fraction, t) {
                            deltas.push(m - s);
                        }
                        let ci = ci.map_or(String::new(), |[l, h]| format!(" [{l:.3}, {h:.3}]"));
                        let _ = write!(out, " {m:.3}{ci} |");
                    }
                    None => {
                        let _ = write!(out, " n/a |");
                    }
                }
            }
            let avg = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
            let delta = if *init == "scratch" || deltas.is_empty() {
                "".to_string()
            } else {
                format!("{:+.3}", avg(&deltas))
            };
            let _ = writeln!(out, " {:.3} | {delta} |", avg(&means));
        }
        let _ = writeln!(out);
    }
    let seeds = unique(rows.iter().map(|r| r.seed)).len();
    let _ = writeln!(
        out,
        "ROC AUC, mean over {seeds} seed(s); brackets: mean 95% interval, bootstrap over \
         patients. Clip level scores each clip by the mean of its frame probabilities. \
         `vs scratch`: mean over tasks of the difference to the random-init backbone with the \
         same head."
    );
    out
}

fn percent(fraction: &str) -> String {
    fraction
        .parse::<f64>()
        .map_or(fraction.to_string(), |f| format!("{}", f * 100.0))
}

fn unique<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

fn file_part(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// ROC curves (`OUT/roc_<task>_<set>.png/.svg`): one curve per backbone and head, at the
/// largest label fraction, first seed. Label efficiency (`OUT/label_efficiency_<task>_<set>`)
/// when there are several fractions: mean AUC over seeds against the fraction.
pub fn write_plots(out: &Path, rows: &[ResultRow]) -> Result<()> {
    let tasks = unique(rows.iter().map(|r| r.task.as_str()));
    let models = unique(rows.iter().map(|r| (r.init.as_str(), r.head.as_str())));
    let fractions = unique(rows.iter().map(|r| r.label_fraction.to_bits()));
    let top = fractions
        .iter()
        .map(|&b| f64::from_bits(b))
        .fold(0.0, f64::max);
    let first_seed = rows.first().map_or(0, |r| r.seed);
    for task in &tasks {
        let sets = unique(
            rows.iter()
                .filter(|r| r.task == *task)
                .flat_map(|r| r.roc.keys().cloned()),
        );
        for set in &sets {
            let mut names = Vec::new();
            let mut curves = Vec::new();
            let mut efficiency = Vec::new();
            for (init, head) in &models {
                let of_model =
                    |r: &&ResultRow| r.task == *task && r.init == *init && r.head == *head;
                if let Some(r) = rows
                    .iter()
                    .filter(of_model)
                    .find(|r| r.label_fraction == top && r.seed == first_seed)
                {
                    let auc = if set == "local test" {
                        r.test.auc
                    } else {
                        r.external.get(set).and_then(|e| e.auc)
                    };
                    names.push(format!(
                        "{init} {head} (AUC {})",
                        auc.map_or("n/a".into(), |a| format!("{a:.3}"))
                    ));
                    curves.push(r.roc.get(set).cloned().unwrap_or_default());
                }
                let mut points = Vec::new();
                for &bits in &fractions {
                    let f = f64::from_bits(bits);
                    let aucs: Vec<f64> = rows
                        .iter()
                        .filter(of_model)
                        .filter(|r| r.label_fraction == f)
                        .filter_map(|r| {
                            if set == "local test" {
                                r.test.auc
                            } else {
                                r.external.get(set).and_then(|e| e.auc)
                            }
                        })
                        .collect();
                    if !aucs.is_empty() {
                        points.push((
                            (f * 100.0).log10(),
                            aucs.iter().sum::<f64>() / aucs.len() as f64,
                        ));
                    }
                }
                efficiency.push((format!("{init} {head}"), points));
            }
            let mut series: Vec<Series> = names
                .iter()
                .zip(&curves)
                .map(|(n, c)| Series {
                    name: n,
                    points: c.clone(),
                })
                .collect();
            if series.iter().all(|s| s.points.is_empty()) {
                log::info!("no ROC curve for {task} on {set}: a class is missing there");
                continue;
            }
            series.push(Series {
                name: "chance",
                points: vec![(0.0, 0.0), (1.0, 1.0)],
            });
            let title = format!("ROC, {task}, {set}");
            line_chart(
                &out.join(format!("roc_{}_{}", file_part(task), file_part(set))),
                &Chart {
                    title: &title,
                    x_label: "false positive rate",
                    y_label: "true positive rate",
                },
                &series,
            )?;
            if fractions.len() > 1 && efficiency.iter().any(|(_, p)| !p.is_empty()) {
                let title = format!("Label efficiency, {task}, {set}");
                let series: Vec<Series> = efficiency
                    .iter()
                    .map(|(n, p)| Series {
                        name: n,
                        points: p.clone(),
                    })
                    .collect();
                line_chart(
                    &out.join(format!(
                        "label_efficiency_{}_{}",
                        file_part(task),
                        file_part(set)
                    )),
                    &Chart {
                        title: &title,
                        x_label:
                            "labelled training clips used, log10 of percent (0 = 1%, 2 = 100%)",
                        y_label: "ROC AUC, mean over seeds",
                    },
                    &series,
                )?;
            }
        }
    }
    Ok(())
}

/// Reads the rows of a `summary.json` written by [`write_summary`].
pub fn read_rows(path: &Path) -> Result<Vec<ResultRow>> {
    summary_field(&read_json(path)?, path, "rows", "a list of result rows")
}

/// Reads a whole `summary.json` back: its rows, and its cross-validation rows and notes (both
/// empty in older summaries).
pub fn read_outcome(path: &Path) -> Result<Outcome> {
    let value = read_json(path)?;
    Ok(Outcome {
        rows: summary_field(&value, path, "rows", "a list of result rows")?,
        cv: optional_field(&value, path, "cv", "a list of pooled rows")?,
        notes: optional_field(&value, path, "notes", "a list of strings")?,
    })
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{}: not JSON", path.display()))
}

/// Field `name` of a summary read from `path`, which should be `what`.
fn summary_field<T: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
    path: &Path,
    name: &str,
    what: &str,
) -> Result<T> {
    serde_json::from_value(value[name].clone())
        .with_context(|| format!("{}: field `{name}` is not {what}", path.display()))
}

/// [`summary_field`], or empty where the field is absent.
fn optional_field<T: serde::de::DeserializeOwned + Default>(
    value: &serde_json::Value,
    path: &Path,
    name: &str,
    what: &str,
) -> Result<T> {
    match value[name] {
        serde_json::Value::Null => Ok(T::default()),
        _ => summary_field(value, path, name, what),
    }
}

/// Writes `OUT/summary.json` (`{"experiment": settings, "notes": .., "rows": per-model rows,
/// "cv": pooled cross-validation rows}`), `OUT/summary.md` and the plots.
pub fn write_summary(out: &Path, settings: &impl Serialize, outcome: &Outcome) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json = serde_json::json!({
        "experiment": settings,
        "versions": BTreeMap::from([("pleura-train", env!("CARGO_PKG_VERSION")), ("burn", "0.22.1")]),
        "notes": outcome.notes,
        "rows": outcome.rows,
        "cv": outcome.cv,
    });
    write_atomic(
        &out.join("summary.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    write_atomic(&out.join("summary.md"), full_markdown(outcome).as_bytes())?;
    write_plots(out, &outcome.rows)
}

/// The whole report: notes, then the cross-validation tables (with folds) or the per-split
/// tables.
pub fn full_markdown(outcome: &Outcome) -> String {
    let mut out = String::new();
    for note in &outcome.notes {
        let _ = writeln!(out, "- {note}");
    }
    if !outcome.notes.is_empty() {
        let _ = writeln!(out);
    }
    if outcome.cv.is_empty() {
        out.push_str(&markdown(&outcome.rows));
    } else {
        out.push_str(&cv_markdown(&outcome.cv));
    }
    out
}

fn estimate(e: Option<&Estimate>, signed: bool) -> String {
    match e {
        None => "n/a".into(),
        Some(e) => {
            let v = if signed {
                format!("{:+.3}", e.value)
            } else {
                format!("{:.3}", e.value)
            };
            match e.ci {
                Some([l, h]) if signed => format!("{v} [{l:+.3}, {h:+.3}]"),
                Some([l, h]) => format!("{v} [{l:.3}, {h:.3}]"),
                None => v,
            }
        }
    }
}

fn spread(set: &CvSet) -> String {
    match (set.fold_mean, set.fold_sd) {
        (Some(m), Some(sd)) => format!("{m:.3} ± {sd:.3}"),
        (Some(m), None) => format!("{m:.3}"),
        _ => "n/a".into(),
    }
}

fn delta_cells(d: Option<&Delta>, rules: &[String]) -> String {
    let Some(d) = d else {
        // Frame, one per clip rule, folds.
        return " |".repeat(rules.len() + 2);
    };
    let mut out = format!(" {} |", estimate(d.frame.as_ref(), true));
    for r in rules {
        let _ = write!(out, " {} |", estimate(d.clip.get(r), true));
    }
    let _ = write!(out, " {}/{} |", d.folds_better, d.folds);
    out
}

/// The Markdown tables of pooled cross-validation rows: per task and set, one line per
/// backbone x head x fraction with pooled frame and clip AUCs, then the paired differences.
pub fn cv_markdown(rows: &[CvRow]) -> String {
    let mut out = String::new();
    let tasks = unique(rows.iter().map(|r| r.task.as_str()));
    let mut sets = vec!["local".to_string()];
    for r in rows {
        for name in r.external.keys() {
            if !sets.contains(name) {
                sets.push(name.clone());
            }
        }
    }
    let rules: Vec<String> = unique(rows.iter().flat_map(|r| r.local.clip.keys().cloned()));
    let folds = rows.first().map_or(0, |r| r.folds);
    for task in &tasks {
        for set_name in &sets {
            let of_set = |r: &CvRow| -> Option<CvSet> {
                if set_name == "local" {
                    Some(r.local.clone())
                } else {
                    r.external.get(set_name).cloned()
                }
            };
            let group: Vec<&CvRow> = rows
                .iter()
                .filter(|r| r.task == *task && of_set(r).is_some_and(|s| s.frames > 0))
                .collect();
            let Some(first) = group.first().and_then(|r| of_set(r)) else {
                continue;
            };
            let how = if set_name == "local" {
                format!("{folds}-fold cross-validation by patient, every patient tested once (out of fold)")
            } else {
                format!("external, ensemble of the {folds} fold models")
            };
            let _ = writeln!(
                out,
                "### {task}, {set_name}: {how} ({} patients, {} clips, {} frames)\n",
                first.patients, first.clips, first.frames
            );
            let _ = write!(
                out,
                "| backbone | method | head | labels | frame AUC [95% CI] | per fold, mean ± sd |"
            );
            for r in &rules {
                let _ = write!(out, " clip {r} [95% CI] |");
            }
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "|---|---|---|---|---|---|{}",
                "---|".repeat(rules.len())
            );
            for r in &group {
                let Some(set) = of_set(r) else { continue };
                let _ = write!(
                    out,
                    "| {} | {} | {} | {}% | {} | {} |",
                    r.init,
                    r.method,
                    r.head,
                    r.label_fraction * 100.0,
                    estimate(set.auc.as_ref(), false),
                    spread(&set)
                );
                for rule in &rules {
                    let _ = write!(out, " {} |", estimate(set.clip.get(rule), false));
                }
                let _ = writeln!(out);
            }
            let compared: Vec<&&CvRow> = group
                .iter()
                .filter(|r| {
                    r.vs_scratch.contains_key(set_name) || r.vs_pixels.contains_key(set_name)
                })
                .collect();
            if !compared.is_empty() {
                let _ = writeln!(
                    out,
                    "\nPaired differences on the same patients (backbone minus baseline, same head and labels; 95% paired bootstrap over patients; folds: how many fold models beat the baseline's):\n"
                );
                let head_cells = |base: &str| {
                    let mut h = format!(" vs {base}: frame |");
                    for r in &rules {
                        let _ = write!(h, " clip {r} |");
                    }
                    h.push_str(" folds |");
                    h
                };
                let _ = writeln!(
                    out,
                    "| backbone | head | labels |{}{}",
                    head_cells("pixels"),
                    head_cells("scratch")
                );
                let _ = writeln!(out, "|---|---|---|{}", "---|".repeat(2 * (rules.len() + 2)));
                for r in compared {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {}% |{}{}",
                        r.init,
                        r.head,
                        r.label_fraction * 100.0,
                        delta_cells(r.vs_pixels.get(set_name), &rules),
                        delta_cells(r.vs_scratch.get(set_name), &rules)
                    );
                }
            }
            let _ = writeln!(out);
        }
    }
    let _ = writeln!(
        out,
        "ROC AUC, mean over seeds. Intervals: 95%, bootstrap over patients (clip level: over the \
         patients of the clips). Clip rules: `mean` = mean frame probability, `top25` = mean of \
         the highest quarter of the frames, `runN` = the highest threshold that N consecutive \
         frames all exceed (Arntfield et al. 2021's longest-run rule, swept for the ROC)."
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(task: &str, init: &str, seed: u64, auc: f64) -> ResultRow {
        let e = Evaluation {
            frames: 10,
            clips: 2,
            patients: 2,
            auc: Some(auc),
            auc_ci: Some([auc - 0.1, (auc + 0.1).min(1.0)]),
            clip_auc: Some(auc),
            clip: BTreeMap::new(),
        };
        ResultRow {
            task: task.into(),
            init: init.into(),
            head: "linear".into(),
            method: init.into(),
            label_fraction: 1.0,
            seed,
            fold: None,
            val_auc: Some(auc),
            test_auc: Some(auc),
            test_auc_ci: e.auc_ci,
            train_frames: 10,
            test: e.clone(),
            external: BTreeMap::from([("ext".to_string(), e)]),
            roc: BTreeMap::new(),
            scores: Default::default(),
        }
    }

    #[test]
    fn table_averages_seeds_and_compares_with_scratch() {
        let rows = vec![
            row("view", "scratch", 0, 0.6),
            row("view", "scratch", 1, 0.7),
            row("view", "simclr", 0, 0.9),
            row("view", "simclr", 1, 0.8),
        ];
        let md = markdown(&rows);
        assert!(
            md.contains("### local test, frame level (2 patients, 2 clips, 10 frames)"),
            "{md}"
        );
        assert!(
            md.contains("### ext, frame level") && md.contains("### local test, clip level"),
            "{md}"
        );
        assert!(
            md.contains("| scratch | linear | 100% | 0.650 [0.550, 0.750] | 0.650 |  |"),
            "{md}"
        );
        assert!(
            md.contains("| simclr | linear | 100% | 0.850 [0.750, 0.950] | 0.850 | +0.200 |"),
            "{md}"
        );
    }

    #[test]
    fn summaries_round_trip_and_bad_ones_name_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let rows = vec![
            row("view", "scratch", 0, 0.6),
            row("view", "simclr", 0, 0.9),
        ];
        let outcome = Outcome {
            rows: rows.clone(),
            cv: Vec::new(),
            notes: vec!["a note".into()],
        };
        write_summary(tmp.path(), &"settings", &outcome).unwrap();
        let md = std::fs::read_to_string(tmp.path().join("summary.md")).unwrap();
        assert!(md.starts_with("- a note\n"), "{md}");
        let back = read_rows(&tmp.path().join("summary.json")).unwrap();
        assert_eq!(markdown(&back), markdown(&rows));
        let whole = read_outcome(&tmp.path().join("summary.json")).unwrap();
        assert_eq!(full_markdown(&whole), full_markdown(&outcome));

        // An older summary without `cv` and `notes`; a `notes` field of the wrong kind.
        let old = tmp.path().join("old.json");
        let rows_json = serde_json::to_string(&rows).unwrap();
        std::fs::write(&old, format!(r#"{{"rows": {rows_json}}}"#)).unwrap();
        let whole = read_outcome(&old).unwrap();
        assert!(whole.cv.is_empty() && whole.notes.is_empty());
        std::fs::write(&old, format!(r#"{{"rows": {rows_json}, "notes": 3}}"#)).unwrap();
        let err = format!("{:#}", read_outcome(&old).unwrap_err());
        assert!(err.contains("old.json") && err.contains("`notes`"), "{err}");

        let bad = tmp.path().join("bad.json");
        std::fs::write(&bad, r#"{"rows": [{"task": "view"}]}"#).unwrap();
        let err = format!("{:#}", read_rows(&bad).unwrap_err());
        assert!(err.contains("bad.json") && err.contains("rows"), "{err}");
        std::fs::write(&bad, "not json").unwrap();
        assert!(format!("{:#}", read_rows(&bad).unwrap_err()).contains("bad.json"));
        let missing = tmp.path().join("missing.json");
        assert!(format!("{:#}", read_rows(&missing).unwrap_err()).contains("missing.json"));
    }
}
