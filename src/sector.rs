//! Finding the ultrasound image inside a captured frame.
//!
//! A clip from a scanner's video output, or a screen grab, frames the B-mode image with static
//! content: black margins, text, scales, logos, a frame counter. The image is the bright region
//! where the clip moves (speckle, breathing, probe motion): the connected bright area (of the
//! clip's smoothed mean frame) that holds the most changing pixels. Parts of the image that
//! happen not to move belong to it through that connection; overlays separated from it by dark
//! margins do not, even when they change. A single frame has no motion to go by: its box is
//! then the largest bright area.

use crate::image::GreyImage;
use crate::preprocess::Rect;

/// Pixels whose range over the clip exceeds this (of 255) are changing.
const MOTION_THRESHOLD: u8 = 10;
/// Pixels of the smoothed mean frame brighter than this are image (or overlay), not margin.
const BRIGHT_THRESHOLD: f32 = 8.0;
/// Radius of the box filter that joins speckle into solid areas.
const SMOOTH_RADIUS: usize = 2;

/// Box filter of radius `r` (separable, clamped at the borders).
fn smooth(values: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    let pass = |src: &[f32], along_x: bool| -> Vec<f32> {
        let mut out = vec![0.0; src.len()];
        for y in 0..h {
            for x in 0..w {
                let (pos, len) = if along_x { (x, w) } else { (y, h) };
                let (lo, hi) = (pos.saturating_sub(r), (pos + r).min(len - 1));
                let sum: f32 = (lo..=hi)
                    .map(|k| {
                        if along_x {
                            src[y * w + k]
                        } else {
                            src[k * w + x]
                        }
                    })
                    .sum();
                out[y * w + x] = sum / (hi - lo + 1) as f32;
            }
        }
        out
    };
    pass(&pass(values, true), false)
}

/// Labels the 4-connected components of `mask`; returns the label per pixel (0 = none) and the
/// number of components.
fn components(mask: &[bool], w: usize, h: usize) -> (Vec<u32>, u32) {
    let mut label = vec![0u32; mask.len()];
    let mut next = 0u32;
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || label[start] != 0 {
            continue;
        }
        next += 1;
        label[start] = next;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            let neighbours = [
                (x > 0).then(|| i - 1),
                (x + 1 < w).then(|| i + 1),
                (y > 0).then(|| i - w),
                (y + 1 < h).then(|| i + w),
            ];
            for j in neighbours.into_iter().flatten() {
                if mask[j] && label[j] == 0 {
                    label[j] = next;
                    stack.push(j);
                }
            }
        }
    }
    (label, next)
}

/// The rectangle holding the ultrasound image of `frames` (all of one size; at most 64 evenly
/// spaced ones are examined), or `None` for a blank clip.
pub fn detect_sector(frames: &[GreyImage]) -> Option<Rect> {
    let first = frames.first()?;
    let (w, h) = (first.width, first.height);
    let step = (frames.len() / 64).max(1);
    let used: Vec<&GreyImage> = frames
        .iter()
        .step_by(step)
        .filter(|f| f.width == w && f.height == h)
        .collect();
    let mut mean = vec![0.0f32; w * h];
    let mut lo = first.pixels.clone();
    let mut hi = first.pixels.clone();
    for f in &used {
        for (i, &p) in f.pixels.iter().enumerate() {
            mean[i] += f32::from(p);
            lo[i] = lo[i].min(p);
            hi[i] = hi[i].max(p);
        }
    }
    mean.iter_mut().for_each(|m| *m /= used.len() as f32);
    let bright: Vec<bool> = smooth(&mean, w, h, SMOOTH_RADIUS)
        .iter()
        .map(|&m| m > BRIGHT_THRESHOLD)
        .collect();
    let (label, count) = components(&bright, w, h);
    if count == 0 {
        return None;
    }
    // Score each bright area by its changing pixels (several frames) or by its size (one).
    let mut score = vec![0usize; count as usize + 1];
    for i in 0..w * h {
        let moving = hi[i] - lo[i] > MOTION_THRESHOLD;
        if label[i] != 0 && (used.len() < 2 || moving) {
            score[label[i] as usize] += 1;
        }
    }
    let best = (1..=count as usize).max_by_key(|&c| (score[c], std::cmp::Reverse(c)))?;
    if score[best] == 0 {
        // Bright but nothing moves at all: fall back to the largest area.
        return detect_sector(&used[..1].iter().map(|f| (*f).clone()).collect::<Vec<_>>());
    }
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
    // The box of the area's own bright pixels (smoothing widened the area by its radius).
    for (i, &l) in label.iter().enumerate() {
        if l as usize == best && mean[i] > BRIGHT_THRESHOLD {
            let (x, y) = (i % w, i / w);
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
    }
    Some(Rect {
        x: x0,
        y: y0,
        width: x1 + 1 - x0,
        height: y1 + 1 - y0,
    })
}

/// Parses `x,y,width,height`.
pub fn parse_rect(text: &str) -> anyhow::Result<Rect> {
    let v: Vec<usize> = text
        .split(',')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow::anyhow!("crop `{text}`: expected x,y,width,height in pixels"))?;
    anyhow::ensure!(
        v.len() == 4 && v[2] > 0 && v[3] > 0,
        "crop `{text}`: expected x,y,width,height with a positive width and height"
    );
    Ok(Rect {
        x: v[0],
        y: v[1],
        width: v[2],
        height: v[3],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    /// A 200x120 screen: static text band on top, a static bright logo bottom right, and a
    /// speckled image in x 40..150, y 20..100.
    fn screen(n: usize) -> Vec<GreyImage> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        (0..n)
            .map(|_| {
                let mut f = GreyImage::new(200, 120);
                for y in 0..120 {
                    for x in 0..200 {
                        let v = if (40..150).contains(&x) && (20..100).contains(&y) {
                            rng.random_range(0..200)
                        } else if y < 8 && x % 3 == 0 {
                            230 // text
                        } else if y < 8 && x > 190 {
                            rng.random_range(0..255) // a changing frame counter
                        } else if x >= 180 && y >= 110 {
                            255 // logo
                        } else {
                            0
                        };
                        f.pixels[y * 200 + x] = v;
                    }
                }
                f
            })
            .collect()
    }

    #[test]
    fn finds_the_moving_image_and_ignores_overlays() {
        let r = detect_sector(&screen(10)).unwrap();
        assert_eq!((r.x, r.y, r.width, r.height), (40, 20, 110, 80));
    }

    #[test]
    fn still_parts_of_the_image_belong_to_it() {
        // Only a small patch moves; the rest of the image is identical in every frame.
        let mut frames = vec![screen(1)[0].clone(); 6];
        for (k, f) in frames.iter_mut().enumerate() {
            for y in 50..60 {
                for x in 90..100 {
                    f.pixels[y * 200 + x] = (k * 40) as u8;
                }
            }
        }
        let r = detect_sector(&frames).unwrap();
        assert_eq!((r.x, r.y, r.width, r.height), (40, 20, 110, 80));
    }

    #[test]
    fn a_single_frame_uses_the_largest_bright_area() {
        let r = detect_sector(&screen(1)).unwrap();
        assert_eq!((r.x, r.y, r.width, r.height), (40, 20, 110, 80));
    }

    #[test]
    fn a_blank_clip_has_no_sector() {
        assert_eq!(
            detect_sector(&[GreyImage::new(10, 10), GreyImage::new(10, 10)]),
            None
        );
        assert_eq!(detect_sector(&[]), None);
    }

    #[test]
    fn parses_rectangles() {
        let r = parse_rect("1, 2,30,40").unwrap();
        assert_eq!((r.x, r.y, r.width, r.height), (1, 2, 30, 40));
        assert!(parse_rect("1,2,3").is_err());
        assert!(parse_rect("1,2,0,4").is_err());
        assert!(parse_rect("a,b,c,d")
            .unwrap_err()
            .to_string()
            .contains("a,b,c,d"));
    }
}
