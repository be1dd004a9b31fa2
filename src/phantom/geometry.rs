//! Probe geometry: the polar (depth x beam) grid the scene is rendered on, its placement in the
//! output frame, and the scan-conversion table that maps output pixels back to the grid.
//!
//! Convex probe: beams fan out from a virtual apex `radius_cm` above the probe face; grid column
//! `j` is a beam angle, grid row `i` a depth along the beam. Linear probe: beams are parallel, so
//! the grid is the (cropped) image itself. Either way, everything axial (shadows, A-lines,
//! B-lines) is a vertical structure on the grid.

use super::{ClipParams, Probe};

/// Geometry of one clip at one output size.
#[derive(Clone, Debug)]
pub(crate) struct Geometry {
    pub probe: Probe,
    /// Imaging depth below the probe face, cm.
    pub depth_cm: f32,
    /// Convex: radius of curvature of the probe face, cm.
    pub radius_cm: f32,
    /// Convex: half sector angle, radians; linear: half aperture, cm.
    pub half_span: f32,
    /// Pixels per cm in the output frame.
    pub scale: f32,
    /// Output pixel (x, y) of the centre of the probe face.
    pub origin: (f32, f32),
    /// Grid rows (depth samples) and columns (beams).
    pub rows: usize,
    pub cols: usize,
}

impl Geometry {
    /// Fits the probe's field of view into a `width` x `height` frame.
    pub fn new(p: &ClipParams, width: usize, height: usize) -> Self {
        let (w, h) = (width as f32, height as f32);
        let depth = p.depth_cm;
        let (radius, half_span, ext_w, ext_h, top) = match p.probe {
            Probe::Convex => {
                let r = p.probe_radius_cm;
                let ha = (p.sector_deg * 0.5).to_radians();
                let top = r * (ha.cos() - 1.0); // corners of the probe face lie above y = 0
                (r, ha, 2.0 * (r + depth) * ha.sin(), depth - top, top)
            }
            Probe::Linear => {
                let hw = p.aperture_cm * 0.5;
                (0.0, hw, 2.0 * hw, depth, 0.0)
            }
        };
        let fit_h = h * 0.97 / ext_h;
        let scale = (w * 0.98 / ext_w * p.zoom).min(fit_h);
        let used_h = ext_h * scale;
        let origin = (w * 0.5, (h - used_h) * 0.25 - top * scale);
        let rows = ((depth * scale).ceil() as usize + 1).max(2);
        let lateral_px = match p.probe {
            Probe::Convex => 2.0 * half_span * (radius + depth) * scale,
            Probe::Linear => 2.0 * half_span * scale,
        };
        let cols = (lateral_px.ceil() as usize + 1).clamp(2, 2 * width.max(height) + 2);
        Self {
            probe: p.probe,
            depth_cm: depth,
            radius_cm: radius,
            half_span,
            scale,
            origin,
            rows,
            cols,
        }
    }

    /// Depth (cm below the probe face, along the beam) of grid row `i` (may be fractional).
    #[inline]
    pub fn row_depth(&self, i: f32) -> f32 {
        self.depth_cm * i / (self.rows - 1) as f32
    }

    /// Normalised lateral coordinate in [-1, 1] of grid column `j`.
    #[inline]
    pub fn col_u(&self, j: f32) -> f32 {
        2.0 * j / (self.cols - 1) as f32 - 1.0
    }

    /// Lateral distance (cm) along an arc at depth `d` between neighbouring columns.
    pub fn col_spacing_cm(&self, d: f32) -> f32 {
        let span = 2.0 * self.half_span / (self.cols - 1) as f32;
        match self.probe {
            Probe::Convex => span * (self.radius_cm + d),
            Probe::Linear => span,
        }
    }

    /// Lateral position (cm, arc length at depth `d`) of column `j`.
    pub fn col_lateral_cm(&self, j: f32, d: f32) -> f32 {
        let u = self.col_u(j);
        match self.probe {
            Probe::Convex => u * self.half_span * (self.radius_cm + d),
            Probe::Linear => u * self.half_span,
        }
    }

    /// Physical position (x lateral, y depth below the centre of the probe face), cm, of grid
    /// point (i, j).
    pub fn grid_to_xy(&self, i: f32, j: f32) -> (f32, f32) {
        let d = self.row_depth(i);
        let u = self.col_u(j);
        match self.probe {
            Probe::Convex => {
                let a = u * self.half_span;
                let r = self.radius_cm + d;
                (r * a.sin(), r * a.cos() - self.radius_cm)
            }
            Probe::Linear => (u * self.half_span, d),
        }
    }

    /// Fractional grid coordinates (i, j) of output pixel centre (px, py), or `None` when the
    /// pixel lies outside the field of view.
    pub fn pixel_to_grid(&self, px: usize, py: usize) -> Option<(f32, f32)> {
        let x = (px as f32 + 0.5 - self.origin.0) / self.scale;
        let y = (py as f32 + 0.5 - self.origin.1) / self.scale;
        let (d, u) = match self.probe {
            Probe::Convex => {
                let yy = y + self.radius_cm;
                let r = (x * x + yy * yy).sqrt();
                (r - self.radius_cm, x.atan2(yy) / self.half_span)
            }
            Probe::Linear => (y, x / self.half_span),
        };
        if !(0.0..=self.depth_cm).contains(&d) || !(-1.0..=1.0).contains(&u) {
            return None;
        }
        let i = d / self.depth_cm * (self.rows - 1) as f32;
        let j = (u + 1.0) * 0.5 * (self.cols - 1) as f32;
        Some((i, j))
    }

    /// Scan-conversion table for a `width` x `height` frame.
    pub fn scan_table(&self, width: usize, height: usize) -> Vec<ScanEntry> {
        let mut table = Vec::with_capacity(width * height);
        for py in 0..height {
            for px in 0..width {
                table.push(match self.pixel_to_grid(px, py) {
                    None => ScanEntry::OUTSIDE,
                    Some((i, j)) => {
                        let i0 = (i.floor() as usize).min(self.rows - 2);
                        let j0 = (j.floor() as usize).min(self.cols - 2);
                        ScanEntry {
                            index: (i0 * self.cols + j0) as u32,
                            wi: (i - i0 as f32).clamp(0.0, 1.0),
                            wj: (j - j0 as f32).clamp(0.0, 1.0),
                        }
                    }
                });
            }
        }
        table
    }
}

/// Where one output pixel reads the polar grid: top-left grid index and bilinear weights.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScanEntry {
    pub index: u32,
    pub wi: f32,
    pub wj: f32,
}

impl ScanEntry {
    /// Marks a pixel outside the field of view (always black).
    pub const OUTSIDE: Self = Self {
        index: u32::MAX,
        wi: 0.0,
        wj: 0.0,
    };
}

/// Scan-converts grid values (row-major, `cols` wide) into output pixels.
pub(crate) fn scan_convert(table: &[ScanEntry], grid: &[f32], cols: usize, out: &mut [u8]) {
    for (e, o) in table.iter().zip(out.iter_mut()) {
        if e.index == u32::MAX {
            *o = 0;
            continue;
        }
        let k = e.index as usize;
        let top = grid[k] + (grid[k + 1] - grid[k]) * e.wj;
        let bot = grid[k + cols] + (grid[k + cols + 1] - grid[k + cols]) * e.wj;
        *o = (top + (bot - top) * e.wi).clamp(0.0, 255.0) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ClipParams, Labels, Probe};
    use super::*;

    fn params(probe: Probe) -> ClipParams {
        let mut p = ClipParams::sample(Labels::parenchymal(false), 3);
        p.probe = probe;
        p
    }

    #[test]
    fn grid_round_trips_through_pixels() {
        for probe in [Probe::Convex, Probe::Linear] {
            let g = Geometry::new(&params(probe), 200, 160);
            for &(i, j) in &[(10.0f32, 20.0f32), (50.0, 60.0), (1.0, 1.0)] {
                let (x, y) = g.grid_to_xy(i, j);
                let px = g.origin.0 + x * g.scale - 0.5;
                let py = g.origin.1 + y * g.scale - 0.5;
                let (pxr, pyr) = (px.round(), py.round());
                if pxr < 0.0 || pyr < 0.0 || pxr >= 200.0 || pyr >= 160.0 {
                    continue;
                }
                let (i2, j2) = g.pixel_to_grid(pxr as usize, pyr as usize).unwrap();
                assert!((i2 - i).abs() < 2.0 && (j2 - j).abs() < 2.0, "{probe:?}");
            }
        }
    }

    #[test]
    fn convex_field_of_view_fits_in_frame() {
        let mut p = params(Probe::Convex);
        p.zoom = 1.0;
        let g = Geometry::new(&p, 256, 256);
        let table = g.scan_table(256, 256);
        assert_eq!(
            table[0].index,
            u32::MAX,
            "top-left corner is outside the fan"
        );
        let inside = table.iter().filter(|e| e.index != u32::MAX).count();
        assert!(inside > 256 * 256 / 4, "fan covers too little: {inside}");
        assert!(inside < 256 * 256 * 9 / 10, "fan covers too much: {inside}");
    }
}
