//! The one matrix product behind the fast CPU kernels: OpenBLAS (cargo feature `openblas`, on by
//! default, when build.rs finds the system library) or the `gemm` crate that candle itself uses.
//!
//! Why two. Measured on this project's 2-core AMD EPYC (AVX2 + FMA, no AVX-512;
//! `examples/gemm_probe.rs` against numpy's OpenBLAS on the same shapes, docs/performance.md):
//! single-threaded, `gemm` 0.19 reaches 21-44 GFLOP/s on the convolution shapes of ResNet-18/50
//! (it varies between runs), OpenBLAS 0.3 70-93 GFLOP/s (close to the core's FMA peak). The fast
//! convolution runs one single-threaded product per thread on groups of images, so the
//! single-thread rate is what counts. `gemm` stays as the fallback for builds without a system
//! OpenBLAS (not found, or `--no-default-features`) and for comparison at run time
//! (`SPECTRAL_GEMM=gemm`).
//!
//! Threads. OpenBLAS is told to use one thread (`openblas_set_num_threads(1)`): parallelism is
//! ours, so that it never competes with candle's rayon pool. That means concurrent calls from the
//! rayon workers, which only a threaded OpenBLAS build (pthreads or OpenMP) survives: the serial
//! build (Debian's `libopenblas0-serial`, 0.3.21) shares its packing buffers between callers
//! without a lock, and two threads multiplying 40x40 matrices at once got wrong products in about
//! 1 call in 300 (measured here; on CI, with the Haswell kernels, it broke a finite-difference
//! test). So OpenBLAS is used only when `openblas_get_parallel()` says the library that was loaded
//! is threaded ([`openblas_is_thread_safe`]); a serial one falls back to the `gemm` crate. Which
//! build is loaded is decided at run time (Debian's `update-alternatives`), not at build time. A product the caller asks to run on `t` threads is cut into `t`
//! blocks of output columns (or rows, when it is taller than wide), each an independent product.
//! The cut depends only on the shape and the thread count, so a run is bit-for-bit repeatable
//! for a given `RAYON_NUM_THREADS`; across thread counts OpenBLAS may round differently (it picks
//! kernels by block size: measured, ~3 % of the elements of a 64x2000x300 product differ in the
//! last bits between 1 and 2 threads), as the fast convolution's image grouping already did.

use std::sync::atomic::{AtomicU8, Ordering};

use candle_core::WithDType;
use rayon::prelude::*;

/// Row-major strided matrix view: element (i, j) at `ptr[i·rs + j·cs]`; one of `rs`, `cs` is 1.
pub(crate) struct Mat<T> {
    pub ptr: *const T,
    pub rs: isize,
    pub cs: isize,
}

// Manual impls: derive would demand `T: Copy`, but only the pointer is copied.
impl<T> Clone for Mat<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Mat<T> {}

/// Which library computes the products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmBackend {
    /// System OpenBLAS through CBLAS (feature `openblas`).
    OpenBlas,
    /// The `gemm` crate (candle's own GEMM).
    GemmCrate,
}

/// 0 = not decided yet (read the environment), 1 = gemm crate, 2 = OpenBLAS.
static BACKEND: AtomicU8 = AtomicU8::new(0);

/// Chooses the GEMM of the fast kernels for the whole process (overrides `SPECTRAL_GEMM`).
/// Asking for OpenBLAS keeps the `gemm` crate in a build without it (feature off, or no system
/// library found at build time) and when the loaded OpenBLAS is its serial build, which is not
/// safe to call from several threads at once ([`openblas_is_thread_safe`]).
pub fn set_gemm_backend(b: GemmBackend) {
    let v = match b {
        GemmBackend::OpenBlas if openblas_is_thread_safe() => 2,
        _ => 1,
    };
    BACKEND.store(v, Ordering::Relaxed);
}

/// The GEMM of the fast kernels: [`set_gemm_backend`] if called, else env `SPECTRAL_GEMM`
/// (`gemm` or `openblas`), else OpenBLAS when compiled in and threaded.
pub fn gemm_backend() -> GemmBackend {
    match BACKEND.load(Ordering::Relaxed) {
        1 => GemmBackend::GemmCrate,
        2 => GemmBackend::OpenBlas,
        _ => {
            let want = std::env::var("SPECTRAL_GEMM")
                .map(|v| v.trim().to_ascii_lowercase())
                .unwrap_or_default();
            let b = if want == "gemm" {
                GemmBackend::GemmCrate
            } else {
                GemmBackend::OpenBlas
            };
            set_gemm_backend(b);
            gemm_backend()
        }
    }
}

/// Whether this build links OpenBLAS and the library loaded at run time is a threaded build
/// (`openblas_get_parallel()` 1 = pthreads, 2 = OpenMP; 0 = serial, whose shared buffers make
/// concurrent calls return wrong products). False without the `openblas` feature.
pub fn openblas_is_thread_safe() -> bool {
    #[cfg(spectral_openblas)]
    {
        openblas::parallel() != 0
    }
    #[cfg(not(spectral_openblas))]
    {
        false
    }
}

/// OpenBLAS's own description of the loaded library (`openblas_get_config()`, e.g.
/// `"OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64"`), or `None` in a
/// build without it. For reports (`examples/gemm_probe.rs`).
pub fn openblas_config() -> Option<String> {
    #[cfg(spectral_openblas)]
    {
        Some(openblas::config())
    }
    #[cfg(not(spectral_openblas))]
    {
        None
    }
}

/// C (m, n) = A (m, k) · B (k, n), all row-major and contiguous, on `threads` threads, with the
/// fast kernels' GEMM ([`gemm_backend`]). For benchmarks and checks of the backends
/// (`examples/gemm_probe.rs`); the kernels call the strided form directly.
pub fn matmul<T: WithDType>(
    a: &[T],
    b: &[T],
    m: usize,
    k: usize,
    n: usize,
    threads: usize,
) -> Vec<T> {
    assert!(
        a.len() == m * k && b.len() == k * n,
        "matmul: operands are not (m, k) and (k, n)"
    );
    let mut c = vec![T::zero(); m * n];
    let lhs = Mat {
        ptr: a.as_ptr(),
        rs: k as isize,
        cs: 1,
    };
    let rhs = Mat {
        ptr: b.as_ptr(),
        rs: n as isize,
        cs: 1,
    };
    // SAFETY: the views cover the checked slices; `c` holds m·n elements.
    unsafe { gemm_rm(m, n, k, &mut c, false, lhs, rhs, threads) };
    c
}

/// Below this many multiply-adds a product is not worth splitting over threads.
const SPLIT_MIN_MACS: usize = 1 << 18;

/// dst (m, n, row-major, contiguous) = [dst +] lhs (m, k) · rhs (k, n), on `threads` threads.
///
/// # Safety
/// The views must cover (m, k) and (k, n) elements; `dst` must hold m·n elements and not overlap
/// the operands.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_rm<T: WithDType>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    accumulate: bool,
    lhs: Mat<T>,
    rhs: Mat<T>,
    threads: usize,
) {
    assert!(dst.len() >= m * n, "gemm: destination too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(T::zero());
        }
        return;
    }
    let threads = threads.max(1);
    let blas = gemm_backend() == GemmBackend::OpenBlas;
    if threads == 1 || m * n * k < SPLIT_MIN_MACS {
        block(m, n, k, dst.as_mut_ptr(), n, accumulate, lhs, rhs, blas);
        return;
    }
    // Independent blocks of columns (or rows), each with the full k.
    let by_cols = n >= m;
    let (len, align) = if by_cols { (n, 16) } else { (m, 8) };
    let step = len.div_ceil(threads).div_ceil(align) * align;
    let cuts: Vec<(usize, usize)> = (0..len)
        .step_by(step.max(1))
        .map(|a| (a, (a + step).min(len)))
        .collect();
    let d = SendMut(dst.as_mut_ptr());
    let (l, r) = (Shared(lhs), Shared(rhs));
    cuts.into_par_iter().for_each(|(a, b)| {
        let (d, lhs, rhs) = (d.get(), l.get(), r.get());
        // SAFETY: the blocks are disjoint parts of `dst`; operand offsets stay inside the views.
        unsafe {
            if by_cols {
                let rhs = Mat {
                    ptr: rhs.ptr.offset(a as isize * rhs.cs),
                    ..rhs
                };
                block(m, b - a, k, d.add(a), n, accumulate, lhs, rhs, blas);
            } else {
                let lhs = Mat {
                    ptr: lhs.ptr.offset(a as isize * lhs.rs),
                    ..lhs
                };
                block(b - a, n, k, d.add(a * n), n, accumulate, lhs, rhs, blas);
            }
        }
    });
}

/// One single-threaded product into `dst` with row stride `ldc`.
#[allow(clippy::too_many_arguments)]
unsafe fn block<T: WithDType>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    ldc: usize,
    accumulate: bool,
    lhs: Mat<T>,
    rhs: Mat<T>,
    blas: bool,
) {
    #[cfg(spectral_openblas)]
    if blas && matches!(T::DTYPE, candle_core::DType::F32 | candle_core::DType::F64) {
        openblas::gemm(m, n, k, dst, ldc, accumulate, lhs, rhs);
        return;
    }
    let _ = blas;
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        ldc as isize,
        accumulate,
        lhs.ptr,
        lhs.cs,
        lhs.rs,
        rhs.ptr,
        rhs.cs,
        rhs.rs,
        T::one(),
        T::one(),
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

#[cfg(spectral_openblas)]
mod openblas {
    use super::Mat;
    use candle_core::{DType, WithDType};
    use cblas_sys::{cblas_dgemm, cblas_sgemm, CblasNoTrans, CblasRowMajor, CblasTrans};
    use std::os::raw::c_int;

    // build.rs links the system library (Debian: libopenblas-dev) when it finds it.
    // `openblas_set_num_threads` is OpenBLAS's own extension, not in CBLAS (so not in `cblas-sys`).
    extern "C" {
        fn openblas_set_num_threads(n: c_int);
        fn openblas_get_parallel() -> c_int;
        fn openblas_get_config() -> *const std::os::raw::c_char;
    }

    pub(super) fn parallel() -> c_int {
        // SAFETY: a getter without arguments or side effects.
        unsafe { openblas_get_parallel() }
    }

    pub(super) fn config() -> String {
        // SAFETY: OpenBLAS returns a static NUL-terminated string.
        unsafe { std::ffi::CStr::from_ptr(openblas_get_config()) }
            .to_string_lossy()
            .into_owned()
    }

    static ONE_THREAD: std::sync::Once = std::sync::Once::new();

    /// CBLAS transpose flag and leading dimension of a view: row-major (cs = 1) or its transpose.
    fn layout<T>(v: &Mat<T>, cols: usize) -> (cblas_sys::CBLAS_TRANSPOSE, c_int) {
        if v.cs == 1 && v.rs >= cols.max(1) as isize {
            (CblasNoTrans, v.rs as c_int)
        } else {
            debug_assert_eq!(v.rs, 1, "gemm view must have a unit stride");
            (CblasTrans, v.cs.max(1) as c_int)
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn gemm<T: WithDType>(
        m: usize,
        n: usize,
        k: usize,
        dst: *mut T,
        ldc: usize,
        accumulate: bool,
        lhs: Mat<T>,
        rhs: Mat<T>,
    ) {
        ONE_THREAD.call_once(|| unsafe { openblas_set_num_threads(1) });
        let (ta, lda) = layout(&lhs, k);
        let (tb, ldb) = layout(&rhs, n);
        let (mi, ni, ki) = (m as c_int, n as c_int, k as c_int);
        let beta = if accumulate { 1.0 } else { 0.0 };
        match T::DTYPE {
            DType::F32 => cblas_sgemm(
                CblasRowMajor,
                ta,
                tb,
                mi,
                ni,
                ki,
                1.0,
                lhs.ptr as *const f32,
                lda,
                rhs.ptr as *const f32,
                ldb,
                beta as f32,
                dst as *mut f32,
                ldc as c_int,
            ),
            DType::F64 => cblas_dgemm(
                CblasRowMajor,
                ta,
                tb,
                mi,
                ni,
                ki,
                1.0,
                lhs.ptr as *const f64,
                lda,
                rhs.ptr as *const f64,
                ldb,
                beta,
                dst as *mut f64,
                ldc as c_int,
            ),
            _ => unreachable!("checked by the caller"),
        }
    }
}

/// A raw pointer handed to rayon workers that write disjoint parts of it.
struct SendMut<T>(*mut T);
// SAFETY: each worker writes its own block; the buffer outlives the parallel section.
unsafe impl<T> Send for SendMut<T> {}
unsafe impl<T> Sync for SendMut<T> {}
impl<T> SendMut<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

/// A read-only view shared across rayon workers.
pub(crate) struct Shared<T>(pub Mat<T>);
// SAFETY: the pointee is an immutable slice that outlives the parallel section.
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}
impl<T> Shared<T> {
    pub fn get(&self) -> Mat<T> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Naive f64 product of two strided views.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        m: usize,
        n: usize,
        k: usize,
        a: &[f64],
        ars: usize,
        acs: usize,
        b: &[f64],
        brs: usize,
        bcs: usize,
    ) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|p| a[i * ars + p * acs] * b[p * brs + j * bcs])
                    .sum();
            }
        }
        c
    }

    fn check(backend: GemmBackend) {
        set_gemm_backend(backend);
        let mut seed = 1u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f64 / (1u64 << 31) as f64) - 0.5
        };
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 5, 7),
            (17, 300, 9),
            (70, 40, 130),
            (64, 1100, 33),
            (200, 3, 64),
        ] {
            for &(ta, tb) in &[(false, false), (true, false), (false, true), (true, true)] {
                let a: Vec<f64> = (0..m * k).map(|_| rnd()).collect();
                let b: Vec<f64> = (0..k * n).map(|_| rnd()).collect();
                let (ars, acs) = if ta { (1, m) } else { (k, 1) };
                let (brs, bcs) = if tb { (1, k) } else { (n, 1) };
                let want = naive(m, n, k, &a, ars, acs, &b, brs, bcs);
                for threads in [1, 2, 3] {
                    for acc in [false, true] {
                        let mut c = vec![if acc { 1.0 } else { 9.0 }; m * n];
                        let lhs = Mat {
                            ptr: a.as_ptr(),
                            rs: ars as isize,
                            cs: acs as isize,
                        };
                        let rhs = Mat {
                            ptr: b.as_ptr(),
                            rs: brs as isize,
                            cs: bcs as isize,
                        };
                        // SAFETY: the views cover the buffers built above.
                        unsafe { gemm_rm(m, n, k, &mut c, acc, lhs, rhs, threads) };
                        for (got, w) in c.iter().zip(&want) {
                            let w = if acc { w + 1.0 } else { *w };
                            assert!(
                                (got - w).abs() < 1e-12,
                                "{backend:?} {m}x{n}x{k} t{ta}{tb} threads {threads}: {got} vs {w}"
                            );
                        }
                        // f32 as well: same views, looser tolerance.
                        let a32: Vec<f32> = a.iter().map(|&v| v as f32).collect();
                        let b32: Vec<f32> = b.iter().map(|&v| v as f32).collect();
                        let mut c32 = vec![0f32; m * n];
                        let lhs = Mat {
                            ptr: a32.as_ptr(),
                            rs: ars as isize,
                            cs: acs as isize,
                        };
                        let rhs = Mat {
                            ptr: b32.as_ptr(),
                            rs: brs as isize,
                            cs: bcs as isize,
                        };
                        // SAFETY: as above.
                        unsafe { gemm_rm(m, n, k, &mut c32, false, lhs, rhs, threads) };
                        for (got, w) in c32.iter().zip(&want) {
                            assert!(
                                (*got as f64 - w).abs() < 1e-4 * (k as f64).sqrt(),
                                "{backend:?} f32 {m}x{n}x{k}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Both backends against a naive product: every transpose combination, odd sizes, split over
    /// 1-3 threads, overwrite and accumulate; and a repeated product equal bit for bit, for each
    /// thread count. One test so that the process-wide switch is not raced by another test.
    #[test]
    fn products_match_naive_sum_and_repeat_exactly() {
        for backend in [GemmBackend::GemmCrate, GemmBackend::OpenBlas] {
            check(backend);
            repeats_exactly();
        }
        set_gemm_backend(GemmBackend::OpenBlas);
    }

    /// Concurrent callers, as the fast convolution's rayon workers are: four threads each
    /// multiplying small matrices (the size at which the serial OpenBLAS's unlocked buffers were
    /// seen to clash) must all get the single-threaded product, bit for bit, from whichever
    /// backend the process picked; and a serial OpenBLAS must never be the one picked.
    #[test]
    fn concurrent_callers_get_exact_products() {
        if cfg!(spectral_openblas) && !openblas_is_thread_safe() {
            assert_eq!(gemm_backend(), GemmBackend::GemmCrate);
        }
        let n = 40;
        let a: Vec<f64> = (0..n * n).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..n * n).map(|i| (i as f64 * 0.71).cos()).collect();
        let want = matmul(&a, &b, n, n, n, 1);
        let bad: usize = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..5000)
                            .filter(|_| matmul(&a, &b, n, n, n, 1) != want)
                            .count()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(
            bad,
            0,
            "{:?}: {bad} of 20000 concurrent products differ",
            gemm_backend()
        );
    }

    fn repeats_exactly() {
        let (m, n, k) = (64, 2000, 300);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 1000) as f32 / 997.0 - 0.5)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 104729) % 1000) as f32 / 991.0 - 0.5)
            .collect();
        let run = |threads| {
            let mut c = vec![0f32; m * n];
            let lhs = Mat {
                ptr: a.as_ptr(),
                rs: k as isize,
                cs: 1,
            };
            let rhs = Mat {
                ptr: b.as_ptr(),
                rs: n as isize,
                cs: 1,
            };
            // SAFETY: the views cover the buffers.
            unsafe { gemm_rm(m, n, k, &mut c, false, lhs, rhs, threads) };
            c
        };
        for t in [1, 2, 3] {
            let (a, b) = (run(t), run(t));
            assert!(a == b, "{:?}: {t} threads: two runs differ", gemm_backend());
        }
    }
}
