//! The pleural (flank) view below the chest wall: the diaphragm, a circle arc whose inside is
//! liver/spleen with vessels; above it either aerated lung (covering the costophrenic region
//! like a curtain that moves with breathing, with a mirror image of the organ beyond the
//! diaphragm) or an anechoic effusion with compressed lung and the spine visible through it.

use super::canvas::{Canvas, Motion};
use super::chest::{smoothstep, ChestWall};
use super::geometry::Geometry;
use super::lung::aerated;
use super::{ClipParams, PleuralScene};

/// Direction (unit x, y) in which the diaphragm and the organ move on inspiration.
const BREATH_DIR: (f32, f32) = (0.88, 0.47);

/// Centre of curvature of the diaphragm when the breathing cycle is at `breath` (0-1).
pub(crate) fn dome_centre(p: &ClipParams, s: &PleuralScene, breath: f32) -> (f32, f32) {
    let a = s.costophrenic_deg.to_radians();
    let shift = s.excursion_cm * breath;
    (
        s.costophrenic_x_cm + s.dome_radius_cm * a.sin() + shift * BREATH_DIR.0,
        p.pleura_depth_cm + s.dome_radius_cm * a.cos() + shift * BREATH_DIR.1,
    )
}

/// Signed distance (cm) from the diaphragm: negative inside the liver/spleen, positive on the
/// thoracic side.
pub(crate) fn diaphragm_distance(s: &PleuralScene, centre: (f32, f32), x: f32, y: f32) -> f32 {
    let (dx, dy) = (x - centre.0, y - centre.1);
    (dx * dx + dy * dy).sqrt() - s.dome_radius_cm
}

/// Precomputed maps of the pleural view.
pub(crate) struct Pleural {
    /// First grid row of the moving region, per column.
    pub move_row: Vec<usize>,
    x: Vec<f32>,
    y: Vec<f32>,
    aer: Vec<f32>,
    shadow: Vec<f32>,
    lateral: Vec<f32>,
    pleura_depth: Vec<f32>,
}

impl Pleural {
    /// Precomputes the pleural view of a clip.
    pub fn new(p: &ClipParams, g: &Geometry, chest: &ChestWall) -> Self {
        let (rows, cols) = (g.rows, g.cols);
        let row_per_cm = (rows - 1) as f32 / g.depth_cm;
        let mut x = vec![0.0; rows * cols];
        let mut y = vec![0.0; rows * cols];
        let mut aer = vec![0.0; rows * cols];
        let mut move_row = vec![0; cols];
        for (j, (row, &dp)) in move_row.iter_mut().zip(&chest.pleura_depth).enumerate() {
            *row = ((dp * row_per_cm).ceil() as usize).min(rows - 1);
            for i in *row..rows {
                let k = i * cols + j;
                (x[k], y[k]) = g.grid_to_xy(i as f32, j as f32);
                aer[k] = aerated(p, g.row_depth(i as f32), dp, 1.0);
            }
        }
        Self {
            move_row,
            x,
            y,
            aer,
            shadow: chest.shadow.clone(),
            lateral: chest.lateral.clone(),
            pleura_depth: chest.pleura_depth.clone(),
        }
    }

    fn pleura_line(p: &ClipParams, d: f32, dp: f32, strength: f32) -> f32 {
        let z = (d - dp) / p.pleura_cm;
        strength * p.pleura_echo * (-z * z).exp()
    }

    /// Adds the (parietal) pleural line to the static chest wall echo above the moving region.
    pub fn add_static(&self, p: &ClipParams, g: &Geometry, echo: &mut [f32]) {
        for j in 0..g.cols {
            for i in 0..self.move_row[j] {
                let d = g.row_depth(i as f32);
                echo[i * g.cols + j] += Self::pleura_line(p, d, self.pleura_depth[j], 0.6);
            }
        }
    }

    /// Renders the moving region of one frame into `canvas`.
    pub fn render(&self, p: &ClipParams, g: &Geometry, m: &Motion, canvas: &mut Canvas) {
        let s = p
            .pleural
            .as_ref()
            .expect("pleural view has a pleural scene");
        let effusion = p.labels.effusion == Some(true);
        let centre = dome_centre(p, s, m.breath);
        let shift = s.excursion_cm * m.breath;
        let vessels: Vec<(f32, f32, f32, f32)> = s
            .vessels
            .iter()
            .map(|v| {
                (
                    centre.0 + v.x_cm,
                    centre.1 + v.y_cm,
                    v.radius_cm,
                    v.wall_echo,
                )
            })
            .collect();
        let curtain = s.costophrenic_x_cm + s.curtain_cm + 1.2 * shift;
        let half_d = 0.5 * s.diaphragm_cm;
        let (rows, cols) = (g.rows, g.cols);
        for j in 0..cols {
            let r0 = self.move_row[j];
            let dp = self.pleura_depth[j];
            let k0 = r0 * cols + j;
            let first = diaphragm_distance(s, centre, self.x[k0], self.y[k0]);
            // Without effusion, lung air in front of the beam hides everything deeper.
            let curtain_col = !effusion && (self.lateral[j] < curtain || first > 0.0);
            let mut blocked_at: Option<f32> = None;
            for i in r0..rows {
                let k = i * cols + j;
                let d = g.row_depth(i as f32);
                let mut e;
                if curtain_col {
                    e = Self::pleura_line(p, d, dp, 1.0) + self.aer[k];
                } else if let Some(b) = blocked_at {
                    e = aerated(p, d, b, 0.3);
                } else {
                    let (x, y) = (self.x[k], self.y[k]);
                    let sd = diaphragm_distance(s, centre, x, y);
                    e = Self::pleura_line(p, d, dp, 0.6);
                    let mut see_through = false;
                    if sd < 0.0 {
                        let mut o = s.organ_echo;
                        for &(vx, vy, vr, wall) in &vessels {
                            let r = ((x - vx).powi(2) + (y - vy).powi(2)).sqrt() / vr;
                            if r < 1.6 {
                                o *= 0.05 + 0.95 * smoothstep(0.8, 1.05, r);
                                let z = (r - 1.05) * 8.0;
                                o += wall * (-z * z).exp();
                            }
                        }
                        e += o * smoothstep(0.0, 0.1, -sd);
                        see_through = true;
                    } else if !effusion {
                        // Mirror image of the organ beyond the diaphragm.
                        e += 0.45 * s.organ_echo;
                    } else if sd < s.effusion_cm {
                        e += s.fluid_echo;
                        see_through = true;
                    } else if s.compressed_lung {
                        e += 0.9 * smoothstep(s.effusion_cm, s.effusion_cm + 0.2, sd);
                        see_through = true;
                    } else {
                        blocked_at = Some(d);
                        e += Self::pleura_line(p, 0.0, 0.0, 0.5);
                    }
                    let z = sd / half_d.max(0.6 * p.pleura_cm);
                    e += s.diaphragm_echo * (-z * z).exp();
                    if see_through {
                        e = spine(s, x, y, e);
                    }
                }
                e *= self.shadow[k];
                canvas.put(i, j, e * e * m.speckle.intensity(i, j));
            }
        }
    }
}

/// Vertebral bodies at the spine's depth: bright curved surfaces with shadows beneath.
fn spine(s: &PleuralScene, x: f32, y: f32, e: f32) -> f32 {
    let period = 3.4;
    let q = (x / period).rem_euclid(1.0) * period - period * 0.5; // offset from a body's centre
    let half = 1.25;
    if q.abs() > half {
        return e;
    }
    let edge = smoothstep(0.0, 0.4, half - q.abs());
    let surface = s.spine_depth_cm + 0.35 * (q / half).powi(2);
    let z = (y - surface) / 0.1;
    let bright = 4.0 * edge * (-z * z).exp();
    e * (1.0 - 0.7 * edge * smoothstep(surface, surface + 0.5, y)) + bright
}
