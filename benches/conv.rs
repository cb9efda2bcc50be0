//! Criterion benches of the convolution paths (issue 5): every convolution of ResNet-18 / -50 at
//! the study's input sizes, batch 16, stock candle vs the fast CPU path, for the forward, the
//! forward + input gradient (weights tracked, as in a model's input-gradient pass) and the
//! forward + both gradients (training).
//!
//! Quick by design (10 samples, short measurement); filter with criterion's positional filter:
//! ```text
//! RAYON_NUM_THREADS=2 cargo bench --profile dev --bench conv -- 'conv/r18_64'
//! RAYON_NUM_THREADS=2 cargo bench --profile dev --bench conv -- 'fast'
//! ```
//! `--profile dev` reuses the project's one (optimised) profile and its build. The side-by-side
//! table with PyTorch comes from `examples/speed_table.rs` + `scripts/bench_torch.py`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use spectral_transfer::bench::{conv_layers, run_conv};
use spectral_transfer::kernels::conv::set_fast_cpu;

fn conv_stacks(c: &mut Criterion) {
    for (net, px) in [("r18", 64usize), ("r18", 224), ("r50", 224)] {
        let layers = conv_layers(net, px).unwrap();
        let mut group = c.benchmark_group(format!("conv/{net}_{px}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        for kind in ["fwd", "dx", "dxdw"] {
            for path in ["fast", "stock"] {
                group.bench_with_input(BenchmarkId::new(path, kind), &kind, |b, &kind| {
                    set_fast_cpu(path == "fast");
                    b.iter(|| run_conv(&layers, kind).unwrap())
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, conv_stacks);
criterion_main!(benches);
