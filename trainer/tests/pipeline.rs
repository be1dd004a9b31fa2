//! The whole trainer path, small: phantom cohort on disk -> build-pack recipe -> a pack the
//! runtime verifies and runs.

use burn::tensor::Device;
use pleura::engine::Engine;
use pleura::pack::Pack;
use pleura_trainer::data::phantom::{write_cohort, PhantomOptions};
use pleura_trainer::experiment::report::write_summary;
use pleura_trainer::experiment::run::{execute, Experiment, Method};
use pleura_trainer::experiment::{Init, NamedData};
use pleura_trainer::model::HeadKind;
use pleura_trainer::recipe::{build_pack, BackboneInit, PackRecipe};
use pleura_trainer::train::finetune::FinetuneTraining;
use pleura_trainer::train::probe::HeadTraining;
use std::path::PathBuf;

/// A recipe small enough for a test: tiny steps and batches, linear heads.
fn tiny_recipe(data: PathBuf, size: usize, backbone: BackboneInit) -> PackRecipe {
    PackRecipe {
        data,
        size,
        stride: 1,
        validation: 0.2,
        test: 0.2,
        seed: 1,
        backbone,
        backbone_steps: 2,
        shared_steps: 0,
        shared_lr: 1e-4,
        head: HeadTraining {
            kind: HeadKind::Linear,
            steps: 4,
            batch: 8,
            eval_every: 2,
            ..HeadTraining::default()
        },
        finetune: FinetuneTraining {
            steps: 2,
            batch: 4,
            eval_every: 1,
            ..FinetuneTraining::default()
        },
        command: "test".into(),
    }
}

#[test]
fn phantom_to_pack_to_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_cohort(
        &data,
        &PhantomOptions {
            clips: 24,
            frames: 3,
            size: 80,
            seed: 5,
        },
    )
    .unwrap();
    assert!(data.join("labels.csv").is_file() && data.join("montage.png").is_file());

    let recipe = tiny_recipe(data.clone(), 64, BackboneInit::Multitask);
    let out = tmp.path().join("pack");
    let reports = build_pack(&recipe, &out).unwrap();
    assert_eq!(reports.len(), 3);
    assert!(out.join("training.json").is_file());

    let pack = Pack::load(&out).unwrap();
    let m = &pack.manifest;
    assert_eq!(
        (m.input.height, m.input.width, m.backbone.feature_dim),
        (64, 64, 576)
    );
    assert!(m.provenance.synthetic);
    assert!(m.input.std > 0.0 && m.input.mean > 0.0);
    // The per-task networks verify when asked; the shared backbone and every head run.
    pack.load_networks().unwrap();
    let engine = Engine::new(&pack).unwrap();
    let mut session = engine.session().unwrap();
    let input = vec![0.0f32; engine.input_len()];
    let features = session.features(&input).unwrap();
    for t in 0..pack.tasks.len() {
        let p = session.head(t, &features).unwrap();
        assert!((0.0..=1.0).contains(&p), "task {t}: {p}");
    }
}

#[test]
fn a_dataset_with_a_missing_clip_folder_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_cohort(
        &data,
        &PhantomOptions {
            clips: 4,
            frames: 1,
            size: 32,
            seed: 0,
        },
    )
    .unwrap();
    let labels = std::fs::read_to_string(data.join("labels.csv")).unwrap();
    let first_clip = labels
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    std::fs::remove_dir_all(data.join("clips").join(&first_clip)).unwrap();
    let recipe = tiny_recipe(data, 32, BackboneInit::Scratch);
    let err = format!(
        "{:#}",
        build_pack(&recipe, &tmp.path().join("pack")).unwrap_err()
    );
    assert!(err.contains(&first_clip), "{err}");
}

#[test]
fn a_pretrained_run_becomes_the_shared_backbone_and_the_fine_tuning_start() {
    use pleura_trainer::train::pretrain::{pretrain, OptimizerKind, PretrainConfig, Start};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_cohort(
        &data,
        &PhantomOptions {
            clips: 24,
            frames: 2,
            size: 64,
            seed: 5,
        },
    )
    .unwrap();
    let run = tmp.path().join("run");
    let config = PretrainConfig {
        size: 64,
        batch: 4,
        steps: 2,
        warmup_steps: 1,
        projector: vec![16, 8],
        optimizer: OptimizerKind::Adamw,
        seed: 1,
        ..PretrainConfig::default()
    };
    pretrain(&data, &run, &config, Start::Fresh, None, &Device::flex()).unwrap();
    let recipe = tiny_recipe(data, 64, BackboneInit::Pretrained(run.clone()));
    let out = tmp.path().join("pack");
    build_pack(&recipe, &out).unwrap();
    let pack = Pack::load(&out).unwrap();
    assert!(
        pack.manifest.provenance.backbone_init.contains("simclr"),
        "{}",
        pack.manifest.provenance.backbone_init
    );
    // The pack keeps the normalisation the backbone was pretrained with.
    let (_, info) = pleura_trainer::train::pretrain::load_backbone(&run).unwrap();
    assert_eq!(
        (pack.manifest.input.mean, pack.manifest.input.std),
        (info.input.mean, info.input.std)
    );

    // A size that does not match the pretrained backbone is refused, naming both sizes.
    let err = format!(
        "{:#}",
        build_pack(
            &PackRecipe {
                size: 96,
                ..recipe.clone()
            },
            &tmp.path().join("p2")
        )
        .unwrap_err()
    );
    assert!(err.contains("64x64") && err.contains("96x96"), "{err}");

    // The same run against the scratch baseline: probes on frozen features, local and external.
    let experiment = Experiment {
        externals: vec![NamedData::parse(&format!(
            "again={}",
            recipe.data.display()
        ))],
        inits: vec![Init::Scratch, Init::Pretrained(run.clone())],
        methods: vec![
            Method::Probe(HeadKind::Linear),
            Method::Finetune(HeadKind::Linear),
        ],
        fractions: vec![0.5, 1.0],
        head: recipe.head.clone(),
        finetune: FinetuneTraining {
            steps: 2,
            batch: 4,
            eval_every: 1,
            lr: 1e-5,
            head_lr: Some(1e-4),
            ..FinetuneTraining::default()
        },
        seeds: vec![0],
        size: 64,
        split_seed: 1,
        bootstrap: 50,
        ..Experiment::new(recipe.data.clone())
    };
    let outcome = execute(&experiment).unwrap();
    let rows = &outcome.rows;
    assert_eq!(
        rows.len(),
        2 * 3 * 2 * 2,
        "backbones x tasks x methods x fractions"
    );
    assert_eq!(rows[0].init, "scratch");
    // Rows are named by the pretraining run's folder, with the SSL method beside it.
    assert_eq!(rows[12].init, run.file_name().unwrap().to_str().unwrap());
    assert_eq!(rows[12].method, "simclr");
    assert_eq!(rows[2].head, "finetune");
    assert!(
        rows[0].train_frames < rows[1].train_frames,
        "half the labels, then all"
    );
    for row in rows {
        let external = &row.external["again"];
        assert!(external.frames > row.test.frames && external.clips > 0);
        if let (Some(auc), Some([lo, hi])) = (row.test_auc, row.test_auc_ci) {
            assert!((0.0..=1.0).contains(&auc) && lo <= hi, "{row:?}");
        }
    }
    let report = tmp.path().join("report");
    write_summary(&report, &experiment, &outcome).unwrap();
    let md = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(
        md.contains(&format!("| {} | linear | 100% |", rows[12].init)) && md.contains("### again"),
        "{md}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("summary.json")).unwrap()).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 24);
    assert_eq!(json["rows"][12]["method"], "simclr");
    assert!(report.join("roc_lines_local_test.png").is_file());
    assert!(report.join("label_efficiency_view_again.png").is_file());
}
