//! A handful of real COVID-BLUES clips through ingestion, a probe and evaluation. The dataset is
//! read in place (`PLEURA_COVID_BLUES`, default `../shared/data/covid-blues` beside the
//! repository) and never copied; without it the test says so and passes.

use std::path::PathBuf;

use pleura_trainer::data::covid_blues::{write_labels, LinesRule};
use pleura_trainer::data::ingest::{prepare, Crop, PrepareOptions};
use pleura_trainer::data::labels;
use pleura_trainer::data::split::SplitOptions;
use pleura_trainer::experiment::report::write_summary;
use pleura_trainer::experiment::run::{execute, Experiment};
use pleura_trainer::experiment::Init;
use pleura_trainer::tasks::TaskSet;
use pleura_trainer::train::probe::HeadTraining;

fn dataset() -> Option<PathBuf> {
    let path = std::env::var_os("PLEURA_COVID_BLUES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/data/covid-blues"
            ))
        });
    path.join("severity.csv").is_file().then_some(path)
}

#[test]
fn a_few_blues_clips_go_through_prepare_probe_and_evaluation() {
    let Some(root) = dataset() else {
        eprintln!("COVID-BLUES not found (set PLEURA_COVID_BLUES): skipped");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let all_labels = tmp.path().join("all.csv");
    let counts = write_labels(&root, &all_labels, LinesRule::Exclusive).unwrap();
    assert_eq!(counts.patients, 63);
    // The notes' patterns (A only, B only, both, neither) and the exclusive rule's classes.
    assert_eq!(counts.patterns, [93, 77, 158, 34]);
    let used = counts.used();
    assert_eq!((used.a_lines, used.b_lines, used.unlabelled), (93, 77, 192));

    // Two labelled clips of each class from different patients, per part of a 5-patient...
    // simply: the first 10 patients that have both an A-lines and a B-lines clip, two clips each.
    let rows = labels::read(&all_labels, &TaskSet::standard()).unwrap();
    let mut picked = Vec::new();
    let mut patients: Vec<&str> = rows.iter().map(|r| r.patient.as_str()).collect();
    patients.dedup();
    for p in patients {
        let of = |class| {
            rows.iter()
                .find(|r| r.patient == p && r.classes[1] == Some(class))
        };
        if let (Some(a), Some(b)) = (of(0), of(1)) {
            picked.extend([a.clone(), b.clone()]);
        }
        if picked.len() == 20 {
            break;
        }
    }
    assert_eq!(picked.len(), 20, "10 patients with both classes");
    let some_labels = tmp.path().join("some.csv");
    labels::write(&some_labels, &TaskSet::standard(), &picked).unwrap();
    // The subset keeps the provenance (rule and counts) of the labels it was cut from.
    std::fs::copy(
        labels::provenance_path(&all_labels),
        labels::provenance_path(&some_labels),
    )
    .unwrap();

    let data = tmp.path().join("data");
    let report = prepare(&PrepareOptions {
        clips: root.join("lus_videos"),
        labels: some_labels,
        out: data.clone(),
        stride: 20,
        max_frames: Some(3),
        crop: Crop::Auto,
        max_side: Some(128),
        split: SplitOptions::default(),
    })
    .unwrap();
    assert_eq!(report.prepared.len(), 20, "skipped: {:?}", report.skipped);
    assert!(report
        .prepared
        .iter()
        .all(|c| c.source_size == [350, 350] && c.frames == 3));

    let experiment = Experiment {
        head: HeadTraining {
            steps: 30,
            ..HeadTraining::default()
        },
        seeds: vec![0],
        size: 64,
        bootstrap: 100,
        ..Experiment::new(data.clone())
    };
    let outcome = execute(&experiment).unwrap();
    assert_eq!(
        outcome.rows.len(),
        1,
        "one task (lines) x scratch x linear x one seed"
    );
    let row = &outcome.rows[0];
    assert_eq!((row.task.as_str(), row.init.as_str()), ("lines", "scratch"));
    assert_eq!(row.test.patients, 2, "a fifth of 10 patients");
    let auc = row.test_auc.expect("both classes in the test split");
    assert!((0.0..=1.0).contains(&auc));
    let out = tmp.path().join("report");
    write_summary(&out, &experiment, &outcome).unwrap();
    assert!(out.join("roc_lines_local_test.png").is_file());

    // 5-fold cross-validation with the pixel floor: every patient tested once, pooled.
    let cv = Experiment {
        inits: vec![Init::Pixels(8), Init::Scratch],
        folds: Some(5),
        ..experiment
    };
    let outcome = execute(&cv).unwrap();
    assert_eq!(outcome.rows.len(), 2 * 5, "two backbones x five folds");
    assert_eq!(outcome.cv.len(), 2);
    let scratch = outcome.cv.iter().find(|r| r.init == "scratch").unwrap();
    assert_eq!(
        (
            scratch.local.patients,
            scratch.local.clips,
            scratch.local.frames
        ),
        (10, 20, 60)
    );
    assert_eq!(scratch.local.fold_auc.len(), 5);
    assert!(scratch.vs_pixels.contains_key("local"));
    write_summary(&out, &cv, &outcome).unwrap();
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("5-fold cross-validation by patient"), "{md}");
    assert!(
        md.contains("rule `exclusive`"),
        "the label rule is in the report: {md}"
    );
}
