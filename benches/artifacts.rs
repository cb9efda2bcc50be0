//! Each artifact on one 256 x 256 image (`cargo bench --bench artifacts`), plus the Radon
//! transform and FBP on their own and the injection of a 64-patch set.

use criterion::{criterion_group, criterion_main, Criterion};
use rand::{Rng, SeedableRng};
use spectral_transfer::artifact::Artifact;
use spectral_transfer::data::PatchSet;
use spectral_transfer::degradation::Degradation;
use spectral_transfer::fourier::FilterShape;
use spectral_transfer::radon::{iradon, radon, uniform_angles, RampFilter};
use spectral_transfer::Image;

fn image(n: usize) -> Image {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let data = (0..n * n)
        .map(|i| {
            let (y, x) = ((i / n) as f32, (i % n) as f32);
            0.5 + 0.2 * (x / 9.0).sin() * (y / 13.0).cos() + 0.03 * (rng.random::<f32>() - 0.5)
        })
        .collect();
    Image::new(n, n, data).unwrap()
}

fn artifacts(c: &mut Criterion) {
    let img = image(256);
    let cases = [
        Artifact::Grating {
            omega: 0.5,
            angle_deg: 30.0,
            amplitude: 0.05,
            phase: None,
        },
        Artifact::PhotonNoise {
            n0: 1e5,
            baseline_n0: 1e6,
            angles: None,
            filter: RampFilter::Ramp,
            noise_only: false,
        },
        Artifact::PhotonNoiseImage {
            n0: 1e5,
            baseline_n0: 1e6,
        },
        Artifact::Denoise {
            h_factor: 1.0,
            patch_size: 5,
            patch_distance: 6,
        },
        Artifact::LowPass {
            shape: FilterShape::Butterworth { order: 2 },
            cutoff: 0.25,
        },
    ];
    let mut g = c.benchmark_group("artifact_256");
    g.sample_size(10);
    for a in &cases {
        g.bench_function(a.label(), |b| b.iter(|| a.apply(&img, 1).unwrap()));
    }
    g.finish();

    // The study's patch size: the sinogram simulator on 64 x 64.
    let small = image(64);
    let mut g = c.benchmark_group("artifact_64");
    g.sample_size(10);
    for a in &cases[1..3] {
        g.bench_function(a.label(), |b| b.iter(|| a.apply(&small, 1).unwrap()));
    }
    g.finish();

    let mut g = c.benchmark_group("radon_256_180");
    g.sample_size(10);
    let angles = uniform_angles(180);
    let sino = radon(&img, &angles).unwrap();
    g.bench_function("radon", |b| b.iter(|| radon(&img, &angles).unwrap()));
    g.bench_function("iradon_ramp", |b| {
        b.iter(|| iradon(&sino, &angles, RampFilter::Ramp, None).unwrap())
    });
    g.finish();

    // Injection over a set: 64 patches of 64 x 64, NLM on half the positives.
    let n = 64;
    let hw = 64 * 64;
    let mut pixels = Vec::with_capacity(n * hw);
    for i in 0..n {
        pixels.extend(image(64).data.iter().map(|v| v + 0.001 * i as f32));
    }
    let set = PatchSet::new(
        "bench",
        64,
        64,
        pixels,
        (0..n as u32).map(|i| i % 2).collect(),
        (0..n as u32).collect(),
        vec!["neg".into(), "pos".into()],
        (0..n).map(|i| format!("g{i}")).collect(),
    )
    .unwrap();
    let d = Degradation::new(cases[3].clone(), 0.5, 1, 0).unwrap();
    let mut g = c.benchmark_group("inject_64x64x64");
    g.sample_size(10);
    g.bench_function("nlm_p0.5", |b| b.iter(|| d.inject(&set).unwrap()));
    g.finish();
}

criterion_group!(benches, artifacts);
criterion_main!(benches);
