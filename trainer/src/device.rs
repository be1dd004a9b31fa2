//! Where training runs: the CPU (burn's flex backend) in every build, GPUs behind cargo
//! features so that the default build needs no GPU toolkit:
//!
//! ```text
//! cargo build --release -p pleura-trainer --features cuda   # NVIDIA, CUDA driver at run time
//! cargo build --release -p pleura-trainer --features wgpu   # Vulkan / Metal / DX12 through wgpu
//! ```
//!
//! `wgpu` builds offline (no build script downloads anything); `cuda` downloads the LLVM bundle
//! that its PTX compiler links (`tracel-llvm-bundler`, a build dependency of `cubecl-llvm`) on
//! its first build. `wgpu:cpu` asks wgpu for a CPU adapter (Mesa's lavapipe on Linux): slow,
//! but it checks the GPU code path on a machine without a GPU (`make check-wgpu`).
//!
//! Several devices (`cuda:0,cuda:1`) train data-parallel ([`DeviceSet`]): one replica per
//! device, gradients averaged by burn's all-reduce. burn 0.22 implements that all-reduce for
//! CUDA only (NCCL), so a set of several devices must be CUDA devices.
//!
//! Asking for a device the build lacks, or that the machine lacks, is an error that says which
//! and how to get it, never a panic deep inside a kernel launch.

use std::fmt;
use std::str::FromStr;

use anyhow::{anyhow, bail, Result};
use burn::tensor::{Device, Tensor};

/// A compute device named on the command line: `cpu`, `cuda`, `cuda:N`, `wgpu` or `wgpu:cpu`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compute {
    /// The CPU through burn's flex backend (multi-threaded with rayon).
    #[default]
    Cpu,
    /// NVIDIA GPU number N (feature `cuda`).
    Cuda(usize),
    /// The default wgpu adapter: Vulkan, Metal or DX12 (feature `wgpu`).
    Wgpu,
    /// wgpu's CPU adapter (Mesa's lavapipe under Vulkan; feature `wgpu`): a correctness check
    /// of the GPU path, not a way to train fast.
    WgpuCpu,
}

impl Compute {
    /// The devices this build can use (the CPU always).
    pub fn compiled() -> Vec<&'static str> {
        let mut names = vec!["cpu"];
        if cfg!(feature = "cuda") {
            names.push("cuda");
        }
        if cfg!(feature = "wgpu") {
            names.push("wgpu");
        }
        names
    }

    /// The burn device (without autodiff), checked by running one small operation on it.
    pub fn device(self) -> Result<Device> {
        let device = self.unchecked()?;
        if self != Compute::Cpu {
            probe(&device).map_err(|why| anyhow!("{self} is not usable on this machine: {why}"))?;
        }
        Ok(device)
    }

    fn unchecked(self) -> Result<Device> {
        match self {
            Compute::Cpu => Ok(Device::flex()),
            Compute::Cuda(index) => cuda(index),
            Compute::Wgpu => wgpu(false),
            Compute::WgpuCpu => wgpu(true),
        }
    }

    /// Parses a comma-separated list of devices (`cuda:0,cuda:1`); duplicates are refused.
    pub fn parse_list(list: &str) -> Result<Vec<Compute>> {
        let mut out: Vec<Compute> = Vec::new();
        for name in list.split(',').map(str::trim) {
            let c: Compute = name.parse()?;
            if out.contains(&c) {
                bail!("device `{c}` is named twice in `{list}`");
            }
            out.push(c);
        }
        Ok(out)
    }
}

/// The devices one training run uses: one, or several CUDA devices trained data-parallel
/// (checked when built, so a run never meets a set burn cannot all-reduce over).
#[derive(Clone, Debug)]
pub struct DeviceSet {
    names: Vec<Compute>,
    devices: Vec<Device>,
}

impl DeviceSet {
    /// One device (any backend).
    pub fn one(device: Device) -> Self {
        Self {
            names: Vec::new(),
            devices: vec![device],
        }
    }

    /// The devices `names` say, each checked with [`Compute::device`]. Several devices must all
    /// be CUDA devices: burn 0.22 all-reduces gradients through NCCL only; the CPU (flex) and
    /// wgpu backends have no collective operations.
    pub fn new(names: &[Compute]) -> Result<Self> {
        if let Some((i, c)) = names
            .iter()
            .enumerate()
            .find(|(i, c)| names[..*i].contains(c))
        {
            bail!("device `{c}` is named twice (position {})", i + 1);
        }
        match names {
            [] => bail!("no device given"),
            [one] => Ok(Self {
                names: vec![*one],
                devices: vec![one.device()?],
            }),
            several => {
                if let Some(other) = several.iter().find(|c| !matches!(c, Compute::Cuda(_))) {
                    bail!(
                        "data-parallel training over several devices runs on CUDA devices only \
                         (burn 0.22 all-reduces gradients through NCCL; its CPU and wgpu backends \
                         have no all-reduce): `{other}` cannot be one of {}. Name one device, or \
                         several `cuda:N`",
                        several
                            .iter()
                            .map(Compute::to_string)
                            .collect::<Vec<_>>()
                            .join(",")
                    );
                }
                let devices = several
                    .iter()
                    .map(|c| c.device())
                    .collect::<Result<Vec<_>>>()?;
                Ok(Self {
                    names: several.to_vec(),
                    devices,
                })
            }
        }
    }

    /// The burn devices (without autodiff), in order; the first holds the run's checkpoints.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Always `false`: a set holds at least one device.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

impl fmt::Display for DeviceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.names.is_empty() {
            return write!(f, "{:?}", self.devices[0]);
        }
        let names: Vec<String> = self.names.iter().map(Compute::to_string).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(feature = "cuda")]
fn cuda(index: usize) -> Result<Device> {
    Ok(Device::cuda(index))
}

#[cfg(not(feature = "cuda"))]
fn cuda(_index: usize) -> Result<Device> {
    bail!(missing_feature("cuda"))
}

#[cfg(feature = "wgpu")]
fn wgpu(cpu: bool) -> Result<Device> {
    use burn::tensor::DeviceKind;
    Ok(Device::wgpu(if cpu {
        DeviceKind::Cpu
    } else {
        DeviceKind::DefaultDevice
    }))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu(_cpu: bool) -> Result<Device> {
    bail!(missing_feature("wgpu"))
}

#[cfg(not(all(feature = "cuda", feature = "wgpu")))]
fn missing_feature(name: &str) -> String {
    format!(
        "this pleura-train was built without GPU support for --device {name}: rebuild with \
         `cargo build --release -p pleura-trainer --features {name}` (this build offers: {})",
        Compute::compiled().join(", ")
    )
}

/// Runs a tiny reduction on `device`. GPU runtimes report a missing driver or adapter by
/// panicking on first use; that panic becomes an error here, before any training state exists.
fn probe(device: &Device) -> std::result::Result<(), String> {
    let device = device.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {})); // the message is returned, not printed
    let outcome = std::panic::catch_unwind(move || {
        let x = Tensor::<1>::ones([4], &device).sum();
        x.into_data().try_to_vec::<f32>().map(|v| v[0])
    });
    std::panic::set_hook(previous);
    match outcome {
        Ok(Ok(4.0)) => Ok(()),
        Ok(Ok(v)) => Err(format!("a test sum of four ones gave {v}")),
        Ok(Err(e)) => Err(format!("{e:?}")),
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the runtime panicked".into())),
    }
}

impl fmt::Display for Compute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compute::Cpu => f.write_str("cpu"),
            Compute::Cuda(i) => write!(f, "cuda:{i}"),
            Compute::Wgpu => f.write_str("wgpu"),
            Compute::WgpuCpu => f.write_str("wgpu:cpu"),
        }
    }
}

impl FromStr for Compute {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Compute::Cpu),
            "cuda" => Ok(Compute::Cuda(0)),
            "wgpu" => Ok(Compute::Wgpu),
            "wgpu:cpu" => Ok(Compute::WgpuCpu),
            other => match other.strip_prefix("cuda:") {
                Some(n) => n.parse().map(Compute::Cuda).map_err(|_| {
                    anyhow!("bad GPU number in device `{s}` (expected cuda:0, cuda:1, ...)")
                }),
                None => bail!(
                    "unknown device `{s}`: expected cpu, cuda, cuda:N, wgpu or wgpu:cpu \
                     (several, comma-separated: cuda:0,cuda:1)"
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("cpu".parse::<Compute>().unwrap(), Compute::Cpu);
        assert_eq!("CUDA".parse::<Compute>().unwrap(), Compute::Cuda(0));
        assert_eq!("cuda:2".parse::<Compute>().unwrap(), Compute::Cuda(2));
        assert_eq!("wgpu".parse::<Compute>().unwrap(), Compute::Wgpu);
        assert!("cuda:x"
            .parse::<Compute>()
            .unwrap_err()
            .to_string()
            .contains("cuda:x"));
        assert!("tpu"
            .parse::<Compute>()
            .unwrap_err()
            .to_string()
            .contains("tpu"));
        assert_eq!(Compute::Cuda(1).to_string(), "cuda:1");
        assert_eq!("wgpu:cpu".parse::<Compute>().unwrap(), Compute::WgpuCpu);
        assert_eq!(
            Compute::parse_list("cuda:0, cuda:1").unwrap(),
            [Compute::Cuda(0), Compute::Cuda(1)]
        );
        assert!(Compute::parse_list("cuda:0,cuda:0").is_err());
    }

    #[test]
    fn several_devices_must_be_cuda_devices() {
        for list in ["cpu,cpu", "wgpu,cuda:1", "cuda:0,wgpu:cpu"] {
            let names = Compute::parse_list(list).unwrap_or_else(|_| {
                // `cpu,cpu` is refused as a duplicate already; a set of two is what matters.
                vec![Compute::Cpu, Compute::Wgpu]
            });
            let e = DeviceSet::new(&names).unwrap_err().to_string();
            assert!(e.contains("CUDA devices only"), "{list}: {e}");
        }
        let one = DeviceSet::new(&[Compute::Cpu]).unwrap();
        assert_eq!((one.len(), one.to_string()), (1, "cpu".to_string()));
    }

    #[test]
    fn cpu_always_works() {
        assert!(Compute::Cpu.device().is_ok());
        assert!(Compute::compiled().contains(&"cpu"));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_missing_gpu_feature_says_how_to_build_it() {
        let e = Compute::Cuda(0).device().unwrap_err().to_string();
        assert!(e.contains("--features cuda"), "{e}");
    }
}
