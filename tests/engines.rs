//! Engines (issue 8): tract's channel-last layout against the ONNX file's own layout, and, with
//! the cargo feature `ort`, the ONNX Runtime engine against tract, on the default pack: every
//! output within 1e-4.

use std::path::{Path, PathBuf};

use pleura::engine::{Engine, EngineChoice, EngineConfig, EngineKind, Session, TractLayout};
use pleura::pack::Pack;
use pleura::preprocess::Preprocessor;

const TOLERANCE: f32 = 1e-4;

fn default_pack() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default")
}

/// A few backbone inputs: a ramp, a constant, and preprocessed phantom frames.
fn inputs(pack: &Pack) -> Vec<Vec<f32>> {
    let len = pack.manifest.input.height * pack.manifest.input.width * pack.manifest.input.channels;
    let mut all = vec![
        (0..len).map(|i| (i % 97) as f32 / 50.0 - 1.0).collect(),
        vec![0.25f32; len],
    ];
    for (k, clip) in pleura::phantom::cohort(3, 4).into_iter().enumerate() {
        let mut frames = pleura::phantom::Clip::new(clip.params, 160, 160).unwrap();
        let mut pre = Preprocessor::new(&pack.manifest.input, 160, 160, None).unwrap();
        let mut input = vec![0.0; pre.output_len()];
        pre.run(&frames.frame(k), &mut input).unwrap();
        all.push(input);
    }
    all
}

/// Features, every head and every per-task network of `a` and `b` agree within 1e-4.
fn assert_agree(a: &mut Session, b: &mut Session, inputs: &[Vec<f32>], what: &str) {
    for (k, input) in inputs.iter().enumerate() {
        let fa_tensor = a.features(input).unwrap();
        let fb_tensor = b.features(input).unwrap();
        let fa = fa_tensor.to_plain_array_view::<f32>().unwrap();
        let fb = fb_tensor.to_plain_array_view::<f32>().unwrap();
        assert_eq!(fa.shape(), fb.shape(), "{what}");
        let diff = fa
            .iter()
            .zip(fb.iter())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(
            diff <= TOLERANCE,
            "{what}, input {k}: features differ by {diff}"
        );
        for t in 0..3 {
            let (pa, pb) = (
                a.head(t, &fa_tensor).unwrap(),
                b.head(t, &fb_tensor).unwrap(),
            );
            assert!(
                (pa - pb).abs() <= TOLERANCE,
                "{what}, input {k}, head {t}: {pa} vs {pb}"
            );
        }
        for t in 0..3 {
            let (pa, pb) = (a.network(t, input).unwrap(), b.network(t, input).unwrap());
            assert!(
                (pa - pb).abs() <= TOLERANCE,
                "{what}, input {k}, network {t}: {pa} vs {pb}"
            );
        }
    }
}

#[test]
fn tract_channel_last_layout_matches_the_onnx_layout() {
    let pack = Pack::load(default_pack()).unwrap();
    let config = EngineConfig::default();
    let nhwc = EngineChoice {
        tract_layout: TractLayout::Nhwc,
        ..EngineChoice::default()
    };
    let nchw = EngineChoice {
        tract_layout: TractLayout::Nchw,
        ..EngineChoice::default()
    };
    let networks = pack.load_networks().unwrap();
    let a = Engine::with_networks(&pack, &networks, &config, &nhwc).unwrap();
    let b = Engine::with_networks(&pack, &networks, &config, &nchw).unwrap();
    assert_eq!(a.kind(), EngineKind::Tract);
    assert_eq!(a.description(), "tract 0.23.9");
    assert_eq!(
        (a.plan().layout, b.plan().layout),
        (Some("nhwc"), Some("nchw"))
    );
    let (mut sa, mut sb) = (a.session().unwrap(), b.session().unwrap());
    assert_agree(&mut sa, &mut sb, &inputs(&pack), "tract nhwc vs nchw");
}

#[test]
fn engine_names_parse() {
    assert_eq!("tract".parse::<EngineKind>().unwrap(), EngineKind::Tract);
    assert_eq!("ort".parse::<EngineKind>().unwrap(), EngineKind::Ort);
    let err = format!("{:#}", "onnx".parse::<EngineKind>().unwrap_err());
    assert!(err.contains("tract") && err.contains("ort"), "{err}");
}

#[cfg(not(feature = "ort"))]
#[test]
fn the_lean_build_refuses_the_ort_engine_clearly() {
    let pack = Pack::load(default_pack()).unwrap();
    let choice = EngineChoice::new(EngineKind::Ort, None);
    let err = Engine::with_engine(&pack, &EngineConfig::default(), &choice).unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains("feature `ort`"), "{err}");
}

/// The ONNX Runtime library to test with: `ORT_DYLIB_PATH`, else the wheel in the venv that
/// `make bench-engines` makes, else the one `python3` imports.
#[cfg(feature = "ort")]
fn ort_library() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pythons = vec![root.join("target/bench/venv-engines/bin/python")];
    pythons.push(PathBuf::from("python3"));
    for python in pythons {
        let out = std::process::Command::new(&python)
            .args([
                "-c",
                "import onnxruntime, pathlib; \
                 c = pathlib.Path(onnxruntime.__file__).parent / 'capi'; \
                 print(sorted(c.glob('libonnxruntime.so*'))[0])",
            ])
            .output();
        if let Ok(out) = out {
            if out.status.success() {
                let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                if path.is_file() {
                    return Some(path);
                }
            }
        }
    }
    None
}

#[cfg(feature = "ort")]
#[test]
fn ort_engine_matches_tract_on_the_default_pack() {
    let Some(lib) = ort_library() else {
        eprintln!(
            "SKIPPED ort_engine_matches_tract_on_the_default_pack: no libonnxruntime found \
             (set ORT_DYLIB_PATH, or `pip install onnxruntime` for python3)"
        );
        return;
    };
    let pack = Pack::load(default_pack()).unwrap();
    let choice = EngineChoice::new(EngineKind::Ort, Some(lib.clone()));
    for threads in [1, 2] {
        let config = EngineConfig { threads };
        let networks = pack.load_networks().unwrap();
        let ort = Engine::with_networks(&pack, &networks, &config, &choice).unwrap();
        assert_eq!(ort.kind(), EngineKind::Ort);
        assert!(
            ort.description().starts_with("onnxruntime 1."),
            "{}",
            ort.description()
        );
        let tract =
            Engine::with_networks(&pack, &networks, &config, &EngineChoice::default()).unwrap();
        let (mut so, mut st) = (ort.session().unwrap(), tract.session().unwrap());
        assert_agree(
            &mut so,
            &mut st,
            &inputs(&pack),
            &format!("ort vs tract, {threads} threads"),
        );
    }
    // One library per process: another file is refused, naming both.
    let copy = tempfile::tempdir().unwrap();
    let other = copy.path().join("libonnxruntime.so.1.99.0");
    std::fs::copy(&lib, &other).unwrap();
    let choice = EngineChoice::new(EngineKind::Ort, Some(other.clone()));
    let err = Engine::with_engine(&pack, &EngineConfig::default(), &choice).unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("already loaded") && err.contains("1.99.0"),
        "{err}"
    );
}

#[cfg(feature = "ort")]
#[test]
fn a_missing_or_broken_ort_library_is_a_clear_error() {
    let pack = Pack::load(default_pack()).unwrap();
    let config = EngineConfig::default();
    let missing = PathBuf::from("/nonexistent/libonnxruntime.so.1.32.0");
    let choice = EngineChoice::new(EngineKind::Ort, Some(missing));
    let err = format!(
        "{:#}",
        Engine::with_engine(&pack, &config, &choice).unwrap_err()
    );
    assert!(
        err.contains("/nonexistent/libonnxruntime.so.1.32.0")
            && err.contains("not found")
            && err.contains("ONNX Runtime >= 1."),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("libonnxruntime.so");
    std::fs::write(&broken, b"not a shared library").unwrap();
    let choice = EngineChoice::new(EngineKind::Ort, Some(broken.clone()));
    let err = format!(
        "{:#}",
        Engine::with_engine(&pack, &config, &choice).unwrap_err()
    );
    // Unless another test of this process loaded a real library first, dlopen refuses it.
    assert!(err.contains(broken.to_str().unwrap()), "{err}");
    assert!(
        err.contains("ONNX Runtime >= 1.") || err.contains("already loaded"),
        "{err}"
    );
}
