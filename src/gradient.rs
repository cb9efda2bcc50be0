//! The model's input gradient G = dL/dx (the paper's Eq. 1), the raw material of the gradient
//! PSD. The model is always evaluated in eval mode (running BatchNorm stats, no dropout), so the
//! gradient of one image does not depend on the other images of its batch, and micro-batching
//! only bounds memory.

use candle_core::{DType, Tensor, Var, D};
use serde::{Deserialize, Serialize};

use crate::data::PatchSet;
use crate::error::{Error, Result};
use crate::image::ImageBatch;
use crate::model::ResNet;
use crate::spectrum::{PsdCurves, RadialPsd};

/// What L is (method.md, "Gradient PSD"). Each is summed over the batch, so row i of the
/// gradient is the gradient of image i's own term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GradientTarget {
    /// Cross-entropy against the true label (default for fine-tuned models).
    #[default]
    Loss,
    /// Log-softmax of the predicted (arg-max) class (for pre-trained models with a foreign head).
    PredictedLogSoftmax,
    /// Logit of the predicted class.
    PredictedLogit,
}

impl GradientTarget {
    /// Short, stable label: "loss", "predicted_log_softmax", "predicted_logit".
    pub fn label(self) -> &'static str {
        match self {
            GradientTarget::Loss => "loss",
            GradientTarget::PredictedLogSoftmax => "predicted_log_softmax",
            GradientTarget::PredictedLogit => "predicted_logit",
        }
    }
}

/// The scalar objective of `target` for a batch of logits (N, K).
fn objective(logits: &Tensor, labels: &[u32], target: GradientTarget) -> Result<Tensor> {
    let (n, k) = logits.dims2()?;
    let pick = |t: &Tensor, idx: &Tensor| -> Result<Tensor> { Ok(t.gather(idx, 1)?.sum_all()?) };
    match target {
        GradientTarget::Loss => {
            if labels.len() != n {
                return Err(Error::Shape {
                    what: "labels for the loss gradient".into(),
                    expected: format!("{n} (one per image)"),
                    got: labels.len().to_string(),
                });
            }
            if let Some(&bad) = labels.iter().find(|&&l| l as usize >= k) {
                return Err(Error::param(
                    "labels",
                    bad,
                    format!("must be < {k} classes"),
                ));
            }
            let idx = Tensor::from_vec(labels.to_vec(), (n, 1), logits.device())?;
            let lsm = candle_nn::ops::log_softmax(logits, D::Minus1)?;
            Ok(pick(&lsm, &idx)?.neg()?)
        }
        GradientTarget::PredictedLogSoftmax => {
            let idx = logits.argmax_keepdim(1)?;
            let lsm = candle_nn::ops::log_softmax(logits, D::Minus1)?;
            pick(&lsm, &idx)
        }
        GradientTarget::PredictedLogit => {
            let idx = logits.argmax_keepdim(1)?;
            pick(logits, &idx)
        }
    }
}

/// Signed input gradient dL/dx of `model` in eval mode, the same shape as `images`
/// (N, C, H, W), in the model's dtype. `labels` (one per image) is needed for
/// [`GradientTarget::Loss`] and ignored otherwise (it may then be empty).
pub fn input_gradient(
    model: &ResNet,
    images: &Tensor,
    labels: &[u32],
    target: GradientTarget,
) -> Result<Tensor> {
    if images.rank() != 4 {
        return Err(Error::Shape {
            what: "images for the input gradient".into(),
            expected: "(N, C, H, W)".into(),
            got: format!("{:?}", images.dims()),
        });
    }
    // A fresh leaf: the gradient is taken with respect to this copy of the images only.
    let x = Var::from_tensor(&images.detach())?;
    let logits = model.logits(x.as_tensor(), false)?;
    let obj = objective(&logits, labels, target)?;
    let grads = obj.backward()?;
    match grads.get(x.as_tensor()) {
        Some(g) => Ok(g.clone()),
        // No path from the input to L (cannot happen for a ResNet); the gradient is zero.
        None => Ok(images.zeros_like()?),
    }
}

/// [`input_gradient`] over micro-batches of at most `micro_batch` images (memory bounded),
/// concatenated: equal to the one-batch result up to float summation order.
pub fn input_gradient_batched(
    model: &ResNet,
    images: &Tensor,
    labels: &[u32],
    target: GradientTarget,
    micro_batch: usize,
) -> Result<Tensor> {
    if micro_batch == 0 {
        return Err(Error::param("micro_batch", 0, "must be at least 1"));
    }
    let n = images.dim(0)?;
    if target == GradientTarget::Loss && labels.len() != n {
        return Err(Error::Shape {
            what: "labels for the loss gradient".into(),
            expected: format!("{n} (one per image)"),
            got: labels.len().to_string(),
        });
    }
    let mut parts = Vec::with_capacity(n.div_ceil(micro_batch));
    let mut start = 0;
    while start < n {
        let len = micro_batch.min(n - start);
        let imgs = images.narrow(0, start, len)?;
        let labs = if labels.is_empty() {
            &labels[..0]
        } else {
            &labels[start..start + len]
        };
        parts.push(input_gradient(model, &imgs, labs, target)?);
        start += len;
    }
    if parts.is_empty() {
        return Err(Error::Shape {
            what: "images for the input gradient".into(),
            expected: "at least one image".into(),
            got: "0".into(),
        });
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// The input gradient of a batch as plain f32 values (N, C, H, W), for the spectrum code.
pub fn to_image_batch(grad: &Tensor) -> Result<ImageBatch> {
    let (n, c, h, w) = grad.dims4()?;
    let data = grad.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    ImageBatch::new([n, c, h, w], data)
}

/// Input gradients of every patch of `set`, (N, 1, H, W) f32, computed in micro-batches of at
/// most `micro_batch` patches on the model's device and dtype. Patches are fed as they are
/// (intensities in [0, 1], one channel; a model with more input channels replicates it, so the
/// gradient is the sum over the replicated channels). The set's labels are the `Loss` labels.
pub fn set_input_gradient(
    model: &ResNet,
    set: &PatchSet,
    target: GradientTarget,
    micro_batch: usize,
) -> Result<ImageBatch> {
    if micro_batch == 0 {
        return Err(Error::param("micro_batch", 0, "must be at least 1"));
    }
    if set.is_empty() {
        return Err(Error::Shape {
            what: format!("patch set `{}` for the input gradient", set.name),
            expected: "at least one patch".into(),
            got: "0".into(),
        });
    }
    let (n, h, w) = (set.len(), set.height, set.width);
    let mut data = Vec::with_capacity(n * h * w);
    let mut start = 0;
    while start < n {
        let len = micro_batch.min(n - start);
        let pixels = set.pixels[start * h * w..(start + len) * h * w].to_vec();
        let x =
            Tensor::from_vec(pixels, (len, 1, h, w), model.device())?.to_dtype(model.dtype())?;
        let g = input_gradient(model, &x, &set.labels[start..start + len], target)?;
        data.extend(g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
        start += len;
    }
    ImageBatch::new([n, 1, h, w], data)
}

/// The model's gradient PSD on `set` (the paper's Eq. 1 and 2): [`set_input_gradient`], then
/// `psd.compute` with the set's labels (so `per_class` holds one curve per class).
pub fn model_psd(
    model: &ResNet,
    set: &PatchSet,
    target: GradientTarget,
    psd: &RadialPsd,
    micro_batch: usize,
) -> Result<PsdCurves> {
    let grads = set_input_gradient(model, set, target, micro_batch)?;
    psd.compute(&grads, Some(&set.labels))
}

/// One checkpoint's gradient PSD, a row group of [`checkpoint_psd_table`].
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointPsd {
    /// Checkpoint name, e.g. "pretrained", "epoch-3", "best".
    pub checkpoint: String,
    /// Epoch of the checkpoint (0 = before fine-tuning).
    pub epoch: u32,
    pub curves: PsdCurves,
}

/// The PSD of every checkpoint of a run as one long table, one row per (checkpoint, ring):
/// columns `checkpoint` (str), `epoch` (u32), `ring` (u32, k = 1..=K), `omega` (f64, k / K),
/// `value` (f64, mean over images) and `std` (f64, over images).
pub fn checkpoint_psd_table(rows: &[CheckpointPsd]) -> Result<polars::prelude::DataFrame> {
    use polars::prelude::{Column, DataFrame};
    let (mut ck, mut ep, mut ring, mut om, mut val, mut sd) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for r in rows {
        let c = &r.curves;
        if c.mean.len() != c.omega.len() || c.std.len() != c.omega.len() {
            return Err(Error::Shape {
                what: format!("PSD curves of checkpoint `{}`", r.checkpoint),
                expected: format!("{} values (one per ring)", c.omega.len()),
                got: format!("mean {}, std {}", c.mean.len(), c.std.len()),
            });
        }
        for k in 0..c.omega.len() {
            ck.push(r.checkpoint.clone());
            ep.push(r.epoch);
            ring.push(k as u32 + 1);
            om.push(c.omega[k]);
            val.push(c.mean[k]);
            sd.push(c.std[k]);
        }
    }
    Ok(DataFrame::new_infer_height(vec![
        Column::new("checkpoint".into(), ck),
        Column::new("epoch".into(), ep),
        Column::new("ring".into(), ring),
        Column::new("omega".into(), om),
        Column::new("value".into(), val),
        Column::new("std".into(), sd),
    ])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Arch, ResNetConfig};
    use candle_core::Device;
    use candle_nn::VarMap;

    fn model(dtype: DType) -> ResNet {
        let cfg = ResNetConfig {
            arch: Arch::ResNet18,
            base_width: 2,
            in_channels: 1,
            num_classes: 3,
            dropout: 0.5,
            small_input: false,
        };
        let vm = VarMap::new();
        let m = ResNet::seeded(&cfg, &vm, dtype, &Device::Cpu, 11).unwrap();
        // Non-trivial running stats, so that eval-mode BatchNorm is not the identity.
        let x = Tensor::randn(0f32, 1.0, (8, 1, 16, 16), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        for _ in 0..3 {
            m.logits(&x, true).unwrap();
        }
        m
    }

    fn images(n: usize, dtype: DType, seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let v: Vec<f64> = (0..n * 16 * 16).map(|_| rng.random::<f64>()).collect();
        Tensor::from_vec(v, (n, 1, 16, 16), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    /// Central finite differences of L in f64 against the autograd input gradient, for each
    /// target, on a few pixels (a ReLU kink in between is unlikely at this step size).
    #[test]
    fn gradient_matches_finite_differences_f64() {
        let m = model(DType::F64);
        let x = images(2, DType::F64, 5);
        let labels = [2u32, 0];
        for target in [
            GradientTarget::Loss,
            GradientTarget::PredictedLogSoftmax,
            GradientTarget::PredictedLogit,
        ] {
            let g = input_gradient(&m, &x, &labels, target).unwrap();
            assert_eq!(g.dims(), x.dims());
            let g = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let base = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let f = |v: &[f64]| -> f64 {
                let t = Tensor::from_vec(v.to_vec(), x.dims(), &Device::Cpu).unwrap();
                let logits = m.logits(&t, false).unwrap();
                objective(&logits, &labels, target)
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let eps = 1e-6;
            let scale = g.iter().fold(0f64, |a, v| a.max(v.abs()));
            for j in [0usize, 17, 100, 255, 256 + 31, 300, 511] {
                let mut p = base.clone();
                p[j] += eps;
                let mut q = base.clone();
                q[j] -= eps;
                let fd = (f(&p) - f(&q)) / (2.0 * eps);
                assert!(
                    (fd - g[j]).abs() <= 1e-6 * scale.max(1e-3),
                    "{target:?} pixel {j}: autograd {} vs fd {fd}",
                    g[j]
                );
            }
        }
    }

    #[test]
    fn micro_batches_and_repeats_agree() {
        let m = model(DType::F32);
        let x = images(5, DType::F32, 9);
        let labels = [0u32, 1, 2, 1, 0];
        let full = input_gradient(&m, &x, &labels, GradientTarget::Loss).unwrap();
        let again = input_gradient(&m, &x, &labels, GradientTarget::Loss).unwrap();
        let a = full.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = again.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, b, "two passes must be bit-identical");
        let mb = input_gradient_batched(&m, &x, &labels, GradientTarget::Loss, 2).unwrap();
        let c = mb.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = a.iter().fold(0f32, |s, v| s.max(v.abs()));
        for (u, v) in a.iter().zip(&c) {
            assert!((u - v).abs() <= 1e-5 * scale, "{u} vs {v}");
        }
        // The predicted-class targets need no labels.
        input_gradient_batched(&m, &x, &[], GradientTarget::PredictedLogit, 3).unwrap();
    }

    fn tiny_set(n: usize) -> PatchSet {
        let x = images(n, DType::F32, 21);
        let pixels = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let labels: Vec<u32> = (0..n as u32).map(|i| i % 2).collect();
        PatchSet::new(
            "tiny",
            16,
            16,
            pixels,
            labels,
            vec![0; n],
            vec!["a".into(), "b".into()],
            vec!["g".into()],
        )
        .unwrap()
    }

    #[test]
    fn model_psd_is_the_psd_of_the_input_gradient() {
        let m = model(DType::F32);
        let set = tiny_set(5);
        let psd = RadialPsd::default();
        let got = model_psd(&m, &set, GradientTarget::Loss, &psd, 2).unwrap();
        let x = images(5, DType::F32, 21);
        let g = input_gradient(&m, &x, &set.labels, GradientTarget::Loss).unwrap();
        let want = psd
            .compute(&to_image_batch(&g).unwrap(), Some(&set.labels))
            .unwrap();
        assert_eq!(got.omega, want.omega);
        assert_eq!(got.per_class.len(), 2);
        for (a, b) in got.mean.iter().zip(&want.mean) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        let e = model_psd(&m, &set, GradientTarget::Loss, &psd, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("micro_batch"), "{e}");
    }

    #[test]
    fn checkpoint_table_has_one_row_per_ring() {
        let m = model(DType::F32);
        let set = tiny_set(2);
        let c = model_psd(
            &m,
            &set,
            GradientTarget::PredictedLogit,
            &RadialPsd::default(),
            4,
        )
        .unwrap();
        let k = c.omega.len();
        let rows = vec![
            CheckpointPsd {
                checkpoint: "pretrained".into(),
                epoch: 0,
                curves: c.clone(),
            },
            CheckpointPsd {
                checkpoint: "best".into(),
                epoch: 3,
                curves: c,
            },
        ];
        let df = checkpoint_psd_table(&rows).unwrap();
        assert_eq!(df.height(), 2 * k);
        assert_eq!(df.width(), 6);
        let ring = df.column("ring").unwrap().u32().unwrap();
        assert_eq!(ring.get(0), Some(1));
        assert_eq!(ring.get(k - 1), Some(k as u32));
    }

    #[test]
    fn bad_labels_are_named() {
        let m = model(DType::F32);
        let x = images(2, DType::F32, 1);
        let e = input_gradient(&m, &x, &[0], GradientTarget::Loss)
            .unwrap_err()
            .to_string();
        assert!(e.contains("labels"), "{e}");
        let e = input_gradient(&m, &x, &[0, 7], GradientTarget::Loss)
            .unwrap_err()
            .to_string();
        assert!(e.contains("labels"), "{e}");
        let e = input_gradient_batched(&m, &x, &[0, 1], GradientTarget::Loss, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("micro_batch"), "{e}");
    }
}
