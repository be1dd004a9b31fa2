//! The pixel floor: each frame averaged down to `side x side` pixels, as a feature vector. A
//! linear head on these features (standardised, weight decay, early stopping on validation, the
//! same training as every probe) is a logistic regression on downsampled pixels: what a model
//! with no learned representation scores. Learned features must beat it.

use crate::data::frames::FrameSet;

/// `[frames.len(), side * side]` row-major: each frame's area average over a `side x side`
/// grid (cell edges at `k * width / side`, so every pixel counts once; channels averaged).
pub fn pixel_features(frames: &FrameSet, side: usize) -> Vec<f32> {
    let [c, h, w] = frames.dims;
    let side = side.clamp(1, h.min(w));
    let edges = |n: usize| -> Vec<usize> { (0..=side).map(|k| k * n / side).collect() };
    let (ys, xs) = (edges(h), edges(w));
    let mut out = Vec::with_capacity(frames.len() * side * side);
    for i in 0..frames.len() {
        let frame = frames.frame(i);
        for gy in 0..side {
            for gx in 0..side {
                let mut sum = 0.0f64;
                for ch in 0..c {
                    let plane = &frame[ch * h * w..(ch + 1) * h * w];
                    for y in ys[gy]..ys[gy + 1] {
                        sum += plane[y * w + xs[gx]..y * w + xs[gx + 1]]
                            .iter()
                            .map(|&v| v as f64)
                            .sum::<f64>();
                    }
                }
                let n = c * (ys[gy + 1] - ys[gy]) * (xs[gx + 1] - xs[gx]);
                out.push((sum / n.max(1) as f64) as f32);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_average_their_pixels() {
        // One 4x4 frame with values 0..16, to 2x2: each cell averages a 2x2 block.
        let frames = FrameSet {
            dims: [1, 4, 4],
            inputs: (0..16).map(|v| v as f32).collect(),
            frame_clip: vec![0],
            position: vec![0],
            clips: vec![],
            clip_seconds: vec![],
        };
        assert_eq!(pixel_features(&frames, 2), vec![2.5, 4.5, 10.5, 12.5]);
        assert_eq!(pixel_features(&frames, 1), vec![7.5]);
        assert_eq!(pixel_features(&frames, 4), frames.inputs);
    }
}
