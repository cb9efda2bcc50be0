//! The experiment grid: source x edit x artifact x level x fold, each run with a stable id.
//!
//! A run's id is the SHA-256 of the canonical JSON (keys sorted, no whitespace) of everything that
//! determines its result: the seed, the target, the source and its edit, the artifact, the level,
//! the fold and the number of folds, the model, both training budgets and the PSD options. It does
//! not depend on the study's name, on the other levels or sources, or on the order of the grid, so
//! adding a level to a study keeps the ids (and the finished results) of every existing run.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::config::{ModelSpec, PsdSpec, SourceSpec, Study, TargetSpec, TrainSpec};
use super::spec::{artifact_label, edit_label, ArtifactSpec, EditSpec};
use crate::error::{Error, Result};

/// Canonical JSON: object keys sorted at every depth, compact. Independent of serde_json's
/// `preserve_order` feature (which some dependency could switch on).
pub fn canonical_json<T: Serialize>(value: &T) -> Result<String> {
    fn sort(v: Value) -> Value {
        match v {
            Value::Object(map) => {
                let mut entries: Vec<(String, Value)> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                let mut out = serde_json::Map::new();
                for (k, v) in entries {
                    out.insert(k, sort(v));
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.into_iter().map(sort).collect()),
            other => other,
        }
    }
    let v =
        serde_json::to_value(value).map_err(|e| Error::Other(format!("canonical json: {e}")))?;
    let sorted = sort(v);
    // serde_json writes maps in iteration order; with `preserve_order` off the map is a BTreeMap
    // (sorted); with it on, insertion order, which `sort` made sorted.
    serde_json::to_string(&sorted).map_err(|e| Error::Other(format!("canonical json: {e}")))
}

/// Hex SHA-256 of the canonical JSON, truncated to 16 hex digits (64 bits: no collision in any
/// grid this project can run).
pub fn stable_id<T: Serialize>(value: &T) -> Result<String> {
    let json = canonical_json(value)?;
    let digest = Sha256::digest(json.as_bytes());
    Ok(digest.iter().take(8).map(|b| format!("{b:02x}")).collect())
}

/// A seed derived from the master seed and a tag (SHA-256, first 8 bytes little-endian), so that
/// each random stream of a study is independent of the others and of the grid's order.
pub fn derive_seed(seed: u64, tag: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(tag.as_bytes());
    let d = h.finalize();
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// What determines a pre-trained model: the source, its edit, the architecture, the budget, the
/// seed. Its hash names the cached checkpoint shared by every run of that source and edit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PretrainConfig {
    pub seed: u64,
    pub patch_size: usize,
    pub source: SourceKey,
    pub edit: EditSpec,
    pub model: ModelSpec,
    pub pretrain: TrainSpec,
}

/// A source without its list of edits (the edit is a separate grid axis).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SourceKey {
    pub name: String,
    pub pretraining: super::config::Pretraining,
}

impl From<&SourceSpec> for SourceKey {
    fn from(s: &SourceSpec) -> Self {
        Self {
            name: s.name.clone(),
            pretraining: s.pretraining.clone(),
        }
    }
}

/// Everything that determines one run's result (hashed into its id).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunConfig {
    pub pretrained: PretrainConfig,
    pub target: TargetSpec,
    pub folds: usize,
    pub fold: usize,
    pub artifact: ArtifactSpec,
    pub level: f64,
    pub finetune: TrainSpec,
    pub psd: PsdSpec,
}

/// One run of the grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// Position in the grid (0-based), the `--index` of `spectral-transfer run`.
    pub index: usize,
    /// Stable id: hash of `config`.
    pub id: String,
    /// Id of the pre-trained model this run fine-tunes (hash of `config.pretrained`).
    pub pretrain_id: String,
    pub source: String,
    pub edit: EditSpec,
    pub edit_label: String,
    pub artifact: ArtifactSpec,
    pub artifact_label: String,
    pub level: f64,
    pub fold: usize,
    pub config: RunConfig,
}

impl Run {
    /// Seed of the fold split: one per study, so that every run sees the same folds.
    pub fn split_seed(&self) -> u64 {
        derive_seed(self.config.pretrained.seed, "folds")
    }
    /// Seed of the injection: shared by all sources, so natural and medical models see the same
    /// degraded images.
    pub fn degradation_seed(&self) -> u64 {
        derive_seed(
            self.config.pretrained.seed,
            &format!(
                "degradation/{}/{}/{}",
                self.artifact_label, self.level, self.fold
            ),
        )
    }
    /// Seed of fine-tuning (initial head, batches, dropout): shared by all sources and levels.
    pub fn finetune_seed(&self) -> u64 {
        derive_seed(
            self.config.pretrained.seed,
            &format!("finetune/{}", self.fold),
        )
    }
}

/// Expands a study into its runs, in the order source, edit, artifact, level, fold.
pub fn expand(study: &Study) -> Result<Vec<Run>> {
    let mut runs = Vec::new();
    for source in &study.sources {
        for edit in &source.edits {
            let pretrained = PretrainConfig {
                seed: study.seed,
                patch_size: study.patch_size,
                source: source.into(),
                edit: edit.clone(),
                model: study.model.clone(),
                pretrain: study.pretrain.clone(),
            };
            let pretrain_id = stable_id(&pretrained)?;
            for artifact in &study.artifacts {
                for &level in &study.levels {
                    for fold in 0..study.folds {
                        let config = RunConfig {
                            pretrained: pretrained.clone(),
                            target: study.target.clone(),
                            folds: study.folds,
                            fold,
                            artifact: artifact.clone(),
                            level,
                            finetune: study.finetune.clone(),
                            psd: study.psd.clone(),
                        };
                        runs.push(Run {
                            index: runs.len(),
                            id: stable_id(&config)?,
                            pretrain_id: pretrain_id.clone(),
                            source: source.name.clone(),
                            edit: edit.clone(),
                            edit_label: edit_label(edit),
                            artifact: artifact.clone(),
                            artifact_label: artifact_label(artifact),
                            level,
                            fold,
                            config,
                        });
                    }
                }
            }
        }
    }
    Ok(runs)
}

/// The distinct pre-trained models a grid needs, in grid order: (pretrain id, its config).
pub fn pretrain_jobs(runs: &[Run]) -> Vec<(String, PretrainConfig)> {
    let mut out: Vec<(String, PretrainConfig)> = Vec::new();
    for r in runs {
        if !out.iter().any(|(id, _)| id == &r.pretrain_id) {
            out.push((r.pretrain_id.clone(), r.config.pretrained.clone()));
        }
    }
    out
}

/// Where the index of the run to execute comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexSource {
    Argument,
    Slurm,
    Kubernetes,
}

/// The run index: the `--index` argument, else `SLURM_ARRAY_TASK_ID`, else `JOB_COMPLETION_INDEX`
/// (a Kubernetes Indexed Job), else none (run everything). `env` looks up a variable.
pub fn resolve_index(
    argument: Option<usize>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<(usize, IndexSource)>> {
    if let Some(i) = argument {
        return Ok(Some((i, IndexSource::Argument)));
    }
    for (var, src, name) in [
        (
            "SLURM_ARRAY_TASK_ID",
            IndexSource::Slurm,
            "SLURM_ARRAY_TASK_ID",
        ),
        (
            "JOB_COMPLETION_INDEX",
            IndexSource::Kubernetes,
            "JOB_COMPLETION_INDEX",
        ),
    ] {
        if let Some(v) = env(var) {
            let v = v.trim();
            if v.is_empty() {
                continue;
            }
            let i = v
                .parse::<usize>()
                .map_err(|_| Error::param(name, v, "expected a non-negative integer"))?;
            return Ok(Some((i, src)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let a = serde_json::json!({"b": 1, "a": {"d": [ {"z": 1, "y": 2} ], "c": 2.5}});
        assert_eq!(
            canonical_json(&a).unwrap(),
            r#"{"a":{"c":2.5,"d":[{"y":2,"z":1}]},"b":1}"#
        );
    }

    #[test]
    fn derived_seeds_differ_by_tag_and_seed() {
        assert_ne!(derive_seed(1, "a"), derive_seed(1, "b"));
        assert_ne!(derive_seed(1, "a"), derive_seed(2, "a"));
        assert_eq!(derive_seed(7, "x"), derive_seed(7, "x"));
    }

    #[test]
    fn index_precedence_and_errors() {
        let env = |k: &str| match k {
            "SLURM_ARRAY_TASK_ID" => Some("4".to_string()),
            "JOB_COMPLETION_INDEX" => Some("9".to_string()),
            _ => None,
        };
        assert_eq!(
            resolve_index(Some(2), env).unwrap(),
            Some((2, IndexSource::Argument))
        );
        assert_eq!(
            resolve_index(None, env).unwrap(),
            Some((4, IndexSource::Slurm))
        );
        let k8s = |k: &str| (k == "JOB_COMPLETION_INDEX").then(|| "9".to_string());
        assert_eq!(
            resolve_index(None, k8s).unwrap(),
            Some((9, IndexSource::Kubernetes))
        );
        assert_eq!(resolve_index(None, |_| None).unwrap(), None);
        let bad = |k: &str| (k == "SLURM_ARRAY_TASK_ID").then(|| "x1".to_string());
        let err = resolve_index(None, bad).unwrap_err().to_string();
        assert!(err.contains("SLURM_ARRAY_TASK_ID"), "{err}");
    }
}
