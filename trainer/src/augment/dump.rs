//! Writing views as PNG files, so a person can look at what the network is trained on.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use pleura::image::{write_png, GreyImage};
use pleura::phantom::montage;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use super::{AugmentConfig, Augmenter};

/// A `[0, 1]` plane as an 8-bit image (clamped; non-finite values black).
fn to_grey(values: &[f32], height: usize, width: usize) -> Result<GreyImage> {
    let pixels = values
        .iter()
        .map(|&v| {
            if v.is_finite() {
                (v.clamp(0.0, 1.0) * 255.0).round() as u8
            } else {
                0
            }
        })
        .collect();
    GreyImage::from_pixels(width, height, pixels)
}

/// Draws `n_pairs` pairs of views of `frames` (each `height * width` values in `[0, 1]`, used
/// in turn) with a generator seeded by `seed`, and writes them to `out_dir` (created when
/// missing) as `pair_000_a.png`, `pair_000_b.png`, ..., plus `montage.png`: one row per pair,
/// original | view a | view b.
pub fn dump_views(
    frames: &[Vec<f32>],
    height: usize,
    width: usize,
    n_pairs: usize,
    config: &AugmentConfig,
    seed: u64,
    out_dir: &Path,
) -> Result<()> {
    ensure!(!frames.is_empty(), "no frames to augment");
    ensure!(n_pairs > 0, "no pairs of views asked for");
    for (i, f) in frames.iter().enumerate() {
        ensure!(
            f.len() == height * width,
            "frame {i} holds {} values, not {width}x{height}",
            f.len()
        );
    }
    let aug = Augmenter::new(config, height, width)?;
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("creating folder {}", out_dir.display()))?;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut tiles = Vec::with_capacity(3 * n_pairs);
    for k in 0..n_pairs {
        let src = &frames[k % frames.len()];
        let (a, b) = aug.two_views(src, &mut rng);
        let (a, b) = (to_grey(&a, height, width)?, to_grey(&b, height, width)?);
        write_png(&a, &out_dir.join(format!("pair_{k:03}_a.png")))?;
        write_png(&b, &out_dir.join(format!("pair_{k:03}_b.png")))?;
        tiles.extend([to_grey(src, height, width)?, a, b]);
    }
    write_png(&montage(&tiles, 3)?, &out_dir.join("montage.png"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pleura::image::read_png;
    use pleura::phantom::{cohort, Clip};

    #[test]
    fn dump_views_writes_pairs_and_a_montage() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("views");
        let (h, w) = (24, 32);
        let frames: Vec<Vec<f32>> = (0..2)
            .map(|f| {
                (0..h * w)
                    .map(|k| ((k + f * 7) % 11) as f32 / 10.0)
                    .collect()
            })
            .collect();
        dump_views(&frames, h, w, 3, &AugmentConfig::default(), 5, &out).unwrap();
        for k in 0..3 {
            for s in ["a", "b"] {
                let im = read_png(&out.join(format!("pair_{k:03}_{s}.png"))).unwrap();
                assert_eq!((im.width, im.height), (w, h));
            }
        }
        let m = read_png(&out.join("montage.png")).unwrap();
        // Three tiles a row and a column, with gutters between them.
        assert!(m.width > 3 * w && m.width < 3 * w + 12, "{}", m.width);
        assert!(m.height > 3 * h && m.height < 3 * h + 12, "{}", m.height);
    }

    #[test]
    fn dump_views_rejects_wrong_frame_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let err = dump_views(
            &[vec![0.0; 10]],
            4,
            4,
            1,
            &AugmentConfig::default(),
            0,
            dir.path(),
        );
        assert!(format!("{err:?}").contains("frame 0"));
    }

    /// Renders phantom frames and writes their views to `/tmp/views/` for a person to look at:
    /// `cargo test --release -p pleura-trainer look_at_phantom_views -- --ignored`.
    #[test]
    #[ignore]
    fn look_at_phantom_views() {
        let (h, w) = (128, 128);
        let frames: Vec<Vec<f32>> = cohort(8, 0)
            .into_iter()
            .map(|c| {
                let mut clip = Clip::new(c.params, w, h).unwrap();
                clip.frame(0)
                    .pixels
                    .iter()
                    .map(|&p| p as f32 / 255.0)
                    .collect()
            })
            .collect();
        let out = Path::new("/tmp/views");
        dump_views(&frames, h, w, 8, &AugmentConfig::default(), 1, out).unwrap();
        let strong = AugmentConfig {
            speckle_p: 1.0,
            gain_p: 1.0,
            gain_strength: 0.4,
            ..AugmentConfig::default()
        };
        dump_views(&frames, h, w, 8, &strong, 2, &out.join("strong")).unwrap();
    }
}
