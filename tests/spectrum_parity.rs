//! Parity of `RadialPsd` with a numpy port of the authors' ring average (true-DC and
//! half-pixel centres), from fixtures made by `tests/fixtures/spectrum/make_fixtures.py`.
//! Tolerance: |rust - numpy| <= 1e-9 (1 + |numpy|) on every value (both compute in f64 from the
//! same float32 inputs; the differences are FFT round-off, about 1e-13).

use serde::Deserialize;
use spectral_transfer::spectrum::RadialPsd;
use spectral_transfer::ImageBatch;

#[derive(Deserialize)]
struct Case {
    name: String,
    shape: [usize; 4],
    options: RadialPsd,
    data: Vec<f32>,
    omega: Vec<f64>,
    mean: Vec<f64>,
    std: Vec<f64>,
    per_image: Vec<Vec<f64>>,
}

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

fn close(name: &str, what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{name} {what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-9 * (1.0 + w.abs()),
            "{name} {what}[{i}]: rust {g} vs numpy {w}"
        );
    }
}

#[test]
fn radial_psd_matches_numpy() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/spectrum/psd_parity.json"
    );
    let text = std::fs::read_to_string(path).expect("fixture present");
    let fixture: Fixture = serde_json::from_str(&text).expect("fixture parses");
    assert_eq!(fixture.cases.len(), 4);
    for case in &fixture.cases {
        let batch = ImageBatch::new(case.shape, case.data.clone()).unwrap();
        let got = case.options.compute(&batch, None).unwrap();
        close(&case.name, "omega", &got.omega, &case.omega);
        close(&case.name, "mean", &got.mean, &case.mean);
        close(&case.name, "std", &got.std, &case.std);
        for (i, (g, w)) in got.per_image.iter().zip(&case.per_image).enumerate() {
            close(&case.name, &format!("image {i}"), g, w);
        }
    }
}
