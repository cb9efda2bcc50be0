//! Adam and AdamW with a learning-rate schedule.
//!
//! Written here rather than taken from candle_nn because candle_nn only has AdamW (decoupled
//! weight decay); the group's Keras/PyTorch fine-tuning uses Adam, whose weight decay is an L2
//! term added to the gradient. Both follow PyTorch's `torch.optim.Adam` / `AdamW` update.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
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
            // detached: the moments must not keep the autograd graph of past steps alive
            slot.m = ((&slot.m * BETA1)? + (&g * (1.0 - BETA1))?)?.detach();
            slot.v = ((&slot.v * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?.detach();
            let denom = ((&slot.v / bc2)?.sqrt()? + EPS)?;
            let update = ((&slot.m / bc1)? / denom)?;
            let theta = match self.kind {
                OptimizerKind::AdamW if wd != 0.0 => (theta * (1.0 - lr * wd))?,
                _ => theta,
            };
            slot.var.set(&(theta - (update * lr)?)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Two steps on f(x) = sum(x^2) / 2 (gradient x), checked against the Adam formulas by hand.
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

    #[test]
    fn cosine_schedule_ends_at_the_floor() {
        let s = Schedule::Cosine { min_factor: 0.1 };
        assert_eq!(s.lr(1.0, 0, 11), 1.0);
        assert!((s.lr(1.0, 10, 11) - 0.1).abs() < 1e-12);
        assert!((s.lr(1.0, 5, 11) - 0.55).abs() < 1e-12);
        assert_eq!(Schedule::Constant.lr(0.3, 7, 11), 0.3);
    }
}
