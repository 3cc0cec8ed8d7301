//! Backend choice: `--backend NAME` among those compiled in by cargo features.

use anyhow::{Result, bail};
use burn::tensor::Device;
use papertune_models::precision::{self, Precision};

/// Backends papertune knows, with the cargo feature that compiles each in.
pub const BACKENDS: &[(&str, &str)] =
    &[("flex", "flex"), ("ndarray", "ndarray"), ("wgpu", "wgpu"), ("cuda", "cuda")];

/// Names of the backends this binary was built with.
pub fn compiled_in() -> Vec<&'static str> {
    let mut names = Vec::new();
    if cfg!(feature = "flex") {
        names.push("flex");
    }
    if cfg!(feature = "ndarray") {
        names.push("ndarray");
    }
    if cfg!(feature = "wgpu") {
        names.push("wgpu");
    }
    if cfg!(feature = "cuda") {
        names.push("cuda");
    }
    names
}

/// The default backend: the first compiled in, CPU first.
pub fn default_name() -> &'static str {
    compiled_in().first().copied().unwrap_or("flex")
}

/// The device of a backend in the given precision, or an error naming the feature to enable
/// or the precision the device lacks.
pub fn device(name: &str, precision: Precision) -> Result<Device> {
    let mut device = plain_device(name)?;
    precision::configure(&mut device, name, precision)?;
    if matches!(name, "wgpu" | "cuda") {
        probe(name, &device)?;
    }
    Ok(device)
}

/// Runs one small operation on a GPU backend's device, so that a missing driver or adapter is
/// an error here rather than a panic on the backend's thread in the middle of a run.
fn probe(name: &str, device: &Device) -> Result<()> {
    let quiet_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(|| {
        burn::tensor::Tensor::<1>::ones([1], device).sum().into_scalar::<f32>()
    });
    std::panic::set_hook(quiet_hook);
    match outcome {
        Ok(_) => Ok(()),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "no message".into());
            // A panic on the backend's own thread reaches this one as a closed channel; the
            // backend has logged its message (a warning) already.
            let detail =
                if message.contains("RecvError") { String::new() } else { format!(": {message}") };
            let needs = if name == "cuda" {
                "an NVIDIA driver (libcuda.so)"
            } else {
                "a Vulkan, Metal or DX12 adapter"
            };
            bail!("backend {name} does not run on this machine; it needs {needs}{detail}")
        }
    }
}

fn plain_device(name: &str) -> Result<Device> {
    let Some((_, feature)) = BACKENDS.iter().find(|(n, _)| *n == name) else {
        bail!(
            "unknown backend {name:?}; known backends: {}",
            BACKENDS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        );
    };
    if !compiled_in().contains(&name) {
        bail!(
            "backend {name:?} is not compiled in (this build has: {}); rebuild with `--features {feature}`, \
             e.g. `cargo run --release -p xtask --features {feature} -- ...`",
            compiled_in().join(", ")
        );
    }
    Ok(match name {
        #[cfg(feature = "flex")]
        "flex" => Device::flex(),
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        "ndarray" => Device::ndarray(),
        #[cfg(feature = "wgpu")]
        "wgpu" => Device::wgpu(Default::default()),
        #[cfg(feature = "cuda")]
        "cuda" => Device::cuda(0),
        _ => unreachable!("every compiled-in backend has a device"),
    })
}

/// The device of one rank of a job over several processes: on a GPU backend the GPU of its
/// index among the ranks of its node (`local_rank`), so that one node's ranks use one GPU each;
/// on a CPU backend the CPU.
pub fn rank_device(name: &str, local_rank: usize, precision: Precision) -> Result<Device> {
    let mut device = match name {
        #[cfg(feature = "cuda")]
        "cuda" => Device::cuda(local_rank),
        #[cfg(feature = "wgpu")]
        "wgpu" => Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(local_rank)),
        _ => return device(name, precision),
    };
    precision::configure(&mut device, name, precision)?;
    probe(name, &device)?;
    Ok(device)
}

/// `count` devices of backend `name` for data parallelism: GPUs `0..count`, or the CPU device
/// `count` times (each a thread of its own).
pub fn devices(name: &str, count: usize, precision: Precision) -> Result<Vec<Device>> {
    if count == 0 {
        bail!("--devices must be at least 1");
    }
    let first = device(name, precision)?;
    let mut devices: Vec<Device> = match name {
        #[cfg(feature = "wgpu")]
        "wgpu" if count > 1 => {
            (0..count).map(|i| Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(i))).collect()
        }
        #[cfg(feature = "cuda")]
        "cuda" => (0..count).map(Device::cuda).collect(),
        _ => vec![first; count],
    };
    for device in &mut devices {
        precision::configure(device, name, precision)?;
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_backend_lists_the_known_ones() {
        let err = device("tpu", Precision::F32).unwrap_err().to_string();
        assert!(err.contains("unknown backend \"tpu\"") && err.contains("wgpu"), "{err}");
    }

    #[test]
    fn backend_not_compiled_in_names_its_feature() {
        if !compiled_in().contains(&"cuda") {
            let err = device("cuda", Precision::F32).unwrap_err().to_string();
            assert!(err.contains("--features cuda"), "{err}");
        }
        assert!(device(default_name(), Precision::F32).is_ok());
    }
}
