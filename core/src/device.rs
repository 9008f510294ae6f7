//! `--device cpu|cuda|cuda:N`.

use crate::error::{Error, Result};
use candle_core::Device;

/// Parse a device name. CUDA needs a build with the `cuda` feature; asking for it otherwise
/// is an error that says how to get one.
pub fn parse_device(name: &str) -> Result<Device> {
    let name = name.trim();
    if name == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = if name == "cuda" {
        0
    } else if let Some(n) = name.strip_prefix("cuda:") {
        n.parse::<usize>()
            .map_err(|_| Error::new(format!("bad device '{name}': the CUDA index must be a number, as in cuda:0")))?
    } else {
        return Err(Error::new(format!("unknown device '{name}': expected cpu, cuda or cuda:N")));
    };
    cuda_device(ordinal)
}

#[cfg(feature = "cuda")]
fn cuda_device(ordinal: usize) -> Result<Device> {
    Device::new_cuda(ordinal).map_err(|e| {
        let first = e.to_string();
        let first = first.lines().next().unwrap_or("");
        Error::new(format!(
            "cannot open CUDA device {ordinal} ({first}): check that a GPU is present (nvidia-smi) and the index is in range, or use --device cpu"
        ))
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_ordinal: usize) -> Result<Device> {
    Err(Error::new(
        "this wick was built without CUDA support: rebuild with `cargo build --release --features cuda` (see scripts/cuda-env.sh), or use --device cpu",
    ))
}

/// A short name for logs and metrics: `cpu`, `cuda:0`.
pub fn device_name(d: &Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => match d.location() {
            candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
            _ => "cuda".into(),
        },
        Device::Metal(_) => "metal".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_junk() {
        assert!(matches!(parse_device("cpu").unwrap(), Device::Cpu));
        assert!(parse_device("gpu").unwrap_err().to_string().contains("expected cpu, cuda or cuda:N"));
        assert!(parse_device("cuda:x").unwrap_err().to_string().contains("must be a number"));
        #[cfg(not(feature = "cuda"))]
        assert!(parse_device("cuda").unwrap_err().to_string().contains("--features cuda"));
    }
}
