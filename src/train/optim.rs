//! Adam and AdamW with a learning-rate schedule.
//!
//! Written here rather than taken from candle_nn because candle_nn only has AdamW (decoupled
//! weight decay); the group's Keras/PyTorch fine-tuning uses Adam, whose weight decay is an L2
//! term added to the gradient. Both follow PyTorch's `torch.optim.Adam` / `AdamW` update.

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Tensor, Var, WithDType};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Which optimiser. Both use beta1 0.9, beta2 0.999, eps 1e-8 (PyTorch's defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Adam; `weight_decay` is an L2 penalty added to the gradient (`g + wd * theta`).
    #[default]
    Adam,
    /// AdamW; `weight_decay` shrinks the weights directly (`theta *= 1 - lr * wd`).
    AdamW,
}

/// Learning rate over the run, per optimisation step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// `lr` at every step.
    #[default]
    Constant,
    /// Cosine annealing from `lr` at step 0 to `min_factor * lr` at the last planned step
    /// (`epochs * batches per epoch`); early stopping simply stops on the way down.
    Cosine { min_factor: f64 },
}

impl Schedule {
    /// The learning rate at `step` of `total` steps (0-based).
    pub fn lr(&self, base: f64, step: usize, total: usize) -> f64 {
        match *self {
            Schedule::Constant => base,
            Schedule::Cosine { min_factor } => {
                let t = if total <= 1 {
                    0.0
                } else {
                    step as f64 / (total - 1) as f64
                };
                let min = base * min_factor;
                min + (base - min) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

struct Slot {
    var: Var,
    m: Tensor,
    v: Tensor,
}

/// Adam / AdamW state for a list of variables (kept in the given order): the optimiser of every
/// training run ([`crate::train::fit`]); public so that benchmarks time the same update.
pub struct Adam {
    slots: Vec<Slot>,
    kind: OptimizerKind,
    weight_decay: f64,
    t: i32,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

impl Adam {
    /// Zeroed moments for every float variable of `vars` (integer ones are skipped).
    pub fn new(vars: Vec<Var>, kind: OptimizerKind, weight_decay: f64) -> Result<Self> {
        let slots = vars
            .into_iter()
            .filter(|v| v.dtype().is_float())
            .map(|var| {
                let m = var.as_tensor().zeros_like()?;
                let v = var.as_tensor().zeros_like()?;
                Ok(Slot { var, m, v })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            slots,
            kind,
            weight_decay,
            t: 0,
        })
    }

    /// One update with learning rate `lr`. Variables without a gradient (BatchNorm running
    /// statistics, frozen parts) are left alone, moments included.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.t += 1;
        let bc1 = 1.0 - BETA1.powi(self.t);
        let bc2 = 1.0 - BETA2.powi(self.t);
        let wd = self.weight_decay;
        for slot in &mut self.slots {
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            let theta = slot.var.as_tensor().detach();
            let g = match self.kind {
                OptimizerKind::Adam if wd != 0.0 => (g + (&theta * wd)?)?,
                _ => g.clone(),
            }
            .detach();
            let decay = match self.kind {
                OptimizerKind::AdamW if wd != 0.0 => 1.0 - lr * wd,
                _ => 1.0,
            };
            if fused_ok(&slot.var, &slot.m, &slot.v, &g) {
                // The same update in three in-place passes (moments, then the weights) instead
                // of about twelve allocating candle ops, most of them single-threaded.
                slot.m.inplace_op2(
                    &g,
                    &Ema {
                        beta: BETA1,
                        square: false,
                    },
                )?;
                slot.v.inplace_op2(
                    &g,
                    &Ema {
                        beta: BETA2,
                        square: true,
                    },
                )?;
                let step = Step {
                    lr,
                    bc1,
                    bc2,
                    decay,
                };
                slot.var.as_tensor().inplace_op3(&slot.m, &slot.v, &step)?;
                continue;
            }
            // detached: the moments must not keep the autograd graph of past steps alive
            slot.m = ((&slot.m * BETA1)? + (&g * (1.0 - BETA1))?)?.detach();
            slot.v = ((&slot.v * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?.detach();
            let denom = ((&slot.v / bc2)?.sqrt()? + EPS)?;
            let update = ((&slot.m / bc1)? / denom)?;
            let theta = if decay != 1.0 {
                (theta * decay)?
            } else {
                theta
            };
            slot.var.set(&(theta - (update * lr)?)?)?;
        }
        Ok(())
    }
}

/// Whether the in-place CPU update applies: the fast CPU kernels on, CPU, one float dtype,
/// contiguous tensors (the moments and weights are; a gradient may not be).
fn fused_ok(var: &Var, m: &Tensor, v: &Tensor, g: &Tensor) -> bool {
    let t = var.as_tensor();
    crate::kernels::fast_cpu()
        && t.device().is_cpu()
        && matches!(t.dtype(), DType::F32 | DType::F64)
        && [m, v, g].iter().all(|x| x.dtype() == t.dtype())
        && [t, m, v, g].iter().all(|x| x.is_contiguous())
}

/// Work items of the in-place passes (elements).
const CHUNK: usize = 1 << 14;

fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [T]> {
    crate::kernels::contiguous(s, l, "Adam update")
}

/// The float types of the in-place passes, with mutable access to their CPU storage (candle only
/// offers the shared `cpu_storage_as_slice`).
trait Float: WithDType {
    fn storage_mut(s: &mut CpuStorage) -> Option<&mut [Self]>;
}
impl Float for f32 {
    fn storage_mut(s: &mut CpuStorage) -> Option<&mut [f32]> {
        match s {
            CpuStorage::F32(d) => Some(d),
            _ => None,
        }
    }
}
impl Float for f64 {
    fn storage_mut(s: &mut CpuStorage) -> Option<&mut [f64]> {
        match s {
            CpuStorage::F64(d) => Some(d),
            _ => None,
        }
    }
}

fn slice_mut<'a, T: Float>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [T]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("Adam update: non-contiguous tensor".into()))?;
    match T::storage_mut(s) {
        Some(data) => Ok(&mut data[a..b]),
        None => candle_core::bail!("Adam update: f32 or f64 tensors of one dtype required"),
    }
}

/// m ← β·m + (1 − β)·g, or with `square` v ← β·v + (1 − β)·g², in place.
struct Ema {
    beta: f64,
    square: bool,
}

/// The square root in the type's own precision. For f32 this is `sqrtps`, vectorised, where the
/// f64 square root rounded back to f32 ran one element at a time; both are the correctly rounded
/// square root of the f32 value (the f64 result has more than twice f32's precision, so rounding
/// it again gives the same bits).
trait Sqrt: WithDType {
    fn sqrt_own(self) -> Self;
}

impl Sqrt for f32 {
    fn sqrt_own(self) -> Self {
        self.sqrt()
    }
}

impl Sqrt for f64 {
    fn sqrt_own(self) -> Self {
        self.sqrt()
    }
}

impl Ema {
    fn run<T: WithDType>(&self, m: &mut [T], g: &[T]) {
        let (b, c) = (T::from_f64(self.beta), T::from_f64(1.0 - self.beta));
        let sq = self.square;
        let one = |(m, g): (&mut [T], &[T])| {
            for (m, &g) in m.iter_mut().zip(g) {
                let g = if sq { g * g } else { g };
                *m = *m * b + g * c;
            }
        };
        if m.len() <= CHUNK {
            one((m, g));
        } else {
            m.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .for_each(one);
        }
    }
}

impl InplaceOp2 for Ema {
    fn name(&self) -> &'static str {
        "spectral-adam-moment"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        if l1.shape() != l2.shape() {
            candle_core::bail!(
                "Adam update: moment {:?} vs gradient {:?}",
                l1.shape(),
                l2.shape()
            );
        }
        match s2 {
            CpuStorage::F32(_) => self.run(slice_mut::<f32>(s1, l1)?, slice::<f32>(s2, l2)?),
            CpuStorage::F64(_) => self.run(slice_mut::<f64>(s1, l1)?, slice::<f64>(s2, l2)?),
            _ => candle_core::bail!("Adam update: f32 or f64 gradient required"),
        }
        Ok(())
    }
}

/// θ ← decay·θ − lr·(m / bc1) / (√(v / bc2) + ε), in place.
struct Step {
    lr: f64,
    bc1: f64,
    bc2: f64,
    decay: f64,
}

impl Step {
    fn run<T: Sqrt>(&self, theta: &mut [T], m: &[T], v: &[T]) {
        let (lr, bc1, bc2) = (
            T::from_f64(self.lr),
            T::from_f64(self.bc1),
            T::from_f64(self.bc2),
        );
        let (decay, eps) = (T::from_f64(self.decay), T::from_f64(EPS));
        let one = |(th, (m, v)): (&mut [T], (&[T], &[T]))| {
            for ((th, &m), &v) in th.iter_mut().zip(m).zip(v) {
                let denom = (v / bc2).sqrt_own() + eps;
                *th = *th * decay - (m / bc1) / denom * lr;
            }
        };
        if theta.len() <= CHUNK {
            one((theta, (m, v)));
        } else {
            theta
                .par_chunks_mut(CHUNK)
                .zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK)))
                .for_each(one);
        }
    }
}

impl InplaceOp3 for Step {
    fn name(&self) -> &'static str {
        "spectral-adam-step"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        if l1.shape() != l2.shape() || l1.shape() != l3.shape() {
            candle_core::bail!(
                "Adam update: weight {:?} vs moments {:?} {:?}",
                l1.shape(),
                l2.shape(),
                l3.shape()
            );
        }
        match s2 {
            CpuStorage::F32(_) => self.run(
                slice_mut::<f32>(s1, l1)?,
                slice::<f32>(s2, l2)?,
                slice::<f32>(s3, l3)?,
            ),
            CpuStorage::F64(_) => self.run(
                slice_mut::<f64>(s1, l1)?,
                slice::<f64>(s2, l2)?,
                slice::<f64>(s3, l3)?,
            ),
            _ => candle_core::bail!("Adam update: f32 or f64 moments required"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Two steps on f(x) = sum(x^2) / 2 (gradient x), checked against the Adam formulas by hand
    /// (the in-place CPU update: the fast kernels are on in tests).
    #[test]
    fn matches_the_adam_update() {
        for (kind, wd) in [
            (OptimizerKind::Adam, 0.0),
            (OptimizerKind::Adam, 0.1),
            (OptimizerKind::AdamW, 0.1),
        ] {
            let x = Var::new(&[1.0f64, -2.0], &Device::Cpu).unwrap();
            let mut opt = Adam::new(vec![x.clone()], kind, wd).unwrap();
            let (mut m, mut v, mut th) = ([0.0f64; 2], [0.0f64; 2], [1.0f64, -2.0]);
            let lr = 0.05;
            for t in 1..=2 {
                let loss = (x.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
                let grads = loss.backward().unwrap();
                opt.step(&grads, lr).unwrap();
                for i in 0..2 {
                    let mut g = th[i];
                    if kind == OptimizerKind::Adam {
                        g += wd * th[i];
                    } else {
                        th[i] *= 1.0 - lr * wd;
                    }
                    m[i] = 0.9 * m[i] + 0.1 * g;
                    v[i] = 0.999 * v[i] + 0.001 * g * g;
                    let mh = m[i] / (1.0 - 0.9f64.powi(t));
                    let vh = v[i] / (1.0 - 0.999f64.powi(t));
                    th[i] -= lr * mh / (vh.sqrt() + 1e-8);
                }
            }
            let got = x.as_tensor().to_vec1::<f64>().unwrap();
            for i in 0..2 {
                assert!(
                    (got[i] - th[i]).abs() < 1e-12,
                    "{kind:?} wd {wd}: {got:?} vs {th:?}"
                );
            }
        }
    }

    /// The in-place passes against the candle-op formulas of the fallback path, in f32 on a
    /// vector long enough to be split over threads (odd length).
    #[test]
    fn in_place_update_matches_the_tensor_formulas() {
        use rand::{Rng, SeedableRng};
        let dev = Device::Cpu;
        let n = 100_003;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut r = |scale: f32| -> Tensor {
            let v: Vec<f32> = (0..n)
                .map(|_| (rng.random::<f32>() - 0.5) * scale)
                .collect();
            Tensor::from_vec(v, n, &dev).unwrap()
        };
        let (theta, g, m, v) = (r(2.0), r(0.1), r(0.01), r(0.001).abs().unwrap());
        let (lr, bc1, bc2, decay) = (1e-3, 0.271, 0.003, 0.9999);
        let m2 = ((&m * BETA1).unwrap() + (&g * (1.0 - BETA1)).unwrap()).unwrap();
        let v2 = ((&v * BETA2).unwrap() + (g.sqr().unwrap() * (1.0 - BETA2)).unwrap()).unwrap();
        let denom = ((&v2 / bc2).unwrap().sqrt().unwrap() + EPS).unwrap();
        let update = ((&m2 / bc1).unwrap() / denom).unwrap();
        let want = ((&theta * decay).unwrap() - (update * lr).unwrap()).unwrap();
        let (tm, tv, tt) = (m.copy().unwrap(), v.copy().unwrap(), theta.copy().unwrap());
        tm.inplace_op2(
            &g,
            &Ema {
                beta: BETA1,
                square: false,
            },
        )
        .unwrap();
        tv.inplace_op2(
            &g,
            &Ema {
                beta: BETA2,
                square: true,
            },
        )
        .unwrap();
        tt.inplace_op3(
            &tm,
            &tv,
            &Step {
                lr,
                bc1,
                bc2,
                decay,
            },
        )
        .unwrap();
        let flat = |t: &Tensor| t.to_vec1::<f32>().unwrap();
        for (name, got, want) in [("m", &tm, &m2), ("v", &tv, &v2), ("theta", &tt, &want)] {
            for (i, (a, b)) in flat(got).iter().zip(flat(want)).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1e-3),
                    "{name}[{i}]: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn cosine_schedule_ends_at_the_floor() {
        let s = Schedule::Cosine { min_factor: 0.1 };
        assert_eq!(s.lr(1.0, 0, 11), 1.0);
        assert!((s.lr(1.0, 10, 11) - 0.1).abs() < 1e-12);
        assert!((s.lr(1.0, 5, 11) - 0.55).abs() < 1e-12);
        assert_eq!(Schedule::Constant.lr(0.3, 7, 11), 0.3);
    }
}
