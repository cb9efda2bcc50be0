//! 2-D convolution. Stock candle for now; the fast CPU path (issue 5) goes here.

use candle_core::Tensor;

use crate::error::Result;

/// 2-D convolution, NCHW input `x` (N, C_in, H, W) and OIHW kernel `w` (C_out, C_in, kH, kW),
/// symmetric zero padding, no dilation, no groups. Differentiable.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    Ok(x.conv2d(w, padding, stride, 1, 1)?)
}
