//! The real pipeline behind a run: data, folds, injection, pre-training (cached), fine-tuning,
//! AUCs, gradient and artifact PSDs, alignment. It implements [`Executor`] for the runner.
//!
//! Per run (method.md): the target's fold split (stratified group k-fold, one split per study);
//! the artifact injected into a fraction p of the positives of the training and validation
//! folds; fine-tuning from the source's pre-trained weights (new binary head, all layers
//! trainable, early stopping on validation loss); positive-class ROC AUC on the I.I.D., O.O.D.
//! and clean test sets; the gradient PSD of the fine-tuned model on (at most `psd.max_images`)
//! clean test images; the alignment of the pre-trained and fine-tuned PSDs with the artifact's.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::config::{DataSpec, Pretraining, Study, TrainSpec};
use super::grid::{canonical_json, derive_seed, PretrainConfig, Run};
use super::results::{write_bytes_atomic, Layout, RunResult};
use super::runner::{Executor, PretrainOutcome};
use super::spec;
use crate::data::{EmbeddedSet, PatchSet};
use crate::error::{Error, Result};
use crate::image::{Image, ImageBatch};

/// What is stored next to a pre-trained checkpoint once it is complete (written last, so its
/// presence means the checkpoint is whole): the pre-trained model's PSD on the reference target
/// images and the pre-training time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PretrainRecord {
    pub id: String,
    pub config_json: String,
    pub num_classes: usize,
    pub omega: Vec<f64>,
    pub psd_mean: Vec<f64>,
    pub psd_std: Vec<f64>,
    pub seconds: f64,
    pub epochs: usize,
}

/// A PSD's mean and SD curves.
type MeanSd = (Vec<f64>, Vec<f64>);

/// The pipeline of a study, with its shared, lazily built inputs.
pub struct Pipeline {
    study: Study,
    target: OnceLock<PatchSet>,
    folds: OnceLock<Vec<crate::folds::FoldSplit>>,
    artifact_psd: Mutex<HashMap<String, MeanSd>>,
    pretrain_records: Mutex<HashMap<String, PretrainRecord>>,
}

fn subsample(set: &PatchSet, max: Option<usize>, seed: u64) -> PatchSet {
    match max {
        Some(m) if m < set.len() => {
            let mut idx: Vec<usize> = (0..set.len()).collect();
            idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
            idx.truncate(m);
            idx.sort_unstable();
            set.subset(&idx)
        }
        _ => set.clone(),
    }
}

fn load_data(data: &DataSpec, study: &Study) -> Result<PatchSet> {
    let set = match data {
        DataSpec::Embedded { set } => {
            crate::data::load_embedded(EmbeddedSet::from_name(set)?, &study.data_dir())?
        }
        DataSpec::Manifest { path } => {
            crate::data::load_csv_manifest(path, study.patch_size, "manifest")?
        }
    };
    if set.height != study.patch_size || set.width != study.patch_size {
        return Err(Error::param(
            "patch_size",
            study.patch_size,
            format!(
                "data set `{}` ({}) has {} x {} patches",
                set.name,
                data.describe(),
                set.height,
                set.width
            ),
        ));
    }
    Ok(set)
}

fn resnet_config(study: &Study, num_classes: usize) -> Result<crate::model::ResNetConfig> {
    let arch = match study.model.arch.as_str() {
        "resnet18" => crate::model::Arch::ResNet18,
        "resnet34" => crate::model::Arch::ResNet34,
        "resnet50" => crate::model::Arch::ResNet50,
        other => return Err(Error::param("model.arch", other, "expected resnet18/34/50")),
    };
    let cfg = crate::model::ResNetConfig::torchvision(arch, num_classes)
        .with_base_width(study.model.base_width)
        .with_in_channels(study.model.in_channels)
        .with_dropout(0.0)
        .with_small_input(study.model.small_input);
    cfg.validate()?;
    Ok(cfg)
}

fn train_config(spec: &TrainSpec, study: &Study, seed: u64) -> crate::train::TrainConfig {
    let mut c = crate::train::TrainConfig {
        epochs: spec.epochs,
        batch_size: spec.batch_size,
        lr: spec.lr,
        weight_decay: spec.weight_decay,
        patience: (spec.patience > 0).then_some(spec.patience),
        head_dropout: study.model.dropout,
        seed,
        ..Default::default()
    };
    if !spec.augment {
        c.augment = crate::train::Augment::none();
    }
    c
}

fn model_spec(cfg: &crate::model::ResNetConfig) -> crate::train::ModelSpec {
    crate::train::ModelSpec {
        channels: cfg.in_channels,
        config: serde_json::to_value(cfg).unwrap_or(serde_json::Value::Null),
    }
}

fn first_n(set: &PatchSet, n: usize) -> PatchSet {
    let idx: Vec<usize> = (0..set.len().min(n)).collect();
    set.subset(&idx)
}

impl Pipeline {
    pub fn new(study: &Study) -> Result<Self> {
        study.validate()?;
        spec::radial_psd(&study.psd)?;
        Ok(Self {
            study: study.clone(),
            target: OnceLock::new(),
            folds: OnceLock::new(),
            artifact_psd: Mutex::new(HashMap::new()),
            pretrain_records: Mutex::new(HashMap::new()),
        })
    }

    /// The (subsampled) target set, loaded once.
    pub fn target(&self) -> Result<&PatchSet> {
        if let Some(t) = self.target.get() {
            return Ok(t);
        }
        let set = load_data(&self.study.target.data, &self.study)?;
        if set.num_classes() != 2 {
            return Err(Error::param(
                "target.data",
                self.study.target.data.describe(),
                format!(
                    "the target must have 2 classes, found {}",
                    set.num_classes()
                ),
            ));
        }
        if self.study.target.positive_class > 1 {
            return Err(Error::param(
                "target.positive_class",
                self.study.target.positive_class,
                "must be 0 or 1",
            ));
        }
        let set = subsample(
            &set,
            self.study.target.max_patches,
            derive_seed(self.study.seed, "target-subsample"),
        );
        Ok(self.target.get_or_init(|| set))
    }

    /// The study's fold splits of the target.
    pub fn folds(&self) -> Result<&[crate::folds::FoldSplit]> {
        if let Some(f) = self.folds.get() {
            return Ok(f);
        }
        let t = self.target()?;
        let f = crate::folds::stratified_group_kfold(
            &t.labels,
            &t.groups,
            self.study.folds,
            derive_seed(self.study.seed, "folds"),
        )?;
        Ok(self.folds.get_or_init(|| f))
    }

    /// The fixed reference images for pre-trained and artifact PSDs: the first `psd.max_images`
    /// of the target.
    fn reference_images(&self) -> Result<PatchSet> {
        Ok(first_n(self.target()?, self.study.psd.max_images))
    }

    /// Mean and SD of the artifact residual's PSD on the reference images (cached per artifact).
    /// With a baseline (photon noise), the residual is artifact minus baseline: the cue the model
    /// can learn.
    pub fn artifact_psd(
        &self,
        artifact: &spec::ArtifactSpec,
    ) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
        let label = spec::artifact_label(artifact);
        let radial = spec::radial_psd(&self.study.psd)?;
        if let Some((m, s)) = self
            .artifact_psd
            .lock()
            .ok()
            .and_then(|c| c.get(&label).cloned())
        {
            let omega = radial.omega(self.study.patch_size, self.study.patch_size)?;
            return Ok((omega, m, s));
        }
        let a = spec::to_artifact(artifact)?;
        let refs = self.reference_images()?;
        let seed = derive_seed(self.study.seed, &format!("artifact-psd/{label}"));
        let baseline = a.baseline();
        let mut degraded = Vec::with_capacity(refs.len());
        let mut clean = Vec::with_capacity(refs.len());
        for i in 0..refs.len() {
            let img = refs.image(i);
            let s = seed.wrapping_add(i as u64);
            let base = match &baseline {
                Some(b) => b.apply(&img, s.wrapping_mul(31))?,
                None => img.clone(),
            };
            degraded.push(a.apply(&img, s)?);
            clean.push(base);
        }
        let curves = radial.residual(
            &ImageBatch::from_images(&degraded)?,
            &ImageBatch::from_images(&clean)?,
        )?;
        if let Ok(mut c) = self.artifact_psd.lock() {
            c.insert(label, (curves.mean.clone(), curves.std.clone()));
        }
        Ok((curves.omega, curves.mean, curves.std))
    }

    fn read_record(&self, layout: &Layout, id: &str) -> Result<Option<PretrainRecord>> {
        if let Some(r) = self
            .pretrain_records
            .lock()
            .ok()
            .and_then(|c| c.get(id).cloned())
        {
            return Ok(Some(r));
        }
        let path = layout.sidecar(id).with_extension("done.json");
        if !path.is_file() || !layout.checkpoint(id).is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let rec: PretrainRecord = serde_json::from_str(&text)
            .map_err(|e| Error::file(&path, format!("corrupt pre-training record: {e}")))?;
        if let Ok(mut c) = self.pretrain_records.lock() {
            c.insert(id.to_string(), rec.clone());
        }
        Ok(Some(rec))
    }

    fn source_set(&self, cfg: &PretrainConfig) -> Result<PatchSet> {
        let Pretraining::Scratch { data, max_patches } = &cfg.source.pretraining else {
            return Err(Error::param(
                "sources.pretraining",
                &cfg.source.name,
                "not a scratch source",
            ));
        };
        let set = load_data(data, &self.study)?;
        let set = subsample(
            &set,
            *max_patches,
            derive_seed(
                self.study.seed,
                &format!("source-subsample/{}", cfg.source.name),
            ),
        );
        let edit = spec::to_edit(&cfg.edit)?;
        if spec::is_original(&cfg.edit) {
            return Ok(set);
        }
        // Amplitude swap takes the mean amplitude of the other domain: the first other scratch
        // source of the study.
        let reference = if edit.needs_reference() {
            let other = self
                .study
                .sources
                .iter()
                .find(|s| {
                    s.name != cfg.source.name
                        && matches!(s.pretraining, Pretraining::Scratch { .. })
                })
                .ok_or_else(|| {
                    Error::param(
                        "sources.edits",
                        edit.label(),
                        "amplitude swap needs a second scratch source",
                    )
                })?;
            let Pretraining::Scratch { data, max_patches } = &other.pretraining else {
                unreachable!("filtered to scratch sources above")
            };
            let o = load_data(data, &self.study)?;
            Some(subsample(
                &o,
                *max_patches,
                derive_seed(self.study.seed, &format!("source-subsample/{}", other.name)),
            ))
        } else {
            None
        };
        crate::data::edit_set(&set, &edit, reference.as_ref())
    }

    fn pretrained_weights(
        &self,
        layout: &Layout,
        id: &str,
    ) -> Result<HashMap<String, candle_core::Tensor>> {
        let (w, _) =
            crate::train::load_checkpoint(&layout.checkpoint(id), &candle_core::Device::Cpu)?;
        Ok(w)
    }

    fn measure_pretrained_psd(
        &self,
        model: &crate::model::ResNet,
    ) -> Result<crate::spectrum::PsdCurves> {
        let refs = self.reference_images()?;
        crate::gradient::model_psd(
            model,
            &refs,
            spec::gradient_target(&self.study.psd.pretrained_target)?,
            &spec::radial_psd(&self.study.psd)?,
            self.study.psd.micro_batch,
        )
    }
}

impl Pipeline {
    /// Writes a pre-trained model as the grid expects it: checkpoint + sidecar under temporary
    /// names then renamed, and last the record (`<id>.done.json`) that marks it whole.
    #[allow(clippy::too_many_arguments)]
    fn store_pretrained(
        &self,
        layout: &Layout,
        id: &str,
        config: &PretrainConfig,
        save: impl FnOnce(&Path) -> Result<()>,
        num_classes: usize,
        psd: crate::spectrum::PsdCurves,
        seconds: f64,
        epochs: usize,
    ) -> Result<PretrainOutcome> {
        std::fs::create_dir_all(layout.pretrained_dir())
            .map_err(|e| Error::io(layout.pretrained_dir(), e))?;
        let tmp = layout
            .pretrained_dir()
            .join(format!(".{id}.{}.tmp.safetensors", std::process::id()));
        save(&tmp)?;
        std::fs::rename(&tmp, layout.checkpoint(id))
            .map_err(|e| Error::io(layout.checkpoint(id), e))?;
        let tmp_side = crate::train::sidecar_path(&tmp);
        if tmp_side.is_file() {
            std::fs::rename(&tmp_side, layout.sidecar(id))
                .map_err(|e| Error::io(layout.sidecar(id), e))?;
        }
        let rec = PretrainRecord {
            id: id.to_string(),
            config_json: canonical_json(config)?,
            num_classes,
            omega: psd.omega,
            psd_mean: psd.mean,
            psd_std: psd.std,
            seconds,
            epochs,
        };
        let json = serde_json::to_string_pretty(&rec).map_err(|e| Error::Other(e.to_string()))?;
        write_bytes_atomic(
            &layout.sidecar(id).with_extension("done.json"),
            json.as_bytes(),
        )?;
        // Cache what a later process will read back, not the in-memory floats: serde_json's
        // float parsing is not exactly round-trip (no `float_roundtrip` feature), and a resumed
        // study must give the table of an uninterrupted one bit for bit.
        let rec: PretrainRecord =
            serde_json::from_str(&json).map_err(|e| Error::Other(e.to_string()))?;
        if let Ok(mut c) = self.pretrain_records.lock() {
            c.insert(id.to_string(), rec);
        }
        Ok(PretrainOutcome {
            cached: false,
            seconds,
        })
    }

    /// A registry source (ImageNet / RadImageNet ResNet-50, ...): its weights are loaded, not
    /// trained, from the study's `weights` file or the entry's location (the hub cache, offline;
    /// see `source::SourceEntry::resolve`), then measured and stored like a scratch source so
    /// that the fine-tuning runs read both the same way. A file without the classifier
    /// (RadImageNet's backbone) gets a seeded 2-class head, which only the pre-trained PSD uses
    /// (the fine-tuning always starts a new head).
    fn load_registry_source(
        &self,
        study: &Study,
        layout: &Layout,
        id: &str,
        config: &PretrainConfig,
        entry: &str,
        weights: Option<&Path>,
    ) -> Result<PretrainOutcome> {
        use crate::source::{Head, InputAdapt, LoadOptions};
        let t = Instant::now();
        let src = crate::source::entry(entry)?;
        let mcfg = resnet_config(study, src.config.num_classes)?;
        if (mcfg.arch, mcfg.base_width, mcfg.small_input)
            != (
                src.config.arch,
                src.config.base_width,
                src.config.small_input,
            )
        {
            return Err(Error::param(
                "model",
                format!(
                    "{} base width {} small_input {}",
                    study.model.arch, study.model.base_width, study.model.small_input
                ),
                format!(
                    "source `{entry}` is a {} with base width {} and small_input {}: the study's \
                     model must be the same network",
                    src.config.arch.name(),
                    src.config.base_width,
                    src.config.small_input
                ),
            ));
        }
        let opts = LoadOptions {
            file: weights.map(Path::to_path_buf),
            ..Default::default()
        };
        let grey = (study.model.in_channels == 1).then_some(InputAdapt::SumRgb);
        let loaded = src.load(
            &opts,
            Head::KeepOrReplace {
                num_classes: 2,
                dropout: 0.0,
            },
            grey,
            &candle_core::Device::Cpu,
            derive_seed(study.seed, "registry-head"),
        )?;
        let psd = self.measure_pretrained_psd(&loaded.model)?;
        let seconds = t.elapsed().as_secs_f64();
        let meta = crate::train::CheckpointMeta::new(
            &crate::train::TrainConfig::default(),
            serde_json::to_value(&loaded.config).unwrap_or(serde_json::Value::Null),
            0,
            &[],
        );
        self.store_pretrained(
            layout,
            id,
            config,
            |tmp| crate::train::save_checkpoint(tmp, &loaded.varmap, &meta),
            loaded.config.num_classes,
            psd,
            seconds,
            0,
        )
    }
}

impl Executor for Pipeline {
    fn ensure_pretrained(
        &self,
        study: &Study,
        layout: &Layout,
        id: &str,
        config: &PretrainConfig,
    ) -> Result<PretrainOutcome> {
        if self.read_record(layout, id)?.is_some() {
            return Ok(PretrainOutcome {
                cached: true,
                seconds: 0.0,
            });
        }
        if let Pretraining::Registry { entry, weights } = &config.source.pretraining {
            return self.load_registry_source(study, layout, id, config, entry, weights.as_deref());
        }
        let t = Instant::now();
        let set = self.source_set(config)?;
        let num_classes = set.num_classes();
        // Pre-training validation split: a seeded random fraction (for early stopping only).
        let mut idx: Vec<usize> = (0..set.len()).collect();
        idx.shuffle(&mut ChaCha8Rng::seed_from_u64(derive_seed(
            study.seed,
            "pretrain-val",
        )));
        let n_val = ((set.len() as f64) * study.pretrain.val_fraction).round() as usize;
        let (val_idx, train_idx) = idx.split_at(n_val);
        let (mut ti, mut vi) = (train_idx.to_vec(), val_idx.to_vec());
        ti.sort_unstable();
        vi.sort_unstable();
        let (train, val) = (set.subset(&ti), set.subset(&vi));
        let mcfg = resnet_config(study, num_classes)?;
        let tcfg = train_config(&study.pretrain, study, derive_seed(study.seed, "pretrain"));
        let trained = crate::train::pretrain_with(
            |vb| crate::model::ResNet::new(&mcfg, vb),
            &model_spec(&mcfg),
            &train,
            (!val.is_empty()).then_some(&val),
            &tcfg,
        )?;
        let psd = self.measure_pretrained_psd(&trained.model)?;
        let seconds = t.elapsed().as_secs_f64();
        self.store_pretrained(
            layout,
            id,
            config,
            |tmp| trained.save_checkpoint(tmp),
            num_classes,
            psd,
            seconds,
            trained.history.len(),
        )
    }

    fn execute(&self, study: &Study, layout: &Layout, run: &Run) -> Result<RunResult> {
        let t0 = Instant::now();
        let rec = self.read_record(layout, &run.pretrain_id)?.ok_or_else(|| {
            Error::Other(format!("pre-trained model {} is missing", run.pretrain_id))
        })?;
        let target = self.target()?;
        let split = self
            .folds()?
            .get(run.fold)
            .ok_or_else(|| Error::param("fold", run.fold, "no such fold"))?
            .clone();
        let positive = study.target.positive_class;
        let artifact = spec::to_artifact(&run.artifact)?;
        let deg = crate::degradation::Degradation::new(
            artifact,
            run.level,
            positive,
            run.degradation_seed(),
        )?;
        // the clean training split: degraded for the network, as it is for the baseline
        let clean_train = target.subset(&split.train);
        let (train, _) = deg.inject(&clean_train)?;
        let (val, _) = deg.inject(&target.subset(&split.val))?;
        let tests = deg.test_sets(&target.subset(&split.test))?;

        let t1 = Instant::now();
        let from = self.pretrained_weights(layout, &run.pretrain_id)?;
        let mcfg = resnet_config(study, 2)?;
        let tcfg = train_config(&study.finetune, study, run.finetune_seed());
        let trained = crate::train::finetune_with(
            |vb| crate::model::ResNet::new(&mcfg, vb),
            &model_spec(&mcfg),
            &from,
            crate::train::HEAD_PREFIX,
            &train,
            (!val.is_empty()).then_some(&val),
            &tcfg,
        )?;
        let time_finetune_s = t1.elapsed().as_secs_f64();

        let t2 = Instant::now();
        let auc = |set: &PatchSet| -> Result<f64> {
            let scores = trained.predict_scores(set)?;
            crate::train::roc_auc(&scores, &set.labels, positive)
        };
        let (auc_iid, auc_ood, auc_clean) =
            (auc(&tests.iid)?, auc(&tests.ood)?, auc(&tests.clean)?);
        let auc_baseline_clean =
            crate::baseline::patch_statistics_auc(&clean_train, &tests.clean, positive)?;
        let time_eval_s = t2.elapsed().as_secs_f64();

        let t3 = Instant::now();
        let clean = first_n(&tests.clean, study.psd.max_images);
        let fine = crate::gradient::model_psd(
            &trained.model,
            &clean,
            spec::gradient_target(&study.psd.finetuned_target)?,
            &spec::radial_psd(&study.psd)?,
            study.psd.micro_batch,
        )?;
        let (_, art_mean, _) = self.artifact_psd(&run.artifact)?;
        let alignment_pretrained = crate::spectrum::alignment(&rec.psd_mean, &art_mean)?;
        let alignment_finetuned = crate::spectrum::alignment(&fine.mean, &art_mean)?;
        let time_psd_s = t3.elapsed().as_secs_f64();

        let best_val_loss = trained
            .history
            .iter()
            .filter_map(|h| h.val_loss)
            .fold(f64::INFINITY, f64::min);
        Ok(RunResult {
            run_id: run.id.clone(),
            index: run.index as u32,
            pretrain_id: run.pretrain_id.clone(),
            source: run.source.clone(),
            edit: run.edit_label.clone(),
            artifact: run.artifact_label.clone(),
            artifact_kind: spec::artifact_kind(&run.artifact),
            config_json: canonical_json(&run.config)?,
            level: run.level,
            fold: run.fold as u32,
            seed: study.seed,
            n_train: train.len() as u32,
            n_val: val.len() as u32,
            n_test: tests.clean.len() as u32,
            auc_iid,
            auc_ood,
            auc_clean,
            auc_baseline_clean,
            omega: fine.omega,
            psd_pretrained: rec.psd_mean.clone(),
            psd_finetuned: fine.mean,
            psd_artifact: art_mean,
            alignment_pretrained,
            alignment_finetuned,
            epochs: trained.history.len() as u32,
            best_val_loss: if best_val_loss.is_finite() {
                best_val_loss
            } else {
                f64::NAN
            },
            time_pretrain_s: rec.seconds,
            time_finetune_s,
            time_eval_s,
            time_psd_s,
            time_total_s: t0.elapsed().as_secs_f64(),
        })
    }
}

/// A positive target image and its caption, for Fig. 1.
pub fn figure1_image(pipeline: &Pipeline) -> Result<(Image, String)> {
    let study = &pipeline.study;
    let t = pipeline.target()?;
    let i = t
        .labels
        .iter()
        .position(|&l| l == study.target.positive_class)
        .unwrap_or(0);
    let class = t
        .class_names
        .get(t.labels[i] as usize)
        .cloned()
        .unwrap_or_default();
    Ok((
        t.image(i),
        format!(
            "a target patch ({}, class {class}): spectrum and radial PSD",
            t.name
        ),
    ))
}

/// `spectral-transfer data build|list|show`: the data module's builder, listing and montages.
pub fn data_command(action: &str, out: &Path) -> Result<()> {
    let dir = crate::data::default_data_dir();
    match action {
        "list" => {
            for s in crate::data::list_embedded(&dir)? {
                if !s.available {
                    let how = if s.committed {
                        "missing"
                    } else {
                        "set-up only, not built"
                    };
                    println!("{:?}: {how} ({})", s.set, s.safetensors.display());
                    continue;
                }
                let classes: Vec<String> =
                    s.classes.iter().map(|(n, c)| format!("{n} {c}")).collect();
                println!(
                    "{:?}: {} patches of {} x {} px, {} groups, {:.1} MB; classes: {}",
                    s.set,
                    s.count,
                    s.height,
                    s.width,
                    s.groups,
                    s.bytes_on_disk as f64 / 1e6,
                    classes.join(", ")
                );
            }
        }
        "show" => {
            let show = out.join("data");
            for which in [
                EmbeddedSet::Natural,
                EmbeddedSet::Medical,
                EmbeddedSet::Target,
            ] {
                let set = crate::data::load_embedded(which, &dir)?;
                let path = show.join(format!("{}.png", which.stem()));
                std::fs::create_dir_all(&show).map_err(|e| Error::io(&show, e))?;
                crate::data::montage_png(&set, &path, 8, 0)?;
                println!("{}", path.display());
            }
        }
        "build" => {
            let cache = out.join("packages");
            let report =
                crate::data::build_embedded(&cache, &dir, &crate::data::BuildConfig::default())?;
            println!("{report:?}");
        }
        other => return Err(Error::param("data", other, "expected build, list or show")),
    }
    Ok(())
}
