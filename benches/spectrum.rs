//! Throughput of the radial PSD (default options: Hann, amplitude, true DC, Nyquist, min-max)
//! on batches of 64 single-channel images, 224 x 224 and 64 x 64. Compare with numpy on the same
//! machine: `python3 benches/psd_numpy.py` (it reads these results and prints the ratio).
//! Run with the thread count of the comparison, e.g. `RAYON_NUM_THREADS=2 cargo bench --bench
//! spectrum`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use spectral_transfer::spectrum::RadialPsd;
use spectral_transfer::ImageBatch;

const N: usize = 64;

fn batch(side: usize) -> ImageBatch {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let data = (0..N * side * side)
        .map(|_| rng.random::<f32>() - 0.5)
        .collect();
    ImageBatch::new([N, 1, side, side], data).unwrap()
}

fn radial_psd(c: &mut Criterion) {
    let mut group = c.benchmark_group("radial_psd");
    group.throughput(Throughput::Elements(N as u64));
    let psd = RadialPsd::default();
    for side in [224, 64] {
        let b = batch(side);
        group.bench_with_input(BenchmarkId::new("default", side), &b, |bench, b| {
            bench.iter(|| psd.compute(b, None).unwrap())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = radial_psd
}
criterion_main!(benches);
