//! The engines benchmark (`make bench-engines`, issue 8): the pack's backbone in every engine
//! this runtime offers, timed against onnxruntime (the PyPI wheel, a measuring peer) in one
//! interleaved run.
//!
//! `tools/bench_engines.py` drives it: it starts `pleura bench --engines-serve`, which builds
//! one [`Engine`] per (engine, input size, threads) exactly as `pleura run` builds it (the input
//! size overridden in a copy of the pack: the backbone is fully convolutional with global
//! pooling), and then answers one JSON request per standard-input line with one JSON line:
//!
//! - `{"cmd": "time", "engine": "tract", "size": 128, "threads": 1, "n": 10}` ->
//!   `{"ms": [...]}`: `n` backbone runs ([`Session::features`], input tensor included), each
//!   timed by wall clock;
//! - `{"cmd": "features", ...}` -> `{"features": [...]}` on [`bench_input`], for the agreement
//!   check against onnxruntime;
//! - `{"cmd": "profile", "size": 128, "threads": 1, "n": 200, "layout": "nhwc"}` ->
//!   `{"wall_ms": [...], "nodes": [{"name", "op", "shape", "ms"}]}`: tract's plan run node by
//!   node ([`SimpleState::run_plan_with_eval`]), each node's mean time per run;
//! - `{"cmd": "quit"}`.
//!
//! The first line it reads configures it:
//! `{"sizes": [128, 224], "threads": [1, 2], "engines": ["tract", "tract-nchw", "ort"]}`; it
//! answers `{"ready": true, "engines": {"tract": "tract 0.23.9", ...}}` once every engine is
//! built. Python times onnxruntime between the Rust turns, so all engines see the same machine.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use serde_json::json;
use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::OpState;
use tract_onnx::tract_core::plan::EvalContext;

use pleura::engine::{
    tract_plan_for, Engine, EngineChoice, EngineConfig, EngineKind, Session, TractLayout,
};
use pleura::pack::Pack;

/// The deterministic input every engine of the benchmark runs (the Python driver computes the
/// same values): `((i * 7919 + 13) mod 256) / 127.5 - 1`, in float64 then rounded to float32.
pub fn bench_input(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| (((i * 7919 + 13) % 256) as f64 / 127.5 - 1.0) as f32)
        .collect()
}

/// A copy of `pack` whose backbone takes `size` x `size` images (manifest input and the
/// backbone file's declared input dimensions).
pub fn resized_pack(pack: &Pack, size: usize) -> Result<Pack> {
    use pb::tensor_shape_proto::dimension::Value;
    let mut pack = pack.clone();
    pack.manifest.input.height = size;
    pack.manifest.input.width = size;
    let graph = pack
        .backbone
        .proto
        .graph
        .as_mut()
        .context("backbone has no graph")?;
    let input = graph.input.first_mut().context("backbone has no input")?;
    let Some(pb::type_proto::Value::TensorType(t)) =
        input.r#type.as_mut().and_then(|t| t.value.as_mut())
    else {
        bail!("backbone input is not a tensor");
    };
    let shape = t.shape.as_mut().context("backbone input has no shape")?;
    ensure!(shape.dim.len() == 4, "backbone input is not [N, C, H, W]");
    for d in &mut shape.dim[2..] {
        d.value = Some(Value::DimValue(size as i64));
    }
    // Intermediate shapes recorded by an exporter would pin the old size.
    graph.value_info.clear();
    pack.backbone.input_shape[2] = Some(size);
    pack.backbone.input_shape[3] = Some(size);
    Ok(pack)
}

/// What the driver asks to be built.
#[derive(Debug, Deserialize)]
struct Setup {
    sizes: Vec<usize>,
    threads: Vec<usize>,
    engines: Vec<String>,
}

/// One request line.
#[derive(Debug, Deserialize)]
struct Request {
    cmd: String,
    #[serde(default)]
    engine: String,
    #[serde(default)]
    size: usize,
    #[serde(default)]
    threads: usize,
    #[serde(default = "one")]
    n: usize,
    #[serde(default)]
    layout: Option<String>,
}

fn one() -> usize {
    1
}

/// `(engine name, size, threads)`.
type Key = (String, usize, usize);

fn choice(name: &str, ort_lib: Option<&Path>) -> Result<EngineChoice> {
    let mut choice = EngineChoice::new(EngineKind::Tract, ort_lib.map(Path::to_path_buf));
    match name {
        "tract" => {}
        "tract-nchw" => choice.tract_layout = TractLayout::Nchw,
        "tract-nhwc" => choice.tract_layout = TractLayout::Nhwc,
        "ort" => choice.kind = EngineKind::Ort,
        other => bail!("engine `{other}`: expected tract, tract-nchw, tract-nhwc or ort"),
    }
    Ok(choice)
}

/// Serves the driver's requests on standard input / output until `quit` or end of input.
pub fn serve(pack_dir: &Path, ort_lib: Option<PathBuf>) -> Result<()> {
    let pack = Pack::load(pack_dir)?;
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut out = std::io::stdout().lock();
    let first = lines.next().context("no setup line on standard input")??;
    let setup: Setup = serde_json::from_str(&first).context("parsing the setup line")?;
    let mut packs = BTreeMap::new();
    for &size in &setup.sizes {
        packs.insert(size, resized_pack(&pack, size)?);
    }
    let mut engines: BTreeMap<Key, Engine> = BTreeMap::new();
    let mut described = BTreeMap::new();
    let mut layouts = BTreeMap::new();
    for name in &setup.engines {
        let choice = choice(name, ort_lib.as_deref())?;
        for &size in &setup.sizes {
            for &threads in &setup.threads {
                let engine = Engine::with_engine(&packs[&size], &EngineConfig { threads }, &choice)
                    .with_context(|| {
                        format!("building {name} at {size}x{size}, {threads} threads")
                    })?;
                described.insert(name.clone(), engine.description().to_string());
                if let Some(layout) = engine.tract_layout() {
                    layouts.insert(format!("{name}/{size}/{threads}"), format!("{layout:?}"));
                }
                engines.insert((name.clone(), size, threads), engine);
            }
        }
    }
    let mut sessions: BTreeMap<Key, Session> = BTreeMap::new();
    for (key, engine) in &engines {
        sessions.insert(key.clone(), engine.session()?);
    }
    let mut inputs = BTreeMap::new();
    for &size in &setup.sizes {
        inputs.insert(size, bench_input(size * size));
    }
    reply(
        &mut out,
        &json!({"ready": true, "engines": described, "tract_layouts": layouts}),
    )?;
    for line in lines {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let request: Request = serde_json::from_str(&line).context("parsing a request")?;
        let answer = match request.cmd.as_str() {
            "quit" => break,
            "time" | "features" => {
                let key = (request.engine.clone(), request.size, request.threads);
                let session = sessions
                    .get_mut(&key)
                    .with_context(|| format!("no engine {key:?} was built"))?;
                let input = &inputs[&request.size];
                if request.cmd == "time" {
                    let mut ms = Vec::with_capacity(request.n);
                    for _ in 0..request.n {
                        let start = Instant::now();
                        session.features(input)?;
                        ms.push(start.elapsed().as_secs_f64() * 1e3);
                    }
                    json!({ "ms": ms })
                } else {
                    let features = session.features(input)?;
                    let values: Vec<f32> = features
                        .to_plain_array_view::<f32>()?
                        .iter()
                        .copied()
                        .collect();
                    json!({ "features": values })
                }
            }
            "profile" => {
                let layout = match request.layout.as_deref() {
                    None | Some("auto") => TractLayout::Auto,
                    Some("nhwc") => TractLayout::Nhwc,
                    Some("nchw") => TractLayout::Nchw,
                    Some(other) => bail!("layout `{other}`: expected nhwc or nchw"),
                };
                let pack = packs
                    .get(&request.size)
                    .with_context(|| format!("size {} was not set up", request.size))?;
                profile(pack, request.threads.max(1), layout, request.n)?
            }
            other => bail!("unknown request `{other}`"),
        };
        reply(&mut out, &answer)?;
    }
    Ok(())
}

fn reply(out: &mut impl Write, value: &serde_json::Value) -> Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)?;
    out.flush().context("answering the driver")
}

/// tract's backbone plan of `pack` run `n` times node by node: per node, its mean time per run.
fn profile(
    pack: &Pack,
    threads: usize,
    layout: TractLayout,
    n: usize,
) -> Result<serde_json::Value> {
    let m = &pack.manifest.input;
    let shape = [1, m.channels, m.height, m.width];
    let plan = tract_plan_for(&pack.backbone, &shape, threads, layout)?;
    let input = Tensor::from_shape(&shape, &bench_input(shape.iter().product()))?;
    let model = plan.model();
    let mut times = vec![Duration::ZERO; model.nodes().len()];
    let mut wall = Vec::with_capacity(n);
    let mut state = plan.spawn()?;
    for k in 0..n + 5 {
        let mut run_times = vec![Duration::ZERO; times.len()];
        let start = Instant::now();
        state.run_plan_with_eval(
            tvec!(input.clone().into()),
            |ctx: &EvalContext,
             op_state: Option<&mut (dyn OpState + 'static)>,
             node: &TypedNode,
             values: TVec<TValue>| {
                let t = Instant::now();
                let r = tract_onnx::tract_core::plan::eval(ctx, op_state, node, values);
                run_times[node.id] += t.elapsed();
                r
            },
        )?;
        // The first runs warm caches and allocate: discarded.
        if k >= 5 {
            wall.push(start.elapsed().as_secs_f64() * 1e3);
            for (total, t) in times.iter_mut().zip(&run_times) {
                *total += *t;
            }
        }
    }
    let nodes: Vec<serde_json::Value> = model
        .nodes()
        .iter()
        .filter(|node| !times[node.id].is_zero())
        .map(|node| {
            let shape = model
                .outlet_fact(OutletId::new(node.id, 0))
                .map(|f| format!("{:?}", f.shape))
                .unwrap_or_default();
            json!({
                "name": node.name,
                "op": node.op().name(),
                "shape": shape,
                "ms": times[node.id].as_secs_f64() * 1e3 / n as f64,
            })
        })
        .collect();
    Ok(json!({ "wall_ms": wall, "nodes": nodes }))
}
