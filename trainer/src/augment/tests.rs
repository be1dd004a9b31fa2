//! Tests of the whole pipeline (each step has its own tests beside it).

use super::*;
use rand::SeedableRng;

const H: usize = 128;
const W: usize = 128;

/// Every step on every time, strongly.
fn everything() -> AugmentConfig {
    AugmentConfig {
        crop_p: 1.0,
        hflip_p: 1.0,
        jitter_p: 1.0,
        blur_p: 1.0,
        gain_p: 1.0,
        gain_strength: 0.5,
        speckle_p: 1.0,
        speckle_looks: 4.0,
        ..AugmentConfig::default()
    }
}

fn nothing() -> AugmentConfig {
    AugmentConfig {
        crop_p: 0.0,
        hflip_p: 0.0,
        jitter_p: 0.0,
        blur_p: 0.0,
        gain_p: 0.0,
        speckle_p: 0.0,
        ..AugmentConfig::default()
    }
}

fn noise(seed: u64) -> Vec<f32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..H * W).map(|_| rng.random::<f32>()).collect()
}

/// Background 0.2 with one-pixel bright lines (0.7) at the given rows: dim enough that the
/// strongest gain and brightness saturate a line without swallowing its neighbourhood.
fn lines(rows: &[usize]) -> Vec<f32> {
    let mut img = vec![0.2f32; H * W];
    for &r in rows {
        img[r * W..(r + 1) * W].fill(0.7);
    }
    img
}

/// The row of the largest row mean within `radius` rows of `centre`.
fn peak_near(img: &[f32], centre: f32, radius: usize) -> usize {
    let c = centre.round().clamp(0.0, (H - 1) as f32) as usize;
    (c.saturating_sub(radius)..=(c + radius).min(H - 1))
        .max_by(|&a, &b| {
            let m = |y: usize| img[y * W..(y + 1) * W].iter().sum::<f32>();
            m(a).total_cmp(&m(b))
        })
        .unwrap()
}

#[test]
fn default_config_is_the_recipe() {
    let c = AugmentConfig::default();
    assert_eq!((c.crop_p, c.crop_scale), (0.8, [0.7, 1.0]));
    assert_eq!(c.crop_ratio, [0.75, 4.0 / 3.0]);
    assert_eq!(
        (c.hflip_p, c.jitter_p, c.brightness, c.contrast),
        (0.5, 0.7, 0.25, 0.25)
    );
    assert_eq!((c.blur_p, c.blur_sigma), (0.2, [0.1, 2.0]));
    assert!(c.keep_sector);
    assert_eq!(c.speckle_p, 0.0);
    c.validate().unwrap();
}

#[test]
fn config_reads_partial_json_and_rejects_unknown_fields() {
    let c: AugmentConfig =
        serde_json::from_str(r#"{"blur_p": 0.5, "keep_sector": false}"#).unwrap();
    assert_eq!(c.blur_p, 0.5);
    assert!(!c.keep_sector);
    assert_eq!(c.crop_p, 0.8);
    assert!(serde_json::from_str::<AugmentConfig>(r#"{"vflip_p": 0.5}"#).is_err());
    let json = serde_json::to_string(&AugmentConfig::default()).unwrap();
    assert_eq!(
        serde_json::from_str::<AugmentConfig>(&json).unwrap(),
        AugmentConfig::default()
    );
}

#[test]
fn invalid_configs_are_rejected_naming_the_field() {
    let bad = [
        AugmentConfig {
            crop_p: 1.5,
            ..AugmentConfig::default()
        },
        AugmentConfig {
            crop_scale: [0.0, 1.0],
            ..AugmentConfig::default()
        },
        AugmentConfig {
            crop_ratio: [2.0, 1.0],
            ..AugmentConfig::default()
        },
        AugmentConfig {
            brightness: 1.0,
            ..AugmentConfig::default()
        },
        AugmentConfig {
            blur_sigma: [0.0, 1.0],
            ..AugmentConfig::default()
        },
        AugmentConfig {
            gain_knots: 0,
            ..AugmentConfig::default()
        },
        AugmentConfig {
            speckle_looks: 0.5,
            ..AugmentConfig::default()
        },
    ];
    let names = [
        "crop_p",
        "crop_scale",
        "crop_ratio",
        "brightness",
        "blur_sigma",
        "gain_knots",
        "speckle_looks",
    ];
    for (c, name) in bad.iter().zip(names) {
        let err = format!("{:#}", Augmenter::new(c, H, W).unwrap_err());
        assert!(err.contains(name), "{err}");
    }
    assert!(Augmenter::new(&AugmentConfig::default(), 1, 10).is_err());
}

#[test]
fn nothing_enabled_is_the_identity_and_flip_alone_mirrors() {
    let src = noise(1);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
    let mut dst = vec![0.0; H * W];
    Augmenter::new(&nothing(), H, W)
        .unwrap()
        .apply(&src, &mut dst, &mut rng);
    assert_eq!(dst, src);
    let flip = AugmentConfig {
        hflip_p: 1.0,
        ..nothing()
    };
    Augmenter::new(&flip, H, W)
        .unwrap()
        .apply(&src, &mut dst, &mut rng);
    let mut want = src.clone();
    geometry::hflip(&mut want, H, W);
    assert_eq!(dst, want);
}

#[test]
fn output_is_always_finite_and_in_range() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
    for config in [AugmentConfig::default(), everything()] {
        let aug = Augmenter::new(&config, H, W).unwrap();
        let mut wild = noise(3);
        wild.iter_mut()
            .step_by(7)
            .for_each(|v| *v = *v * 40.0 - 20.0);
        for src in [noise(4), vec![0.0; H * W], vec![1.0; H * W], wild] {
            for _ in 0..20 {
                let (a, b) = aug.two_views(&src, &mut rng);
                assert!(a
                    .iter()
                    .chain(&b)
                    .all(|v| v.is_finite() && (0.0..=1.0).contains(v)));
            }
        }
    }
}

#[test]
fn same_seed_gives_same_views_and_different_seeds_different_ones() {
    let src = lines(&[20, 50, 90]);
    for config in [AugmentConfig::default(), everything()] {
        let aug = Augmenter::new(&config, H, W).unwrap();
        let views = |seed| aug.two_views(&src, &mut Xoshiro256PlusPlus::seed_from_u64(seed));
        assert_eq!(views(7), views(7));
        let (a, b) = views(7);
        assert_ne!(a, b, "the two views of a pair differ");
        assert_ne!(views(7), views(8));
    }
}

#[test]
fn lines_stay_in_their_rows_without_crop() {
    let rows = [10, 40, 75, 118];
    let src = lines(&rows);
    let config = AugmentConfig {
        crop_p: 0.0,
        ..everything()
    };
    let aug = Augmenter::new(&config, H, W).unwrap();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
    let mut dst = vec![0.0; H * W];
    for _ in 0..100 {
        aug.apply(&src, &mut dst, &mut rng);
        for &r in &rows {
            let p = peak_near(&dst, r as f32, 8);
            assert!(p.abs_diff(r) <= 1, "line at row {r} peaks at {p}");
        }
    }
}

#[test]
fn depth_order_never_inverts_with_crop() {
    let rows = [10, 40, 75, 118];
    let src = lines(&rows);
    for keep_sector in [false, true] {
        let config = AugmentConfig {
            keep_sector,
            ..everything()
        };
        let aug = Augmenter::new(&config, H, W).unwrap();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(6);
        let mut dst = vec![0.0; H * W];
        for _ in 0..100 {
            let d = aug.draw(&mut rng);
            aug.render(&d, &src, &mut dst, &mut rng);
            let win = d.crop.expect("crop_p = 1");
            if keep_sector {
                assert_eq!(win.y0, 0.0, "sector crops start at the probe face");
            }
            let mut last = None;
            for &r in &rows {
                let e = (r as f32 + 0.5 - win.y0) * H as f32 / win.h - 0.5;
                if !(2.0..H as f32 - 3.0).contains(&e) {
                    continue; // cropped away
                }
                let p = peak_near(&dst, e, 8);
                assert!(
                    (p as f32 - e).abs() <= 1.5,
                    "line {r}: expected near {e}, at {p}"
                );
                assert!(
                    last.is_none_or(|q| p > q),
                    "line {r} at {p} above the one before"
                );
                last = Some(p);
            }
        }
    }
}

#[test]
fn normalise_and_denormalise_invert_each_other() {
    let mut v = vec![0.0, 0.5, 1.0];
    crate::data::frames::network_normalise(0.25, 0.5)
        .unwrap()
        .in_place(&mut v);
    assert_eq!(v, vec![-0.5, 0.5, 1.5]);
    denormalise(&mut v, 0.25, 0.5);
    assert_eq!(v, vec![0.0, 0.5, 1.0]);
}

#[test]
#[should_panic(expected = "source is not")]
fn apply_rejects_a_wrong_length() {
    let aug = Augmenter::new(&AugmentConfig::default(), H, W).unwrap();
    let mut dst = vec![0.0; H * W];
    aug.apply(
        &[0.0; 10],
        &mut dst,
        &mut Xoshiro256PlusPlus::seed_from_u64(0),
    );
}

/// Time per `apply` at 128x128:
/// `cargo test --release -p pleura-trainer augment_timing -- --ignored --nocapture`.
#[test]
#[ignore]
fn augment_timing() {
    let src = noise(9);
    let mut dst = vec![0.0; H * W];
    for (name, config) in [
        ("default", AugmentConfig::default()),
        ("everything", everything()),
    ] {
        let aug = Augmenter::new(&config, H, W).unwrap();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
        for _ in 0..200 {
            aug.apply(&src, &mut dst, &mut rng);
        }
        let n = 5000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            aug.apply(&src, &mut dst, &mut rng);
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!("augment {name}: {us:.1} us per apply at {H}x{W}");
    }
}
