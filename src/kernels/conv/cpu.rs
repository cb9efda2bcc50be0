//! Fast CPU 2-D convolution: forward, input gradient and weight gradient as candle custom ops,
//! built on one matrix product ([`crate::kernels::gemm`]: OpenBLAS or the `gemm` crate) with
//! im2col/col2im.
//!
//! Why hand-written: candle 0.11 computes the input gradient of a convolution with a direct
//! `conv_transpose2d` loop and the weight gradient with a second convolution over transposed
//! tensors; both are 5-10x slower than a GEMM formulation on CPU (docs/performance.md).
//!
//! Layout. For one image, `col` is the (K, P) matrix with K = C_in·kH·kW (row `(c, ki, kj)`) and
//! P = H_out·W_out, so that the output (C_out, P) = W (C_out, K) · col (K, P) is already NCHW.
//! Images are processed in groups of `g` whose columns are laid side by side, (K, g·P), so that
//! the GEMM stays wide where the spatial size is small (deep layers); groups run in parallel over
//! candle's rayon pool (`RAYON_NUM_THREADS`), or, when there are fewer groups than threads, one
//! after the other with the product, im2col, col2im and the layout copies each shared out over
//! the threads.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use crate::kernels::for_each_chunk;
use crate::kernels::gemm::{gemm_rm, Mat, Shared};

/// Target width (columns) of one GEMM: wide enough to amortise packing the weight matrix.
const TARGET_COLS: usize = 1024;

/// Geometry of one convolution: input (n, c_in, h, w), kernel (c_out, c_in, kh, kw).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geom {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub ho: usize,
    pub wo: usize,
    /// Layout of the input and output activations: 1 = NCHW, 8 or 16 = oneDNN's nChw8c /
    /// nChw16c, held as (N, C / lanes, H, W, lanes) tensors (oneDNN passes only).
    pub lanes_in: usize,
    pub lanes_out: usize,
}

impl Geom {
    /// Checked geometry; `None` if the kernel does not fit the padded input or stride is 0.
    pub fn new(
        x: (usize, usize, usize, usize),
        k: (usize, usize, usize, usize),
        stride: usize,
        pad: usize,
    ) -> Option<Self> {
        let (n, c_in, h, w) = x;
        let (c_out, c_in_k, kh, kw) = k;
        if c_in != c_in_k
            || stride == 0
            || kh == 0
            || kw == 0
            || h + 2 * pad < kh
            || w + 2 * pad < kw
        {
            return None;
        }
        Some(Self {
            n,
            c_in,
            h,
            w,
            c_out,
            kh,
            kw,
            stride,
            pad,
            ho: (h + 2 * pad - kh) / stride + 1,
            wo: (w + 2 * pad - kw) / stride + 1,
            lanes_in: 1,
            lanes_out: 1,
        })
    }
    pub(crate) fn k(&self) -> usize {
        self.c_in * self.kh * self.kw
    }
    fn p(&self) -> usize {
        self.ho * self.wo
    }
    pub(crate) fn in_len(&self) -> usize {
        self.c_in * self.h * self.w
    }
    pub(crate) fn out_len(&self) -> usize {
        self.c_out * self.p()
    }
    /// Shape of the input activations (or their gradient) in this geometry's layout.
    fn in_shape(&self) -> Shape {
        act_shape(self.n, self.c_in, self.h, self.w, self.lanes_in)
    }
    /// Shape of the output activations (or their gradient) in this geometry's layout.
    fn out_shape(&self) -> Shape {
        act_shape(self.n, self.c_out, self.ho, self.wo, self.lanes_out)
    }
    fn plain(&self) -> bool {
        self.lanes_in == 1 && self.lanes_out == 1
    }
    /// 1x1, stride 1, no padding: the image itself is its `col` matrix.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }
}

/// How the batch is cut: `g` images per group, groups split into `chunks` contiguous runs (one
/// per thread); with one chunk the GEMM gets the threads instead.
struct Plan {
    g: usize,
    /// (first image, image count) of each chunk
    chunks: Vec<(usize, usize)>,
    /// threads of each product: all of them with one chunk, else 1
    inner: usize,
}

fn plan(geom: &Geom) -> Plan {
    let threads = candle_core::utils::get_num_threads().max(1);
    let n = geom.n.max(1);
    let p = geom.p().max(1);
    let g0 = TARGET_COLS.div_ceil(p).clamp(1, n);
    let mut groups = n.div_ceil(g0);
    if groups < threads {
        groups = 1;
    } else {
        groups = groups.div_ceil(threads) * threads;
        groups = groups.min(n);
    }
    let g = n.div_ceil(groups);
    let groups = n.div_ceil(g);
    let n_chunks = if groups >= threads {
        threads.min(groups)
    } else {
        1
    };
    let mut chunks = Vec::with_capacity(n_chunks);
    for c in 0..n_chunks {
        let g_lo = c * groups / n_chunks;
        let g_hi = (c + 1) * groups / n_chunks;
        let lo = (g_lo * g).min(geom.n);
        let hi = (g_hi * g).min(geom.n);
        chunks.push((lo, hi - lo));
    }
    let inner = if n_chunks == 1 { threads } else { 1 };
    Plan { g, chunks, inner }
}

/// Splits `v` into consecutive mutable pieces of `sizes[i] * unit` elements.
fn split_mut<T>(mut v: &mut [T], sizes: impl Iterator<Item = usize>, unit: usize) -> Vec<&mut [T]> {
    let mut out = Vec::new();
    for s in sizes {
        let (a, b) = v.split_at_mut(s * unit);
        out.push(a);
        v = b;
    }
    out
}

/// Valid output columns [lo, hi) for kernel column `kj`: those whose input column is inside.
#[inline]
fn valid_range(kj: usize, pad: usize, stride: usize, w: usize, wo: usize) -> (usize, usize) {
    let lo = if kj >= pad {
        0
    } else {
        (pad - kj).div_ceil(stride)
    };
    let hi = if w + pad > kj {
        (w + pad - kj).div_ceil(stride).min(wo)
    } else {
        0
    };
    let lo = lo.min(wo);
    (lo, hi.max(lo))
}

/// im2col of the images [img0, img0 + gi) of `x` side by side into `col` (K, gi·P): image j's
/// columns start at j·P. With `threads` > 1 the channels are shared out (each owns kH·kW rows).
fn im2col_group<T: WithDType>(
    x: &[T],
    g: &Geom,
    img0: usize,
    gi: usize,
    col: &mut [T],
    threads: usize,
) {
    let (p, cols, plane, in_len) = (g.p(), gi * g.p(), g.h * g.w, g.in_len());
    let per_channel = g.kh * g.kw * cols;
    let one = |(c, rows): (usize, &mut [T])| {
        for j in 0..gi {
            let xi = &x[(img0 + j) * in_len + c * plane..(img0 + j) * in_len + (c + 1) * plane];
            im2col_plane(xi, g, &mut rows[j * p..], cols);
        }
    };
    for_each_chunk(
        &mut col[..g.c_in * per_channel],
        per_channel,
        threads > 1,
        one,
    );
}

/// im2col of one channel plane (H, W) into its kH·kW rows of `dst` (row stride `row_stride`).
fn im2col_plane<T: WithDType>(plane: &[T], g: &Geom, dst: &mut [T], row_stride: usize) {
    let (p, s, pad) = (g.p(), g.stride, g.pad);
    for ki in 0..g.kh {
        for kj in 0..g.kw {
            let r = ki * g.kw + kj;
            let row = &mut dst[r * row_stride..r * row_stride + p];
            let (lo, hi) = valid_range(kj, pad, s, g.w, g.wo);
            for oh in 0..g.ho {
                let out = &mut row[oh * g.wo..(oh + 1) * g.wo];
                let ih = (oh * s + ki) as isize - pad as isize;
                if ih < 0 || ih >= g.h as isize {
                    out.fill(T::zero());
                    continue;
                }
                let src = &plane[ih as usize * g.w..(ih as usize + 1) * g.w];
                out[..lo].fill(T::zero());
                out[hi..].fill(T::zero());
                if s == 1 {
                    let start = lo + kj - pad;
                    out[lo..hi].copy_from_slice(&src[start..start + hi - lo]);
                } else {
                    for (ow, o) in out[lo..hi].iter_mut().enumerate() {
                        *o = src[(ow + lo) * s + kj - pad];
                    }
                }
            }
        }
    }
}

/// col2im of `col` (row r at `r * row_stride`) added into one image gradient `dx` (C_in, H, W).
fn col2im<T: WithDType>(col: &[T], g: &Geom, row_stride: usize, dx: &mut [T]) {
    let (p, s, pad) = (g.p(), g.stride, g.pad);
    for c in 0..g.c_in {
        let plane = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let r = (c * g.kh + ki) * g.kw + kj;
                let row = &col[r * row_stride..r * row_stride + p];
                let (lo, hi) = valid_range(kj, pad, s, g.w, g.wo);
                for oh in 0..g.ho {
                    let ih = (oh * s + ki) as isize - pad as isize;
                    if ih < 0 || ih >= g.h as isize {
                        continue;
                    }
                    let src = &row[oh * g.wo..(oh + 1) * g.wo];
                    let dst = &mut plane[ih as usize * g.w..(ih as usize + 1) * g.w];
                    if s == 1 {
                        let start = lo + kj - pad;
                        for (d, v) in dst[start..start + hi - lo].iter_mut().zip(&src[lo..hi]) {
                            *d += *v;
                        }
                    } else {
                        for ow in lo..hi {
                            dst[ow * s + kj - pad] += src[ow];
                        }
                    }
                }
            }
        }
    }
}

/// Forward: y (N, C_out, H_out, W_out) from x (N, C_in, H, W) and w (C_out, C_in, kH, kW).
pub(crate) fn forward<T: WithDType>(x: &[T], w: &[T], g: &Geom) -> Vec<T> {
    let (k, p, out_len, in_len) = (g.k(), g.p(), g.out_len(), g.in_len());
    // SAFETY: every image's (C_out, P) block is written below, by a product (beta = 0) or the
    // copy out of `tmp`.
    let mut y = unsafe { super::super::uninit_vec::<T>(g.n * out_len) };
    let pl = plan(g);
    let pieces = split_mut(&mut y, pl.chunks.iter().map(|c| c.1), out_len);
    let wmat = Mat {
        ptr: w.as_ptr(),
        rs: k as isize,
        cs: 1,
    };
    let wmat_addr = Shared(wmat);
    pieces
        .into_par_iter()
        .zip(pl.chunks.par_iter())
        .for_each(|(ychunk, &(first, count))| {
            let wmat = wmat_addr.get();
            let mut col: Vec<T> = Vec::new();
            let mut tmp: Vec<T> = Vec::new();
            let mut i = 0;
            while i < count {
                let gi = pl.g.min(count - i);
                let cols = gi * p;
                let img0 = first + i;
                let rhs = if gi == 1 && g.pointwise() {
                    Mat {
                        ptr: x[img0 * in_len..].as_ptr(),
                        rs: p as isize,
                        cs: 1,
                    }
                } else {
                    // SAFETY: im2col writes all K rows of the gi·P columns.
                    unsafe { super::super::set_len_uninit(&mut col, k * cols) };
                    im2col_group(x, g, img0, gi, &mut col, pl.inner);
                    Mat {
                        ptr: col.as_ptr(),
                        rs: cols as isize,
                        cs: 1,
                    }
                };
                let ys = &mut ychunk[i * out_len..(i + gi) * out_len];
                if gi == 1 {
                    // SAFETY: shapes as documented: w (C_out, K), rhs (K, P), ys (C_out, P).
                    unsafe { gemm_rm(g.c_out, p, k, ys, false, wmat, rhs, pl.inner) };
                } else {
                    // SAFETY: the product below (beta = 0) writes all of it.
                    unsafe { super::super::set_len_uninit(&mut tmp, g.c_out * cols) };
                    // SAFETY: w (C_out, K), col (K, g·P), tmp (C_out, g·P).
                    unsafe { gemm_rm(g.c_out, cols, k, &mut tmp, false, wmat, rhs, pl.inner) };
                    let tmp = &tmp;
                    let copy = |(j, yj): (usize, &mut [T])| {
                        for co in 0..g.c_out {
                            yj[co * p..(co + 1) * p]
                                .copy_from_slice(&tmp[co * cols + j * p..co * cols + (j + 1) * p]);
                        }
                    };
                    for_each_chunk(ys, out_len, pl.inner > 1, copy);
                }
                i += gi;
            }
        });
    y
}

/// Gathers images [img0, img0+gi) of dy (N, C_out, P) into (C_out, gi·P), output channels shared
/// out over `threads`.
fn gather_dy<T: WithDType>(
    dy: &[T],
    g: &Geom,
    img0: usize,
    gi: usize,
    dst: &mut Vec<T>,
    threads: usize,
) {
    let (p, out_len, cols) = (g.p(), g.out_len(), gi * g.p());
    // SAFETY: the loop below copies every (channel, image) row.
    unsafe { super::super::set_len_uninit(dst, g.c_out * cols) };
    let one = |(co, row): (usize, &mut [T])| {
        for j in 0..gi {
            let src = &dy[(img0 + j) * out_len + co * p..(img0 + j) * out_len + (co + 1) * p];
            row[j * p..(j + 1) * p].copy_from_slice(src);
        }
    };
    for_each_chunk(&mut dst[..g.c_out * cols], cols, threads > 1, one);
}

/// Input gradient: dx (N, C_in, H, W) from dy (N, C_out, H_out, W_out) and w.
pub(crate) fn grad_input<T: WithDType>(dy: &[T], w: &[T], g: &Geom) -> Vec<T> {
    let (k, p, out_len, in_len) = (g.k(), g.p(), g.out_len(), g.in_len());
    let mut dx = vec![T::zero(); g.n * in_len];
    let pl = plan(g);
    let pieces = split_mut(&mut dx, pl.chunks.iter().map(|c| c.1), in_len);
    // W^T as a (K, C_out) view of the row-major (C_out, K) weight.
    let wt = Shared(Mat {
        ptr: w.as_ptr(),
        rs: 1,
        cs: k as isize,
    });
    pieces
        .into_par_iter()
        .zip(pl.chunks.par_iter())
        .for_each(|(dxchunk, &(first, count))| {
            let wt = wt.get();
            let mut col: Vec<T> = Vec::new();
            let mut dyg: Vec<T> = Vec::new();
            let mut i = 0;
            while i < count {
                let gi = pl.g.min(count - i);
                let cols = gi * p;
                let img0 = first + i;
                let rhs = if gi == 1 {
                    Mat {
                        ptr: dy[img0 * out_len..].as_ptr(),
                        rs: p as isize,
                        cs: 1,
                    }
                } else {
                    gather_dy(dy, g, img0, gi, &mut dyg, pl.inner);
                    Mat {
                        ptr: dyg.as_ptr(),
                        rs: cols as isize,
                        cs: 1,
                    }
                };
                if gi == 1 && g.pointwise() {
                    let d = &mut dxchunk[i * in_len..(i + 1) * in_len];
                    // SAFETY: W^T (C_in, C_out), dy (C_out, P), dx (C_in, P).
                    unsafe { gemm_rm(k, p, g.c_out, d, false, wt, rhs, pl.inner) };
                } else {
                    // SAFETY: the product below (beta = 0) writes all of col.
                    unsafe { super::super::set_len_uninit(&mut col, k * cols) };
                    // SAFETY: W^T (K, C_out), dy (C_out, g·P), col (K, g·P).
                    unsafe { gemm_rm(k, cols, g.c_out, &mut col, false, wt, rhs, pl.inner) };
                    let col = &col;
                    let back = |(j, dxj): (usize, &mut [T])| col2im(&col[j * p..], g, cols, dxj);
                    let dxs = &mut dxchunk[i * in_len..(i + gi) * in_len];
                    for_each_chunk(dxs, in_len, pl.inner > 1, back);
                }
                i += gi;
            }
        });
    dx
}

/// Weight gradient: dw (C_out, C_in, kH, kW) = Σ_n dy_n · col_nᵀ.
pub(crate) fn grad_weight<T: WithDType>(x: &[T], dy: &[T], g: &Geom) -> Vec<T> {
    let (k, p, out_len, in_len) = (g.k(), g.p(), g.out_len(), g.in_len());
    let pl = plan(g);
    let partials: Vec<Vec<T>> = pl
        .chunks
        .par_iter()
        .map(|&(first, count)| {
            let mut dw = vec![T::zero(); g.c_out * k];
            let mut col: Vec<T> = Vec::new();
            let mut dyg: Vec<T> = Vec::new();
            let mut i = 0;
            while i < count {
                let gi = pl.g.min(count - i);
                let cols = gi * p;
                let img0 = first + i;
                let lhs = if gi == 1 {
                    Mat {
                        ptr: dy[img0 * out_len..].as_ptr(),
                        rs: p as isize,
                        cs: 1,
                    }
                } else {
                    gather_dy(dy, g, img0, gi, &mut dyg, pl.inner);
                    Mat {
                        ptr: dyg.as_ptr(),
                        rs: cols as isize,
                        cs: 1,
                    }
                };
                // colᵀ as a (g·P, K) view of the row-major (K, g·P) col.
                let rhs = if gi == 1 && g.pointwise() {
                    Mat {
                        ptr: x[img0 * in_len..].as_ptr(),
                        rs: 1,
                        cs: p as isize,
                    }
                } else {
                    // SAFETY: im2col writes all K rows of the gi·P columns.
                    unsafe { super::super::set_len_uninit(&mut col, k * cols) };
                    im2col_group(x, g, img0, gi, &mut col, pl.inner);
                    Mat {
                        ptr: col.as_ptr(),
                        rs: 1,
                        cs: cols as isize,
                    }
                };
                // SAFETY: dy (C_out, g·P), colᵀ (g·P, K), dw (C_out, K).
                unsafe { gemm_rm(g.c_out, k, cols, &mut dw, i > 0, lhs, rhs, pl.inner) };
                i += gi;
            }
            dw
        })
        .collect();
    let mut it = partials.into_iter();
    let mut dw = it.next().unwrap_or_else(|| vec![T::zero(); g.c_out * k]);
    for part in it {
        for (a, b) in dw.iter_mut().zip(part) {
            *a += b;
        }
    }
    dw
}

/// One f32 pass: oneDNN when it is in the build and chosen ([`super::onednn::enabled`]), else
/// the GEMM kernels above. f64 always takes the GEMM kernels (oneDNN has no f64 convolution).
fn f32_pass(pass: Pass, a: &[f32], b: &[f32], g: &Geom) -> candle_core::Result<Vec<f32>> {
    if super::onednn::enabled(pass) {
        return super::onednn::conv(pass, g, a, b);
    }
    if !g.plain() {
        candle_core::bail!("fast conv2d {pass:?}: blocked activations need oneDNN for this pass");
    }
    Ok(match pass {
        Pass::Forward => forward(a, b, g),
        Pass::GradInput => grad_input(a, b, g),
        Pass::GradWeight => grad_weight(a, b, g),
    })
}

/// The three passes of a convolution: y from (x, w), dx from (dy, w), dw from (x, dy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Forward,
    GradInput,
    GradWeight,
}

/// An activation's shape: (N, C, H, W) with 1 lane, else (N, C / lanes, H, W, lanes).
pub(crate) fn act_shape(n: usize, c: usize, h: usize, w: usize, lanes: usize) -> Shape {
    if lanes == 1 {
        Shape::from((n, c, h, w))
    } else {
        Shape::from(vec![n, c / lanes, h, w, lanes])
    }
}

/// (N, C, H, W) and the lanes of an activation's shape: rank 4 (NCHW) or rank 5 (blocked).
pub(crate) fn act_dims(
    shape: &Shape,
) -> candle_core::Result<((usize, usize, usize, usize), usize)> {
    match *shape.dims() {
        [n, c, h, w] => Ok(((n, c, h, w), 1)),
        [n, cb, h, w, lanes] if lanes == 8 || lanes == 16 => Ok(((n, cb * lanes, h, w), lanes)),
        _ => candle_core::bail!(
            "activation of shape {shape:?}: expected (N, C, H, W) or blocked (N, C/L, H, W, L), L = 8 or 16"
        ),
    }
}

fn geom_of(
    l1: &Layout,
    l2: &Layout,
    stride: usize,
    pad: usize,
    lanes_out: usize,
) -> candle_core::Result<Geom> {
    let (x, lanes_in) = act_dims(l1.shape())?;
    let k = l2.shape().dims4()?;
    if !matches!(lanes_out, 1 | 8 | 16) || k.0 % lanes_out != 0 {
        candle_core::bail!(
            "fast conv2d: {} output channels in blocks of {lanes_out}",
            k.0
        );
    }
    match Geom::new(x, k, stride, pad) {
        Some(g) => Ok(Geom {
            lanes_in,
            lanes_out,
            ..g
        }),
        None => candle_core::bail!("fast conv2d: input {x:?} and kernel {k:?} do not fit with stride {stride}, padding {pad}"),
    }
}

/// The f64 passes: the GEMM kernels, plain layout only.
fn f64_plain(g: &Geom) -> candle_core::Result<()> {
    if !g.plain() {
        candle_core::bail!("fast conv2d: blocked activations are f32 (oneDNN) only");
    }
    Ok(())
}

/// Forward op: `x.apply_op2(w, Conv2dOp { stride, pad, lanes_out })`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Conv2dOp {
    pub stride: usize,
    pub pad: usize,
    /// Output layout: 1 = NCHW, 8/16 = blocked (the input's layout is read from its shape).
    pub lanes_out: usize,
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "spectral-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = geom_of(l1, l2, self.stride, self.pad, self.lanes_out)?;
        let f32_ = |a: &[f32], b: &[f32]| f32_pass(Pass::Forward, a, b, &g);
        let f64_ = |a: &[f64], b: &[f64]| f64_plain(&g).map(|_| forward(a, b, &g));
        let out = super::super::try_dispatch2("fast conv2d", s1, l1, s2, l2, f32_, f64_)?;
        Ok((out, g.out_shape()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = geom_of(
            x.layout(),
            w.layout(),
            self.stride,
            self.pad,
            self.lanes_out,
        )?;
        let dy = dy.contiguous()?;
        // Gradients only for what is tracked: the images of a training batch are not, and
        // the weights need none when only the input gradient is wanted.
        let dx = if x.track_op() {
            Some(dy.apply_op2_no_bwd(w, &GradInputOp { g })?)
        } else {
            None
        };
        let dw = if w.track_op() && super::weight_grads_enabled() {
            Some(x.apply_op2_no_bwd(&dy, &GradWeightOp { g })?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// Input-gradient op: `dy.apply_op2_no_bwd(w, GradInputOp { g })` -> dx.
struct GradInputOp {
    g: Geom,
}

impl CustomOp2 for GradInputOp {
    fn name(&self) -> &'static str {
        "spectral-conv2d-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.g;
        if *l1.shape() != g.out_shape() || l2.shape().dims() != [g.c_out, g.c_in, g.kh, g.kw] {
            candle_core::bail!(
                "fast conv2d grad-input: unexpected shapes {:?} {:?}",
                l1.shape(),
                l2.shape()
            );
        }
        let f32_ = |a: &[f32], b: &[f32]| f32_pass(Pass::GradInput, a, b, &g);
        let f64_ = |a: &[f64], b: &[f64]| f64_plain(&g).map(|_| grad_input(a, b, &g));
        let out = super::super::try_dispatch2("fast conv2d", s1, l1, s2, l2, f32_, f64_)?;
        Ok((out, g.in_shape()))
    }
}

/// Weight-gradient op: `x.apply_op2_no_bwd(dy, GradWeightOp { g })` -> dw.
struct GradWeightOp {
    g: Geom,
}

impl CustomOp2 for GradWeightOp {
    fn name(&self) -> &'static str {
        "spectral-conv2d-grad-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.g;
        if *l1.shape() != g.in_shape() || *l2.shape() != g.out_shape() {
            candle_core::bail!(
                "fast conv2d grad-weight: unexpected shapes {:?} {:?}",
                l1.shape(),
                l2.shape()
            );
        }
        let f32_ = |a: &[f32], b: &[f32]| f32_pass(Pass::GradWeight, a, b, &g);
        let f64_ = |a: &[f64], b: &[f64]| f64_plain(&g).map(|_| grad_weight(a, b, &g));
        let out = super::super::try_dispatch2("fast conv2d", s1, l1, s2, l2, f32_, f64_)?;
        Ok((out, Shape::from((g.c_out, g.c_in, g.kh, g.kw))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// Largest difference relative to the largest magnitude of `b`.
    fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
            / scale
    }

    /// oneDNN's three passes against the GEMM kernels (which conv.rs's tests check against stock
    /// candle and finite differences): kernels 1/3/7, strides 1/2/3, paddings 0/1/3, batches
    /// 1/4/5 (4: runs of one size on 2 threads share one copy of the weights), non-square odd
    /// sizes, including output sizes where the stride does not divide
    /// (H + 2p - kH) (oneDNN's right padding is then smaller than the left). Without oneDNN
    /// there is nothing to compare, unless `SPECTRAL_REQUIRE_ONEDNN=1` (scripts/test.sh sets it,
    /// so that CI cannot pass this test by not having the library).
    #[test]
    fn onednn_matches_gemm_kernels() {
        if !super::super::onednn::loaded_for_test() {
            return;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let mut geoms = Vec::new();
        for &k in &[1usize, 3, 7] {
            for &stride in &[1usize, 2, 3] {
                for &pad in &[0usize, 1, 3] {
                    for &n in &[1usize, 4, 5] {
                        let (h, w) = (
                            k + rng.random_range(0..8usize),
                            k + rng.random_range(0..9usize),
                        );
                        let (c_in, c_out) =
                            (rng.random_range(1..20usize), rng.random_range(1..20usize));
                        geoms.push(
                            Geom::new((n, c_in, h, w), (c_out, c_in, k, k), stride, pad).unwrap(),
                        );
                    }
                }
            }
        }
        // Channels in whole blocks of 16 (the activations then travel in oneDNN's nChw16c
        // layout on AVX-512, nChw8c on AVX2), a 3-channel stem (plain input, blocked output),
        // and weights large against the batch (the weight gradient on one OpenMP team).
        for (n, c_in, h, w, c_out, k, stride, pad) in [
            (5, 32, 6, 7, 48, 3, 1, 1),
            (4, 16, 9, 9, 32, 3, 2, 1),
            (3, 3, 13, 13, 64, 7, 2, 3),
            (2, 64, 5, 5, 128, 1, 2, 0),
            (5, 96, 2, 2, 96, 3, 1, 1),
        ] {
            geoms.push(Geom::new((n, c_in, h, w), (c_out, c_in, k, k), stride, pad).unwrap());
        }
        for g in &geoms {
            let g = *g;
            let x = random(&mut rng, g.n * g.in_len());
            let wt = random(&mut rng, g.c_out * g.k());
            let dy = random(&mut rng, g.n * g.out_len());
            let on = |p, a: &[f32], b: &[f32]| super::super::onednn::conv(p, &g, a, b).unwrap();
            let d = rel_diff(&on(Pass::Forward, &x, &wt), &forward(&x, &wt, &g));
            assert!(d < 1e-5, "forward {g:?}: {d}");
            let d = rel_diff(&on(Pass::GradInput, &dy, &wt), &grad_input(&dy, &wt, &g));
            assert!(d < 1e-5, "grad input {g:?}: {d}");
            let d = rel_diff(&on(Pass::GradWeight, &x, &dy), &grad_weight(&x, &dy, &g));
            assert!(d < 1e-5, "grad weight {g:?}: {d}");
        }
        assert_eq!(geoms.len(), 86);
    }

    #[test]
    fn onednn_rejects_wrong_lengths() {
        let g = Geom::new((2, 3, 8, 8), (4, 3, 3, 3), 1, 1).unwrap();
        let err = super::super::onednn::conv(Pass::Forward, &g, &[0.0; 10], &[0.0; 108])
            .unwrap_err()
            .to_string();
        if super::super::onednn::compiled() {
            assert!(err.contains("expected 384 and 108"), "{err}");
        } else {
            assert!(
                err.contains("no oneDNN") || err.contains("expected"),
                "{err}"
            );
        }
    }
}
