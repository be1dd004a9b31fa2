//! Synthetic cohorts: clips with balanced labels, grouped under synthetic patients.

use super::{ClipParams, Labels};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;

/// One clip of a synthetic cohort.
#[derive(Clone, Debug, Serialize)]
pub struct CohortClip {
    /// Clip id, e.g. `"phantom-p007-c02"` (patient and clip numbers count from 0).
    pub clip_id: String,
    /// Patient id, e.g. `"phantom-p007"`: split data by this, never by clip or frame.
    pub patient_id: String,
    /// Scene parameters and labels of the clip.
    pub params: ClipParams,
}

/// Patient sizes: 2-6 clips each, summing to `n` (a lone clip only when `n == 1`).
fn patient_sizes(rng: &mut Xoshiro256PlusPlus, n: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut left = n;
    while left > 0 {
        let mut s = rng.random_range(2..=6).min(left);
        if left - s == 1 {
            s = if s < 6 { s + 1 } else { s - 1 };
        }
        sizes.push(s);
        left -= s;
    }
    sizes
}

/// Plans a cohort of `n_clips` clips: balanced over the four label combinations
/// (parenchymal A-lines, parenchymal B-lines, pleural no effusion, pleural effusion; counts
/// differ by at most one), grouped under synthetic patients (2-6 clips a patient), ids like
/// `"phantom-p007"` and `"phantom-p007-c02"`. Deterministic in `seed`.
pub fn cohort(n_clips: usize, seed: u64) -> Vec<CohortClip> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0xc0ff_ee00_d15e_a5e5);
    let mut labels: Vec<Labels> = (0..n_clips).map(|k| Labels::ALL[k % 4]).collect();
    labels.shuffle(&mut rng);
    let mut out = Vec::with_capacity(n_clips);
    let mut next = labels.into_iter();
    for (pi, size) in patient_sizes(&mut rng, n_clips).into_iter().enumerate() {
        let patient_id = format!("phantom-p{pi:03}");
        for ci in 0..size {
            let labels = next.next().expect("sizes sum to n_clips");
            out.push(CohortClip {
                clip_id: format!("{patient_id}-c{ci:02}"),
                patient_id: patient_id.clone(),
                params: ClipParams::sample(labels, rng.random()),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn cohort_is_balanced_and_grouped_by_patient() {
        for n in [1usize, 2, 3, 7, 40, 101] {
            let c = cohort(n, 5);
            assert_eq!(c.len(), n);
            let mut per_label: BTreeMap<&str, usize> = BTreeMap::new();
            for clip in &c {
                *per_label.entry(clip.params.labels.name()).or_default() += 1;
            }
            let (lo, hi) = (n / 4, n.div_ceil(4));
            for l in Labels::ALL {
                let k = per_label.get(l.name()).copied().unwrap_or(0);
                assert!((lo..=hi).contains(&k), "n={n} {}: {k}", l.name());
            }
            let mut per_patient: BTreeMap<&str, usize> = BTreeMap::new();
            for clip in &c {
                assert!(clip.clip_id.starts_with(&format!("{}-c", clip.patient_id)));
                *per_patient.entry(&clip.patient_id).or_default() += 1;
            }
            if n >= 2 {
                assert!(
                    per_patient.values().all(|&k| (2..=6).contains(&k)),
                    "{per_patient:?}"
                );
            }
            let ids: BTreeSet<&str> = c.iter().map(|x| x.clip_id.as_str()).collect();
            assert_eq!(ids.len(), n, "clip ids are unique");
        }
        let c = cohort(12, 9);
        assert_eq!(c[0].clip_id, "phantom-p000-c00");
        assert_eq!(c[0].patient_id, "phantom-p000");
        let again = cohort(12, 9);
        assert!(c
            .iter()
            .zip(&again)
            .all(|(a, b)| a.params == b.params && a.clip_id == b.clip_id));
        let seeds: BTreeSet<u64> = c.iter().map(|x| x.params.seed).collect();
        assert_eq!(seeds.len(), 12);
    }
}
