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
    let mut ids: Vec<usize> = patient.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let members: Vec<Vec<usize>> = ids
        .iter()
        .map(|id| (0..patient.len()).filter(|&i| patient[i] == *id).collect())
        .collect();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut aucs = Vec::with_capacity(reps);
    let (mut s, mut l) = (Vec::new(), Vec::new());
    for _ in 0..reps * 10 {
        if aucs.len() == reps {
            break;
        }
        s.clear();
        l.clear();
        for _ in 0..members.len() {
            for &i in &members[rng.random_range(0..members.len())] {
                s.push(scores[i]);
                l.push(labels[i]);
            }
        }
        if let Some(a) = roc_auc(&s, &l) {
            aucs.push(a);
        }
    }
    if aucs.is_empty() {
        return None;
    }
    aucs.sort_by(f64::total_cmp);
    let at = |q: f64| aucs[((q * (aucs.len() - 1) as f64).round() as usize).min(aucs.len() - 1)];
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
    fn one_class_has_no_interval() {
        assert_eq!(
            patient_bootstrap_ci(&[0.1, 0.2], &[true, true], &[0, 1], 10, 0.95, 0),
            None
        );
    }
}
