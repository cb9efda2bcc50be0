//! Checkpoints: the weights of a `VarMap` as safetensors plus a JSON sidecar with the training
//! configuration, seed, epoch and metrics. Both files are written atomically (a temporary file in
//! the same directory, synced, then renamed), so a crash never leaves a half-written checkpoint
//! under the final name.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use super::{EpochMetrics, TrainConfig};
use crate::error::{Error, Result};

/// Version of the sidecar layout.
pub const CHECKPOINT_FORMAT: u32 = 1;

/// The JSON sidecar of a checkpoint (`<name>.json` beside `<name>.safetensors`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format: u32,
    /// The training configuration of the run (its seed included).
    pub train_config: TrainConfig,
    /// The model's configuration as the caller serialised it (e.g. a `ResNetConfig`).
    pub model_config: serde_json::Value,
    pub seed: u64,
    /// Number of epochs completed when the weights were taken (1-based; 0 = before training).
    pub epoch: usize,
    /// Metrics of every epoch so far.
    pub history: Vec<EpochMetrics>,
    /// Name and shape of every tensor of the safetensors file (checked on load).
    pub tensors: BTreeMap<String, Vec<usize>>,
}

impl CheckpointMeta {
    /// A sidecar for `varmap`'s weights after `epoch` epochs; the tensor list is filled on save.
    pub fn new(
        train_config: &TrainConfig,
        model_config: serde_json::Value,
        epoch: usize,
        history: &[EpochMetrics],
    ) -> Self {
        Self {
            format: CHECKPOINT_FORMAT,
            train_config: train_config.clone(),
            model_config,
            seed: train_config.seed,
            epoch,
            history: history.to_vec(),
            tensors: BTreeMap::new(),
        }
    }
}

/// The sidecar path of a checkpoint: the same name with the extension `json`.
pub fn sidecar_path(path: &Path) -> PathBuf {
    path.with_extension("json")
}

/// Every variable of `varmap` as a (detached) tensor, by name.
pub fn varmap_tensors(varmap: &VarMap) -> Result<HashMap<String, Tensor>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Other("the VarMap lock is poisoned".into()))?;
    Ok(data
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect())
}

fn shapes(tensors: &HashMap<String, Tensor>) -> BTreeMap<String, Vec<usize>> {
    tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.dims().to_vec()))
        .collect()
}

/// Writes `bytes` to `path` through a synced temporary file in the same directory and a rename.
fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::file(path, "a checkpoint path needs a file name"))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = write(&tmp).and_then(|()| {
        let f = std::fs::File::open(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Saves `varmap` to `path` (safetensors) and `meta` to its sidecar (JSON), both atomically.
/// The sidecar's tensor list is set from the weights actually written.
pub fn save_checkpoint(path: &Path, varmap: &VarMap, meta: &CheckpointMeta) -> Result<()> {
    let tensors = varmap_tensors(varmap)?;
    let mut meta = meta.clone();
    meta.tensors = shapes(&tensors);
    write_atomic(path, |tmp| {
        candle_core::safetensors::save(&tensors, tmp)
            .map_err(|e| Error::file(tmp, format!("cannot write safetensors: {e}")))
    })?;
    let json = serde_json::to_string_pretty(&meta)
        .map_err(|e| Error::Other(format!("cannot serialise checkpoint sidecar: {e}")))?;
    let side = sidecar_path(path);
    write_atomic(&side, |tmp| {
        let mut f = std::fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
        f.write_all(json.as_bytes())
            .map_err(|e| Error::io(tmp, e))?;
        f.write_all(b"\n").map_err(|e| Error::io(tmp, e))
    })
}

/// Reads a checkpoint and its sidecar and checks that they describe the same tensors.
///
/// Errors name the file: missing, not safetensors (corrupt, truncated), sidecar not valid JSON of
/// this format, or a tensor whose name or shape differs between the two.
pub fn load_checkpoint(
    path: &Path,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, CheckpointMeta)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| Error::file(path, format!("not a readable safetensors checkpoint: {e}")))?;
    let side = sidecar_path(path);
    let text = std::fs::read_to_string(&side).map_err(|e| Error::io(&side, e))?;
    let meta: CheckpointMeta = serde_json::from_str(&text)
        .map_err(|e| Error::file(&side, format!("not a valid checkpoint sidecar: {e}")))?;
    if meta.format != CHECKPOINT_FORMAT {
        return Err(Error::file(
            &side,
            format!(
                "checkpoint format {} (this build reads {CHECKPOINT_FORMAT})",
                meta.format
            ),
        ));
    }
    check_shapes(
        path,
        &meta.tensors,
        &shapes(&tensors),
        "sidecar",
        "weights file",
    )?;
    Ok((tensors, meta))
}

/// Loads the checkpoint at `path` into the variables of `varmap`, which must have exactly the
/// checkpoint's tensor names and shapes (the first difference is named).
pub fn load_into_varmap(path: &Path, varmap: &VarMap) -> Result<CheckpointMeta> {
    let wanted = shapes(&varmap_tensors(varmap)?);
    let device = varmap
        .all_vars()
        .first()
        .map(|v| v.device().clone())
        .unwrap_or(Device::Cpu);
    let (tensors, meta) = load_checkpoint(path, &device)?;
    check_shapes(path, &wanted, &meta.tensors, "model", "checkpoint")?;
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Other("the VarMap lock is poisoned".into()))?;
    for (name, var) in data.iter() {
        let t = &tensors[name];
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    Ok(meta)
}

/// Errors with the first name present in one map and not the other, or the first shape that
/// differs.
pub(crate) fn check_shapes(
    path: &Path,
    expected: &BTreeMap<String, Vec<usize>>,
    got: &BTreeMap<String, Vec<usize>>,
    expected_what: &str,
    got_what: &str,
) -> Result<()> {
    for (name, shape) in expected {
        match got.get(name) {
            None => {
                return Err(Error::file(
                    path,
                    format!("tensor `{name}` of the {expected_what} is missing from the {got_what}"),
                ))
            }
            Some(s) if s != shape => {
                return Err(Error::file(
                    path,
                    format!("tensor `{name}`: shape {shape:?} in the {expected_what}, {s:?} in the {got_what}"),
                ))
            }
            _ => {}
        }
    }
    if let Some(extra) = got.keys().find(|k| !expected.contains_key(*k)) {
        return Err(Error::file(
            path,
            format!("tensor `{extra}` of the {got_what} is not in the {expected_what}"),
        ));
    }
    Ok(())
}
