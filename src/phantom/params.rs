//! Scene parameters of one clip, and how they are drawn at random.
//!
//! Lengths are in cm. Parenchymal features (ribs, B-lines) are placed by their lateral position
//! along the pleura (arc length at the pleural depth, 0 = centre of the image). Pleural-view
//! anatomy is placed in probe coordinates: x lateral, y depth below the centre of the probe face.

use super::sampling::{sample_b_lines, sample_pleural, sample_ribs};
use super::{Labels, Probe, View};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

/// One rib: a bright curved surface with an acoustic shadow beneath.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rib {
    /// Lateral centre along the pleura, cm.
    pub center_cm: f32,
    /// Half of the rib's width, cm.
    pub half_width_cm: f32,
    /// Depth of the top of the rib surface, cm.
    pub depth_cm: f32,
}

/// One B-line: a vertical comet tail from the pleura to the bottom of the image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BLine {
    /// Lateral position along the pleura at rest, cm (it moves with lung sliding).
    pub center_cm: f32,
    /// Half width at the pleura, cm.
    pub half_width_cm: f32,
    /// Brightness relative to the pleural line, 0-1.
    pub echo: f32,
}

/// A vessel in the liver/spleen: a dark disc with a bright wall.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Vessel {
    /// Offset from the diaphragm's centre of curvature, cm (x lateral, y depth).
    pub x_cm: f32,
    /// See `x_cm`.
    pub y_cm: f32,
    /// Radius, cm.
    pub radius_cm: f32,
    /// Brightness of the wall (portal veins have bright walls, hepatic veins almost none).
    pub wall_echo: f32,
}

/// Anatomy of the pleural (flank) view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PleuralScene {
    /// Lateral position where the diaphragm meets the pleura (the costophrenic angle) at rest,
    /// cm along the pleura; the liver/spleen lies to its right, the thorax to its left.
    pub costophrenic_x_cm: f32,
    /// Angle between the diaphragm and the chest wall at the costophrenic angle, degrees.
    pub costophrenic_deg: f32,
    /// Radius of curvature of the diaphragm, cm.
    pub dome_radius_cm: f32,
    /// Diaphragm brightness (linear echo amplitude relative to soft tissue).
    pub diaphragm_echo: f32,
    /// Diaphragm thickness, cm.
    pub diaphragm_cm: f32,
    /// Liver/spleen echo amplitude relative to soft tissue.
    pub organ_echo: f32,
    /// Vessels in the organ.
    pub vessels: Vec<Vessel>,
    /// Diaphragm excursion with breathing, cm.
    pub excursion_cm: f32,
    /// Without effusion: how far (cm) the lung curtain reaches beyond the costophrenic angle
    /// over the liver/spleen at rest.
    pub curtain_cm: f32,
    /// Extent of the effusion measured from the diaphragm, cm (effusion cases only).
    pub effusion_cm: f32,
    /// Echo amplitude of the fluid relative to soft tissue (anechoic: small; some debris).
    pub fluid_echo: f32,
    /// Whether compressed (atelectatic) lung floats in the effusion beyond `effusion_cm`.
    pub compressed_lung: bool,
    /// Depth of the spine (vertebral bodies), cm.
    pub spine_depth_cm: f32,
}

/// Randomised parameters of one clip (all physical-ish scene parameters), with its labels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClipParams {
    /// Seed of the clip: drives the speckle and textures.
    pub seed: u64,
    /// Transducer.
    pub probe: Probe,
    /// Labels of every frame of the clip.
    pub labels: Labels,
    /// Imaging depth, cm.
    pub depth_cm: f32,
    /// Convex: full sector angle, degrees.
    pub sector_deg: f32,
    /// Convex: radius of curvature of the probe face, cm.
    pub probe_radius_cm: f32,
    /// Linear: aperture width, cm.
    pub aperture_cm: f32,
    /// Display zoom (1 = field of view fits the frame; above 1 the fan's sides are cropped).
    pub zoom: f32,
    /// Overall gain, dB.
    pub gain_db: f32,
    /// Display dynamic range of the log compression, dB.
    pub dynamic_range_db: f32,
    /// Grey level of soft tissue at the default gain.
    pub tissue_grey: f32,
    /// Residual depth slope left by time-gain compensation, dB/cm.
    pub tgc_slope_db_per_cm: f32,
    /// Point-spread function standard deviation along the beam, cm.
    pub psf_axial_cm: f32,
    /// Point-spread function standard deviation across the beam, cm.
    pub psf_lateral_cm: f32,
    /// Skin thickness, cm.
    pub skin_cm: f32,
    /// Depth where subcutaneous fat ends, cm.
    pub fat_cm: f32,
    /// Depths of fascia lines in the chest wall, cm.
    pub fascia_cm: Vec<f32>,
    /// Depth of the pleural line at the centre, cm.
    pub pleura_depth_cm: f32,
    /// Pleural depth change per cm laterally.
    pub pleura_tilt: f32,
    /// Pleural curvature (depth change per cm² laterally).
    pub pleura_bow: f32,
    /// Pleural line brightness, linear amplitude relative to soft tissue.
    pub pleura_echo: f32,
    /// Pleural line thickness, cm.
    pub pleura_cm: f32,
    /// Irregularity of the pleural line, 0-1.
    pub pleura_irregularity: f32,
    /// Ribs in view.
    pub ribs: Vec<Rib>,
    /// First A-line brightness relative to the pleural line.
    pub a_line_echo: f32,
    /// Ratio of successive A-line brightnesses.
    pub a_line_decay: f32,
    /// Brightness of the lung's reverberation haze below the pleura, relative to soft tissue.
    pub lung_haze: f32,
    /// B-lines (empty on A-line clips and pleural views).
    pub b_lines: Vec<BLine>,
    /// Peak lateral excursion of lung sliding, cm.
    pub sliding_cm: f32,
    /// Breathing period, frames.
    pub breath_frames: f32,
    /// Breathing phase at frame 0, radians.
    pub breath_phase: f32,
    /// Speckle decorrelation of moving lung/organ texture, radians per frame.
    pub shimmer: f32,
    /// Anatomy of the pleural view (`None` on parenchymal views).
    pub pleural: Option<PleuralScene>,
}

impl ClipParams {
    /// Draws scene parameters for the given labels from `seed`.
    ///
    /// Labels that break the hierarchy are repaired: the label that does not belong to the view
    /// is dropped and a missing one defaults to `false`.
    pub fn sample(labels: Labels, seed: u64) -> Self {
        let labels = match labels.view {
            View::Parenchymal => Labels::parenchymal(labels.b_lines.unwrap_or(false)),
            View::Pleural => Labels::pleural(labels.effusion.unwrap_or(false)),
        };
        let mut r = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
        let pleural_view = labels.view == View::Pleural;
        let probe = if r.random_bool(0.7) {
            Probe::Convex
        } else {
            Probe::Linear
        };
        let (depth_cm, pleura_depth_cm) = match (probe, pleural_view) {
            (Probe::Convex, false) => (r.random_range(7.0..14.0), r.random_range(1.2..3.2)),
            (Probe::Convex, true) => (r.random_range(9.0..16.0), r.random_range(1.2..3.2)),
            (Probe::Linear, false) => (r.random_range(4.5..8.0), r.random_range(0.8..2.2)),
            (Probe::Linear, true) => (r.random_range(6.0..9.0), r.random_range(0.8..2.2)),
        };
        let sector_deg = r.random_range(55.0..75.0f32);
        let probe_radius_cm = r.random_range(4.0..6.5f32);
        let aperture_cm = r.random_range(3.5..5.0f32);
        // Lateral half-extent of the view along the pleura.
        let half_view = match probe {
            Probe::Convex => (probe_radius_cm + pleura_depth_cm) * (sector_deg * 0.5).to_radians(),
            Probe::Linear => aperture_cm * 0.5,
        };
        let skin_cm = r.random_range(0.08..0.18);
        let fat_cm = skin_cm + r.random_range(0.15..0.5) * pleura_depth_cm;
        let n_fascia = r.random_range(1..=3);
        let fascia_cm = (0..n_fascia)
            .map(|_| r.random_range(fat_cm..(pleura_depth_cm - 0.25).max(fat_cm + 0.05)))
            .collect();
        let ribs = sample_ribs(&mut r, half_view, pleura_depth_cm, pleural_view);
        let b_lines = if labels.b_lines == Some(true) {
            sample_b_lines(&mut r, half_view, &ribs)
        } else {
            Vec::new()
        };
        let many_b = b_lines.len() >= 5;
        let pleural = pleural_view
            .then(|| sample_pleural(&mut r, labels.effusion == Some(true), depth_cm, half_view));
        Self {
            seed,
            probe,
            labels,
            depth_cm,
            sector_deg,
            probe_radius_cm,
            aperture_cm,
            zoom: if r.random_bool(0.5) {
                1.0
            } else {
                r.random_range(1.0..1.35)
            },
            gain_db: r.random_range(-5.0..5.0),
            dynamic_range_db: r.random_range(48.0..64.0),
            tissue_grey: r.random_range(80.0..115.0),
            tgc_slope_db_per_cm: r.random_range(-0.6..0.5),
            psf_axial_cm: r.random_range(0.025..0.045),
            psf_lateral_cm: r.random_range(0.07..0.13),
            skin_cm,
            fat_cm,
            fascia_cm,
            pleura_depth_cm,
            pleura_tilt: r.random_range(-0.08..0.08),
            pleura_bow: r.random_range(-0.02..0.03),
            pleura_echo: r.random_range(14.0..28.0),
            pleura_cm: r.random_range(0.06..0.12),
            pleura_irregularity: if labels.b_lines == Some(true) {
                r.random_range(0.2..0.8)
            } else {
                r.random_range(0.0..0.5)
            },
            ribs,
            a_line_echo: match (labels.b_lines == Some(true), many_b) {
                (_, true) => r.random_range(0.0..0.05),
                (true, false) => r.random_range(0.0..0.12),
                (false, _) => r.random_range(0.25..0.6),
            },
            a_line_decay: r.random_range(0.45..0.75),
            lung_haze: r.random_range(0.6..1.2),
            b_lines,
            sliding_cm: r.random_range(0.05..0.3),
            breath_frames: r.random_range(40.0..100.0),
            breath_phase: r.random_range(0.0..std::f32::consts::TAU),
            shimmer: r.random_range(0.05..0.2),
            pleural,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_deterministic_and_follows_labels() {
        for (k, labels) in Labels::ALL.iter().enumerate() {
            let a = ClipParams::sample(*labels, 40 + k as u64);
            assert_eq!(a, ClipParams::sample(*labels, 40 + k as u64));
            assert_eq!(a.labels, *labels);
            assert_eq!(a.pleural.is_some(), labels.view == View::Pleural);
            assert_eq!(!a.b_lines.is_empty(), labels.b_lines == Some(true));
        }
        let fixed = ClipParams::sample(
            Labels {
                view: View::Parenchymal,
                b_lines: None,
                effusion: Some(true),
            },
            1,
        );
        assert_eq!(fixed.labels, Labels::parenchymal(false));
    }

    #[test]
    fn scene_parameters_vary_between_clips() {
        let ps: Vec<ClipParams> = (0..40)
            .map(|s| ClipParams::sample(Labels::parenchymal(true), s))
            .collect();
        let convex = ps.iter().filter(|p| p.probe == Probe::Convex).count();
        assert!((15..40).contains(&convex), "convex {convex}");
        let counts: std::collections::BTreeSet<usize> =
            ps.iter().map(|p| p.b_lines.len()).collect();
        assert!(counts.len() >= 5, "B-line counts {counts:?}");
        let depths: Vec<f32> = ps.iter().map(|p| p.depth_cm).collect();
        let spread = depths.iter().cloned().fold(0.0, f32::max)
            - depths.iter().cloned().fold(99.0, f32::min);
        assert!(spread > 3.0);
    }
}
