//! Convolution and pooling kernels used by the models. Every model calls these functions, never
//! candle's ops directly, so that a faster CPU path can be switched on and off in one place
//! and compared with stock candle (issue: CPU speed).
//!
//! - [`conv`]: 2-D convolution (stock candle, or the fast CPU path);
//! - [`pool`]: max and average pooling with a correct backward for any kernel/stride;
//! - [`batch_norm`]: BatchNorm, fused with the following ReLU (stock candle-nn, or the fast
//!   CPU path).

pub mod batch_norm;
pub mod conv;
pub mod pool;

pub use batch_norm::batch_norm;
pub use conv::{conv2d, fast_cpu, set_fast_cpu, without_weight_grads};
pub use pool::{avg_pool2d, global_avg_pool, max_pool2d};
