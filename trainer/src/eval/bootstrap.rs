//! Confidence intervals of the AUC by bootstrap over patients: frames of one patient are
//! correlated, so resampling frames would give intervals that are far too narrow.

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::auc::roc_auc;

/// Percentile interval `[lo, hi]` (`level` = 0.95 for 95%) of the AUC of `scores` against
/// `labels`, resampling whole patients (`patient[i]` is any id of example `i`'s patient) with
/// replacement `reps` times from `seed`. Resamples that lack a class are redrawn (up to
/// `10 x reps` draws). `None` when the data lack a class or every resample did.
pub fn patient_bootstrap_ci(
    scores: &[f32],
    labels: &[bool],
    patient: &[usize],
    reps: usize,
    level: f64,
    seed: u64,
) -> Option<[f64; 2]> {
    assert!(scores.len() == labels.len() && labels.len() == patient.len());
    roc_auc(scores, labels)?;
    let (mut s, mut l) = (Vec::new(), Vec::new());
    patient_bootstrap(patient, reps, level, seed, |sample| {
        s.clear();
        l.clear();
        for &i in sample {
            s.push(scores[i]);
            l.push(labels[i]);
        }
        roc_auc(&s, &l)
    })
}

/// Percentile interval of any statistic under resampling of whole patients: `stat` gets the
/// example indices of one resample (each drawn patient's examples, repeated as drawn) and
/// returns the statistic, or `None` when it is undefined there (that resample is redrawn, up
/// to `10 x reps` draws in all). `None` when no resample gave a value.
pub fn patient_bootstrap(
    patient: &[usize],
    reps: usize,
    level: f64,
    seed: u64,
    mut stat: impl FnMut(&[usize]) -> Option<f64>,
) -> Option<[f64; 2]> {
    let mut ids: Vec<usize> = patient.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); ids.len()];
    for (i, p) in patient.iter().enumerate() {
        if let Ok(k) = ids.binary_search(p) {
            members[k].push(i);
        }
    }
    if members.is_empty() {
        return None;
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut values = Vec::with_capacity(reps);
    let mut sample = Vec::with_capacity(patient.len());
    for _ in 0..reps * 10 {
        if values.len() == reps {
            break;
        }
        sample.clear();
        for _ in 0..members.len() {
            sample.extend_from_slice(&members[rng.random_range(0..members.len())]);
        }
        if let Some(v) = stat(&sample) {
            values.push(v);
        }
    }
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let at =
        |q: f64| values[((q * (values.len() - 1) as f64).round() as usize).min(values.len() - 1)];
    let tail = (1.0 - level) / 2.0;
    Some([at(tail), at(1.0 - tail)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_contains_the_estimate_and_narrows_with_more_patients() {
        // Noisy scores: positives shifted up by 1 standard deviation.
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        let make = |n_patients: usize, rng: &mut Xoshiro256PlusPlus| {
            let (mut s, mut l, mut p) = (Vec::new(), Vec::new(), Vec::new());
            for patient in 0..n_patients {
                let positive = patient % 2 == 0;
                for _ in 0..5 {
                    let noise: f32 = rng.random_range(-1.7..1.7);
                    s.push(noise + if positive { 1.0 } else { 0.0 });
                    l.push(positive);
                    p.push(patient);
                }
            }
            (s, l, p)
        };
        let (s, l, p) = make(10, &mut rng);
        let auc = roc_auc(&s, &l).unwrap();
        let small = patient_bootstrap_ci(&s, &l, &p, 500, 0.95, 1).unwrap();
        assert!(small[0] <= auc && auc <= small[1], "{small:?} vs {auc}");
        let (s, l, p) = make(200, &mut rng);
        let large = patient_bootstrap_ci(&s, &l, &p, 500, 0.95, 1).unwrap();
        assert!(
            large[1] - large[0] < small[1] - small[0],
            "{large:?} vs {small:?}"
        );
        assert_eq!(
            patient_bootstrap_ci(&s, &l, &p, 500, 0.95, 1),
            Some(large),
            "same seed, same interval"
        );
    }

    #[test]
    fn any_statistic_resamples_whole_patients() {
        // Patient p has examples of value p; a resample's mean is a mean of patient values.
        let patient: Vec<usize> = (0..40).map(|i| i / 4).collect();
        let values: Vec<f64> = patient.iter().map(|&p| p as f64).collect();
        let ci = patient_bootstrap(&patient, 400, 0.9, 3, |sample| {
            // Whole patients only: every resample holds a multiple of 4 examples.
            assert_eq!(sample.len() % 4, 0);
            Some(sample.iter().map(|&i| values[i]).sum::<f64>() / sample.len() as f64)
        })
        .unwrap();
        assert!(ci[0] < 4.5 && 4.5 < ci[1] && ci[1] - ci[0] < 4.0, "{ci:?}");
        assert_eq!(patient_bootstrap(&patient, 10, 0.9, 3, |_| None), None);
    }

    #[test]
    fn one_class_has_no_interval() {
        assert_eq!(
            patient_bootstrap_ci(&[0.1, 0.2], &[true, true], &[0, 1], 10, 0.95, 0),
            None
        );
    }
}
