//! Parity of the Radon transform, FBP, NLM and the noise estimate with scikit-image 0.26.0,
//! from the fixtures made by `tests/fixtures/artifact/make_fixtures.py`.
//!
//! Tolerances (absolute; images in [0, 1], sinogram values up to ~20), with what was measured:
//! - radon: 1e-12 (measured 1.8e-15: double precision both sides);
//! - iradon, f64 path: 1e-12 (measured 2.8e-15); f32 output: 1e-6 (f32 rounding);
//! - the Fourier filters: 1e-12;
//! - estimate_sigma: 1e-12 relative (measured: equal);
//! - NLM with scikit-image's own fast exponential: 1e-6 (measured 3.0e-8, the f32 output);
//!   with the exact exponential (what `Artifact::Denoise` uses): 0.05 sigma_hat (measured
//!   1.2e-3 = 0.026 sigma_hat), the effect of the approximation's ~3 % weight error.

use serde_json::Value;
use spectral_transfer::artifact::{estimate_sigma, nl_means, NlmExp};
use spectral_transfer::radon::{
    fourier_filter, iradon, iradon_f64, radon, shepp_logan, RampFilter, Sinogram,
};
use spectral_transfer::Image;

fn load(name: &str) -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/artifact")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn vecf(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn image(h: usize, w: usize, v: &Value) -> Image {
    Image::new(h, w, vecf(v).iter().map(|&x| x as f32).collect()).unwrap()
}

fn max_abs(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

const FILTERS: [(&str, RampFilter); 5] = [
    ("ramp", RampFilter::Ramp),
    ("shepp_logan", RampFilter::SheppLogan),
    ("hann", RampFilter::Hann),
    ("hamming", RampFilter::Hamming),
    ("cosine", RampFilter::Cosine),
];

#[test]
fn radon_and_iradon_match_scikit_image() {
    let fx = load("radon.json");
    for case in fx["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let n = case["n"].as_u64().unwrap() as usize;
        let img = image(n, n, &case["image"]);
        let theta = vecf(&case["theta"]);
        let sino = radon(&img, &theta).unwrap();
        // scikit-image's sinogram is (detectors, angles); ours is angle-major.
        let sk = vecf(&case["sinogram"]);
        let ours: Vec<f64> = (0..n)
            .flat_map(|d| (0..theta.len()).map(move |a| (d, a)))
            .map(|(d, a)| sino.projection(a)[d])
            .collect();
        let e = max_abs(&ours, &sk);
        assert!(e < 1e-12, "{name}: radon max |diff| {e}");
        // Reconstruct from scikit-image's own sinogram so the FBP is tested on its own.
        let sk_sino = Sinogram {
            detectors: n,
            angles: theta.len(),
            data: (0..theta.len())
                .flat_map(|a| (0..n).map(move |d| (a, d)))
                .map(|(a, d)| sk[d * theta.len() + a])
                .collect(),
        };
        for (fname, f) in FILTERS {
            let want = vecf(&case["iradon"][fname]);
            let got = iradon_f64(&sk_sino, &theta, f, None).unwrap();
            let e = max_abs(&got, &want);
            assert!(e < 1e-12, "{name}/{fname}: iradon (f64) max |diff| {e}");
            let got32: Vec<f64> = iradon(&sk_sino, &theta, f, None)
                .unwrap()
                .data
                .iter()
                .map(|&v| v as f64)
                .collect();
            assert!(
                max_abs(&got32, &want) < 1e-6,
                "{name}/{fname}: iradon (f32)"
            );
        }
        let want = vecf(&case["iradon_out20"]);
        let got = iradon_f64(&sk_sino, &theta, RampFilter::Ramp, Some(20)).unwrap();
        let e = max_abs(&got, &want);
        assert!(e < 1e-12, "{name}: iradon output_size 20 max |diff| {e}");
    }
    for (fname, f) in FILTERS {
        let want = vecf(&fx["fourier_filter_64"][fname]);
        let e = max_abs(&fourier_filter(64, f), &want);
        assert!(e < 1e-12, "{fname}: filter max |diff| {e}");
    }
}

#[test]
fn phantom_matches_the_numpy_construction() {
    let fx = load("radon.json");
    let case = &fx["cases"][0];
    let n = case["n"].as_u64().unwrap() as usize;
    let want = image(n, n, &case["image"]);
    assert_eq!(shepp_logan(n), want);
}

#[test]
fn noise_estimate_matches_scikit_image() {
    let fx = load("nlm.json");
    let mut cases: Vec<&Value> = fx["estimate_sigma"].as_array().unwrap().iter().collect();
    cases.extend(fx["nlm"].as_array().unwrap());
    for c in cases {
        let (h, w) = (
            c["height"].as_u64().unwrap() as usize,
            c["width"].as_u64().unwrap() as usize,
        );
        let want = c["sigma_est"].as_f64().unwrap();
        let got = estimate_sigma(&image(h, w, &c["image"]));
        assert!((got / want - 1.0).abs() < 1e-12, "{h}x{w}: {got} vs {want}");
    }
}

#[test]
fn nl_means_matches_scikit_image_fast_mode() {
    let fx = load("nlm.json");
    for c in fx["nlm"].as_array().unwrap() {
        let (h, w) = (
            c["height"].as_u64().unwrap() as usize,
            c["width"].as_u64().unwrap() as usize,
        );
        let img = image(h, w, &c["image"]);
        let hh = c["h"].as_f64().unwrap();
        let want = vecf(&c["denoised_fast"]);
        let ps = c["patch_size"].as_u64().unwrap() as usize;
        let pd = c["patch_distance"].as_u64().unwrap() as usize;
        let got: Vec<f64> = nl_means(&img, ps, pd, hh, NlmExp::Schraudolph)
            .unwrap()
            .data
            .iter()
            .map(|&v| v as f64)
            .collect();
        let e = max_abs(&got, &want);
        assert!(e < 1e-6, "{h}x{w}: NLM (scikit-image exp) max |diff| {e}");
        // With the exact exponential: the weights change by up to ~4 % (relative, and by a
        // nearly constant factor), so outputs move by a small fraction of the noise level.
        let exact: Vec<f64> = nl_means(&img, ps, pd, hh, NlmExp::Exact)
            .unwrap()
            .data
            .iter()
            .map(|&v| v as f64)
            .collect();
        let e = max_abs(&exact, &want);
        let sigma = c["sigma_est"].as_f64().unwrap();
        assert!(
            e < 0.05 * sigma,
            "{h}x{w}: NLM (exact exp) max |diff| {e} vs sigma {sigma}"
        );
    }
}
