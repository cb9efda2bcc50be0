//! The 2-D discrete Fourier transform of real images and the frequency-domain filters that both
//! the artifacts (`artifact`: low-pass shortcut) and the source edits (`edit`) are built from.
//!
//! rustfft does the 1-D transforms; the 2-D transform (rows, transpose, rows, transpose) and the
//! filter masks are written here because rustfft has no 2-D API and no crate on crates.io offers
//! these masks for our [`Image`] type.
//!
//! Frequency convention: `omega` is the normalised radial frequency, `omega = 2 * sqrt(fy^2 + fx^2)`
//! with `fy = ky / H`, `fx = kx / W` in cycles per pixel, so `omega = 1` is Nyquist along an axis.
//! For an N x N image this equals `k / (N / 2)`, the ring index `k` of the radial PSD over `K = N/2`.

use std::sync::Arc;

use rustfft::num_complex::Complex64;
use rustfft::{Fft, FftPlanner};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::image::Image;

/// A reusable 2-D FFT plan for H x W images (the plans are `Sync`: share one across threads).
#[derive(Clone)]
pub struct Fft2d {
    pub height: usize,
    pub width: usize,
    row_fwd: Arc<dyn Fft<f64>>,
    col_fwd: Arc<dyn Fft<f64>>,
    row_inv: Arc<dyn Fft<f64>>,
    col_inv: Arc<dyn Fft<f64>>,
}

impl std::fmt::Debug for Fft2d {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fft2d({} x {})", self.height, self.width)
    }
}

impl Fft2d {
    /// Plans the forward and inverse transforms for H x W.
    pub fn new(height: usize, width: usize) -> Self {
        let mut planner = FftPlanner::<f64>::new();
        Self {
            height,
            width,
            row_fwd: planner.plan_fft_forward(width),
            col_fwd: planner.plan_fft_forward(height),
            row_inv: planner.plan_fft_inverse(width),
            col_inv: planner.plan_fft_inverse(height),
        }
    }

    fn check_len(&self, len: usize) -> Result<()> {
        if len != self.height * self.width {
            return Err(Error::Shape {
                what: "2-D FFT input".into(),
                expected: format!(
                    "{} x {} = {}",
                    self.height,
                    self.width,
                    self.height * self.width
                ),
                got: len.to_string(),
            });
        }
        Ok(())
    }

    /// Unnormalised forward DFT of a real H x W plane (row-major), returned unshifted
    /// (DC at index 0), H x W row-major.
    pub fn forward_real(&self, plane: &[f32]) -> Result<Vec<Complex64>> {
        self.check_len(plane.len())?;
        let mut buf: Vec<Complex64> = plane
            .iter()
            .map(|&v| Complex64::new(v as f64, 0.0))
            .collect();
        self.transform(&mut buf, false);
        Ok(buf)
    }

    /// Forward DFT of a complex H x W array in place (unnormalised).
    pub fn forward(&self, buf: &mut [Complex64]) -> Result<()> {
        self.check_len(buf.len())?;
        self.transform(buf, false);
        Ok(())
    }

    /// Inverse DFT in place, normalised by 1 / (H W) so that `inverse(forward(x)) == x`.
    pub fn inverse(&self, buf: &mut [Complex64]) -> Result<()> {
        self.check_len(buf.len())?;
        self.transform(buf, true);
        let s = 1.0 / (self.height * self.width) as f64;
        for v in buf.iter_mut() {
            *v *= s;
        }
        Ok(())
    }

    /// Scratch buffers for [`Fft2d::forward_real_half`]; one per thread, reused across images.
    pub fn real_scratch(&self) -> RealScratch {
        let (h, w) = (self.height, self.width);
        let fft = self
            .row_fwd
            .get_inplace_scratch_len()
            .max(self.col_fwd.get_inplace_scratch_len());
        RealScratch {
            rows: vec![Complex64::new(0.0, 0.0); h.div_ceil(2) * w],
            half: vec![Complex64::new(0.0, 0.0); (w / 2 + 1) * h],
            fft: vec![Complex64::new(0.0, 0.0); fft],
        }
    }

    /// Unnormalised forward DFT of a real H x W plane (row-major `f64`), only the non-redundant
    /// half `kx = 0..=W/2` (the rest follows from `X(-ky, -kx) = conj X(ky, kx)`).
    ///
    /// The result lives in `scratch` and is **column-major**: bin `(ky, kx)` is at
    /// `kx * H + ky`, `(W/2 + 1) * H` values (the column pass leaves it so; transposing back
    /// would cost a pass for nothing).
    ///
    /// About half the work of [`Fft2d::forward_real`]: two real rows go through one complex FFT
    /// (`z = a + i b`, `A[k] = (Z[k] + conj Z[-k]) / 2`, `B[k] = (Z[k] - conj Z[-k]) / 2i`), and
    /// only `W/2 + 1` columns are transformed. Hand-written because rustfft has no real-input
    /// 2-D transform and this trick needs no further dependency.
    pub fn forward_real_half<'s>(
        &self,
        plane: &[f64],
        scratch: &'s mut RealScratch,
    ) -> Result<&'s [Complex64]> {
        self.check_len(plane.len())?;
        let (h, w) = (self.height, self.width);
        let wh = w / 2 + 1;
        if scratch.rows.len() != h.div_ceil(2) * w || scratch.half.len() != wh * h {
            *scratch = self.real_scratch();
        }
        let RealScratch { rows, half, fft } = scratch;
        for (j, pair) in rows.chunks_exact_mut(w).enumerate() {
            let a = &plane[2 * j * w..(2 * j + 1) * w];
            if 2 * j + 1 < h {
                let b = &plane[(2 * j + 1) * w..(2 * j + 2) * w];
                for ((z, &re), &im) in pair.iter_mut().zip(a).zip(b) {
                    *z = Complex64::new(re, im);
                }
            } else {
                for (z, &re) in pair.iter_mut().zip(a) {
                    *z = Complex64::new(re, 0.0);
                }
            }
        }
        self.row_fwd.process_with_scratch(rows, fft);
        for (j, z) in rows.chunks_exact(w).enumerate() {
            let (ya, yb) = (2 * j, 2 * j + 1);
            for kx in 0..wh {
                let zk = z[kx];
                let zm = z[(w - kx) % w].conj();
                if yb < h {
                    half[kx * h + ya] = (zk + zm) * 0.5;
                    // (zk - zm) / (2i) = -i (zk - zm) / 2
                    let d = zk - zm;
                    half[kx * h + yb] = Complex64::new(d.im * 0.5, -d.re * 0.5);
                } else {
                    half[kx * h + ya] = zk;
                }
            }
        }
        self.col_fwd.process_with_scratch(half, fft);
        Ok(&scratch.half)
    }

    fn transform(&self, buf: &mut [Complex64], inverse: bool) {
        let (h, w) = (self.height, self.width);
        let (row, col) = if inverse {
            (&self.row_inv, &self.col_inv)
        } else {
            (&self.row_fwd, &self.col_fwd)
        };
        // Rows are contiguous: rustfft transforms every length-W chunk in one call.
        row.process(buf);
        // Columns: transpose to W x H, transform the rows, transpose back.
        let mut t = vec![Complex64::new(0.0, 0.0); h * w];
        transpose(buf, &mut t, h, w);
        col.process(&mut t);
        transpose(&t, buf, w, h);
    }
}

/// Reusable buffers of [`Fft2d::forward_real_half`] (see [`Fft2d::real_scratch`]).
#[derive(Clone, Debug)]
pub struct RealScratch {
    rows: Vec<Complex64>,
    half: Vec<Complex64>,
    fft: Vec<Complex64>,
}

fn transpose(src: &[Complex64], dst: &mut [Complex64], rows: usize, cols: usize) {
    for r in 0..rows {
        for c in 0..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
}

/// Signed frequency index of DFT bin `k` of an `n`-point transform: 0, 1, ..., -2, -1.
#[inline]
pub fn signed_bin(k: usize, n: usize) -> f64 {
    if k <= n / 2 {
        k as f64
    } else {
        k as f64 - n as f64
    }
}

/// Normalised radial frequency (see the module doc) of every unshifted DFT bin, H x W row-major.
pub fn omega_grid(height: usize, width: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(height * width);
    for ky in 0..height {
        let fy = signed_bin(ky, height) / height as f64;
        for kx in 0..width {
            let fx = signed_bin(kx, width) / width as f64;
            out.push(2.0 * (fy * fy + fx * fx).sqrt());
        }
    }
    out
}

/// Moves the DC bin of an unshifted H x W spectrum to (H/2, W/2), as numpy's `fftshift`.
pub fn fftshift<T: Copy>(data: &[T], height: usize, width: usize) -> Vec<T> {
    let mut out = data.to_vec();
    for y in 0..height {
        for x in 0..width {
            out[((y + height / 2) % height) * width + (x + width / 2) % width] =
                data[y * width + x];
        }
    }
    out
}

/// The profile of a frequency-domain filter.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "shape", rename_all = "snake_case")]
pub enum FilterShape {
    /// Ideal (brick-wall) circular mask: gain 1 inside the pass band, 0 outside.
    Ideal,
    /// Gaussian: low-pass gain `exp(-ln2/2 (omega/cutoff)^2)`, i.e. half power at the cutoff.
    Gaussian,
    /// Butterworth of the given order: low-pass gain `1 / sqrt(1 + (omega/cutoff)^(2 order))`.
    Butterworth { order: u32 },
}

/// Which band a filter passes; cutoffs in normalised radial frequency (0, 1].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "band", rename_all = "snake_case")]
pub enum FilterBand {
    LowPass {
        cutoff: f64,
    },
    HighPass {
        cutoff: f64,
    },
    /// Passes `low <= omega <= high` (low-pass at `high` times high-pass at `low`).
    BandPass {
        low: f64,
        high: f64,
    },
}

fn check_cutoff(name: &'static str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0 && v <= 1.0) {
        return Err(Error::param(
            name,
            v,
            "normalised frequency must be in (0, 1] (1 = Nyquist)",
        ));
    }
    Ok(())
}

impl FilterShape {
    /// Errors on a Butterworth order of 0.
    pub fn validate(&self) -> Result<()> {
        if let FilterShape::Butterworth { order } = self {
            if *order == 0 {
                return Err(Error::param(
                    "order",
                    order,
                    "Butterworth order must be >= 1",
                ));
            }
        }
        Ok(())
    }

    /// Low-pass gain at `omega` for `cutoff`.
    pub fn low_gain(&self, omega: f64, cutoff: f64) -> f64 {
        let r = omega / cutoff;
        match *self {
            FilterShape::Ideal => {
                if omega <= cutoff {
                    1.0
                } else {
                    0.0
                }
            }
            FilterShape::Gaussian => (-(std::f64::consts::LN_2 / 2.0) * r * r).exp(),
            FilterShape::Butterworth { order } => 1.0 / (1.0 + r.powi(2 * order as i32)).sqrt(),
        }
    }

    /// High-pass gain at `omega` for `cutoff`: the complement for Ideal and Gaussian
    /// (`1 - low`), the Butterworth high-pass `1 / sqrt(1 + (cutoff/omega)^(2 order))`.
    pub fn high_gain(&self, omega: f64, cutoff: f64) -> f64 {
        match *self {
            FilterShape::Ideal => {
                if omega >= cutoff {
                    1.0
                } else {
                    0.0
                }
            }
            FilterShape::Gaussian => 1.0 - self.low_gain(omega, cutoff),
            FilterShape::Butterworth { order } => {
                if omega == 0.0 {
                    0.0
                } else {
                    1.0 / (1.0 + (cutoff / omega).powi(2 * order as i32)).sqrt()
                }
            }
        }
    }
}

impl FilterBand {
    /// Errors on a cutoff outside (0, 1] or a band with `low >= high`, naming the parameter.
    pub fn validate(&self) -> Result<()> {
        match *self {
            FilterBand::LowPass { cutoff } | FilterBand::HighPass { cutoff } => {
                check_cutoff("cutoff", cutoff)
            }
            FilterBand::BandPass { low, high } => {
                check_cutoff("low", low)?;
                check_cutoff("high", high)?;
                if low >= high {
                    return Err(Error::param(
                        "low",
                        low,
                        format!("must be below high = {high}"),
                    ));
                }
                Ok(())
            }
        }
    }

    /// Gain of this band with the given shape at `omega`.
    pub fn gain(&self, shape: &FilterShape, omega: f64) -> f64 {
        match *self {
            FilterBand::LowPass { cutoff } => shape.low_gain(omega, cutoff),
            FilterBand::HighPass { cutoff } => shape.high_gain(omega, cutoff),
            FilterBand::BandPass { low, high } => {
                shape.low_gain(omega, high) * shape.high_gain(omega, low)
            }
        }
    }
}

/// A frequency-domain filter: a shape and a band. Real, radially symmetric gain, so the output of
/// a real image is real (the imaginary part, round-off only, is dropped).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    pub shape: FilterShape,
    pub band: FilterBand,
}

impl Filter {
    pub fn validate(&self) -> Result<()> {
        self.shape.validate()?;
        self.band.validate()
    }

    /// The gain of every unshifted DFT bin of an H x W image, row-major.
    pub fn mask(&self, height: usize, width: usize) -> Vec<f64> {
        omega_grid(height, width)
            .into_iter()
            .map(|o| self.band.gain(&self.shape, o))
            .collect()
    }

    /// Filters one image: FFT, multiply by [`Filter::mask`], inverse FFT, real part.
    pub fn apply(&self, image: &Image) -> Result<Image> {
        self.validate()?;
        image.check_finite("image to filter")?;
        let fft = Fft2d::new(image.height, image.width);
        let mut spec = fft.forward_real(&image.data)?;
        for (v, g) in spec.iter_mut().zip(self.mask(image.height, image.width)) {
            *v *= g;
        }
        fft.inverse(&mut spec)?;
        Image::new(
            image.height,
            image.width,
            spec.iter().map(|c| c.re as f32).collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(h: usize, w: usize, seed: u64) -> Image {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        Image::new(h, w, (0..h * w).map(|_| rng.random::<f32>()).collect()).unwrap()
    }

    #[test]
    fn inverse_undoes_forward_non_square() {
        let img = noise(12, 20, 1);
        let fft = Fft2d::new(12, 20);
        let mut spec = fft.forward_real(&img.data).unwrap();
        fft.inverse(&mut spec).unwrap();
        for (a, b) in img.data.iter().zip(&spec) {
            assert!((*a as f64 - b.re).abs() < 1e-12 && b.im.abs() < 1e-12);
        }
    }

    #[test]
    fn parseval_holds() {
        // sum |x|^2 = (1 / HW) sum |X|^2
        let img = noise(16, 24, 2);
        let spec = Fft2d::new(16, 24).forward_real(&img.data).unwrap();
        let e_x: f64 = img.data.iter().map(|&v| (v as f64).powi(2)).sum();
        let e_f: f64 = spec.iter().map(|c| c.norm_sqr()).sum::<f64>() / (16.0 * 24.0);
        assert!((e_x - e_f).abs() / e_x < 1e-12, "{e_x} vs {e_f}");
    }

    #[test]
    fn dft_matches_naive_definition() {
        let img = noise(5, 6, 3);
        let spec = Fft2d::new(5, 6).forward_real(&img.data).unwrap();
        for ky in 0..5 {
            for kx in 0..6 {
                let mut acc = Complex64::new(0.0, 0.0);
                for y in 0..5 {
                    for x in 0..6 {
                        let ph = -2.0
                            * std::f64::consts::PI
                            * (ky as f64 * y as f64 / 5.0 + kx as f64 * x as f64 / 6.0);
                        acc += Complex64::from_polar(img.get(y, x) as f64, ph);
                    }
                }
                assert!((acc - spec[ky * 6 + kx]).norm() < 1e-10);
            }
        }
    }

    #[test]
    fn half_spectrum_matches_full_forward() {
        for (h, w) in [(8, 8), (7, 9), (6, 11), (1, 5), (5, 1), (12, 20)] {
            let img = noise(h, w, 7);
            let fft = Fft2d::new(h, w);
            let full = fft.forward_real(&img.data).unwrap();
            let plane: Vec<f64> = img.data.iter().map(|&v| v as f64).collect();
            let mut scratch = fft.real_scratch();
            let half = fft.forward_real_half(&plane, &mut scratch).unwrap();
            assert_eq!(half.len(), (w / 2 + 1) * h);
            for ky in 0..h {
                for kx in 0..=w / 2 {
                    let d = (half[kx * h + ky] - full[ky * w + kx]).norm();
                    assert!(d < 1e-10, "{h}x{w} bin ({ky},{kx}): {d}");
                }
            }
        }
    }

    #[test]
    fn fftshift_puts_dc_in_the_centre() {
        let mut d = vec![0; 5 * 4];
        d[0] = 1;
        let s = fftshift(&d, 5, 4);
        assert_eq!(s[2 * 4 + 2], 1);
    }

    #[test]
    fn omega_is_one_at_axis_nyquist() {
        let g = omega_grid(8, 8);
        assert!((g[4] - 1.0).abs() < 1e-12); // (0, 4): fx = 1/2
        assert!((g[2 * 8] - 0.5).abs() < 1e-12); // (2, 0): fy = 1/4
    }

    #[test]
    fn filters_half_power_at_cutoff_and_validate() {
        for shape in [FilterShape::Gaussian, FilterShape::Butterworth { order: 3 }] {
            let g = shape.low_gain(0.3, 0.3);
            assert!((g - 0.5f64.sqrt()).abs() < 1e-12, "{shape:?}");
            assert!((shape.low_gain(0.0, 0.3) - 1.0).abs() < 1e-12);
        }
        let bad = Filter {
            shape: FilterShape::Ideal,
            band: FilterBand::LowPass { cutoff: 1.5 },
        };
        assert!(bad.validate().unwrap_err().to_string().contains("cutoff"));
        let bad = Filter {
            shape: FilterShape::Ideal,
            band: FilterBand::BandPass {
                low: 0.5,
                high: 0.2,
            },
        };
        assert!(bad.validate().unwrap_err().to_string().contains("low"));
    }

    #[test]
    fn ideal_low_pass_removes_a_high_grating_and_keeps_a_low_one() {
        let (h, w) = (32, 32);
        let low = Image::from_fn(h, w, |_, x| {
            (2.0 * std::f32::consts::PI * 2.0 * x as f32 / 32.0).sin()
        });
        let high = Image::from_fn(h, w, |_, x| {
            (2.0 * std::f32::consts::PI * 12.0 * x as f32 / 32.0).sin()
        });
        let f = Filter {
            shape: FilterShape::Ideal,
            band: FilterBand::LowPass { cutoff: 0.5 },
        };
        let lo = f.apply(&low).unwrap();
        let hi = f.apply(&high).unwrap();
        assert!(lo
            .data
            .iter()
            .zip(&low.data)
            .all(|(a, b)| (a - b).abs() < 1e-5));
        assert!(hi.data.iter().all(|a| a.abs() < 1e-5));
    }
}
