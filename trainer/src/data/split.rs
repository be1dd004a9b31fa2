//! Train/validation/test splits by patient, never by frame.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{ensure, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::data::labels::ClipLabels;

/// Which part of a split a clip belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
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
}
