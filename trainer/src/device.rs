//! Where training runs: the CPU (burn's flex backend) in every build, GPUs behind cargo
//! features so that the default build needs no GPU toolkit:
//!
//! ```text
//! cargo build --release -p pleura-trainer --features cuda   # NVIDIA, CUDA driver at run time
//! cargo build --release -p pleura-trainer --features wgpu   # Vulkan / Metal / DX12 through wgpu
//! ```
//!
//! Asking for a device the build lacks, or that the machine lacks, is an error that says which
//! and how to get it, never a panic deep inside a kernel launch.

use std::fmt;
use std::str::FromStr;

use anyhow::{anyhow, bail, Result};
use burn::tensor::{Device, Tensor};

/// A compute device named on the command line: `cpu`, `cuda`, `cuda:N` or `wgpu`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compute {
    /// The CPU through burn's flex backend (multi-threaded with rayon).
    #[default]
    Cpu,
    /// NVIDIA GPU number N (feature `cuda`).
    Cuda(usize),
    /// The default wgpu adapter: Vulkan, Metal or DX12 (feature `wgpu`).
    Wgpu,
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
            Compute::Wgpu => wgpu(),
        }
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
fn wgpu() -> Result<Device> {
    Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu() -> Result<Device> {
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
            other => match other.strip_prefix("cuda:") {
                Some(n) => n.parse().map(Compute::Cuda).map_err(|_| {
                    anyhow!("bad GPU number in device `{s}` (expected cuda:0, cuda:1, ...)")
                }),
                None => bail!("unknown device `{s}`: expected cpu, cuda, cuda:N or wgpu"),
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
