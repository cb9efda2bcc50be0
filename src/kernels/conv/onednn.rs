//! f32 convolutions through oneDNN (`onednn.c`), when the build found it (cargo feature
//! `onednn`, default): oneDNN 3.2 from PyPI (`scripts/fetch-onednn.sh`, preferred) or the
//! system's (Debian/Ubuntu: `libdnnl-dev`, 2.6), opened at run time.
//!
//! Why: on AVX-512 machines PyTorch's convolutions (oneDNN's JIT kernels) ran ResNet's layers
//! up to twice as fast as im2col + an OpenBLAS product (docs/performance.md, stops 12-13). On by
//! default for every f32 pass where the library loads, switchable per pass ([`enabled`]); the
//! GEMM kernels remain the path for f64 (oneDNN has none; the finite-difference tests run in
//! f64), for `SPECTRAL_ONEDNN_PASSES=none` and for builds or machines without oneDNN.
//!
//! Threads: the batch is shared out over candle's rayon pool (`RAYON_NUM_THREADS`), one
//! single-threaded oneDNN call per thread (see [`conv`] for why not oneDNN's own OpenMP team),
//! except the weight gradients of layers whose weights outweigh a thread's share of the batch
//! ([`team`]). Layouts: activations whose channels fill whole blocks travel in nChw16c (AVX-512)
//! or nChw8c (AVX2) for the forward and input-gradient passes, oneDNN's own choice otherwise
//! (`SPECTRAL_ONEDNN_LAYOUT=blocked|any|all`, see `onednn.c`).

use super::cpu::{Geom, Pass};

#[cfg(spectral_onednn)]
mod ffi {
    use std::os::raw::{c_char, c_int};
    extern "C" {
        pub fn spectral_onednn_conv(
            kind: c_int,
            threads: c_int,
            g: *const i64,
            a: *const f32,
            b: *const f32,
            b_ready: c_int,
            out: *mut f32,
            what: *mut *const c_char,
        ) -> c_int;
        pub fn spectral_onednn_weights(
            kind: c_int,
            threads: c_int,
            g: *const i64,
            w: *const f32,
            blocked: *mut *mut f32,
            what: *mut *const c_char,
        ) -> c_int;
        pub fn spectral_onednn_free(p: *mut f32);
        pub fn spectral_onednn_impl(kind: c_int, g: *const i64) -> *const c_char;
        pub fn spectral_onednn_available(note: *mut *const c_char) -> c_int;
        pub fn spectral_onednn_block() -> c_int;
    }
}

/// Whether this build was compiled against a oneDNN header (the library is opened at run time).
pub fn compiled() -> bool {
    cfg!(spectral_onednn)
}

/// The oneDNN library this process runs: `Ok(path or soname)` when it opened and its CPU engine
/// started, else `Err(why)` (not in the build, library missing, wrong version). Tried once.
pub fn library() -> Result<&'static str, &'static str> {
    static LOADED: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    let r = LOADED.get_or_init(|| {
        #[cfg(spectral_onednn)]
        {
            let mut note: *const std::os::raw::c_char = std::ptr::null();
            // SAFETY: sets `note` to a static or dlerror string, copied at once.
            let ok = unsafe { ffi::spectral_onednn_available(&mut note) } != 0;
            // SAFETY: NULL or NUL-terminated, see above.
            let note = unsafe { c_text(note) };
            if ok {
                Ok(note)
            } else {
                Err(format!("oneDNN did not load: {note}"))
            }
        }
        #[cfg(not(spectral_onednn))]
        {
            Err(
                "this build has no oneDNN (scripts/fetch-onednn.sh or libdnnl-dev, then rebuild)"
                    .to_string(),
            )
        }
    });
    r.as_deref().map_err(|e| e.as_str())
}

/// Whether oneDNN can run here: in the build and loaded ([`library`]).
pub fn available() -> bool {
    library().is_ok()
}

/// Whether this f32 pass goes to oneDNN: loaded ([`available`]) and named in env
/// `SPECTRAL_ONEDNN_PASSES` (comma-separated `fwd`, `dx`, `dw`; `none` for the GEMM kernels
/// throughout); unset: all three. Read once.
///
/// All three by default since stop 13: with oneDNN 3.2 (scripts/fetch-onednn.sh) on an AVX-512
/// machine every workload ran faster than with the GEMM kernels, and with one malloc arena
/// ([`crate::kernels::tune_allocator`]) the peak memory of a ResNet-50 224 px input-gradient
/// pass stayed below PyTorch's (2184 vs 2345 MiB). In stop 12, with Debian's oneDNN 2.6 and a
/// malloc arena per thread, its layout copies had raised that peak above PyTorch's, so it was
/// opt-in then (docs/performance.md, stops 12 and 13).
pub(crate) fn enabled(pass: Pass) -> bool {
    static ON: std::sync::OnceLock<[bool; 3]> = std::sync::OnceLock::new();
    let on = ON.get_or_init(|| {
        if !available() {
            return [false; 3];
        }
        let list = std::env::var("SPECTRAL_ONEDNN_PASSES").unwrap_or_else(|_| "fwd,dx,dw".into());
        let has = |p: &str| list.split(',').any(|v| v.trim() == p);
        [has("fwd"), has("dx"), has("dw")]
    });
    on[pass as usize]
}

/// The channel block of oneDNN's direct convolutions on this CPU (16 with AVX-512, 8 with AVX2),
/// when all three f32 passes go to oneDNN ([`enabled`]); else `None`. The model keeps its
/// activations in that layout between convolutions ([`crate::kernels::layout::blocked_lanes`]).
pub(crate) fn block() -> Option<usize> {
    static BLOCK: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *BLOCK.get_or_init(|| {
        if ![Pass::Forward, Pass::GradInput, Pass::GradWeight]
            .into_iter()
            .all(enabled)
        {
            return None;
        }
        #[cfg(spectral_onednn)]
        {
            // SAFETY: no arguments; starts the engine once (it is up: `enabled` said so).
            let b = unsafe { ffi::spectral_onednn_block() };
            matches!(b, 8 | 16).then_some(b as usize)
        }
        #[cfg(not(spectral_onednn))]
        {
            None
        }
    })
}

/// The passes [`enabled`] sends to oneDNN in this process, by name (`fwd`, `dx`, `dw`).
pub fn passes_in_use() -> Vec<&'static str> {
    [
        (Pass::Forward, "fwd"),
        (Pass::GradInput, "dx"),
        (Pass::GradWeight, "dw"),
    ]
    .into_iter()
    .filter(|(p, _)| enabled(*p))
    .map(|(_, name)| name)
    .collect()
}

fn dims(g: &Geom) -> [i64; 13] {
    [
        g.n,
        g.c_in,
        g.h,
        g.w,
        g.c_out,
        g.kh,
        g.kw,
        g.stride,
        g.pad,
        g.ho,
        g.wo,
        g.lanes_in,
        g.lanes_out,
    ]
    .map(|v| v as i64)
}

/// A string from onednn.c, copied; empty for NULL.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that lives through the call.
#[cfg(spectral_onednn)]
unsafe fn c_text(p: *const std::os::raw::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the caller's promise.
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned()
}

/// A oneDNN status as an error naming the step and the geometry.
#[cfg(spectral_onednn)]
fn failed(status: i32, what: *const std::os::raw::c_char, g: &Geom) -> candle_core::Error {
    // SAFETY: onednn.c sets `what` to a static string.
    let step = unsafe { c_text(what) };
    candle_core::Error::Msg(format!(
        "oneDNN conv2d failed at '{step}' (dnnl_status {status}) for {g:?}"
    ))
}

/// Weights reordered once into the layout a pass wants (freed on drop), for every run to share.
#[cfg(spectral_onednn)]
struct Blocked(*mut f32);

// SAFETY: written once before the runs start and only read by them; freed after they end.
#[cfg(spectral_onednn)]
unsafe impl Sync for Blocked {}

#[cfg(spectral_onednn)]
impl Drop for Blocked {
    fn drop(&mut self) {
        // SAFETY: allocated by onednn.c for this value alone.
        unsafe { ffi::spectral_onednn_free(self.0) }
    }
}

/// The weights of a forward or input-gradient pass of the runs' geometry `g`, reordered with
/// `threads` threads; `None` when the plain layout is the one oneDNN wants.
#[cfg(spectral_onednn)]
fn blocked_weights(
    kind: i32,
    threads: usize,
    g: &Geom,
    w: &[f32],
) -> candle_core::Result<Option<Blocked>> {
    let d = dims(g);
    let mut what: *const std::os::raw::c_char = std::ptr::null();
    let mut out: *mut f32 = std::ptr::null_mut();
    // SAFETY: `w` holds the C_out·C_in·kH·kW weights `g` implies (checked by the caller); on
    // success `out` is NULL or a buffer this process now owns.
    let status = unsafe {
        ffi::spectral_onednn_weights(
            kind,
            threads as i32,
            d.as_ptr(),
            w.as_ptr(),
            &mut out,
            &mut what,
        )
    };
    if status != 0 {
        return Err(failed(status, what, g));
    }
    Ok((!out.is_null()).then_some(Blocked(out)))
}

/// Whether this pass runs as one oneDNN call on an OpenMP team of `threads` instead of one
/// call per thread on a share of the batch. By default (`SPECTRAL_ONEDNN_TEAM=auto`) only the
/// weight gradients of layers whose weights (at least 64 Ki elements) outnumber the input
/// elements of a thread's share: there each share's partial gradient, written in oneDNN's
/// layout, reordered back and summed, cost more than the convolution (ResNet-18's deep layers at
/// 64 px: model/r18_64/train 117-153 -> 140-182 img/s, alternating runs, docs/performance.md stop
/// 14). Small layers stay on the rayon workers: an OpenMP team woken between rayon's ops shared
/// the two cores with rayon's spinning workers (s4_32/train 1281 -> 794 img/s when all weight
/// gradients took a team). `none`: never; `all`: every pass (for comparison).
#[cfg(spectral_onednn)]
fn team(pass: Pass, g: &Geom, threads: usize) -> bool {
    static MODE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let mode = MODE
        .get_or_init(|| std::env::var("SPECTRAL_ONEDNN_TEAM").unwrap_or_else(|_| "auto".into()));
    let w_len = g.c_out * g.k();
    match mode.as_str() {
        "all" => true,
        "none" => false,
        _ => {
            pass == Pass::GradWeight
                && w_len >= 1 << 16
                && w_len > g.n.div_ceil(threads) * g.in_len()
        }
    }
}

/// One oneDNN call on `threads` threads (1: no OpenMP team), into `out` (all of it written on success); `b_ready`: `b` is
/// already in the wanted layout ([`blocked_weights`]).
#[cfg(spectral_onednn)]
fn call(
    kind: i32,
    threads: i32,
    g: &Geom,
    a: &[f32],
    b: *const f32,
    b_ready: bool,
    out: &mut [f32],
) -> candle_core::Result<()> {
    let d = dims(g);
    let mut what: *const std::os::raw::c_char = std::ptr::null();
    // SAFETY: the caller passes buffers of the lengths the geometry implies (or, with
    // `b_ready`, the blocked weights made for this geometry); the call writes all of `out` or
    // fails; `what` is set to a static string.
    let status = unsafe {
        ffi::spectral_onednn_conv(
            kind,
            threads,
            d.as_ptr(),
            a.as_ptr(),
            b,
            b_ready as i32,
            out.as_mut_ptr(),
            &mut what,
        )
    };
    if status != 0 {
        return Err(failed(status, what, g));
    }
    Ok(())
}

/// One pass on plain NCHW/OIHW buffers (see [`Pass`] for the operands); the output is
/// (N, C_out, H_out, W_out), (N, C_in, H, W) or (C_out, C_in, kH, kW).
#[cfg_attr(not(spectral_onednn), allow(unused_variables))]
pub(crate) fn conv(pass: Pass, g: &Geom, a: &[f32], b: &[f32]) -> candle_core::Result<Vec<f32>> {
    let (x_len, y_len, w_len) = (g.n * g.in_len(), g.n * g.out_len(), g.c_out * g.k());
    let (kind, a_len, b_len, out_len) = match pass {
        Pass::Forward => (0, x_len, w_len, y_len),
        Pass::GradInput => (1, y_len, w_len, x_len),
        Pass::GradWeight => (2, x_len, y_len, w_len),
    };
    if a.len() != a_len || b.len() != b_len {
        candle_core::bail!(
            "oneDNN conv2d {pass:?}: operands of {} and {} elements, expected {a_len} and {b_len} ({g:?})",
            a.len(),
            b.len()
        );
    }
    #[cfg(spectral_onednn)]
    {
        use rayon::prelude::*;
        if let Err(why) = library() {
            candle_core::bail!("oneDNN conv2d: {why}");
        }
        if g.n == 0 {
            return Ok(vec![0.0; out_len]);
        }
        // The batch is cut into one run of images per thread, each a one-thread oneDNN call on
        // a rayon worker, instead of one call on an OpenMP team: with one thread OpenMP starts
        // no team, so no OpenMP workers are left spinning after the call (libgomp spins for a
        // while by default and reads its settings only at load time) while candle's and
        // rayon's workers run the BatchNorm and ReLU passes between convolutions.
        let threads = candle_core::utils::get_num_threads().clamp(1, g.n);
        if team(pass, g, threads) {
            let mut out = vec![0f32; out_len];
            call(kind, threads as i32, g, a, b.as_ptr(), false, &mut out)?;
            return Ok(out);
        }
        let runs: Vec<(usize, usize)> = (0..threads)
            .map(|t| {
                (
                    t * g.n / threads,
                    (t + 1) * g.n / threads - t * g.n / threads,
                )
            })
            .filter(|r| r.1 > 0)
            .collect();
        // per-image lengths of the batched operands (0: not batched, the weights)
        let (a_img, b_img, out_img) = match pass {
            Pass::Forward => (g.in_len(), 0, g.out_len()),
            Pass::GradInput => (g.out_len(), 0, g.in_len()),
            Pass::GradWeight => (g.in_len(), g.out_len(), 0),
        };
        // Runs of one size share one copy of the weights in oneDNN's layout, made here with all
        // the threads; runs of two sizes (a batch the threads do not divide) reorder their own.
        let shared = if pass != Pass::GradWeight
            && runs.len() > 1
            && runs.iter().all(|r| r.1 == runs[0].1)
        {
            blocked_weights(kind, runs.len(), &Geom { n: runs[0].1, ..*g }, b)?
        } else {
            None
        };
        let one = |first: usize, count: usize, out: &mut [f32]| -> candle_core::Result<()> {
            let sub = Geom { n: count, ..*g };
            let a = &a[first * a_img..(first + count) * a_img];
            match &shared {
                Some(w) => call(kind, 1, &sub, a, w.0, true, out),
                None if b_img > 0 => {
                    let b = &b[first * b_img..(first + count) * b_img];
                    call(kind, 1, &sub, a, b.as_ptr(), false, out)
                }
                None => call(kind, 1, &sub, a, b.as_ptr(), false, out),
            }
        };
        let mut out: Vec<f32> = Vec::with_capacity(out_len);
        if pass == Pass::GradWeight {
            let mut parts: Vec<Vec<f32>> = runs
                .par_iter()
                .map(|&(first, count)| {
                    let mut part = vec![0f32; w_len];
                    one(first, count, &mut part).map(|_| part)
                })
                .collect::<candle_core::Result<_>>()?;
            out = parts.swap_remove(0);
            for part in parts {
                for (o, p) in out.iter_mut().zip(part) {
                    *o += p;
                }
            }
        } else {
            // SAFETY: each run's call writes its whole slice or fails (and then `out` is dropped).
            unsafe { out.set_len(out_len) };
            let mut pieces = Vec::with_capacity(runs.len());
            let mut rest = &mut out[..];
            for &(_, count) in &runs {
                let (head, tail) = rest.split_at_mut(count * out_img);
                pieces.push(head);
                rest = tail;
            }
            pieces
                .into_par_iter()
                .zip(runs.par_iter())
                .try_for_each(|(piece, &(first, count))| one(first, count, piece))?;
        }
        Ok(out)
    }
    #[cfg(not(spectral_onednn))]
    {
        let _ = (kind, out_len);
        candle_core::bail!(
            "oneDNN conv2d: this build has no oneDNN (install libdnnl-dev and rebuild)"
        )
    }
}

/// The oneDNN implementation a pass of this geometry runs on this machine, with oneDNN's version
/// in front (e.g. `3.2.0 brgconv:avx512_core`), for benchmark records and tests; `None` without
/// oneDNN. `x` is (N, C_in, H, W), `k` is (C_out, C_in, kH, kW).
pub fn implementation(
    pass: Pass,
    x: (usize, usize, usize, usize),
    k: (usize, usize, usize, usize),
    stride: usize,
    pad: usize,
) -> Option<String> {
    implementation_in(pass, x, k, stride, pad, (1, 1))
}

/// [`implementation`] with the activations in `lanes` = (input, output) layouts: 1 = NCHW,
/// 8 / 16 = blocked ([`crate::kernels::layout`]).
pub fn implementation_in(
    pass: Pass,
    x: (usize, usize, usize, usize),
    k: (usize, usize, usize, usize),
    stride: usize,
    pad: usize,
    (lanes_in, lanes_out): (usize, usize),
) -> Option<String> {
    let g = Geom {
        lanes_in,
        lanes_out,
        ..Geom::new(x, k, stride, pad)?
    };
    #[cfg(spectral_onednn)]
    {
        library().ok()?;
        let d = dims(&g);
        // SAFETY: returns NULL or this thread's NUL-terminated buffer.
        let p = unsafe { ffi::spectral_onednn_impl(pass as i32, d.as_ptr()) };
        if p.is_null() {
            return None;
        }
        // SAFETY: as above.
        Some(unsafe { c_text(p) })
    }
    #[cfg(not(spectral_onednn))]
    {
        let _ = (pass, dims(&g));
        None
    }
}

/// For tests: whether oneDNN loaded. Without it, `false` (nothing to compare), unless env
/// `SPECTRAL_REQUIRE_ONEDNN` is set (scripts/test.sh sets it), which makes a missing library a
/// failure, so that CI cannot pass the oneDNN tests by not having the library.
#[cfg(test)]
pub(crate) fn loaded_for_test() -> bool {
    match library() {
        Ok(_) => true,
        Err(why) => {
            assert!(
                std::env::var_os("SPECTRAL_REQUIRE_ONEDNN").is_none(),
                "SPECTRAL_REQUIRE_ONEDNN is set but {why}"
            );
            eprintln!("{why}: nothing to compare");
            false
        }
    }
}

#[cfg(all(test, spectral_onednn))]
mod tests {
    use super::*;

    /// No pass of the ResNets' layer shapes runs oneDNN's reference implementation (a naive loop)
    /// on a machine with AVX2. Stop 14's blocked activations had sent the stem's input gradient
    /// there on AVX2 (3 input channels, output gradient in nChw8c: "ref:any", ~1000x slower
    /// than oneDNN's own layout); plan_make now falls back to oneDNN's layouts in that case.
    #[test]
    fn resnet_layers_never_run_the_reference_implementation() {
        if !loaded_for_test() {
            return;
        }
        // scoped to AVX2 and up (where the hole was seen); elsewhere no blocked layout is asked for
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::arch::is_x86_feature_detected!("avx2");
        #[cfg(not(target_arch = "x86_64"))]
        let avx2 = false;
        if !avx2 {
            return;
        }
        for (x, k, stride, pad) in [
            ((8, 3, 64, 64), (64, 3, 7, 7), 2, 3), // torchvision stem, 64 px
            ((8, 3, 224, 224), (64, 3, 7, 7), 2, 3), // torchvision stem, 224 px
            ((8, 1, 224, 224), (64, 1, 7, 7), 2, 3), // greyscale stem
            ((8, 1, 32, 32), (4, 1, 3, 3), 1, 1),  // the embedded study's small-input stem
            ((8, 4, 32, 32), (8, 4, 3, 3), 2, 1),  // its stage entry: 4 (plain) -> 8 channels
            ((8, 4, 32, 32), (8, 4, 1, 1), 2, 0),  // that stage's downsample
            ((8, 64, 16, 16), (64, 64, 3, 3), 1, 1), // basic block
            ((8, 64, 16, 16), (128, 64, 3, 3), 2, 1), // stage entry
            ((8, 64, 16, 16), (128, 64, 1, 1), 2, 0), // downsample
            ((8, 256, 14, 14), (64, 256, 1, 1), 1, 0), // bottleneck
            ((8, 512, 2, 2), (512, 512, 3, 3), 1, 1), // deepest 3x3 at 64 px
        ] {
            // NCHW, and the model's blocked activations where the channels fill the blocks
            let lanes_of = |c| crate::kernels::layout::lanes_for(c, block().unwrap_or(1));
            for lanes in [(1, 1), (lanes_of(x.1), lanes_of(k.0))] {
                for pass in [Pass::Forward, Pass::GradInput, Pass::GradWeight] {
                    let imp =
                        implementation_in(pass, x, k, stride, pad, lanes).expect("a oneDNN plan");
                    let name = imp.split_once(' ').map_or(imp.as_str(), |(_, n)| n);
                    assert!(
                        !name.starts_with("ref"),
                        "{pass:?} of x {x:?}, w {k:?}, stride {stride}, pad {pad}, lanes \
                         {lanes:?}: {imp}"
                    );
                }
            }
        }
    }

    /// Weights reordered once and shared ([`blocked_weights`]) give the same bits as each call
    /// reordering its own copy: forward and input gradient, a 3x3, a strided 7x7 stem with 3
    /// input channels (padded to oneDNN's block) and a strided 1x1.
    #[test]
    fn shared_weights_match_own_copies() {
        if !loaded_for_test() {
            return;
        }
        let value = |i: usize| ((i * 7919) % 201) as f32 / 100.0 - 1.0;
        for (x, k, stride, pad) in [
            ((3, 64, 9, 8), (32, 64, 3, 3), 1, 1),
            ((2, 3, 21, 19), (64, 3, 7, 7), 2, 3),
            ((3, 40, 9, 9), (24, 40, 1, 1), 2, 0),
        ] {
            let g = Geom::new(x, k, stride, pad).unwrap();
            let w: Vec<f32> = (0..g.c_out * g.k()).map(value).collect();
            for (kind, a_len, out_len) in [
                (0, g.n * g.in_len(), g.n * g.out_len()),
                (1, g.n * g.out_len(), g.n * g.in_len()),
            ] {
                let a: Vec<f32> = (0..a_len).map(|i| value(i + 13)).collect();
                let mut own = vec![0f32; out_len];
                call(kind, 1, &g, &a, w.as_ptr(), false, &mut own).unwrap();
                let shared = blocked_weights(kind, 2, &g, &w).unwrap();
                let mut with_shared = vec![1f32; out_len];
                let b = shared.as_ref().map_or(w.as_ptr(), |s| s.0 as *const f32);
                call(kind, 1, &g, &a, b, shared.is_some(), &mut with_shared).unwrap();
                assert_eq!(own, with_shared, "kind {kind}, {g:?}");
            }
        }
    }
}
