//! The `ort` engine (cargo feature `ort`): ONNX Runtime, loaded at run time from a
//! user-provided `libonnxruntime` shared library (the PyPI wheel ships one as
//! `onnxruntime/capi/libonnxruntime.so.<version>`), through the `ort` crate's `load-dynamic`
//! mode: nothing is downloaded or linked at build time.
//!
//! One library and one ONNX Runtime environment per process (ONNX Runtime's rule): the first
//! engine built fixes the library; a later engine asking for another file is an error.
//! Each model is one ONNX Runtime session with `threads` intra-op threads, one inter-op thread,
//! all graph optimisations, and no spinning of idle pool threads (on a 2-core board spinning
//! threads steal the cores capture and the other engine need).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ::ort::session::builder::GraphOptimizationLevel;
use ::ort::session::Session as OrtSession;
use ::ort::value::TensorRef;
use anyhow::{anyhow, bail, ensure, Context, Result};
use prost::Message;
use tract_onnx::prelude::Tensor;

use crate::pack::LoadedModel;

/// Environment variable naming the library when no path is given (the `ort` crate's own).
pub const ORT_LIB_ENV: &str = "ORT_DYLIB_PATH";

/// The library loaded in this process, its version, and the environment built on it.
struct Runtime {
    path: PathBuf,
    version: String,
    environment: ::ort::environment::Environment,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

/// The ONNX Runtime versions this build can use.
fn needed() -> String {
    format!(
        "ONNX Runtime >= 1.{} (C API version {}), e.g. the PyPI wheel's \
         onnxruntime/capi/libonnxruntime.so.*",
        ::ort::MINOR_VERSION,
        ::ort::MINOR_VERSION
    )
}

/// Loads the library (`lib`, else `ORT_DYLIB_PATH`) once per process and builds the environment.
fn runtime(lib: Option<&Path>) -> Result<&'static Runtime> {
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    let path = match lib {
        Some(path) => path.to_path_buf(),
        None => match std::env::var_os(ORT_LIB_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => bail!(
                "the ort engine needs a libonnxruntime: pass --ort-lib PATH or set \
                 {ORT_LIB_ENV} ({})",
                needed()
            ),
        },
    };
    ensure!(
        path.is_file(),
        "ONNX Runtime library {} not found ({})",
        path.display(),
        needed()
    );
    if let Some(loaded) = RUNTIME.get() {
        ensure!(
            same_file(&loaded.path, &path),
            "ONNX Runtime is already loaded from {} in this process; cannot also load {}",
            loaded.path.display(),
            path.display()
        );
        return Ok(loaded);
    }
    let path = path.canonicalize().unwrap_or(path);
    let builder = ::ort::init_from(&path).map_err(|e| {
        anyhow!(
            "loading ONNX Runtime from {}: {e} (the ort engine needs {})",
            path.display(),
            needed()
        )
    })?;
    let environment = builder
        .with_name("pleura")
        .with_telemetry(false)
        .build()
        .map_err(|e| anyhow!("starting ONNX Runtime from {}: {e}", path.display()))?;
    // The build string names the release branch (`git-branch=rel-1.32.0`); else the file name
    // (`libonnxruntime.so.1.32.0`).
    let from_file = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split_once(".so."))
        .map(|(_, v)| v.to_string());
    let version = ::ort::info()
        .split(',')
        .find_map(|part| part.trim().strip_prefix("git-branch=rel-"))
        .map(str::to_string)
        .or(from_file)
        .unwrap_or_else(|| "of unknown version".into());
    Ok(RUNTIME.get_or_init(|| Runtime {
        path,
        version,
        environment,
    }))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// `onnxruntime VERSION (LIBRARY)` of the loaded library.
pub(super) fn describe() -> String {
    match RUNTIME.get() {
        Some(r) => format!("onnxruntime {} ({})", r.version, r.path.display()),
        None => "onnxruntime (not loaded)".into(),
    }
}

/// One model as an ONNX Runtime session. `run` needs the session exclusively: per-stream
/// states share it behind a mutex (uncontended in a one-stream runtime).
pub(super) struct OrtPlan {
    session: Mutex<OrtSession>,
    input_shape: Vec<usize>,
    name: String,
}

impl std::fmt::Debug for OrtPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtPlan")
            .field("model", &self.name)
            .field("input_shape", &self.input_shape)
            .finish()
    }
}

impl OrtPlan {
    /// A session of `model` taking `shape` (the model's symbolic dimensions stay symbolic in
    /// the file; ONNX Runtime resolves them on the first run).
    pub(super) fn new(
        model: &LoadedModel,
        shape: &[usize],
        threads: usize,
        lib: Option<&Path>,
    ) -> Result<OrtPlan> {
        let runtime = runtime(lib)?;
        let name = model.path.display().to_string();
        let context = || format!("preparing {name} for ONNX Runtime");
        let bytes = model.proto.encode_to_vec();
        let err = |e: ::ort::Error<_>| anyhow!("{e}");
        let session = OrtSession::builder(&runtime.environment)
            .map_err(|e| anyhow!("{e}"))
            .with_context(context)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(err)
            .with_context(context)?
            .with_intra_threads(threads)
            .map_err(err)
            .with_context(context)?
            .with_inter_threads(1)
            .map_err(err)
            .with_context(context)?
            .with_intra_op_spinning(false)
            .map_err(err)
            .with_context(context)?
            .commit_from_memory(&bytes)
            .map_err(|e| anyhow!("{e}"))
            .with_context(context)?;
        Ok(OrtPlan {
            session: Mutex::new(session),
            input_shape: shape.to_vec(),
            name,
        })
    }

    /// Runs the session on `input` (f32, the plan's input shape); returns its first output.
    pub(super) fn run(&self, input: &Tensor) -> Result<Tensor> {
        let view = input.to_plain_array_view::<f32>()?;
        let values = view
            .as_slice()
            .context("ort engine: input tensor is not contiguous")?;
        ensure!(
            input.shape() == self.input_shape.as_slice(),
            "ort engine: {} takes {:?}, got {:?}",
            self.name,
            self.input_shape,
            input.shape()
        );
        let value = TensorRef::from_array_view((self.input_shape.clone(), values))
            .map_err(|e| anyhow!("ort engine: input of {}: {e}", self.name))?;
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let outputs = session
            .run(::ort::inputs![value])
            .map_err(|e| anyhow!("ort engine: running {}: {e}", self.name))?;
        let (shape, data) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| anyhow!("ort engine: output of {}: {e}", self.name))?;
        let shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
        Tensor::from_shape(&shape, data)
    }
}
