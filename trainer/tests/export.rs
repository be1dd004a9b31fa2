//! Exported ONNX graphs must compute what the burn models compute (max |diff| <= 1e-4), in tract
//! directly and through a model pack loaded by the runtime; int8 heads must stay within the
//! error their quantisation steps allow of the f32 heads, and run in integers.

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use pleura::engine::{Engine, EngineChoice, EngineConfig};
use pleura::pack::{InputSpec, Pack, Provenance, Quantization};
use pleura::tasks::TaskMode;
use pleura_trainer::data::frames::FrameSet;
use pleura_trainer::export::onnx;
use pleura_trainer::export::pack::{write_pack, PackExport, TaskExport};
use pleura_trainer::export::quantize::{int8_head_model, QuantizedHead};
use pleura_trainer::export::tract_eval;
use pleura_trainer::model::{FullNetwork, HeadConfig, HeadKind, MobileNetV3, MobileNetV3Config};
use pleura_trainer::tasks::TaskSet;
use pleura_trainer::train::calibrate::recalibrate_batchnorm;
use pleura_trainer::train::to_vec;
use tract_onnx::prelude::{tvec, DatumExt, Framework, InferenceModelExt, IntoRunnable};

const SIDE: usize = 96;

fn random(shape: Vec<usize>, seed: u64) -> Vec<f32> {
    let device = Device::flex();
    device.seed(seed);
    let n = shape.iter().product::<usize>();
    to_vec(Tensor::<1>::random(
        [n],
        Distribution::Normal(0.0, 1.0),
        &device,
    ))
}

/// A backbone whose BatchNorm running statistics are no longer the initial 0 / 1.
fn trained_backbone(seed: u64) -> MobileNetV3 {
    let model = MobileNetV3Config::small()
        .with_seed(seed)
        .init(&Device::flex());
    let frames = FrameSet {
        dims: [1, SIDE, SIDE],
        inputs: random(vec![8, SIDE, SIDE], 100 + seed)
            .iter()
            .map(|v| v * 2.0 + 0.5)
            .collect(),
        frame_clip: vec![0; 8],
        position: (0..8).collect(),
        clips: vec![],
        clip_seconds: vec![],
    };
    recalibrate_batchnorm(&model, &frames, &(0..8).collect::<Vec<_>>(), 4)
}

fn tract_run(model: &tract_onnx::pb::ModelProto, shape: &[usize], input: &[f32]) -> Vec<f32> {
    let plan = tract_onnx::onnx()
        .model_for_proto_model(model)
        .unwrap()
        .with_input_fact(0, f32::fact(shape).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let out = plan
        .run(tvec!(tract_onnx::prelude::Tensor::from_shape(shape, input)
            .unwrap()
            .into()))
        .unwrap();
    out[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn burn_features(model: &MobileNetV3, input: &[f32], n: usize) -> Vec<f32> {
    let x = Tensor::<4>::from_data(
        TensorData::new(input.to_vec(), [n, 1, SIDE, SIDE]),
        &Device::flex(),
    );
    to_vec(model.forward(x))
}

#[test]
fn backbone_onnx_matches_burn_in_tract() {
    let model = trained_backbone(1);
    let input = random(vec![2, 1, SIDE, SIDE], 7);
    let expected = burn_features(&model, &input, 2);
    let got = tract_run(
        &onnx::backbone_model(&model.fold(), SIDE, SIDE),
        &[2, 1, SIDE, SIDE],
        &input,
    );
    assert_eq!(got.len(), 2 * 576);
    let diff = max_abs_diff(&expected, &got);
    assert!(diff <= 1e-4, "max |diff| {diff}");
    // The features are not trivially constant.
    let spread = expected.iter().fold(f32::MIN, |a, &b| a.max(b))
        - expected.iter().fold(f32::MAX, |a, &b| a.min(b));
    assert!(spread > 0.5, "spread {spread}");
}

#[test]
fn heads_and_full_network_onnx_match_burn() {
    let device = Device::flex();
    let features = random(vec![5, 576], 3);
    for kind in [HeadKind::Linear, HeadKind::mlp()] {
        let head = HeadConfig::new(kind, 576).with_seed(4).init(&device);
        let x = Tensor::<2>::from_data(TensorData::new(features.clone(), [5, 576]), &device);
        let expected: Vec<f32> = to_vec(burn::tensor::activation::sigmoid(head.forward(x)));
        let got = tract_run(&onnx::head_model(&head.fold(), "t"), &[5, 576], &features);
        let diff = max_abs_diff(&expected, &got);
        assert!(diff <= 1e-4, "{kind:?}: max |diff| {diff}");
    }
    let net = FullNetwork::new(
        trained_backbone(2),
        HeadConfig::new(HeadKind::mlp(), 576)
            .with_seed(5)
            .init(&device),
    );
    let input = random(vec![2, 1, SIDE, SIDE], 9);
    let x = Tensor::<4>::from_data(TensorData::new(input.clone(), [2, 1, SIDE, SIDE]), &device);
    let expected = to_vec(burn::tensor::activation::sigmoid(net.forward(x)));
    let (b, h) = net.fold();
    let got = tract_run(
        &onnx::full_model(&b, &h, "t", SIDE, SIDE),
        &[2, 1, SIDE, SIDE],
        &input,
    );
    let diff = max_abs_diff(&expected, &got);
    assert!(diff <= 1e-4, "full network: max |diff| {diff}");
}

#[test]
fn pack_round_trip_through_the_runtime_engine() {
    let device = Device::flex();
    let backbone = trained_backbone(3);
    let heads: Vec<_> = (0..3)
        .map(|t| {
            HeadConfig::new(HeadKind::mlp(), 576)
                .with_seed(10 + t)
                .init(&device)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    // int8 heads calibrated on the features of a few frames, the timed one among them.
    let input = random(vec![1, 1, SIDE, SIDE], 11);
    let mut calibration = random(vec![3, 1, SIDE, SIDE], 12);
    calibration.extend_from_slice(&input);
    let calibration = burn_features(&backbone, &calibration, 4);
    let int8: Vec<_> = heads
        .iter()
        .map(|h| QuantizedHead::calibrate(&h.fold(), &calibration, 576, &[0, 1, 2, 3]).unwrap())
        .collect();
    let set = TaskSet::standard();
    let tasks = (0..set.len())
        .zip(&heads)
        .zip(&int8)
        .map(|((index, head), q)| TaskExport {
            index,
            tasks: &set,
            head: head.fold(),
            kind: HeadKind::mlp(),
            int8: Some(q.clone()),
            quantization: Quantization::F32,
            network: (backbone.fold(), head.fold()),
        })
        .collect();
    let input_spec = InputSpec {
        height: SIDE,
        width: SIDE,
        channels: 1,
        mean: 0.0,
        std: 1.0,
    };
    write_pack(
        dir.path(),
        &PackExport {
            name: "test".into(),
            description: "test pack".into(),
            input: input_spec,
            backbone: backbone.fold(),
            architecture: "mobilenet_v3_small".into(),
            parameters: backbone.num_trainable_params(),
            tasks,
            provenance: Provenance::default(),
        },
    )
    .unwrap();

    let pack = Pack::load(dir.path()).unwrap();
    assert_eq!(pack.manifest.backbone.parameters, 926_720);
    assert_eq!(pack.model_files(), 10);
    let networks = pack.load_networks().unwrap();
    let engine = Engine::with_networks(
        &pack,
        &networks,
        &EngineConfig::default(),
        &EngineChoice::default(),
    )
    .unwrap();
    assert_eq!(engine.head_forms(), [Quantization::F32; 3]);
    let mut session = engine.session().unwrap();
    let features = session.features(&input).unwrap();
    let shared_p: Vec<f32> = (0..3)
        .map(|t| session.head(t, &features).unwrap())
        .collect();
    let feats = Tensor::<2>::from_data(
        TensorData::new(burn_features(&backbone, &input, 1), [1, 576]),
        &device,
    );
    for (t, head) in heads.iter().enumerate() {
        let expected = to_vec(burn::tensor::activation::sigmoid(
            head.forward(feats.clone()),
        ))[0];
        let shared = shared_p[t];
        let serial = session.network(t, &input).unwrap();
        assert!(
            (shared - expected).abs() <= 1e-4,
            "task {t}: shared {shared} vs burn {expected}"
        );
        assert!(
            (serial - expected).abs() <= 1e-4,
            "task {t}: serial {serial} vs burn {expected}"
        );
    }
    // The hierarchy runs the view head and exactly one of the two gated heads.
    let mut decisions = vec![None; 3];
    for t in 0..3 {
        if pack.tasks.runs(TaskMode::Hierarchy, t, &decisions) {
            decisions[t] = Some(pack.tasks[t].decide(shared_p[t]));
        }
    }
    let view_is_pleural = shared_p[0] >= 0.5;
    assert_eq!(decisions[1].is_some(), !view_is_pleural);
    assert_eq!(decisions[2].is_some(), view_is_pleural);

    // What `pleura run --heads int8` does: every task runs its int8 head file.
    let mut pack = pack;
    pack.select_heads(Quantization::Int8).unwrap();
    let engine = Engine::new(&pack).unwrap();
    assert_eq!(engine.head_forms(), [Quantization::Int8; 3]);
    let mut session8 = engine.session().unwrap();
    let features8 = session8.features(&input).unwrap();
    for (t, (head, quantized)) in heads.iter().zip(&int8).enumerate() {
        let (p8, p32) = (session8.head(t, &features8).unwrap(), shared_p[t]);
        let bound = quantized.error_bound(&head.fold(), &calibration[3 * 576..]);
        assert!(
            (p8 - p32).abs() <= bound + 1e-3,
            "task {t}: int8 {p8} vs f32 {p32}, bound {bound}"
        );
    }
}

/// A pack with an int8 head for every task (linear heads, random weights) in `dir`.
fn int8_pack(dir: &std::path::Path) {
    let device = Device::flex();
    let backbone = MobileNetV3Config::small().with_seed(6).init(&device);
    let features = random(vec![4, 576], 13);
    let set = TaskSet::standard();
    let tasks = (0..set.len())
        .map(|t| {
            let head = HeadConfig::new(HeadKind::Linear, 576)
                .with_seed(20 + t as u64)
                .init(&device)
                .fold();
            TaskExport {
                index: t,
                tasks: &set,
                int8: Some(QuantizedHead::calibrate(&head, &features, 576, &[0, 1, 2, 3]).unwrap()),
                quantization: Quantization::Int8,
                network: (backbone.fold(), head.clone()),
                head,
                kind: HeadKind::Linear,
            }
        })
        .collect();
    write_pack(
        dir,
        &PackExport {
            name: "int8".into(),
            description: "test pack".into(),
            input: InputSpec::unnormalised(SIDE, SIDE),
            backbone: backbone.fold(),
            architecture: "mobilenet_v3_small".into(),
            parameters: 0,
            tasks,
            provenance: Provenance::default(),
        },
    )
    .unwrap();
}

#[test]
fn int8_heads_default_from_the_manifest_and_corruption_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    int8_pack(dir.path());
    let mut pack = Pack::load(dir.path()).unwrap();
    assert_eq!(
        pack.manifest.tasks[0].head.int8.as_ref().unwrap().file,
        "heads/view.int8.onnx"
    );
    let engine = Engine::new(&pack).unwrap();
    assert_eq!(engine.head_forms(), [Quantization::Int8; 3]);
    pack.select_heads(Quantization::F32).unwrap();
    assert_eq!(
        Engine::new(&pack).unwrap().head_forms(),
        [Quantization::F32; 3]
    );

    // One flipped byte in the int8 head: the load fails and names the manifest field.
    let file = dir.path().join("heads/view.int8.onnx");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let err = format!("{:#}", Pack::load(dir.path()).unwrap_err());
    assert!(err.contains("tasks[0].head.int8.sha256"), "{err}");
}

#[test]
fn int8_heads_match_f32_within_the_quantisation_error_and_run_in_integers() {
    let device = Device::flex();
    let rows = 48;
    // Uneven feature scales, as a backbone's: column k scaled by 0.2..2.
    let features: Vec<f32> = random(vec![rows, 576], 14)
        .iter()
        .enumerate()
        .map(|(i, v)| v * (0.2 + 1.8 * ((i % 576) as f32 / 576.0)) + 0.3)
        .collect();
    let index: Vec<usize> = (0..rows).collect();
    for kind in [HeadKind::Linear, HeadKind::mlp()] {
        let head = HeadConfig::new(kind, 576)
            .with_seed(15)
            .init(&device)
            .fold();
        let quantized = QuantizedHead::calibrate(&head, &features, 576, &index).unwrap();
        let model = int8_head_model(&quantized, "t");
        let f32_scores =
            tract_eval::head_scores(&onnx::head_model(&head, "t"), &features, 576, &index).unwrap();
        let int8_scores = tract_eval::head_scores(&model, &features, 576, &index).unwrap();
        let (mut worst, mut widest) = (0.0f32, 0.0f32);
        for r in 0..rows {
            let x = &features[r * 576..(r + 1) * 576];
            // tract computes exactly the integer arithmetic the quantised head defines ...
            let reference = quantized.probability(x);
            assert!(
                (int8_scores[r] - reference).abs() <= 1e-5,
                "{kind:?} row {r}: tract {} vs integer reference {reference}",
                int8_scores[r]
            );
            // ... and stays within the error the quantisation steps allow of the f32 head.
            let bound = quantized.error_bound(&head, x) + 1e-5;
            let diff = (int8_scores[r] - f32_scores[r]).abs();
            assert!(
                diff <= bound,
                "{kind:?} row {r}: |int8 - f32| {diff} > bound {bound}"
            );
            worst = worst.max(diff);
            widest = widest.max(bound);
        }
        eprintln!("{kind:?}: max |int8 - f32| {worst:.2e}, largest bound {widest:.2e}");
        assert!(
            widest < 0.5,
            "{kind:?}: the bound {widest} is too loose to mean much"
        );

        // tract's optimised plan: the matrix products run on i8 operands into i32.
        let ops = tract_eval::optimised_ops(&model, 576).unwrap();
        eprintln!("{kind:?} plan:\n  {}", ops.join("\n  "));
        let integer_products = ops
            .iter()
            .filter(|op| {
                op.starts_with("OptMatMul:") && op.contains("I8") && op.ends_with("-> I32")
            })
            .count();
        assert_eq!(
            integer_products,
            quantized.layers.len(),
            "{kind:?}: expected one integer OptMatMul per layer in\n{}",
            ops.join("\n")
        );
        assert!(
            !ops.iter()
                .any(|op| op.starts_with("OptMatMul:") && !op.ends_with("-> I32")),
            "{kind:?}: a float matrix product is left in\n{}",
            ops.join("\n")
        );
    }
}
