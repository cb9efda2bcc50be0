//! The study configuration: one TOML file says everything a study does (sources and their edits,
//! the shortcut artifacts, the degradation levels, the folds, the training budget, the PSD options
//! and the seed). `presets/*.toml` are examples; every field is documented here.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spec::{ArtifactSpec, EditSpec};
use crate::error::{Error, Result};

/// A whole study, as read from a TOML file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Study {
    /// Short name, used in file names and the report title.
    pub name: String,
    /// Master seed; every random choice of every run is derived from it.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Folder of the embedded data sets (default: `data/` of the crate).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Side of the square patches in pixels. Every data set must have this size (no resizing:
    /// resampling would change the spectra under study).
    pub patch_size: usize,
    /// Number of cross-validation folds (method.md: 5).
    #[serde(default = "default_folds")]
    pub folds: usize,
    /// Degradation levels p: the fraction of positive training images that carry the artifact.
    #[serde(default = "default_levels")]
    pub levels: Vec<f64>,
    /// The fine-tuning task.
    pub target: TargetSpec,
    /// The pre-training sources (with their edits).
    pub sources: Vec<SourceSpec>,
    /// The shortcut artifacts, with their strengths.
    pub artifacts: Vec<ArtifactSpec>,
    /// The architecture shared by every source (so that only the source differs).
    pub model: ModelSpec,
    /// Budget of pre-training from scratch on a source set.
    pub pretrain: TrainSpec,
    /// Budget of fine-tuning on the target.
    pub finetune: TrainSpec,
    /// How the gradient and artifact PSDs are measured.
    #[serde(default)]
    pub psd: PsdSpec,
    /// Figure options.
    #[serde(default)]
    pub figures: FigureSpec,
}

fn default_seed() -> u64 {
    2025
}
fn default_folds() -> usize {
    5
}
/// The degradation levels of method.md.
pub fn default_levels() -> Vec<f64> {
    vec![0.0, 0.1, 0.2, 0.5, 0.8, 1.0]
}

/// Where a set of labelled patches comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataSpec {
    /// One of the sets committed under `data/`: `natural`, `medical` or `target`.
    Embedded { set: String },
    /// A user dataset: CSV manifest `path,label,group` (paths relative to the manifest).
    Manifest { path: PathBuf },
}

impl DataSpec {
    /// Short description for tables and errors.
    pub fn describe(&self) -> String {
        match self {
            DataSpec::Embedded { set } => format!("embedded:{set}"),
            DataSpec::Manifest { path } => format!("manifest:{}", path.display()),
        }
    }
}

/// The fine-tuning target (a binary task).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub data: DataSpec,
    /// The class that receives the artifact (method.md: the positive class).
    #[serde(default = "default_positive")]
    pub positive_class: u32,
    /// Keep at most this many patches (stratified by group, seeded), to fit the budget.
    #[serde(default)]
    pub max_patches: Option<usize>,
}

fn default_positive() -> u32 {
    1
}

/// How a source's model gets its weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pretraining {
    /// Pre-trained by this project on a source set (after its edit), one budget for all sources.
    Scratch {
        data: DataSpec,
        /// Keep at most this many source patches (seeded), to fit the budget.
        #[serde(default)]
        max_patches: Option<usize>,
    },
    /// Weights from the `source` registry (e.g. `imagenet-resnet50`, `radimagenet-resnet50`),
    /// optionally from a local file.
    Registry {
        entry: String,
        #[serde(default)]
        weights: Option<PathBuf>,
    },
}

/// One pre-training source and the edits of its data to study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Short, filename-safe name: "natural", "medical", "imagenet", ...
    pub name: String,
    pub pretraining: Pretraining,
    /// Edits of the source data before pre-training; `original` is the unedited source.
    #[serde(default = "default_edits")]
    pub edits: Vec<EditSpec>,
}

fn default_edits() -> Vec<EditSpec> {
    vec![super::spec::original_edit()]
}

/// The architecture (see `model::ResNetConfig`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// `resnet18`, `resnet34` or `resnet50`.
    pub arch: String,
    /// Channels of the first stage (64 in the torchvision ResNets; 8-16 fits 2 CPU cores).
    #[serde(default = "default_width")]
    pub base_width: usize,
    /// Input channels: 1 (greyscale) or 3 (greyscale replicated, for ImageNet weights).
    #[serde(default = "default_in_channels")]
    pub in_channels: usize,
    /// Dropout before the linear head (method.md: 0.5).
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// CIFAR-style stem (3x3 conv, no max-pool) for 32-64 px inputs.
    #[serde(default)]
    pub small_input: bool,
}

fn default_width() -> usize {
    64
}
fn default_in_channels() -> usize {
    1
}
fn default_dropout() -> f64 {
    0.5
}

/// A training budget (see `train::TrainConfig`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    pub epochs: usize,
    pub batch_size: usize,
    /// Adam learning rate (method.md: 1e-4; 1e-3 also used).
    pub lr: f64,
    #[serde(default)]
    pub weight_decay: f64,
    /// Early stopping: epochs without a better validation loss (0 = off).
    #[serde(default)]
    pub patience: usize,
    /// Light augmentation (flips, small shifts).
    #[serde(default = "default_true")]
    pub augment: bool,
    /// Fraction of the pre-training set held out for validation (pre-training only).
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
}

fn default_true() -> bool {
    true
}
fn default_val_fraction() -> f64 {
    0.1
}

/// How PSDs are measured (see `spectrum::RadialPsd`, `gradient::GradientTarget`); the defaults
/// are method.md's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PsdSpec {
    /// `hann`, `hamming` or `none`.
    pub window: String,
    /// `amplitude` or `power`.
    pub scale: String,
    /// `min_max`, `energy` or `none` (per image, before averaging).
    pub normalisation: String,
    /// `true_dc` or `half_pixel` (the authors' ring centre).
    pub centre: String,
    /// `nyquist` or `corner`.
    pub extent: String,
    /// |G| instead of the signed gradient.
    pub absolute: bool,
    /// Gradient of the pre-trained model (foreign head): `predicted_log_softmax` or `predicted_logit`.
    pub pretrained_target: String,
    /// Gradient of the fine-tuned model: `loss` (cross-entropy on the true label).
    pub finetuned_target: String,
    /// Images per gradient pass (bounds memory).
    pub micro_batch: usize,
    /// At most this many clean test images per PSD (and per artifact residual).
    pub max_images: usize,
}

impl Default for PsdSpec {
    fn default() -> Self {
        Self {
            window: "hann".into(),
            scale: "amplitude".into(),
            normalisation: "min_max".into(),
            centre: "true_dc".into(),
            extent: "nyquist".into(),
            absolute: false,
            pretrained_target: "predicted_log_softmax".into(),
            finetuned_target: "loss".into(),
            micro_batch: 32,
            max_images: 256,
        }
    }
}

/// Figure options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FigureSpec {
    /// The frequency marked in Fig. 1 (normalised, 1 = Nyquist).
    pub marked_omega: f64,
    /// Width of the PNG figures in pixels (notebook width).
    pub width: u32,
}

impl Default for FigureSpec {
    fn default() -> Self {
        Self {
            marked_omega: 0.5,
            width: 800,
        }
    }
}

fn safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Study {
    /// Reads and validates a study file; errors name the file and the field.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text).map_err(|e| match e {
            Error::Other(msg) => Error::file(path, msg),
            other => other,
        })
    }

    /// Parses and validates a study from TOML text.
    pub fn from_toml(text: &str) -> Result<Self> {
        let study: Study =
            toml::from_str(text).map_err(|e| Error::Other(format!("invalid study: {e}")))?;
        study.validate()?;
        Ok(study)
    }

    /// The study as TOML (for `results/study.toml`).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::Other(format!("study to TOML: {e}")))
    }

    /// The folder of the embedded data sets.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(crate::data::default_data_dir)
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if !safe_name(&self.name) {
            return Err(Error::param(
                "name",
                &self.name,
                "must be non-empty ASCII letters, digits, '-' or '_'",
            ));
        }
        if self.patch_size < 8 {
            return Err(Error::param("patch_size", self.patch_size, "must be >= 8"));
        }
        if self.folds < 2 {
            return Err(Error::param("folds", self.folds, "need at least 2 folds"));
        }
        if self.levels.is_empty() {
            return Err(Error::param("levels", "[]", "need at least one level"));
        }
        for (i, &p) in self.levels.iter().enumerate() {
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::param("levels", p, "every level must be in [0, 1]"));
            }
            if self.levels[..i].contains(&p) {
                return Err(Error::param("levels", p, "levels must be distinct"));
            }
        }
        if self.sources.is_empty() {
            return Err(Error::param("sources", "[]", "need at least one source"));
        }
        for (i, s) in self.sources.iter().enumerate() {
            if !safe_name(&s.name) {
                return Err(Error::param(
                    "sources.name",
                    &s.name,
                    "must be non-empty ASCII letters, digits, '-' or '_'",
                ));
            }
            if self.sources[..i].iter().any(|o| o.name == s.name) {
                return Err(Error::param(
                    "sources.name",
                    &s.name,
                    "source names must be unique",
                ));
            }
            if s.edits.is_empty() {
                return Err(Error::param(
                    "sources.edits",
                    &s.name,
                    "need at least one edit",
                ));
            }
            for (j, e) in s.edits.iter().enumerate() {
                super::spec::validate_edit(e)?;
                let label = super::spec::edit_label(e);
                if s.edits[..j]
                    .iter()
                    .any(|o| super::spec::edit_label(o) == label)
                {
                    return Err(Error::param(
                        "sources.edits",
                        label,
                        "edits must be distinct",
                    ));
                }
            }
            if let Pretraining::Registry { entry, .. } = &s.pretraining {
                // an unknown entry fails here, with the known names, not at pre-training time
                crate::source::entry(entry)?;
                if s.edits.iter().any(|e| !super::spec::is_original(e)) {
                    return Err(Error::param(
                        "sources.edits",
                        entry,
                        "a registry source has fixed weights: only the `original` edit applies",
                    ));
                }
            }
            if let Pretraining::Scratch {
                max_patches: Some(0),
                ..
            } = &s.pretraining
            {
                return Err(Error::param(
                    "sources.pretraining.max_patches",
                    0,
                    "must be > 0",
                ));
            }
        }
        if self.artifacts.is_empty() {
            return Err(Error::param(
                "artifacts",
                "[]",
                "need at least one artifact",
            ));
        }
        for (i, a) in self.artifacts.iter().enumerate() {
            super::spec::validate_artifact(a)?;
            let label = super::spec::artifact_label(a);
            if self.artifacts[..i]
                .iter()
                .any(|o| super::spec::artifact_label(o) == label)
            {
                return Err(Error::param(
                    "artifacts",
                    label,
                    "artifacts must be distinct",
                ));
            }
        }
        if !["resnet18", "resnet34", "resnet50"].contains(&self.model.arch.as_str()) {
            return Err(Error::param(
                "model.arch",
                &self.model.arch,
                "expected resnet18, resnet34 or resnet50",
            ));
        }
        if self.model.base_width == 0 {
            return Err(Error::param("model.base_width", 0, "must be > 0"));
        }
        if ![1, 3].contains(&self.model.in_channels) {
            return Err(Error::param(
                "model.in_channels",
                self.model.in_channels,
                "expected 1 or 3",
            ));
        }
        if !(0.0..1.0).contains(&self.model.dropout) {
            return Err(Error::param(
                "model.dropout",
                self.model.dropout,
                "must be in [0, 1)",
            ));
        }
        for (name, t) in [("pretrain", &self.pretrain), ("finetune", &self.finetune)] {
            if t.epochs == 0 {
                return Err(Error::param(leak(name, "epochs"), 0, "must be > 0"));
            }
            if t.batch_size == 0 {
                return Err(Error::param(leak(name, "batch_size"), 0, "must be > 0"));
            }
            if !(t.lr > 0.0 && t.lr.is_finite()) {
                return Err(Error::param(leak(name, "lr"), t.lr, "must be > 0"));
            }
            if !(0.0..0.9).contains(&t.val_fraction) {
                return Err(Error::param(
                    leak(name, "val_fraction"),
                    t.val_fraction,
                    "must be in [0, 0.9)",
                ));
            }
        }
        if let Some(0) = self.target.max_patches {
            return Err(Error::param("target.max_patches", 0, "must be > 0"));
        }
        if self.psd.micro_batch == 0 {
            return Err(Error::param("psd.micro_batch", 0, "must be > 0"));
        }
        if self.psd.max_images == 0 {
            return Err(Error::param("psd.max_images", 0, "must be > 0"));
        }
        if !(self.figures.marked_omega > 0.0 && self.figures.marked_omega <= 1.0) {
            return Err(Error::param(
                "figures.marked_omega",
                self.figures.marked_omega,
                "must be in (0, 1]",
            ));
        }
        super::spec::validate_psd(&self.psd)?;
        Ok(())
    }

    /// The source called `name`.
    pub fn source(&self, name: &str) -> Result<&SourceSpec> {
        self.sources
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| Error::param("source", name, "no such source in the study"))
    }
}

/// Field names for errors (`pretrain.epochs`); a handful of static strings.
fn leak(section: &str, field: &str) -> &'static str {
    match (section, field) {
        ("pretrain", "epochs") => "pretrain.epochs",
        ("pretrain", "batch_size") => "pretrain.batch_size",
        ("pretrain", "lr") => "pretrain.lr",
        ("pretrain", "val_fraction") => "pretrain.val_fraction",
        ("finetune", "epochs") => "finetune.epochs",
        ("finetune", "batch_size") => "finetune.batch_size",
        ("finetune", "lr") => "finetune.lr",
        ("finetune", "val_fraction") => "finetune.val_fraction",
        _ => "training",
    }
}
