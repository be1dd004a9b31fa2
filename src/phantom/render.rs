//! A clip: per-clip precomputation (geometry, scan-conversion table, speckle fields, the
//! static chest wall already log-compressed) and per-frame composition of the moving parts.

use super::canvas::{Canvas, Motion, Tone};
use super::chest::{self, smoothstep};
use super::geometry::{scan_convert, Geometry, ScanEntry};
use super::lung::Lung;
use super::pleural::Pleural;
use super::speckle::{ComplexField, MovingSpeckle};
use super::{ClipParams, Labels, Probe, View};
use crate::image::GreyImage;
use anyhow::{ensure, Result};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use std::f64::consts::TAU;

/// Smallest and largest accepted frame side, pixels.
pub const MIN_SIDE: usize = 16;
/// See [`MIN_SIDE`].
pub const MAX_SIDE: usize = 4096;

enum Scene {
    Lung(Lung),
    Pleural(Pleural),
}

/// A clip that renders frames on demand (frame index t = 0, 1, 2, ...; unbounded).
pub struct Clip {
    params: ClipParams,
    width: usize,
    height: usize,
    pub(super) geo: Geometry,
    table: Vec<ScanEntry>,
    tone: Tone,
    /// Grey levels of the static chest wall (the moving region is overwritten each frame).
    still: Vec<f32>,
    grid: Vec<f32>,
    moving: MovingSpeckle,
    scene: Scene,
}

impl Clip {
    /// Prepares a clip of `width` x `height` frames. Fails when a side is below 16 or above
    /// 4096 pixels, or when the labels break the view hierarchy.
    pub fn new(params: ClipParams, width: usize, height: usize) -> Result<Self> {
        for side in [width, height] {
            ensure!(
                (MIN_SIDE..=MAX_SIDE).contains(&side),
                "frame size {width}x{height}: each side must be {MIN_SIDE}..={MAX_SIDE} pixels"
            );
        }
        ensure!(
            params.labels.is_consistent(),
            "labels {:?} break the view hierarchy",
            params.labels
        );
        ensure!(
            (params.labels.view == View::Pleural) == params.pleural.is_some(),
            "a pleural scene is needed exactly on pleural views"
        );
        let p = &params;
        let geo = Geometry::new(p, width, height);
        let table = geo.scan_table(width, height);
        let (rows, cols) = (geo.rows, geo.cols);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(p.seed);
        let row_per_cm = (rows - 1) as f32 / geo.depth_cm;
        let col_per_cm = 1.0 / geo.col_spacing_cm(p.depth_cm * 0.15);
        // Linear arrays run at higher frequencies: finer speckle.
        let fine = if p.probe == Probe::Linear { 0.6 } else { 1.0 };
        let sx = (fine * p.psf_lateral_cm * col_per_cm).max(0.6);
        let sy = (fine * p.psf_axial_cm * row_per_cm).max(0.5);
        let to_grey = 255.0 / p.dynamic_range_db;
        let tone = Tone {
            per_ln: to_grey * 10.0 / std::f32::consts::LN_10,
            row: (0..rows)
                .map(|i| {
                    let d = geo.row_depth(i as f32);
                    // Mean ln of unit exponential speckle is -0.5772: keep tissue at tissue_grey.
                    p.tissue_grey
                        + to_grey * (p.gain_db + p.tgc_slope_db_per_cm * d)
                        + 0.5772 * to_grey * 10.0 / std::f32::consts::LN_10
                })
                .collect(),
            col: (0..cols)
                .map(|j| match p.probe {
                    Probe::Convex => {
                        -to_grey * 5.0 * smoothstep(0.8, 1.0, geo.col_u(j as f32).abs())
                    }
                    Probe::Linear => 0.0,
                })
                .collect(),
        };
        let still_speckle = ComplexField::new(&mut rng, cols, rows, sx, sy);
        let chest = chest::build(p, &geo, &mut rng);
        let (pad_y, pad_x, scene) = match p.labels.view {
            View::Parenchymal => {
                let pad_x =
                    (p.sliding_cm / geo.col_spacing_cm(p.pleura_depth_cm)).ceil() as usize + 2;
                let lung = Lung::new(p, &geo, &chest, pad_x, &mut rng);
                (1, pad_x, Scene::Lung(lung))
            }
            View::Pleural => {
                let exc = p.pleural.as_ref().map_or(0.0, |s| s.excursion_cm);
                let pad_y = (exc * row_per_cm).ceil() as usize + 2;
                let pad_x = (exc / geo.col_spacing_cm(p.depth_cm * 0.5)).ceil() as usize + 2;
                (pad_y, pad_x, Scene::Pleural(Pleural::new(p, &geo, &chest)))
            }
        };
        let mut echo = chest.echo;
        if let Scene::Pleural(pl) = &scene {
            pl.add_static(p, &geo, &mut echo);
        }
        let still: Vec<f32> = (0..rows * cols)
            .map(|k| {
                let e = echo[k] * chest.shadow[k];
                tone.grey(k / cols, k % cols, e * e * still_speckle.intensity(k))
            })
            .collect();
        let moving = MovingSpeckle::new(&mut rng, rows, cols, pad_y, pad_x, sx, sy);
        Ok(Self {
            params,
            width,
            height,
            table,
            tone,
            grid: still.clone(),
            still,
            moving,
            scene,
            geo,
        })
    }

    /// Labels of every frame of this clip.
    pub fn labels(&self) -> Labels {
        self.params.labels
    }

    /// Parameters of this clip.
    pub fn params(&self) -> &ClipParams {
        &self.params
    }

    /// Frame size (width, height) in pixels.
    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// Renders frame `t`. Deterministic: the same parameters, size and `t` always give the same
    /// pixels, whatever frames were rendered before.
    pub fn frame(&mut self, t: usize) -> GreyImage {
        let p = &self.params;
        let cycle = (t as f64 / p.breath_frames as f64 + p.breath_phase as f64 / TAU).fract();
        let angle = (cycle * TAU) as f32;
        let shimmer = ((p.shimmer as f64 * t as f64) % TAU) as f32;
        let slide_cm = p.sliding_cm * angle.sin();
        let slide_cols = slide_cm / self.geo.col_spacing_cm(p.pleura_depth_cm);
        let breath = 0.5 - 0.5 * angle.cos();
        let speckle = match (&self.scene, &p.pleural) {
            (Scene::Pleural(_), Some(s)) => {
                let shift = s.excursion_cm * breath;
                let di = shift * 0.47 * (self.geo.rows - 1) as f32 / self.geo.depth_cm;
                let dj = shift * 0.88 / self.geo.col_spacing_cm(p.depth_cm * 0.5);
                self.moving.frame(di, dj, shimmer)
            }
            _ => self.moving.frame(0.0, slide_cols, shimmer),
        };
        let motion = Motion {
            slide_cm,
            slide_cols,
            breath,
            speckle,
        };
        self.grid.copy_from_slice(&self.still);
        let mut canvas = Canvas {
            grid: &mut self.grid,
            cols: self.geo.cols,
            tone: &self.tone,
        };
        match &mut self.scene {
            Scene::Lung(l) => l.render(p, &self.geo, &motion, &mut canvas),
            Scene::Pleural(s) => s.render(p, &self.geo, &motion, &mut canvas),
        }
        let mut img = GreyImage::new(self.width, self.height);
        scan_convert(&self.table, &self.grid, self.geo.cols, &mut img.pixels);
        img
    }
}
