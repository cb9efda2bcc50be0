//! Pooling with a correct backward for any kernel, stride and padding.
//!
//! Written by hand from differentiable candle ops (pad by concatenation, narrow, reshape,
//! `maximum`, sum) because candle 0.11's own pooling ops are not usable for training: the
//! max-pool backward scales the gradient by 1/k^2, and there is no backward at all when the
//! kernel differs from the stride (ResNet's 3 x 3, stride-2, pad-1 stem pool). Each of the k^2
//! window offsets is one strided view of the padded input; the pool is their element-wise
//! maximum (or mean), so autograd gives the exact gradient.
//!
//! Max pooling on CPU (f32/f64, with the fast CPU kernels on: [`super::fast_cpu`]) is instead one
//! custom op, forward and backward: the composite above costs k² = 9 full passes forward and
//! ~5k² backward (each view's `maximum` mask, zero-padding by concatenation, accumulation) on the
//! network's largest activation (docs/performance.md); the op reads the input once forward and
//! keeps each window's argmax (a u32 per output cell, as PyTorch keeps its int64 indices), so the
//! backward is one scatter.
//!
//! Ties in max pooling (equal values in one window): the composite shares the gradient between
//! the tied cells (candle's `maximum` backward), the fast op gives it all to the first one in
//! row-major window order, as PyTorch does; the total reaching the window is the same. In a ResNet
//! ties only occur between ReLU zeros, whose gradient the ReLU discards anyway.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Output size of a pooling window along one axis: floor((n + 2p - k) / s) + 1.
fn out_size(n: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    (n + 2 * padding - kernel) / stride + 1
}

fn check_args(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<(usize, usize)> {
    check_dims(x.dims(), kernel, stride, padding)
}

/// [`check_args`] on an (N, C, H, W) shape.
fn check_dims(
    dims: &[usize],
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<(usize, usize)> {
    if kernel == 0 {
        return Err(Error::param("kernel", kernel, "must be at least 1"));
    }
    if stride == 0 {
        return Err(Error::param("stride", stride, "must be at least 1"));
    }
    if padding > kernel / 2 {
        // As in PyTorch: with more padding a window could hold only padded cells.
        return Err(Error::param(
            "padding",
            padding,
            format!("must be at most kernel / 2 = {}", kernel / 2),
        ));
    }
    if dims.len() != 4 {
        return Err(Error::Shape {
            what: "pooling input".into(),
            expected: "(N, C, H, W)".into(),
            got: format!("{dims:?}"),
        });
    }
    let (h, w) = (dims[2], dims[3]);
    if h + 2 * padding < kernel || w + 2 * padding < kernel {
        return Err(Error::Shape {
            what: "pooling input".into(),
            expected: format!("H + 2 * padding and W + 2 * padding >= kernel {kernel}"),
            got: format!("{h} x {w} with padding {padding}"),
        });
    }
    Ok((
        out_size(h, kernel, stride, padding),
        out_size(w, kernel, stride, padding),
    ))
}

/// Pads dims 2 and 3 of an (N, C, H, W) tensor with a constant value.
fn pad_const(
    x: &Tensor,
    (top, bottom): (usize, usize),
    (left, right): (usize, usize),
    value: f64,
) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let full = |hh: usize, ww: usize| -> Result<Tensor> {
        Ok(Tensor::full(value, (n, c, hh, ww), x.device())?.to_dtype(x.dtype())?)
    };
    let mut x = x.clone();
    if top + bottom > 0 {
        let mut parts = Vec::with_capacity(3);
        if top > 0 {
            parts.push(full(top, w)?);
        }
        parts.push(x);
        if bottom > 0 {
            parts.push(full(bottom, w)?);
        }
        x = Tensor::cat(&parts, 2)?;
    }
    if left + right > 0 {
        let hh = h + top + bottom;
        let mut parts = Vec::with_capacity(3);
        if left > 0 {
            parts.push(full(hh, left)?);
        }
        parts.push(x);
        if right > 0 {
            parts.push(full(hh, right)?);
        }
        x = Tensor::cat(&parts, 3)?;
    }
    Ok(x)
}

/// Every-`stride`-th element of `len` elements along `dim`, starting at `start`
/// (the tensor must hold at least `start + len * stride` there).
fn strided(x: &Tensor, dim: usize, start: usize, len: usize, stride: usize) -> Result<Tensor> {
    let t = x.narrow(dim, start, len * stride)?;
    if stride == 1 {
        return Ok(t);
    }
    // Split the axis into (len, stride) and keep phase 0.
    let mut shape = t.dims().to_vec();
    shape[dim] = len;
    shape.insert(dim + 1, stride);
    Ok(t.reshape(shape)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)?)
}

/// Applies `combine` to the k^2 strided window views of `x` padded with `pad_value`.
fn reduce_windows(
    x: &Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
    pad_value: f64,
    combine: impl Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
) -> Result<Tensor> {
    let (ho, wo) = check_args(x, kernel, stride, padding)?;
    let (_, _, h, w) = x.dims4()?;
    // The strided views read up to (kernel - 1) + out * stride cells; the cells past
    // h + 2 * padding are only ever read at a phase that is dropped.
    let hn = (kernel - 1) + ho * stride;
    let wn = (kernel - 1) + wo * stride;
    let xp = pad_const(
        x,
        (padding, hn - h - padding),
        (padding, wn - w - padding),
        pad_value,
    )?;
    let mut acc: Option<Tensor> = None;
    for dy in 0..kernel {
        let rows = strided(&xp, 2, dy, ho, stride)?;
        for dx in 0..kernel {
            let win = strided(&rows, 3, dx, wo, stride)?;
            acc = Some(match acc {
                None => win,
                Some(a) => combine(&a, &win)?,
            });
        }
    }
    // kernel >= 1, so there was at least one window.
    acc.ok_or_else(|| Error::param("kernel", kernel, "must be at least 1"))
}

/// Max pooling over (N, C, H, W) with a square `kernel`, `stride` and symmetric padding
/// (padded cells never win: they hold -inf). Output (N, C, H_out, W_out) with
/// H_out = floor((H + 2 padding - kernel) / stride) + 1. `padding <= kernel / 2`.
/// Differentiable, with the exact gradient for any kernel and stride.
/// On CPU with the fast kernels on (the default) one custom op; else (CUDA, other dtypes,
/// `SPECTRAL_FAST_CONV=0`) [`max_pool2d_stock`].
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let fast = super::fast_cpu()
        && x.device().is_cpu()
        && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64);
    if !fast {
        return max_pool2d_stock(x, kernel, stride, padding);
    }
    max_pool2d_fast(x, kernel, stride, padding)
}

/// The fast max-pool op whatever the switch says; f32/f64 CPU tensors only.
///
/// `x` may also hold blocked activations, (N, C / L, H, W, L) with L = 8 or 16
/// ([`super::layout`]); the output is then blocked too.
pub fn max_pool2d_fast(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let (dims, lanes) = super::conv::activation_dims(x, "pooling input")?;
    let (ho, wo) = check_dims(&[dims.0, dims.1, dims.2, dims.3], kernel, stride, padding)?;
    let op = MaxPoolOp {
        g: PoolGeom::new(dims, lanes, kernel, stride, padding, (ho, wo)),
        argmax: Mutex::new(None),
    };
    Ok(x.contiguous()?.apply_op1(op)?)
}

/// [`max_pool2d`] from candle's differentiable ops (the k² strided views and `maximum`): the
/// reference for the fast op, and the path on CUDA.
pub fn max_pool2d_stock(
    x: &Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    reduce_windows(x, kernel, stride, padding, f64::NEG_INFINITY, |a, b| {
        a.maximum(b)
    })
}

/// Geometry of one max pool: input planes (n·c / lanes of h × w cells of `lanes` channels each:
/// 1 for NCHW, 8 or 16 for blocked activations), square window, output ho × wo.
#[derive(Clone, Copy, Debug)]
struct PoolGeom {
    planes: usize,
    lanes: usize,
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    p: usize,
    ho: usize,
    wo: usize,
}

impl PoolGeom {
    fn new(
        (n, c, h, w): (usize, usize, usize, usize),
        lanes: usize,
        k: usize,
        s: usize,
        p: usize,
        (ho, wo): (usize, usize),
    ) -> Self {
        Self {
            planes: n * c / lanes,
            lanes,
            h,
            w,
            k,
            s,
            p,
            ho,
            wo,
        }
    }
}

/// Window without an input cell (impossible with padding <= kernel / 2, checked upstream).
const NO_ARGMAX: u32 = u32::MAX;

/// Forward: the maxima, and for each output cell the index in its input plane of the first
/// maximum, kept for the backward (which then scatters instead of searching the windows again:
/// the search was ~6 % of a ResNet-18 64 px input-gradient pass, measured).
fn max_pool_fwd<T: WithDType>(x: &[T], g: &PoolGeom) -> (Vec<T>, Vec<u32>) {
    match g.lanes {
        8 => max_pool_fwd_lanes::<T, 8>(x, g),
        16 => max_pool_fwd_lanes::<T, 16>(x, g),
        _ => max_pool_fwd_lanes::<T, 1>(x, g),
    }
}

/// [`max_pool_fwd`] for `L` lanes per cell (a const, so that the plain layout's loops stay
/// what they were and the blocked one's lane loop is unrolled and vectorised).
fn max_pool_fwd_lanes<T: WithDType, const L: usize>(x: &[T], g: &PoolGeom) -> (Vec<T>, Vec<u32>) {
    let (inp, out) = (g.h * g.w * L, g.ho * g.wo * L);
    // SAFETY: every cell of every row is written by `max_pool_row` (its first loop sets each
    // cell, or the whole row when the window holds padding only).
    let mut y: Vec<T> = unsafe { super::uninit_vec(g.planes * out) };
    let mut idx: Vec<u32> = unsafe { super::uninit_vec(g.planes * out) };
    y.par_chunks_mut(out)
        .zip(idx.par_chunks_mut(out))
        .zip(x.par_chunks(inp))
        .for_each(|((yp, ip), xp)| {
            for oy in 0..g.ho {
                let yo = oy * g.wo * L;
                let row = yo..yo + g.wo * L;
                max_pool_row::<T, L>(xp, g, oy, &mut yp[row.clone()], &mut ip[row]);
            }
        });
    (y, idx)
}

/// One output row `oy` of a plane: for each output cell the index (in the plane) of its window's
/// first maximum, PyTorch's rule: window cells in row-major order, strictly greater wins, a NaN
/// always takes the cell (so it propagates); a window of padding only gets -inf. A per-cell search
/// (the tests' `cell_argmax`), turned inside out: for
/// each window offset (ky, kx) one pass over the row's cells, branch-free. The per-cell search
/// mispredicted its compare on random data and was ~10 % of a ResNet-18 64 px forward
/// (perf, stop 13); the order of visits per cell is unchanged, so are the results.
///
/// With `L` lanes every cell holds L channels, searched side by side; the index kept is the
/// cell's (y·w + x), the same for all lanes' layouts.
fn max_pool_row<T: WithDType, const L: usize>(
    xp: &[T],
    g: &PoolGeom,
    oy: usize,
    yr: &mut [T],
    ir: &mut [u32],
) {
    let y0 = (oy * g.s) as isize - g.p as isize;
    let (ya, yb) = (
        y0.max(0) as usize,
        ((y0 + g.k as isize).min(g.h as isize)) as usize,
    );
    if ya >= yb {
        yr.fill(T::from_f64(f64::NEG_INFINITY));
        ir.fill(NO_ARGMAX);
        return;
    }
    // start: each cell's first window cell in its first valid row
    for ox in 0..g.wo {
        let x0 = (ox * g.s) as isize - g.p as isize;
        let xa = x0.max(0) as usize;
        let (yc, ic) = (&mut yr[ox * L..][..L], &mut ir[ox * L..][..L]);
        if xa >= g.w || x0 + g.k as isize <= 0 {
            yc.fill(T::from_f64(f64::NEG_INFINITY));
            ic.fill(NO_ARGMAX);
        } else {
            let cell = ya * g.w + xa;
            yc.copy_from_slice(&xp[cell * L..][..L]);
            ic.fill(cell as u32);
        }
    }
    for y in ya..yb {
        let row = &xp[y * g.w * L..(y + 1) * g.w * L];
        for kx in 0..g.k {
            // cells whose column ox·s + kx − p lies inside the row
            let first = g.p.saturating_sub(kx).div_ceil(g.s);
            if g.w + g.p <= kx {
                continue;
            }
            let last = ((g.w - 1 + g.p - kx) / g.s).min(g.wo - 1);
            for ox in first..=last {
                let x = ox * g.s + kx - g.p;
                let cell = (y * g.w + x) as u32;
                // fixed-size views and a non-short-circuit test: what lets the lane loop
                // vectorise (with slices and `||` it ran scalar, 4 % of a ResNet-18 64 px
                // input-gradient pass with blocked activations, perf)
                let v: &[T; L] = row[x * L..][..L].try_into().expect("L lanes");
                let yc: &mut [T; L] = (&mut yr[ox * L..][..L]).try_into().expect("L lanes");
                let ic: &mut [u32; L] = (&mut ir[ox * L..][..L]).try_into().expect("L lanes");
                for l in 0..L {
                    let (v, y, i) = (v[l], yc[l], ic[l]);
                    // `v != v`: NaN
                    #[allow(clippy::eq_op)]
                    let take = (v > y) | (v != v);
                    yc[l] = if take { v } else { y };
                    ic[l] = if take { cell } else { i };
                }
            }
        }
    }
}

/// Backward: each output cell's gradient added to the input cell the forward chose.
fn max_pool_bwd<T: WithDType>(dy: &[T], idx: &[u32], g: &PoolGeom) -> Vec<T> {
    let lanes = g.lanes;
    let (inp, out) = (g.h * g.w * lanes, g.ho * g.wo * lanes);
    let mut dx = vec![T::zero(); g.planes * inp];
    dx.par_chunks_mut(inp)
        .zip(dy.par_chunks(out).zip(idx.par_chunks(out)))
        .for_each(|(dxp, (dyp, ip))| {
            for (j, (&d, &i)) in dyp.iter().zip(ip).enumerate() {
                if i != NO_ARGMAX {
                    dxp[i as usize * lanes + j % lanes] += d;
                }
            }
        });
    dx
}

/// Forward op of the fast max pool; its backward is [`MaxPoolGradOp`] on the indices the forward
/// left in `argmax` (candle keeps the op, and so the indices, in the graph with its output).
struct MaxPoolOp {
    g: PoolGeom,
    argmax: Mutex<Option<Arc<Vec<u32>>>>,
}

impl CustomOp1 for MaxPoolOp {
    fn name(&self) -> &'static str {
        "spectral-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.g;
        let (out, idx) = match s {
            CpuStorage::F32(_) => {
                let (y, i) =
                    max_pool_fwd(super::contiguous::<f32>(s, l, "fast max pool: input")?, &g);
                (CpuStorage::F32(y), i)
            }
            CpuStorage::F64(_) => {
                let (y, i) =
                    max_pool_fwd(super::contiguous::<f64>(s, l, "fast max pool: input")?, &g);
                (CpuStorage::F64(y), i)
            }
            _ => candle_core::bail!("fast max pool: f32 or f64 input required"),
        };
        *self.argmax.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(idx));
        let ((n, c, _, _), lanes) = super::conv::act_dims(l.shape())?;
        Ok((out, super::conv::act_shape(n, c, g.ho, g.wo, lanes)))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let idx = self
            .argmax
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(idx) = idx else {
            candle_core::bail!("fast max pool: backward before forward");
        };
        let dy = grad_res.contiguous()?;
        Ok(Some(
            dy.apply_op1_no_bwd(&MaxPoolGradOp { g: self.g, idx })?,
        ))
    }
}

/// `dy.apply_op1_no_bwd(MaxPoolGradOp)` -> dx (N, C, H, W): each window's gradient to its first
/// maximum, found by the forward.
struct MaxPoolGradOp {
    g: PoolGeom,
    idx: Arc<Vec<u32>>,
}

impl CustomOp1 for MaxPoolGradOp {
    fn name(&self) -> &'static str {
        "spectral-max-pool2d-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.g;
        let cells = g.planes * g.ho * g.wo * g.lanes;
        if l.shape().elem_count() != cells || self.idx.len() != cells {
            candle_core::bail!(
                "fast max pool grad: unexpected gradient shape {:?}",
                l.shape()
            );
        }
        let ((n, c, _, _), lanes) = super::conv::act_dims(l.shape())?;
        let out = super::dispatch1(
            "fast max pool grad",
            "output gradient",
            s,
            l,
            |dy: &[f32]| max_pool_bwd(dy, &self.idx, &g),
            |dy: &[f64]| max_pool_bwd(dy, &self.idx, &g),
        )?;
        Ok((out, super::conv::act_shape(n, c, g.h, g.w, lanes)))
    }
}

/// Average pooling over (N, C, H, W) with a square `kernel` and `stride`, no padding.
/// Output (N, C, H_out, W_out), H_out = floor((H - kernel) / stride) + 1. Differentiable.
pub fn avg_pool2d(x: &Tensor, kernel: usize, stride: usize) -> Result<Tensor> {
    let (ho, wo) = check_args(x, kernel, stride, 0)?;
    let scale = 1.0 / (kernel * kernel) as f64;
    if kernel == stride {
        // Non-overlapping windows: one reshape and a sum, much cheaper than k^2 views.
        let (n, c, _, _) = x.dims4()?;
        let t = x
            .narrow(2, 0, ho * kernel)?
            .narrow(3, 0, wo * kernel)?
            .reshape((n, c, ho, kernel, wo, kernel))?
            .sum(5)?
            .sum(3)?;
        return Ok((t * scale)?);
    }
    let sum = reduce_windows(x, kernel, stride, 0, 0.0, |a, b| a + b)?;
    Ok((sum * scale)?)
}

/// Global average pool: (N, C, H, W) -> (N, C).
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    if x.rank() != 4 {
        return Err(Error::Shape {
            what: "global average pool input".into(),
            expected: "(N, C, H, W)".into(),
            got: format!("{:?}", x.dims()),
        });
    }
    Ok(x.mean((2, 3))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(shape: (usize, usize, usize, usize), seed: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..shape.0 * shape.1 * shape.2 * shape.3)
            .map(|_| rng.random::<f64>() * 2.0 - 1.0)
            .collect()
    }

    /// Straightforward loop pooling, the oracle for the forward pass.
    fn naive(
        x: &[f64],
        (n, c, h, w): (usize, usize, usize, usize),
        k: usize,
        s: usize,
        p: usize,
        max: bool,
    ) -> Vec<f64> {
        let ho = (h + 2 * p - k) / s + 1;
        let wo = (w + 2 * p - k) / s + 1;
        let mut out = Vec::new();
        for b in 0..n * c {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut m = f64::NEG_INFINITY;
                    let mut sum = 0.0;
                    for ky in 0..k {
                        for kx in 0..k {
                            let y = (oy * s + ky) as isize - p as isize;
                            let xx = (ox * s + kx) as isize - p as isize;
                            if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                                continue;
                            }
                            let v = x[b * h * w + y as usize * w + xx as usize];
                            m = m.max(v);
                            sum += v;
                        }
                    }
                    out.push(if max { m } else { sum / (k * k) as f64 });
                }
            }
        }
        out
    }

    /// (N, C, H, W), kernel, stride, padding.
    type Case = ((usize, usize, usize, usize), usize, usize, usize);
    const CASES: &[Case] = &[
        ((2, 3, 7, 9), 3, 2, 1), // ResNet stem pool on odd sizes
        ((1, 2, 8, 8), 3, 2, 1),
        ((1, 2, 5, 6), 2, 1, 0),
        ((2, 1, 10, 11), 3, 3, 0),
        ((1, 1, 6, 7), 2, 2, 1),
        ((1, 2, 9, 5), 5, 2, 2),
        ((1, 1, 4, 4), 1, 1, 0),
    ];

    type MaxPool = fn(&Tensor, usize, usize, usize) -> Result<Tensor>;
    /// Both max pools: the fast op and the composite of candle ops.
    const MAX_POOLS: [(&str, MaxPool); 2] =
        [("fast", max_pool2d_fast), ("stock", max_pool2d_stock)];

    #[test]
    fn max_pool_forward_matches_naive_loop() {
        let dev = Device::Cpu;
        for (i, &(shape, k, s, p)) in CASES.iter().enumerate() {
            for (name, pool) in MAX_POOLS {
                let x = random(shape, i as u64);
                let t = Tensor::from_vec(x.clone(), shape, &dev).unwrap();
                let got = pool(&t, k, s, p).unwrap();
                let want = naive(&x, shape, k, s, p, true);
                assert_eq!(
                    got.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
                    want,
                    "{name} {shape:?} k{k} s{s} p{p}"
                );
            }
        }
    }

    #[test]
    fn avg_pool_forward_matches_naive_loop() {
        let dev = Device::Cpu;
        for (i, &(shape, k, s, p)) in CASES.iter().enumerate() {
            if p > 0 {
                continue;
            }
            let x = random(shape, 100 + i as u64);
            let t = Tensor::from_vec(x.clone(), shape, &dev).unwrap();
            let got = avg_pool2d(&t, k, s)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let want = naive(&x, shape, k, s, 0, false);
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-12, "{shape:?} k{k} s{s}: {a} vs {b}");
            }
        }
    }

    /// Central finite differences of L = sum(pool(x) * r) against autograd, in f64.
    fn check_fd(max: Option<MaxPool>) {
        let dev = Device::Cpu;
        for (i, &(shape, k, s, p)) in CASES.iter().enumerate() {
            if max.is_none() && p > 0 {
                continue;
            }
            let x = random(shape, 200 + i as u64);
            let pool = |t: &Tensor| {
                if let Some(max_pool) = max {
                    max_pool(t, k, s, p).unwrap()
                } else {
                    avg_pool2d(t, k, s).unwrap()
                }
            };
            let out_shape = pool(&Tensor::from_vec(x.clone(), shape, &dev).unwrap())
                .dims()
                .to_vec();
            let r = Tensor::from_vec(
                random((1, 1, 1, out_shape.iter().product()), 300 + i as u64),
                out_shape,
                &dev,
            )
            .unwrap();
            let loss = |xs: &[f64]| -> f64 {
                let t = Tensor::from_vec(xs.to_vec(), shape, &dev).unwrap();
                (pool(&t) * &r)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let var = Var::from_tensor(&Tensor::from_vec(x.clone(), shape, &dev).unwrap()).unwrap();
            let l = (pool(var.as_tensor()) * &r).unwrap().sum_all().unwrap();
            let grads = l.backward().unwrap();
            let g = grads
                .get(&var)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let eps = 1e-6;
            for j in 0..x.len() {
                let mut xp = x.clone();
                xp[j] += eps;
                let mut xm = x.clone();
                xm[j] -= eps;
                let fd = (loss(&xp) - loss(&xm)) / (2.0 * eps);
                assert!(
                    (fd - g[j]).abs() < 1e-7,
                    "{} {shape:?} k{k} s{s} p{p} element {j}: autograd {} vs fd {fd}",
                    if max.is_some() { "max" } else { "avg" },
                    g[j]
                );
            }
        }
    }

    #[test]
    fn max_pool_gradient_matches_finite_differences() {
        for (_, pool) in MAX_POOLS {
            check_fd(Some(pool));
        }
    }

    #[test]
    fn avg_pool_gradient_matches_finite_differences() {
        check_fd(None);
    }

    /// The fast op against the composite in f32 on a ResNet stem shape (no ties: continuous
    /// random input), forward and input gradient, and PyTorch's rules where they differ: a tie
    /// gives the whole gradient to the first maximum, a NaN propagates.
    #[test]
    fn fast_max_pool_matches_stock_and_pytorch_rules() {
        let dev = Device::Cpu;
        let shape = (3, 5, 17, 14);
        let x: Vec<f32> = random(shape, 7).iter().map(|&v| v as f32).collect();
        let var = Var::from_tensor(&Tensor::from_vec(x, shape, &dev).unwrap()).unwrap();
        let r = Tensor::from_vec(
            random((3, 5, 9, 7), 8)
                .iter()
                .map(|&v| v as f32)
                .collect::<Vec<_>>(),
            (3, 5, 9, 7),
            &dev,
        )
        .unwrap();
        let run = |pool: MaxPool| {
            let y = pool(var.as_tensor(), 3, 2, 1).unwrap();
            let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (flat(&y), flat(g.get(&var).unwrap()))
        };
        let (yf, gf) = run(max_pool2d_fast);
        let (ys, gs) = run(max_pool2d_stock);
        assert_eq!(yf, ys);
        for (a, b) in gf.iter().zip(&gs) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        // Ties and NaN: a 1x1x2x3 input, kernel 2, stride 1.
        let x = Var::from_tensor(
            &Tensor::new(&[[[[1f32, 1.0, 0.0], [0.0, f32::NAN, 2.0]]]], &dev).unwrap(),
        )
        .unwrap();
        let y = max_pool2d_fast(x.as_tensor(), 2, 1, 0).unwrap();
        let yv = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(yv[0].is_nan() && yv[1].is_nan(), "{yv:?}");
        let g = y.sum_all().unwrap().backward().unwrap();
        let gv = g
            .get(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(gv, vec![0.0, 0.0, 0.0, 0.0, 2.0, 0.0]);
        let x =
            Var::from_tensor(&Tensor::new(&[[[[1f32, 1.0], [1.0, 1.0]]]], &dev).unwrap()).unwrap();
        let g = max_pool2d_fast(x.as_tensor(), 2, 2, 0)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gv = g
            .get(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(
            gv,
            vec![1.0, 0.0, 0.0, 0.0],
            "a tie goes to the first maximum"
        );
    }

    /// Blocked activations ((N, C/L, H, W, L), L = 8 and 16) against the NCHW op: the same
    /// maxima and the same gradient (each to the first maximum of its window), with ties and
    /// NaNs placed in some lanes, for the stem's 3x3/2/1 pool and other windows, odd sizes.
    #[test]
    fn blocked_layout_matches_nchw() {
        use crate::kernels::layout::{to_blocked, to_plain};
        let dev = Device::Cpu;
        for &lanes in &[8usize, 16] {
            for &((n, c, h, w), k, st, p) in &[
                ((2, 32, 17, 14), 3, 2, 1),
                ((1, 16, 5, 6), 2, 1, 0),
                ((3, 48, 9, 9), 3, 3, 1),
            ] {
                let mut x: Vec<f32> = random((n, c, h, w), 40 + k as u64)
                    .iter()
                    .map(|&v| (v * 4.0).round() as f32) // coarse: many ties
                    .collect();
                x[5] = f32::NAN;
                x[h * w + 3] = f32::NAN;
                let xt = Tensor::from_vec(x, (n, c, h, w), &dev).unwrap();
                let (ho, wo) = ((h + 2 * p - k) / st + 1, (w + 2 * p - k) / st + 1);
                let up = Tensor::from_vec(
                    random((n, c, ho, wo), 9)
                        .iter()
                        .map(|&v| v as f32)
                        .collect::<Vec<_>>(),
                    (n, c, ho, wo),
                    &dev,
                )
                .unwrap();
                let xa = Var::from_tensor(&xt).unwrap();
                let xb = Var::from_tensor(&to_blocked(&xt, lanes).unwrap()).unwrap();
                let ya = max_pool2d_fast(xa.as_tensor(), k, st, p).unwrap();
                let yb = max_pool2d_fast(xb.as_tensor(), k, st, p).unwrap();
                assert_eq!(yb.dims(), [n, c / lanes, ho, wo, lanes]);
                let yb = to_plain(&yb).unwrap();
                let ga = (&ya * &up).unwrap().sum_all().unwrap().backward().unwrap();
                let gb = (&yb * &up).unwrap().sum_all().unwrap().backward().unwrap();
                let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let bits = |v: Vec<f32>| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                let case = format!("L={lanes} {n}x{c}x{h}x{w} k={k} s={st} p={p}");
                assert_eq!(bits(flat(&yb)), bits(flat(&ya)), "y {case}");
                let dxb = to_plain(gb.get(&xb).unwrap()).unwrap();
                assert_eq!(flat(&dxb), flat(ga.get(&xa).unwrap()), "dx {case}");
            }
        }
    }

    /// The per-cell search that `max_pool_row` turns inside out: input index (in its plane) of
    /// the first maximum of output cell (oy, ox); `None` if the window holds only padding.
    fn cell_argmax(g: &PoolGeom, plane: &[f32], oy: usize, ox: usize) -> Option<usize> {
        let y0 = (oy * g.s) as isize - g.p as isize;
        let x0 = (ox * g.s) as isize - g.p as isize;
        let (ya, yb) = (
            y0.max(0) as usize,
            ((y0 + g.k as isize).min(g.h as isize)) as usize,
        );
        let (xa, xb) = (
            x0.max(0) as usize,
            ((x0 + g.k as isize).min(g.w as isize)) as usize,
        );
        if ya >= yb || xa >= xb {
            return None;
        }
        let mut best = (ya * g.w + xa, plane[ya * g.w + xa]);
        for y in ya..yb {
            let row = &plane[y * g.w + xa..y * g.w + xb];
            for (i, &v) in row.iter().enumerate() {
                // PyTorch's rule: strictly greater (the first maximum wins), and a NaN always
                // takes the cell (`v != v`), so a NaN in the window propagates.
                #[allow(clippy::eq_op)]
                if v > best.1 || v != v {
                    best = (y * g.w + xa + i, v);
                }
            }
        }
        Some(best.0)
    }

    /// The row search picks the same cell as the per-cell search, on random shapes, kernels,
    /// strides and paddings, with ties (values on a coarse grid) and NaNs in the input.
    #[test]
    fn row_search_matches_cell_search() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for case in 0..300 {
            let k = rng.random_range(1..=5usize);
            let s = rng.random_range(1..=3usize);
            let p = rng.random_range(0..=k / 2);
            let h = rng.random_range(k.max(1)..=12usize);
            let w = rng.random_range(k.max(1)..=12usize);
            let (ho, wo) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
            let g = PoolGeom::new((1, 1, h, w), 1, k, s, p, (ho, wo));
            let plane: Vec<f32> = (0..h * w)
                .map(|_| match rng.random_range(0..20) {
                    0 => f32::NAN,
                    _ => rng.random_range(0..4) as f32,
                })
                .collect();
            let (y, idx) = max_pool_fwd(&plane, &g);
            for oy in 0..ho {
                for ox in 0..wo {
                    let o = oy * wo + ox;
                    let want = cell_argmax(&g, &plane, oy, ox).map_or(NO_ARGMAX, |i| i as u32);
                    assert_eq!(
                        idx[o], want,
                        "case {case}: h{h} w{w} k{k} s{s} p{p} at ({oy}, {ox})"
                    );
                    let v = plane[want as usize];
                    assert!(y[o] == v || (y[o].is_nan() && v.is_nan()));
                }
            }
        }
    }

    #[test]
    fn bad_arguments_are_named() {
        let t = Tensor::zeros((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let e = max_pool2d(&t, 3, 2, 2).unwrap_err().to_string();
        assert!(e.contains("padding"), "{e}");
        let e = max_pool2d(&t, 3, 0, 1).unwrap_err().to_string();
        assert!(e.contains("stride"), "{e}");
        let e = avg_pool2d(&t, 5, 1).unwrap_err().to_string();
        assert!(e.contains("kernel"), "{e}");
        let t3 = Tensor::zeros((1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(max_pool2d(&t3, 2, 2, 0).is_err());
    }
}
