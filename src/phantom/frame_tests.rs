//! End-to-end checks of rendered frames: determinism, field of view, and that the
//! artefacts behind each label are where a clinician would look for them.

use super::pleural::{diaphragm_distance, dome_centre};
use super::{BLine, Clip, ClipParams, Labels, Probe};
use crate::image::GreyImage;
use std::f64::consts::TAU;

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len().max(1) as f32
}

#[test]
fn frames_are_deterministic_and_order_independent() {
    for labels in Labels::ALL {
        let p = ClipParams::sample(labels, 77);
        let mut a = Clip::new(p.clone(), 96, 80).unwrap();
        let mut b = Clip::new(p.clone(), 96, 80).unwrap();
        let late = a.frame(7);
        for t in 0..7 {
            b.frame(t);
        }
        assert_eq!(b.frame(7), late, "{}", labels.name());
        assert_eq!(a.frame(3), b.frame(3));
        assert_eq!(a.frame(1_000_000), b.frame(1_000_000), "large t");
        let other = Clip::new(ClipParams::sample(labels, 78), 96, 80)
            .unwrap()
            .frame(7);
        let differ = late
            .pixels
            .iter()
            .zip(&other.pixels)
            .filter(|(x, y)| x != y)
            .count();
        assert!(
            differ > late.pixels.len() / 4,
            "different seed, different frame"
        );
        assert_eq!(late.width * late.height, late.pixels.len());
    }
}

#[test]
fn frame_size_is_checked() {
    let p = ClipParams::sample(Labels::parenchymal(false), 1);
    assert!(Clip::new(p.clone(), 15, 64).is_err());
    assert!(Clip::new(p.clone(), 64, 4097).is_err());
    let mut bad = p.clone();
    bad.labels.effusion = Some(true);
    assert!(Clip::new(bad, 64, 64).is_err());
    let img = Clip::new(p, 16, 16).unwrap().frame(0);
    assert_eq!((img.width, img.height), (16, 16));
}

#[test]
fn outside_the_field_of_view_is_black() {
    for (seed, probe) in [(5, Probe::Convex), (6, Probe::Convex), (7, Probe::Linear)] {
        for labels in Labels::ALL {
            let mut p = ClipParams::sample(labels, seed);
            p.probe = probe;
            let mut clip = Clip::new(p, 128, 112).unwrap();
            let img = clip.frame(3);
            let mut outside = 0;
            for y in 0..112 {
                for x in 0..128 {
                    if clip.geo.pixel_to_grid(x, y).is_none() {
                        outside += 1;
                        assert_eq!(img.get(x, y), 0, "{probe:?} ({x},{y})");
                    }
                }
            }
            if probe == Probe::Convex {
                assert_eq!(img.get(0, 0), 0);
                assert_eq!(img.get(127, 0), 0);
                assert!(outside > 128 * 112 / 10, "a fan leaves black corners");
            }
            let inside: Vec<f32> = img
                .pixels
                .iter()
                .filter(|&&v| v > 0)
                .map(|&v| v as f32)
                .collect();
            assert!(mean(&inside) > 25.0, "the image is not blank");
        }
    }
}

/// Grey levels of output pixels whose depth (cm) satisfies `keep`, per output column.
fn by_column(clip: &Clip, img: &GreyImage, keep: impl Fn(f32) -> bool) -> Vec<Vec<f32>> {
    let mut cols = vec![Vec::new(); img.width];
    for y in 0..img.height {
        for (x, col) in cols.iter_mut().enumerate() {
            if let Some((i, _)) = clip.geo.pixel_to_grid(x, y) {
                if keep(clip.geo.row_depth(i)) {
                    col.push(img.get(x, y) as f32);
                }
            }
        }
    }
    cols
}

#[test]
fn b_lines_brighten_the_lung_in_vertical_streaks() {
    for seed in 0..4 {
        let mut a = ClipParams::sample(Labels::parenchymal(false), 200 + seed);
        a.ribs.clear();
        let mut b = a.clone();
        b.labels = Labels::parenchymal(true);
        b.b_lines = [-0.8f32, -0.2, 0.5, 1.1]
            .iter()
            .map(|&c| BLine {
                center_cm: c,
                half_width_cm: 0.12,
                echo: 0.6,
            })
            .collect();
        let deep = a.pleura_depth_cm + 1.0;
        let stats = |p: ClipParams| {
            let mut clip = Clip::new(p, 160, 160).unwrap();
            let img = clip.frame(4);
            let cols: Vec<f32> = by_column(&clip, &img, |d| d > deep)
                .iter()
                .filter(|c| c.len() > 10)
                .map(|c| mean(c))
                .collect();
            let all = mean(&cols);
            (all, cols.iter().cloned().fold(0.0, f32::max))
        };
        let ((mean_a, max_a), (mean_b, max_b)) = (stats(a), stats(b));
        assert!(
            mean_b > mean_a + 3.0,
            "seed {seed}: mean {mean_a} vs {mean_b}"
        );
        assert!(
            max_b > max_a + 25.0,
            "seed {seed}: brightest column {max_a} vs {max_b}"
        );
    }
}

#[test]
fn effusion_is_a_dark_band_above_the_diaphragm() {
    let mut tested = 0;
    for seed in 0..12 {
        let mut wet = ClipParams::sample(Labels::pleural(true), 300 + seed);
        wet.ribs.clear();
        let mut dry = wet.clone();
        dry.labels = Labels::pleural(false);
        let s = dry.pleural.as_mut().unwrap();
        s.effusion_cm = 0.0;
        s.compressed_lung = false;
        let band = |p: ClipParams| {
            let mut clip = Clip::new(p.clone(), 160, 160).unwrap();
            let img = clip.frame(0);
            let scene = p.pleural.as_ref().unwrap();
            let cycle = (p.breath_phase as f64 / TAU).fract();
            let breath = 0.5 - 0.5 * ((cycle * TAU) as f32).cos();
            let centre = dome_centre(&p, scene, breath);
            let mut v = Vec::new();
            for y in 0..img.height {
                for x in 0..img.width {
                    let Some((i, j)) = clip.geo.pixel_to_grid(x, y) else {
                        continue;
                    };
                    let (px, py) = clip.geo.grid_to_xy(i, j);
                    let sd = diaphragm_distance(scene, centre, px, py);
                    let d = clip.geo.row_depth(i);
                    if (0.3..0.8).contains(&sd)
                        && d > p.pleura_depth_cm + 0.5
                        && d < 0.7 * p.depth_cm
                    {
                        v.push(img.get(x, y) as f32);
                    }
                }
            }
            v
        };
        let (w, d) = (band(wet), band(dry));
        if w.len() < 40 {
            continue;
        }
        tested += 1;
        assert!(
            mean(&w) < 45.0,
            "seed {seed}: effusion band mean {}",
            mean(&w)
        );
        assert!(
            mean(&d) > mean(&w) + 25.0,
            "seed {seed}: {} vs {}",
            mean(&d),
            mean(&w)
        );
    }
    assert!(tested >= 4, "only {tested} scenes had the band in view");
}

#[test]
fn lung_slides_under_a_still_chest_wall() {
    let mut p = ClipParams::sample(Labels::parenchymal(false), 9);
    p.sliding_cm = 0.2;
    let mut clip = Clip::new(p.clone(), 128, 128).unwrap();
    let (f0, f1) = (clip.frame(10), clip.frame(11));
    let (mut wall, mut lung) = ((0, 0), (0, 0));
    for y in 0..128 {
        for x in 0..128 {
            let Some((i, _)) = clip.geo.pixel_to_grid(x, y) else {
                continue;
            };
            let d = clip.geo.row_depth(i);
            let changed = (f0.get(x, y) != f1.get(x, y)) as usize;
            if d < 0.6 * p.fat_cm {
                wall = (wall.0 + changed, wall.1 + 1);
            } else if d > p.pleura_depth_cm + 0.5 {
                lung = (lung.0 + changed, lung.1 + 1);
            }
        }
    }
    assert_eq!(wall.0, 0, "the chest wall does not move");
    assert!(lung.0 * 2 > lung.1, "the lung texture moves: {lung:?}");
}
