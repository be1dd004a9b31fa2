//! What the scene renderers (`lung.rs`, `pleural.rs`) draw on, and what moves: the polar grid
//! with its log compression ([`Canvas`], [`Tone`]) and the state of the anatomy in one frame
//! ([`Motion`]). `render.rs` owns the clip and hands both to the renderers.

use super::speckle::SpeckleFrame;

/// The state of the moving anatomy in one frame.
pub(crate) struct Motion<'a> {
    /// Lateral lung sliding, cm along the pleura, and the same in grid columns.
    pub slide_cm: f32,
    pub slide_cols: f32,
    /// Breathing cycle position, 0 (expiration) to 1 (inspiration).
    pub breath: f32,
    /// Speckle of the moving tissue in this frame.
    pub speckle: SpeckleFrame<'a>,
}

/// The polar grid being drawn, with the log compression that turns echo intensity into grey.
pub(crate) struct Canvas<'a> {
    pub(super) grid: &'a mut [f32],
    pub(super) cols: usize,
    pub(super) tone: &'a Tone,
}

/// Log compression, gain, TGC and lateral roll-off.
pub(crate) struct Tone {
    /// Grey levels per unit of ln(intensity).
    pub(super) per_ln: f32,
    /// Grey level offset per row (tissue grey, gain, residual TGC slope).
    pub(super) row: Vec<f32>,
    /// Grey level offset per column (edge roll-off of convex arrays).
    pub(super) col: Vec<f32>,
}

impl Tone {
    #[inline]
    pub fn grey(&self, i: usize, j: usize, intensity: f32) -> f32 {
        self.row[i] + self.col[j] + self.per_ln * intensity.max(1e-9).ln()
    }
}

impl Canvas<'_> {
    /// Writes the grey level for echo intensity (amplitude² x speckle) at grid point (i, j).
    #[inline]
    pub fn put(&mut self, i: usize, j: usize, intensity: f32) {
        self.grid[i * self.cols + j] = self.tone.grey(i, j, intensity);
    }
}
