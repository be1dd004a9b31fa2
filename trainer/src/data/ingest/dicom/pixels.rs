//! Samples to 8-bit grey: MONOCHROME1 inverted, RGB to BT.601 luma, YBR to its Y; 8-bit
//! unsigned samples kept, wider (or signed) ones rescaled and windowed (VOI window, else the
//! clip's minimum and maximum).

use super::{Photometric, Props, Samples};

/// BT.601 luma of 8-bit RGB, rounded.
pub(super) fn luma8(r: u8, g: u8, b: u8) -> u8 {
    ((299 * u32::from(r) + 587 * u32::from(g) + 114 * u32::from(b) + 500) / 1000) as u8
}

/// Where the three samples of pixel `k` lie in a frame of `n` pixels.
fn colour_index(k: usize, n: usize, planar: bool) -> [usize; 3] {
    if planar {
        [k, n + k, 2 * n + k]
    } else {
        [3 * k, 3 * k + 1, 3 * k + 2]
    }
}

/// Converts the clip to grey frames; `samples` holds exactly `props.frames` frames (or more
/// samples after them, which are ignored).
pub(super) fn to_grey(props: &Props, samples: &Samples) -> Vec<Vec<u8>> {
    let n = props.rows * props.cols;
    let frame_samples = props.frame_samples().unwrap_or(0);
    let invert = props.photometric == Photometric::Monochrome1;
    let mono = matches!(
        props.photometric,
        Photometric::Monochrome1 | Photometric::Monochrome2
    );
    match samples {
        Samples::U8(s) if !props.signed && props.bits_stored == 8 => (0..props.frames)
            .map(|f| {
                let fs = &s[f * frame_samples..(f + 1) * frame_samples];
                (0..n)
                    .map(|k| {
                        let v = match props.photometric {
                            Photometric::Monochrome1 | Photometric::Monochrome2 => fs[k],
                            Photometric::Rgb => {
                                let [r, g, b] = colour_index(k, n, props.planar);
                                luma8(fs[r], fs[g], fs[b])
                            }
                            Photometric::YbrFull => fs[colour_index(k, n, props.planar)[0]],
                            Photometric::YbrFull422 => fs[4 * (k / 2) + k % 2],
                        };
                        if invert {
                            255 - v
                        } else {
                            v
                        }
                    })
                    .collect()
            })
            .collect(),
        _ => {
            // Wide path: values as numbers, then one mapping for the whole clip.
            let mask = if props.bits_stored >= 32 {
                u32::MAX
            } else {
                (1u32 << props.bits_stored) - 1
            };
            let sign_bit = 1u32 << (props.bits_stored - 1);
            let raw = |i: usize| -> f64 {
                let v = match samples {
                    Samples::U8(s) => u32::from(s[i]),
                    Samples::U16(s) => u32::from(s[i]),
                } & mask;
                if props.signed && v & sign_bit != 0 {
                    f64::from(v) - f64::from(mask) - 1.0
                } else {
                    f64::from(v)
                }
            };
            let (slope, intercept) = props.rescale;
            let values: Vec<f32> = (0..props.frames)
                .flat_map(|f| {
                    let base = f * frame_samples;
                    (0..n).map(move |k| {
                        let v = match props.photometric {
                            Photometric::Monochrome1 | Photometric::Monochrome2 => {
                                raw(base + k) * slope + intercept
                            }
                            Photometric::Rgb => {
                                let [r, g, b] = colour_index(k, n, props.planar);
                                0.299 * raw(base + r)
                                    + 0.587 * raw(base + g)
                                    + 0.114 * raw(base + b)
                            }
                            Photometric::YbrFull => raw(base + colour_index(k, n, props.planar)[0]),
                            Photometric::YbrFull422 => raw(base + 4 * (k / 2) + k % 2),
                        };
                        v as f32
                    })
                })
                .collect();
            let map: Box<dyn Fn(f32) -> u8> = match props.window {
                Some((c, w)) if mono => Box::new(move |v| window_linear(f64::from(v), c, w)),
                _ => {
                    let (lo, hi) = values
                        .iter()
                        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                            (lo.min(v), hi.max(v))
                        });
                    let (lo, hi) = (f64::from(lo), f64::from(hi));
                    Box::new(move |v| {
                        if hi > lo {
                            ((f64::from(v) - lo) / (hi - lo) * 255.0)
                                .round()
                                .clamp(0.0, 255.0) as u8
                        } else {
                            0
                        }
                    })
                }
            };
            values
                .chunks(n.max(1))
                .map(|frame| {
                    frame
                        .iter()
                        .map(|&v| {
                            let g = map(v);
                            if invert {
                                255 - g
                            } else {
                                g
                            }
                        })
                        .collect()
                })
                .collect()
        }
    }
}

/// The DICOM linear VOI function (PS3.3 C.11.2.1.2.1) to 0..=255, rounded.
pub(super) fn window_linear(x: f64, center: f64, width: f64) -> u8 {
    let lower = center - 0.5 - (width - 1.0) / 2.0;
    let upper = center - 0.5 + (width - 1.0) / 2.0;
    if x <= lower {
        0
    } else if x > upper || width <= 1.0 {
        255
    } else {
        (((x - (center - 0.5)) / (width - 1.0) + 0.5) * 255.0)
            .round()
            .clamp(0.0, 255.0) as u8
    }
}
