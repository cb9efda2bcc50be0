//! Pre-training sources: a registry (in the spirit of timm's pretrained configs) of where a
//! source model's weights come from and how its inputs must look, and loading of those weights
//! into a [`ResNet`] with every tensor name and shape checked.
//!
//! Entries ([`registry`]):
//! - `imagenet-resnet50`: timm's `resnet50.a1_in1k` (torchvision names) from the Hugging Face
//!   hub cache; downloaded only when [`LoadOptions::allow_download`] is set;
//! - `radimagenet-resnet50`: a local RadImageNet `ResNet50.pt` PyTorch state dict, read with
//!   candle's pickle reader (never shipped: RadImageNet's terms forbid redistribution). Keys
//!   may carry a `module.` / `backbone.` prefix and use the `nn.Sequential` child indices of
//!   RadImageNet's own PyTorch code (`backbone.0.weight` = `conv1.weight`,
//!   `backbone.4.0.conv1.weight` = `layer1.0.conv1.weight`); there is no `fc`. A file holding a
//!   whole pickled model rather than a state dict must be converted once:
//!   `python -c "import torch; m = torch.load('ResNet50.pt', weights_only=False); torch.save(m.state_dict(), 'ResNet50_sd.pt')"`;
//! - `natural-scratch`, `medical-scratch`: narrow ResNet-18s pre-trained by this project
//!   (`train::pretrain`) on the embedded source sets, saved as safetensors in a checkpoint dir.
//!
//! Loading is strict, like PyTorch's `load_state_dict(strict=True)`: every tensor of the model
//! must be in the file with the model's shape, and every tensor of the file must be used, except
//! torchvision's `num_batches_tracked` counters and the classifier when the head is replaced.
//! The first problem is reported with the file, the tensor name and both shapes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{self, Arch, ResNet, ResNetConfig};

/// Where a source's weights come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WeightsLocation {
    /// A file of a Hugging Face hub model repo, looked up in the local hub cache
    /// (`<cache>/models--org--name/{refs/<revision>, snapshots/<sha>/<file>}`).
    HfHub {
        repo: String,
        file: String,
        revision: String,
    },
    /// A file on disk; relative paths are taken from [`LoadOptions::local_dir`].
    LocalFile { path: PathBuf },
    /// Pre-trained by this project: `<LoadOptions::checkpoint_dir>/<file>`.
    PretrainedHere { file: String },
}

/// How a greyscale (1-channel) input meets a first conv trained on RGB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum InputAdapt {
    /// Sum the first conv's RGB kernels into one (timm's `adapt_input_conv`); the model takes
    /// 1 channel. Exactly equal to replicating the grey image, at a third of the first conv's cost.
    #[default]
    SumRgb,
    /// Keep the RGB kernels; the grey image is replicated to the three channels at the input.
    Replicate,
}

/// A registry entry: one pre-training source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceEntry {
    /// Registry name, e.g. "imagenet-resnet50".
    pub name: String,
    /// Architecture of the saved model (its classifier size included).
    pub config: ResNetConfig,
    pub weights: WeightsLocation,
    /// Side in pixels of the images the source was trained on.
    pub input_size: usize,
    /// Per-channel normalisation the source expects: (x - mean) / std, x in [0, 1].
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Channels of the saved first conv.
    pub in_channels: usize,
    /// Name of the first conv (adapted for greyscale input).
    pub first_conv: String,
    /// Prefix of the classifier tensors (replaced for a new head).
    pub classifier: String,
    pub licence: String,
    pub note: String,
}

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Every known source.
pub fn registry() -> Vec<SourceEntry> {
    let scratch = |name: &str, what: &str| SourceEntry {
        name: name.into(),
        // The class count is the source set's; loading reads it from the file.
        config: ResNetConfig::narrow18(2),
        weights: WeightsLocation::PretrainedHere {
            file: format!("{name}.safetensors"),
        },
        input_size: 64,
        mean: vec![0.0],
        std: vec![1.0],
        in_channels: 1,
        first_conv: "conv1".into(),
        classifier: "fc".into(),
        licence: "MIT (this project); data licences of the embedded source set apply".into(),
        note: format!(
            "narrow ResNet-18 pre-trained by this project on the embedded {what} source set \
             (train::pretrain); same architecture and budget for every scratch source"
        ),
    };
    vec![
        SourceEntry {
            name: "imagenet-resnet50".into(),
            config: ResNetConfig::torchvision(Arch::ResNet50, 1000),
            weights: WeightsLocation::HfHub {
                repo: "timm/resnet50.a1_in1k".into(),
                file: "model.safetensors".into(),
                revision: "main".into(),
            },
            input_size: 224,
            mean: IMAGENET_MEAN.to_vec(),
            std: IMAGENET_STD.to_vec(),
            in_channels: 3,
            first_conv: "conv1".into(),
            classifier: "fc".into(),
            licence: "Apache-2.0 (timm weights); ImageNet-1k terms of access".into(),
            note: "timm ResNet-50 A1 recipe (torchvision tensor names); any torchvision-named \
                   ResNet-50 safetensors file works as a LocalFile override"
                .into(),
        },
        SourceEntry {
            name: "radimagenet-resnet50".into(),
            config: ResNetConfig::torchvision(Arch::ResNet50, 165),
            weights: WeightsLocation::LocalFile {
                path: PathBuf::from("RadImageNet_pytorch/ResNet50.pt"),
            },
            input_size: 224,
            // RadImageNet's PyTorch example normalises with the ImageNet statistics.
            mean: IMAGENET_MEAN.to_vec(),
            std: IMAGENET_STD.to_vec(),
            in_channels: 3,
            first_conv: "conv1".into(),
            classifier: "fc".into(),
            licence: "RadImageNet terms: research use on request; redistribution forbidden \
                      (never shipped with this project)"
                .into(),
            note: "backbone only (no fc); obtain ResNet50.pt from the RadImageNet authors".into(),
        },
        scratch("natural-scratch", "natural"),
        scratch("medical-scratch", "medical"),
    ]
}

/// The registry entry called `name`; the error lists the known names.
pub fn entry(name: &str) -> Result<SourceEntry> {
    let all = registry();
    let known: Vec<String> = all.iter().map(|e| e.name.clone()).collect();
    all.into_iter().find(|e| e.name == name).ok_or_else(|| {
        Error::param(
            "source",
            name,
            format!("unknown; known: {}", known.join(", ")),
        )
    })
}

/// Where to look for weight files, and whether the network may be used.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Hugging Face hub cache dir (the `hub` folder); default `$HF_HOME/hub` or
    /// `~/.cache/huggingface/hub`.
    pub hf_cache: Option<PathBuf>,
    /// Download from the hub on a cache miss. Off by default: loading is offline.
    pub allow_download: bool,
    /// Base dir for relative [`WeightsLocation::LocalFile`] paths (default: the current dir).
    pub local_dir: Option<PathBuf>,
    /// Overrides the entry's location with this file (safetensors or PyTorch `.pt`/`.pth`).
    pub file: Option<PathBuf>,
    /// Dir of this project's pre-trained checkpoints, for [`WeightsLocation::PretrainedHere`].
    pub checkpoint_dir: Option<PathBuf>,
}

/// The head of the loaded model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Head {
    /// The source's classifier, loaded from the file (which must hold it).
    Keep,
    /// A new linear head with this many classes (seeded init); the file's classifier, if
    /// any, is not used.
    Replace { num_classes: usize, dropout: f64 },
    /// [`Head::Keep`] when the file holds the classifier, else [`Head::Replace`] with these
    /// (a backbone-only file such as RadImageNet's).
    KeepOrReplace { num_classes: usize, dropout: f64 },
}

/// What [`load_weights`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// Model tensors set from the file.
    pub loaded: usize,
    /// File tensors not used (counters, replaced classifier), sorted.
    pub ignored: Vec<String>,
    /// Model tensors left at their seeded init (the new head), sorted.
    pub fresh: Vec<String>,
}

/// A loaded source model.
pub struct LoadedSource {
    pub entry: SourceEntry,
    /// The file the weights came from.
    pub path: PathBuf,
    /// Configuration of `model` (the entry's, with the head and input channels applied).
    pub config: ResNetConfig,
    pub varmap: VarMap,
    pub model: ResNet,
    pub report: LoadReport,
}

impl SourceEntry {
    /// The weights file of this source, from the options or the entry's location. The hub
    /// cache is tried first; the network only with `allow_download`.
    pub fn resolve(&self, opts: &LoadOptions) -> Result<PathBuf> {
        let path = if let Some(f) = &opts.file {
            f.clone()
        } else {
            match &self.weights {
                WeightsLocation::HfHub {
                    repo,
                    file,
                    revision,
                } => return resolve_hf(repo, file, revision, opts),
                WeightsLocation::LocalFile { path } => match &opts.local_dir {
                    Some(dir) if path.is_relative() => dir.join(path),
                    _ => path.clone(),
                },
                WeightsLocation::PretrainedHere { file } => {
                    let dir = opts.checkpoint_dir.as_ref().ok_or_else(|| {
                        Error::param(
                            "checkpoint_dir",
                            "none",
                            format!("source `{}` is pre-trained by this project: give the dir of its checkpoint {file}", self.name),
                        )
                    })?;
                    dir.join(file)
                }
            }
        };
        if !path.is_file() {
            return Err(Error::file(
                &path,
                format!("weights of source `{}` not found", self.name),
            ));
        }
        Ok(path)
    }

    /// Loads this source into a fresh [`ResNet`] on `device` in f32: resolves the file, reads
    /// it, adapts the first conv for greyscale input when `greyscale` (see [`InputAdapt`]),
    /// applies `head`, and checks every tensor. `seed` initialises what the file does not hold
    /// (a replaced head).
    pub fn load(
        &self,
        opts: &LoadOptions,
        head: Head,
        greyscale: Option<InputAdapt>,
        device: &Device,
        seed: u64,
    ) -> Result<LoadedSource> {
        let path = self.resolve(opts)?;
        let mut tensors = read_tensors(&path)?;
        let head = match head {
            Head::KeepOrReplace {
                num_classes,
                dropout,
            } => {
                if tensors.contains_key(&format!("{}.weight", self.classifier)) {
                    Head::Keep
                } else {
                    Head::Replace {
                        num_classes,
                        dropout,
                    }
                }
            }
            h => h,
        };
        let mut cfg = self.config.clone();
        if head == Head::Keep {
            // The scratch sources' class count is the source set's: take it from the file.
            if let Some(b) = tensors.get(&format!("{}.bias", self.classifier)) {
                cfg.num_classes = b.dims().first().copied().unwrap_or(cfg.num_classes);
            }
        }
        if let Head::Replace {
            num_classes,
            dropout,
        } = head
        {
            cfg.num_classes = num_classes;
            cfg.dropout = dropout;
        }
        if greyscale == Some(InputAdapt::SumRgb) && self.in_channels != 1 {
            let key = format!("{}.weight", self.first_conv);
            if let Some(w) = tensors.get(&key) {
                let adapted = adapt_input_conv(w, 1).map_err(|e| {
                    Error::file(
                        &path,
                        format!("tensor `{key}`: cannot adapt to 1 channel: {e}"),
                    )
                })?;
                tensors.insert(key, adapted);
            }
            cfg.in_channels = 1;
        }
        let varmap = VarMap::new();
        let model = ResNet::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
        model::init_seeded(&varmap, seed)?;
        model.reseed_dropout(seed);
        let skip = match head {
            Head::Keep => None,
            Head::Replace { .. } | Head::KeepOrReplace { .. } => Some(self.classifier.as_str()),
        };
        let report = load_weights(&varmap, &tensors, &path, skip)?;
        Ok(LoadedSource {
            entry: self.clone(),
            path,
            config: cfg,
            varmap,
            model,
            report,
        })
    }
}

fn resolve_hf(repo: &str, file: &str, revision: &str, opts: &LoadOptions) -> Result<PathBuf> {
    use hf_hub::{Cache, Repo, RepoType};
    let cache = match &opts.hf_cache {
        Some(dir) => Cache::new(dir.clone()),
        None => Cache::from_env(),
    };
    let hub_repo = Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string());
    if let Some(p) = cache.repo(hub_repo.clone()).get(file) {
        return Ok(p);
    }
    let where_ = cache.path().join(hub_repo.folder_name());
    if !opts.allow_download {
        return Err(Error::file(
            where_,
            format!(
                "`{file}` of hub repo `{repo}` (revision {revision}) is not in the local cache; \
                 download it (allow_download) or give the file directly"
            ),
        ));
    }
    let api = hf_hub::api::sync::ApiBuilder::from_cache(cache)
        .with_progress(false)
        .build()
        .map_err(|e| Error::file(&where_, format!("hub client: {e}")))?;
    api.repo(hub_repo)
        .get(file)
        .map_err(|e| Error::file(where_, format!("downloading `{file}` of `{repo}`: {e}")))
}

/// Maps a checkpoint's tensor name to torchvision's: strips `module.` (DataParallel),
/// `backbone.` and `model.` prefixes, and renames RadImageNet's `nn.Sequential` child indices
/// (0 conv1, 1 bn1, 4-7 layer1-4, 9 fc).
pub fn normalise_name(name: &str) -> String {
    let mut n = name;
    loop {
        let stripped = ["module.", "backbone.", "model."]
            .iter()
            .find_map(|p| n.strip_prefix(p));
        match stripped {
            Some(s) => n = s,
            None => break,
        }
    }
    let (head, rest) = match n.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (n, None),
    };
    let mapped = match head {
        "0" => Some("conv1"),
        "1" => Some("bn1"),
        "4" => Some("layer1"),
        "5" => Some("layer2"),
        "6" => Some("layer3"),
        "7" => Some("layer4"),
        "9" => Some("fc"),
        _ => None,
    };
    match (mapped, rest) {
        (Some(m), Some(r)) => format!("{m}.{r}"),
        _ => n.to_string(),
    }
}

/// Reads every tensor of a safetensors file or a PyTorch state dict (`.pt`, `.pth`, `.bin`;
/// a dict under `state_dict` or `model` is found too), with names passed through
/// [`normalise_name`]. The error names the file.
pub fn read_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let raw: Vec<(String, Tensor)> = match ext.as_str() {
        "safetensors" => candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| Error::file(path, format!("not a readable safetensors file: {e}")))?
            .into_iter()
            .collect(),
        "pt" | "pth" | "bin" | "ckpt" => {
            let mut found = Vec::new();
            for key in [None, Some("state_dict"), Some("model")] {
                found = candle_core::pickle::read_all_with_key(path, key).map_err(|e| {
                    Error::file(path, format!("not a readable PyTorch state dict: {e}"))
                })?;
                if !found.is_empty() {
                    break;
                }
            }
            found
        }
        _ => {
            return Err(Error::file(
                path,
                "unknown weights format: expected .safetensors or a PyTorch .pt/.pth",
            ))
        }
    };
    if raw.is_empty() {
        return Err(Error::file(path, "holds no tensors"));
    }
    let mut out = HashMap::with_capacity(raw.len());
    for (name, t) in raw {
        let key = normalise_name(&name);
        if out.insert(key.clone(), t).is_some() {
            return Err(Error::file(
                path,
                format!("two tensors map to the name `{key}` (last: `{name}`)"),
            ));
        }
    }
    Ok(out)
}

/// timm's `adapt_input_conv`: a first-conv weight (O, I, kH, kW) for `in_channels` inputs.
/// For 1 channel the RGB kernels are summed; for other counts the kernels are repeated
/// cyclically and scaled by I / in_channels.
pub fn adapt_input_conv(weight: &Tensor, in_channels: usize) -> Result<Tensor> {
    let (o, i, kh, kw) = weight.dims4()?;
    if in_channels == 0 {
        return Err(Error::param("in_channels", 0, "must be at least 1"));
    }
    if in_channels == i {
        return Ok(weight.clone());
    }
    let dtype = weight.dtype();
    let w = weight.to_dtype(DType::F32)?;
    let out = if in_channels == 1 {
        if i > 3 {
            if i % 3 != 0 {
                return Err(Error::Shape {
                    what: "first conv weight".into(),
                    expected: "input channels a multiple of 3".into(),
                    got: i.to_string(),
                });
            }
            w.reshape((o, i / 3, 3, kh, kw))?.sum(2)?
        } else {
            w.sum_keepdim(1)?
        }
    } else {
        let reps = in_channels.div_ceil(i);
        let parts: Vec<&Tensor> = std::iter::repeat_n(&w, reps).collect();
        (Tensor::cat(&parts, 1)?.narrow(1, 0, in_channels)? * (i as f64 / in_channels as f64))?
    };
    Ok(out.to_dtype(dtype)?)
}

/// Sets every tensor of `varmap` from `tensors`, checking names and shapes strictly.
///
/// A model tensor missing from the file, a shape that differs, or a file tensor the model
/// does not have is an error naming `file`, the tensor and the shapes (the first in name
/// order). Not errors: `*.num_batches_tracked` counters in the file (ignored), and, when
/// `skip_prefix` is given (a replaced head, e.g. "fc"), the model's and the file's tensors
/// under that prefix (the model's keep their init). Values are converted to the model's dtype.
pub fn load_weights(
    varmap: &VarMap,
    tensors: &HashMap<String, Tensor>,
    file: &Path,
    skip_prefix: Option<&str>,
) -> Result<LoadReport> {
    let under =
        |name: &str| skip_prefix.is_some_and(|p| name == p || name.starts_with(&format!("{p}.")));
    let vars = model::named_vars(varmap);
    let mut report = LoadReport::default();
    // Check everything before setting anything, so that a failed load leaves no half-set model.
    let mut plan = Vec::with_capacity(vars.len());
    for (name, var) in &vars {
        if under(name) {
            report.fresh.push(name.clone());
            continue;
        }
        let t = tensors.get(name).ok_or_else(|| {
            Error::file(
                file,
                format!(
                    "missing tensor `{name}` (model expects shape {:?})",
                    var.dims()
                ),
            )
        })?;
        if t.dims() != var.dims() {
            return Err(Error::file(
                file,
                format!(
                    "tensor `{name}`: expected shape {:?}, got {:?}",
                    var.dims(),
                    t.dims()
                ),
            ));
        }
        plan.push((var, t));
    }
    let model_names: BTreeMap<&str, ()> = vars.iter().map(|(n, _)| (n.as_str(), ())).collect();
    let mut extra: Vec<&String> = tensors
        .keys()
        .filter(|k| !model_names.contains_key(k.as_str()))
        .collect();
    extra.sort();
    for k in extra {
        if k.ends_with("num_batches_tracked") || under(k) {
            report.ignored.push(k.clone());
        } else {
            return Err(Error::file(
                file,
                format!(
                    "unexpected tensor `{k}` with shape {:?} (not in the model: wrong architecture or width?)",
                    tensors[k].dims()
                ),
            ));
        }
    }
    for (var, t) in plan {
        let t = t.to_dtype(var.dtype())?.to_device(var.device())?;
        var.set(&t)?;
        report.loaded += 1;
    }
    Ok(report)
}

/// Saves a model's tensors (weights and running stats, torchvision names) as safetensors,
/// the format every loader here reads.
pub fn save_weights(varmap: &VarMap, path: &Path) -> Result<()> {
    let tensors: HashMap<String, Tensor> = model::named_vars(varmap)
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&tensors, path)
        .map_err(|e| Error::file(path, format!("cannot write safetensors: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised() {
        assert_eq!(normalise_name("module.conv1.weight"), "conv1.weight");
        assert_eq!(normalise_name("backbone.0.weight"), "conv1.weight");
        assert_eq!(normalise_name("backbone.1.running_var"), "bn1.running_var");
        assert_eq!(
            normalise_name("module.backbone.4.0.downsample.1.bias"),
            "layer1.0.downsample.1.bias"
        );
        assert_eq!(
            normalise_name("backbone.7.2.conv3.weight"),
            "layer4.2.conv3.weight"
        );
        assert_eq!(normalise_name("layer2.1.bn2.weight"), "layer2.1.bn2.weight");
        assert_eq!(normalise_name("fc.bias"), "fc.bias");
    }

    #[test]
    fn registry_has_the_four_sources() {
        for n in [
            "imagenet-resnet50",
            "radimagenet-resnet50",
            "natural-scratch",
            "medical-scratch",
        ] {
            let e = entry(n).unwrap();
            assert_eq!(e.mean.len(), e.in_channels);
            assert_eq!(e.std.len(), e.in_channels);
            e.config.validate().unwrap();
        }
        let err = entry("nope").unwrap_err().to_string();
        assert!(err.contains("imagenet-resnet50"), "{err}");
    }

    #[test]
    fn adapt_input_conv_sums_or_repeats() {
        let w = Tensor::arange(0f32, 2.0 * 3.0 * 2.0 * 2.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 2, 2))
            .unwrap();
        let one = adapt_input_conv(&w, 1).unwrap();
        assert_eq!(one.dims(), &[2, 1, 2, 2]);
        let want = w.sum_keepdim(1).unwrap();
        assert_eq!(
            one.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let four = adapt_input_conv(&w, 4).unwrap();
        assert_eq!(four.dims(), &[2, 4, 2, 2]);
        let c3 = four.narrow(1, 3, 1).unwrap();
        let c0 = (w.narrow(1, 0, 1).unwrap() * 0.75).unwrap();
        assert_eq!(
            c3.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            c0.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
}
