//! What the kernels' tests share: an element-wise comparison and the CPU devices to run on.

use burn::tensor::{Device, Tensor};

/// Asserts `|a - b| <= tol * (1 + |b|)` element by element, naming the first that is not.
pub(crate) fn close(a: Tensor<3>, b: Tensor<3>, tol: f32, what: &str) {
    let (a, b): (Vec<f32>, Vec<f32>) =
        (a.into_data().try_to_vec::<f32>().unwrap(), b.into_data().try_to_vec::<f32>().unwrap());
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}[{i}]: fused {x}, reference {y}");
    }
}

/// The CPU backends compiled in, whose operations run papertune's kernels.
pub(crate) fn cpu_devices() -> Vec<Device> {
    let devices = vec![
        #[cfg(feature = "flex")]
        Device::flex(),
        #[cfg(feature = "ndarray")]
        Device::ndarray(),
    ];
    assert!(!devices.is_empty(), "the tests need the flex or ndarray feature");
    devices
}
