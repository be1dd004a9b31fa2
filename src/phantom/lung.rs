//! The parenchymal view below the chest wall: the sliding pleural line, A-lines, the lung's
//! reverberation haze and B-lines. On the polar grid every one of these is either horizontal
//! (pleura, A-lines: fixed to the probe-pleura distance) or vertical (B-lines: fixed to the
//! sliding pleura), so a frame needs only per-column work besides one speckle lookup a pixel.

use super::canvas::{Canvas, Motion};
use super::chest::{smoothstep, ChestWall};
use super::geometry::Geometry;
use super::speckle::smooth_field;
use super::ClipParams;
use rand_xoshiro::Xoshiro256PlusPlus;

/// Echo of aerated lung below a pleura at depth `dp`: reverberation haze plus A-lines at
/// integer multiples of `dp` (probe-pleura reverberations), each weaker than the last.
pub(crate) fn aerated(p: &ClipParams, d: f32, dp: f32, a_lines: f32) -> f32 {
    let below = d - dp;
    let mut e = p.lung_haze * (0.4 + 0.6 * (-below / 3.0).exp());
    let mut amp = p.a_line_echo * p.pleura_echo * a_lines;
    let mut k = 2.0;
    while amp > 0.05 && k * dp < d + 1.0 {
        let w = p.pleura_cm * (0.9 + 0.35 * (k - 1.0));
        let z = (d - k * dp) / w;
        e += amp * (-z * z).exp();
        amp *= p.a_line_decay;
        k += 1.0;
    }
    e
}

/// Precomputed maps of the parenchymal view.
pub(crate) struct Lung {
    /// First grid row of the moving region, per column.
    pub move_row: Vec<usize>,
    /// Pleural line echo shape (times rib shadow) per grid point.
    pleura: Vec<f32>,
    /// Haze and A-lines (times rib shadow).
    haze: Vec<f32>,
    /// B-line depth profile (times rib shadow).
    tail: Vec<f32>,
    /// Brightness modulation along the pleura, padded by `pad` columns each side.
    pleura_mod: Vec<f32>,
    pad: usize,
    /// Lateral position (cm along the pleura) of each column.
    lateral: Vec<f32>,
    /// Per-frame B-line profiles per column, at the pleura and at the bottom.
    mask_top: Vec<f32>,
    mask_bot: Vec<f32>,
}

impl Lung {
    /// Precomputes the lung of a parenchymal clip.
    pub fn new(
        p: &ClipParams,
        g: &Geometry,
        chest: &ChestWall,
        pad: usize,
        rng: &mut Xoshiro256PlusPlus,
    ) -> Self {
        let (rows, cols) = (g.rows, g.cols);
        let row_per_cm = (rows - 1) as f32 / g.depth_cm;
        let col_per_cm = 1.0 / g.col_spacing_cm(p.pleura_depth_cm);
        let wobble = smooth_field(rng, cols, 1, 0.3 * col_per_cm, 1.0);
        let mut move_row = vec![0; cols];
        let mut pleura = vec![0.0; rows * cols];
        let mut haze = vec![0.0; rows * cols];
        let mut tail = vec![0.0; rows * cols];
        for j in 0..cols {
            let dp = chest.pleura_depth[j] + 0.03 * p.pleura_irregularity * wobble[j];
            let top = dp - 2.5 * p.pleura_cm - 0.05;
            move_row[j] = ((top * row_per_cm).floor().max(0.0) as usize).min(rows - 1);
            let w = p.pleura_cm.max(0.8 / row_per_cm);
            for i in move_row[j]..rows {
                let d = g.row_depth(i as f32);
                let k = i * cols + j;
                let sh = chest.shadow[k];
                let z = (d - dp) / w;
                pleura[k] = sh * p.pleura_echo * (-z * z).exp();
                let under = smoothstep(dp, dp + 0.6 * w, d);
                // Chest wall (and rib surfaces) above the pleura line, lung below it.
                haze[k] = sh * ((1.0 - under) * chest.echo[k] + under * aerated(p, d, dp, 1.0));
                tail[k] =
                    sh * under * p.pleura_echo * 0.4 * (0.55 + 0.45 * (-(d - dp) / 8.0).exp());
            }
        }
        let modulation = smooth_field(rng, cols + 2 * pad, 1, 0.15 * col_per_cm, 1.0);
        let pleura_mod = modulation
            .iter()
            .map(|m| (1.0 + (0.15 + 0.5 * p.pleura_irregularity) * m).max(0.1))
            .collect();
        Self {
            move_row,
            pleura,
            haze,
            tail,
            pleura_mod,
            pad,
            lateral: chest.lateral.clone(),
            mask_top: vec![0.0; cols],
            mask_bot: vec![0.0; cols],
        }
    }

    /// Renders the moving region (from `move_row` down) of one frame into `canvas`.
    pub fn render(&mut self, p: &ClipParams, g: &Geometry, m: &Motion, canvas: &mut Canvas) {
        let (rows, cols) = (g.rows, g.cols);
        // B-line profiles at the pleura and at the bottom (they widen slightly with depth).
        let spread = 1.0 + 0.06 * g.depth_cm;
        for j in 0..cols {
            let lat = self.lateral[j] - m.slide_cm;
            let (mut top, mut bot) = (0.0f32, 0.0f32);
            for b in &p.b_lines {
                let x = (lat - b.center_cm) / b.half_width_cm;
                top = top.max(b.echo * (-(x * x) * (x * x)).exp());
                let xb = x / spread;
                bot = bot.max(b.echo * (-(xb * xb) * (xb * xb)).exp());
            }
            self.mask_top[j] = top;
            self.mask_bot[j] = bot;
        }
        let speckle = m.speckle;
        let shift = m.slide_cols.round() as isize;
        for j in 0..cols {
            let mj = (j as isize + self.pad as isize - shift)
                .clamp(0, self.pleura_mod.len() as isize - 1);
            let pmod = self.pleura_mod[mj as usize];
            let (mt, mb) = (self.mask_top[j], self.mask_bot[j]);
            let r0 = self.move_row[j];
            let span = (rows - r0).max(1) as f32;
            for i in r0..rows {
                let k = i * cols + j;
                let f = (i - r0) as f32 / span;
                let bm = mt + (mb - mt) * f;
                let e =
                    self.pleura[k] * pmod + self.haze[k] * (1.0 - bm.min(1.0)) + self.tail[k] * bm;
                let mut s = speckle.intensity(i, j);
                s += (1.0 - s) * 0.45 * bm; // B-lines look smoother than tissue speckle
                canvas.put(i, j, e * e * s);
            }
        }
    }
}
