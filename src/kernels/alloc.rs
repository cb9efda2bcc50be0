//! Keeping freed memory for reuse: glibc's malloc thresholds, raised once per process by the fast
//! CPU kernels (issue 5).
//!
//! Why. glibc serves every allocation above its mmap threshold (dynamic, at most 32 MiB) with a
//! fresh `mmap` and returns it with `munmap` on free; it also trims the heap top above 128 KiB of
//! free memory. A ResNet pass allocates and frees activations and gradients of 10-50 MiB per layer,
//! so each one came back as zero-filled pages: measured on `conv/r50_224/dx` (2 threads),
//! 17 million page faults, kernel page clearing and TLB-shootdown IPIs (`perf`: ~20 % of the
//! samples) and half of PyTorch's speed; with the thresholds raised, 3.7 million faults and 2x the
//! speed. Freed memory now stays in the process for the next pass: peak RSS is unchanged (it is the
//! peak), but the resident size no longer shrinks after a large pass.
//!
//! One arena. glibc gives each thread that allocates its own malloc arena (up to 8 per core);
//! each keeps what its thread freed. The fast kernels allocate their scratch and the oneDNN
//! layout copies on rayon's workers, candle allocates the activations on the calling thread, so
//! with the trim threshold raised, every arena held its own copy of the largest blocks: measured
//! on a ResNet-50 224 px input-gradient pass with oneDNN, 2318-2402 MiB peak with per-thread
//! arenas, 2170 with one (docs/performance.md, stop 12). `SPECTRAL_MALLOC_ARENAS=N` sets another
//! limit (0: glibc's default). Threads that allocated before the first call keep their arena,
//! so the CLI and `ResNet::new` call this before any work.
//!
//! `SPECTRAL_MALLOC_TUNE=0` (or `false`/`off`) leaves malloc alone. Other C libraries: nothing.

use std::sync::OnceLock;

static TUNED: OnceLock<bool> = OnceLock::new();

/// Largest mmap threshold asked for (glibc may cap it; then 32 MiB, its documented maximum).
const MMAP_THRESHOLD: i32 = 1 << 30;

/// malloc arenas allowed (see the module's doc).
const ARENAS: i32 = 1;

/// Raises glibc's mmap and trim thresholds and limits it to one arena, once per process; later
/// calls do nothing. Called by the CLI, `ResNet::new` and the fast CPU convolution on first use;
/// returns whether the settings were taken.
pub fn tune_allocator() -> bool {
    *TUNED.get_or_init(|| !super::env_says_off("SPECTRAL_MALLOC_TUNE") && set_thresholds())
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds() -> bool {
    // SAFETY: mallopt only changes malloc's parameters; it is thread-safe in glibc.
    unsafe {
        let mmap = libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            || libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1;
        let trim = libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1;
        let arenas = match std::env::var("SPECTRAL_MALLOC_ARENAS").map(|v| v.trim().parse::<i32>())
        {
            Ok(Ok(0)) => true,
            Ok(Ok(n)) if n > 0 => libc::mallopt(libc::M_ARENA_MAX, n) == 1,
            _ => libc::mallopt(libc::M_ARENA_MAX, ARENAS) == 1,
        };
        mmap && trim && arenas
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn thresholds_are_set_once_on_glibc() {
        let first = super::tune_allocator();
        assert_eq!(first, super::tune_allocator());
        if cfg!(all(target_os = "linux", target_env = "gnu"))
            && std::env::var("SPECTRAL_MALLOC_TUNE").is_err()
        {
            assert!(first, "glibc refused the thresholds");
        }
        // Memory still works both ways after the change: a large block and a small one.
        let big = vec![1u8; 96 << 20];
        assert_eq!(big.iter().map(|&b| b as usize).sum::<usize>(), 96 << 20);
        drop(big);
        assert_eq!(vec![2u8; 16].len(), 16);
    }
}
