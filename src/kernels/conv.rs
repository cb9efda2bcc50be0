//! 2-D convolution: stock candle, or the fast CPU path (issue 5).
//!
//! Every model convolution goes through [`conv2d`]. On a CPU device with f32/f64 tensors and the
//! fast path on ([`set_fast_cpu`], env `SPECTRAL_FAST_CONV=0|1`, default on), it runs one candle
//! `CustomOp2` (forward, input gradient and weight gradient): for f32, oneDNN where it loads
//! ([`onednn`]; `SPECTRAL_ONEDNN_PASSES` picks the passes, all by default), else and for f64 the
//! GEMM kernels of `cpu`; otherwise (CUDA, other dtypes, or the switch off) candle's own
//! `conv2d`. All give the same results up to float rounding order (tested below against stock
//! candle and finite differences).

mod cpu;
pub mod onednn;

pub use cpu::Pass;
pub(crate) use cpu::{act_dims, act_shape};

/// (N, C, H, W) and the lanes of an activation (NCHW or blocked, [`super::layout`]), or the
/// crate's shape error naming `what` (e.g. "pooling input").
pub(crate) fn activation_dims(
    x: &Tensor,
    what: &str,
) -> Result<((usize, usize, usize, usize), usize)> {
    act_dims(x.shape()).map_err(|_| Error::Shape {
        what: what.into(),
        expected: "(N, C, H, W) or blocked (N, C/L, H, W, L), L = 8 or 16".into(),
        got: format!("{:?}", x.dims()),
    })
}

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// 0 = not decided yet (read the environment), 1 = off, 2 = on.
static FAST_CPU: AtomicU8 = AtomicU8::new(0);

thread_local! {
    static WEIGHT_GRADS: Cell<bool> = const { Cell::new(true) };
}

/// Turns the fast CPU convolution on or off for the whole process (overrides
/// `SPECTRAL_FAST_CONV`). Off means stock candle everywhere, to compare results and speed.
pub fn set_fast_cpu(on: bool) {
    FAST_CPU.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// Whether the fast CPU convolution is on: [`set_fast_cpu`] if called, else the environment
/// variable `SPECTRAL_FAST_CONV` (`0`, `false` or `off` switch it off), else on.
pub fn fast_cpu() -> bool {
    match FAST_CPU.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let on = !super::env_says_off("SPECTRAL_FAST_CONV");
            set_fast_cpu(on);
            on
        }
    }
}

/// Runs `f` with the weight gradients of fast convolutions skipped on this thread: for
/// input-gradient passes, where candle would otherwise compute (and throw away) a weight gradient
/// for every layer. Gradients w.r.t. tracked inputs are unaffected; with the stock path (CUDA or
/// switch off) nothing is skipped, so results are the same either way.
pub fn without_weight_grads<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            WEIGHT_GRADS.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(WEIGHT_GRADS.with(|c| c.replace(false)));
    f()
}

pub(crate) fn weight_grads_enabled() -> bool {
    WEIGHT_GRADS.with(|c| c.get())
}

/// 2-D convolution, NCHW input `x` (N, C_in, H, W) and OIHW kernel `w` (C_out, C_in, kH, kW),
/// symmetric zero padding, no dilation, no groups. Output (N, C_out, H_out, W_out) with
/// H_out = (H + 2·padding − kH) / stride + 1. Differentiable in `x` and `w`.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let (xd, wd) = (x.dims(), w.dims());
    if xd.len() != 4 || wd.len() != 4 {
        return Err(Error::Shape {
            what: "conv2d operands".into(),
            expected: "input (N, C, H, W) and kernel (C_out, C_in, kH, kW)".into(),
            got: format!("{xd:?} and {wd:?}"),
        });
    }
    if stride == 0 {
        return Err(Error::param("stride", stride, "must be at least 1"));
    }
    let dims4 = |d: &[usize]| (d[0], d[1], d[2], d[3]);
    let Some(_) = cpu::Geom::new(dims4(xd), dims4(wd), stride, padding) else {
        return Err(Error::Shape {
            what: "conv2d".into(),
            expected: format!(
                "kernel channels = input channels ({}), kernel no larger than the padded input",
                xd[1]
            ),
            got: format!("input {xd:?}, kernel {wd:?}, padding {padding}"),
        });
    };
    let dtype_ok = matches!(x.dtype(), DType::F32 | DType::F64) && x.dtype() == w.dtype();
    if fast_cpu() && x.device().is_cpu() && w.device().is_cpu() && dtype_ok {
        conv2d_fast(x, w, stride, padding)
    } else {
        Ok(x.conv2d(w, padding, stride, 1, 1)?)
    }
}

/// Stock candle convolution, whatever the switch says (for comparisons and tests).
pub fn conv2d_stock(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    Ok(x.conv2d(w, padding, stride, 1, 1)?)
}

/// The fast CPU convolution, whatever the switch says; f32/f64 CPU tensors only. The first call
/// raises glibc's malloc thresholds ([`super::tune_allocator`]) and shortens candle's pool spin
/// ([`super::tune_thread_pools`]).
pub fn conv2d_fast(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    apply_fast(x, w, stride, padding, 1)
}

/// The fast op, output in `lanes_out` (the allocator and pool tuning first, as documented above).
fn apply_fast(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    lanes_out: usize,
) -> Result<Tensor> {
    super::tune_allocator();
    super::tune_thread_pools();
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    Ok(x.apply_op2(
        &w,
        cpu::Conv2dOp {
            stride,
            pad: padding,
            lanes_out,
        },
    )?)
}

/// The fast convolution on blocked activations ([`super::layout`]): `x` is (N, C_in, H, W) or
/// (N, C_in / L, H, W, L), the output (N, C_out / `lanes_out`, H_out, W_out, `lanes_out`), or
/// (N, C_out, H_out, W_out) for `lanes_out` 1. f32 on CPU with oneDNN for all three passes
/// ([`super::layout::blocked_lanes`] says when); differentiable in `x` and `w` like [`conv2d`],
/// the gradients in the operands' own layouts.
pub fn conv2d_blocked(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    lanes_out: usize,
) -> Result<Tensor> {
    let wd = w.dims();
    if wd.len() != 4 || !matches!(lanes_out, 1 | 8 | 16) || wd[0] % lanes_out != 0 {
        return Err(Error::Shape {
            what: "blocked conv2d kernel".into(),
            expected: format!(
                "(C_out, C_in, kH, kW) with C_out a multiple of {lanes_out} (1, 8 or 16)"
            ),
            got: format!("{wd:?}"),
        });
    }
    if x.dtype() != DType::F32 || w.dtype() != DType::F32 || !x.device().is_cpu() {
        return Err(Error::Other(format!(
            "blocked conv2d: f32 CPU tensors only, got {:?} on {:?}",
            x.dtype(),
            x.device()
        )));
    }
    if stride == 0 {
        return Err(Error::param("stride", stride, "must be at least 1"));
    }
    apply_fast(x, w, stride, padding, lanes_out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(rng: &mut ChaCha8Rng, shape: &[usize], dtype: DType) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        let a = a
            .to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let b = b
            .to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    fn max_abs(a: &Tensor) -> f64 {
        a.to_dtype(DType::F64)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    /// Stock candle conv on the explicitly zero-padded input cropped to the rows and columns the
    /// kernel reaches. Same values as `conv2d_stock`, but its backward also works where candle's
    /// own does not: with stride > 1 and (H + 2p - kH) not a multiple of the stride, candle's
    /// conv2d backward builds a transposed convolution one row/column short and fails.
    fn stock_reference(x: &Tensor, w: &Tensor, stride: usize, pad: usize) -> Tensor {
        let (_, _, h, wd) = x.dims4().unwrap();
        let (_, _, kh, kw) = w.dims4().unwrap();
        let xp = x
            .pad_with_zeros(2, pad, pad)
            .unwrap()
            .pad_with_zeros(3, pad, pad)
            .unwrap();
        let used_h = (h + 2 * pad - kh) / stride * stride + kh;
        let used_w = (wd + 2 * pad - kw) / stride * stride + kw;
        let xp = xp
            .narrow(2, 0, used_h)
            .unwrap()
            .narrow(3, 0, used_w)
            .unwrap();
        conv2d_stock(&xp, w, stride, 0).unwrap()
    }

    /// Forward, dx and dw of the fast op against stock candle (via candle's backprop), with a
    /// random upstream gradient so that every output element matters.
    #[allow(clippy::too_many_arguments)] // one argument per shape parameter of the case
    fn check_against_stock(
        rng: &mut ChaCha8Rng,
        n: usize,
        c_in: usize,
        c_out: usize,
        h: usize,
        w: usize,
        k: usize,
        stride: usize,
        pad: usize,
        dtype: DType,
    ) {
        let x = Var::from_tensor(&random(rng, &[n, c_in, h, w], dtype)).unwrap();
        let wt = Var::from_tensor(&random(rng, &[c_out, c_in, k, k], dtype)).unwrap();
        let y_stock = stock_reference(x.as_tensor(), wt.as_tensor(), stride, pad);
        let y_plain = conv2d_stock(x.as_tensor(), wt.as_tensor(), stride, pad).unwrap();
        assert!(max_abs_diff(&y_stock, &y_plain) <= 1e-5 * (1.0 + max_abs(&y_plain)));
        let y_fast = conv2d_fast(x.as_tensor(), wt.as_tensor(), stride, pad).unwrap();
        assert_eq!(y_stock.dims(), y_fast.dims());
        let up = random(rng, y_stock.dims(), dtype);
        let g_stock = (&y_stock * &up)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g_fast = (&y_fast * &up)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let tol = if dtype == DType::F64 { 1e-10 } else { 1e-4 };
        let case =
            format!("n={n} c_in={c_in} c_out={c_out} {h}x{w} k={k} s={stride} p={pad} {dtype:?}");
        let scale = |t: &Tensor| tol * (1.0 + max_abs(t));
        let d = max_abs_diff(&y_stock, &y_fast);
        assert!(d <= scale(&y_stock), "forward differs by {d} ({case})");
        let (dx_s, dx_f) = (
            g_stock.get(x.as_tensor()).unwrap(),
            g_fast.get(x.as_tensor()).unwrap(),
        );
        let d = max_abs_diff(dx_s, dx_f);
        assert!(d <= scale(dx_s), "input gradient differs by {d} ({case})");
        let (dw_s, dw_f) = (
            g_stock.get(wt.as_tensor()).unwrap(),
            g_fast.get(wt.as_tensor()).unwrap(),
        );
        let d = max_abs_diff(dw_s, dw_f);
        assert!(d <= scale(dw_s), "weight gradient differs by {d} ({case})");
    }

    #[test]
    fn fast_matches_stock_on_grid() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for &k in &[1usize, 3, 7] {
            for &stride in &[1usize, 2] {
                for &pad in &[0usize, 1, 3] {
                    for &n in &[1usize, 3] {
                        let (h, w) = (
                            k + rng.random_range(0..6usize),
                            k + rng.random_range(1..7usize),
                        );
                        let (c_in, c_out) =
                            (rng.random_range(1..5usize), rng.random_range(1..6usize));
                        check_against_stock(
                            &mut rng,
                            n,
                            c_in,
                            c_out,
                            h,
                            w,
                            k,
                            stride,
                            pad,
                            DType::F32,
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn fast_matches_stock_f64_and_grouped_batches() {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        // Tiny spatial size and a larger batch: several images share one GEMM (grouped path).
        check_against_stock(&mut rng, 7, 6, 5, 3, 4, 3, 1, 1, DType::F64);
        check_against_stock(&mut rng, 5, 4, 6, 9, 7, 1, 2, 0, DType::F64);
        check_against_stock(&mut rng, 3, 3, 4, 11, 13, 7, 2, 3, DType::F64);
        check_against_stock(&mut rng, 9, 5, 3, 2, 2, 1, 1, 0, DType::F32);
        // Several groups of several images (and, with one thread, several groups per chunk,
        // which exercises the accumulating weight-gradient GEMM).
        check_against_stock(&mut rng, 6, 3, 4, 20, 20, 3, 1, 1, DType::F32);
        check_against_stock(&mut rng, 6, 4, 5, 20, 19, 1, 1, 0, DType::F64);
    }

    /// Finite differences on the f64 fast op: d/dε of L = Σ up ⊙ conv(x + ε e, w) at one
    /// element of x and of w, central difference, against the analytic gradient.
    #[test]
    fn fast_gradients_match_finite_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for &(k, stride, pad) in &[(3usize, 2usize, 1usize), (1, 1, 0), (7, 1, 3)] {
            let x0 = random(&mut rng, &[2, 3, 8, 9], DType::F64);
            let w0 = random(&mut rng, &[4, 3, k, k], DType::F64);
            let up = conv2d_fast(&x0, &w0, stride, pad).unwrap();
            let up = random(&mut rng, up.dims(), DType::F64);
            let loss = |x: &Tensor, w: &Tensor| -> f64 {
                (conv2d_fast(x, w, stride, pad).unwrap() * &up)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let xv = Var::from_tensor(&x0).unwrap();
            let wv = Var::from_tensor(&w0).unwrap();
            let grads = (conv2d_fast(xv.as_tensor(), wv.as_tensor(), stride, pad).unwrap() * &up)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let dx = grads
                .get(xv.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let dw = grads
                .get(wv.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let eps = 1e-5;
            let bump = |t: &Tensor, i: usize, e: f64| -> Tensor {
                let mut v = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
                v[i] += e;
                Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap()
            };
            for _ in 0..4 {
                let i = rng.random_range(0..x0.elem_count());
                let fd =
                    (loss(&bump(&x0, i, eps), &w0) - loss(&bump(&x0, i, -eps), &w0)) / (2.0 * eps);
                assert!(
                    (fd - dx[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                    "dx[{i}]: fd {fd} vs {} (k={k})",
                    dx[i]
                );
                let j = rng.random_range(0..w0.elem_count());
                let fd =
                    (loss(&x0, &bump(&w0, j, eps)) - loss(&x0, &bump(&w0, j, -eps))) / (2.0 * eps);
                assert!(
                    (fd - dw[j]).abs() < 1e-6 * (1.0 + fd.abs()),
                    "dw[{j}]: fd {fd} vs {} (k={k})",
                    dw[j]
                );
            }
        }
    }

    /// The f32 fast path against the f64 stock op (the reference the f32 kernels must approach).
    #[test]
    fn fast_f32_close_to_stock_f64() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let x = random(&mut rng, &[3, 5, 10, 9], DType::F64);
        let w = random(&mut rng, &[6, 5, 3, 3], DType::F64);
        let y64 = conv2d_stock(&x, &w, 2, 1).unwrap();
        let y32 = conv2d_fast(
            &x.to_dtype(DType::F32).unwrap(),
            &w.to_dtype(DType::F32).unwrap(),
            2,
            1,
        )
        .unwrap();
        assert!(max_abs_diff(&y64, &y32) < 1e-5 * (1.0 + max_abs(&y64)));
    }

    #[test]
    fn weight_grads_can_be_skipped_and_untracked_inputs_get_none() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let x = Var::from_tensor(&random(&mut rng, &[2, 3, 6, 6], DType::F32)).unwrap();
        let w = Var::from_tensor(&random(&mut rng, &[4, 3, 3, 3], DType::F32)).unwrap();
        let grads = without_weight_grads(|| {
            conv2d_fast(x.as_tensor(), w.as_tensor(), 1, 1)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        });
        assert!(grads.get(x.as_tensor()).is_some());
        assert!(grads.get(w.as_tensor()).is_none());
        assert!(weight_grads_enabled());
        // A plain (untracked) input gets no gradient, the weights still do.
        let grads = conv2d_fast(&x.as_tensor().detach(), w.as_tensor(), 1, 1)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(grads.get(w.as_tensor()).is_some());
    }

    #[test]
    fn bad_shapes_are_errors() {
        let x = Tensor::zeros((1, 3, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((2, 4, 3, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(conv2d(&x, &w, 1, 0).is_err());
        let w = Tensor::zeros((2, 3, 7, 7), DType::F32, &Device::Cpu).unwrap();
        assert!(conv2d(&x, &w, 1, 1).is_err());
        assert!(conv2d(&x, &w, 0, 3).is_err());
        assert!(conv2d(&x.flatten_all().unwrap(), &w, 1, 0).is_err());
    }

    /// Blocked activations ((N, C/L, H, W, L), L = 8 and 16, through oneDNN) against stock
    /// candle in f64: forward, dx and dw on the ResNets' kinds of layer (a 3-channel stem from
    /// NCHW into blocks, 3x3 at strides 1 and 2, 1x1 downsample and pointwise, blocks back to
    /// NCHW), odd sizes and batches the threads do not divide.
    #[test]
    fn blocked_layout_matches_stock() {
        use crate::kernels::layout::{to_blocked, to_plain};
        if !onednn::loaded_for_test() {
            return;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(31);
        // (n, c_in, c_out, h, w, k, stride, pad, input blocked, output blocked)
        let cases = [
            (3, 3, 16, 19, 17, 7, 2, 3, false, true),
            (4, 16, 32, 9, 10, 3, 1, 1, true, true),
            (3, 32, 16, 9, 11, 3, 2, 1, true, true),
            (2, 16, 32, 7, 8, 1, 2, 0, true, true),
            (3, 32, 16, 5, 5, 1, 1, 0, true, true),
            (2, 16, 5, 6, 7, 3, 1, 1, true, false),
        ];
        for lanes in [8usize, 16] {
            for &(n, c_in, c_out, h, w, k, stride, pad, bin, bout) in &cases {
                if (bout && c_out % lanes != 0) || (bin && c_in % lanes != 0) {
                    continue;
                }
                let case =
                    format!("L={lanes} n={n} {c_in}->{c_out} {h}x{w} k={k} s={stride} p={pad}");
                let x64 = random(&mut rng, &[n, c_in, h, w], DType::F64);
                let w64 = random(&mut rng, &[c_out, c_in, k, k], DType::F64);
                let (ho, wo) = (
                    (h + 2 * pad - k) / stride + 1,
                    (w + 2 * pad - k) / stride + 1,
                );
                let up64 = random(&mut rng, &[n, c_out, ho, wo], DType::F64);
                let (xa, wa) = (
                    Var::from_tensor(&x64).unwrap(),
                    Var::from_tensor(&w64).unwrap(),
                );
                let ya = stock_reference(xa.as_tensor(), wa.as_tensor(), stride, pad);
                let ga = (&ya * &up64)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let x32 = x64.to_dtype(DType::F32).unwrap();
                let xin = if bin {
                    to_blocked(&x32, lanes).unwrap()
                } else {
                    x32
                };
                let xb = Var::from_tensor(&xin).unwrap();
                let wb = Var::from_tensor(&w64.to_dtype(DType::F32).unwrap()).unwrap();
                let lo = if bout { lanes } else { 1 };
                let yb = conv2d_blocked(xb.as_tensor(), wb.as_tensor(), stride, pad, lo).unwrap();
                if bout {
                    assert_eq!(yb.dims(), [n, c_out / lanes, ho, wo, lanes], "{case}");
                }
                let yb = to_plain(&yb).unwrap();
                let up = up64.to_dtype(DType::F32).unwrap();
                let gb = (&yb * &up).unwrap().sum_all().unwrap().backward().unwrap();
                let dxb = to_plain(gb.get(xb.as_tensor()).unwrap()).unwrap();
                for (what, got, want) in [
                    ("y", &yb, &ya),
                    ("dx", &dxb, ga.get(xa.as_tensor()).unwrap()),
                    (
                        "dw",
                        gb.get(wb.as_tensor()).unwrap(),
                        ga.get(wa.as_tensor()).unwrap(),
                    ),
                ] {
                    let d = max_abs_diff(got, want) / max_abs(want).max(1e-3);
                    assert!(d < 1e-4, "{what} {case}: relative difference {d}");
                }
            }
        }
        // what the blocked path refuses: f64, channels not in whole blocks
        let x = Tensor::zeros((1, 16, 4, 4), DType::F64, &Device::Cpu).unwrap();
        let w = Tensor::zeros((16, 16, 3, 3), DType::F64, &Device::Cpu).unwrap();
        assert!(conv2d_blocked(&x, &w, 1, 1, 16).is_err());
        let x = x.to_dtype(DType::F32).unwrap();
        let w = Tensor::zeros((12, 16, 3, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(conv2d_blocked(&x, &w, 1, 1, 8).is_err());
    }
}
