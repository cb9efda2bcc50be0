//! Seeded parameter initialisation and seeded dropout.
//!
//! candle's CPU backend draws random numbers from `rand::rng()` (the thread-local generator) and
//! refuses `Device::set_seed`, so `VarBuilder::from_varmap` and `candle_nn::ops::dropout` are not
//! reproducible. This module replaces both with draws from
//! `ChaCha8Rng::seed_from_u64(seed)`: every tensor gets its own stream keyed by its name, so the
//! initial weights do not depend on the order in which a model creates its tensors.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::init::{Init, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{Error, Result};

/// 64-bit FNV-1a of a tensor name: the ChaCha stream of that tensor (stable across platforms and
/// Rust versions, unlike `std::hash`).
pub(crate) fn name_stream(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The values candle's `Init` would draw, but from the seeded stream of `name`.
fn seeded_values(shape: &Shape, name: &str, init: Init, seed: u64) -> Vec<f32> {
    let n = shape.elem_count();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(name_stream(name));
    let uniform = |rng: &mut ChaCha8Rng, lo: f64, up: f64| -> Vec<f32> {
        (0..n)
            .map(|_| (lo + (up - lo) * rng.random::<f64>()) as f32)
            .collect()
    };
    let normal = |rng: &mut ChaCha8Rng, mean: f64, std: f64| -> Vec<f32> {
        (0..n)
            .map(|_| {
                let z: f64 = StandardNormal.sample(rng);
                (mean + std * z) as f32
            })
            .collect()
    };
    match init {
        Init::Const(c) => vec![c as f32; n],
        Init::Uniform { lo, up } => uniform(&mut rng, lo, up),
        Init::Randn { mean, stdev } => normal(&mut rng, mean, stdev),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            // Same formula as candle_nn::Init::var (PyTorch's kaiming_*_).
            let fan = fan.for_shape(shape).max(1);
            let std = non_linearity.gain() / (fan as f64).sqrt();
            match dist {
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(&mut rng, -bound, bound)
                }
                NormalOrUniform::Normal => normal(&mut rng, 0.0, std),
            }
        }
    }
}

/// A [`SimpleBackend`] over a [`VarMap`] that creates missing variables from a seeded stream.
struct SeededVarMap {
    varmap: VarMap,
    seed: u64,
}

fn poisoned() -> candle_core::Error {
    candle_core::Error::Msg(
        "the VarMap lock is poisoned (a thread panicked while holding it)".into(),
    )
}

impl SimpleBackend for SeededVarMap {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut data = self.varmap.data().lock().map_err(|_| poisoned())?;
        if let Some(var) = data.get(name) {
            if var.shape() != &s {
                candle_core::bail!(
                    "shape mismatch on {name}: requested {s:?}, stored {:?}",
                    var.shape()
                )
            }
            return Ok(var.as_tensor().clone());
        }
        let values = seeded_values(&s, name, h, self.seed);
        let tensor = Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&tensor)?;
        let out = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let data = self.varmap.data().lock().map_err(|_| poisoned())?;
        match data.get(name) {
            Some(var) => var.as_tensor().to_dtype(dtype)?.to_device(dev),
            None => candle_core::bail!("cannot find tensor {name}"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .map(|d| d.contains_key(name))
            .unwrap_or(false)
    }
}

/// A `VarBuilder` that stores every variable in `varmap` (like `VarBuilder::from_varmap`) but
/// initialises new ones deterministically from `seed`, per tensor name, with the distribution the
/// model asks for (`Init`). Existing variables of `varmap` are returned unchanged.
pub fn seeded_var_builder(
    varmap: &VarMap,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    VarBuilder::from_backend(
        Box::new(SeededVarMap {
            varmap: varmap.clone(),
            seed,
        }),
        dtype,
        device.clone(),
    )
}

/// Inverted dropout with a seeded mask (candle's `Dropout` uses the unseeded thread generator).
///
/// In training mode each element is zeroed with probability `p` and the survivors are scaled by
/// `1 / (1 - p)`; in evaluation mode it is the identity. Clones share one generator, so a model
/// that holds a clone draws from the same stream as the original.
#[derive(Clone, Debug)]
pub struct SeededDropout {
    p: f32,
    rng: Arc<Mutex<ChaCha8Rng>>,
}

/// ChaCha stream of dropout masks (shuffling and augmentation use other streams of the same seed).
pub(crate) const DROPOUT_STREAM: u64 = 3;

impl SeededDropout {
    /// `p` in [0, 1): the probability of dropping an element.
    pub fn new(p: f64, seed: u64) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::param("dropout", p, "must be in [0, 1)"));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(DROPOUT_STREAM);
        Ok(Self {
            p: p as f32,
            rng: Arc::new(Mutex::new(rng)),
        })
    }

    /// Restarts the mask stream from `seed` (the trainer calls this at the start of a run).
    pub fn reseed(&self, seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(DROPOUT_STREAM);
        if let Ok(mut g) = self.rng.lock() {
            *g = rng;
        }
    }

    /// The drop probability.
    pub fn p(&self) -> f64 {
        f64::from(self.p)
    }
}

impl candle_nn::ModuleT for SeededDropout {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if !train || self.p == 0.0 {
            return Ok(xs.clone());
        }
        let scale = 1.0 / (1.0 - self.p);
        let mask: Vec<f32> = {
            let mut rng = self.rng.lock().map_err(|_| poisoned())?;
            (0..xs.elem_count())
                .map(|_| {
                    if rng.random::<f32>() >= self.p {
                        scale
                    } else {
                        0.0
                    }
                })
                .collect()
        };
        let mask = Tensor::from_vec(mask, xs.shape(), xs.device())?.to_dtype(xs.dtype())?;
        xs * mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::ModuleT;

    fn weights(seed: u64) -> (Vec<f32>, Vec<f32>) {
        let vm = VarMap::new();
        let vb = seeded_var_builder(&vm, seed, DType::F32, &Device::Cpu);
        let lin = candle_nn::linear(50, 40, vb.pp("fc")).unwrap();
        let w = lin
            .weight()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let b = lin.bias().unwrap().to_vec1::<f32>().unwrap();
        (w, b)
    }

    #[test]
    fn init_is_seeded_and_has_the_requested_distribution() {
        let (w1, b1) = weights(7);
        let (w2, b2) = weights(7);
        let (w3, _) = weights(8);
        assert_eq!(w1, w2);
        assert_eq!(b1, b2);
        assert_ne!(w1, w3);
        // candle_nn::linear (0.11): weight DEFAULT_KAIMING_NORMAL, bias uniform(+-1/sqrt(fan_in)).
        let bound = 1.0 / 50f32.sqrt();
        assert!(b1.iter().all(|v| v.abs() <= bound));
        let mean = w1.iter().sum::<f32>() / w1.len() as f32;
        let var = w1.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / w1.len() as f32;
        // Kaiming normal with ReLU gain: variance 2 / fan_in = 0.04 (2000 samples: +- ~10 %).
        assert!((var - 0.04).abs() < 0.008, "variance {var}");
    }

    #[test]
    fn init_does_not_depend_on_creation_order() {
        let a = VarMap::new();
        let vb = seeded_var_builder(&a, 1, DType::F32, &Device::Cpu);
        let _ = vb
            .get_with_hints(
                (3, 4),
                "x",
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            )
            .unwrap();
        let ya = vb
            .get_with_hints(
                (5,),
                "y",
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            )
            .unwrap();
        let b = VarMap::new();
        let vb = seeded_var_builder(&b, 1, DType::F32, &Device::Cpu);
        let yb = vb
            .get_with_hints(
                (5,),
                "y",
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            )
            .unwrap();
        assert_eq!(ya.to_vec1::<f32>().unwrap(), yb.to_vec1::<f32>().unwrap());
        assert_eq!(a.all_vars().len(), 2);
    }

    #[test]
    fn dropout_is_seeded_scaled_and_identity_in_eval() {
        let x = Tensor::ones((4, 1000), DType::F32, &Device::Cpu).unwrap();
        let d = SeededDropout::new(0.5, 3).unwrap();
        let y1 = d
            .forward_t(&x, true)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        d.reseed(3);
        let y2 = d
            .forward_t(&x, true)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(y1, y2);
        assert!(y1.iter().all(|&v| v == 0.0 || v == 2.0));
        let kept = y1.iter().filter(|&&v| v > 0.0).count() as f64 / 4000.0;
        assert!((kept - 0.5).abs() < 0.03, "kept {kept}");
        let e = d
            .forward_t(&x, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(e.iter().all(|&v| v == 1.0));
        assert!(SeededDropout::new(1.0, 0).is_err());
    }
}
