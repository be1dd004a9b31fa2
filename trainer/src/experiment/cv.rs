//! Cross-validation results pooled over folds, and paired comparisons against the baselines.
//!
//! Every patient is tested exactly once, by the model of its fold, so the out-of-fold scores of
//! all folds together score every labelled frame once: the *pooled* AUC uses all patients,
//! where a single split tests a fifth of them. For each backbone x head x label fraction:
//!
//! - the pooled frame AUC, mean over seeds, with a 95% interval from a bootstrap over patients
//!   (each resample recomputes every seed's AUC and averages them);
//! - the per-fold AUCs (mean over seeds) with their mean and standard deviation: the spread a
//!   user sees from one split to the next;
//! - clip AUCs under each clip rule ([`ClipRule`]), with intervals from a bootstrap over patients
//!   at clip level;
//! - on each external set, the *ensemble* of the k fold models (mean of their probabilities),
//!   scored the same way, plus each fold model's own AUC;
//! - against the random-initialisation baseline (`scratch`) and the pixel floor (`pixels`) with
//!   the same head and fraction: the difference of the pooled AUCs with a *paired* bootstrap
//!   interval (both models scored on the same resampled patients), and in how many folds the
//!   backbone beat the baseline.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::run::ResultRow;
use super::{clip_rule_auc, clips_of, patient_indices, ClipScores};
use crate::data::frames::FrameSet;
use crate::eval::auc::roc_auc;
use crate::eval::bootstrap::patient_bootstrap;
use crate::eval::clip::ClipRule;
use crate::tasks::TaskSet;
use crate::train::labelled;

/// An AUC with its 95% interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The estimate (mean over seeds).
    pub value: f64,
    /// 95% interval, bootstrap over patients.
    pub ci: Option<[f64; 2]>,
}

/// One evaluation set, pooled over folds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CvSet {
    /// Patients, clips and frames scored.
    pub patients: usize,
    /// See `patients`.
    pub clips: usize,
    /// See `patients`.
    pub frames: usize,
    /// Frame-level AUC.
    pub auc: Option<Estimate>,
    /// Per fold (in fold order): the AUC of that fold's model on its own test patients (local)
    /// or on the whole set (external), mean over seeds.
    pub fold_auc: Vec<Option<f64>>,
    /// Mean of `fold_auc`.
    pub fold_mean: Option<f64>,
    /// Sample standard deviation of `fold_auc`.
    pub fold_sd: Option<f64>,
    /// Clip-level AUC per clip rule.
    pub clip: BTreeMap<String, Estimate>,
}

/// A backbone minus a baseline on one set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// Frame-level AUC difference, paired bootstrap interval.
    pub frame: Option<Estimate>,
    /// Clip-level AUC difference per clip rule.
    pub clip: BTreeMap<String, Estimate>,
    /// Folds whose model beat the baseline's on the frame AUC.
    pub folds_better: usize,
    /// Folds compared.
    pub folds: usize,
}

/// One backbone x head x label fraction, over all folds and seeds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CvRow {
    /// Task name.
    pub task: String,
    /// Backbone name (`scratch`, `pixels`, a pretraining run's folder, ...).
    pub init: String,
    /// How the backbone was made (`scratch`, `pixels`, `simclr`, ...).
    pub method: String,
    /// `linear`, `mlp` or `finetune`.
    pub head: String,
    /// Fraction of the training labels used.
    pub label_fraction: f64,
    /// Seeds averaged.
    pub seeds: usize,
    /// Folds.
    pub folds: usize,
    /// Out-of-fold scores of every labelled local frame.
    pub local: CvSet,
    /// Each external set: the ensemble of the fold models.
    pub external: BTreeMap<String, CvSet>,
    /// Against `scratch` with the same head and fraction, by set (`local` or an external name).
    pub vs_scratch: BTreeMap<String, Delta>,
    /// Against `pixels` with the same head and fraction, by set.
    pub vs_pixels: BTreeMap<String, Delta>,
}

/// The scores of one model group on one set, aligned by example across seeds.
struct Aligned {
    labels: Vec<bool>,
    /// Patient of each example.
    patient: Vec<usize>,
    /// Per seed, a score per example.
    seeds: Vec<Vec<f32>>,
    /// Per seed, the clips with their frame scores in time order.
    clips: Vec<Vec<ClipScores>>,
    /// Per fold, mean over seeds of that fold model's AUC.
    fold_auc: Vec<Option<f64>>,
}

impl Aligned {
    fn frames(&self) -> usize {
        self.labels.len()
    }

    /// Mean over seeds of the AUC on examples `sample`.
    fn auc_on(&self, sample: &[usize]) -> Option<f64> {
        let labels: Vec<bool> = sample.iter().map(|&i| self.labels[i]).collect();
        mean(self.seeds.iter().map(|scores| {
            let s: Vec<f32> = sample.iter().map(|&i| scores[i]).collect();
            roc_auc(&s, &labels)
        }))
    }

    /// Mean over seeds of the clip AUC under `rule` on clips `sample`.
    fn clip_auc_on(&self, rule: ClipRule, sample: &[usize]) -> Option<f64> {
        mean(self.clips.iter().map(|clips| {
            let picked: Vec<ClipScores> = sample.iter().map(|&c| clips[c].clone()).collect();
            clip_rule_auc(&picked, rule)
        }))
    }

    fn clip_patients(&self) -> Vec<usize> {
        self.clips
            .first()
            .map_or_else(Vec::new, |c| c.iter().map(|c| c.patient).collect())
    }

    fn all(&self) -> Vec<usize> {
        (0..self.frames()).collect()
    }
}

/// Mean of the defined values; `None` when any is undefined or there are none.
fn mean(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let (mut sum, mut n) = (0.0, 0usize);
    for v in values {
        sum += v?;
        n += 1;
    }
    (n > 0).then(|| sum / n as f64)
}

fn mean_sd(values: &[Option<f64>]) -> (Option<f64>, Option<f64>) {
    let v: Vec<f64> = values.iter().flatten().copied().collect();
    if v.is_empty() {
        return (None, None);
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let sd = (v.len() > 1)
        .then(|| (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt());
    (Some(m), sd)
}

/// Rows of one model group (same task, backbone, head, fraction), by seed then fold.
fn by_seed<'a>(rows: &[&'a ResultRow]) -> BTreeMap<u64, Vec<&'a ResultRow>> {
    let mut out: BTreeMap<u64, Vec<&ResultRow>> = BTreeMap::new();
    for r in rows {
        out.entry(r.seed).or_default().push(r);
    }
    for list in out.values_mut() {
        list.sort_by_key(|r| r.fold);
    }
    out
}

fn fold_means(
    rows: &[&ResultRow],
    folds: usize,
    auc: impl Fn(&ResultRow) -> Option<f64>,
) -> Vec<Option<f64>> {
    (0..folds)
        .map(|f| mean(rows.iter().filter(|r| r.fold == Some(f)).map(|r| auc(r))))
        .collect()
}

/// The out-of-fold local scores of a group.
fn align_local(
    rows: &[&ResultRow],
    frames: &FrameSet,
    task: usize,
    folds: usize,
) -> Option<Aligned> {
    let seeds = by_seed(rows);
    let mut index: Vec<usize> = seeds
        .values()
        .next()?
        .iter()
        .flat_map(|r| r.scores.test_index.iter().copied())
        .collect();
    index.sort_unstable();
    let position: BTreeMap<usize, usize> = index.iter().enumerate().map(|(k, &i)| (i, k)).collect();
    let labels: Vec<bool> = index
        .iter()
        .map(|&i| frames.class(i, task) == Some(1))
        .collect();
    let patient = patient_indices(&index, frames);
    let mut per_seed = Vec::new();
    for list in seeds.values() {
        let mut scores = vec![f32::NAN; index.len()];
        for r in list {
            for (&i, &s) in r.scores.test_index.iter().zip(&r.scores.test) {
                scores[*position.get(&i)?] = s;
            }
        }
        if scores.iter().any(|s| s.is_nan()) {
            log::warn!("a seed's folds do not cover the same frames: pooled scores skipped");
            return None;
        }
        per_seed.push(scores);
    }
    let clips = per_seed
        .iter()
        .map(|s| clips_of(&index, s, &labels, frames, &patient))
        .collect();
    Some(Aligned {
        labels,
        patient,
        seeds: per_seed,
        clips,
        fold_auc: fold_means(rows, folds, |r| r.test.auc),
    })
}

/// The fold models' ensemble on external set `k`.
fn align_external(
    rows: &[&ResultRow],
    frames: &FrameSet,
    task: usize,
    k: usize,
    name: &str,
    folds: usize,
) -> Option<Aligned> {
    let set = labelled(frames, task, |_| true);
    if set.is_empty() {
        return None;
    }
    let patient = patient_indices(&set.index, frames);
    let mut per_seed = Vec::new();
    for list in by_seed(rows).values() {
        let mut sum = vec![0.0f32; set.len()];
        for r in list {
            let s = r.scores.external.get(k)?;
            if s.len() != set.len() {
                return None;
            }
            sum.iter_mut().zip(s).for_each(|(a, b)| *a += b);
        }
        sum.iter_mut().for_each(|v| *v /= list.len() as f32);
        per_seed.push(sum);
    }
    let clips = per_seed
        .iter()
        .map(|s| clips_of(&set.index, s, &set.positive, frames, &patient))
        .collect();
    Some(Aligned {
        labels: set.positive,
        patient,
        seeds: per_seed,
        clips,
        fold_auc: fold_means(rows, folds, |r| r.external.get(name).and_then(|e| e.auc)),
    })
}

fn summarise(a: &Aligned, rules: &[ClipRule], reps: usize, seed: u64) -> CvSet {
    let all = a.all();
    let auc = a.auc_on(&all).map(|value| Estimate {
        value,
        ci: patient_bootstrap(&a.patient, reps, 0.95, seed, |s| a.auc_on(s)),
    });
    let clip_patient = a.clip_patients();
    let all_clips: Vec<usize> = (0..clip_patient.len()).collect();
    let clip = rules
        .iter()
        .filter_map(|&rule| {
            let value = a.clip_auc_on(rule, &all_clips)?;
            let ci = patient_bootstrap(&clip_patient, reps, 0.95, seed, |s| a.clip_auc_on(rule, s));
            Some((rule.name(), Estimate { value, ci }))
        })
        .collect();
    let (fold_mean, fold_sd) = mean_sd(&a.fold_auc);
    let mut patients = a.patient.clone();
    patients.sort_unstable();
    patients.dedup();
    CvSet {
        patients: patients.len(),
        clips: clip_patient.len(),
        frames: a.frames(),
        auc,
        fold_auc: a.fold_auc.clone(),
        fold_mean,
        fold_sd,
        clip,
    }
}

/// `a - b` on the same examples, with paired patient-bootstrap intervals.
fn delta(a: &Aligned, b: &Aligned, rules: &[ClipRule], reps: usize, seed: u64) -> Option<Delta> {
    if a.labels != b.labels || a.patient != b.patient {
        return None;
    }
    let all = a.all();
    let frame = match (a.auc_on(&all), b.auc_on(&all)) {
        (Some(x), Some(y)) => Some(Estimate {
            value: x - y,
            ci: patient_bootstrap(&a.patient, reps, 0.95, seed, |s| {
                Some(a.auc_on(s)? - b.auc_on(s)?)
            }),
        }),
        _ => None,
    };
    let clip_patient = a.clip_patients();
    let all_clips: Vec<usize> = (0..clip_patient.len()).collect();
    let clip = rules
        .iter()
        .filter_map(|&rule| {
            let value = a.clip_auc_on(rule, &all_clips)? - b.clip_auc_on(rule, &all_clips)?;
            let ci = patient_bootstrap(&clip_patient, reps, 0.95, seed, |s| {
                Some(a.clip_auc_on(rule, s)? - b.clip_auc_on(rule, s)?)
            });
            Some((rule.name(), Estimate { value, ci }))
        })
        .collect();
    let pairs: Vec<(f64, f64)> = a
        .fold_auc
        .iter()
        .zip(&b.fold_auc)
        .filter_map(|(x, y)| Some(((*x)?, (*y)?)))
        .collect();
    Some(Delta {
        frame,
        clip,
        folds_better: pairs.iter().filter(|(x, y)| x > y).count(),
        folds: pairs.len(),
    })
}

/// Pools the cross-validation `rows` (every fold of every model) into one row per task x
/// backbone x head x fraction, with comparisons against `scratch` and `pixels`.
pub fn pool(
    rows: &[ResultRow],
    frames: &FrameSet,
    externals: &[(String, FrameSet)],
    rules: &[ClipRule],
    reps: usize,
) -> Vec<CvRow> {
    type Key = (String, String, String, u64);
    let mut groups: Vec<(Key, Vec<&ResultRow>)> = Vec::new();
    for r in rows.iter().filter(|r| r.fold.is_some()) {
        let key = (
            r.task.clone(),
            r.init.clone(),
            r.head.clone(),
            r.label_fraction.to_bits(),
        );
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, list)) => list.push(r),
            None => groups.push((key, vec![r])),
        }
    }
    let folds = rows
        .iter()
        .filter_map(|r| r.fold)
        .max()
        .map_or(0, |f| f + 1);
    // Aligned scores per group and set ("local" or an external name).
    let tasks = TaskSet::standard();
    let aligned: Vec<BTreeMap<String, Aligned>> = groups
        .iter()
        .map(|((task, ..), list)| {
            let t = tasks.index(task).unwrap_or(0);
            let mut sets = BTreeMap::new();
            if let Some(a) = align_local(list, frames, t, folds) {
                sets.insert("local".to_string(), a);
            }
            for (k, (name, f)) in externals.iter().enumerate() {
                if let Some(a) = align_external(list, f, t, k, name, folds) {
                    sets.insert(name.clone(), a);
                }
            }
            sets
        })
        .collect();
    let baseline = |key: &Key, init: &str| {
        groups
            .iter()
            .position(|(k, _)| k.0 == key.0 && k.1 == init && k.2 == key.2 && k.3 == key.3)
    };
    groups
        .iter()
        .enumerate()
        .map(|(g, (key, list))| {
            let seed = 7 + g as u64;
            let sets = &aligned[g];
            let mut row = CvRow {
                task: key.0.clone(),
                init: key.1.clone(),
                method: list[0].method.clone(),
                head: key.2.clone(),
                label_fraction: f64::from_bits(key.3),
                seeds: by_seed(list).len(),
                folds,
                local: sets
                    .get("local")
                    .map(|a| summarise(a, rules, reps, seed))
                    .unwrap_or_default(),
                external: sets
                    .iter()
                    .filter(|(n, _)| *n != "local")
                    .map(|(n, a)| (n.clone(), summarise(a, rules, reps, seed)))
                    .collect(),
                ..CvRow::default()
            };
            for (base, out) in [
                ("scratch", &mut row.vs_scratch),
                ("pixels", &mut row.vs_pixels),
            ] {
                let Some(b) = baseline(key, base).filter(|&b| b != g) else {
                    continue;
                };
                for (name, a) in sets {
                    if let Some(d) = aligned[b]
                        .get(name)
                        .and_then(|other| delta(a, other, rules, reps, seed))
                    {
                        out.insert(name.clone(), d);
                    }
                }
            }
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::labels::ClipLabels;
    use crate::experiment::run::RowScores;
    use crate::experiment::Evaluation;

    /// 12 patients x 1 clip x 4 frames; the lines label is 1 for odd patients.
    fn frames() -> FrameSet {
        FrameSet {
            dims: [1, 1, 1],
            inputs: vec![0.0; 48],
            frame_clip: (0..48).map(|i| i / 4).collect(),
            position: (0..48).map(|i| i % 4).collect(),
            clips: (0..12)
                .map(|c| ClipLabels {
                    clip: format!("c{c}"),
                    patient: format!("p{c:02}"),
                    classes: vec![None, Some(c % 2), None],
                })
                .collect(),
            clip_seconds: vec![None; 12],
        }
    }

    /// A row of `init` for fold `f` (test patients 4f..4f+4) whose score separates the
    /// classes by `margin` (0 = chance-like constant ranks, 1 = perfect).
    fn row(init: &str, f: usize, seed: u64, margin: f32) -> ResultRow {
        let index: Vec<usize> = (16 * f..16 * f + 16).collect();
        let scores: Vec<f32> = index
            .iter()
            .map(|&i| {
                let positive = (i / 4) % 2 == 1;
                let jitter = ((i * 7 + seed as usize) % 5) as f32 * 0.1;
                jitter + if positive { margin } else { 0.0 }
            })
            .collect();
        ResultRow {
            task: "lines".into(),
            init: init.into(),
            method: init.into(),
            head: "linear".into(),
            label_fraction: 1.0,
            seed,
            fold: Some(f),
            train_frames: 0,
            val_auc: None,
            test_auc: None,
            test_auc_ci: None,
            test: Evaluation::default(),
            external: BTreeMap::new(),
            roc: BTreeMap::new(),
            scores: RowScores {
                test_index: index,
                test: scores,
                external: vec![],
            },
        }
    }

    #[test]
    fn folds_pool_into_one_score_per_frame_and_compare_paired() {
        let f = frames();
        let mut rows = Vec::new();
        for seed in 0..2 {
            for fold in 0..3 {
                rows.push(row("scratch", fold, seed, 0.05));
                rows.push(row("simclr", fold, seed, 1.0));
            }
        }
        let rules = ClipRule::standard(2);
        let cv = pool(&rows, &f, &[], &rules, 200);
        assert_eq!(cv.len(), 2);
        let simclr = cv.iter().find(|r| r.init == "simclr").unwrap();
        assert_eq!((simclr.seeds, simclr.folds), (2, 3));
        assert_eq!(
            (
                simclr.local.frames,
                simclr.local.clips,
                simclr.local.patients
            ),
            (48, 12, 12)
        );
        let auc = simclr.local.auc.unwrap();
        assert!((auc.value - 1.0).abs() < 1e-12, "{auc:?}");
        assert_eq!(simclr.local.clip["run2"].value, 1.0);
        let d = &simclr.vs_scratch["local"];
        let frame = d.frame.unwrap();
        let scratch = cv.iter().find(|r| r.init == "scratch").unwrap();
        assert!(
            (frame.value - (1.0 - scratch.local.auc.unwrap().value)).abs() < 1e-12,
            "{frame:?}"
        );
        let [lo, hi] = frame.ci.unwrap();
        assert!(
            lo <= frame.value && frame.value <= hi && lo > 0.0,
            "{frame:?}"
        );
        assert!(scratch.vs_scratch.is_empty(), "no comparison with itself");
        assert!(
            simclr.vs_pixels.is_empty(),
            "no pixel baseline in these rows"
        );
    }
}
