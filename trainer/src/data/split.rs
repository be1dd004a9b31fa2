//! Train/validation/test splits by patient, never by frame.
//!
//! A prepared dataset carries its split in `split.json` (written once by `prepare`, stratified,
//! with k folds), so every run on it uses the same patients for testing; other datasets (the
//! phantom) are split on the fly from a seed with [`by_patient`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use crate::data::labels::ClipLabels;

/// Which part of a split a clip belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// Fits weights.
    Train,
    /// Chooses hyper-parameters and early stopping.
    Validation,
    /// Reported only.
    Test,
}

/// Assigns every clip to a part so that all clips of a patient share it. Patients are shuffled
/// with `seed`; `validation` and `test` are fractions of patients (at least one patient each
/// when there are three or more patients).
pub fn by_patient(
    clips: &[ClipLabels],
    validation: f64,
    test: f64,
    seed: u64,
) -> Result<Vec<Part>> {
    ensure!(
        (0.0..1.0).contains(&validation) && (0.0..1.0).contains(&test) && validation + test < 1.0,
        "split fractions validation {validation} and test {test} must be in [0, 1) and sum below 1"
    );
    let mut patients: Vec<&str> = clips
        .iter()
        .map(|c| c.patient.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    patients.shuffle(&mut Xoshiro256PlusPlus::seed_from_u64(seed));
    let n = patients.len();
    let count = |f: f64| {
        let k = (f * n as f64).round() as usize;
        if f > 0.0 && n >= 3 {
            k.max(1)
        } else {
            k
        }
    };
    let (n_val, n_test) = (count(validation), count(test));
    ensure!(
        n_val + n_test < n,
        "{n} patients are too few for the requested split"
    );
    let part: BTreeMap<&str, Part> = patients
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let part = if i < n_test {
                Part::Test
            } else if i < n_test + n_val {
                Part::Validation
            } else {
                Part::Train
            };
            (*p, part)
        })
        .collect();
    Ok(clips.iter().map(|c| part[c.patient.as_str()]).collect())
}

/// File name of a dataset's fixed split.
pub const SPLIT_FILE: &str = "split.json";

/// How `prepare` splits a dataset.
#[derive(Clone, Debug, Serialize)]
pub struct SplitOptions {
    /// Fraction of patients for validation.
    pub validation: f64,
    /// Fraction of patients for test.
    pub test: f64,
    /// Number of cross-validation folds over all patients.
    pub folds: usize,
    /// Seed of the patient order.
    pub seed: u64,
}

impl Default for SplitOptions {
    fn default() -> Self {
        Self {
            validation: 0.2,
            test: 0.2,
            folds: 5,
            seed: 0,
        }
    }
}

/// A patient's place in the split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientSplit {
    /// Train, validation or test.
    pub part: Part,
    /// Cross-validation fold, `0..folds`.
    pub fold: usize,
}

/// The content of `split.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetSplit {
    /// Seed, fractions and folds used.
    pub validation: f64,
    /// See `validation`.
    pub test: f64,
    /// See `validation`.
    pub folds: usize,
    /// See `validation`.
    pub seed: u64,
    /// What the strata were: per task, the patient's majority class.
    pub stratified_by: Vec<String>,
    /// Every patient.
    pub patients: BTreeMap<String, PatientSplit>,
}

/// Assigns `items` (already in the desired order) to buckets with target `fractions`, each
/// item going to the bucket furthest below its target so far. With items sorted by stratum,
/// every stratum spreads over the buckets in proportion.
fn proportional(n: usize, fractions: &[f64]) -> Vec<usize> {
    let mut counts = vec![0usize; fractions.len()];
    (0..n)
        .map(|i| {
            let deficit = |b: usize| fractions[b] * (i + 1) as f64 - counts[b] as f64;
            let b = (0..fractions.len())
                .max_by(|&a, &b| deficit(a).total_cmp(&deficit(b)).then(b.cmp(&a)))
                .unwrap_or(0);
            counts[b] += 1;
            b
        })
        .collect()
}

/// Splits the patients of `clips` stratified by their per-task majority class: train /
/// validation / test by `opts`' fractions, and `opts.folds` folds.
pub fn stratified(
    clips: &[ClipLabels],
    opts: &SplitOptions,
    tasks: &[&str],
) -> Result<DatasetSplit> {
    ensure!(
        (0.0..1.0).contains(&opts.validation)
            && (0.0..1.0).contains(&opts.test)
            && opts.validation + opts.test < 1.0,
        "split fractions validation {} and test {} must be in [0, 1) and sum below 1",
        opts.validation,
        opts.test
    );
    ensure!(opts.folds >= 1, "folds must be at least 1");
    // Stratum of a patient: per task, the majority class over its labelled clips (or `-`).
    let mut votes: BTreeMap<&str, Vec<[usize; 2]>> = BTreeMap::new();
    for c in clips {
        let v = votes
            .entry(c.patient.as_str())
            .or_insert_with(|| vec![[0, 0]; c.classes.len()]);
        for (t, class) in c.classes.iter().enumerate() {
            if let Some(k) = class {
                v[t][(*k).min(1)] += 1;
            }
        }
    }
    let stratum = |v: &Vec<[usize; 2]>| -> String {
        v.iter()
            .map(|[a, b]| match (a, b) {
                (0, 0) => '-',
                (a, b) if b > a => '1',
                _ => '0',
            })
            .collect()
    };
    let mut patients: Vec<&str> = votes.keys().copied().collect();
    ensure!(
        patients.len() >= 3,
        "{} patients are too few to split (at least 3)",
        patients.len()
    );
    patients.shuffle(&mut Xoshiro256PlusPlus::seed_from_u64(opts.seed));
    patients.sort_by_key(|p| stratum(&votes[p])); // stable: shuffled within a stratum
    let train = 1.0 - opts.validation - opts.test;
    let parts = proportional(patients.len(), &[opts.test, opts.validation, train]);
    let folds = proportional(patients.len(), &vec![1.0 / opts.folds as f64; opts.folds]);
    let split = DatasetSplit {
        validation: opts.validation,
        test: opts.test,
        folds: opts.folds,
        seed: opts.seed,
        stratified_by: tasks.iter().map(|t| t.to_string()).collect(),
        patients: patients
            .iter()
            .zip(parts.iter().zip(&folds))
            .map(|(p, (&b, &fold))| {
                let part = [Part::Test, Part::Validation, Part::Train][b];
                (p.to_string(), PatientSplit { part, fold })
            })
            .collect(),
    };
    for part in [Part::Train, Part::Validation, Part::Test] {
        let wanted = match part {
            Part::Train => true,
            Part::Validation => opts.validation > 0.0,
            Part::Test => opts.test > 0.0,
        };
        ensure!(
            !wanted || split.patients.values().any(|s| s.part == part),
            "{} patients are too few for the requested split",
            split.patients.len()
        );
    }
    Ok(split)
}

/// Writes `DIR/split.json` for the clips of a prepared dataset.
pub fn write_split(dir: &Path, clips: &[ClipLabels], opts: &SplitOptions) -> Result<DatasetSplit> {
    let set = crate::tasks::TaskSet::standard();
    let tasks = set.names();
    let split = stratified(clips, opts, &tasks)?;
    pleura::fsutil::write_atomic(
        &dir.join(SPLIT_FILE),
        serde_json::to_string_pretty(&split)?.as_bytes(),
    )?;
    Ok(split)
}

/// The part of every clip of the dataset in `dir`: from its `split.json` when it has one,
/// otherwise [`by_patient`] with the given fractions and seed.
pub fn dataset_parts(
    dir: &Path,
    clips: &[ClipLabels],
    validation: f64,
    test: f64,
    seed: u64,
) -> Result<Vec<Part>> {
    let path = dir.join(SPLIT_FILE);
    if !path.exists() {
        return by_patient(clips, validation, test, seed);
    }
    let split: DatasetSplit = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{}: not a split file", path.display()))?;
    clips
        .iter()
        .map(|c| match split.patients.get(&c.patient) {
            Some(s) => Ok(s.part),
            None => bail!(
                "{}: patient `{}` (clip `{}`) is not in the split: prepare the dataset again",
                path.display(),
                c.patient,
                c.clip
            ),
        })
        .collect()
}

/// The parts of every clip in each of `k` cross-validation folds: in fold `f` the patients of
/// fold `f` are the test part, those of fold `f + 1 (mod k)` the validation part (early
/// stopping), the rest train. Folds come from the dataset's `split.json` (which must have `k`
/// folds), otherwise from a stratified assignment of the patients with `seed`.
pub fn fold_parts(dir: &Path, clips: &[ClipLabels], k: usize, seed: u64) -> Result<Vec<Vec<Part>>> {
    ensure!(k >= 3, "cross-validation needs at least 3 folds, got {k}");
    let path = dir.join(SPLIT_FILE);
    let split: DatasetSplit = if path.exists() {
        let split: DatasetSplit = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("{}: not a split file", path.display()))?;
        ensure!(
            split.folds == k,
            "{} has {} folds, not {k}: prepare the dataset with --folds {k}",
            path.display(),
            split.folds
        );
        split
    } else {
        let set = crate::tasks::TaskSet::standard();
        let tasks = set.names();
        let opts = SplitOptions {
            folds: k,
            seed,
            ..SplitOptions::default()
        };
        stratified(clips, &opts, &tasks)?
    };
    let fold_of = clips
        .iter()
        .map(|c| match split.patients.get(&c.patient) {
            Some(s) => Ok(s.fold),
            None => bail!(
                "{}: patient `{}` (clip `{}`) is not in the split: prepare the dataset again",
                path.display(),
                c.patient,
                c.clip
            ),
        })
        .collect::<Result<Vec<usize>>>()?;
    Ok((0..k)
        .map(|f| {
            fold_of
                .iter()
                .map(|&g| {
                    if g == f {
                        Part::Test
                    } else if g == (f + 1) % k {
                        Part::Validation
                    } else {
                        Part::Train
                    }
                })
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clips(n_patients: usize, per: usize) -> Vec<ClipLabels> {
        (0..n_patients * per)
            .map(|i| ClipLabels {
                clip: format!("c{i}"),
                patient: format!("p{}", i / per),
                classes: vec![],
            })
            .collect()
    }

    #[test]
    fn every_patient_is_tested_in_exactly_one_fold() {
        let dir = tempfile::tempdir().unwrap();
        let c = clips(23, 2);
        let folds = fold_parts(dir.path(), &c, 5, 4).unwrap();
        assert_eq!(folds.len(), 5);
        for (i, clip) in c.iter().enumerate() {
            let tested = folds.iter().filter(|f| f[i] == Part::Test).count();
            assert_eq!(tested, 1, "{}", clip.clip);
            // Its fold's successor validates on it; clips of one patient move together.
            let validated = folds.iter().filter(|f| f[i] == Part::Validation).count();
            assert_eq!(validated, 1);
        }
        for f in &folds {
            // clips(23, 2): clips 2p and 2p + 1 belong to patient p.
            for p in 0..23 {
                assert_eq!(f[2 * p], f[2 * p + 1], "patient {p}");
            }
            let tests = f.iter().filter(|&&p| p == Part::Test).count();
            assert!((8..=10).contains(&tests), "{tests} test clips of 46");
        }
        // A split.json with another fold count is an error naming it.
        write_split(dir.path(), &c, &SplitOptions::default()).unwrap();
        assert!(fold_parts(dir.path(), &c, 5, 0).is_ok());
        let err = format!("{:#}", fold_parts(dir.path(), &c, 4, 0).unwrap_err());
        assert!(
            err.contains("split.json") && err.contains("--folds 4"),
            "{err}"
        );
    }

    #[test]
    fn no_patient_crosses_parts() {
        let c = clips(20, 3);
        let parts = by_patient(&c, 0.2, 0.2, 1).unwrap();
        let mut seen: BTreeMap<&str, Part> = BTreeMap::new();
        for (clip, part) in c.iter().zip(&parts) {
            assert_eq!(*seen.entry(&clip.patient).or_insert(*part), *part);
        }
        let count = |p| parts.iter().filter(|&&x| x == p).count();
        assert_eq!(count(Part::Test), 12);
        assert_eq!(count(Part::Validation), 12);
        assert_eq!(
            by_patient(&c, 0.2, 0.2, 1).unwrap(),
            parts,
            "same seed, same split"
        );
    }

    #[test]
    fn too_few_patients_is_an_error() {
        assert!(by_patient(&clips(2, 4), 0.3, 0.3, 0).is_err());
        assert!(by_patient(&clips(5, 1), 0.7, 0.5, 0).is_err());
    }

    fn labelled_clips(n_patients: usize) -> Vec<ClipLabels> {
        // Patients 0..n: a third with B-lines; two clips each.
        (0..n_patients * 2)
            .map(|i| ClipLabels {
                clip: format!("c{i}"),
                patient: format!("p{}", i / 2),
                classes: vec![None, Some(usize::from((i / 2) % 3 == 0)), None],
            })
            .collect()
    }

    #[test]
    fn stratified_split_keeps_patients_whole_and_classes_balanced() {
        let clips = labelled_clips(60);
        let split = stratified(
            &clips,
            &SplitOptions::default(),
            &["view", "lines", "effusion"],
        )
        .unwrap();
        assert_eq!(split.patients.len(), 60);
        let count = |part: Part, positive: bool| {
            split
                .patients
                .iter()
                .filter(|(p, s)| {
                    let i: usize = p[1..].parse().unwrap();
                    s.part == part && i.is_multiple_of(3) == positive
                })
                .count()
        };
        // 20 positive, 40 negative patients: test and validation get a fifth of each.
        assert_eq!((count(Part::Test, true), count(Part::Test, false)), (4, 8));
        assert_eq!(
            (
                count(Part::Validation, true),
                count(Part::Validation, false)
            ),
            (4, 8)
        );
        // Folds: 12 patients each, 4 of them positive.
        for fold in 0..5 {
            let members: Vec<&String> = split
                .patients
                .iter()
                .filter(|(_, s)| s.fold == fold)
                .map(|(p, _)| p)
                .collect();
            assert_eq!(members.len(), 12);
            let pos = members
                .iter()
                .filter(|p| p[1..].parse::<usize>().unwrap() % 3 == 0)
                .count();
            assert_eq!(pos, 4);
        }
    }

    #[test]
    fn a_written_split_is_the_one_every_run_uses() {
        let tmp = tempfile::tempdir().unwrap();
        let clips = labelled_clips(10);
        let split = write_split(tmp.path(), &clips, &SplitOptions::default()).unwrap();
        let parts = dataset_parts(tmp.path(), &clips, 0.5, 0.1, 99).unwrap();
        for (clip, part) in clips.iter().zip(&parts) {
            assert_eq!(split.patients[&clip.patient].part, *part);
        }
        // A clip of a patient the split does not know is an error naming both.
        let mut more = clips.clone();
        more.push(ClipLabels {
            clip: "new".into(),
            patient: "stranger".into(),
            classes: vec![None, None, None],
        });
        let err = dataset_parts(tmp.path(), &more, 0.2, 0.2, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("stranger") && err.contains("new"), "{err}");
    }
}
