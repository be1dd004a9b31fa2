//! The chest wall above the pleura, which does not move during a clip: skin, subcutaneous fat
//! with septa, fascia lines, striated muscle, and ribs with their acoustic shadows.
//!
//! Echo values are linear amplitudes relative to soft tissue (muscle = 1).

use super::geometry::Geometry;
use super::speckle::smooth_field;
use super::ClipParams;
use rand::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;

/// Static echo maps on the polar grid.
pub(crate) struct ChestWall {
    /// Echo amplitude of the chest wall (meaningful above the pleura).
    pub echo: Vec<f32>,
    /// Attenuation by rib shadows, 0 (fully shadowed) to 1, for every grid point.
    pub shadow: Vec<f32>,
    /// Lateral position along the pleura (cm) of each column.
    pub lateral: Vec<f32>,
    /// Pleural depth (cm) under each column.
    pub pleura_depth: Vec<f32>,
}

/// Smooth step from 0 at `a` to 1 at `b`.
#[inline]
pub(crate) fn smoothstep(a: f32, b: f32, x: f32) -> f32 {
    let t = ((x - a) / (b - a)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Depth of the pleura at lateral position `lat` (cm along the pleura).
pub(crate) fn pleura_depth_at(p: &ClipParams, lat: f32) -> f32 {
    (p.pleura_depth_cm + p.pleura_tilt * lat + p.pleura_bow * lat * lat).max(0.4)
}

/// Depth of a rib's surface at lateral offset `dx` from its centre, if the rib is there.
fn rib_surface(depth: f32, half_width: f32, dx: f32) -> Option<f32> {
    let q = dx / half_width;
    (q.abs() < 1.0).then(|| depth + 0.3 * half_width * (1.0 - (1.0 - q * q).sqrt()))
}

/// Builds the chest wall of a clip on the grid of `g`.
pub(crate) fn build(p: &ClipParams, g: &Geometry, rng: &mut Xoshiro256PlusPlus) -> ChestWall {
    let (rows, cols) = (g.rows, g.cols);
    let px_per_cm_row = (rows - 1) as f32 / g.depth_cm;
    let px_per_cm_col = 1.0 / g.col_spacing_cm(p.pleura_depth_cm);
    let striation = smooth_field(rng, cols, rows, 0.6 * px_per_cm_col, 0.02 * px_per_cm_row);
    let fat_tex = smooth_field(rng, cols, rows, 0.25 * px_per_cm_col, 0.05 * px_per_cm_row);
    let septa = smooth_field(rng, cols, rows, 0.5 * px_per_cm_col, 0.02 * px_per_cm_row);
    // Fascia: wavy bright lines (the fat/muscle boundary is one of them).
    let fascia: Vec<(f32, f32, f32, f32, f32)> = std::iter::once(p.fat_cm)
        .chain(p.fascia_cm.iter().copied())
        .map(|d| {
            (
                d,
                rng.random_range(0.01..0.06),  // wave amplitude, cm
                rng.random_range(0.5..2.0),    // wave number, 1/cm
                rng.random_range(0.0..6.3),    // phase
                rng.random_range(1.5..4.0f32), // brightness
            )
        })
        .collect();
    let lateral: Vec<f32> = (0..cols)
        .map(|j| g.col_lateral_cm(j as f32, p.pleura_depth_cm))
        .collect();
    let pleura_depth: Vec<f32> = lateral.iter().map(|&l| pleura_depth_at(p, l)).collect();
    let mut echo = vec![0.0f32; rows * cols];
    let mut shadow = vec![1.0f32; rows * cols];
    let line_w = (0.035f32).max(1.2 / px_per_cm_row);
    for (j, &lat) in lateral.iter().enumerate() {
        let fascia_at: Vec<(f32, f32)> = fascia
            .iter()
            .map(|&(d, a, k, ph, e)| (d + a * (k * lat + ph).sin(), e))
            .collect();
        // Rib under this column: surface depth and how far inside the rib's width we are.
        let mut rib: Option<(f32, f32)> = None;
        for r in &p.ribs {
            let dx = lat - r.center_cm;
            if let Some(s) = rib_surface(r.depth_cm, r.half_width_cm + 0.05, dx) {
                let inside = smoothstep(0.0, 0.12, r.half_width_cm + 0.05 - dx.abs());
                rib = Some((s, inside));
            }
        }
        for i in 0..rows {
            let d = g.row_depth(i as f32);
            let k = i * cols + j;
            let mut e = if d < p.skin_cm {
                2.5 * (0.3 * striation[k]).exp()
            } else if d < p.fat_cm {
                0.3 * (0.5 * fat_tex[k]).exp() + 1.5 * (septa[k] - 1.3).max(0.0)
            } else {
                (0.35 * striation[k]).exp()
            };
            for &(df, ef) in &fascia_at {
                let z = (d - df) / line_w;
                e += ef * (-z * z).exp();
            }
            if let Some((s, inside)) = rib {
                let z = (d - s) / (2.0 * line_w);
                e += 12.0 * inside * (-z * z).exp();
                let below = smoothstep(s, s + 0.15, d) * inside;
                shadow[k] = 1.0 - 0.996 * below;
            }
            echo[k] = e;
        }
    }
    ChestWall {
        echo,
        shadow,
        lateral,
        pleura_depth,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Labels, Probe};
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn ribs_cast_shadows_to_the_bottom() {
        let mut p = ClipParams::sample(Labels::parenchymal(false), 11);
        p.probe = Probe::Convex;
        p.ribs = vec![super::super::Rib {
            center_cm: 0.0,
            half_width_cm: 0.8,
            depth_cm: p.pleura_depth_cm - 0.3,
        }];
        let g = Geometry::new(&p, 128, 128);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let c = build(&p, &g, &mut rng);
        let mid = g.cols / 2;
        let bottom = (g.rows - 1) * g.cols;
        assert!(c.shadow[bottom + mid] < 0.1, "under the rib is shadowed");
        assert!(c.shadow[bottom] > 0.99, "the edge of the view is not");
        assert!(c.shadow[mid] > 0.99, "above the rib is not");
    }
}
