//! From a [`PatchSet`] to model input: channel replication, normalisation, seeded shuffling and
//! light augmentation (horizontal flip, small shift and rotation).

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::PatchSet;
use crate::error::{Error, Result};

/// ChaCha streams of one seed: shuffling and augmentation draw from different streams, so that
/// switching augmentation on or off does not change the batch order.
pub(crate) const SHUFFLE_STREAM: u64 = 1;
pub(crate) const AUGMENT_STREAM: u64 = 2;

/// Per-channel input normalisation `(x - mean[c]) / std[c]`, applied after replicating the grey
/// patch to the model's channels. A single value applies to every channel.
///
/// Default: mean 0, std 1 (the identity, intensities stay in [0, 1]). ImageNet weights expect
/// mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225): see [`Normalise::imagenet`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalise {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Default for Normalise {
    fn default() -> Self {
        Self {
            mean: vec![0.0],
            std: vec![1.0],
        }
    }
}

impl Normalise {
    /// torchvision's ImageNet statistics (RGB).
    pub fn imagenet() -> Self {
        Self {
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        }
    }

    /// Checks the lengths (1 or `channels`) and that every std is finite and positive.
    pub fn validate(&self, channels: usize) -> Result<()> {
        for (name, v) in [("normalise.mean", &self.mean), ("normalise.std", &self.std)] {
            if v.len() != 1 && v.len() != channels {
                return Err(Error::param(
                    name,
                    format!("{v:?}"),
                    format!("needs 1 or {channels} (the model's input channels) values"),
                ));
            }
            if !v.iter().all(|x| x.is_finite()) {
                return Err(Error::param(name, format!("{v:?}"), "must be finite"));
            }
        }
        if self.std.iter().any(|&s| s <= 0.0) {
            return Err(Error::param(
                "normalise.std",
                format!("{:?}", self.std),
                "must be > 0",
            ));
        }
        Ok(())
    }

    fn at(v: &[f32], c: usize) -> f32 {
        if v.len() == 1 {
            v[0]
        } else {
            v[c]
        }
    }
}

/// Light augmentation of a training patch, drawn per patch from the run's seed.
///
/// Default (method.md "light augmentation"): horizontal flip with probability 1/2, a shift of up
/// to 2 pixels in each direction, a rotation of up to 10 degrees; bilinear resampling with the
/// border pixel repeated outside the patch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    pub hflip: bool,
    /// Largest shift in pixels (uniform real shift in [-max, max] per axis).
    pub max_shift: f32,
    /// Largest rotation in degrees (uniform in [-max, max]).
    pub max_rotation_deg: f32,
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            hflip: true,
            max_shift: 2.0,
            max_rotation_deg: 10.0,
        }
    }
}

impl Augment {
    /// No augmentation at all.
    pub fn none() -> Self {
        Self {
            hflip: false,
            max_shift: 0.0,
            max_rotation_deg: 0.0,
        }
    }

    /// True when this augmentation never changes a patch.
    pub fn is_identity(&self) -> bool {
        !self.hflip && self.max_shift == 0.0 && self.max_rotation_deg == 0.0
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.max_shift.is_finite() && self.max_shift >= 0.0) {
            return Err(Error::param(
                "augment.max_shift",
                self.max_shift,
                "must be finite and >= 0",
            ));
        }
        if !(self.max_rotation_deg.is_finite() && (0.0..=180.0).contains(&self.max_rotation_deg)) {
            return Err(Error::param(
                "augment.max_rotation_deg",
                self.max_rotation_deg,
                "must be in [0, 180]",
            ));
        }
        Ok(())
    }

    /// Draws one transform and applies it to an `h x w` patch (row-major), writing into `out`.
    /// The draws are made in a fixed order (flip, shift y, shift x, angle) whatever is enabled,
    /// so the stream stays aligned across patches.
    pub fn apply(&self, src: &[f32], h: usize, w: usize, rng: &mut ChaCha8Rng, out: &mut [f32]) {
        let flip = rng.random::<f32>() < 0.5 && self.hflip;
        let dy = (2.0 * rng.random::<f32>() - 1.0) * self.max_shift;
        let dx = (2.0 * rng.random::<f32>() - 1.0) * self.max_shift;
        let angle = (2.0 * rng.random::<f32>() - 1.0) * self.max_rotation_deg.to_radians();
        warp(src, h, w, flip, dy, dx, angle, out);
    }
}

/// Inverse-maps every output pixel: undo the shift, rotate by `-angle` about the centre, then
/// mirror; samples bilinearly with clamped (edge-repeating) coordinates.
#[allow(clippy::too_many_arguments)]
fn warp(
    src: &[f32],
    h: usize,
    w: usize,
    flip: bool,
    dy: f32,
    dx: f32,
    angle: f32,
    out: &mut [f32],
) {
    let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
    let (s, c) = angle.sin_cos();
    let at = |y: usize, x: usize| src[y * w + x];
    for oy in 0..h {
        for ox in 0..w {
            let (py, px) = (oy as f32 - cy - dy, ox as f32 - cx - dx);
            let sy = c * py - s * px + cy;
            let mut sx = s * py + c * px + cx;
            if flip {
                sx = w as f32 - 1.0 - sx;
            }
            let sy = sy.clamp(0.0, h as f32 - 1.0);
            let sx = sx.clamp(0.0, w as f32 - 1.0);
            let (y0, x0) = (sy.floor() as usize, sx.floor() as usize);
            let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
            let (fy, fx) = (sy - y0 as f32, sx - x0 as f32);
            let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
            let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
            out[oy * w + ox] = top * (1.0 - fy) + bottom * fy;
        }
    }
}

/// The patches `indices` of `set` as model input and targets.
///
/// Returns images `(N, channels, H, W)` f32 (the grey patch replicated to every channel, then
/// normalised) and labels `(N,)` u32. With `augment`, each patch is first transformed with a
/// draw from `rng`, in the order of `indices`.
pub fn batch_tensors(
    set: &PatchSet,
    indices: &[usize],
    channels: usize,
    normalise: &Normalise,
    augment: Option<(&Augment, &mut ChaCha8Rng)>,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    if channels == 0 {
        return Err(Error::param("channels", channels, "must be >= 1"));
    }
    normalise.validate(channels)?;
    if let Some(&bad) = indices.iter().find(|&&i| i >= set.len()) {
        return Err(Error::param(
            "indices",
            bad,
            format!(
                "out of range for patch set `{}` of {} patches",
                set.name,
                set.len()
            ),
        ));
    }
    let (h, w) = (set.height, set.width);
    let hw = h * w;
    let mut data = vec![0f32; indices.len() * channels * hw];
    let mut warped = vec![0f32; hw];
    let mut augment = augment;
    for (k, &i) in indices.iter().enumerate() {
        let patch: &[f32] = match augment.as_mut() {
            Some((aug, rng)) if !aug.is_identity() => {
                aug.apply(set.pixels_of(i), h, w, rng, &mut warped);
                &warped
            }
            _ => set.pixels_of(i),
        };
        for c in 0..channels {
            let (m, s) = (
                Normalise::at(&normalise.mean, c),
                Normalise::at(&normalise.std, c),
            );
            let dst = &mut data[(k * channels + c) * hw..(k * channels + c + 1) * hw];
            for (d, &v) in dst.iter_mut().zip(patch) {
                *d = (v - m) / s;
            }
        }
    }
    let images = Tensor::from_vec(data, (indices.len(), channels, h, w), device)?;
    let labels: Vec<u32> = indices.iter().map(|&i| set.labels[i]).collect();
    let labels = Tensor::from_vec(labels, indices.len(), device)?;
    Ok((images, labels))
}

/// The epoch's visiting order of `n` patches, split into batches of `batch_size`.
///
/// The permutation comes from `rng` (one shuffle per epoch). A last batch of a single patch is
/// dropped when `n > 1`, because training BatchNorm on one sample has zero variance.
pub fn epoch_batches(n: usize, batch_size: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    let mut batches: Vec<Vec<usize>> = order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect();
    if n > 1 && batches.last().is_some_and(|b| b.len() == 1) {
        batches.pop();
    }
    batches
}

/// The generator of stream `stream` of `seed`.
pub(crate) fn stream_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> PatchSet {
        // 2 patches of 2 x 3: 0..6 / 10 and 6..12 / 10
        let pixels: Vec<f32> = (0..12).map(|v| v as f32 / 12.0).collect();
        PatchSet::new(
            "t",
            2,
            3,
            pixels,
            vec![0, 1],
            vec![0, 1],
            vec!["a".into(), "b".into()],
            vec!["g0".into(), "g1".into()],
        )
        .unwrap()
    }

    #[test]
    fn replication_and_normalisation() {
        let s = set();
        let norm = Normalise {
            mean: vec![0.5, 0.0],
            std: vec![0.25, 2.0],
        };
        let (x, y) = batch_tensors(&s, &[1, 0], 2, &norm, None, &Device::Cpu).unwrap();
        assert_eq!(x.dims(), &[2, 2, 2, 3]);
        assert_eq!(y.to_vec1::<u32>().unwrap(), vec![1, 0]);
        let v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // patch 1, channel 0, pixel 0: (6/12 - 0.5) / 0.25 = 0; channel 1: (6/12) / 2 = 0.25
        assert_eq!(v[0], 0.0);
        assert_eq!(v[6], 0.25);
        // patch 0, channel 0, pixel 5: (5/12 - 0.5) / 0.25
        assert!((v[12 + 5] - (5.0 / 12.0 - 0.5) / 0.25).abs() < 1e-6);
        assert!(batch_tensors(&s, &[2], 1, &Normalise::default(), None, &Device::Cpu).is_err());
        let bad = Normalise {
            mean: vec![0.0; 2],
            std: vec![1.0; 2],
        };
        let e = batch_tensors(&s, &[0], 3, &bad, None, &Device::Cpu).unwrap_err();
        assert!(e.to_string().contains("normalise.mean"), "{e}");
    }

    #[test]
    fn flip_is_exact_and_identity_when_off() {
        let src: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let mut out = vec![0.0; 12];
        warp(&src, 3, 4, true, 0.0, 0.0, 0.0, &mut out);
        assert_eq!(&out[0..4], &[3.0, 2.0, 1.0, 0.0]);
        warp(&src, 3, 4, false, 0.0, 0.0, 0.0, &mut out);
        assert_eq!(out, src);
        // an integer shift moves the content, edges repeat
        warp(&src, 3, 4, false, 0.0, 1.0, 0.0, &mut out);
        assert_eq!(&out[0..4], &[0.0, 0.0, 1.0, 2.0]);
        // a 90 degree rotation of a square is a transpose-and-flip
        let sq: Vec<f32> = (0..9).map(|v| v as f32).collect();
        let mut r = vec![0.0; 9];
        warp(
            &sq,
            3,
            3,
            false,
            0.0,
            0.0,
            std::f32::consts::FRAC_PI_2,
            &mut r,
        );
        let r: Vec<f32> = r.iter().map(|v| v.round()).collect();
        assert_eq!(r, vec![6.0, 3.0, 0.0, 7.0, 4.0, 1.0, 8.0, 5.0, 2.0]);
    }

    #[test]
    fn augmentation_and_shuffle_are_seeded() {
        let s = set();
        let aug = Augment::default();
        let run = |seed| {
            let mut rng = stream_rng(seed, AUGMENT_STREAM);
            batch_tensors(
                &s,
                &[0, 1, 0],
                1,
                &Normalise::default(),
                Some((&aug, &mut rng)),
                &Device::Cpu,
            )
            .unwrap()
            .0
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        let b1 = epoch_batches(11, 5, &mut stream_rng(4, SHUFFLE_STREAM));
        let b2 = epoch_batches(11, 5, &mut stream_rng(4, SHUFFLE_STREAM));
        assert_eq!(b1, b2);
        // 11 = 5 + 5 + 1: the single-patch tail is dropped
        assert_eq!(b1.iter().map(Vec::len).collect::<Vec<_>>(), vec![5, 5]);
        let mut all: Vec<usize> = epoch_batches(10, 4, &mut stream_rng(4, SHUFFLE_STREAM)).concat();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert!(Augment {
            max_rotation_deg: 200.0,
            ..Augment::default()
        }
        .validate()
        .is_err());
    }
}
