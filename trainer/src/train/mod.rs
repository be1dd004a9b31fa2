//! Supervised training: heads on frozen features ([`probe`]) and whole networks ([`finetune`]).

pub mod calibrate;
pub mod collapse;
pub mod finetune;
pub mod lars;
pub mod loss;
pub mod multitask;
pub mod pretrain;
pub mod probe;
pub mod schedule;
pub mod step_check;

use burn::tensor::{Device, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

/// Labelled examples of one binary task: indices into a frame or feature table, and targets.
#[derive(Clone, Debug, Default)]
pub struct Labelled {
    /// Row indices.
    pub index: Vec<usize>,
    /// `true` = positive class.
    pub positive: Vec<bool>,
}

impl Labelled {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// `true` without examples.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// `true` when both classes are present.
    pub fn has_both_classes(&self) -> bool {
        self.positive.iter().any(|&p| p) && self.positive.iter().any(|&p| !p)
    }

    /// Weight of a positive example so both classes weigh the same in the loss
    /// (`negatives / positives`, 1 when a class is missing).
    pub fn positive_weight(&self) -> f32 {
        let pos = self.positive.iter().filter(|&&p| p).count();
        let neg = self.len() - pos;
        if pos == 0 || neg == 0 {
            1.0
        } else {
            neg as f32 / pos as f32
        }
    }
}

/// The frames of `frames` labelled for task `t` whose clip passes `keep` (a clip index).
pub fn labelled(
    frames: &crate::data::frames::FrameSet,
    t: usize,
    keep: impl Fn(usize) -> bool,
) -> Labelled {
    let mut l = Labelled::default();
    for i in 0..frames.len() {
        if keep(frames.frame_clip[i]) {
            if let Some(c) = frames.class(i, t) {
                l.index.push(i);
                l.positive.push(c == 1);
            }
        }
    }
    l
}

/// Endless shuffled mini-batches of positions `0..n`, reshuffled every epoch, from a seed.
pub struct Batches {
    order: Vec<usize>,
    cursor: usize,
    batch: usize,
    rng: Xoshiro256PlusPlus,
}

impl Batches {
    /// Batches of `batch` (at most `n`) positions.
    pub fn new(n: usize, batch: usize, seed: u64) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        Self {
            order,
            cursor: 0,
            batch: batch.clamp(1, n.max(1)),
            rng,
        }
    }

    /// The next batch of positions.
    pub fn next_batch(&mut self) -> Vec<usize> {
        if self.cursor + self.batch > self.order.len() {
            self.order.shuffle(&mut self.rng);
            self.cursor = 0;
        }
        let b = self.order[self.cursor..self.cursor + self.batch].to_vec();
        self.cursor += self.batch;
        b
    }
}

/// `[n, 1]` targets (1.0 positive, 0.0 negative) and per-example loss weights.
pub fn targets(positive: &[bool], positive_weight: f32, device: &Device) -> (Tensor<2>, Tensor<2>) {
    let n = positive.len();
    let y: Vec<f32> = positive.iter().map(|&p| f32::from(u8::from(p))).collect();
    let w: Vec<f32> = positive
        .iter()
        .map(|&p| if p { positive_weight } else { 1.0 })
        .collect();
    (
        Tensor::from_data(TensorData::new(y, [n, 1]), device),
        Tensor::from_data(TensorData::new(w, [n, 1]), device),
    )
}

/// Reads a float tensor back as `f32` values.
pub fn to_vec<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_every_position_each_epoch() {
        let mut b = Batches::new(10, 5, 3);
        let mut seen: Vec<usize> = b.next_batch();
        seen.extend(b.next_batch());
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_eq!(Batches::new(3, 8, 0).next_batch().len(), 3);
    }

    #[test]
    fn positive_weight_balances_classes() {
        let l = Labelled {
            index: vec![0, 1, 2, 3],
            positive: vec![true, false, false, false],
        };
        assert_eq!(l.positive_weight(), 3.0);
        assert!(l.has_both_classes());
    }
}
