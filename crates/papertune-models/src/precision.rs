//! Floating-point precision of a device: `f32` (the default), or half precision `f16` / `bf16`.
//!
//! burn keeps the float type as a setting of each device: every float tensor created on the
//! device without an explicit type, weights loaded from a checkpoint included, takes it.
//! [`configure`] sets it once, before the first tensor exists on that device. The models are
//! written for any float type; the CPU's fused kernels run for `f32` and the other types take
//! burn's own operations.
//!
//! Half precision halves the memory of weights and activations and is what GPUs run fastest
//! (tensor cores). `bf16` keeps f32's range and is the safer choice for training; `f16` keeps
//! more mantissa bits but overflows above 65504.
//!
//! ```standalone_crate
//! use burn::tensor::{Device, Tensor};
//! use papertune_models::precision::{Precision, configure};
//!
//! let mut device = Device::flex();
//! configure(&mut device, "flex", Precision::Bf16)?;
//! let ones = Tensor::<1>::ones([4], &device);
//! assert_eq!(ones.dtype(), burn::tensor::DType::BF16);
//! # Ok::<(), papertune_models::precision::PrecisionError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use burn::tensor::{DType, Device, FloatDType};

/// The float type of a device's tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit IEEE floats: the reference numerics.
    #[default]
    F32,
    /// 16-bit IEEE floats: 10 mantissa bits, largest finite value 65504.
    F16,
    /// bfloat16: f32's 8 exponent bits, 7 mantissa bits.
    Bf16,
}

impl Precision {
    /// Every precision, in the order the command line lists them.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::F16, Precision::Bf16];

    /// The lower-case name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }

    /// burn's float type of this precision.
    pub fn float_dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::F16 => FloatDType::F16,
            Precision::Bf16 => FloatDType::BF16,
        }
    }

    /// Whether this is a 16-bit type.
    pub fn is_half(self) -> bool {
        self != Precision::F32
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = PrecisionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wanted = text.trim().to_ascii_lowercase();
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == wanted)
            .ok_or_else(|| PrecisionError::Unknown { found: text.to_owned() })
    }
}

/// A precision that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PrecisionError {
    #[error("unknown precision {found:?}; expected one of f32, f16, bf16")]
    Unknown { found: String },
    #[error("backend {backend} does not support {precision} on this device{hint}")]
    Unsupported { backend: String, precision: Precision, hint: &'static str },
    #[error(
        "backend {backend}: the precision must be set before the first tensor is created on the device ({message})"
    )]
    TooLate { backend: String, message: String },
}

/// Sets the float type of every tensor later created on `device` without an explicit type.
///
/// `backend` only names the device in errors. `f32` on a device whose default is already f32
/// is accepted at any time; any other change must come before the first tensor on the device.
pub fn configure(
    device: &mut Device,
    backend: &str,
    precision: Precision,
) -> Result<(), PrecisionError> {
    let current = device.settings().float_dtype;
    if current == precision.float_dtype() {
        return Ok(());
    }
    let dtype: DType = precision.float_dtype().into();
    if !device.supports_dtype(dtype) {
        let hint = match precision {
            Precision::F16 => " (wgpu needs an adapter with the SHADER_F16 feature)",
            Precision::Bf16 => " (try f16)",
            Precision::F32 => "",
        };
        return Err(PrecisionError::Unsupported { backend: backend.to_owned(), precision, hint });
    }
    match device.configure(precision.float_dtype()) {
        Ok(()) => Ok(()),
        // Another thread may have set the same type in the meantime.
        Err(_) if device.settings().float_dtype == precision.float_dtype() => Ok(()),
        Err(e) => {
            Err(PrecisionError::TooLate { backend: backend.to_owned(), message: e.to_string() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print() {
        for p in Precision::ALL {
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
            assert_eq!(p.to_string(), p.name());
        }
        assert_eq!("BF16".parse::<Precision>().unwrap(), Precision::Bf16);
        let err = "fp8".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("\"fp8\"") && err.contains("bf16"), "{err}");
    }

    #[test]
    fn f32_is_accepted_on_a_device_already_in_use() {
        let mut device = Device::flex();
        let _ = burn::tensor::Tensor::<1>::ones([2], &device);
        configure(&mut device, "flex", Precision::F32).unwrap();
        assert_eq!(device.settings().float_dtype, FloatDType::F32);
    }
}
