//! Criterion benches of whole models (issues 4 and 5): eval forward, the input-gradient pass and
//! a training step of ResNet-18 at 64 and 224 px, ResNet-50 at 224 px, and the embedded study's
//! width-4 ResNet-18 at 32 px, batch 16, with the fast CPU convolution (default) or stock candle.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo bench --profile dev --bench model -- 'model/s4_32'
//! RAYON_NUM_THREADS=2 cargo bench --profile dev --bench model -- 'r50_224/fast'
//! ```
//! The PyTorch side and the ratio table: `examples/speed_table.rs` + `scripts/bench_torch.py`
//! (docs/performance.md). ResNet-50 at 224 px takes seconds per iteration on 2 cores, so its
//! groups run 10 samples with a short measurement time; criterion extends it as needed.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use spectral_transfer::bench::{model_workload, run_model, MODEL_WORKLOADS};
use spectral_transfer::kernels::conv::set_fast_cpu;

fn models(c: &mut Criterion) {
    for name in MODEL_WORKLOADS {
        let parts: Vec<&str> = name.split('/').collect();
        let (net, px) = parts[1].split_once('_').unwrap();
        let px: usize = px.parse().unwrap();
        let mut group = c.benchmark_group(format!("model/{}", parts[1]));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(if px >= 224 { 20 } else { 3 }));
        for path in ["fast", "stock"] {
            // stock candle's input gradient at 224 px is ~1 min per iteration: fast path only
            if path == "stock" && px >= 224 {
                continue;
            }
            let mut work = model_workload(net, px).unwrap();
            group.bench_with_input(BenchmarkId::new(path, parts[2]), &parts[2], |b, &pass| {
                set_fast_cpu(path == "fast");
                b.iter(|| run_model(&mut work, pass).unwrap())
            });
        }
        group.finish();
    }
}

criterion_group!(benches, models);
criterion_main!(benches);
