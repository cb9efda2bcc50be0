//! Training: pre-training on a source set (multi-class), fine-tuning on the target (binary head),
//! evaluation by positive-class ROC AUC, and checkpoints.
//!
//! The machinery is generic over any `candle_nn::ModuleT` model whose variables live in a
//! `VarMap` ([`pretrain_with`], [`finetune_with`], [`fit`], [`predict_scores_with`]); the
//! ResNet entry points of the architecture contract are thin wrappers over them.
//!
//! Defaults follow method.md "Fine-tuning defaults" (all in [`TrainConfig`]): Adam, lr 1e-4,
//! no weight decay, constant schedule, early stopping on the validation loss with patience 5 and
//! the best weights restored, light augmentation (flip, shift <= 2 px, rotation <= 10 degrees),
//! batch 32, at most 30 epochs.
//!
//! # Determinism
//! One seed fixes everything random: the initial weights (per tensor name, see
//! [`seeded_var_builder`]), the batch order and the augmentation (separate ChaCha8 streams), and
//! dropout masks when the model uses [`SeededDropout`]. candle's own CPU generator cannot be
//! seeded, so a model must not use `candle_nn::Dropout` or `VarBuilder::from_varmap` initial
//! values if it is to be reproducible. On CPU the same seed then gives bit-identical weights and
//! metrics (tested on a tiny CNN, with rayon pools of 1 and 2 threads and candle's gemm thread
//! hint `RAYON_NUM_THREADS` at 1 and 4: candle's CPU kernels split work across threads without
//! changing the order of floating-point sums). This is a tested observation about candle 0.11,
//! not a guarantee of candle's: fix `TrainConfig::threads` (and `RAYON_NUM_THREADS`) when
//! comparing runs across machines. Only `EpochMetrics::seconds` differs between runs.

mod auc;
mod batch;
mod checkpoint;
mod init;
mod optim;
mod resnet;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{ModuleT, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

pub use auc::roc_auc;
pub use batch::{batch_tensors, epoch_batches, Augment, Normalise};
pub use checkpoint::{
    load_checkpoint, load_into_varmap, save_checkpoint, sidecar_path, varmap_tensors,
    CheckpointMeta, CHECKPOINT_FORMAT,
};
pub use init::{seeded_var_builder, SeededDropout};
pub use optim::{Adam, OptimizerKind, Schedule};
pub use resnet::{
    finetune, finetune_trained, predict_scores, predict_scores_normalised, pretrain, pretrain_val,
    HEAD_PREFIX,
};

use crate::data::PatchSet;
use crate::error::{Error, Result};

/// Where to train.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    #[default]
    Cpu,
    /// CUDA device with this ordinal (needs the `cuda` feature; bit-identity is only promised
    /// on CPU).
    Cuda(usize),
}

impl DeviceKind {
    /// The candle device.
    pub fn device(&self) -> Result<Device> {
        match *self {
            DeviceKind::Cpu => Ok(Device::Cpu),
            DeviceKind::Cuda(i) => Device::new_cuda(i)
                .map_err(|e| Error::param("device", format!("cuda:{i}"), e.to_string())),
        }
    }
}

/// Everything that sets a training run. `Default` gives method.md's fine-tuning defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Maximum number of passes over the training set (default 30).
    pub epochs: usize,
    /// Patches per optimisation step (default 32). A last batch of one patch is skipped.
    pub batch_size: usize,
    /// Batch size of evaluation (validation, prediction); no effect on results (default 128).
    pub eval_batch_size: usize,
    /// Base learning rate (default 1e-4, the group's fine-tuning value; 1e-3 is also used).
    pub lr: f64,
    /// L2 penalty (Adam) or decoupled decay (AdamW) (default 0).
    pub weight_decay: f64,
    /// Adam (default) or AdamW.
    pub optimizer: OptimizerKind,
    /// Learning rate over the steps (default constant).
    pub schedule: Schedule,
    /// Early stopping: stop after this many epochs without a lower validation loss (default 5).
    /// `None` trains all epochs. Without a validation set there is no early stopping.
    pub patience: Option<usize>,
    /// With a validation set, end with the weights of the epoch of lowest validation loss
    /// (default true).
    pub restore_best: bool,
    /// Training augmentation (default light: flip, shift <= 2 px, rotation <= 10 degrees).
    pub augment: Augment,
    /// Input normalisation after channel replication (default identity).
    pub normalise: Normalise,
    /// Dropout before the fine-tuned binary head (default 0.5).
    pub head_dropout: f64,
    /// Seed of initial weights, batch order, augmentation and dropout (default 0).
    pub seed: u64,
    /// Run in a rayon pool of this many threads (default `None`: the global pool, sized by
    /// `RAYON_NUM_THREADS` or the core count).
    pub threads: Option<usize>,
    pub device: DeviceKind,
    /// Write `epoch-NNN.safetensors` (+ JSON sidecar) here after every epoch (default `None`).
    pub checkpoint_dir: Option<PathBuf>,
    /// Show a progress bar per epoch on stderr, only if stderr is a terminal (default false).
    pub progress: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 30,
            batch_size: 32,
            eval_batch_size: 128,
            lr: 1e-4,
            weight_decay: 0.0,
            optimizer: OptimizerKind::Adam,
            schedule: Schedule::Constant,
            patience: Some(5),
            restore_best: true,
            augment: Augment::default(),
            normalise: Normalise::default(),
            head_dropout: 0.5,
            seed: 0,
            threads: None,
            device: DeviceKind::Cpu,
            checkpoint_dir: None,
            progress: false,
        }
    }
}

impl TrainConfig {
    /// Checks every parameter; the error names the first bad one. (The normalisation's length
    /// is checked against the model's channels when training starts.)
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::param("epochs", self.epochs, "must be >= 1"));
        }
        if self.batch_size < 2 {
            return Err(Error::param(
                "batch_size",
                self.batch_size,
                "must be >= 2 (BatchNorm needs two samples per batch)",
            ));
        }
        if self.eval_batch_size == 0 {
            return Err(Error::param(
                "eval_batch_size",
                self.eval_batch_size,
                "must be >= 1",
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::param("lr", self.lr, "must be finite and > 0"));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::param(
                "weight_decay",
                self.weight_decay,
                "must be finite and >= 0",
            ));
        }
        if self.optimizer == OptimizerKind::AdamW && self.lr * self.weight_decay >= 1.0 {
            return Err(Error::param(
                "weight_decay",
                self.weight_decay,
                "lr * weight_decay must be < 1 for AdamW",
            ));
        }
        if let Schedule::Cosine { min_factor } = self.schedule {
            if !(0.0..=1.0).contains(&min_factor) {
                return Err(Error::param(
                    "schedule.min_factor",
                    min_factor,
                    "must be in [0, 1]",
                ));
            }
        }
        if self.patience == Some(0) {
            return Err(Error::param(
                "patience",
                0,
                "must be >= 1 (or None for no early stopping)",
            ));
        }
        if !(0.0..1.0).contains(&self.head_dropout) {
            return Err(Error::param(
                "head_dropout",
                self.head_dropout,
                "must be in [0, 1)",
            ));
        }
        if self.threads == Some(0) {
            return Err(Error::param("threads", 0, "must be >= 1 (or None)"));
        }
        self.augment.validate()
    }
}

/// What was measured after one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: usize,
    /// Mean cross-entropy (nats) over the epoch's training patches, in training mode
    /// (augmented, dropout and batch statistics on), as seen during the epoch.
    pub train_loss: f64,
    /// Mean cross-entropy on the validation set in evaluation mode, if one was given.
    pub val_loss: Option<f64>,
    /// Positive-class (class 1) ROC AUC on the validation set, if it has exactly two classes
    /// and both occur.
    pub val_auc: Option<f64>,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// Wall-clock seconds of the epoch (the only field that is not reproducible).
    pub seconds: f64,
}

/// A trained model, its variables and its training history.
pub struct Trained<M> {
    /// Every variable of `model` (weights and BatchNorm running statistics), by tensor name.
    pub varmap: VarMap,
    pub model: M,
    pub history: Vec<EpochMetrics>,
    /// The epoch (1-based) whose weights the model holds when `restore_best` applied.
    pub best_epoch: Option<usize>,
    pub config: TrainConfig,
    /// The model's input description: channels and its configuration (for checkpoints).
    pub spec: ModelSpec,
}

/// What the trainer needs to know about a model besides its `ModuleT`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Input channels the grey patches are replicated to.
    pub channels: usize,
    /// The model's configuration, stored in checkpoint sidecars.
    pub config: serde_json::Value,
}

impl<M: ModuleT> Trained<M> {
    /// P(class 1) for every patch of `set`, with this run's normalisation.
    pub fn predict_scores(&self, set: &PatchSet) -> Result<Vec<f32>> {
        predict_scores_with(
            &self.model,
            set,
            self.spec.channels,
            &self.config.normalise,
            self.config.eval_batch_size,
            &self.config.device.device()?,
        )
    }

    /// Saves the current weights with a sidecar (config, seed, last epoch, history).
    pub fn save_checkpoint(&self, path: &std::path::Path) -> Result<()> {
        let epoch = self.best_epoch.unwrap_or(self.history.len());
        let meta =
            CheckpointMeta::new(&self.config, self.spec.config.clone(), epoch, &self.history);
        save_checkpoint(path, &self.varmap, &meta)
    }
}

/// The result of [`fit`].
#[derive(Clone, Debug, PartialEq)]
pub struct FitOutcome {
    pub history: Vec<EpochMetrics>,
    pub best_epoch: Option<usize>,
}

/// Mean cross-entropy and softmax P(class 1) of `model` on `set` in evaluation mode.
fn evaluate<M: ModuleT>(
    model: &M,
    set: &PatchSet,
    channels: usize,
    normalise: &Normalise,
    batch: usize,
    device: &Device,
) -> Result<(f64, Vec<f32>)> {
    let mut loss_sum = 0f64;
    let mut p1 = Vec::with_capacity(set.len());
    let all: Vec<usize> = (0..set.len()).collect();
    for idx in all.chunks(batch.max(1)) {
        let (x, y) = batch_tensors(set, idx, channels, normalise, None, device)?;
        let logits = model.forward_t(&x, false)?.detach();
        check_logits(&logits, idx.len(), set)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?.to_scalar::<f32>()?;
        loss_sum += f64::from(loss) * idx.len() as f64;
        let probs = candle_nn::ops::softmax(&logits, 1)?;
        p1.extend(probs.narrow(1, 1, 1)?.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok((loss_sum / set.len() as f64, p1))
}

fn check_logits(logits: &Tensor, n: usize, set: &PatchSet) -> Result<()> {
    let dims = logits.dims();
    if dims.len() != 2 || dims[0] != n || dims[1] < set.num_classes().max(2) {
        return Err(Error::Shape {
            what: format!("model output on patch set `{}`", set.name),
            expected: format!("logits ({n}, >= {} classes)", set.num_classes().max(2)),
            got: format!("{dims:?}"),
        });
    }
    Ok(())
}

/// Softmax P(class 1) of `model` (evaluation mode) for every patch of `set`, in order.
///
/// `channels` and `normalise` must be those the model was trained with.
pub fn predict_scores_with<M: ModuleT>(
    model: &M,
    set: &PatchSet,
    channels: usize,
    normalise: &Normalise,
    batch: usize,
    device: &Device,
) -> Result<Vec<f32>> {
    if batch == 0 {
        return Err(Error::param("batch", batch, "must be >= 1"));
    }
    if set.is_empty() {
        return Ok(Vec::new());
    }
    Ok(evaluate(model, set, channels, normalise, batch, device)?.1)
}

/// The validation AUC when it is defined (two classes, both present), else `None`.
fn binary_auc(set: &PatchSet, p1: &[f32]) -> Option<f64> {
    if set.num_classes() != 2 {
        return None;
    }
    roc_auc(p1, &set.labels, 1).ok()
}

/// Variables of `varmap` sorted by name (a stable order for the optimiser and snapshots).
fn sorted_vars(varmap: &VarMap) -> Result<Vec<(String, Var)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Other("the VarMap lock is poisoned".into()))?;
    let mut vars: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(vars)
}

fn progress_bar(cfg: &TrainConfig, steps: usize, epoch: usize) -> indicatif::ProgressBar {
    if !(cfg.progress && std::io::stderr().is_terminal()) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(steps as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("{epoch}/{}", cfg.epochs));
    bar
}

/// Trains `model` (whose variables are all in `varmap`) on `train`, in place.
///
/// Per epoch: a seeded shuffle, batches of `cfg.batch_size` (augmented), cross-entropy
/// (`candle_nn::loss::cross_entropy`, labels as class indices), one Adam/AdamW step per batch;
/// then, with `val`, the validation loss and AUC in evaluation mode, and early stopping.
/// Every class label of `train` must be an output of the model (checked on the first batch).
pub fn fit<M: ModuleT + Sync>(
    model: &M,
    varmap: &VarMap,
    train: &PatchSet,
    val: Option<&PatchSet>,
    spec: &ModelSpec,
    cfg: &TrainConfig,
) -> Result<FitOutcome> {
    cfg.validate()?;
    cfg.normalise.validate(spec.channels)?;
    match cfg.threads {
        None => fit_inner(model, varmap, train, val, spec, cfg),
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| Error::param("threads", n, e.to_string()))?
            .install(|| fit_inner(model, varmap, train, val, spec, cfg)),
    }
}

fn fit_inner<M: ModuleT>(
    model: &M,
    varmap: &VarMap,
    train: &PatchSet,
    val: Option<&PatchSet>,
    spec: &ModelSpec,
    cfg: &TrainConfig,
) -> Result<FitOutcome> {
    if train.len() < 2 {
        return Err(Error::param(
            "train",
            train.len(),
            "needs at least 2 patches",
        ));
    }
    if let Some(v) = val {
        if v.is_empty() {
            return Err(Error::param("val", 0, "the validation set is empty"));
        }
        if (v.height, v.width) != (train.height, train.width) {
            return Err(Error::Shape {
                what: "validation patches".into(),
                expected: format!("{} x {} (as training)", train.height, train.width),
                got: format!("{} x {}", v.height, v.width),
            });
        }
    }
    let device = cfg.device.device()?;
    let vars = sorted_vars(varmap)?;
    let mut opt = optim::Adam::new(
        vars.iter().map(|(_, v)| v.clone()).collect(),
        cfg.optimizer,
        cfg.weight_decay,
    )?;
    let mut shuffle_rng = batch::stream_rng(cfg.seed, batch::SHUFFLE_STREAM);
    let mut augment_rng = batch::stream_rng(cfg.seed, batch::AUGMENT_STREAM);
    let steps_per_epoch =
        epoch_batches(train.len(), cfg.batch_size, &mut batch::stream_rng(0, 0)).len();
    let total_steps = cfg.epochs * steps_per_epoch;
    let mut history = Vec::new();
    let mut best: Option<(f64, usize, Vec<Tensor>)> = None;
    let mut since_best = 0usize;
    let mut step = 0usize;
    for epoch in 1..=cfg.epochs {
        let start = Instant::now();
        let batches = epoch_batches(train.len(), cfg.batch_size, &mut shuffle_rng);
        let bar = progress_bar(cfg, batches.len(), epoch);
        let (mut loss_sum, mut seen) = (0f64, 0usize);
        let mut lr = cfg.lr;
        for idx in &batches {
            let (x, y) = batch_tensors(
                train,
                idx,
                spec.channels,
                &cfg.normalise,
                Some((&cfg.augment, &mut augment_rng)),
                &device,
            )?;
            let logits = model.forward_t(&x, true)?;
            check_logits(&logits, idx.len(), train)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            let value = f64::from(loss.to_scalar::<f32>()?);
            if !value.is_finite() {
                return Err(Error::NonFinite(format!(
                    "training loss at epoch {epoch}, step {step} (lower the learning rate?)"
                )));
            }
            lr = cfg.schedule.lr(cfg.lr, step, total_steps);
            let grads = loss.backward()?;
            opt.step(&grads, lr)?;
            step += 1;
            loss_sum += value * idx.len() as f64;
            seen += idx.len();
            bar.inc(1);
            bar.set_message(format!("loss {:.4}", loss_sum / seen as f64));
        }
        let train_loss = loss_sum / seen.max(1) as f64;
        let (val_loss, val_auc) = match val {
            Some(v) => {
                let (l, p1) = evaluate(
                    model,
                    v,
                    spec.channels,
                    &cfg.normalise,
                    cfg.eval_batch_size,
                    &device,
                )?;
                if !l.is_finite() {
                    return Err(Error::NonFinite(format!(
                        "validation loss at epoch {epoch}"
                    )));
                }
                (Some(l), binary_auc(v, &p1))
            }
            None => (None, None),
        };
        bar.finish_and_clear();
        history.push(EpochMetrics {
            epoch,
            train_loss,
            val_loss,
            val_auc,
            lr,
            seconds: start.elapsed().as_secs_f64(),
        });
        if let Some(dir) = &cfg.checkpoint_dir {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            let meta = CheckpointMeta::new(cfg, spec.config.clone(), epoch, &history);
            save_checkpoint(
                &dir.join(format!("epoch-{epoch:03}.safetensors")),
                varmap,
                &meta,
            )?;
        }
        if let Some(l) = val_loss {
            if best.as_ref().is_none_or(|b| l < b.0) {
                let snapshot = if cfg.restore_best {
                    vars.iter()
                        .map(|(_, v)| v.as_tensor().copy())
                        .collect::<candle_core::Result<Vec<_>>>()?
                } else {
                    Vec::new()
                };
                best = Some((l, epoch, snapshot));
                since_best = 0;
            } else {
                since_best += 1;
                if cfg.patience.is_some_and(|p| since_best >= p) {
                    break;
                }
            }
        }
    }
    let best_epoch = match best {
        Some((_, epoch, snapshot)) if cfg.restore_best => {
            for ((_, var), t) in vars.iter().zip(&snapshot) {
                var.set(t)?;
            }
            Some(epoch)
        }
        _ => None,
    };
    Ok(FitOutcome {
        history,
        best_epoch,
    })
}

/// Builds a model with seeded initial weights: `build` receives a `VarBuilder` that creates
/// every variable in a fresh `VarMap` from `seed` (see [`seeded_var_builder`]).
pub fn build_seeded<M>(
    build: impl FnOnce(VarBuilder<'static>) -> Result<M>,
    seed: u64,
    device: &Device,
) -> Result<(VarMap, M)> {
    let varmap = VarMap::new();
    let model = build(seeded_var_builder(&varmap, seed, DType::F32, device))?;
    Ok((varmap, model))
}

/// Pre-training (multi-class, every class of `set`) of the model that `build` makes, from
/// seeded random weights. With `val`, early stopping and best-weight restoring apply.
pub fn pretrain_with<M: ModuleT + Sync>(
    build: impl FnOnce(VarBuilder<'static>) -> Result<M>,
    spec: &ModelSpec,
    set: &PatchSet,
    val: Option<&PatchSet>,
    cfg: &TrainConfig,
) -> Result<Trained<M>> {
    cfg.validate()?;
    let device = cfg.device.device()?;
    let (varmap, model) = build_seeded(build, cfg.seed, &device)?;
    let out = fit(&model, &varmap, set, val, spec, cfg)?;
    Ok(Trained {
        varmap,
        model,
        history: out.history,
        best_epoch: out.best_epoch,
        config: cfg.clone(),
        spec: spec.clone(),
    })
}

/// Copies `from` into every variable of `varmap` except those under `head_prefix`, which keep
/// their fresh initialisation. Every other name must be in `from` with the same shape, and
/// `from` must have no other names outside the head (the first mismatch is named).
pub fn transfer_weights(
    from: &std::collections::HashMap<String, Tensor>,
    varmap: &VarMap,
    head_prefix: &str,
) -> Result<usize> {
    let vars = sorted_vars(varmap)?;
    let mut copied = 0;
    for (name, var) in &vars {
        if name.starts_with(head_prefix) {
            continue;
        }
        let src = from.get(name).ok_or_else(|| Error::Shape {
            what: format!("pre-trained weights: tensor `{name}`"),
            expected: format!("present, shape {:?}", var.dims()),
            got: "missing".into(),
        })?;
        if src.dims() != var.dims() {
            return Err(Error::Shape {
                what: format!("pre-trained weights: tensor `{name}`"),
                expected: format!("{:?}", var.dims()),
                got: format!("{:?}", src.dims()),
            });
        }
        var.set(&src.to_dtype(var.dtype())?.to_device(var.device())?)?;
        copied += 1;
    }
    let mut names: Vec<&String> = from.keys().collect();
    names.sort();
    if let Some(extra) = names
        .into_iter()
        .find(|n| !n.starts_with(head_prefix) && !vars.iter().any(|(k, _)| k == *n))
    {
        return Err(Error::Shape {
            what: format!("pre-trained weights: tensor `{extra}`"),
            expected: "a tensor of the fine-tuned model".into(),
            got: "a tensor the model does not have (another architecture?)".into(),
        });
    }
    Ok(copied)
}

/// Fine-tuning on a binary target: `build` makes the model with a 2-class head under
/// `head_prefix` (e.g. `"fc."`), which starts from seeded random weights; every other tensor
/// starts from `from` (all layers trainable). `train` and `val` must have two classes; the
/// validation AUC is that of class 1.
pub fn finetune_with<M: ModuleT + Sync>(
    build: impl FnOnce(VarBuilder<'static>) -> Result<M>,
    spec: &ModelSpec,
    from: &std::collections::HashMap<String, Tensor>,
    head_prefix: &str,
    train: &PatchSet,
    val: Option<&PatchSet>,
    cfg: &TrainConfig,
) -> Result<Trained<M>> {
    cfg.validate()?;
    for (what, set) in std::iter::once(("train", train)).chain(val.map(|v| ("val", v))) {
        if set.num_classes() != 2 {
            return Err(Error::param(
                what,
                format!("{} classes in `{}`", set.num_classes(), set.name),
                "fine-tuning needs a binary set (2 classes)",
            ));
        }
    }
    let device = cfg.device.device()?;
    let (varmap, model) = build_seeded(build, cfg.seed, &device)?;
    transfer_weights(from, &varmap, head_prefix)?;
    let out = fit(&model, &varmap, train, val, spec, cfg)?;
    Ok(Trained {
        varmap,
        model,
        history: out.history,
        best_epoch: out.best_epoch,
        config: cfg.clone(),
        spec: spec.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_parameters_are_named() {
        TrainConfig::default().validate().unwrap();
        let bad = |c: TrainConfig, name: &str| {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(&format!("`{name}`")), "{e}");
        };
        bad(
            TrainConfig {
                epochs: 0,
                ..Default::default()
            },
            "epochs",
        );
        bad(
            TrainConfig {
                batch_size: 1,
                ..Default::default()
            },
            "batch_size",
        );
        bad(
            TrainConfig {
                lr: f64::NAN,
                ..Default::default()
            },
            "lr",
        );
        bad(
            TrainConfig {
                lr: -1.0,
                ..Default::default()
            },
            "lr",
        );
        bad(
            TrainConfig {
                weight_decay: -0.1,
                ..Default::default()
            },
            "weight_decay",
        );
        bad(
            TrainConfig {
                patience: Some(0),
                ..Default::default()
            },
            "patience",
        );
        bad(
            TrainConfig {
                head_dropout: 1.0,
                ..Default::default()
            },
            "head_dropout",
        );
        bad(
            TrainConfig {
                threads: Some(0),
                ..Default::default()
            },
            "threads",
        );
        bad(
            TrainConfig {
                schedule: Schedule::Cosine { min_factor: 2.0 },
                ..Default::default()
            },
            "schedule.min_factor",
        );
        bad(
            TrainConfig {
                augment: Augment {
                    max_shift: -1.0,
                    ..Augment::default()
                },
                ..Default::default()
            },
            "augment.max_shift",
        );
    }

    #[test]
    fn config_round_trips_through_json_and_fills_defaults() {
        let c = TrainConfig {
            optimizer: OptimizerKind::AdamW,
            schedule: Schedule::Cosine { min_factor: 0.01 },
            ..Default::default()
        };
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<TrainConfig>(&s).unwrap(), c);
        let partial: TrainConfig =
            serde_json::from_str(r#"{"lr": 0.001, "optimizer": "adam_w"}"#).unwrap();
        assert_eq!(partial.lr, 1e-3);
        assert_eq!(partial.optimizer, OptimizerKind::AdamW);
        assert_eq!(partial.batch_size, 32);
    }
}
