//! GFLOP/s of the fast kernels' two GEMM backends (OpenBLAS, the `gemm` crate) on the product
//! shapes of ResNet-18/50 convolutions, single- and multi-threaded (docs/performance.md):
//!
//! ```text
//! cargo run --example gemm_probe -- [THREADS]        # default: 1 and 2
//! ```
//! numpy's `a @ b` on the same shapes is the outside reference (scripts/gemm_probe.py).

use std::time::Instant;

use spectral_transfer::kernels::gemm::{
    gemm_backend, matmul, openblas_config, openblas_is_thread_safe, set_gemm_backend, GemmBackend,
};

/// (m, k, n): C_out x (C_in·kH·kW) x (columns of one grouped product).
const SHAPES: &[(usize, usize, usize)] = &[
    (64, 576, 3136),
    (128, 1152, 784),
    (256, 2304, 784),
    (512, 4608, 784),
    (256, 64, 3136),
    (64, 256, 3136),
    (1024, 256, 784),
];

fn main() {
    let threads: Vec<usize> = match std::env::args().nth(1) {
        Some(t) => vec![t.parse().expect("THREADS must be a number")],
        None => vec![1, 2],
    };
    // Which OpenBLAS was loaded matters: a serial build is refused (not safe for concurrent calls).
    let config = openblas_config();
    let unavailable = match &config {
        None => "not built",
        Some(_) if !openblas_is_thread_safe() => "serial build: refused",
        Some(_) => "",
    };
    println!("OpenBLAS: {}", config.as_deref().unwrap_or("not linked"));
    // The convolutions' f32 backend: which oneDNN kernel a 3x3 layer of ResNet runs here.
    use spectral_transfer::kernels::conv::{onednn, Pass};
    let conv = match onednn::implementation(Pass::Forward, (16, 64, 56, 56), (64, 64, 3, 3), 1, 1) {
        Some(imp) => format!(
            "oneDNN {imp} for a 64x56x56 3x3 layer ({}), used for [{}] \
             (SPECTRAL_ONEDNN_PASSES), the GEMM kernels for the rest",
            onednn::library().unwrap_or_default(),
            onednn::passes_in_use().join(",")
        ),
        None => format!(
            "GEMM kernels ({})",
            onednn::library()
                .err()
                .unwrap_or("oneDNN gave no implementation")
        ),
    };
    println!("f32 convolutions: {conv}\n");
    println!("| m x k x n | threads | OpenBLAS GFLOP/s | gemm crate GFLOP/s |\n|---|---|---|---|");
    for &(m, k, n) in SHAPES {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 * 0.01).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 * 0.01).collect();
        for &t in &threads {
            let mut rates = Vec::new();
            for backend in [GemmBackend::OpenBlas, GemmBackend::GemmCrate] {
                set_gemm_backend(backend);
                if gemm_backend() != backend {
                    rates.push(unavailable.to_string());
                    continue;
                }
                let flops = 2.0 * (m * n * k) as f64;
                let reps = ((4e9 / flops) as usize).max(3);
                std::hint::black_box(matmul(&a, &b, m, k, n, t));
                let start = Instant::now();
                for _ in 0..reps {
                    std::hint::black_box(matmul(&a, &b, m, k, n, t));
                }
                let secs = start.elapsed().as_secs_f64() / reps as f64;
                rates.push(format!("{:.1}", flops / secs / 1e9));
            }
            println!("| {m} x {k} x {n} | {t} | {} | {} |", rates[0], rates[1]);
        }
    }
}
