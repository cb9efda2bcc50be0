use std::time::Instant;
fn main() {
    let shapes: &[(usize, usize, usize)] = &[
        (64, 576, 3136),
        (128, 1152, 784),
        (256, 2304, 196 * 4),
        (512, 4608, 49 * 16),
        (256, 64, 3136),
        (64, 256, 3136),
        (1024, 256, 196 * 4),
        (512, 512, 512),
        (1024, 1024, 1024),
    ];
    let threads: usize = std::env::var("T")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    for &(m, k, n) in shapes {
        let a = vec![1.0f32; m * k];
        let b = vec![0.5f32; k * n];
        let mut c = vec![0f32; m * n];
        let par = if threads > 1 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        let run = |c: &mut [f32]| unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                k as isize,
                b.as_ptr(),
                1,
                n as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                par,
            )
        };
        run(&mut c);
        let reps = ((2e9 / (2.0 * (m * n * k) as f64)) as usize).max(3);
        let t = Instant::now();
        for _ in 0..reps {
            run(&mut c);
        }
        let dt = t.elapsed().as_secs_f64() / reps as f64;
        println!(
            "{m}x{k}x{n}: {:.1} GFLOP/s",
            2.0 * (m * n * k) as f64 / dt / 1e9
        );
    }
}
