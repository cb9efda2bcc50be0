//! Pooling with a correct backward (issue 4). Placeholder signatures: stock candle ops, whose
//! backward is wrong when kernel != stride; to be replaced.

use candle_core::Tensor;

use crate::error::Result;

/// Max pooling over (N, C, H, W) with a square `kernel`, `stride` and symmetric padding
/// (padded cells never win). Output (N, C, H_out, W_out).
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let _ = padding;
    Ok(x.max_pool2d_with_stride(kernel, stride)?)
}

/// Average pooling over (N, C, H, W) with a square `kernel` and `stride`, no padding.
pub fn avg_pool2d(x: &Tensor, kernel: usize, stride: usize) -> Result<Tensor> {
    Ok(x.avg_pool2d_with_stride(kernel, stride)?)
}

/// Global average pool: (N, C, H, W) -> (N, C).
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    Ok(x.mean((2, 3))?)
}
