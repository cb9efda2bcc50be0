//! PyTorch parity of the candle ResNet, weight loading from every source format, and
//! determinism. Fixtures: tests/fixtures/resnet/, made by tests/fixtures/make_resnet_fixture.py
//! (torchvision's own ResNet/BasicBlock/Bottleneck classes, tiny widths, float32).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use spectral_transfer::candle_core::{DType, Device, Tensor};
use spectral_transfer::candle_nn::{VarBuilder, VarMap};
use spectral_transfer::gradient::{
    input_gradient, input_gradient_batched, to_image_batch, GradientTarget,
};
use spectral_transfer::model::{Arch, ResNet, ResNetConfig};
use spectral_transfer::source::{
    self, Head, InputAdapt, LoadOptions, SourceEntry, WeightsLocation,
};
use spectral_transfer::spectrum::RadialPsd;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/resnet")
        .join(name)
}

fn basic_cfg() -> ResNetConfig {
    ResNetConfig {
        arch: Arch::ResNet18,
        base_width: 2,
        in_channels: 1,
        num_classes: 3,
        dropout: 0.0,
        small_input: false,
    }
}

fn bottleneck_cfg() -> ResNetConfig {
    ResNetConfig {
        arch: Arch::ResNet50,
        base_width: 1,
        in_channels: 3,
        num_classes: 4,
        dropout: 0.0,
        small_input: true,
    }
}

fn io(case: &str) -> HashMap<String, Tensor> {
    source::read_tensors(&fixture(&format!("{case}_io.safetensors"))).unwrap()
}

fn load(case: &str, cfg: &ResNetConfig) -> (VarMap, ResNet) {
    let vm = VarMap::new();
    let m = ResNet::seeded(cfg, &vm, DType::F32, &Device::Cpu, 0).unwrap();
    let path = fixture(&format!("{case}.safetensors"));
    let tensors = source::read_tensors(&path).unwrap();
    let report = source::load_weights(&vm, &tensors, &path, None).unwrap();
    assert!(report.fresh.is_empty());
    assert!(report
        .ignored
        .iter()
        .all(|n| n.ends_with("num_batches_tracked")));
    assert_eq!(report.loaded + report.ignored.len(), tensors.len());
    (vm, m)
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// max |got - want| / max |want|.
fn rel_err(got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.dims(), want.dims());
    let g = values(got);
    let w = values(want);
    let scale = w.iter().fold(0f32, |a, v| a.max(v.abs()));
    assert!(scale > 0.0);
    g.iter()
        .zip(&w)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()))
        / scale
}

fn labels(io: &HashMap<String, Tensor>) -> Vec<u32> {
    values(&io["labels"]).iter().map(|&v| v as u32).collect()
}

fn check_eval_parity(case: &str, cfg: &ResNetConfig) {
    let (_vm, m) = load(case, cfg);
    let io = io(case);
    let x = &io["x"];
    let logits = m.logits(x, false).unwrap();
    let e = rel_err(&logits, &io["logits"]);
    eprintln!("{case}: logits rel err {e:.2e}");
    assert!(e < 1e-4, "{case} logits: {e}");
    let e = rel_err(&m.features(x, false).unwrap(), &io["features"]);
    assert!(e < 1e-4, "{case} features: {e}");
    let labs = labels(&io);
    for (target, key) in [
        (GradientTarget::Loss, "grad_loss"),
        (GradientTarget::PredictedLogSoftmax, "grad_log_softmax"),
        (GradientTarget::PredictedLogit, "grad_logit"),
    ] {
        let g = input_gradient(&m, x, &labs, target).unwrap();
        let e = rel_err(&g, &io[key]);
        eprintln!("{case}: {key} rel err {e:.2e}");
        assert!(e < 1e-4, "{case} {key}: {e}");
        let gb = input_gradient_batched(&m, x, &labs, target, 1).unwrap();
        assert!(rel_err(&gb, &io[key]) < 1e-4, "{case} {key} micro-batched");
        // The gradient PSD (default settings, raw amplitudes) of candle's and PyTorch's gradients.
        let psd = RadialPsd {
            normalisation: spectral_transfer::spectrum::Normalisation::None,
            ..RadialPsd::default()
        };
        let ours = psd
            .compute(&to_image_batch(&g).unwrap(), Some(&labs))
            .unwrap();
        let theirs = psd
            .compute(&to_image_batch(&io[key]).unwrap(), Some(&labs))
            .unwrap();
        let scale = theirs.mean.iter().fold(0f64, |a, v| a.max(v.abs()));
        let e = ours
            .mean
            .iter()
            .zip(&theirs.mean)
            .fold(0f64, |a, (p, q)| a.max((p - q).abs()))
            / scale;
        eprintln!("{case}: {key} PSD rel err {e:.2e}");
        assert!(e < 1e-4, "{case} {key} PSD: {e}");
    }
}

fn check_train_parity(case: &str, cfg: &ResNetConfig) {
    let (vm, m) = load(case, cfg);
    let io = io(case);
    let logits = m.logits(&io["x"], true).unwrap();
    let e = rel_err(&logits, &io["train_logits"]);
    eprintln!("{case}: train-mode logits rel err {e:.2e}");
    assert!(e < 1e-4, "{case} train logits: {e}");
    let data = vm.data().lock().unwrap();
    let rm = data["bn1.running_mean"].as_tensor().clone();
    let rv = data["bn1.running_var"].as_tensor().clone();
    drop(data);
    assert!(rel_err(&rm, &io["train_bn1_running_mean"]) < 1e-4);
    assert!(rel_err(&rv, &io["train_bn1_running_var"]) < 1e-4);
}

#[test]
fn basic_block_matches_pytorch() {
    check_eval_parity("basic18", &basic_cfg());
}

#[test]
fn bottleneck_matches_pytorch() {
    check_eval_parity("bottleneck50", &bottleneck_cfg());
}

#[test]
fn training_mode_batchnorm_matches_pytorch() {
    check_train_parity("basic18", &basic_cfg());
    check_train_parity("bottleneck50", &bottleneck_cfg());
}

#[test]
fn forward_and_backward_are_deterministic() {
    let (_vm, m) = load("basic18", &basic_cfg());
    let io = io("basic18");
    let labs = labels(&io);
    let run = || {
        let l = values(&m.logits(&io["x"], false).unwrap());
        let g = values(&input_gradient(&m, &io["x"], &labs, GradientTarget::Loss).unwrap());
        (l, g)
    };
    let (l1, g1) = run();
    let (l2, g2) = run();
    assert_eq!(l1, l2);
    assert_eq!(g1, g2);
}

/// RadImageNet's layout: a PyTorch state dict with `backbone.<Sequential index>` keys, no fc.
#[test]
fn radimagenet_style_pt_loads_through_the_pickle_reader() {
    let mut entry = source::entry("radimagenet-resnet50").unwrap();
    entry.config = basic_cfg();
    entry.in_channels = 1;
    let opts = LoadOptions {
        file: Some(fixture("radimagenet_like.pt")),
        ..Default::default()
    };
    let loaded = entry
        .load(
            &opts,
            Head::Replace {
                num_classes: 2,
                dropout: 0.5,
            },
            None,
            &Device::Cpu,
            1,
        )
        .unwrap();
    assert_eq!(
        loaded.report.fresh,
        vec!["fc.bias".to_string(), "fc.weight".to_string()]
    );
    assert_eq!(loaded.config.num_classes, 2);
    let io = io("basic18");
    let e = rel_err(
        &loaded.model.features(&io["x"], false).unwrap(),
        &io["features"],
    );
    assert!(e < 1e-4, "features from the .pt: {e}");
    // Keeping the head is impossible: the file has no classifier.
    let err = entry
        .load(&opts, Head::Keep, None, &Device::Cpu, 1)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("radimagenet_like.pt") && err.contains("fc."),
        "{err}"
    );
}

/// A fake Hugging Face cache: hub/models--org--name/{refs/main, snapshots/<sha>/model.safetensors}.
#[test]
fn hf_cache_hit_loads_offline_and_a_miss_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub");
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let repo_dir = hub.join("models--tiny-org--tiny-resnet");
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::create_dir_all(repo_dir.join("snapshots").join(sha)).unwrap();
    std::fs::write(repo_dir.join("refs/main"), sha).unwrap();
    std::fs::copy(
        fixture("basic18.safetensors"),
        repo_dir
            .join("snapshots")
            .join(sha)
            .join("model.safetensors"),
    )
    .unwrap();
    let mut entry = source::entry("imagenet-resnet50").unwrap();
    entry.config = basic_cfg();
    entry.in_channels = 1;
    entry.weights = WeightsLocation::HfHub {
        repo: "tiny-org/tiny-resnet".into(),
        file: "model.safetensors".into(),
        revision: "main".into(),
    };
    let opts = LoadOptions {
        hf_cache: Some(hub.clone()),
        ..Default::default()
    };
    let loaded = entry
        .load(&opts, Head::Keep, None, &Device::Cpu, 0)
        .unwrap();
    let io = io("basic18");
    assert!(
        rel_err(
            &loaded.model.logits(&io["x"], false).unwrap(),
            &io["logits"]
        ) < 1e-4
    );

    entry.weights = WeightsLocation::HfHub {
        repo: "tiny-org/absent".into(),
        file: "model.safetensors".into(),
        revision: "main".into(),
    };
    let err = entry.resolve(&opts).unwrap_err().to_string();
    assert!(
        err.contains("not in the local cache") && err.contains("tiny-org/absent"),
        "{err}"
    );
}

#[test]
fn every_name_and_shape_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let good = source::read_tensors(&fixture("basic18.safetensors")).unwrap();
    let cfg = basic_cfg();
    let try_load = |tensors: &HashMap<String, Tensor>, file: &str| {
        let path = dir.path().join(file);
        spectral_transfer::candle_core::safetensors::save(tensors, &path).unwrap();
        let t = source::read_tensors(&path).unwrap();
        let vm = VarMap::new();
        ResNet::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        source::load_weights(&vm, &t, &path, None)
            .err()
            .map(|e| e.to_string())
    };
    assert_eq!(try_load(&good, "ok.safetensors"), None);

    let mut wrong = good.clone();
    wrong.insert(
        "layer2.1.conv1.weight".into(),
        Tensor::zeros((4, 4, 1, 1), DType::F32, &Device::Cpu).unwrap(),
    );
    let e = try_load(&wrong, "wrong_shape.safetensors").unwrap();
    assert!(
        e.contains("wrong_shape.safetensors")
            && e.contains("layer2.1.conv1.weight")
            && e.contains("[4, 4, 3, 3]")
            && e.contains("[4, 4, 1, 1]"),
        "{e}"
    );

    let mut missing = good.clone();
    missing.remove("layer3.0.downsample.1.running_var");
    let e = try_load(&missing, "missing.safetensors").unwrap();
    assert!(
        e.contains("missing tensor `layer3.0.downsample.1.running_var`"),
        "{e}"
    );

    let mut extra = good.clone();
    extra.insert(
        "layer5.0.conv1.weight".into(),
        Tensor::zeros((1, 1, 1, 1), DType::F32, &Device::Cpu).unwrap(),
    );
    let e = try_load(&extra, "extra.safetensors").unwrap();
    assert!(
        e.contains("unexpected tensor `layer5.0.conv1.weight`"),
        "{e}"
    );

    // A model of another width: the first mismatch (in name order) is named.
    let vm = VarMap::new();
    ResNet::new(
        &cfg.clone().with_base_width(4),
        VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let p = fixture("basic18.safetensors");
    let e = source::load_weights(&vm, &good, &p, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tensor `bn1.bias`: expected shape [4], got [2]"),
        "{e}"
    );
}

/// timm's first-conv adaptation: a 1-channel model with summed RGB kernels equals the RGB
/// model on the grey image replicated to three channels.
#[test]
fn sum_rgb_adaptation_equals_channel_replication() {
    let mut entry: SourceEntry = source::entry("imagenet-resnet50").unwrap();
    entry.config = bottleneck_cfg();
    entry.weights = WeightsLocation::LocalFile {
        path: fixture("bottleneck50.safetensors"),
    };
    let opts = LoadOptions::default();
    let summed = entry
        .load(&opts, Head::Keep, Some(InputAdapt::SumRgb), &Device::Cpu, 0)
        .unwrap();
    let replicated = entry
        .load(
            &opts,
            Head::Keep,
            Some(InputAdapt::Replicate),
            &Device::Cpu,
            0,
        )
        .unwrap();
    assert_eq!(summed.config.in_channels, 1);
    assert_eq!(replicated.config.in_channels, 3);
    let grey = io("bottleneck50")["x"].narrow(1, 0, 1).unwrap();
    let a = summed.model.logits(&grey, false).unwrap();
    let b = replicated.model.logits(&grey, false).unwrap();
    assert!(rel_err(&a, &b) < 1e-5);
}

#[test]
fn saved_weights_round_trip() {
    let (vm, m) = load("bottleneck50", &bottleneck_cfg());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.safetensors");
    source::save_weights(&vm, &p).unwrap();
    let (vm2, m2) = {
        let vm2 = VarMap::new();
        let m2 = ResNet::seeded(&bottleneck_cfg(), &vm2, DType::F32, &Device::Cpu, 99).unwrap();
        let t = source::read_tensors(&p).unwrap();
        source::load_weights(&vm2, &t, &p, None).unwrap();
        (vm2, m2)
    };
    let x = &io("bottleneck50")["x"];
    assert_eq!(
        values(&m.logits(x, false).unwrap()),
        values(&m2.logits(x, false).unwrap())
    );
    assert_eq!(vm.all_vars().len(), vm2.all_vars().len());
}
