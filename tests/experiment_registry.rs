//! Registry sources in the grid (the paper preset's path): a ResNet-50 "ImageNet" file with its
//! 1000-class head and a headless "RadImageNet" backbone, both written here with random weights,
//! go through the real binary: loaded (first conv summed to greyscale), measured, stored, and
//! fine-tuned on a few embedded target patches at 32 px. Nothing touches the network. Also: a
//! study whose network differs from the source's, and a missing weights file, fail with an error
//! that names the field or the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use spectral_transfer::experiment::results;
use spectral_transfer::model::{named_vars, Arch, ResNet, ResNetConfig};

#[path = "cli_common/mod.rs"]
mod cli_common;
use cli_common::study_cli;

const QUICK: &str = include_str!("../presets/quick.toml");

/// Random torchvision-named ResNet-50 weights (1000 classes), with or without `fc.*`.
fn write_resnet50(path: &Path, with_head: bool) {
    let varmap = VarMap::new();
    let cfg = ResNetConfig::torchvision(Arch::ResNet50, 1000);
    ResNet::seeded(&cfg, &varmap, DType::F32, &Device::Cpu, 1).unwrap();
    let tensors: HashMap<String, Tensor> = named_vars(&varmap)
        .into_iter()
        .filter(|(n, _)| with_head || !n.starts_with("fc."))
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&tensors, path).unwrap();
}

/// The quick preset with registry sources, ResNet-50 (torchvision stem) and a tiny budget.
fn study(dir: &Path, sources: &str, arch: &str) -> PathBuf {
    let mut text = QUICK
        .replace("name = \"quick\"", "name = \"registry\"")
        .replace("levels = [0.0, 0.5, 1.0]", "levels = [0.0]")
        .replace("max_patches = 160", "max_patches = 48")
        .replace("max_images = 32", "max_images = 4")
        .replace("batch_size = 32", "batch_size = 8")
        .replace("epochs = 2", "epochs = 1")
        .replace("arch = \"resnet18\"", &format!("arch = \"{arch}\""))
        .replace("base_width = 4", "base_width = 64")
        .replace("small_input = true", "small_input = false");
    // sources and artifacts: the given sources, the first artifact only
    let s0 = text.find("[[sources]]").unwrap();
    let a0 = text.find("[[artifacts]]").unwrap();
    let a1 = text[a0 + 1..].find("[[artifacts]]").unwrap() + a0 + 1;
    let m = text.find("[model]").unwrap();
    text = format!(
        "{}{}\n{}{}",
        &text[..s0],
        sources,
        &text[a0..a1],
        &text[m..]
    );
    let path = dir.join("study.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn bin(study: &Path, out: &Path) -> Command {
    let mut c = study_cli(study, out);
    // an empty hub cache: the test must not find (or fetch) real weights
    c.env("HF_HOME", out.join("hf-home"));
    c
}

#[test]
fn registry_sources_load_measure_and_fine_tune() {
    let tmp = tempfile::tempdir().unwrap();
    let imagenet = tmp.path().join("imagenet.safetensors");
    let radimagenet = tmp.path().join("radimagenet-backbone.safetensors");
    write_resnet50(&imagenet, true);
    write_resnet50(&radimagenet, false);
    let sources = format!(
        "[[sources]]\nname = \"imagenet\"\npretraining = {{ kind = \"registry\", entry = \
         \"imagenet-resnet50\", weights = \"{}\" }}\n\n[[sources]]\nname = \"radimagenet\"\n\
         pretraining = {{ kind = \"registry\", entry = \"radimagenet-resnet50\", weights = \"{}\" }}\n",
        imagenet.display(),
        radimagenet.display()
    );
    let study = study(tmp.path(), &sources, "resnet50");
    let out = tmp.path().join("out");
    let o = bin(&study, &out).arg("run").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = bin(&study, &out).arg("collect").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows =
        results::from_frame(&results::read_parquet(&out.join("results.parquet")).unwrap()).unwrap();
    // 2 sources x 1 artifact x 1 level x 2 folds
    assert_eq!(rows.len(), 4);
    for r in &rows {
        assert!(
            r.auc_clean.is_finite() && (0.0..=1.0).contains(&r.auc_clean),
            "{r:?}"
        );
        assert!(!r.psd_pretrained.is_empty() && r.psd_pretrained.iter().all(|v| v.is_finite()));
    }
    let sources: std::collections::BTreeSet<_> = rows.iter().map(|r| r.source.as_str()).collect();
    assert_eq!(
        sources.into_iter().collect::<Vec<_>>(),
        ["imagenet", "radimagenet"]
    );
    // the stored checkpoints hold the greyscale first conv and the file's head (or a new one)
    let mut heads = Vec::new();
    for e in std::fs::read_dir(out.join("pretrained")).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "safetensors") {
            let (w, _) = spectral_transfer::train::load_checkpoint(&p, &Device::Cpu).unwrap();
            assert_eq!(w["conv1.weight"].dims(), [64, 1, 7, 7]);
            heads.push(w["fc.weight"].dims()[0]);
        }
    }
    heads.sort();
    assert_eq!(heads, [2, 1000]);
}

#[test]
fn registry_errors_name_the_field_and_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-weights.pt");
    let sources = format!(
        "[[sources]]\nname = \"radimagenet\"\npretraining = {{ kind = \"registry\", entry = \
         \"radimagenet-resnet50\", weights = \"{}\" }}\n",
        missing.display()
    );
    let out = tmp.path().join("out");
    // a ResNet-18 study cannot use ResNet-50 weights
    let study18 = study(tmp.path(), &sources, "resnet18");
    let o = bin(&study18, &out).arg("run").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("model") && err.contains("same network"),
        "{err}"
    );
    // the right network, but no file
    let study50 = study(tmp.path(), &sources, "resnet50");
    let o = bin(&study50, &out).arg("run").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("no-such-weights.pt"), "{err}");
    // an unknown entry is refused when the study is read
    let unknown = sources.replace("radimagenet-resnet50", "imagenet-vit");
    let o = bin(&study(tmp.path(), &unknown, "resnet50"), &out)
        .arg("grid")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("imagenet-vit") && err.contains("radimagenet-resnet50"),
        "{err}"
    );
}
