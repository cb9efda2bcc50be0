//! Source data editing (method.md, "Sources and source editing"): change the spectrum of every
//! pre-training image before pre-training, to see whether the model's frequency priority moves.
//!
//! All edits work on the unnormalised 2-D DFT of the image ([`Fft2d`]) and return an image of the
//! same size. Conventions that keep intensities comparable with the unedited source:
//! - **Whitening** and **amplitude swap** replace the amplitude spectrum, which changes the
//!   image's contrast arbitrarily, so they restore the image's mean and (population) variance.
//! - **Filters** (low-, high-, band-pass) restore the mean only: the DC bin is put back (a
//!   high-pass removes it), so the edited image has the original mean, and its variance is what
//!   the filter left (restoring it would re-amplify the pass band and undo the edit's energy
//!   change).
//! - Nothing is clamped to [0, 1]: clamping would put back some of the very frequencies the
//!   edit removed. Values stay near the original range (same mean; same variance for whitening
//!   and swap; less variance for filters).

use rayon::prelude::*;
use rustfft::num_complex::Complex64;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fourier::{Fft2d, Filter, FilterBand, FilterShape};
use crate::image::Image;

/// One edit applied to every source image. Serialised with a `kind` tag, e.g. in TOML
/// `{ kind = "low_pass", shape = "butterworth", order = 2, cutoff = 0.25 }` (the filter shape's
/// fields are flattened into the edit). Cutoffs are normalised radial frequencies in (0, 1],
/// 1 = Nyquist (see [`crate::fourier`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceEdit {
    /// No edit (the identity).
    Original,
    /// Keep the phase, set every amplitude to the same value, restore mean and variance.
    Whiten,
    /// Keep `omega <= cutoff` (profile per [`FilterShape`]), restore the mean.
    LowPass {
        #[serde(flatten)]
        shape: FilterShape,
        cutoff: f64,
    },
    /// Keep `omega >= cutoff`, restore the mean.
    HighPass {
        #[serde(flatten)]
        shape: FilterShape,
        cutoff: f64,
    },
    /// Keep `low <= omega <= high`, restore the mean.
    BandPass {
        #[serde(flatten)]
        shape: FilterShape,
        low: f64,
        high: f64,
    },
    /// The image's own phase with a reference amplitude spectrum (e.g. the mean amplitude of the
    /// *other* domain, from [`mean_amplitude_spectrum`]), then its mean and variance restored.
    AmplitudeSwap,
}

/// Rescales `data` to mean `mean` and standard deviation `std` (a constant input becomes the
/// constant `mean`).
fn restore_mean_std(data: &mut [f64], mean: f64, std: f64) {
    let n = data.len() as f64;
    let m = data.iter().sum::<f64>() / n;
    let s = (data.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n).sqrt();
    let gain = if s > 0.0 { std / s } else { 0.0 };
    for v in data.iter_mut() {
        *v = (*v - m) * gain + mean;
    }
}

impl SourceEdit {
    /// The [`Filter`] of a filter edit; `None` for the others.
    pub fn filter(&self) -> Option<Filter> {
        match *self {
            SourceEdit::LowPass { shape, cutoff } => Some(Filter {
                shape,
                band: FilterBand::LowPass { cutoff },
            }),
            SourceEdit::HighPass { shape, cutoff } => Some(Filter {
                shape,
                band: FilterBand::HighPass { cutoff },
            }),
            SourceEdit::BandPass { shape, low, high } => Some(Filter {
                shape,
                band: FilterBand::BandPass { low, high },
            }),
            _ => None,
        }
    }

    /// Errors on an impossible parameter (a cutoff outside (0, 1], `low >= high`, a
    /// Butterworth order of 0), naming it.
    pub fn validate(&self) -> Result<()> {
        match self.filter() {
            Some(f) => f.validate(),
            None => Ok(()),
        }
    }

    /// Whether [`SourceEdit::apply`] needs a reference amplitude spectrum.
    pub fn needs_reference(&self) -> bool {
        matches!(self, SourceEdit::AmplitudeSwap)
    }

    /// Edits one image. `reference_amplitude` is required by [`SourceEdit::AmplitudeSwap`]
    /// (an *unshifted* H x W amplitude spectrum, DC at (0, 0), as [`mean_amplitude_spectrum`]
    /// returns; same size as the image, finite and non-negative) and ignored by the others.
    pub fn apply(&self, image: &Image, reference_amplitude: Option<&Image>) -> Result<Image> {
        self.validate()?;
        image.check_finite("image to edit")?;
        let (h, w) = (image.height, image.width);
        if let SourceEdit::Original = self {
            return Ok(image.clone());
        }
        let (mean, std) = image.mean_std();
        let fft = Fft2d::new(h, w);
        let mut spec = fft.forward_real(&image.data)?;
        match self {
            SourceEdit::Original => unreachable!("returned above"),
            SourceEdit::Whiten => {
                for v in spec.iter_mut() {
                    *v = unit_phase(*v);
                }
            }
            SourceEdit::AmplitudeSwap => {
                let r = reference_amplitude.ok_or_else(|| {
                    Error::param(
                        "reference_amplitude",
                        "none",
                        "amplitude_swap needs the reference amplitude spectrum \
                         (see edit::mean_amplitude_spectrum)",
                    )
                })?;
                if (r.height, r.width) != (h, w) {
                    return Err(Error::Shape {
                        what: "amplitude_swap reference amplitude".into(),
                        expected: format!("{h} x {w} (the image's size)"),
                        got: format!("{} x {}", r.height, r.width),
                    });
                }
                if let Some(i) = r.data.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
                    return Err(Error::param(
                        "reference_amplitude",
                        r.data[i],
                        format!("an amplitude must be finite and >= 0 (bin {i})"),
                    ));
                }
                for (v, &a) in spec.iter_mut().zip(&r.data) {
                    *v = unit_phase(*v) * a as f64;
                }
            }
            filt => {
                let f = filt.filter().expect("the remaining variants are filters");
                let dc = spec[0];
                for (v, g) in spec.iter_mut().zip(f.mask(h, w)) {
                    *v *= g;
                }
                spec[0] = dc;
            }
        }
        fft.inverse(&mut spec)?;
        // The edited spectra stay Hermitian (real gains, phases of a real image), so the
        // imaginary part is round-off only.
        let mut out: Vec<f64> = spec.iter().map(|c| c.re).collect();
        if matches!(self, SourceEdit::Whiten | SourceEdit::AmplitudeSwap) {
            restore_mean_std(&mut out, mean, std);
        }
        Image::new(h, w, out.into_iter().map(|v| v as f32).collect())
    }

    /// A short, stable, filename-safe name: `original`, `whiten`, `ampswap`,
    /// `lowpass-gaussian-0.25`, `highpass-butterworth2-0.5`, `bandpass-ideal-0.1-0.4`.
    pub fn label(&self) -> String {
        let shape = |s: &FilterShape| match s {
            FilterShape::Ideal => "ideal".to_string(),
            FilterShape::Gaussian => "gaussian".to_string(),
            FilterShape::Butterworth { order } => format!("butterworth{order}"),
        };
        match self {
            SourceEdit::Original => "original".into(),
            SourceEdit::Whiten => "whiten".into(),
            SourceEdit::AmplitudeSwap => "ampswap".into(),
            SourceEdit::LowPass { shape: s, cutoff } => format!("lowpass-{}-{cutoff}", shape(s)),
            SourceEdit::HighPass { shape: s, cutoff } => format!("highpass-{}-{cutoff}", shape(s)),
            SourceEdit::BandPass {
                shape: s,
                low,
                high,
            } => {
                format!("bandpass-{}-{low}-{high}", shape(s))
            }
        }
    }
}

/// `v / |v|`, and 1 where `v = 0` (its phase is undefined; a real 1 keeps the spectrum
/// Hermitian).
fn unit_phase(v: Complex64) -> Complex64 {
    let a = v.norm();
    if a > 0.0 {
        v / a
    } else {
        Complex64::new(1.0, 0.0)
    }
}

/// The mean amplitude spectrum `(1/N) sum_i |DFT(x_i)|` of equal-size images, unshifted (DC at
/// (0, 0)), H x W: the reference for [`SourceEdit::AmplitudeSwap`].
pub fn mean_amplitude_spectrum(images: &[Image]) -> Result<Image> {
    let first = images.first().ok_or_else(|| Error::Shape {
        what: "mean amplitude spectrum".into(),
        expected: "at least one image".into(),
        got: "0".into(),
    })?;
    let (h, w) = (first.height, first.width);
    for (i, im) in images.iter().enumerate() {
        if (im.height, im.width) != (h, w) {
            return Err(Error::Shape {
                what: format!("image {i} of the mean amplitude spectrum"),
                expected: format!("{h} x {w}"),
                got: format!("{} x {}", im.height, im.width),
            });
        }
        im.check_finite(&format!("image {i} of the mean amplitude spectrum"))?;
    }
    let fft = Fft2d::new(h, w);
    // Fixed chunks, summed in order: the result does not depend on the thread count.
    let partial = images
        .par_chunks(16)
        .map(|chunk| {
            let mut acc = vec![0.0f64; h * w];
            for im in chunk {
                let spec = fft.forward_real(&im.data)?;
                for (a, c) in acc.iter_mut().zip(&spec) {
                    *a += c.norm();
                }
            }
            Ok(acc)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut total = vec![0.0f64; h * w];
    for p in partial {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    let n = images.len() as f64;
    Image::new(h, w, total.into_iter().map(|v| (v / n) as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fourier::omega_grid;
    use rand::{Rng, SeedableRng};

    fn noise(h: usize, w: usize, seed: u64) -> Image {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        Image::new(h, w, (0..h * w).map(|_| rng.random::<f32>()).collect()).unwrap()
    }

    /// A smooth "natural" image: low-frequency blobs plus a little noise.
    fn scene(h: usize, w: usize, seed: u64) -> Image {
        let n = noise(h, w, seed);
        Image::from_fn(h, w, |y, x| {
            let (fy, fx) = (y as f32 / h as f32, x as f32 / w as f32);
            0.5 + 0.2 * (6.0 * fx + 1.0).sin() * (4.0 * fy).cos() + 0.05 * n.get(y, x)
        })
    }

    fn amplitude(img: &Image) -> Vec<f64> {
        Fft2d::new(img.height, img.width)
            .forward_real(&img.data)
            .unwrap()
            .iter()
            .map(|c| c.norm())
            .collect()
    }

    fn phase(img: &Image) -> Vec<f64> {
        Fft2d::new(img.height, img.width)
            .forward_real(&img.data)
            .unwrap()
            .iter()
            .map(|c| c.arg())
            .collect()
    }

    fn close_mean_std(a: &Image, b: &Image, tol: f64) {
        let (ma, sa) = a.mean_std();
        let (mb, sb) = b.mean_std();
        assert!(
            (ma - mb).abs() < tol && (sa - sb).abs() < tol,
            "{ma} {sa} vs {mb} {sb}"
        );
    }

    fn lp(shape: FilterShape, cutoff: f64) -> SourceEdit {
        SourceEdit::LowPass { shape, cutoff }
    }

    #[test]
    fn original_is_the_identity() {
        let img = scene(16, 12, 1);
        assert_eq!(SourceEdit::Original.apply(&img, None).unwrap(), img);
    }

    #[test]
    fn whitening_flattens_the_amplitude_and_keeps_phase_mean_variance() {
        for (h, w) in [(32, 32), (24, 17)] {
            let img = scene(h, w, 2);
            let out = SourceEdit::Whiten.apply(&img, None).unwrap();
            close_mean_std(&out, &img, 1e-5);
            let a = amplitude(&out);
            let non_dc = &a[1..];
            let m = non_dc.iter().sum::<f64>() / non_dc.len() as f64;
            for v in non_dc {
                assert!(
                    (v / m - 1.0).abs() < 1e-4,
                    "{h}x{w}: amplitude {v} vs mean {m}"
                );
            }
            // Same phase where the original amplitude is not negligible.
            let (pa, pb, amp) = (phase(&img), phase(&out), amplitude(&img));
            for i in 1..h * w {
                if amp[i] > 1e-3 {
                    let d = (pa[i] - pb[i]).rem_euclid(2.0 * std::f64::consts::PI);
                    assert!(d.min(2.0 * std::f64::consts::PI - d) < 1e-3, "bin {i}");
                }
            }
        }
    }

    #[test]
    fn filters_move_power_where_expected() {
        let img = noise(32, 32, 3);
        let omega = omega_grid(32, 32);
        let a0 = amplitude(&img);
        let band_power = |a: &[f64], lo: f64, hi: f64| -> f64 {
            a.iter()
                .zip(&omega)
                .skip(1)
                .filter(|(_, &o)| o >= lo && o < hi)
                .map(|(v, _)| v * v)
                .sum()
        };
        for shape in [
            FilterShape::Ideal,
            FilterShape::Gaussian,
            FilterShape::Butterworth { order: 4 },
        ] {
            let edits = [
                (lp(shape, 0.3), (0.0, 0.15), (0.6, 2.0)),
                (
                    SourceEdit::HighPass { shape, cutoff: 0.5 },
                    (0.8, 2.0),
                    (0.0, 0.25),
                ),
                (
                    SourceEdit::BandPass {
                        shape,
                        low: 0.3,
                        high: 0.6,
                    },
                    (0.4, 0.5),
                    (0.0, 0.1),
                ),
            ];
            for (edit, (klo, khi), (rlo, rhi)) in edits {
                let out = edit.apply(&img, None).unwrap();
                let a = amplitude(&out);
                // Mean restored, DC untouched.
                assert!((out.mean_std().0 - img.mean_std().0).abs() < 1e-6);
                let kept = band_power(&a, klo, khi) / band_power(&a0, klo, khi);
                let removed = band_power(&a, rlo, rhi) / band_power(&a0, rlo, rhi);
                assert!(
                    kept > 10.0 * removed,
                    "{edit:?}: kept {kept}, removed {removed}"
                );
                if shape == FilterShape::Ideal {
                    assert!((kept - 1.0).abs() < 1e-6 && removed < 1e-10, "{edit:?}");
                }
                // Exactly the filter's gain, bin by bin.
                let gain = edit.filter().unwrap().mask(32, 32);
                for i in 1..32 * 32 {
                    assert!(
                        (a[i] - gain[i] * a0[i]).abs() < 1e-4 * (1.0 + a0[i]),
                        "{edit:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn amplitude_swap_takes_the_reference_amplitude_and_keeps_phase() {
        let natural: Vec<Image> = (0..4).map(|s| scene(16, 16, s)).collect();
        let medical: Vec<Image> = (0..4).map(|s| noise(16, 16, 10 + s)).collect();
        let reference = mean_amplitude_spectrum(&medical).unwrap();
        // The reference is the mean of |F|.
        let a: Vec<Vec<f64>> = medical.iter().map(amplitude).collect();
        for i in 0..256 {
            let m = a.iter().map(|v| v[i]).sum::<f64>() / 4.0;
            assert!((reference.data[i] as f64 - m).abs() < 1e-3 * (1.0 + m));
        }
        let img = &natural[0];
        let out = SourceEdit::AmplitudeSwap
            .apply(img, Some(&reference))
            .unwrap();
        close_mean_std(&out, img, 1e-5);
        // Amplitude proportional to the reference off DC (the variance restore scales it).
        let ao = amplitude(&out);
        let ratio = ao[1] / reference.data[1] as f64;
        for (a, &r) in ao.iter().zip(&reference.data).skip(1) {
            assert!((a - ratio * r as f64).abs() < 1e-3 * (1.0 + a));
        }
        let (pa, pb) = (phase(img), phase(&out));
        let amp = amplitude(img);
        for i in 1..256 {
            if amp[i] > 1e-3 {
                let d = (pa[i] - pb[i]).rem_euclid(2.0 * std::f64::consts::PI);
                assert!(d.min(2.0 * std::f64::consts::PI - d) < 1e-3);
            }
        }
        // Errors: no reference, wrong size, negative amplitude, mixed sizes, empty.
        let e = SourceEdit::AmplitudeSwap
            .apply(img, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("reference_amplitude"), "{e}");
        assert!(SourceEdit::AmplitudeSwap
            .apply(img, Some(&Image::zeros(8, 16)))
            .is_err());
        let mut bad = reference.clone();
        bad.data[3] = -1.0;
        assert!(SourceEdit::AmplitudeSwap.apply(img, Some(&bad)).is_err());
        assert!(mean_amplitude_spectrum(&[noise(4, 4, 1), noise(4, 5, 1)]).is_err());
        assert!(mean_amplitude_spectrum(&[]).is_err());
    }

    #[test]
    fn validation_names_the_parameter() {
        let e = lp(FilterShape::Ideal, 0.0)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("cutoff"), "{e}");
        let e = lp(FilterShape::Butterworth { order: 0 }, 0.5)
            .apply(&noise(4, 4, 1), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("order"), "{e}");
        let e = SourceEdit::BandPass {
            shape: FilterShape::Gaussian,
            low: 0.5,
            high: 0.4,
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("low"), "{e}");
        let mut img = noise(4, 4, 1);
        img.data[5] = f32::NAN;
        assert!(SourceEdit::Whiten.apply(&img, None).is_err());
    }

    #[test]
    fn labels_are_stable_and_serde_round_trips() {
        let edits = [
            SourceEdit::Original,
            SourceEdit::Whiten,
            SourceEdit::AmplitudeSwap,
            lp(FilterShape::Gaussian, 0.25),
            SourceEdit::HighPass {
                shape: FilterShape::Butterworth { order: 2 },
                cutoff: 0.5,
            },
            SourceEdit::BandPass {
                shape: FilterShape::Ideal,
                low: 0.1,
                high: 0.4,
            },
        ];
        let labels: Vec<String> = edits.iter().map(|e| e.label()).collect();
        assert_eq!(
            labels,
            [
                "original",
                "whiten",
                "ampswap",
                "lowpass-gaussian-0.25",
                "highpass-butterworth2-0.5",
                "bandpass-ideal-0.1-0.4"
            ]
        );
        for e in &edits {
            let j = serde_json::to_string(e).unwrap();
            assert_eq!(&serde_json::from_str::<SourceEdit>(&j).unwrap(), e, "{j}");
        }
        let t: SourceEdit = toml::from_str(
            "kind = \"low_pass\"\nshape = \"butterworth\"\norder = 2\ncutoff = 0.25",
        )
        .unwrap();
        assert_eq!(t, lp(FilterShape::Butterworth { order: 2 }, 0.25));
        assert_eq!(
            serde_json::to_string(&edits[4]).unwrap(),
            r#"{"kind":"high_pass","shape":"butterworth","order":2,"cutoff":0.5}"#
        );
    }
}
