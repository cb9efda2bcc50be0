//! Blocked activations: the model's feature maps kept in oneDNN's channel-blocked layout between
//! convolutions (issue 5).
//!
//! oneDNN's direct convolution kernels read and write nChw16c (AVX-512) or nChw8c (AVX2): the
//! channels in blocks of L = 16 or 8, each block an H × W image of L-channel cells. With NCHW
//! tensors every convolution pass paid a reorder of its input into that layout and of its output
//! back (docs/performance.md, stops 13-15: what kept the whole-model rows below PyTorch's while
//! the convolutions alone were at its rate). Here the model converts once: the stem convolution
//! writes blocked output (every convolution whose output channels fill whole blocks does:
//! [`lanes_for`]), BatchNorm ([`super::batch_norm`]), the ReLU + residual add
//! ([`super::add_relu`], element-wise, any layout) and the max pool ([`super::max_pool2d`]) read
//! and write it as it is, and [`to_plain`] returns NCHW before the global pool. A blocked tensor
//! is an ordinary candle tensor of shape (N, C / L, H, W, L), so autograd needs nothing new: every
//! op's gradient comes back in its operand's layout.
//!
//! When: f32 on CPU, the fast kernels on ([`super::fast_cpu`], fused BatchNorm not switched off),
//! oneDNN running all three convolution passes, and env `SPECTRAL_BLOCKED` not `0` / `false` /
//! `off` (the switch, to compare with NCHW in one build); see [`blocked_lanes`].

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// Whether env `SPECTRAL_BLOCKED` allows blocked activations (default yes). Read once.
fn switch_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| !super::env_says_off("SPECTRAL_BLOCKED"))
}

thread_local! {
    static NCHW_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with blocked activations off on this thread (models take the NCHW path), whatever
/// the switch says: to compare the two layouts in one process.
pub fn with_nchw<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            NCHW_ONLY.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(NCHW_ONLY.with(|c| c.replace(true)));
    f()
}

/// The lanes L (16 with AVX-512, 8 with AVX2) a model should keep activations like `x` in, for
/// the feature maps whose channel count is a multiple of L ([`lanes_for`]); `None` when the
/// plain NCHW path is the one to take (not f32 on CPU, the fast kernels or oneDNN off, the
/// switch off).
pub fn blocked_lanes(x: &Tensor) -> Option<usize> {
    if !(switch_on()
        && !NCHW_ONLY.with(|c| c.get())
        && super::fast_cpu()
        && super::batch_norm::fast_bn()
        && x.device().is_cpu()
        && x.dtype() == DType::F32)
    {
        return None;
    }
    super::conv::onednn::block()
}

/// The layout of a feature map with `channels` channels when the model blocks by `block`
/// ([`blocked_lanes`], 1 for none): `block` where the channels fill whole blocks, else 1 (NCHW).
/// Each convolution writes its output in this layout, so a network whose narrow early stages do
/// not fill a block (the embedded study's width-4 ResNet: 4 and 8 channels) switches to blocks
/// where its stages widen; a residual block's two branches end in the same width, hence layout.
pub fn lanes_for(channels: usize, block: usize) -> usize {
    if block > 1 && channels % block == 0 {
        block
    } else {
        1
    }
}

/// (N, C, H, W) -> blocked (N, C / `lanes`, H, W, `lanes`); differentiable (candle's reshape and
/// transpose).
pub fn to_blocked(x: &Tensor, lanes: usize) -> Result<Tensor> {
    let d = x.dims();
    if d.len() != 4 || !matches!(lanes, 8 | 16) || d[1] % lanes != 0 {
        return Err(Error::Shape {
            what: "activation to block".into(),
            expected: format!("(N, C, H, W) with C a multiple of {lanes} (8 or 16)"),
            got: format!("{d:?}"),
        });
    }
    Ok(x.reshape((d[0], d[1] / lanes, lanes, d[2], d[3]))?
        .permute((0, 1, 3, 4, 2))?
        .contiguous()?)
}

/// Blocked (N, C / L, H, W, L) -> (N, C, H, W); a 4-D tensor is returned as it is.
pub fn to_plain(x: &Tensor) -> Result<Tensor> {
    match *x.dims() {
        [_, _, _, _] => Ok(x.clone()),
        [n, cb, h, w, l] => {
            Ok(x.permute((0, 1, 4, 2, 3))?
                .contiguous()?
                .reshape((n, cb * l, h, w))?)
        }
        _ => Err(Error::Shape {
            what: "blocked activation".into(),
            expected: "(N, C/L, H, W, L) or (N, C, H, W)".into(),
            got: format!("{:?}", x.dims()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The layout itself, against its definition: element (n, c, y, x) of an (N, C, H, W)
    /// tensor sits at ((n·C/L + c/L)·H·W + y·W + x)·L + c mod L of the blocked one; the round
    /// trip is the identity, and the gradient of a sum of weighted blocked elements comes back
    /// in NCHW at the right places.
    #[test]
    fn blocked_layout_is_nchw_lc() {
        let (n, c, h, w) = (2, 32, 3, 5);
        let v: Vec<f32> = (0..n * c * h * w).map(|i| i as f32).collect();
        let x = Tensor::from_vec(v.clone(), (n, c, h, w), &Device::Cpu).unwrap();
        for lanes in [8usize, 16] {
            let b = to_blocked(&x, lanes).unwrap();
            assert_eq!(b.dims(), [n, c / lanes, h, w, lanes]);
            let bv = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (i, &val) in v.iter().enumerate() {
                let (ni, ci, yi, xi) = (i / (c * h * w), i / (h * w) % c, i / w % h, i % w);
                let j = ((ni * c / lanes + ci / lanes) * h * w + yi * w + xi) * lanes + ci % lanes;
                assert_eq!(bv[j], val, "L={lanes} element {i}");
            }
            let back = to_plain(&b)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(back, v);
            // gradient: d/dx Σ weights ⊙ blocked(x) = plain(weights)
            let var = Var::from_tensor(&x).unwrap();
            let wts = Tensor::from_vec(bv.clone(), b.dims(), &Device::Cpu).unwrap();
            let g = (to_blocked(var.as_tensor(), lanes).unwrap() * &wts)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let gv = g
                .get(&var)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(gv, v);
        }
        assert!(to_blocked(&x.narrow(1, 0, 12).unwrap(), 8).is_err());
        assert!(to_blocked(&x, 4).is_err());
        assert_eq!(to_plain(&x).unwrap().dims(), x.dims());
    }
}
