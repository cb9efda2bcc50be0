//! Convolution and pooling kernels used by the models. Every model calls these functions, never
//! candle's ops directly, so that a faster CPU path can be switched on and off in one place
//! and compared with stock candle (issue: CPU speed).
//!
//! - [`conv`]: 2-D convolution (stock candle, or the fast CPU path);
//! - [`pool`]: max and average pooling with a correct backward for any kernel/stride;
//! - [`batch_norm`]: BatchNorm, fused with the following ReLU (stock candle-nn, or the fast
//!   CPU path);
//! - [`residual`]: the residual block's `relu(h + identity)`, fused on CPU;
//! - [`layout`]: feature maps kept in oneDNN's channel-blocked layout between convolutions;
//! - [`gemm`]: the one matrix product of the fast kernels (OpenBLAS or the `gemm` crate);
//! - [`alloc`]: glibc's malloc thresholds, raised so that freed activations are reused;
//! - [`threads`]: candle's own thread pool told to sleep sooner, so that it leaves the cores to
//!   the kernels.

pub mod alloc;
pub mod batch_norm;
pub mod conv;
pub mod gemm;
pub mod layout;
pub mod pool;
pub mod residual;
pub mod threads;

pub use alloc::tune_allocator;
pub use batch_norm::batch_norm;
pub use conv::{conv2d, conv2d_blocked, fast_cpu, set_fast_cpu, without_weight_grads};
pub use gemm::{gemm_backend, set_gemm_backend, GemmBackend};
pub use pool::{avg_pool2d, global_avg_pool, max_pool2d};
pub use residual::add_relu;
pub use threads::tune_thread_pools;

/// Whether env `name` switches something off: `0`, `false` or `off` (any case, spaces around);
/// unset or anything else leaves it on. The one parser of the kernels' `SPECTRAL_*` switches.
pub(crate) fn env_says_off(name: &str) -> bool {
    matches!(
        std::env::var(name)
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref(),
        Ok("0") | Ok("false") | Ok("off")
    )
}

/// `f((i, chunk))` for the consecutive `size`-element chunks of `v`, over the rayon pool when
/// `parallel` (the kernels share out their own loops only when the product above them is not
/// already split over the threads).
pub(crate) fn for_each_chunk<T: Send>(
    v: &mut [T],
    size: usize,
    parallel: bool,
    f: impl Fn((usize, &mut [T])) + Sync + Send,
) {
    use rayon::prelude::*;
    if parallel {
        v.par_chunks_mut(size).enumerate().for_each(f);
    } else {
        v.chunks_mut(size).enumerate().for_each(f);
    }
}

/// Makes `v` exactly `len` long without initialising the elements it gains: for scratch buffers
/// and outputs that the caller then writes entirely (im2col, a product with beta = 0, a copy).
/// Why not `resize(len, 0)`: zero-filling buffers that are overwritten next was a memset pass
/// per convolution (5 % of a ResNet-18 64 px input-gradient pass, measured), as large as the
/// im2col itself. candle's CPU backend allocates its outputs the same way (`set_len` after
/// `with_capacity`).
///
/// # Safety
/// Every element of `v[..len]` must be written before it is read. `T` is a plain number
/// (`WithDType`: no drop, every bit pattern valid).
pub(crate) unsafe fn set_len_uninit<T: candle_core::WithDType>(v: &mut Vec<T>, len: usize) {
    if len > v.len() {
        v.reserve(len - v.len());
    }
    // SAFETY: capacity >= len (reserved above, or len <= v.len()); the caller writes before
    // reading, and shrinking drops nothing (plain numbers).
    unsafe { v.set_len(len) };
}

/// A `len`-element vector to be written entirely before it is read ([`set_len_uninit`]).
///
/// # Safety
/// As [`set_len_uninit`].
pub(crate) unsafe fn uninit_vec<T: candle_core::WithDType>(len: usize) -> Vec<T> {
    let mut v = Vec::new();
    // SAFETY: passed on to the caller.
    unsafe { set_len_uninit(&mut v, len) };
    v
}

/// The contiguous slice of a CPU storage behind `l`, as `T`; `what` names the operand in the
/// error (e.g. "fast conv2d: lhs").
pub(crate) fn contiguous<'a, T: candle_core::WithDType>(
    s: &'a candle_core::CpuStorage,
    l: &candle_core::Layout,
    what: &str,
) -> candle_core::Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(s)?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}

/// Runs `f32_` or `f64_` on one contiguous CPU operand of a float dtype, giving an output of the
/// same dtype; `op` names the kernel and `operand` the input in the errors (e.g. "fast max pool
/// grad", "output gradient").
pub(crate) fn dispatch1(
    op: &str,
    operand: &str,
    s: &candle_core::CpuStorage,
    l: &candle_core::Layout,
    f32_: impl Fn(&[f32]) -> Vec<f32>,
    f64_: impl Fn(&[f64]) -> Vec<f64>,
) -> candle_core::Result<candle_core::CpuStorage> {
    use candle_core::CpuStorage;
    let what = format!("{op}: {operand}");
    Ok(match s {
        CpuStorage::F32(_) => CpuStorage::F32(f32_(contiguous(s, l, &what)?)),
        CpuStorage::F64(_) => CpuStorage::F64(f64_(contiguous(s, l, &what)?)),
        _ => candle_core::bail!("{op}: f32 or f64 {operand} required"),
    })
}

/// Runs `f32_` or `f64_` on two contiguous CPU operands of one float dtype; `op` names the
/// kernel in the errors (e.g. "fast conv2d").
pub(crate) fn dispatch2(
    op: &str,
    s1: &candle_core::CpuStorage,
    l1: &candle_core::Layout,
    s2: &candle_core::CpuStorage,
    l2: &candle_core::Layout,
    f32_: impl Fn(&[f32], &[f32]) -> Vec<f32>,
    f64_: impl Fn(&[f64], &[f64]) -> Vec<f64>,
) -> candle_core::Result<candle_core::CpuStorage> {
    try_dispatch2(
        op,
        s1,
        l1,
        s2,
        l2,
        |a, b| Ok(f32_(a, b)),
        |a, b| Ok(f64_(a, b)),
    )
}

/// [`dispatch2`] for kernels that can fail (a library call).
pub(crate) fn try_dispatch2(
    op: &str,
    s1: &candle_core::CpuStorage,
    l1: &candle_core::Layout,
    s2: &candle_core::CpuStorage,
    l2: &candle_core::Layout,
    f32_: impl Fn(&[f32], &[f32]) -> candle_core::Result<Vec<f32>>,
    f64_: impl Fn(&[f64], &[f64]) -> candle_core::Result<Vec<f64>>,
) -> candle_core::Result<candle_core::CpuStorage> {
    use candle_core::CpuStorage;
    let (lhs, rhs) = (format!("{op}: lhs"), format!("{op}: rhs"));
    Ok(match (s1, s2) {
        (CpuStorage::F32(_), CpuStorage::F32(_)) => {
            CpuStorage::F32(f32_(contiguous(s1, l1, &lhs)?, contiguous(s2, l2, &rhs)?)?)
        }
        (CpuStorage::F64(_), CpuStorage::F64(_)) => {
            CpuStorage::F64(f64_(contiguous(s1, l1, &lhs)?, contiguous(s2, l2, &rhs)?)?)
        }
        _ => candle_core::bail!("{op}: f32 or f64 operands of the same dtype required"),
    })
}
