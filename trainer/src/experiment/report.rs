//! `summary.json` and a Markdown table shaped like the paper's: one block per evaluation set,
//! one line per initialisation and head, one column per task, mean AUC over seeds with the
//! mean 95% patient-bootstrap interval, and the difference to the scratch baseline.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::run::ResultRow;
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
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("{}: not JSON", path.display()))?;
    serde_json::from_value(value["rows"].clone()).with_context(|| {
        format!(
            "{}: field `rows` is not a list of result rows",
            path.display()
        )
    })
}

/// Writes `OUT/summary.json` (`{"experiment": settings, "rows": rows}`) and `OUT/summary.md`.
pub fn write_summary(out: &Path, settings: &impl Serialize, rows: &[ResultRow]) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json = serde_json::json!({
        "experiment": settings,
        "versions": BTreeMap::from([("pleura-train", env!("CARGO_PKG_VERSION")), ("burn", "0.22.1")]),
        "rows": rows,
    });
    write_atomic(
        &out.join("summary.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    write_atomic(&out.join("summary.md"), markdown(rows).as_bytes())?;
    write_plots(out, rows)
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
        };
        ResultRow {
            task: task.into(),
            init: init.into(),
            head: "linear".into(),
            label_fraction: 1.0,
            seed,
            val_auc: Some(auc),
            test_auc: Some(auc),
            test_auc_ci: e.auc_ci,
            train_frames: 10,
            test: e.clone(),
            external: BTreeMap::from([("ext".to_string(), e)]),
            roc: BTreeMap::new(),
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
        write_summary(tmp.path(), &"settings", &rows).unwrap();
        let back = read_rows(&tmp.path().join("summary.json")).unwrap();
        assert_eq!(markdown(&back), markdown(&rows));

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
