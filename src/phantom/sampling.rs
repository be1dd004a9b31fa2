//! Random draws of the anatomy of one clip: ribs, B-lines and the pleural-view scene.

use super::{BLine, PleuralScene, Rib, Vessel};
use rand::Rng;
use rand_xoshiro::Xoshiro256PlusPlus;

/// Ribs on either side of the intercostal space (sometimes none: the probe lies along the space).
pub(crate) fn sample_ribs(
    r: &mut Xoshiro256PlusPlus,
    half_view: f32,
    pleura: f32,
    pleural: bool,
) -> Vec<Rib> {
    if r.random_bool(if pleural { 0.4 } else { 0.1 }) {
        return Vec::new();
    }
    let gap = r.random_range(1.4..2.8f32);
    let centre = r.random_range(-0.4..0.4f32) * half_view.min(3.0);
    let mut ribs = Vec::new();
    for side in [-1.0f32, 1.0] {
        let mut edge = centre + side * gap * 0.5;
        loop {
            let hw = r.random_range(0.5..0.9f32);
            let c = edge + side * hw;
            if (c - side * hw).abs() > half_view + 0.1 {
                break;
            }
            ribs.push(Rib {
                center_cm: c,
                half_width_cm: hw,
                depth_cm: (pleura - r.random_range(0.2..0.5)).max(0.4),
            });
            edge = c + side * (hw + r.random_range(1.4..2.8));
        }
    }
    if pleural {
        // Flank views: at most the ribs at the edges of the view.
        ribs.retain(|b| b.center_cm.abs() > 0.6 * half_view);
    }
    ribs
}

/// 1 to ~14 B-lines between the ribs (isolated, several, or confluent).
pub(crate) fn sample_b_lines(
    r: &mut Xoshiro256PlusPlus,
    half_view: f32,
    ribs: &[Rib],
) -> Vec<BLine> {
    // Free pleura: between the ribs nearest the centre, else the whole view.
    let left = ribs
        .iter()
        .filter(|b| b.center_cm < 0.0)
        .map(|b| b.center_cm + b.half_width_cm)
        .fold(-half_view, f32::max);
    let right = ribs
        .iter()
        .filter(|b| b.center_cm >= 0.0)
        .map(|b| b.center_cm - b.half_width_cm)
        .fold(half_view, f32::min);
    let (lo, hi) = (left + 0.15, (right - 0.15).max(left + 0.3));
    let kind = r.random_range(0.0..1.0f32);
    let (n, wmax) = if kind < 0.45 {
        (r.random_range(1..=3), 0.16)
    } else if kind < 0.85 {
        (r.random_range(3..=6), 0.16)
    } else {
        (r.random_range(7..=10), 0.25)
    };
    (0..n)
        .map(|_| BLine {
            center_cm: r.random_range(lo..hi),
            half_width_cm: r.random_range(0.06..wmax),
            echo: r.random_range(0.35..0.8),
        })
        .collect()
}

pub(crate) fn sample_pleural(
    r: &mut Xoshiro256PlusPlus,
    effusion: bool,
    depth: f32,
    half_view: f32,
) -> PleuralScene {
    let dome_radius_cm = r.random_range(0.6..1.2) * depth;
    let vessels = (0..r.random_range(2..7))
        .map(|_| {
            let a = r.random_range(-1.2..0.6f32);
            let rr = dome_radius_cm * r.random_range(0.3..0.85);
            Vessel {
                x_cm: rr * a.sin(),
                y_cm: -rr * a.cos(),
                radius_cm: r.random_range(0.12..0.45),
                wall_echo: if r.random_bool(0.5) {
                    r.random_range(2.0..5.0)
                } else {
                    0.0
                },
            }
        })
        .collect();
    let costophrenic_x_cm = r.random_range(-0.5..0.1) * half_view;
    let excursion_cm = r.random_range(0.3..1.2f32).min(0.3 * half_view);
    PleuralScene {
        costophrenic_x_cm,
        costophrenic_deg: r.random_range(50.0..80.0),
        dome_radius_cm,
        diaphragm_echo: r.random_range(8.0..16.0),
        diaphragm_cm: r.random_range(0.15..0.35),
        organ_echo: r.random_range(0.7..1.3),
        vessels,
        excursion_cm,
        // The curtain never hides the whole organ: part of it stays in view at inspiration.
        curtain_cm: r.random_range(0.0..1.0f32)
            * (0.45 * half_view - costophrenic_x_cm - 1.2 * excursion_cm).clamp(0.0, 1.5),
        effusion_cm: if effusion {
            r.random_range(1.0..(0.5 * depth).max(1.5))
        } else {
            0.0
        },
        fluid_echo: r.random_range(0.01..0.06),
        compressed_lung: effusion && r.random_bool(0.6),
        spine_depth_cm: depth * r.random_range(0.72..0.9),
    }
}
