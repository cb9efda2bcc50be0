//! The ResNet entry points of the architecture contract: thin wrappers over the generic
//! machinery of [`super`], with the torchvision head `fc.weight` / `fc.bias`.

use std::collections::HashMap;

use candle_core::Tensor;

use super::{
    finetune_with, predict_scores_with, pretrain_with, varmap_tensors, ModelSpec, Normalise,
    TrainConfig, Trained,
};
use crate::data::PatchSet;
use crate::error::{Error, Result};
use crate::model::{ResNet, ResNetConfig};

/// Prefix of the classification head (torchvision naming), replaced when fine-tuning.
pub const HEAD_PREFIX: &str = "fc.";

fn spec(cfg: &ResNetConfig) -> Result<ModelSpec> {
    Ok(ModelSpec {
        channels: cfg.in_channels,
        config: serde_json::to_value(cfg)
            .map_err(|e| Error::Other(format!("cannot serialise the ResNet config: {e}")))?,
    })
}

/// Builds a ResNet with seeded initial weights and its dropout stream seeded from `seed`.
fn build(
    cfg: &ResNetConfig,
    seed: u64,
) -> impl FnOnce(candle_nn::VarBuilder<'static>) -> Result<ResNet> + '_ {
    move |vb| {
        let model = ResNet::new(cfg, vb)?;
        model.reseed_dropout(seed);
        Ok(model)
    }
}

/// Pre-trains a ResNet from seeded random weights on every class of `set` (multi-class; the
/// model's `num_classes` must equal the set's). Without a validation set all `cfg.epochs` run.
pub fn pretrain(
    set: &PatchSet,
    model_cfg: &ResNetConfig,
    cfg: &TrainConfig,
) -> Result<Trained<ResNet>> {
    pretrain_val(set, None, model_cfg, cfg)
}

/// [`pretrain`] with a validation set: early stopping and best-weight restoring apply.
pub fn pretrain_val(
    set: &PatchSet,
    val: Option<&PatchSet>,
    model_cfg: &ResNetConfig,
    cfg: &TrainConfig,
) -> Result<Trained<ResNet>> {
    model_cfg.validate()?;
    if model_cfg.num_classes != set.num_classes() {
        return Err(Error::param(
            "num_classes",
            model_cfg.num_classes,
            format!(
                "the model needs one output per class of `{}` ({})",
                set.name,
                set.num_classes()
            ),
        ));
    }
    pretrain_with(build(model_cfg, cfg.seed), &spec(model_cfg)?, set, val, cfg)
}

/// Fine-tunes a ResNet on a binary target from the tensors `from` of a ResNet of architecture
/// `model_cfg` (a pre-trained run's `varmap_tensors`, a loaded checkpoint, or a registry source).
///
/// The head is replaced by a fresh 2-class `fc` (seeded) behind dropout `cfg.head_dropout`:
/// global average pool -> dropout -> linear; every layer is trainable. `model_cfg.num_classes`
/// and `model_cfg.dropout` are overridden; the other fields must describe `from`.
pub fn finetune(
    from: &HashMap<String, Tensor>,
    model_cfg: &ResNetConfig,
    train: &PatchSet,
    val: &PatchSet,
    cfg: &TrainConfig,
) -> Result<Trained<ResNet>> {
    let binary = ResNetConfig {
        num_classes: 2,
        dropout: cfg.head_dropout,
        ..model_cfg.clone()
    };
    binary.validate()?;
    finetune_with(
        build(&binary, cfg.seed),
        &spec(&binary)?,
        from,
        HEAD_PREFIX,
        train,
        Some(val),
        cfg,
    )
}

/// [`finetune`] from a pre-trained run.
pub fn finetune_trained(
    from: &Trained<ResNet>,
    train: &PatchSet,
    val: &PatchSet,
    cfg: &TrainConfig,
) -> Result<Trained<ResNet>> {
    finetune(
        &varmap_tensors(&from.varmap)?,
        from.model.config(),
        train,
        val,
        cfg,
    )
}

/// Softmax P(class 1) of `model` for every patch of `set`, in order, with the patches as they
/// are (intensities in [0, 1], no normalisation). For a model trained with a normalisation, use
/// [`predict_scores_normalised`] or [`Trained::predict_scores`].
pub fn predict_scores(model: &ResNet, set: &PatchSet, batch: usize) -> Result<Vec<f32>> {
    predict_scores_normalised(model, set, &Normalise::default(), batch)
}

/// [`predict_scores`] after replicating to the model's input channels and normalising.
pub fn predict_scores_normalised(
    model: &ResNet,
    set: &PatchSet,
    normalise: &Normalise,
    batch: usize,
) -> Result<Vec<f32>> {
    let device = model.device().clone();
    predict_scores_with(
        model,
        set,
        model.config().in_channels,
        normalise,
        batch,
        &device,
    )
}
