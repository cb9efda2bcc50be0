//! The radially averaged spectrum of a batch of images: the paper's gradient PSD (Eq. 1 and 2)
//! when the batch holds input gradients `dL/dx`, the artifact's PSD when it holds residuals
//! (degraded minus clean), and the alignment between the two.
//!
//! Per image (method.md, "Gradient PSD"):
//! 1. optionally `|x|` ([`RadialPsd::absolute`]), then reduce the channels ([`ChannelReduction`]);
//! 2. multiply by a 2-D window ([`Window`], the outer product of two periodic 1-D windows,
//!    normalised to sum 1);
//! 3. 2-D DFT, centred (fftshift), amplitude `|F|` or power `|F|^2` ([`Scale`]);
//! 4. average over integer rings `k = floor(|u - c|)` around the centre `c` ([`RingCentre`]),
//!    rings `k = 1..=K` ([`RingExtent`]; ring 0, the DC ring, is dropped);
//! 5. normalise the curve ([`Normalisation`]).
//!
//! Then mean and spread over images, and per class. The x axis is `omega_k = k / K`.
//!
//! Ring radii are in **index units** of the shifted spectrum, as in the authors' code: for a
//! non-square H x W image ring `k` lies at `k / H` cycles per pixel vertically and `k / W`
//! horizontally, [`RingExtent::Nyquist`] stops at `K = min(H, W) / 2` (the Nyquist ring of the
//! shorter side) and [`RingExtent::Corner`] goes to the farthest bin.
//!
//! Speed: one FFT plan ([`Fft2d`]) and one ring map per batch, images in parallel with rayon,
//! only the non-redundant half of each spectrum is computed ([`Fft2d::forward_real_half`]).

use std::collections::BTreeMap;

use rayon::prelude::*;
use rustfft::num_complex::Complex64;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fourier::{fftshift, Fft2d, RealScratch};
use crate::image::{Image, ImageBatch};

/// The 2-D window applied before the FFT (to limit leakage from the image border).
///
/// Every window is the outer product of two *periodic* 1-D windows (`w[n]` for `n = 0..N`, the
/// period being `N`, as `scipy.signal.get_window`), normalised so that its H x W values sum
/// to 1. `None` is therefore the constant `1 / (H W)`, not 1: all three windows give a constant
/// image of value `a` the same DC amplitude `a`, so un-normalised curves are comparable across
/// window choices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// Periodic Hann, `w[n] = 0.5 - 0.5 cos(2 pi n / N)` (the default, method.md).
    #[default]
    Hann,
    /// Periodic Hamming, `w[n] = 0.54 - 0.46 cos(2 pi n / N)`.
    Hamming,
    /// No tapering (constant window).
    None,
}

impl Window {
    /// The 1-D periodic window of length `n`, not normalised.
    pub fn coefficients(&self, n: usize) -> Vec<f64> {
        let tau = 2.0 * std::f64::consts::PI;
        (0..n)
            .map(|i| {
                let c = (tau * i as f64 / n as f64).cos();
                match self {
                    Window::Hann => 0.5 - 0.5 * c,
                    Window::Hamming => 0.54 - 0.46 * c,
                    Window::None => 1.0,
                }
            })
            .collect()
    }

    /// The H x W window (row-major), outer product of the 1-D windows, summing to 1.
    ///
    /// Errors if it cannot be normalised: a Hann window of length 1 is `[0]`.
    pub fn window_2d(&self, height: usize, width: usize) -> Result<Vec<f64>> {
        let wy = self.coefficients(height);
        let wx = self.coefficients(width);
        let total: f64 = wy.iter().sum::<f64>() * wx.iter().sum::<f64>();
        if total <= 0.0 {
            return Err(Error::param(
                "window",
                format!("{self:?}"),
                format!("the {height} x {width} window is all zero (use a side of at least 2)"),
            ));
        }
        let mut out = Vec::with_capacity(height * width);
        for &a in &wy {
            for &b in &wx {
                out.push(a * b / total);
            }
        }
        Ok(out)
    }
}

/// What is averaged over a ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    /// `|F|` (the default, as in the authors' code).
    #[default]
    Amplitude,
    /// `|F|^2`.
    Power,
}

/// How the C channels of an image become one curve.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelReduction {
    /// Mean over channels of the (signed or absolute) values, before the FFT (the default).
    #[default]
    Mean,
    /// Sum over channels, before the FFT (C times `Mean` before normalisation).
    Sum,
    /// One curve per channel (each normalised on its own), then the mean of those curves: the
    /// per-image curve is the channel-average *spectrum* instead of the spectrum of the
    /// channel average.
    PerChannel,
}

/// Centre of the rings in the shifted spectrum (DC at `(H/2, W/2)`, row/column indices).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RingCentre {
    /// The DC bin `(H/2, W/2)` (integer division; the default): ring `k` holds the bins at
    /// index distance `k <= r < k + 1` from DC.
    #[default]
    TrueDc,
    /// The authors' `((W - 1) / 2, (H - 1) / 2)` (x, y), half a pixel off DC on each even
    /// side (identical to `TrueDc` on odd sides). Offered for parity with their figures. Note
    /// that it splits an axis-aligned grating at ring `k` between rings `k - 1` and `k`
    /// (the two mirror peaks are at distances `k - 1/2` and `k + 1/2` along the axis).
    HalfPixel,
}

/// The last ring `K` of the curve.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RingExtent {
    /// `K = min(H, W) / 2` (the default): `omega = 1` is Nyquist along the shorter side.
    #[default]
    Nyquist,
    /// `K` = ring of the farthest bin (the corner), about `sqrt(2) N / 2` for N x N; the rings
    /// beyond Nyquist are only partly filled.
    Corner,
}

/// Per-image normalisation of the curve, before averaging over images.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalisation {
    /// The ring means as they are.
    None,
    /// `(p - min_k p) / (max_k p - min_k p)` over the kept rings (the default). A flat curve
    /// (max = min, e.g. a constant image) maps to all zeros instead of NaN.
    #[default]
    MinMax,
    /// Divided by the total of the bin values in the kept rings, `sum_k n_k p_k` (`n_k` bins in
    /// ring `k`): with [`Scale::Power`] each ring mean becomes a share of the image's non-DC
    /// energy (up to ring `K`), so images of different contrast are comparable. A zero total
    /// maps to all zeros.
    Energy,
}

/// The radial (gradient) PSD and its options; `Default` is method.md's defaults:
/// Hann window, amplitude, channel mean, true-DC centre, rings to Nyquist, min-max
/// normalisation, signed input.
///
/// Deserialises from a partial table (missing fields take their defaults), e.g. in TOML
/// `psd = { window = "none", centre = "half_pixel" }`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RadialPsd {
    /// Default [`Window::Hann`].
    pub window: Window,
    /// Default [`Scale::Amplitude`].
    pub scale: Scale,
    /// Default [`ChannelReduction::Mean`].
    pub channels: ChannelReduction,
    /// Default [`RingCentre::TrueDc`].
    pub centre: RingCentre,
    /// Default [`RingExtent::Nyquist`].
    pub extent: RingExtent,
    /// Default [`Normalisation::MinMax`].
    pub normalisation: Normalisation,
    /// Take `|x|` of every value before the channel reduction (method.md's `|G|` option).
    /// Default `false`: the signed gradient.
    pub absolute: bool,
}

/// The curves of a batch, all of length K (rings `k = 1..=K`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PsdCurves {
    /// `omega_k = k / K`, normalised radial frequency, `(0, 1]`.
    pub omega: Vec<f64>,
    /// Mean over images of the normalised per-image curves.
    pub mean: Vec<f64>,
    /// Population standard deviation (ddof = 0, numpy's default) over images; 0 for one image.
    pub std: Vec<f64>,
    /// One normalised curve per image, in batch order.
    pub per_image: Vec<Vec<f64>>,
    /// Mean curve of each class, sorted by label; empty when no labels were given.
    pub per_class: Vec<(u32, Vec<f64>)>,
}

/// Ring index of every bin of the shifted H x W spectrum (row-major), for the given centre.
/// Integer arithmetic only, so the boundaries `r = k` are exact (a float radius such as
/// `np.fft.fftfreq(n) * n` is not always an integer and can drop a bin into the ring below).
fn shifted_ring(ys: usize, xs: usize, height: usize, width: usize, centre: RingCentre) -> usize {
    match centre {
        RingCentre::TrueDc => {
            let dy = ys as i64 - (height / 2) as i64;
            let dx = xs as i64 - (width / 2) as i64;
            ((dy * dy + dx * dx) as u64).isqrt() as usize
        }
        RingCentre::HalfPixel => {
            // r = |2d| / 2 with 2d integer; floor(sqrt(m) / 2) = floor(floor(sqrt(m)) / 2).
            let dy2 = 2 * ys as i64 - (height as i64 - 1);
            let dx2 = 2 * xs as i64 - (width as i64 - 1);
            (((dy2 * dy2 + dx2 * dx2) as u64).isqrt() / 2) as usize
        }
    }
}

/// Ring of the *unshifted* bin (ky, kx).
fn unshifted_ring(ky: usize, kx: usize, height: usize, width: usize, centre: RingCentre) -> usize {
    shifted_ring(
        (ky + height / 2) % height,
        (kx + width / 2) % width,
        height,
        width,
        centre,
    )
}

const SKIP: u32 = u32::MAX;

/// Everything that depends only on the options and the image size: built once per batch.
struct Plan {
    height: usize,
    width: usize,
    /// Last ring K.
    rings: usize,
    fft: Fft2d,
    window: Vec<f64>,
    /// For each bin of the half spectrum (column-major, `kx * H + ky`): its ring and the ring of
    /// its mirror `(-ky, -kx)` when that bin is not itself in the half; `SKIP` outside 1..=K.
    ring_a: Vec<u32>,
    ring_b: Vec<u32>,
    /// Bins per ring over the full plane, index 0..=K (0 unused).
    counts: Vec<f64>,
}

impl Plan {
    fn new(psd: &RadialPsd, height: usize, width: usize) -> Result<Self> {
        let rings = psd.num_rings(height, width)?;
        let window = psd.window.window_2d(height, width)?;
        let keep = |k: usize| -> u32 {
            if (1..=rings).contains(&k) {
                k as u32
            } else {
                SKIP
            }
        };
        let wh = width / 2 + 1;
        let mut ring_a = vec![SKIP; wh * height];
        let mut ring_b = vec![SKIP; wh * height];
        let mut counts = vec![0.0; rings + 1];
        for kx in 0..wh {
            for ky in 0..height {
                let a = keep(unshifted_ring(ky, kx, height, width, psd.centre));
                ring_a[kx * height + ky] = a;
                if a != SKIP {
                    counts[a as usize] += 1.0;
                }
                // Bins kx in 1..=(W-1)/2 have their mirror (W - kx > W/2) outside the half.
                if kx >= 1 && kx <= (width - 1) / 2 {
                    let b = keep(unshifted_ring(
                        (height - ky) % height,
                        width - kx,
                        height,
                        width,
                        psd.centre,
                    ));
                    ring_b[kx * height + ky] = b;
                    if b != SKIP {
                        counts[b as usize] += 1.0;
                    }
                }
            }
        }
        if let Some(k) = (1..=rings).find(|&k| counts[k] == 0.0) {
            return Err(Error::param(
                "extent",
                format!("{:?}", psd.extent),
                format!("ring {k} of a {height} x {width} spectrum holds no bin"),
            ));
        }
        Ok(Self {
            height,
            width,
            rings,
            fft: Fft2d::new(height, width),
            window,
            ring_a,
            ring_b,
            counts,
        })
    }

    /// Ring means `k = 1..=K` of one windowed plane (already reduced, already `|x|` if asked).
    fn ring_means(
        &self,
        psd: &RadialPsd,
        plane: &mut [f64],
        scratch: &mut RealScratch,
    ) -> Result<Vec<f64>> {
        for (v, w) in plane.iter_mut().zip(&self.window) {
            *v *= w;
        }
        let half = self.fft.forward_real_half(plane, scratch)?;
        let mut sums = vec![0.0; self.rings + 1];
        let value = |c: &Complex64| match psd.scale {
            // sqrt of the square sum, not `norm()`: that is `hypot`, several times slower, and
            // its overflow guard is useless at these magnitudes.
            Scale::Amplitude => c.norm_sqr().sqrt(),
            Scale::Power => c.norm_sqr(),
        };
        for ((c, &a), &b) in half.iter().zip(&self.ring_a).zip(&self.ring_b) {
            if a == SKIP && b == SKIP {
                continue;
            }
            let v = value(c);
            if a != SKIP {
                sums[a as usize] += v;
            }
            if b != SKIP {
                sums[b as usize] += v;
            }
        }
        let mut curve: Vec<f64> = (1..=self.rings).map(|k| sums[k] / self.counts[k]).collect();
        psd.normalise(&mut curve, &self.counts[1..]);
        Ok(curve)
    }

    /// The normalised curve of image `n` of the batch.
    fn image_curve(
        &self,
        psd: &RadialPsd,
        batch: &ImageBatch,
        n: usize,
        buf: &mut Vec<f64>,
        scratch: &mut RealScratch,
    ) -> Result<Vec<f64>> {
        let c = batch.shape[1];
        let hw = self.height * self.width;
        let val = |v: f32| {
            if psd.absolute {
                (v as f64).abs()
            } else {
                v as f64
            }
        };
        buf.resize(hw, 0.0);
        match psd.channels {
            ChannelReduction::Mean | ChannelReduction::Sum => {
                buf.iter_mut().for_each(|v| *v = 0.0);
                for ch in 0..c {
                    for (acc, &v) in buf.iter_mut().zip(batch.plane(n, ch)) {
                        *acc += val(v);
                    }
                }
                if psd.channels == ChannelReduction::Mean && c > 1 {
                    let s = 1.0 / c as f64;
                    buf.iter_mut().for_each(|v| *v *= s);
                }
                self.ring_means(psd, buf, scratch)
            }
            ChannelReduction::PerChannel => {
                let mut acc = vec![0.0; self.rings];
                for ch in 0..c {
                    for (b, &v) in buf.iter_mut().zip(batch.plane(n, ch)) {
                        *b = val(v);
                    }
                    let curve = self.ring_means(psd, buf, scratch)?;
                    for (a, v) in acc.iter_mut().zip(curve) {
                        *a += v;
                    }
                }
                let s = 1.0 / c as f64;
                acc.iter_mut().for_each(|v| *v *= s);
                Ok(acc)
            }
        }
    }
}

impl RadialPsd {
    /// The number of rings `K` kept for an H x W image (see [`RingExtent`]); errors when the
    /// image is too small to have a ring 1.
    pub fn num_rings(&self, height: usize, width: usize) -> Result<usize> {
        if height == 0 || width == 0 {
            return Err(Error::Shape {
                what: "radial PSD input".into(),
                expected: "height > 0 and width > 0".into(),
                got: format!("{height} x {width}"),
            });
        }
        let k = match self.extent {
            RingExtent::Nyquist => height.min(width) / 2,
            RingExtent::Corner => {
                let mut k = 0;
                for ys in [0, height - 1] {
                    for xs in [0, width - 1] {
                        k = k.max(shifted_ring(ys, xs, height, width, self.centre));
                    }
                }
                k
            }
        };
        if k == 0 {
            return Err(Error::Shape {
                what: "radial PSD input".into(),
                expected: "at least 2 x 2 pixels (one ring besides DC)".into(),
                got: format!("{height} x {width}"),
            });
        }
        Ok(k)
    }

    /// The x axis `omega_k = k / K`, `k = 1..=K`, for an H x W image.
    pub fn omega(&self, height: usize, width: usize) -> Result<Vec<f64>> {
        let k = self.num_rings(height, width)?;
        Ok((1..=k).map(|i| i as f64 / k as f64).collect())
    }

    /// Applies [`RadialPsd::normalisation`] in place; `counts[i]` = bins of ring `i + 1`.
    fn normalise(&self, curve: &mut [f64], counts: &[f64]) {
        match self.normalisation {
            Normalisation::None => {}
            Normalisation::MinMax => {
                let lo = curve.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = curve.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let span = hi - lo;
                for v in curve.iter_mut() {
                    *v = if span > 0.0 { (*v - lo) / span } else { 0.0 };
                }
            }
            Normalisation::Energy => {
                let total: f64 = curve.iter().zip(counts).map(|(v, n)| v * n).sum();
                for v in curve.iter_mut() {
                    *v = if total > 0.0 { *v / total } else { 0.0 };
                }
            }
        }
    }

    /// The radial PSD of every image of an N x C x H x W batch, their mean and spread, and the
    /// mean per class when `labels` (one per image) are given.
    ///
    /// Errors: an empty or inconsistent batch, a non-finite value (the error names the image
    /// and channel), `labels` of the wrong length, an image too small for one ring.
    pub fn compute(&self, batch: &ImageBatch, labels: Option<&[u32]>) -> Result<PsdCurves> {
        let [n, c, h, w] = batch.shape;
        if n * c * h * w == 0 || batch.data.len() != n * c * h * w {
            return Err(Error::Shape {
                what: "radial PSD batch".into(),
                expected: format!("a non-empty N x C x H x W batch, shape {:?}", batch.shape),
                got: format!("{} values", batch.data.len()),
            });
        }
        if let Some(l) = labels {
            if l.len() != n {
                return Err(Error::Shape {
                    what: "radial PSD labels".into(),
                    expected: format!("one label per image ({n})"),
                    got: l.len().to_string(),
                });
            }
        }
        if let Some(i) = batch.data.iter().position(|v| !v.is_finite()) {
            let (img, ch) = (i / (c * h * w), (i / (h * w)) % c);
            let (y, x) = ((i / w) % h, i % w);
            return Err(Error::NonFinite(format!(
                "radial PSD input: image {img}, channel {ch}, pixel (y {y}, x {x}) is {}",
                batch.data[i]
            )));
        }
        let plan = Plan::new(self, h, w)?;
        let per_image = (0..n)
            .into_par_iter()
            .map_init(
                || (Vec::<f64>::new(), plan.fft.real_scratch()),
                |(buf, scratch), i| plan.image_curve(self, batch, i, buf, scratch),
            )
            .collect::<Result<Vec<_>>>()?;
        let (mean, std) = mean_std(&per_image);
        let per_class = match labels {
            None => Vec::new(),
            Some(labels) => {
                let mut groups: BTreeMap<u32, Vec<&Vec<f64>>> = BTreeMap::new();
                for (curve, &l) in per_image.iter().zip(labels) {
                    groups.entry(l).or_default().push(curve);
                }
                groups
                    .into_iter()
                    .map(|(l, curves)| {
                        let mut m = vec![0.0; plan.rings];
                        for c in &curves {
                            for (a, v) in m.iter_mut().zip(c.iter()) {
                                *a += v;
                            }
                        }
                        let s = 1.0 / curves.len() as f64;
                        m.iter_mut().for_each(|v| *v *= s);
                        (l, m)
                    })
                    .collect()
            }
        };
        Ok(PsdCurves {
            omega: self.omega(h, w)?,
            mean,
            std,
            per_image,
            per_class,
        })
    }

    /// The PSD of an artifact: [`RadialPsd::compute`] on the residual `degraded - clean`
    /// (same shape required). With the default signed input this is the spectrum of what the
    /// artifact added.
    pub fn residual(&self, degraded: &ImageBatch, clean: &ImageBatch) -> Result<PsdCurves> {
        if degraded.shape != clean.shape || degraded.data.len() != clean.data.len() {
            return Err(Error::Shape {
                what: "artifact residual (degraded vs clean batch)".into(),
                expected: format!("{:?}", clean.shape),
                got: format!("{:?}", degraded.shape),
            });
        }
        let diff = degraded
            .data
            .iter()
            .zip(&clean.data)
            .map(|(a, b)| a - b)
            .collect();
        self.compute(&ImageBatch::new(clean.shape, diff)?, None)
    }

    /// The normalised curve of one single-channel image (rings `1..=K`; x axis from
    /// [`RadialPsd::omega`]).
    pub fn radial_profile(&self, image: &Image) -> Result<Vec<f64>> {
        let batch = ImageBatch::new([1, 1, image.height, image.width], image.data.clone())?;
        let mut curves = self.compute(&batch, None)?;
        Ok(curves.per_image.swap_remove(0))
    }
}

/// Mean and population std of equal-length curves.
fn mean_std(curves: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    let k = curves.first().map_or(0, |c| c.len());
    let n = curves.len() as f64;
    let mut mean = vec![0.0; k];
    for c in curves {
        for (m, v) in mean.iter_mut().zip(c) {
            *m += v;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let mut var = vec![0.0; k];
    for c in curves {
        for ((s, v), m) in var.iter_mut().zip(c).zip(&mean) {
            *s += (v - m) * (v - m);
        }
    }
    let std = var.into_iter().map(|s| (s / n).sqrt()).collect();
    (mean, std)
}

/// The centred log-amplitude spectrum `ln(1 + |F|)` of an image (unwindowed, unnormalised
/// DFT, DC moved to `(H/2, W/2)`), H x W: the middle panel of the paper's Figure 1.
pub fn log_spectrum(image: &Image) -> Result<Image> {
    image.check_finite("image for the log spectrum")?;
    let spec = Fft2d::new(image.height, image.width).forward_real(&image.data)?;
    let logs: Vec<f32> = spec.iter().map(|c| c.norm().ln_1p() as f32).collect();
    Image::new(
        image.height,
        image.width,
        fftshift(&logs, image.height, image.width),
    )
}

fn check_curves(model: &[f64], artifact: &[f64]) -> Result<()> {
    if model.is_empty() || model.len() != artifact.len() {
        return Err(Error::Shape {
            what: "alignment curves (model vs artifact)".into(),
            expected: format!("two non-empty curves of one length ({})", model.len()),
            got: artifact.len().to_string(),
        });
    }
    for (name, c) in [("model", model), ("artifact", artifact)] {
        if let Some(i) = c.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite(format!("{name} curve, ring index {i}")));
        }
    }
    Ok(())
}

fn min_max(name: &'static str, c: &[f64]) -> Result<Vec<f64>> {
    let lo = c.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = c.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if hi <= lo {
        return Err(Error::param(
            name,
            format!("constant curve ({lo})"),
            "a flat curve has no preferred band to align",
        ));
    }
    Ok(c.iter().map(|v| (v - lo) / (hi - lo)).collect())
}

/// Alignment of a model's PSD with an artifact's PSD (this project's addition, not the
/// paper's): the cosine similarity of the two curves after min-max normalising each,
///
/// `a = sum_k m_k r_k / (||m|| ||r||)`, `m = (model - min) / (max - min)`, likewise `r`,
///
/// in `[0, 1]`: 1 when the curves have the same shape, near 0 when the model's high-priority
/// band is where the artifact has no power. Min-max first makes the score independent of the
/// curves' scale and offset (the normalisation of either). Curves must be on the same rings
/// (same length), finite and not constant (errors otherwise, naming which).
pub fn alignment(model: &[f64], artifact: &[f64]) -> Result<f64> {
    check_curves(model, artifact)?;
    let m = min_max("model", model)?;
    let r = min_max("artifact", artifact)?;
    let dot: f64 = m.iter().zip(&r).map(|(a, b)| a * b).sum();
    let nm = m.iter().map(|v| v * v).sum::<f64>().sqrt();
    let nr = r.iter().map(|v| v * v).sum::<f64>().sqrt();
    Ok(dot / (nm * nr))
}

/// Overlap of the top bands: with `q = ceil(fraction K)`, the share of the artifact's `q`
/// strongest rings that are also among the model's `q` strongest, `|A ∩ B| / q`, in `[0, 1]`
/// (symmetric; ties broken towards the lower ring). `fraction` in `(0, 1]`.
pub fn top_band_overlap(model: &[f64], artifact: &[f64], fraction: f64) -> Result<f64> {
    check_curves(model, artifact)?;
    if !(fraction.is_finite() && fraction > 0.0 && fraction <= 1.0) {
        return Err(Error::param("fraction", fraction, "must be in (0, 1]"));
    }
    let q = ((fraction * model.len() as f64).ceil() as usize).clamp(1, model.len());
    let top = |c: &[f64]| {
        let mut idx: Vec<usize> = (0..c.len()).collect();
        // Stable sort: equal values keep ring order, so the lower ring wins a tie.
        idx.sort_by(|&a, &b| c[b].total_cmp(&c[a]));
        idx.truncate(q);
        idx
    };
    let a = top(artifact);
    let b = top(model);
    let common = a.iter().filter(|i| b.contains(i)).count();
    Ok(common as f64 / q as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

    fn gaussian(n: usize, c: usize, h: usize, w: usize, seed: u64) -> ImageBatch {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let data = (0..n * c * h * w)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        ImageBatch::new([n, c, h, w], data).unwrap()
    }

    fn argmax(c: &[f64]) -> usize {
        (0..c.len()).max_by(|&a, &b| c[a].total_cmp(&c[b])).unwrap()
    }

    /// Brute force oracle: naive O(N^4) DFT of the full plane, explicit fftshift, float
    /// radius, ring sums and counts over every bin. Independent of the half-spectrum path.
    fn brute(psd: &RadialPsd, batch: &ImageBatch) -> Vec<Vec<f64>> {
        let [n, c, h, w] = batch.shape;
        let k_max = psd.num_rings(h, w).unwrap();
        let win = psd.window.window_2d(h, w).unwrap();
        let (cy, cx) = match psd.centre {
            RingCentre::TrueDc => ((h / 2) as f64, (w / 2) as f64),
            RingCentre::HalfPixel => ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0),
        };
        let curve_of = |plane: &[f64]| {
            let mut sums = vec![0.0; k_max + 1];
            let mut counts = vec![0.0; k_max + 1];
            for ky in 0..h {
                for kx in 0..w {
                    let mut acc = Complex64::new(0.0, 0.0);
                    for y in 0..h {
                        for x in 0..w {
                            let ph = -2.0
                                * std::f64::consts::PI
                                * ((ky * y) as f64 / h as f64 + (kx * x) as f64 / w as f64);
                            acc += Complex64::from_polar(plane[y * w + x] * win[y * w + x], ph);
                        }
                    }
                    let (ys, xs) = ((ky + h / 2) % h, (kx + w / 2) % w);
                    let r = ((ys as f64 - cy).powi(2) + (xs as f64 - cx).powi(2)).sqrt();
                    let k = (r + 1e-9).floor() as usize;
                    if (1..=k_max).contains(&k) {
                        sums[k] += match psd.scale {
                            Scale::Amplitude => acc.norm(),
                            Scale::Power => acc.norm_sqr(),
                        };
                        counts[k] += 1.0;
                    }
                }
            }
            let mut curve: Vec<f64> = (1..=k_max).map(|k| sums[k] / counts[k]).collect();
            psd.normalise(&mut curve, &counts[1..]);
            curve
        };
        (0..n)
            .map(|i| {
                let val = |v: f32| {
                    if psd.absolute {
                        v.abs() as f64
                    } else {
                        v as f64
                    }
                };
                match psd.channels {
                    ChannelReduction::PerChannel => {
                        let mut acc = vec![0.0; k_max];
                        for ch in 0..c {
                            let p: Vec<f64> = batch.plane(i, ch).iter().map(|&v| val(v)).collect();
                            for (a, v) in acc.iter_mut().zip(curve_of(&p)) {
                                *a += v / c as f64;
                            }
                        }
                        acc
                    }
                    red => {
                        let mut p = vec![0.0; h * w];
                        for ch in 0..c {
                            for (a, &v) in p.iter_mut().zip(batch.plane(i, ch)) {
                                *a += val(v);
                            }
                        }
                        if red == ChannelReduction::Mean {
                            p.iter_mut().for_each(|v| *v /= c as f64);
                        }
                        curve_of(&p)
                    }
                }
            })
            .collect()
    }

    fn all_options() -> Vec<RadialPsd> {
        let mut out = Vec::new();
        for window in [Window::Hann, Window::Hamming, Window::None] {
            for scale in [Scale::Amplitude, Scale::Power] {
                for channels in [
                    ChannelReduction::Mean,
                    ChannelReduction::Sum,
                    ChannelReduction::PerChannel,
                ] {
                    for centre in [RingCentre::TrueDc, RingCentre::HalfPixel] {
                        for extent in [RingExtent::Nyquist, RingExtent::Corner] {
                            for normalisation in [
                                Normalisation::None,
                                Normalisation::MinMax,
                                Normalisation::Energy,
                            ] {
                                for absolute in [false, true] {
                                    out.push(RadialPsd {
                                        window,
                                        scale,
                                        channels,
                                        centre,
                                        extent,
                                        normalisation,
                                        absolute,
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn every_option_combination_matches_the_brute_force_oracle() {
        // Even, odd and non-square sizes, two channels, two images.
        for (h, w) in [(6, 8), (7, 5), (5, 9)] {
            let batch = gaussian(2, 2, h, w, (h * 31 + w) as u64);
            for psd in all_options() {
                let got = psd.compute(&batch, None).unwrap();
                let want = brute(&psd, &batch);
                for (g, e) in got.per_image.iter().zip(&want) {
                    assert_eq!(g.len(), e.len());
                    for (a, b) in g.iter().zip(e) {
                        let tol = 1e-9 * (1.0 + b.abs());
                        assert!((a - b).abs() <= tol, "{h}x{w} {psd:?}: {g:?} vs {e:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn parseval_over_all_rings() {
        // Power, no window (constant 1 / HW), no normalisation, rings to the corner: every bin
        // but DC is in a ring (true-DC centre), so sum_k n_k P_k + |F(0)|^2 = sum x^2 / HW.
        for (h, w) in [(16, 16), (15, 22), (9, 4)] {
            let batch = gaussian(1, 1, h, w, 5);
            let psd = RadialPsd {
                window: Window::None,
                scale: Scale::Power,
                extent: RingExtent::Corner,
                normalisation: Normalisation::None,
                ..Default::default()
            };
            let plan = Plan::new(&psd, h, w).unwrap();
            let curve = psd.compute(&batch, None).unwrap().per_image.remove(0);
            let hw = (h * w) as f64;
            let total: f64 = curve
                .iter()
                .zip(&plan.counts[1..])
                .map(|(p, n)| p * n)
                .sum();
            let mean: f64 = batch.data.iter().map(|&v| v as f64).sum::<f64>() / hw;
            let energy: f64 = batch.data.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / hw;
            assert!(
                (total + mean * mean - energy).abs() < 1e-12 * energy,
                "{h}x{w}: {} vs {energy}",
                total + mean * mean
            );
            assert_eq!(plan.counts[1..].iter().sum::<f64>(), hw - 1.0);
        }
    }

    /// A zero-mean grating (a gradient map has about zero mean; an image mean would leak into
    /// ring 1 through the window and is not what this test is about).
    fn grating(h: usize, w: usize, k: usize, vertical: bool) -> Image {
        Image::from_fn(h, w, |y, x| {
            let (t, n) = if vertical { (y, h) } else { (x, w) };
            0.3 * (2.0 * std::f64::consts::PI * (k * t) as f64 / n as f64).cos() as f32
        })
    }

    #[test]
    fn a_grating_at_ring_k_peaks_at_k_true_dc() {
        for (h, w) in [(64, 64), (48, 64), (33, 40)] {
            for k in [1, 3, 8, 15] {
                for vertical in [false, true] {
                    for window in [Window::Hann, Window::Hamming, Window::None] {
                        let psd = RadialPsd {
                            window,
                            ..Default::default()
                        };
                        let c = psd.radial_profile(&grating(h, w, k, vertical)).unwrap();
                        assert_eq!(
                            argmax(&c) + 1,
                            k,
                            "{h}x{w} k {k} {window:?} vert {vertical}"
                        );
                        assert_eq!(c[k - 1], 1.0);
                    }
                }
            }
        }
    }

    #[test]
    fn a_grating_at_ring_k_with_the_half_pixel_centre() {
        // Even sides: the two peaks sit at distance k - 1/2 and k + 1/2 along the axis, i.e.
        // rings k - 1 and k; with no window they are the only non-zero rings, and the smaller
        // ring k - 1 has the larger mean. Odd sides: the centre is DC, so the peak is at k.
        let psd = RadialPsd {
            window: Window::None,
            centre: RingCentre::HalfPixel,
            normalisation: Normalisation::None,
            ..Default::default()
        };
        for k in [2, 5, 12] {
            let c = psd.radial_profile(&grating(64, 64, k, false)).unwrap();
            assert_eq!(argmax(&c) + 1, k - 1, "k {k}");
            let mass: f64 = c.iter().sum();
            assert!((c[k - 2] + c[k - 1]) / mass > 1.0 - 1e-6, "k {k}: {c:?}");
            let c = psd.radial_profile(&grating(63, 63, k, true)).unwrap();
            assert_eq!(argmax(&c) + 1, k, "odd, k {k}");
        }
    }

    #[test]
    fn white_noise_gives_a_flat_curve() {
        // E|F_k|^2 = sigma^2 sum w^2 at every bin for white noise of variance sigma^2. The ring
        // mean over n_k bins of N images has relative standard error about 1 / sqrt(N n_k)
        // (exponentially distributed powers); the test allows 5 standard errors per ring.
        let (n, h, w) = (16, 64, 64);
        let batch = gaussian(n, 1, h, w, 11);
        for window in [Window::None, Window::Hann] {
            let psd = RadialPsd {
                window,
                scale: Scale::Power,
                normalisation: Normalisation::None,
                ..Default::default()
            };
            let expect: f64 = window.window_2d(h, w).unwrap().iter().map(|v| v * v).sum();
            let plan = Plan::new(&psd, h, w).unwrap();
            let curves = psd.compute(&batch, None).unwrap();
            // Hann leaks the (random) image mean into rings 1-2: skip those two.
            let first = if window == Window::Hann { 2 } else { 0 };
            // Hann correlates neighbouring bins: its effective number of independent bins is
            // (sum w^2)^2 / (HW sum w^4) = (18/35)^2 HW, about 0.26 HW, so its standard
            // error is about 2x that of independent bins.
            let inflate = if window == Window::Hann { 2.0 } else { 1.0 };
            for (i, p) in curves.mean.iter().enumerate().skip(first) {
                let se = inflate / (n as f64 * plan.counts[i + 1]).sqrt();
                let rel = (p / expect - 1.0).abs();
                assert!(
                    rel < 5.0 * se,
                    "{window:?} ring {}: rel {rel} > 5 x {se}",
                    i + 1
                );
            }
        }
    }

    #[test]
    fn options_change_what_they_should() {
        let batch = gaussian(3, 3, 16, 20, 3);
        let d = RadialPsd {
            normalisation: Normalisation::None,
            ..Default::default()
        };
        let base = d.compute(&batch, None).unwrap();
        // Sum = C x Mean before normalisation (amplitude is linear in the input).
        let sum = RadialPsd {
            channels: ChannelReduction::Sum,
            ..d
        }
        .compute(&batch, None)
        .unwrap();
        for (s, m) in sum.mean.iter().zip(&base.mean) {
            assert!((s - 3.0 * m).abs() < 1e-9 * s.abs());
        }
        // Power is not amplitude squared of the ring mean, but is of a single-bin ring.
        let power = RadialPsd {
            scale: Scale::Power,
            ..d
        };
        assert_ne!(power.compute(&batch, None).unwrap().mean, base.mean);
        // PerChannel is the mean of the per-channel curves.
        let per = RadialPsd {
            channels: ChannelReduction::PerChannel,
            ..d
        }
        .compute(&batch, None)
        .unwrap();
        for i in 0..3 {
            let mut acc = [0.0; 8];
            for ch in 0..3 {
                let img = Image::new(16, 20, batch.plane(i, ch).to_vec()).unwrap();
                for (a, v) in acc.iter_mut().zip(d.radial_profile(&img).unwrap()) {
                    *a += v / 3.0;
                }
            }
            for (a, b) in acc.iter().zip(&per.per_image[i]) {
                assert!((a - b).abs() < 1e-12 * a.abs());
            }
        }
        // Absolute = compute on |x|.
        let abs_batch =
            ImageBatch::new(batch.shape, batch.data.iter().map(|v| v.abs()).collect()).unwrap();
        let abs = RadialPsd {
            absolute: true,
            ..d
        }
        .compute(&batch, None)
        .unwrap();
        assert_eq!(abs.mean, d.compute(&abs_batch, None).unwrap().mean);
        assert_ne!(abs.mean, base.mean);
        // Corner extends Nyquist: same first K rings, more of them.
        let corner = RadialPsd {
            extent: RingExtent::Corner,
            ..d
        }
        .compute(&batch, None)
        .unwrap();
        assert_eq!(base.mean.len(), 8);
        assert_eq!(corner.mean.len(), 12); // floor(sqrt(8^2 + 10^2)) = 12
        assert_eq!(&corner.mean[..8], &base.mean[..]);
        assert!((corner.omega[0] - 1.0 / 12.0).abs() < 1e-15);
        assert_eq!(*corner.omega.last().unwrap(), 1.0);
        // Windows differ from each other.
        let none = RadialPsd {
            window: Window::None,
            ..d
        };
        let hamming = RadialPsd {
            window: Window::Hamming,
            ..d
        };
        assert_ne!(none.compute(&batch, None).unwrap().mean, base.mean);
        assert_ne!(hamming.compute(&batch, None).unwrap().mean, base.mean);
        // Centre changes the rings.
        let half = RadialPsd {
            centre: RingCentre::HalfPixel,
            ..d
        };
        assert_ne!(half.compute(&batch, None).unwrap().mean, base.mean);
        // Normalisations.
        let mm = RadialPsd::default().compute(&batch, None).unwrap();
        for c in &mm.per_image {
            assert_eq!(c.iter().copied().fold(f64::INFINITY, f64::min), 0.0);
            assert_eq!(c.iter().copied().fold(f64::NEG_INFINITY, f64::max), 1.0);
        }
        let en = RadialPsd {
            normalisation: Normalisation::Energy,
            scale: Scale::Power,
            ..d
        };
        let plan = Plan::new(&en, 16, 20).unwrap();
        for c in &en.compute(&batch, None).unwrap().per_image {
            let s: f64 = c.iter().zip(&plan.counts[1..]).map(|(v, n)| v * n).sum();
            assert!((s - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn window_coefficients_are_periodic_and_normalised() {
        let h = Window::Hann.coefficients(4);
        for (a, b) in h.iter().zip([0.0, 0.5, 1.0, 0.5]) {
            assert!((a - b).abs() < 1e-15);
        }
        let m = Window::Hamming.coefficients(4);
        for (a, b) in m.iter().zip([0.08, 0.54, 1.0, 0.54]) {
            assert!((a - b).abs() < 1e-15);
        }
        for win in [Window::Hann, Window::Hamming, Window::None] {
            let s: f64 = win.window_2d(6, 9).unwrap().iter().sum();
            assert!((s - 1.0).abs() < 1e-14);
        }
        assert!(Window::Hann.window_2d(1, 8).is_err());
    }

    #[test]
    fn mean_std_per_class_and_labels() {
        let batch = gaussian(4, 1, 8, 8, 9);
        let c = RadialPsd::default()
            .compute(&batch, Some(&[1, 0, 1, 0]))
            .unwrap();
        assert_eq!(c.per_class.len(), 2);
        assert_eq!(c.per_class[0].0, 0);
        for k in 0..4 {
            let m0 = (c.per_image[1][k] + c.per_image[3][k]) / 2.0;
            let m1 = (c.per_image[0][k] + c.per_image[2][k]) / 2.0;
            assert!((c.per_class[0].1[k] - m0).abs() < 1e-15);
            assert!((c.per_class[1].1[k] - m1).abs() < 1e-15);
            let m: f64 = c.per_image.iter().map(|p| p[k]).sum::<f64>() / 4.0;
            let v: f64 = c.per_image.iter().map(|p| (p[k] - m).powi(2)).sum::<f64>() / 4.0;
            assert!((c.mean[k] - m).abs() < 1e-15 && (c.std[k] - v.sqrt()).abs() < 1e-15);
        }
        assert_eq!(c.omega, vec![0.25, 0.5, 0.75, 1.0]);
        assert!(RadialPsd::default()
            .compute(&batch, None)
            .unwrap()
            .per_class
            .is_empty());
    }

    #[test]
    fn errors_name_the_problem() {
        let d = RadialPsd::default();
        let empty = ImageBatch {
            shape: [0, 1, 8, 8],
            data: vec![],
        };
        assert!(d
            .compute(&empty, None)
            .unwrap_err()
            .to_string()
            .contains("non-empty"));
        let mut batch = gaussian(3, 2, 8, 8, 1);
        let err = d.compute(&batch, Some(&[0, 1])).unwrap_err().to_string();
        assert!(err.contains("labels") && err.contains('3'), "{err}");
        batch.data[(2 * 2 + 1) * 64 + 8 * 3 + 5] = f32::NAN;
        let err = d.compute(&batch, None).unwrap_err().to_string();
        assert!(
            err.contains("image 2, channel 1, pixel (y 3, x 5) is NaN"),
            "{err}"
        );
        let tiny = gaussian(1, 1, 1, 9, 1);
        assert!(d.compute(&tiny, None).is_err());
        let other = gaussian(3, 1, 8, 8, 1);
        assert!(d.residual(&other, &batch).is_err());
    }

    #[test]
    fn residual_is_the_psd_of_the_difference() {
        let clean = gaussian(2, 1, 16, 16, 1);
        let g = grating(16, 16, 5, false);
        let mut data = clean.data.clone();
        for i in 0..2 {
            for (v, gv) in data[i * 256..(i + 1) * 256].iter_mut().zip(&g.data) {
                *v += gv;
            }
        }
        let degraded = ImageBatch::new(clean.shape, data).unwrap();
        let r = RadialPsd::default().residual(&degraded, &clean).unwrap();
        assert_eq!(argmax(&r.mean), 4);
        assert!(r.std.iter().all(|s| *s < 1e-6));
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let batch = gaussian(12, 1, 24, 24, 4);
        let d = RadialPsd::default();
        let multi = d.compute(&batch, None).unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let single = pool.install(|| d.compute(&batch, None).unwrap());
        assert_eq!(multi, single);
    }

    #[test]
    fn alignment_scores() {
        let a = [0.0, 1.0, 3.0, 2.0];
        assert!((alignment(&a, &a).unwrap() - 1.0).abs() < 1e-15);
        // Invariant to scale and offset of either curve.
        let b: Vec<f64> = a.iter().map(|v| 5.0 * v + 2.0).collect();
        assert!((alignment(&a, &b).unwrap() - 1.0).abs() < 1e-15);
        // Disjoint bands: 0. Hand-computed: m = [0,1/3,1,2/3], r = [1,0,0,0.5] -> (1/3) /
        // (sqrt(14/9) sqrt(5/4)).
        assert_eq!(alignment(&[1.0, 0.0], &[0.0, 1.0]).unwrap(), 0.0);
        let r = [2.0, 0.0, 0.0, 1.0];
        let want = (1.0 / 3.0) / ((14.0f64 / 9.0).sqrt() * 1.25f64.sqrt());
        assert!((alignment(&a, &r).unwrap() - want).abs() < 1e-15);
        assert!(alignment(&a, &[1.0; 4])
            .unwrap_err()
            .to_string()
            .contains("artifact"));
        assert!(alignment(&a, &[1.0; 3]).is_err());
        assert!(alignment(&[f64::NAN, 1.0], &[0.0, 1.0])
            .unwrap_err()
            .to_string()
            .contains("model"));
        // Top bands: model top-2 = rings {2, 3}, artifact top-2 = {0, 3}: overlap 1/2.
        assert_eq!(top_band_overlap(&a, &r, 0.5).unwrap(), 0.5);
        assert_eq!(top_band_overlap(&a, &b, 0.25).unwrap(), 1.0);
        assert!(top_band_overlap(&a, &r, 0.0)
            .unwrap_err()
            .to_string()
            .contains("fraction"));
    }

    #[test]
    fn log_spectrum_is_centred() {
        let g = grating(16, 16, 3, false);
        let img = Image::new(16, 16, g.data.iter().map(|v| v + 0.5).collect()).unwrap();
        let s = log_spectrum(&img).unwrap();
        let dc = s.get(8, 8);
        assert!((dc as f64 - (0.5f64 * 256.0).ln_1p()).abs() < 1e-4);
        // The peaks at (8, 8 +- 3), amplitude 0.3 * 256 / 2.
        assert!((s.get(8, 11) as f64 - (0.15f64 * 256.0).ln_1p()).abs() < 1e-4);
        assert!((s.get(8, 5) as f64 - (0.15f64 * 256.0).ln_1p()).abs() < 1e-4);
        assert!(s.get(3, 3) < 1e-4);
    }

    #[test]
    fn serde_defaults_and_names() {
        let p: RadialPsd = toml::from_str("window = \"none\"\ncentre = \"half_pixel\"").unwrap();
        assert_eq!(
            p,
            RadialPsd {
                window: Window::None,
                centre: RingCentre::HalfPixel,
                ..Default::default()
            }
        );
        let j = serde_json::to_string(&RadialPsd::default()).unwrap();
        assert_eq!(
            j,
            r#"{"window":"hann","scale":"amplitude","channels":"mean","centre":"true_dc","extent":"nyquist","normalisation":"min_max","absolute":false}"#
        );
        assert!(toml::from_str::<RadialPsd>("windw = \"none\"").is_err());
    }
}
