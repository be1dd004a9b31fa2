//! Tests of the importer: the PyTorch reference file, round trips through our exporter (grey and
//! RGB stems, Small and Large), unfolded BatchNorm nodes against tract, and the errors.

use super::load::tensor;
use super::*;
use burn::module::Module;
use burn::tensor::Tensor;
use prost::Message;
use tract_onnx::pb;

use crate::export::onnx::backbone_model;
use crate::model::init::{draw_values, to_vec, Draw};
use crate::model::mobilenet_v3::tests::{host_random, model_with_nontrivial_bn};

/// `/work/shared/reference/mobilenet_v3_small_1ch_128` (+ `.onnx`, `_input.npy`,
/// `_features.npy`).
const REFERENCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/reference/mobilenet_v3_small_1ch_128"
);

/// A `.npy` file of `<f4` values in C order: its shape and values.
fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}", path.display());
    let (len, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        let b = [bytes[8], bytes[9], bytes[10], bytes[11]];
        (u32::from_le_bytes(b) as usize, 12)
    };
    let header = std::str::from_utf8(&bytes[start..start + len]).unwrap();
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect::<Vec<usize>>();
    let values = bytes[start + len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect::<Vec<_>>();
    assert_eq!(values.len(), shape.iter().product::<usize>());
    (shape, values)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Writes `model` (a folded backbone for 32x32 images) to `dir/name`.
fn write_model(dir: &Path, name: &str, model: &pb::ModelProto) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    path
}

#[test]
fn reference_file_reproduces_pytorch_features() {
    let onnx = PathBuf::from(format!("{REFERENCE}.onnx"));
    if !onnx.exists() {
        println!("note: {} is absent, skipping", onnx.display());
        return;
    }
    let device = Device::flex();
    let file = OnnxMobileNetV3::read(&onnx).unwrap();
    assert_eq!(file.num_convs(), 52);
    assert_eq!(file.in_channels(), 1);
    let detected = file.detect_config().unwrap();
    assert_eq!(detected.variant, Variant::Small);
    assert_eq!(detected.width_mult, 1.0);
    let model = file.to_model(&MobileNetV3Config::small(), &device).unwrap();
    assert_eq!(model.num_trainable_params(), 926_720);

    let (shape, input) = read_npy(Path::new(&format!("{REFERENCE}_input.npy")));
    assert_eq!(shape, [2, 1, 128, 128]);
    let (fshape, expected) = read_npy(Path::new(&format!("{REFERENCE}_features.npy")));
    assert_eq!(fshape, [2, 576]);
    let x = tensor(input, [2, 1, 128, 128], &device);
    let y = to_vec(model.valid().forward(x));
    let diff = max_abs_diff(&y, &expected);
    let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    println!("imported reference vs PyTorch: max |diff| {diff:e} (max |feature| {scale})");
    assert!(diff <= 1e-4, "max |diff| {diff}");
}

#[test]
fn truncated_or_missing_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let source = PathBuf::from(format!("{REFERENCE}.onnx"));
    let bytes = if source.exists() {
        std::fs::read(&source).unwrap()
    } else {
        let net = MobileNetV3Config::small().init(&Device::flex()).fold();
        backbone_model(&net, 32, 32).encode_to_vec()
    };
    for len in [bytes.len() / 2, bytes.len() - 3, 10] {
        let path = dir.path().join(format!("truncated_{len}.onnx"));
        std::fs::write(&path, &bytes[..len]).unwrap();
        let err = import_onnx(&path, &MobileNetV3Config::small(), &Device::flex())
            .expect_err("a truncated file must not load");
        let message = err.to_string();
        println!("{len} bytes: {err:#}");
        assert!(message.contains(&path.display().to_string()), "{message}");
    }
    let missing = dir.path().join("missing.onnx");
    let err = import_onnx(&missing, &MobileNetV3Config::small(), &Device::flex()).unwrap_err();
    assert!(err.to_string().contains("missing.onnx"), "{err:#}");
}

#[test]
fn round_trip_through_our_exporter_and_rgb_stem_into_grey() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let rgb = MobileNetV3Config::small().with_in_channels(3).with_seed(4);
    let trained = model_with_nontrivial_bn(&rgb).valid();
    let path = write_model(
        dir.path(),
        "rgb.onnx",
        &backbone_model(&trained.fold(), 32, 32),
    );

    let file = OnnxMobileNetV3::read(&path).unwrap();
    assert_eq!(file.in_channels(), 3);
    let detected = file.detect_config().unwrap();
    assert_eq!(
        (detected.variant, detected.in_channels),
        (Variant::Small, 3)
    );
    let same = file.to_model(&rgb, &device).unwrap();
    let grey = file.to_model(&MobileNetV3Config::small(), &device).unwrap();
    assert_eq!(grey.in_channels(), 1);

    let x = host_random([2, 1, 32, 32], -1.0, 1.0, 21, &device);
    let x3 = Tensor::cat(vec![x.clone(), x.clone(), x.clone()], 1);
    let reference = to_vec(trained.forward(x3.clone()));
    let scale = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(scale > 1e-2, "features should not vanish ({scale})");
    let d_same = max_abs_diff(&to_vec(same.forward(x3)), &reference);
    let d_grey = max_abs_diff(&to_vec(grey.forward(x)), &reference);
    println!("round trip {d_same:e}, grey stem {d_grey:e} (max |y| {scale})");
    assert!(d_same <= 1e-4 && d_grey <= 1e-4, "{d_same} {d_grey}");
}

#[test]
fn large_round_trip_and_detection() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let config = MobileNetV3Config::large()
        .with_width_mult(0.75)
        .with_seed(8);
    let model = config.init(&device);
    let path = write_model(
        dir.path(),
        "large.onnx",
        &backbone_model(&model.fold(), 32, 32),
    );
    let file = OnnxMobileNetV3::read(&path).unwrap();
    let detected = file.detect_config().unwrap();
    assert_eq!(detected.variant, Variant::Large);
    assert_eq!(detected.width_mult, 0.75);
    let imported = file.to_model(&detected, &device).unwrap();
    let x = host_random([1, 1, 32, 32], -1.0, 1.0, 3, &device);
    let diff = max_abs_diff(
        &to_vec(imported.forward(x.clone())),
        &to_vec(model.forward(x)),
    );
    assert!(diff <= 1e-4, "{diff}");
}

/// Features of the file `model` for `input` (`[1, 1, 32, 32]`), computed by tract.
fn tract_features(model: &pb::ModelProto, input: &[f32]) -> Vec<f32> {
    use tract_onnx::prelude::*;
    let plan = tract_onnx::onnx()
        .model_for_proto_model(model)
        .unwrap()
        .with_input_fact(0, f32::fact([1, 1, 32, 32]).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let x = tract_onnx::prelude::Tensor::from_shape(&[1, 1, 32, 32], input).unwrap();
    let out = plan.run(tvec!(x.into())).unwrap();
    let view = out[0].to_plain_array_view::<f32>().unwrap();
    view.iter().copied().collect()
}

#[test]
fn unfolded_batch_norm_nodes_load_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let net = MobileNetV3Config::small().with_seed(5).init(&device).fold();
    let mut proto = backbone_model(&net, 32, 32);
    // A BatchNormalization (epsilon 1e-5, not ours) after every Conv, squeeze-and-excitation
    // included; channel 0 gets a variance below our epsilon.
    let graph = proto.graph.as_mut().unwrap();
    let mut nodes = Vec::new();
    let mut seed = 500;
    for node in std::mem::take(&mut graph.node) {
        if node.op_type != "Conv" {
            nodes.push(node);
            continue;
        }
        let c = net.stem.out_channels.max(1);
        let out = node.output[0].clone();
        let channels = graph
            .initializer
            .iter()
            .find(|t| t.name == node.input[1])
            .map_or(c, |t| t.dims[0] as usize);
        let mut conv = node;
        conv.output[0] = format!("{out}_pre");
        let pre = conv.output[0].clone();
        nodes.push(conv);
        let mut inputs = vec![pre];
        for (what, lo, hi) in [
            ("scale", 0.5, 1.5),
            ("B", -0.2, 0.2),
            ("mean", -0.2, 0.2),
            ("var", 0.5, 1.5),
        ] {
            seed += 1;
            let half = (hi - lo) / 2.0;
            let mut values: Vec<f32> = draw_values(channels, Draw::Uniform { bound: half }, seed)
                .into_iter()
                .map(|v| v + (lo + half) as f32)
                .collect();
            if what == "var" {
                values[0] = 5e-4;
            }
            if what == "scale" {
                values[0] = 0.03;
            }
            let name = format!("{out}.bn.{what}");
            graph.initializer.push(pb::TensorProto {
                name: name.clone(),
                dims: vec![channels as i64],
                data_type: pb::tensor_proto::DataType::Float as i32,
                float_data: values,
                ..Default::default()
            });
            inputs.push(name);
        }
        nodes.push(pb::NodeProto {
            name: format!("{out}_bn"),
            op_type: "BatchNormalization".into(),
            input: inputs,
            output: vec![out],
            attribute: vec![pb::AttributeProto {
                name: "epsilon".into(),
                r#type: pb::attribute_proto::AttributeType::Float as i32,
                f: 1e-5,
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    graph.node = nodes;
    let path = write_model(dir.path(), "unfolded.onnx", &proto);
    let model = import_onnx(&path, &MobileNetV3Config::small(), &device).unwrap();

    let x = host_random([1, 1, 32, 32], -1.0, 1.0, 13, &device);
    let expected = tract_features(&proto, &to_vec(x.clone()));
    let y = to_vec(model.forward(x));
    let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = max_abs_diff(&y, &expected);
    println!("unfolded BatchNorm vs tract: max |diff| {diff:e} (max |y| {scale})");
    assert!(
        scale > 1e-2 && diff <= 1e-4 * scale.max(1.0),
        "{diff} {scale}"
    );
}

#[test]
fn mismatches_are_errors_naming_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let net = MobileNetV3Config::small().init(&device).fold();
    let proto = backbone_model(&net, 32, 32);
    let path = write_model(dir.path(), "small.onnx", &proto);
    let shown = path.display().to_string();

    // Wrong variant: the number of convolutions, with a hint.
    let err = import_onnx(&path, &MobileNetV3Config::large(), &device).unwrap_err();
    let msg = format!("{err:#}");
    println!("{msg}\n");
    assert!(
        msg.contains(&shown) && msg.contains("52 Conv nodes"),
        "{msg}"
    );
    assert!(msg.contains("matches MobileNetV3-Small (width 1"), "{msg}");

    // Wrong width: same count, the first shape that differs, both shapes.
    let narrow = MobileNetV3Config::small().with_width_mult(0.75);
    let msg = format!("{:#}", import_onnx(&path, &narrow, &device).unwrap_err());
    println!("{msg}\n");
    assert!(
        msg.contains("[72, 16, 1, 1]") && msg.contains("[56, 16, 1, 1]"),
        "{msg}"
    );
    assert!(
        msg.contains("blocks.1.expand") && msg.contains("blocks.1.expand.weight"),
        "{msg}"
    );

    // A 1-channel file cannot feed a 3-channel stem.
    let rgb = MobileNetV3Config::small().with_in_channels(3);
    let msg = format!("{:#}", import_onnx(&path, &rgb, &device).unwrap_err());
    println!("{msg}\n");
    assert!(
        msg.contains("stem") && msg.contains("[16, 3, 3, 3]"),
        "{msg}"
    );

    // An op MobileNetV3 does not have.
    let mut odd = proto.clone();
    let node = odd
        .graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.op_type == "Relu")
        .unwrap();
    node.op_type = "Elu".into();
    let name = node.name.clone();
    let odd_path = write_model(dir.path(), "odd.onnx", &odd);
    let msg = format!(
        "{:#}",
        import_onnx(&odd_path, &MobileNetV3Config::small(), &device).unwrap_err()
    );
    println!("{msg}\n");
    assert!(
        msg.contains("Elu") && msg.contains(&name) && msg.contains("odd.onnx"),
        "{msg}"
    );

    // A missing initializer.
    let mut broken = proto.clone();
    broken.graph.as_mut().unwrap().initializer.remove(0);
    let broken_path = write_model(dir.path(), "broken.onnx", &broken);
    let msg = format!(
        "{:#}",
        import_onnx(&broken_path, &MobileNetV3Config::small(), &device).unwrap_err()
    );
    println!("{msg}\n");
    assert!(
        msg.contains("stem.weight") && msg.contains("broken.onnx"),
        "{msg}"
    );
}
