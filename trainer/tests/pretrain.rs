//! Pretraining runs are safe to interrupt: a run stopped (or killed) mid-way and resumed from
//! its checkpoint ends where the uninterrupted run ends.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use burn::tensor::Device;
use pleura_trainer::data::phantom::{write_cohort, PhantomOptions};
use pleura_trainer::train::pretrain::{
    load_backbone, pretrain, OptimizerKind, PairConfig, PretrainConfig, Start,
};
use pleura_trainer::train::to_vec;

fn small_config() -> PretrainConfig {
    PretrainConfig {
        size: 32,
        batch: 4,
        steps: 9,
        warmup_steps: 2,
        checkpoint_every: 3,
        log_every: 2,
        projector: vec![32, 16],
        optimizer: OptimizerKind::Adamw,
        // Half the pairs from two frames of a clip: resuming must redraw those partners too.
        pairs: PairConfig {
            temporal_p: 0.5,
            ..PairConfig::default()
        },
        ..PretrainConfig::default()
    }
}

fn weights(run: &Path) -> Vec<f32> {
    let (model, _) = load_backbone(run).unwrap();
    to_vec(model.last.conv.weight.val())
}

fn cohort(dir: &Path) {
    write_cohort(
        dir,
        &PhantomOptions {
            clips: 12,
            frames: 2,
            size: 40,
            seed: 3,
        },
    )
    .unwrap();
}

#[test]
fn stopped_and_resumed_run_equals_the_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    cohort(&data);
    let config = small_config();

    let whole = tmp.path().join("whole");
    let info = pretrain(&data, &whole, &config, Start::Fresh, None, &Device::flex()).unwrap();
    assert_eq!(info.steps, 9);
    assert!(whole.join("loss.png").is_file() && whole.join("loss.csv").is_file());

    let parts = tmp.path().join("parts");
    let partial = pretrain(
        &data,
        &parts,
        &config,
        Start::Fresh,
        Some(7),
        &Device::flex(),
    )
    .unwrap();
    assert_eq!(partial.steps, 7);
    assert!(
        !parts.join("backbone.bpk").exists(),
        "an unfinished run has no final backbone"
    );
    assert_eq!(
        std::fs::read_to_string(parts.join("latest")).unwrap(),
        "step-000006"
    );
    // Resuming a folder that holds no run is an error naming it.
    let empty = tmp.path().join("empty");
    let err = format!(
        "{:#}",
        pretrain(&data, &empty, &config, Start::Resume, None, &Device::flex()).unwrap_err()
    );
    assert!(
        err.contains("empty") && err.contains("config.json"),
        "{err}"
    );
    // A fresh start into a folder that holds a run is refused.
    assert!(pretrain(&data, &parts, &config, Start::Fresh, None, &Device::flex()).is_err());
    pretrain(&data, &parts, &config, Start::Resume, None, &Device::flex()).unwrap();

    let (a, b) = (weights(&whole), weights(&parts));
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(
        diff <= 1e-5,
        "resumed run differs from the uninterrupted one by {diff}"
    );
    let log = |run: &Path| std::fs::read_to_string(run.join("loss.csv")).unwrap();
    assert_eq!(log(&whole).lines().count(), log(&parts).lines().count());
}

#[test]
fn a_killed_process_resumes_from_its_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    cohort(&data);
    let run = tmp.path().join("run");
    let toml = tmp.path().join("run.toml");
    std::fs::write(&toml, "size = 32\nbatch = 4\nsteps = 400\nwarmup_steps = 5\ncheckpoint_every = 10\nprojector = [32, 16]\noptimizer = \"adamw\"\n").unwrap();
    let args = |extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pleura-train"));
        cmd.args([
            "pretrain",
            "--data",
            data.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
            "--config",
            toml.to_str().unwrap(),
        ]);
        cmd.args(extra);
        cmd
    };
    let mut child = args(&[]).spawn().unwrap();
    let started = Instant::now();
    while !run.join("latest").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint after 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let out = args(&["--resume"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(run.join("DONE").is_file() && run.join("backbone.bpk").is_file());
    let (_, info) = load_backbone(&run).unwrap();
    assert_eq!(info.steps, 400);
    // A bad configuration is an error naming the field, not a panic.
    std::fs::write(&toml, "batch = 1\n").unwrap();
    let out = args(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("batch"));
}
