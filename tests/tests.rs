//! Integration tests of the runtime: the `pleura` binary and library on the committed default
//! pack, and every way a pack can be wrong.

mod util;

use pleura::engine::{Engine, TaskMode};
use pleura::pack::Pack;
use util::{default_pack, edit_manifest, pack_copy, pleura, stderr};

#[test]
fn info_verifies_the_default_pack() {
    let out = pleura(&["info", default_pack().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains("576 features"), "{text}");
    assert!(text.contains("926720 parameters"), "{text}");
    assert_eq!(text.matches("sha256 ok").count(), 7, "{text}");
    assert!(text.contains("synthetic only"), "{text}");
}

#[test]
fn run_prints_one_json_record_per_frame() {
    let out = pleura(&[
        "run",
        "--pack",
        default_pack().to_str().unwrap(),
        "--source",
        "phantom:3",
        "--frames",
        "12",
        "--clip-frames",
        "4",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 12);
    for (i, rec) in lines.iter().enumerate() {
        assert_eq!(rec["seq"], i as u64);
        let tasks = &rec["tasks"];
        let p = tasks["view"]["p"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p));
        // The hierarchy: exactly one of the gated tasks runs, the one the view selects.
        let pleural = tasks["view"]["class"] == "pleural";
        assert_eq!(tasks["effusion"].is_null(), !pleural, "{rec}");
        assert_eq!(tasks["lines"].is_null(), pleural, "{rec}");
        for stage in ["capture", "preprocess", "backbone", "heads", "total"] {
            assert!(rec["latency_ms"][stage].as_f64().unwrap() >= 0.0);
        }
    }
    let err = stderr(&out);
    assert!(err.contains("p50") && err.contains("backbone"), "{err}");
}

#[test]
fn all_tasks_mode_runs_every_head() {
    let pack = Pack::load(default_pack()).unwrap();
    let engine = Engine::new(&pack, false).unwrap();
    let mut session = engine.session().unwrap();
    let input = vec![0.1f32; engine.input_len()];
    let result = session.infer(&input, TaskMode::AllTasks).unwrap();
    assert!(result.probabilities.iter().all(Option::is_some));
    let wrong = vec![0.0f32; engine.input_len() - 1];
    assert!(session.infer(&wrong, TaskMode::AllTasks).is_err());
}

#[test]
fn a_changed_model_file_fails_its_checksum() {
    let (_tmp, pack) = pack_copy();
    let head = pack.join("heads/lines.onnx");
    let mut bytes = std::fs::read(&head).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&head, bytes).unwrap();
    let err = format!("{:#}", Pack::load(&pack).unwrap_err());
    assert!(
        err.contains("tasks[1].head.sha256") && err.contains("lines.onnx"),
        "{err}"
    );
}

#[test]
fn a_wrong_input_shape_or_feature_dim_names_the_field() {
    let (_tmp, pack) = pack_copy();
    edit_manifest(&pack, |m| m["input"]["height"] = 224.into());
    let err = format!("{:#}", Pack::load(&pack).unwrap_err());
    assert!(
        err.contains("field `backbone`") && err.contains("backbone.onnx") && err.contains("224"),
        "{err}"
    );

    let (_tmp, pack) = pack_copy();
    edit_manifest(&pack, |m| m["backbone"]["feature_dim"] = 960.into());
    let err = format!("{:#}", Pack::load(&pack).unwrap_err());
    assert!(
        err.contains("backbone.feature_dim") && err.contains("960"),
        "{err}"
    );
}

#[test]
fn a_truncated_model_with_a_matching_checksum_is_not_onnx() {
    let (_tmp, pack) = pack_copy();
    let file = pack.join("heads/view.onnx");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 3]).unwrap();
    let sha = pleura::fsutil::sha256_file(&file).unwrap();
    edit_manifest(&pack, |m| m["tasks"][0]["head"]["sha256"] = sha.into());
    let err = format!("{:#}", Pack::load(&pack).unwrap_err());
    assert!(
        err.contains("view.onnx") && err.contains("not an ONNX model"),
        "{err}"
    );
}

#[test]
fn broken_manifests_and_hierarchies_are_clear_errors() {
    let (_tmp, pack) = pack_copy();
    edit_manifest(&pack, |m| {
        m["tasks"][1]["gate"]["class"] = "sideways".into()
    });
    let err = format!("{:#}", Pack::load(&pack).unwrap_err());
    assert!(
        err.contains("tasks[1] (lines).gate.class") && err.contains("sideways"),
        "{err}"
    );

    let (_tmp, pack) = pack_copy();
    edit_manifest(&pack, |m| m["format_version"] = 99.into());
    assert!(format!("{:#}", Pack::load(&pack).unwrap_err()).contains("format_version"));

    let (_tmp, pack) = pack_copy();
    edit_manifest(&pack, |m| {
        m["backbone"].as_object_mut().unwrap().remove("sha256");
    });
    let err = format!("{:#}", Pack::load(&pack).unwrap_err());
    assert!(
        err.contains("manifest.json") && err.contains("sha256"),
        "{err}"
    );

    let (_tmp, pack) = pack_copy();
    edit_manifest(&pack, |m| m["backbone"]["file"] = "../outside.onnx".into());
    assert!(format!("{:#}", Pack::load(&pack).unwrap_err()).contains("inside the pack folder"));
}

#[test]
fn missing_pack_and_bad_source_exit_with_status_2_and_a_message() {
    let out = pleura(&["info", "/nonexistent/pack"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/pack"));
    let out = pleura(&[
        "run",
        "--pack",
        default_pack().to_str().unwrap(),
        "--source",
        "camera",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown source"), "{}", stderr(&out));
}
