//! Drawing on frames: what the live view streams and the exam's contact sheet shows.
//!
//! A [`Canvas`] is an RGB image made from a grey frame, rescaled by an integer factor so that
//! its longer side lies in a readable range. On it go the crop rectangle, and a [`Panel`] of
//! [`Line`]s: per task its name, a bar for a probability (with the decision band's bounds
//! ticked) and its state in words; text uses the built-in 5x7 font ([`font`]). Pure raster
//! code, no dependency: the same drawing serves the stream (JPEG) and the contact sheet (PNG).

pub mod decisions;
pub mod font;

use crate::image::GreyImage;
use crate::preprocess::Rect;

/// An RGB colour.
pub type Rgb = [u8; 3];

/// Colours of the drawings.
pub mod colour {
    use super::Rgb;
    /// Text.
    pub const WHITE: Rgb = [240, 240, 240];
    /// Quiet text: undecided, skipped.
    pub const GREY: Rgb = [150, 150, 150];
    /// The positive class decided (B-lines, effusion present, pleural view).
    pub const AMBER: Rgb = [255, 176, 32];
    /// The negative class decided.
    pub const TEAL: Rgb = [64, 200, 190];
    /// No reading, errors.
    pub const RED: Rgb = [235, 70, 60];
    /// The crop rectangle.
    pub const CROP: Rgb = [90, 170, 255];
    /// Bar backgrounds.
    pub const DARK: Rgb = [50, 50, 50];
}

/// Frames are enlarged by an integer factor until their longer side is at least this.
const MIN_SIDE: usize = 480;

/// An RGB image to draw on.
#[derive(Clone, Debug, PartialEq)]
pub struct Canvas {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Row-major RGB, 3 bytes a pixel.
    pub pixels: Vec<u8>,
    /// Canvas pixels per frame pixel (`> 1`: enlarged, `< 1`: reduced).
    pub scale: f64,
}

impl Canvas {
    /// A canvas of one colour.
    pub fn new(width: usize, height: usize, fill: Rgb) -> Canvas {
        Canvas {
            width,
            height,
            pixels: fill.repeat(width * height),
            scale: 1.0,
        }
    }

    /// `image` in grey, rescaled by an integer factor: enlarged (nearest, at most 8x) until its
    /// longer side reaches 480 pixels, or reduced (box average) until it is at most `max_side`.
    pub fn from_grey(image: &GreyImage, max_side: usize) -> Canvas {
        let side = image.width.max(image.height).max(1);
        if side < MIN_SIDE {
            Self::rescale(image, MIN_SIDE.div_ceil(side).clamp(1, 8), 1)
        } else {
            Self::reduced(image, max_side)
        }
    }

    /// `image` in grey, reduced by the smallest integer factor (box average) that brings its
    /// longer side to at most `max_side`; never enlarged.
    pub fn reduced(image: &GreyImage, max_side: usize) -> Canvas {
        let side = image.width.max(image.height).max(1);
        Self::rescale(image, 1, side.div_ceil(max_side.max(1)).max(1))
    }

    fn rescale(image: &GreyImage, up: usize, down: usize) -> Canvas {
        let (w, h) = (image.width * up / down, image.height * up / down);
        let mut pixels = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let v = if down == 1 {
                    image.get(x / up, y / up)
                } else {
                    let mut sum = 0u32;
                    for dy in 0..down {
                        let row = &image.pixels[(y * down + dy) * image.width..];
                        sum += row[x * down..(x + 1) * down]
                            .iter()
                            .map(|&p| u32::from(p))
                            .sum::<u32>();
                    }
                    (sum / (down * down) as u32) as u8
                };
                pixels.extend_from_slice(&[v, v, v]);
            }
        }
        Canvas {
            width: w,
            height: h,
            pixels,
            scale: up as f64 / down as f64,
        }
    }

    /// The canvas as an RGB PNG file's bytes.
    pub fn to_png(&self) -> anyhow::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, self.width as u32, self.height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&self.pixels)?;
        writer.finish()?;
        Ok(bytes)
    }

    /// Text size (1 or 2 pixels a font pixel) for this canvas.
    pub fn text_scale(&self) -> usize {
        if self.width.min(self.height) >= 400 {
            2
        } else {
            1
        }
    }

    fn put(&mut self, x: usize, y: usize, c: Rgb, alpha: f32) {
        if x < self.width && y < self.height {
            let i = (y * self.width + x) * 3;
            for (p, c) in self.pixels[i..i + 3].iter_mut().zip(c) {
                *p = (f32::from(*p) * (1.0 - alpha) + f32::from(c) * alpha).round() as u8;
            }
        }
    }

    /// Fills a rectangle (clipped to the canvas), blending with opacity `alpha` in `[0, 1]`.
    pub fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, c: Rgb, alpha: f32) {
        for yy in y..(y + h).min(self.height) {
            for xx in x..(x + w).min(self.width) {
                self.put(xx, yy, c, alpha);
            }
        }
    }

    /// Outlines a rectangle `t` pixels thick.
    pub fn outline(&mut self, x: usize, y: usize, w: usize, h: usize, t: usize, c: Rgb) {
        self.fill(x, y, w, t, c, 1.0);
        self.fill(x, (y + h).saturating_sub(t), w, t, c, 1.0);
        self.fill(x, y, t, h, c, 1.0);
        self.fill((x + w).saturating_sub(t), y, t, h, c, 1.0);
    }

    /// Outlines `rect` (frame coordinates) in canvas coordinates.
    pub fn frame_rect(&mut self, rect: Rect, c: Rgb) {
        let s = |v: usize| (v as f64 * self.scale).round() as usize;
        let t = self.text_scale();
        self.outline(s(rect.x), s(rect.y), s(rect.width), s(rect.height), t, c);
    }

    /// Draws `text` with its top-left corner at `(x, y)`, each font pixel `scale` pixels wide;
    /// returns the x just after it.
    pub fn text(&mut self, x: usize, y: usize, text: &str, c: Rgb, scale: usize) -> usize {
        let mut cx = x;
        for ch in text.chars() {
            for gx in 0..font::WIDTH {
                for gy in 0..font::HEIGHT {
                    if font::pixel(ch, gx, gy) {
                        self.fill(cx + gx * scale, y + gy * scale, scale, scale, c, 1.0);
                    }
                }
            }
            cx += (font::WIDTH + 1) * scale;
        }
        cx
    }

    /// Width in pixels of `text` at `scale`.
    pub fn text_width(text: &str, scale: usize) -> usize {
        text.chars().count() * (font::WIDTH + 1) * scale
    }

    /// Copies `other` into this canvas with its top-left corner at `(x, y)` (clipped).
    pub fn blit(&mut self, other: &Canvas, x: usize, y: usize) {
        for row in 0..other.height.min(self.height.saturating_sub(y)) {
            let n = other.width.min(self.width.saturating_sub(x));
            let src = &other.pixels[row * other.width * 3..][..n * 3];
            let at = ((y + row) * self.width + x) * 3;
            self.pixels[at..at + n * 3].copy_from_slice(src);
        }
    }
}

/// A bar: a value in `[0, 1]` with ticks at the decision band's bounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bar {
    /// The value drawn (a smoothed probability).
    pub value: f32,
    /// Ticks, e.g. the smoothing's `negative_below` and `positive_above`.
    pub ticks: [f32; 2],
    /// Fill colour.
    pub colour: Rgb,
}

/// One line of a [`Panel`]: a label, an optional bar, and text after it.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// Left column (a task name).
    pub label: String,
    /// The bar, if the line has one.
    pub bar: Option<Bar>,
    /// What follows the bar (a decision, "skipped by the hierarchy").
    pub text: String,
    /// Colour of `text`.
    pub colour: Rgb,
}

/// Lines of text over a translucent dark background, in a corner of a canvas.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Panel {
    /// The lines, top to bottom.
    pub lines: Vec<Line>,
}

/// Width of a bar in font pixels (times the text scale).
const BAR: usize = 40;

impl Panel {
    /// Draws the panel at the top-left (`bottom == false`) or bottom-left corner.
    pub fn draw(&self, canvas: &mut Canvas, bottom: bool) {
        if self.lines.is_empty() {
            return;
        }
        let s = canvas.text_scale();
        let pad = 3 * s;
        let row = (font::HEIGHT + 4) * s;
        let label_w = self
            .lines
            .iter()
            .map(|l| Canvas::text_width(&l.label, s))
            .max()
            .unwrap_or(0);
        let text_w = self
            .lines
            .iter()
            .map(|l| Canvas::text_width(&l.text, s) + l.bar.map_or(0, |_| (BAR + 4) * s))
            .max()
            .unwrap_or(0);
        let width = (pad * 3 + label_w + text_w).min(canvas.width);
        let height = pad * 2 + row * self.lines.len() - 4 * s;
        let top = if bottom {
            canvas.height.saturating_sub(height)
        } else {
            0
        };
        canvas.fill(0, top, width, height, [0, 0, 0], 0.6);
        for (k, line) in self.lines.iter().enumerate() {
            let y = top + pad + k * row;
            canvas.text(pad, y, &line.label, colour::WHITE, s);
            let mut x = pad * 2 + label_w;
            if let Some(bar) = line.bar {
                let (w, h) = (BAR * s, font::HEIGHT * s);
                canvas.fill(x, y, w, h, colour::DARK, 1.0);
                let v = bar.value.clamp(0.0, 1.0);
                if v.is_finite() {
                    canvas.fill(x, y, (v * w as f32).round() as usize, h, bar.colour, 1.0);
                }
                for t in bar.ticks {
                    let tx = x + (t.clamp(0.0, 1.0) * w as f32).round() as usize;
                    canvas.fill(tx.min(x + w - 1), y, s, h, colour::WHITE, 0.8);
                }
                x += w + 4 * s;
            }
            canvas.text(x, y, &line.text, line.colour, s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_rescaled_by_whole_factors() {
        let small = GreyImage::from_pixels(4, 2, vec![0, 50, 100, 150, 200, 250, 10, 20]).unwrap();
        let c = Canvas::from_grey(&small, 960);
        assert_eq!((c.width, c.height, c.scale), (32, 16, 8.0));
        assert_eq!(&c.pixels[..3], &[0, 0, 0]);
        let big = GreyImage::new(1920, 1080);
        let c = Canvas::from_grey(&big, 960);
        assert_eq!((c.width, c.height, c.scale), (960, 540, 0.5));
        let odd = GreyImage::from_pixels(1000, 2, vec![100; 2000]).unwrap();
        let c = Canvas::from_grey(&odd, 960);
        assert_eq!((c.width, c.height), (500, 1));
        assert_eq!(c.pixels[..3], [100, 100, 100]);
    }

    #[test]
    fn text_bars_and_rectangles_land_where_asked() {
        let mut c = Canvas::new(64, 32, [0, 0, 0]);
        let end = c.text(1, 1, "L", colour::WHITE, 1);
        assert_eq!(end, 7);
        let at = |c: &Canvas, x: usize, y: usize| c.pixels[(y * c.width + x) * 3];
        assert_eq!(at(&c, 1, 7), 240); // the foot of the L
        assert_eq!(at(&c, 3, 3), 0);
        c.outline(10, 10, 5, 5, 1, colour::CROP);
        assert_eq!(c.pixels[(10 * 64 + 12) * 3..][..3], colour::CROP);
        assert_eq!(at(&c, 12, 12), 0);
        let panel = Panel {
            lines: vec![Line {
                label: "v".into(),
                bar: Some(Bar {
                    value: 1.0,
                    ticks: [0.3, 0.7],
                    colour: colour::AMBER,
                }),
                text: "x".into(),
                colour: colour::WHITE,
            }],
        };
        let mut c = Canvas::new(200, 40, [0, 0, 0]);
        panel.draw(&mut c, false);
        // The bar starts after the label and a gap: amber at its first column.
        let x0 = 3 * 2 + 6;
        assert_eq!(c.pixels[(3 * 200 + x0) * 3..][..3], colour::AMBER);
    }
}
