//! The SSL losses against float64 reference values computed with lightly 1.6.0
//! (`tests/fixtures/ssl_losses_and_auc.json`, section `ssl_loss_cases`).
//!
//! Every case holds two views `z_a`, `z_b` (`[batch, dim]`) and a map of loss values keyed by
//! loss and hyperparameters (`simclr_nt_xent_temperature_<t>`, `barlow_twins_lambda_<l>`,
//! `vicreg_sim<s>_var<v>_cov<c>`); each key is parsed and the loss recomputed with burn in f32.

use burn::tensor::{Device, Tensor, TensorData};
use pleura_trainer::ssl::{barlow_twins, nt_xent, ssl_loss, vicreg, SslLossConfig, SslMethod};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Relative tolerance against the float64 reference.
const TOLERANCE: f64 = 1e-4;

#[derive(Deserialize)]
struct Fixture {
    ssl_loss_cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    batch: usize,
    dim: usize,
    z_a: Vec<Vec<f64>>,
    z_b: Vec<Vec<f64>>,
    losses: BTreeMap<String, f64>,
}

fn fixture() -> Fixture {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ssl_losses_and_auc.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("fixture parses")
}

fn tensor(rows: &[Vec<f64>], batch: usize, dim: usize, device: &Device) -> Tensor<2> {
    assert_eq!(rows.len(), batch);
    let values: Vec<f32> = rows
        .iter()
        .inspect(|r| assert_eq!(r.len(), dim))
        .flatten()
        .map(|&v| v as f32)
        .collect();
    Tensor::from_data(TensorData::new(values, [batch, dim]), device)
}

fn scalar(t: Tensor<1>) -> f64 {
    let v = t
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 values");
    assert_eq!(v.len(), 1);
    v[0] as f64
}

/// A loss named by a fixture key, with its hyperparameters.
#[derive(Debug, Clone, Copy)]
enum Loss {
    NtXent { temperature: f64 },
    Barlow { lambda: f64 },
    Vicreg { sim: f64, var: f64, cov: f64 },
}

fn number(s: &str, key: &str) -> f64 {
    s.parse()
        .unwrap_or_else(|_| panic!("key {key}: {s:?} is not a number"))
}

fn parse_key(key: &str) -> Loss {
    if let Some(t) = key.strip_prefix("simclr_nt_xent_temperature_") {
        Loss::NtXent {
            temperature: number(t, key),
        }
    } else if let Some(l) = key.strip_prefix("barlow_twins_lambda_") {
        Loss::Barlow {
            lambda: number(l, key),
        }
    } else if let Some(rest) = key.strip_prefix("vicreg_sim") {
        let (sim, rest) = rest.split_once("_var").expect("vicreg key has _var");
        let (var, cov) = rest.split_once("_cov").expect("vicreg key has _cov");
        Loss::Vicreg {
            sim: number(sim, key),
            var: number(var, key),
            cov: number(cov, key),
        }
    } else {
        panic!("unknown loss key {key} in the fixture")
    }
}

fn compute(loss: Loss, z_a: Tensor<2>, z_b: Tensor<2>) -> f64 {
    scalar(match loss {
        Loss::NtXent { temperature } => nt_xent(z_a, z_b, temperature),
        Loss::Barlow { lambda } => barlow_twins(z_a, z_b, lambda),
        Loss::Vicreg { sim, var, cov } => vicreg(z_a, z_b, sim, var, cov),
    })
}

#[test]
fn every_reference_loss_matches() {
    let device = Device::flex();
    let fixture = fixture();
    assert!(!fixture.ssl_loss_cases.is_empty());
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut worst: BTreeMap<String, f64> = BTreeMap::new();
    for (i, case) in fixture.ssl_loss_cases.iter().enumerate() {
        assert!(!case.losses.is_empty(), "case {i} has no losses");
        let z_a = tensor(&case.z_a, case.batch, case.dim, &device);
        let z_b = tensor(&case.z_b, case.batch, case.dim, &device);
        for (key, &want) in &case.losses {
            let got = compute(parse_key(key), z_a.clone(), z_b.clone());
            let rel = (got - want).abs() / want.abs();
            println!(
                "case {i} (batch {}, dim {}) {key}: {got:.9} vs {want:.9}, rel err {rel:.2e}",
                case.batch, case.dim
            );
            let w = worst.entry(key.clone()).or_insert(0.0);
            *w = w.max(rel);
            if rel.is_nan() || rel > TOLERANCE {
                failures.push(format!("case {i} {key}: {got} vs {want} (rel {rel:.2e})"));
            }
            checked += 1;
        }
    }
    for (key, rel) in &worst {
        println!("max rel err {key}: {rel:.2e}");
    }
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
    // Every loss family is covered by the fixture.
    let keys: Vec<Loss> = worst.keys().map(|k| parse_key(k)).collect();
    assert!(keys.iter().any(|l| matches!(l, Loss::NtXent { .. })));
    assert!(keys.iter().any(|l| matches!(l, Loss::Barlow { .. })));
    assert!(keys.iter().any(|l| matches!(l, Loss::Vicreg { .. })));
    println!("{checked} reference values checked");
}

/// The dispatcher with the recipe's defaults agrees with the reference keys that use them.
#[test]
fn ssl_loss_with_recipe_defaults_matches_the_reference() {
    let device = Device::flex();
    let config = SslLossConfig::default();
    let keys = [
        (SslMethod::Simclr, "simclr_nt_xent_temperature_0.1"),
        (SslMethod::Barlow, "barlow_twins_lambda_0.005"),
        (SslMethod::Vicreg, "vicreg_sim25_var25_cov1"),
    ];
    for case in &fixture().ssl_loss_cases {
        let z_a = tensor(&case.z_a, case.batch, case.dim, &device);
        let z_b = tensor(&case.z_b, case.batch, case.dim, &device);
        for (method, key) in keys {
            let want = *case.losses.get(key).unwrap_or_else(|| panic!("{key}"));
            let got = scalar(ssl_loss(method, &config, z_a.clone(), z_b.clone()));
            assert!(
                (got - want).abs() <= TOLERANCE * want.abs(),
                "{method:?}: {got} vs {want}"
            );
        }
    }
}
