//! BatchNorm over NCHW, optionally fused with the ReLU that follows it: stock candle-nn, or a
//! fast CPU path (issue 5).
//!
//! Why hand-written: candle-nn's `BatchNorm` is a chain of broadcast ops (sub, div, mul, add; in
//! training also a transpose + copy and two means). Its backward sums every broadcast gradient
//! back over (N, H, W) with candle's strided reduce, which the profile of the study's network
//! put at 31% of an input-gradient pass (docs/performance.md), and in eval mode it also computes
//! gradients for the running statistics. Here the forward is one per-channel affine pass
//! `y = max(0, x·s[c] + t[c])`, and the backward two passes: per-channel sums of the (masked)
//! upstream gradient, then dx. Parameters get gradients only when they are tracked and weight
//! gradients are wanted ([`super::without_weight_grads`] skips them, as for convolutions).
//!
//! Semantics are candle-nn's (and PyTorch's): training normalises with the batch mean and the
//! biased variance and moves the running statistics by `momentum` (running variance unbiased,
//! `M / (M - 1)` with M = N·H·W); evaluation uses the running statistics.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor, Var, WithDType};
use candle_nn::{BatchNorm, ModuleT};
use rayon::prelude::*;

use super::contiguous as slice_of;
use crate::error::{Error, Result};

/// Below this many elements the passes run on one thread (rayon's overhead would dominate).
const PAR_MIN: usize = 1 << 15;

/// Whether the fused BatchNorm may run (when [`super::fast_cpu`] is on too): env
/// `SPECTRAL_FAST_BN=0|false|off` keeps candle-nn's BatchNorm with the fast convolutions, to
/// measure the two apart. Read once.
pub(crate) fn fast_bn() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| !super::env_says_off("SPECTRAL_FAST_BN"))
}

/// BatchNorm of `x` (N, C, H, W) with `bn`'s parameters, then ReLU if `relu`; `train` selects
/// batch statistics (and updates `bn`'s running statistics) or the running ones. The fast CPU
/// path runs when [`super::fast_cpu`] is on (and `SPECTRAL_FAST_BN` is not `0`), on CPU f32/f64
/// tensors of rank 4 and an affine `bn`; otherwise candle-nn's `BatchNorm` followed by candle's
/// `relu`.
pub fn batch_norm(bn: &BatchNorm, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
    let fast = super::fast_cpu()
        && fast_bn()
        && x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && (x.rank() == 4 || x.rank() == 5)
        && bn.weight_and_bias().is_some();
    if fast {
        batch_norm_fast(bn, x, train, relu)
    } else {
        batch_norm_stock(bn, x, train, relu)
    }
}

/// The fast CPU path, whatever the switch says: CPU f32/f64 (N, C, H, W) input, affine `bn`.
pub fn batch_norm_fast(bn: &BatchNorm, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
    let ((n, c, h, w), _) = super::conv::activation_dims(x, "batch-norm input")?;
    let channels = bn.running_mean().dim(0)?;
    if c != channels {
        return Err(Error::Shape {
            what: "batch-norm input".into(),
            expected: format!("{channels} channels"),
            got: format!("{:?}", x.dims()),
        });
    }
    let Some((weight, bias)) = bn.weight_and_bias() else {
        return Err(Error::Other(
            "fast batch-norm needs an affine BatchNorm (weight and bias)".into(),
        ));
    };
    if x.rank() == 5 && x.dtype() != DType::F32 {
        return Err(Error::Other(format!(
            "fast batch-norm: blocked activations are f32 only, got {:?}",
            x.dtype()
        )));
    }
    let x = x.contiguous()?;
    let dtype = x.dtype();
    if train {
        let m = n * h * w;
        if m < 2 {
            return Err(Error::Shape {
                what: "batch-norm input in training".into(),
                expected: "more than one value per channel (N·H·W ≥ 2)".into(),
                got: format!("{:?}", x.dims()),
            });
        }
        let (mean, var) = channel_stats(&x)?;
        let eps = bn.eps();
        let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
        update_running(bn, &mean, &var, m)?;
        let mut stats = mean;
        stats.extend_from_slice(&invstd);
        let stats = Tensor::from_vec(stats, (2, c), x.device())?.to_dtype(dtype)?;
        let wb = Tensor::stack(&[weight, bias], 0)?.contiguous()?;
        Ok(x.apply_op3(&wb, &stats, BnOp { train: true, relu })?)
    } else {
        // s = weight / sqrt(running_var + eps), t = bias - running_mean · s: C-sized candle ops,
        // so the gradients of s and t flow on to the parameters through candle's autograd.
        let s = weight.broadcast_div(&(bn.running_var() + bn.eps())?.sqrt()?)?;
        let t = (bias - (bn.running_mean() * &s)?)?;
        let s = s.contiguous()?;
        let t = t.contiguous()?;
        Ok(x.apply_op3(&s, &t, BnOp { train: false, relu })?)
    }
}

/// candle-nn's BatchNorm (then candle's ReLU), whatever the switch says: the reference.
pub fn batch_norm_stock(bn: &BatchNorm, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
    let y = bn.forward_t(x, train)?;
    Ok(if relu { y.relu()? } else { y })
}

/// Per-channel mean and biased variance of contiguous (N, C, H, W) `x`, accumulated in f64.
fn channel_stats(x: &Tensor) -> Result<(Vec<f64>, Vec<f64>)> {
    let ((_, c, _, _), _) = super::conv::act_dims(x.shape())?;
    let st = tensor_f64s(&x.apply_op1_no_bwd(&StatsOp)?)?;
    let (mean, var) = st.split_at(c);
    Ok((mean.to_vec(), var.to_vec()))
}

/// `x.apply_op1_no_bwd(StatsOp)` -> (2, C) f64: [mean; biased variance] per channel (two-pass).
struct StatsOp;

fn stats_of<T: WithDType>(x: &[T], n: usize, c: usize, hw: usize) -> Vec<f64> {
    let m = (n * hw) as f64;
    let per = |ch: usize| {
        let planes = || (0..n).map(move |i| &x[(i * c + ch) * hw..(i * c + ch + 1) * hw]);
        let sum: f64 = planes().flatten().map(|v| v.to_f64()).sum();
        let mean = sum / m;
        let ss: f64 = planes()
            .flatten()
            .map(|v| {
                let d = v.to_f64() - mean;
                d * d
            })
            .sum();
        (mean, ss / m)
    };
    let r = par_map(c, n * c * hw, per);
    let mut out: Vec<f64> = r.iter().map(|v| v.0).collect();
    out.extend(r.iter().map(|v| v.1));
    out
}

/// [`stats_of`] over blocked activations, (N, C / L, HW, L), f32: each block of L channels, one
/// lane per channel, accumulated side by side in f64 (two-pass, as above), on fixed-size cells
/// so that the lane loops vectorise.
fn stats_lanes<const L: usize>(x: &[f32], n: usize, c: usize, hw: usize) -> Vec<f64> {
    let cb = c / L;
    let m = (n * hw) as f64;
    let per = |b: usize| {
        let cells = || {
            (0..n).flat_map(move |i| {
                x[(i * cb + b) * hw * L..(i * cb + b + 1) * hw * L]
                    .chunks_exact(L)
                    .map(|cell| <&[f32; L]>::try_from(cell).expect("L lanes"))
            })
        };
        let mut sum = [0f64; L];
        for cell in cells() {
            for l in 0..L {
                sum[l] += f64::from(cell[l]);
            }
        }
        let mean = sum.map(|v| v / m);
        let mut ss = [0f64; L];
        for cell in cells() {
            for l in 0..L {
                let d = f64::from(cell[l]) - mean[l];
                ss[l] += d * d;
            }
        }
        (mean, ss.map(|v| v / m))
    };
    let r = par_map(cb, n * c * hw, per);
    let mut out: Vec<f64> = r.iter().flat_map(|v| v.0).collect();
    out.extend(r.iter().flat_map(|v| v.1));
    out
}

impl candle_core::CustomOp1 for StatsOp {
    fn name(&self) -> &'static str {
        "spectral-batch-norm-stats"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let ((n, c, h, w), lanes) = super::conv::act_dims(l1.shape())?;
        let out = match s1 {
            CpuStorage::F32(_) => {
                let x = slice_of::<f32>(s1, l1, "fast batch-norm: operand")?;
                match lanes {
                    8 => stats_lanes::<8>(x, n, c, h * w),
                    16 => stats_lanes::<16>(x, n, c, h * w),
                    _ => stats_of(x, n, c, h * w),
                }
            }
            CpuStorage::F64(_) if lanes == 1 => stats_of(
                slice_of::<f64>(s1, l1, "fast batch-norm: operand")?,
                n,
                c,
                h * w,
            ),
            _ => candle_core::bail!(
                "fast batch-norm: f32 or f64 input required (blocked activations: f32)"
            ),
        };
        Ok((CpuStorage::F64(out), Shape::from((2, c))))
    }
}

/// `f(0..count)`, in parallel when the work (`elems`) is large enough.
fn par_map<R: Send>(count: usize, elems: usize, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    if elems >= PAR_MIN {
        (0..count).into_par_iter().map(f).collect()
    } else {
        (0..count).map(f).collect()
    }
}

/// running ← (1 − momentum)·running + momentum·batch (variance unbiased), as candle-nn does.
fn update_running(bn: &BatchNorm, mean: &[f64], var: &[f64], m: usize) -> Result<()> {
    let mom = bn.momentum();
    let unbias = m as f64 / (m as f64 - 1.0);
    let rm = Var::from_tensor(bn.running_mean())?;
    let rv = Var::from_tensor(bn.running_var())?;
    let dev = rm.device().clone();
    let dtype = rm.dtype();
    let old_m = rm.as_tensor().to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let old_v = rv.as_tensor().to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let new_m: Vec<f64> = old_m
        .iter()
        .zip(mean)
        .map(|(o, b)| (1.0 - mom) * o + mom * b)
        .collect();
    let new_v: Vec<f64> = old_v
        .iter()
        .zip(var)
        .map(|(o, b)| (1.0 - mom) * o + mom * b * unbias)
        .collect();
    let c = new_m.len();
    rm.set(&Tensor::from_vec(new_m, c, &dev)?.to_dtype(dtype)?)?;
    rv.set(&Tensor::from_vec(new_v, c, &dev)?.to_dtype(dtype)?)?;
    Ok(())
}

/// Forward: `x.apply_op3(p, q, BnOp)`. Eval: p = s (C), q = t (C). Train: p = [weight; bias]
/// (2, C), q = [batch mean; 1/std] (2, C), untracked. Either way y = relu?(x·s[c] + t[c]).
struct BnOp {
    train: bool,
    relu: bool,
}

/// (s, t) of the forward affine from the op's two parameter inputs, in f64.
fn affine_of(train: bool, p: &[f64], q: &[f64], c: usize) -> (Vec<f64>, Vec<f64>) {
    if train {
        let (weight, bias) = p.split_at(c);
        let (mean, invstd) = q.split_at(c);
        let s: Vec<f64> = (0..c).map(|i| weight[i] * invstd[i]).collect();
        let t = (0..c).map(|i| bias[i] - mean[i] * s[i]).collect();
        (s, t)
    } else {
        (p.to_vec(), q.to_vec())
    }
}

fn to_f64s(s: &CpuStorage, l: &Layout) -> candle_core::Result<Vec<f64>> {
    const WHAT: &str = "fast batch-norm: parameters";
    Ok(match s {
        CpuStorage::F32(_) => slice_of::<f32>(s, l, WHAT)?
            .iter()
            .map(|&x| f64::from(x))
            .collect(),
        CpuStorage::F64(_) => slice_of::<f64>(s, l, WHAT)?.to_vec(),
        _ => candle_core::bail!("fast batch-norm: f32 or f64 required"),
    })
}

fn tensor_f64s(t: &Tensor) -> candle_core::Result<Vec<f64>> {
    t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()
}

/// Whether the ReLU lets `v` through: `v > 0` (a NaN does not pass, as in the forward).
fn passes_relu<T: WithDType>(v: T) -> bool {
    v > T::zero()
}

/// One (N·C) plane of the dx pass: (plane index, (dx, (dy, x))).
type PlaneDx<'a, T> = (usize, (&'a mut [T], (&'a [T], &'a [T])));

/// y = relu?(x·s[c] + t[c]) over contiguous (N, C, HW) `x`.
fn affine<T: WithDType>(x: &[T], c: usize, hw: usize, s: &[f64], t: &[f64], relu: bool) -> Vec<T> {
    let s: Vec<T> = s.iter().map(|&v| T::from_f64(v)).collect();
    let t: Vec<T> = t.iter().map(|&v| T::from_f64(v)).collect();
    // SAFETY: every element is written below (the planes cover `y`).
    let mut y: Vec<T> = unsafe { super::uninit_vec(x.len()) };
    let plane = |(k, (yo, xi)): (usize, (&mut [T], &[T]))| {
        let ch = k % c;
        let (sc, tc) = (s[ch], t[ch]);
        // the ReLU test outside the loop and a plain select inside: what lets it vectorise
        // (as in affine_lanes)
        if relu {
            for (o, &v) in yo.iter_mut().zip(xi) {
                let a = v * sc + tc;
                *o = if passes_relu(a) { a } else { T::zero() };
            }
        } else {
            for (o, &v) in yo.iter_mut().zip(xi) {
                *o = v * sc + tc;
            }
        }
    };
    if x.len() >= PAR_MIN {
        y.par_chunks_mut(hw)
            .zip(x.par_chunks(hw))
            .enumerate()
            .for_each(plane);
    } else {
        y.chunks_mut(hw)
            .zip(x.chunks(hw))
            .enumerate()
            .for_each(plane);
    }
    y
}

/// [`affine`] over blocked activations, (N, C / L, HW, L); f32, the only dtype the model blocks.
/// Written for the vectoriser: the block's coefficients as arrays, the ReLU test outside the lane
/// loop and a select inside it (the generic version with slices and the test inside ran scalar,
/// 6.5 % of a ResNet-18 64 px input-gradient pass, perf). Same rule: a NaN does not pass the ReLU.
fn affine_lanes<const L: usize>(
    x: &[f32],
    c: usize,
    hw: usize,
    s: &[f64],
    t: &[f64],
    relu: bool,
) -> Vec<f32> {
    let cb = c / L;
    // SAFETY: every element is written below (the planes cover `y`, the cells each plane).
    let mut y: Vec<f32> = unsafe { super::uninit_vec(x.len()) };
    let plane = |(k, (yo, xi)): (usize, (&mut [f32], &[f32]))| {
        let base = (k % cb) * L;
        let sc: [f32; L] = std::array::from_fn(|l| s[base + l] as f32);
        let tc: [f32; L] = std::array::from_fn(|l| t[base + l] as f32);
        let cells = yo.chunks_exact_mut(L).zip(xi.chunks_exact(L));
        if relu {
            for (yc, xc) in cells {
                for l in 0..L {
                    let a = xc[l] * sc[l] + tc[l];
                    yc[l] = if a > 0.0 { a } else { 0.0 };
                }
            }
        } else {
            for (yc, xc) in cells {
                for l in 0..L {
                    yc[l] = xc[l] * sc[l] + tc[l];
                }
            }
        }
    };
    if x.len() >= PAR_MIN {
        y.par_chunks_mut(hw * L)
            .zip(x.par_chunks(hw * L))
            .enumerate()
            .for_each(plane);
    } else {
        y.chunks_mut(hw * L)
            .zip(x.chunks(hw * L))
            .enumerate()
            .for_each(plane);
    }
    y
}

impl CustomOp3 for BnOp {
    fn name(&self) -> &'static str {
        "spectral-batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let ((_, c, h, w), lanes) = super::conv::act_dims(l1.shape())?;
        let (s, t) = affine_of(self.train, &to_f64s(s2, l2)?, &to_f64s(s3, l3)?, c);
        let out = super::dispatch1(
            "fast batch-norm",
            "input",
            s1,
            l1,
            |x: &[f32]| match lanes {
                8 => affine_lanes::<8>(x, c, h * w, &s, &t, self.relu),
                16 => affine_lanes::<16>(x, c, h * w, &s, &t, self.relu),
                _ => affine(x, c, h * w, &s, &t, self.relu),
            },
            |x: &[f64]| affine(x, c, h * w, &s, &t, self.relu),
        )?;
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        p: &Tensor,
        q: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let ((n, c, h, w), _) = super::conv::act_dims(x.shape())?;
        let m = (n * h * w) as f64;
        let (pv, qv) = (tensor_f64s(p)?, tensor_f64s(q)?);
        let (s, t) = affine_of(self.train, &pv, &qv, c);
        let dy = dy.contiguous()?;
        let mut st = s.clone();
        st.extend_from_slice(&t);
        let st = Tensor::from_vec(st, (2, c), x.device())?;
        // Parameter gradients: only when tracked. Under `without_weight_grads` they are zeros,
        // not `None`: p and q are intermediate nodes (computed from the variables), and candle's
        // backprop expects a gradient for every tracked node on the way to a variable.
        let params_wanted = p.track_op() && super::conv::weight_grads_enabled();
        let q_wanted = !self.train && q.track_op() && super::conv::weight_grads_enabled();
        // [Σ g; Σ g·x] per channel, g = dy masked by the ReLU (recomputed from x, s, t). An
        // eval-mode input gradient (the study's gradient passes) needs neither: dx = s·g. Skipping
        // the pass saves a read of x and dy per BatchNorm (~4 % of a ResNet-18 64 px pass).
        let sums = if self.train || params_wanted || q_wanted {
            let sums = dy.apply_op3_no_bwd(x, &st, &SumsOp { relu: self.relu })?;
            tensor_f64s(&sums)?
        } else {
            vec![f64::NAN; 2 * c] // not read: every use below is behind the same conditions
        };
        let (sg, sgx) = sums.split_at(c);
        let zeros_for = |t: &Tensor| -> candle_core::Result<Option<Tensor>> {
            Ok(if t.track_op() {
                Some(t.zeros_like()?)
            } else {
                None
            })
        };
        // dx = α[c]·g + β[c]·x + γ[c]
        let (alpha, beta, gamma, dp) = if self.train {
            let (weight, _) = pv.split_at(c);
            let (mean, invstd) = qv.split_at(c);
            // Σ g·x̂ with x̂ = (x − mean)·invstd
            let dweight: Vec<f64> = (0..c)
                .map(|i| invstd[i] * (sgx[i] - mean[i] * sg[i]))
                .collect();
            let alpha: Vec<f64> = (0..c).map(|i| weight[i] * invstd[i]).collect();
            let beta: Vec<f64> = (0..c)
                .map(|i| -alpha[i] * invstd[i] * dweight[i] / m)
                .collect();
            let gamma: Vec<f64> = (0..c)
                .map(|i| alpha[i] * (-sg[i] / m + mean[i] * invstd[i] * dweight[i] / m))
                .collect();
            let dp = if params_wanted {
                let mut v = dweight;
                v.extend_from_slice(sg);
                Some(Tensor::from_vec(v, (2, c), x.device())?.to_dtype(p.dtype())?)
            } else {
                zeros_for(p)?
            };
            (alpha, beta, gamma, dp)
        } else {
            let dp = if params_wanted {
                Some(Tensor::from_vec(sgx.to_vec(), c, x.device())?.to_dtype(p.dtype())?)
            } else {
                zeros_for(p)?
            };
            (s.clone(), vec![0.0; c], vec![0.0; c], dp)
        };
        let dq = if self.train {
            None // the batch statistics enter untracked; dx above accounts for them
        } else if q_wanted {
            Some(Tensor::from_vec(sg.to_vec(), c, x.device())?.to_dtype(q.dtype())?)
        } else {
            zeros_for(q)?
        };
        let dx = if x.track_op() {
            let mut coef = alpha;
            coef.extend_from_slice(&beta);
            coef.extend_from_slice(&gamma);
            coef.extend_from_slice(&s);
            coef.extend_from_slice(&t);
            let coef = Tensor::from_vec(coef, (5, c), x.device())?;
            Some(dy.apply_op3_no_bwd(x, &coef, &DxOp { relu: self.relu })?)
        } else {
            None
        };
        Ok((dx, dp, dq))
    }
}

/// `dy.apply_op3_no_bwd(x, st, SumsOp)` -> (2, C) f64: [Σ g; Σ g·x] per channel, where
/// g = dy where x·s + t > 0 (all of dy without ReLU); `st` = [s; t] (2, C) f64.
struct SumsOp {
    relu: bool,
}

fn channel_sums<T: WithDType>(
    dy: &[T],
    x: &[T],
    n: usize,
    c: usize,
    hw: usize,
    st: &[f64],
    relu: bool,
) -> Vec<f64> {
    let (s, t) = st.split_at(c);
    let per = |ch: usize| {
        let sc = T::from_f64(s[ch]);
        let tc = T::from_f64(t[ch]);
        let (mut sg, mut sgx) = (0.0f64, 0.0f64);
        for i in 0..n {
            let base = (i * c + ch) * hw;
            for j in base..base + hw {
                let xv = x[j];
                if relu && !passes_relu(xv * sc + tc) {
                    continue;
                }
                let g = dy[j].to_f64();
                sg += g;
                sgx += g * xv.to_f64();
            }
        }
        (sg, sgx)
    };
    let r = par_map(c, n * c * hw, per);
    let mut out: Vec<f64> = r.iter().map(|v| v.0).collect();
    out.extend(r.iter().map(|v| v.1));
    out
}

/// [`channel_sums`] over blocked activations, (N, C / L, HW, L), f32: the same f64 sums, with the
/// ReLU test outside the lane loop and a select inside it (vectorised, as [`affine_lanes`]).
fn channel_sums_lanes<const L: usize>(
    dy: &[f32],
    x: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    st: &[f64],
    relu: bool,
) -> Vec<f64> {
    let (s, t) = st.split_at(c);
    let cb = c / L;
    let per = |b: usize| {
        let sc: [f32; L] = std::array::from_fn(|l| s[b * L + l] as f32);
        let tc: [f32; L] = std::array::from_fn(|l| t[b * L + l] as f32);
        let (mut sg, mut sgx) = ([0f64; L], [0f64; L]);
        for i in 0..n {
            let r = (i * cb + b) * hw * L..(i * cb + b + 1) * hw * L;
            for (gc, xc) in dy[r.clone()].chunks_exact(L).zip(x[r].chunks_exact(L)) {
                let gc = <&[f32; L]>::try_from(gc).expect("L lanes");
                let xc = <&[f32; L]>::try_from(xc).expect("L lanes");
                for l in 0..L {
                    let (xv, gv) = (xc[l], gc[l]);
                    let g = if !relu || xv * sc[l] + tc[l] > 0.0 {
                        gv
                    } else {
                        0.0
                    };
                    let g = f64::from(g);
                    sg[l] += g;
                    sgx[l] += g * f64::from(xv);
                }
            }
        }
        (sg, sgx)
    };
    let r = par_map(cb, n * c * hw, per);
    let mut out: Vec<f64> = r.iter().flat_map(|v| v.0).collect();
    out.extend(r.iter().flat_map(|v| v.1));
    out
}

impl CustomOp3 for SumsOp {
    fn name(&self) -> &'static str {
        "spectral-batch-norm-sums"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let ((n, c, h, w), lanes) = super::conv::act_dims(l2.shape())?;
        let st = to_f64s(s3, l3)?;
        let out = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let dy = slice_of::<f32>(s1, l1, "fast batch-norm: operand")?;
                let x = slice_of::<f32>(s2, l2, "fast batch-norm: operand")?;
                match lanes {
                    8 => channel_sums_lanes::<8>(dy, x, n, c, h * w, &st, self.relu),
                    16 => channel_sums_lanes::<16>(dy, x, n, c, h * w, &st, self.relu),
                    _ => channel_sums(dy, x, n, c, h * w, &st, self.relu),
                }
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) if lanes == 1 => channel_sums(
                slice_of::<f64>(s1, l1, "fast batch-norm: operand")?,
                slice_of::<f64>(s2, l2, "fast batch-norm: operand")?,
                n,
                c,
                h * w,
                &st,
                self.relu,
            ),
            _ => candle_core::bail!("fast batch-norm: dy and x of one float dtype required"),
        };
        Ok((CpuStorage::F64(out), Shape::from((2, c))))
    }
}

/// `dy.apply_op3_no_bwd(x, coef, DxOp)` -> dx = α·g + β·x + γ per channel, g as in
/// [`SumsOp`]; `coef` = [α; β; γ; s; t] (5, C) f64.
struct DxOp {
    relu: bool,
}

fn grad_input<T: WithDType>(
    dy: &[T],
    x: &[T],
    c: usize,
    hw: usize,
    coef: &[f64],
    relu: bool,
) -> Vec<T> {
    let col = |r: usize| -> Vec<T> {
        coef[r * c..(r + 1) * c]
            .iter()
            .map(|&v| T::from_f64(v))
            .collect()
    };
    let (alpha, beta, gamma, s, t) = (col(0), col(1), col(2), col(3), col(4));
    // SAFETY: every element is written below (the planes cover `dx`).
    let mut dx: Vec<T> = unsafe { super::uninit_vec(x.len()) };
    let plane = |(k, (o, (gi, xi))): PlaneDx<T>| {
        let ch = k % c;
        let (a, b, g0, sc, tc) = (alpha[ch], beta[ch], gamma[ch], s[ch], t[ch]);
        if relu {
            for ((o, &g), &xv) in o.iter_mut().zip(gi).zip(xi) {
                let g = if passes_relu(xv * sc + tc) {
                    g
                } else {
                    T::zero()
                };
                *o = a * g + b * xv + g0;
            }
        } else {
            for ((o, &g), &xv) in o.iter_mut().zip(gi).zip(xi) {
                *o = a * g + b * xv + g0;
            }
        }
    };
    if x.len() >= PAR_MIN {
        dx.par_chunks_mut(hw)
            .zip(dy.par_chunks(hw).zip(x.par_chunks(hw)))
            .enumerate()
            .for_each(plane);
    } else {
        dx.chunks_mut(hw)
            .zip(dy.chunks(hw).zip(x.chunks(hw)))
            .enumerate()
            .for_each(plane);
    }
    dx
}

/// [`grad_input`] over blocked activations, (N, C / L, HW, L); f32, written for the vectoriser
/// as [`affine_lanes`] is (the generic version ran scalar: 8.7 % of a ResNet-18 64 px
/// input-gradient pass, perf).
fn grad_input_lanes<const L: usize>(
    dy: &[f32],
    x: &[f32],
    c: usize,
    hw: usize,
    coef: &[f64],
    relu: bool,
) -> Vec<f32> {
    let cb = c / L;
    // SAFETY: every element is written below.
    let mut dx: Vec<f32> = unsafe { super::uninit_vec(x.len()) };
    let plane = |(k, (o, (gi, xi))): PlaneDx<f32>| {
        let base = (k % cb) * L;
        let row = |r: usize| -> [f32; L] { std::array::from_fn(|l| coef[r * c + base + l] as f32) };
        let (a, b, g0, sc, tc) = (row(0), row(1), row(2), row(3), row(4));
        let cells = o
            .chunks_exact_mut(L)
            .zip(gi.chunks_exact(L))
            .zip(xi.chunks_exact(L));
        if relu {
            for ((oc, gc), xc) in cells {
                for l in 0..L {
                    // both loads first: a load inside the select kept it a branch
                    let (xv, gv) = (xc[l], gc[l]);
                    let g = if xv * sc[l] + tc[l] > 0.0 { gv } else { 0.0 };
                    oc[l] = a[l] * g + b[l] * xv + g0[l];
                }
            }
        } else {
            for ((oc, gc), xc) in cells {
                for l in 0..L {
                    oc[l] = a[l] * gc[l] + b[l] * xc[l] + g0[l];
                }
            }
        }
    };
    if x.len() >= PAR_MIN {
        dx.par_chunks_mut(hw * L)
            .zip(dy.par_chunks(hw * L).zip(x.par_chunks(hw * L)))
            .enumerate()
            .for_each(plane);
    } else {
        dx.chunks_mut(hw * L)
            .zip(dy.chunks(hw * L).zip(x.chunks(hw * L)))
            .enumerate()
            .for_each(plane);
    }
    dx
}

impl CustomOp3 for DxOp {
    fn name(&self) -> &'static str {
        "spectral-batch-norm-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let ((_, c, h, w), lanes) = super::conv::act_dims(l2.shape())?;
        let coef = to_f64s(s3, l3)?;
        let (c, hw) = (c, h * w);
        let out = super::dispatch2(
            "fast batch-norm grad-input",
            s1,
            l1,
            s2,
            l2,
            |dy, x| match lanes {
                8 => grad_input_lanes::<8>(dy, x, c, hw, &coef, self.relu),
                16 => grad_input_lanes::<16>(dy, x, c, hw, &coef, self.relu),
                _ => grad_input(dy, x, c, hw, &coef, self.relu),
            },
            |dy, x| grad_input(dy, x, c, hw, &coef, self.relu),
        )?;
        Ok((out, l2.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use candle_nn::{BatchNormConfig, VarBuilder, VarMap};
    use rand::{Rng, SeedableRng};

    fn make_bn(c: usize, dtype: DType, seed: u64) -> (VarMap, BatchNorm) {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
        let cfg = BatchNormConfig {
            eps: 1e-5,
            remove_mean: true,
            affine: true,
            momentum: 0.1,
        };
        let bn = candle_nn::batch_norm(c, cfg, vb).unwrap();
        // non-trivial parameters and running statistics
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let data = varmap.data().lock().unwrap();
        let mut names: Vec<&String> = data.keys().collect();
        names.sort(); // a HashMap: fix the order so that equal seeds give equal parameters
        for name in names {
            let var = &data[name];
            let vals: Vec<f64> = (0..c)
                .map(|_| match name.as_str() {
                    "running_var" => rng.random_range(0.5..2.0),
                    "weight" => rng.random_range(0.5..1.5),
                    _ => rng.random_range(-0.5..0.5),
                })
                .collect();
            var.set(
                &Tensor::from_vec(vals, c, &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
        }
        drop(data);
        (varmap, bn)
    }

    fn random(rng: &mut impl Rng, dims: &[usize], dtype: DType) -> Tensor {
        let n: usize = dims.iter().product();
        let v: Vec<f64> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
        Tensor::from_vec(v, dims, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    fn max_rel_diff(a: &Tensor, b: &Tensor) -> f64 {
        let a = tensor_f64s(a).unwrap();
        let b = tensor_f64s(b).unwrap();
        assert_eq!(a.len(), b.len());
        // floor: a gradient that is zero in exact arithmetic (2 values per channel) is noise
        let scale = b.iter().fold(1e-2f64, |m, v| m.max(v.abs()));
        a.iter()
            .zip(&b)
            .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
            / scale
    }

    /// Output, dx and the parameter gradients of the fast path (f64 and f32) against
    /// candle-nn's BatchNorm (+ candle's ReLU) in f64 through candle's backprop, and the
    /// running statistics after a training step, for both modes, with and without ReLU, on odd
    /// shapes (including 1 x 1 spatial size and batch 1 in eval).
    #[test]
    fn fast_matches_candle_nn() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for &dtype in &[DType::F64, DType::F32] {
            for &(n, c, h, w) in &[(3, 5, 7, 6), (2, 3, 1, 1), (1, 4, 9, 5), (4, 2, 33, 17)] {
                for &train in &[false, true] {
                    // With 2 values per channel the training-mode dx is a difference of nearly
                    // equal terms: f32 keeps only ~3 digits of it (stock candle in f32 no more).
                    let tol = match dtype {
                        DType::F64 => 1e-10,
                        _ if train && n * h * w < 8 => 1e-3,
                        _ => 1e-4,
                    };
                    if train && n * h * w < 2 {
                        continue;
                    }
                    for &relu in &[false, true] {
                        // the reference is always stock candle in f64
                        let x64 = random(&mut rng, &[n, c, h, w], DType::F64);
                        let up64 = random(&mut rng, &[n, c, h, w], DType::F64);
                        let xa = Var::from_tensor(&x64).unwrap();
                        let xb = Var::from_tensor(&x64.to_dtype(dtype).unwrap()).unwrap();
                        let up = up64.to_dtype(dtype).unwrap();
                        let (vm_a, bn_a) = make_bn(c, DType::F64, 11);
                        let (vm_b, bn_b) = make_bn(c, dtype, 11);
                        let ya = batch_norm_stock(&bn_a, xa.as_tensor(), train, relu).unwrap();
                        let ga = (&ya * &up64)
                            .unwrap()
                            .sum_all()
                            .unwrap()
                            .backward()
                            .unwrap();
                        let yb = batch_norm_fast(&bn_b, xb.as_tensor(), train, relu).unwrap();
                        let gb = (&yb * &up).unwrap().sum_all().unwrap().backward().unwrap();
                        let case = format!("{dtype:?} {n}x{c}x{h}x{w} train={train} relu={relu}");
                        let d = max_rel_diff(&yb, &ya);
                        assert!(d < tol, "y {case}: {d}");
                        let d = max_rel_diff(
                            gb.get(xb.as_tensor()).unwrap(),
                            ga.get(xa.as_tensor()).unwrap(),
                        );
                        assert!(d < tol, "dx {case}: {d}");
                        let va = vm_a.data().lock().unwrap();
                        let vb = vm_b.data().lock().unwrap();
                        for name in ["weight", "bias"] {
                            let pa = ga.get(va[name].as_tensor()).unwrap();
                            let pb = gb.get(vb[name].as_tensor()).unwrap();
                            assert!(max_rel_diff(pb, pa) < tol, "d{name} {case}");
                        }
                        for name in ["running_mean", "running_var"] {
                            let d = max_rel_diff(vb[name].as_tensor(), va[name].as_tensor());
                            assert!(d < tol, "{name} {case}: {d}");
                        }
                    }
                }
            }
        }
    }

    /// Blocked activations ((N, C/L, H, W, L), L = 8 and 16) against the NCHW fast path: output,
    /// dx, the parameter gradients and the running statistics, both modes, with and without
    /// ReLU, f32 (the only dtype the model blocks), odd spatial sizes and several channel blocks.
    #[test]
    fn blocked_layout_matches_nchw() {
        use crate::kernels::layout::{to_blocked, to_plain};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
        for &lanes in &[8usize, 16] {
            for &(n, c, h, w) in &[(3, 48, 5, 7), (2, 16, 1, 1), (4, 32, 33, 9)] {
                for &train in &[false, true] {
                    for &relu in &[false, true] {
                        let x = random(&mut rng, &[n, c, h, w], DType::F32);
                        let up = random(&mut rng, &[n, c, h, w], DType::F32);
                        let (vm_a, bn_a) = make_bn(c, DType::F32, 23);
                        let (vm_b, bn_b) = make_bn(c, DType::F32, 23);
                        let xa = Var::from_tensor(&x).unwrap();
                        let xb = Var::from_tensor(&to_blocked(&x, lanes).unwrap()).unwrap();
                        assert_eq!(xb.dims(), [n, c / lanes, h, w, lanes]);
                        let ya = batch_norm_fast(&bn_a, xa.as_tensor(), train, relu).unwrap();
                        let yb = batch_norm_fast(&bn_b, xb.as_tensor(), train, relu).unwrap();
                        assert_eq!(yb.dims(), xb.dims());
                        let yb = to_plain(&yb).unwrap();
                        let ga = (&ya * &up).unwrap().sum_all().unwrap().backward().unwrap();
                        let gb = (&yb * &up).unwrap().sum_all().unwrap().backward().unwrap();
                        let case = format!("L={lanes} {n}x{c}x{h}x{w} train={train} relu={relu}");
                        let tol = 1e-5;
                        let d = max_rel_diff(&yb, &ya);
                        assert!(d < tol, "y {case}: {d}");
                        let dxb = to_plain(gb.get(xb.as_tensor()).unwrap()).unwrap();
                        let d = max_rel_diff(&dxb, ga.get(xa.as_tensor()).unwrap());
                        assert!(d < tol, "dx {case}: {d}");
                        let va = vm_a.data().lock().unwrap();
                        let vb = vm_b.data().lock().unwrap();
                        for name in ["weight", "bias"] {
                            let pa = ga.get(va[name].as_tensor()).unwrap();
                            let pb = gb.get(vb[name].as_tensor()).unwrap();
                            let d = max_rel_diff(pb, pa);
                            assert!(d < tol, "d{name} {case}: {d}");
                        }
                        for name in ["running_mean", "running_var"] {
                            let d = max_rel_diff(vb[name].as_tensor(), va[name].as_tensor());
                            assert!(d < tol, "{name} {case}: {d}");
                        }
                    }
                }
            }
        }
        // f64 blocked activations are refused, not computed in the wrong layout
        let (_, bn) = make_bn(16, DType::F64, 1);
        let x = Tensor::zeros((1, 1, 2, 2, 16), DType::F64, &Device::Cpu).unwrap();
        assert!(batch_norm_fast(&bn, &x, false, true).is_err());
    }

    /// Central finite differences in f64 on the fast path (training mode, with ReLU): d/dε of
    /// L = Σ up ⊙ bn(x + ε e) at several entries, and the same for the weight.
    #[test]
    fn fast_gradients_match_finite_differences() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let (n, c, h, w) = (3, 2, 4, 3);
        let x0 = random(&mut rng, &[n, c, h, w], DType::F64);
        let up = random(&mut rng, &[n, c, h, w], DType::F64);
        let (vm, bn) = make_bn(c, DType::F64, 2);
        let loss = |x: &Tensor| -> f64 {
            (batch_norm_fast(&bn, x, true, true).unwrap() * &up)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let xv = Var::from_tensor(&x0).unwrap();
        let grads = (batch_norm_fast(&bn, xv.as_tensor(), true, true).unwrap() * &up)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let dx = tensor_f64s(grads.get(xv.as_tensor()).unwrap()).unwrap();
        let weight = vm.data().lock().unwrap()["weight"].clone();
        let dw = tensor_f64s(grads.get(weight.as_tensor()).unwrap()).unwrap();
        let eps = 1e-6;
        let flat = tensor_f64s(&x0).unwrap();
        for k in [0, 5, 17, 40, 71] {
            let mut p = flat.clone();
            let mut m = flat.clone();
            p[k] += eps;
            m[k] -= eps;
            let tp = Tensor::from_vec(p, (n, c, h, w), &Device::Cpu).unwrap();
            let tm = Tensor::from_vec(m, (n, c, h, w), &Device::Cpu).unwrap();
            let fd = (loss(&tp) - loss(&tm)) / (2.0 * eps);
            assert!(
                (fd - dx[k]).abs() < 1e-6 * (1.0 + fd.abs()),
                "dx[{k}]: fd {fd} vs {}",
                dx[k]
            );
        }
        let w0 = tensor_f64s(weight.as_tensor()).unwrap();
        for k in 0..c {
            let mut wp = w0.clone();
            wp[k] += eps;
            weight
                .set(&Tensor::new(wp.as_slice(), &Device::Cpu).unwrap())
                .unwrap();
            let lp = loss(&x0);
            let mut wm = w0.clone();
            wm[k] -= eps;
            weight
                .set(&Tensor::new(wm.as_slice(), &Device::Cpu).unwrap())
                .unwrap();
            let lm = loss(&x0);
            let fd = (lp - lm) / (2.0 * eps);
            assert!(
                (fd - dw[k]).abs() < 1e-6 * (1.0 + fd.abs()),
                "dw[{k}]: fd {fd} vs {}",
                dw[k]
            );
        }
    }

    /// Under `without_weight_grads` the parameters get a zero gradient, the input the same one.
    #[test]
    fn weight_grads_can_be_skipped() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let x = Var::from_tensor(&random(&mut rng, &[2, 3, 5, 5], DType::F32)).unwrap();
        let (vm, bn) = make_bn(3, DType::F32, 1);
        let full = batch_norm_fast(&bn, x.as_tensor(), false, true)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let skipped = super::super::without_weight_grads(|| {
            batch_norm_fast(&bn, x.as_tensor(), false, true)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        });
        let weight = vm.data().lock().unwrap()["weight"].clone();
        let dw = |g: &candle_core::backprop::GradStore| {
            tensor_f64s(g.get(weight.as_tensor()).unwrap()).unwrap()
        };
        assert!(dw(&full).iter().any(|v| *v != 0.0));
        assert!(dw(&skipped).iter().all(|v| *v == 0.0));
        let d = max_rel_diff(
            skipped.get(x.as_tensor()).unwrap(),
            full.get(x.as_tensor()).unwrap(),
        );
        assert_eq!(d, 0.0);
    }

    #[test]
    fn wrong_channel_count_is_an_error() {
        let (_vm, bn) = make_bn(3, DType::F32, 1);
        let x = Tensor::zeros((2, 4, 3, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(batch_norm_fast(&bn, &x, false, false).is_err());
    }
}
