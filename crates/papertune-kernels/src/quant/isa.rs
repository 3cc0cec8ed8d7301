//! Which row kernel runs: the AVX2 one where the CPU has it, the scalar one otherwise (both
//! give the same bits).

use super::QuantType;
use super::dot::{self, RowDot};

/// Instruction set used by the integer kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// Portable Rust, any CPU.
    Scalar,
    /// x86-64 AVX2 + F16C.
    Avx2,
}

impl Isa {
    /// The best instruction set this CPU supports.
    pub(crate) fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        if super::simd::available() {
            return Isa::Avx2;
        }
        Isa::Scalar
    }
}

/// The row kernel for weights of type `ty`; `Avx2` falls back to scalar when the CPU lacks it.
pub(crate) fn row_dot_fn(ty: QuantType, isa: Isa) -> RowDot {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2
        && let Some(f) = super::simd::row_dot_fn(ty)
    {
        return f;
    }
    let _ = isa;
    dot::scalar_row_dot(ty)
}
