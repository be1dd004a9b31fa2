//! Exported ONNX graphs must compute what the burn models compute (max |diff| <= 1e-4), in tract
//! directly and through a model pack loaded by the runtime.

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use pleura::engine::{Engine, TaskMode};
use pleura::pack::{InputSpec, Pack, Provenance};
use pleura_trainer::data::frames::FrameSet;
use pleura_trainer::export::onnx;
use pleura_trainer::export::pack::{write_pack, PackExport, TaskExport};
use pleura_trainer::model::{FullNetwork, HeadConfig, HeadKind, MobileNetV3, MobileNetV3Config};
use pleura_trainer::tasks::STANDARD;
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
        clips: vec![],
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
    let tasks = STANDARD
        .iter()
        .zip(&heads)
        .map(|(def, head)| TaskExport {
            def,
            head: head.fold(),
            kind: HeadKind::mlp(),
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
    let engine = Engine::new(&pack, true).unwrap();
    let mut session = engine.session().unwrap();
    let input = random(vec![1, 1, SIDE, SIDE], 11);
    let result = session.infer(&input, TaskMode::AllTasks).unwrap();
    let feats = Tensor::<2>::from_data(
        TensorData::new(burn_features(&backbone, &input, 1), [1, 576]),
        &device,
    );
    for (t, head) in heads.iter().enumerate() {
        let expected = to_vec(burn::tensor::activation::sigmoid(
            head.forward(feats.clone()),
        ))[0];
        let shared = result.probabilities[t].unwrap();
        let serial = session.serial(t, &input).unwrap();
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
    let h = session.infer(&input, TaskMode::Hierarchy).unwrap();
    let view_is_pleural = h.probabilities[0].unwrap() >= 0.5;
    assert_eq!(h.probabilities[1].is_some(), !view_is_pleural);
    assert_eq!(h.probabilities[2].is_some(), view_is_pleural);
}
