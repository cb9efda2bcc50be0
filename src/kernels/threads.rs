//! How long candle's own worker threads spin before they sleep (issue 5).
//!
//! Why. A CPU process here runs two thread pools side by side: rayon's (the fast kernels, and
//! candle's matmul and convolutions) and candle 0.11's `BarrierPool`, which runs its parallel
//! element-wise and reduction ops. After each of its ops a `BarrierPool` worker busy-waits for the
//! next one, 25,000 `spin_loop` rounds by default, before it parks. On a machine with as many
//! threads as cores, that spinning takes a core from the rayon workers that run the convolution
//! between two element-wise ops. Measured on the 2-core machine (docs/performance.md, same
//! binary, `CANDLE_BARRIER_POOL_SPIN_LIMIT` 25000 vs 100): `conv/r18_64/dx` 130 → 165 img/s,
//! `model/r18_64/dx` 129 → 159, `model/s4_32/dx` 1396 → 1848, `model/s4_32/train` 845 → 1125;
//! 100 and 0 were equal, 2000 in between. candle reads the limit from the environment once, when
//! its pool starts, so it is set here, before the first candle op that uses the pool.
//!
//! A limit the user set (`CANDLE_BARRIER_POOL_SPIN_LIMIT` in the environment) is left as it is.

use std::sync::OnceLock;

/// The environment variable candle 0.11 reads for its pool's spin limit.
pub const SPIN_LIMIT_VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";

/// Spin rounds before a candle pool worker parks, when the user has not chosen.
pub const SPIN_LIMIT: u32 = 100;

static LIMIT: OnceLock<String> = OnceLock::new();

/// Sets candle's pool spin limit to [`SPIN_LIMIT`] unless the environment already has one; once
/// per process, later calls do nothing. Returns the value in effect. Called by the CLI at start,
/// by [`crate::model::ResNet::new`] and by the first fast convolution; it only has an effect if
/// it runs before candle's first pooled op (candle reads the variable when its pool starts).
pub fn tune_thread_pools() -> &'static str {
    LIMIT.get_or_init(|| match std::env::var(SPIN_LIMIT_VAR) {
        Ok(v) => v,
        Err(_) => {
            // Rust's own environment functions take one lock, so this cannot race another
            // thread's `std::env::var`; nothing in this process calls C's setenv.
            std::env::set_var(SPIN_LIMIT_VAR, SPIN_LIMIT.to_string());
            SPIN_LIMIT.to_string()
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn limit_is_set_once_and_kept() {
        let first = super::tune_thread_pools();
        assert_eq!(first, super::tune_thread_pools());
        assert_eq!(
            std::env::var(super::SPIN_LIMIT_VAR).as_deref(),
            Ok(first),
            "the environment holds the value in effect"
        );
    }
}
