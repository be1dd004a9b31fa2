//! The benchmark's raw times as CSV and its latency histogram as PNG, drawn without a plotting
//! crate: bars are rasterised into an RGB buffer and written with `png`; the few labels use a
//! built-in 3x5 pixel font (digits and the capitals the labels need).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::{BenchRun, ModeSamples};

const WIDTH: usize = 900;
const PANEL: usize = 270;
const HEIGHT: usize = 2 * PANEL + 20;
const LEFT: usize = 40;
const RIGHT: usize = 44;
const TOP: usize = 46;
const BOTTOM: usize = 34;
const BINS: usize = 90;
const SHARED: [u8; 3] = [31, 119, 180];
const SERIAL: [u8; 3] = [255, 127, 14];
const INK: [u8; 3] = [40, 40, 40];
const GRID: [u8; 3] = [225, 225, 225];

/// The x axis the histogram was drawn with (for the caption).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Axis {
    /// Right end of the axis, in milliseconds (the axis starts at 0).
    pub max_ms: f64,
    /// Distance between ticks, in milliseconds.
    pub tick_ms: f64,
}

/// Decimals that a multiple of `tick` needs.
fn decimals(tick: f64) -> usize {
    (-tick.log10().floor()).max(0.0) as usize
}

impl Axis {
    /// How to read the histogram.
    pub fn caption(&self) -> String {
        format!(
            "Per-frame latency, shared path (blue) vs serial networks (orange); upper panel \
             hierarchy mode, lower all-tasks mode. x axis 0 to {} ms in {BINS} bins of {:.3} ms \
             (the last bin also holds slower frames), labelled ticks every {} ms; bar height = \
             fraction of frames (each panel scaled to its tallest bar); vertical lines = medians. \
             Raw per-frame times: latency.csv.",
            format_args!("{:.*}", decimals(self.tick_ms), self.max_ms),
            self.max_ms / BINS as f64,
            format_args!("{:.*}", decimals(self.tick_ms), self.tick_ms),
        )
    }
}

/// Writes one row per frame, mode and path: the path's total, and for the shared path the
/// backbone, all heads and each head; for the serial path each network (empty = not run).
pub fn write_csv(run: &BenchRun, path: &Path) -> Result<()> {
    let mut s = String::from("frame,mode,path,ran_first,total_ms,backbone_ms,heads_ms");
    for t in &run.tasks {
        let _ = write!(s, ",{t}_ms");
    }
    s.push('\n');
    let cell = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.4}"));
    for (mode, m) in [("hierarchy", &run.hierarchy), ("all_tasks", &run.all_tasks)] {
        for k in 0..m.shared.len() {
            let first = m.shared_first[k];
            let _ = write!(
                s,
                "{k},{mode},shared,{first},{:.4},{:.4},{:.4}",
                m.shared[k], m.backbone[k], m.heads[k]
            );
            for head in &m.head {
                let _ = write!(s, ",{}", cell(head[k]));
            }
            let _ = write!(s, "\n{k},{mode},serial,{},{:.4},,", !first, m.serial[k]);
            for net in &m.network {
                let _ = write!(s, ",{}", cell(net[k]));
            }
            s.push('\n');
        }
    }
    pleura::fsutil::write_atomic(path, s.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Draws the shared and serial per-frame latency distributions of both modes into a PNG.
pub fn write_histogram(run: &BenchRun, path: &Path) -> Result<Axis> {
    let axis = axis_for(run);
    let mut canvas = Canvas::new(WIDTH, HEIGHT);
    for (i, (title, m)) in [("HIERARCHY", &run.hierarchy), ("ALL TASKS", &run.all_tasks)]
        .into_iter()
        .enumerate()
    {
        panel(&mut canvas, i * (PANEL + 20), title, m, axis);
    }
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, WIDTH as u32, HEIGHT as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&canvas.pixels)?;
    }
    pleura::fsutil::write_atomic(path, &bytes)
        .with_context(|| format!("writing PNG {}", path.display()))?;
    Ok(axis)
}

/// 0 to a round number above every series' 99th percentile, with about 8 ticks.
fn axis_for(run: &BenchRun) -> Axis {
    let p99 = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        pleura::latency::percentile(&v, 0.99)
    };
    let top = [&run.hierarchy, &run.all_tasks]
        .iter()
        .flat_map(|m| [p99(&m.shared), p99(&m.serial)])
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        * 1.1;
    let top = if top > 0.0 { top } else { 1.0 };
    let raw = top / 8.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let tick = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|t| *t >= raw)
        .unwrap_or(10.0 * magnitude);
    Axis {
        max_ms: (top / tick).ceil() * tick,
        tick_ms: tick,
    }
}

fn histogram(values: &[f64], axis: Axis) -> Vec<f64> {
    let mut bins = vec![0.0; BINS];
    for v in values {
        let b = (v / axis.max_ms * BINS as f64)
            .floor()
            .clamp(0.0, (BINS - 1) as f64);
        bins[b as usize] += 1.0 / values.len() as f64;
    }
    bins
}

fn panel(c: &mut Canvas, y0: usize, title: &str, m: &ModeSamples, axis: Axis) {
    let (x0, x1) = (LEFT, WIDTH - RIGHT);
    let (top, base) = (y0 + TOP, y0 + PANEL - BOTTOM);
    let shared = histogram(&m.shared, axis);
    let serial = histogram(&m.serial, axis);
    let tallest = shared.iter().chain(&serial).fold(0.0f64, |a, b| a.max(*b));
    let x_of = |ms: f64| x0 + ((ms / axis.max_ms) * (x1 - x0) as f64).round() as usize;
    let ticks = (axis.max_ms / axis.tick_ms).round() as usize;
    for t in 0..=ticks {
        let ms = t as f64 * axis.tick_ms;
        let x = x_of(ms).min(x1);
        c.rect(x, top, 1, base - top, GRID, 1.0);
        c.rect(x, base, 1, 5, INK, 1.0);
        let label = format!("{ms:.*}", decimals(axis.tick_ms));
        c.text(x.saturating_sub(label.len() * 4), base + 9, &label, INK);
    }
    c.text(x1 + 16, base + 9, "MS", INK);
    for (bins, colour) in [(&shared, SHARED), (&serial, SERIAL)] {
        for (b, f) in bins.iter().enumerate() {
            let h = if tallest > 0.0 {
                (f / tallest * (base - top) as f64).round() as usize
            } else {
                0
            };
            let (bx0, bx1) = (x_of(b as f64 * axis.max_ms / BINS as f64), {
                x_of((b + 1) as f64 * axis.max_ms / BINS as f64)
            });
            c.rect(bx0, base - h, (bx1 - bx0).max(1), h, colour, 0.6);
        }
    }
    for (values, colour) in [(&m.shared, SHARED), (&m.serial, SERIAL)] {
        let median = super::Stats::of(values.iter().copied()).median;
        if median.is_finite() {
            let x = x_of(median.min(axis.max_ms)).min(x1 - 2);
            c.rect(x, top, 2, base - top, colour, 1.0);
        }
    }
    c.rect(x0, base, x1 - x0, 1, INK, 1.0);
    c.rect(x0, top, 1, base - top, INK, 1.0);
    c.text(x0, y0 + 14, title, INK);
    let legend = x1 - 220;
    c.rect(legend, y0 + 12, 12, 12, SHARED, 1.0);
    c.text(legend + 18, y0 + 14, "SHARED", INK);
    c.rect(legend + 110, y0 + 12, 12, 12, SERIAL, 1.0);
    c.text(legend + 128, y0 + 14, "SERIAL", INK);
}

/// An RGB raster on a white background.
struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            pixels: vec![255; width * height * 3],
        }
    }

    /// Blends `colour` with opacity `alpha` over a `w x h` rectangle (clipped to the canvas).
    fn rect(&mut self, x: usize, y: usize, w: usize, h: usize, colour: [u8; 3], alpha: f32) {
        for yy in y..(y + h).min(self.height) {
            for xx in x..(x + w).min(self.width) {
                let i = 3 * (yy * self.width + xx);
                for (p, c) in self.pixels[i..i + 3].iter_mut().zip(colour) {
                    *p = (alpha * f32::from(c) + (1.0 - alpha) * f32::from(*p)).round() as u8;
                }
            }
        }
    }

    /// Writes `text` with its top-left corner at `(x, y)`, 2 pixels per font pixel.
    fn text(&mut self, x: usize, y: usize, text: &str, colour: [u8; 3]) {
        for (n, ch) in text.chars().enumerate() {
            for (row, bits) in glyph(ch).iter().enumerate() {
                for col in 0..3 {
                    if bits & (0b100 >> col) != 0 {
                        self.rect(x + n * 8 + 2 * col, y + 2 * row, 2, 2, colour, 1.0);
                    }
                }
            }
        }
    }
}

/// 3x5 glyphs, one row of 3 bits (left = 0b100) per entry; unknown characters are blank.
fn glyph(ch: char) -> [u8; 5] {
    match ch {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        'A' => [2, 5, 7, 5, 5],
        'C' => [3, 4, 4, 4, 3],
        'D' => [6, 5, 5, 5, 6],
        'E' => [7, 4, 6, 4, 7],
        'H' => [5, 5, 7, 5, 5],
        'I' => [7, 2, 2, 2, 7],
        'K' => [5, 5, 6, 5, 5],
        'L' => [4, 4, 4, 4, 7],
        'M' => [5, 7, 7, 5, 5],
        'R' => [6, 5, 6, 5, 5],
        'S' => [3, 4, 2, 1, 6],
        'T' => [7, 2, 2, 2, 2],
        'Y' => [5, 5, 2, 2, 2],
        _ => [0; 5],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_fractions_sum_to_one_and_clamp_outliers() {
        let axis = Axis {
            max_ms: 9.0,
            tick_ms: 1.0,
        };
        let bins = histogram(&[0.0, 4.5, 8.99, 100.0], axis);
        assert!((bins.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((bins[BINS - 1] - 0.5).abs() < 1e-12);
        assert!((bins[0] - 0.25).abs() < 1e-12);
    }

    #[test]
    fn every_label_character_has_a_glyph() {
        for ch in "0123456789.HIERARCHYALL TASKSSHAREDSERIALMS".chars() {
            assert!(ch == ' ' || glyph(ch) != [0; 5], "{ch}");
        }
    }

    #[test]
    fn drawing_stays_inside_the_canvas() {
        let mut c = Canvas::new(10, 10);
        c.rect(8, 8, 5, 5, INK, 1.0);
        c.text(7, 7, "88", INK);
        assert_eq!(c.pixels.len(), 300);
    }
}
