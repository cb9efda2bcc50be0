//! The committed patch sets under `data/`: a safetensors file with the quantised pixels
//! (`pixels`: u8 or u16, N x H x W), `labels` and `groups` (u32, N), and a JSON sidecar with the
//! class and group names, the provenance of every class, the build configuration, the sha256 of
//! the input packages and of the safetensors file itself (checked on load).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::PatchSet;
use crate::error::{Error, Result};

/// The sets of the embedded default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddedSet {
    /// Natural-image source: crops of public-domain/CC photos, label = photo.
    Natural,
    /// Medical-image source: foreground crops of MR, CT, CR, NM, US, fundus and histology
    /// images, label = source volume or image (modality x anatomy).
    Medical,
    /// Target: Colin27 cerebellum (1) vs cerebrum (0), groups = axial slice blocks; labels from
    /// the committed tentorium surface (see `data/LICENSES.md`).
    Target,
    /// The same target labelled by the AAL atlas itself; built at set-up, never committed.
    TargetAal,
}

impl EmbeddedSet {
    /// Every set, committed ones first.
    pub const ALL: [EmbeddedSet; 4] = [Self::Natural, Self::Medical, Self::Target, Self::TargetAal];

    /// The file stem under the data directory.
    pub fn stem(self) -> &'static str {
        match self {
            Self::Natural => "natural",
            Self::Medical => "medical",
            Self::Target => "target",
            Self::TargetAal => "target-aal",
        }
    }

    /// Parses a set name as written by [`EmbeddedSet::stem`].
    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.stem() == name || s.stem().replace('-', "_") == name)
            .ok_or_else(|| {
                Error::param(
                    "set",
                    name,
                    "expected natural, medical, target or target-aal",
                )
            })
    }

    /// Whether the set is committed to the repository (false: built at set-up only).
    pub fn committed(self) -> bool {
        !matches!(self, Self::TargetAal)
    }
}

/// Where one class of a set comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassSource {
    pub class: String,
    /// Registry package file, e.g. `pydicom_data-1.0.0-py3-none-any.whl`.
    pub package: String,
    /// Path of the file inside the package.
    pub member: String,
    pub licence: String,
    /// How raw values were mapped to [0, 1].
    pub windowing: String,
}

/// One input package and its sha256.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputFile {
    pub file: String,
    pub sha256: String,
}

/// The JSON sidecar of a stored set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetMeta {
    pub format: String,
    pub name: String,
    pub description: String,
    pub count: usize,
    pub height: usize,
    pub width: usize,
    /// "u8" or "u16"; value in [0, 1] = stored / (2^bits - 1).
    pub pixel_dtype: String,
    pub class_names: Vec<String>,
    pub class_counts: Vec<usize>,
    pub group_names: Vec<String>,
    pub classes: Vec<ClassSource>,
    /// The build configuration, as JSON.
    pub config: serde_json::Value,
    pub inputs: Vec<InputFile>,
    /// Extra measured facts (e.g. agreement of the target labels with AAL).
    pub notes: Vec<String>,
    /// sha256 of the safetensors file.
    pub safetensors_sha256: String,
}

/// The format tag written into every sidecar.
pub const FORMAT: &str = "spectral-transfer-patches/1";

/// Summary of a stored set, for `data list`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SetSummary {
    pub set: EmbeddedSet,
    pub committed: bool,
    /// False when its files are not in the data directory.
    pub available: bool,
    pub count: usize,
    pub height: usize,
    pub width: usize,
    pub groups: usize,
    /// (class name, count).
    pub classes: Vec<(String, usize)>,
    /// Size of the safetensors and JSON files, bytes.
    pub bytes_on_disk: u64,
    pub safetensors: PathBuf,
}

/// `<crate root>/data`, where the committed sets live.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// Paths of the safetensors file and its JSON sidecar of `which` under `data_dir`.
pub fn set_paths(which: EmbeddedSet, data_dir: &Path) -> (PathBuf, PathBuf) {
    (
        data_dir.join(format!("{}.safetensors", which.stem())),
        data_dir.join(format!("{}.json", which.stem())),
    )
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(bytes);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `set` as `<stem>.safetensors` + `<stem>.json` under `dir`, quantising pixels to
/// `bits` (8 or 16). Returns the completed sidecar. Output is byte-for-byte deterministic.
pub fn save_set(
    set: &PatchSet,
    stem: &str,
    dir: &Path,
    bits: u32,
    mut meta: SetMeta,
) -> Result<SetMeta> {
    set.validate()?;
    let (n, h, w) = (set.len(), set.height, set.width);
    let (dtype, pixel_bytes) = match bits {
        8 => (
            safetensors::Dtype::U8,
            set.pixels
                .iter()
                .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
                .collect::<Vec<u8>>(),
        ),
        16 => (
            safetensors::Dtype::U16,
            set.pixels
                .iter()
                .flat_map(|v| ((v.clamp(0.0, 1.0) * 65535.0).round() as u16).to_le_bytes())
                .collect(),
        ),
        other => return Err(Error::param("bits", other, "pixel depth must be 8 or 16")),
    };
    let labels: Vec<u8> = set.labels.iter().flat_map(|v| v.to_le_bytes()).collect();
    let groups: Vec<u8> = set.groups.iter().flat_map(|v| v.to_le_bytes()).collect();
    fn view(
        dt: safetensors::Dtype,
        shape: Vec<usize>,
        data: &[u8],
    ) -> Result<safetensors::tensor::TensorView<'_>> {
        safetensors::tensor::TensorView::new(dt, shape, data)
            .map_err(|e| Error::Other(format!("safetensors view: {e}")))
    }
    let tensors = vec![
        (
            "groups".to_string(),
            view(safetensors::Dtype::U32, vec![n], &groups)?,
        ),
        (
            "labels".to_string(),
            view(safetensors::Dtype::U32, vec![n], &labels)?,
        ),
        (
            "pixels".to_string(),
            view(dtype, vec![n, h, w], &pixel_bytes)?,
        ),
    ];
    // No safetensors header metadata: its map would be serialised in hash order.
    let bytes = safetensors::serialize(tensors, None)
        .map_err(|e| Error::Other(format!("safetensors serialise: {e}")))?;
    meta.format = FORMAT.into();
    meta.name = set.name.clone();
    meta.count = n;
    meta.height = h;
    meta.width = w;
    meta.pixel_dtype = format!("u{bits}");
    meta.class_names = set.class_names.clone();
    meta.class_counts = set.class_counts();
    meta.group_names = set.group_names.clone();
    meta.safetensors_sha256 = sha256_hex(&bytes);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let st = dir.join(format!("{stem}.safetensors"));
    let js = dir.join(format!("{stem}.json"));
    std::fs::write(&st, &bytes).map_err(|e| Error::io(&st, e))?;
    let mut text = serde_json::to_string_pretty(&meta).map_err(|e| Error::Other(e.to_string()))?;
    text.push('\n');
    std::fs::write(&js, text).map_err(|e| Error::io(&js, e))?;
    Ok(meta)
}

/// Reads the sidecar of a stored set.
pub fn read_meta(json: &Path) -> Result<SetMeta> {
    let text = std::fs::read_to_string(json).map_err(|e| Error::io(json, e))?;
    let meta: SetMeta = serde_json::from_str(&text)
        .map_err(|e| Error::file(json, format!("not a valid set sidecar: {e}")))?;
    if meta.format != FORMAT {
        return Err(Error::file(
            json,
            format!("field `format` = `{}`, expected `{FORMAT}`", meta.format),
        ));
    }
    Ok(meta)
}

/// Loads a stored set from its two files, checking the sha256, shapes, dtypes and ranges.
pub fn load_set_files(safetensors_path: &Path, json: &Path) -> Result<PatchSet> {
    let meta = read_meta(json)?;
    let bytes = std::fs::read(safetensors_path).map_err(|e| Error::io(safetensors_path, e))?;
    let got = sha256_hex(&bytes);
    if got != meta.safetensors_sha256 {
        return Err(Error::file(
            safetensors_path,
            format!(
                "sha256 {got} does not match `safetensors_sha256` {} in {} (corrupt, truncated or replaced file)",
                meta.safetensors_sha256,
                json.display()
            ),
        ));
    }
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
        Error::file(
            safetensors_path,
            format!("not a readable safetensors file: {e}"),
        )
    })?;
    let (n, h, w) = (meta.count, meta.height, meta.width);
    let get = |name: &str, dtype: safetensors::Dtype, shape: &[usize]| {
        let t = st
            .tensor(name)
            .map_err(|e| Error::file(safetensors_path, format!("tensor `{name}`: {e}")))?;
        if t.dtype() != dtype || t.shape() != shape {
            return Err(Error::file(
                safetensors_path,
                format!(
                    "tensor `{name}`: {:?} {:?}, expected {dtype:?} {shape:?}",
                    t.dtype(),
                    t.shape()
                ),
            ));
        }
        Ok(t.data().to_vec())
    };
    let u32s = |b: Vec<u8>| -> Vec<u32> {
        b.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let labels = u32s(get("labels", safetensors::Dtype::U32, &[n])?);
    let groups = u32s(get("groups", safetensors::Dtype::U32, &[n])?);
    let pixels: Vec<f32> = match meta.pixel_dtype.as_str() {
        "u8" => get("pixels", safetensors::Dtype::U8, &[n, h, w])?
            .into_iter()
            .map(|v| v as f32 / 255.0)
            .collect(),
        "u16" => get("pixels", safetensors::Dtype::U16, &[n, h, w])?
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as f32 / 65535.0)
            .collect(),
        other => {
            return Err(Error::file(
                json,
                format!("field `pixel_dtype` = `{other}`, expected u8 or u16"),
            ))
        }
    };
    let set = PatchSet::new(
        meta.name.clone(),
        h,
        w,
        pixels,
        labels,
        groups,
        meta.class_names.clone(),
        meta.group_names.clone(),
    )
    .map_err(|e| Error::file(safetensors_path, e.to_string()))?;
    if set.class_counts() != meta.class_counts {
        return Err(Error::file(
            json,
            format!(
                "field `class_counts` {:?} does not match the labels {:?}",
                meta.class_counts,
                set.class_counts()
            ),
        ));
    }
    Ok(set)
}

/// Loads one embedded set from `data_dir` (normally [`default_data_dir`]).
pub fn load_embedded(which: EmbeddedSet, data_dir: &Path) -> Result<PatchSet> {
    let (st, js) = set_paths(which, data_dir);
    if !st.exists() || !js.exists() {
        let hint = if which.committed() {
            "the committed set is missing from the checkout; restore it with git or rebuild it with \
             `spectral-transfer data build`"
        } else {
            "this set is built at set-up only (its labels may not be redistributed): run \
             scripts/fetch-packages.sh, then `spectral-transfer data build`"
        };
        return Err(Error::file(
            st,
            format!("set `{}` not found: {hint}", which.stem()),
        ));
    }
    load_set_files(&st, &js)
}

/// Summaries of every embedded set in `data_dir` (missing ones with `available: false`).
pub fn list_embedded(data_dir: &Path) -> Result<Vec<SetSummary>> {
    EmbeddedSet::ALL
        .into_iter()
        .map(|which| {
            let (st, js) = set_paths(which, data_dir);
            if !st.exists() || !js.exists() {
                return Ok(SetSummary {
                    set: which,
                    committed: which.committed(),
                    available: false,
                    count: 0,
                    height: 0,
                    width: 0,
                    groups: 0,
                    classes: vec![],
                    bytes_on_disk: 0,
                    safetensors: st,
                });
            }
            let meta = read_meta(&js)?;
            let size = |p: &Path| {
                std::fs::metadata(p)
                    .map(|m| m.len())
                    .map_err(|e| Error::io(p, e))
            };
            Ok(SetSummary {
                set: which,
                committed: which.committed(),
                available: true,
                count: meta.count,
                height: meta.height,
                width: meta.width,
                groups: meta.group_names.len(),
                classes: meta
                    .class_names
                    .iter()
                    .cloned()
                    .zip(meta.class_counts.iter().copied())
                    .collect(),
                bytes_on_disk: size(&st)? + size(&js)?,
                safetensors: st,
            })
        })
        .collect()
}
