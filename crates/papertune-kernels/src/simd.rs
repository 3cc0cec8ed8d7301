//! Loops compiled for the vector width the CPU offers, chosen at run time.
//!
//! The crate is built for baseline x86-64, whose SSE2 gives 128-bit vectors. The flex kernels
//! (`flex/`) and the dropout masks (`dropout.rs`) run their loops through [`vectorised`],
//! which calls them inside a function compiled for AVX2 + FMA or AVX-512 when the CPU has it.

/// The vector width a kernel's loops are compiled for.
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
pub(crate) enum Width {
    /// AVX2 and FMA, 256 bits: the memory-bound kernels (normalisations, the rotary
    /// embedding, AdamW, gradient sums), which gain nothing from wider vectors.
    Avx2,
    /// AVX-512 (with BW, VL and DQ) where the CPU has it, else as `Avx2`: the kernels bound
    /// by arithmetic, those computing `exp` (softmax, GELU, SwiGLU, the loss, attention) and
    /// the dropout masks' 64-bit hashing. On
    /// a Xeon with AVX-512 the inference attention kernel took 24-30 ms per layer of W2
    /// instead of 37, and GELU 8-10 ms instead of 12.
    Widest,
}

/// Runs `body` compiled for `width`, so that the loops inlined into it use those vectors.
/// Every fused kernel runs its per-task work through this, with the closures marked
/// `#[inline(always)]` (otherwise they stay outside and keep baseline code). The arithmetic
/// is the same element by element (Rust does not contract `a * b + c` into an FMA, and the
/// reductions keep their own fixed lanes), so results do not depend on the CPU.
#[inline(always)]
pub(crate) fn vectorised<R>(width: Width, body: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
        fn avx512<R>(body: impl FnOnce() -> R) -> R {
            body()
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2_fma<R>(body: impl FnOnce() -> R) -> R {
            body()
        }
        use std::arch::is_x86_feature_detected as has;
        let avx2 = has!("avx2") && has!("fma");
        let has_avx512 =
            avx2 && has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512dq");
        if width == Width::Widest && has_avx512 {
            // SAFETY: the CPU has the features `avx512` is compiled for.
            return unsafe { avx512(body) };
        }
        if avx2 {
            // SAFETY: the CPU has the features `avx2_fma` is compiled for.
            return unsafe { avx2_fma(body) };
        }
    }
    let _ = width;
    body()
}
