//! Training machinery on a tiny CNN built from candle_nn ops (conv, BatchNorm, ReLU, global
//! average pool, seeded dropout, linear head named `fc`), on an easy synthetic task: stripes of
//! three orientations/kinds in 8 x 8 patches. Run with RAYON_NUM_THREADS=1 for speed.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use candle_nn::{BatchNorm, Conv2d, Linear, ModuleT, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spectral_transfer::data::PatchSet;
use spectral_transfer::train::{
    finetune_with, load_checkpoint, load_into_varmap, pretrain_with, roc_auc, sidecar_path,
    varmap_tensors, Augment, ModelSpec, SeededDropout, TrainConfig, Trained,
};
use spectral_transfer::Result;

struct TinyCnn {
    conv: Conv2d,
    bn: BatchNorm,
    drop: SeededDropout,
    fc: Linear,
}

impl TinyCnn {
    fn new(
        channels: usize,
        width: usize,
        classes: usize,
        dropout: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        let conv_cfg = candle_nn::Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        Ok(Self {
            conv: candle_nn::conv2d(channels, width, 3, conv_cfg, vb.pp("conv1"))?,
            bn: candle_nn::batch_norm(width, candle_nn::BatchNormConfig::default(), vb.pp("bn1"))?,
            drop: SeededDropout::new(dropout, 0)?,
            fc: candle_nn::linear(width, classes, vb.pp("fc"))?,
        })
    }
}

impl ModuleT for TinyCnn {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let x = xs.apply(&self.conv)?.apply_t(&self.bn, train)?.relu()?;
        let x = x.mean((2, 3))?;
        self.drop.forward_t(&x, train)?.apply(&self.fc)
    }
}

fn spec(channels: usize) -> ModelSpec {
    ModelSpec {
        channels,
        config: serde_json::json!({"arch": "tiny-cnn", "channels": channels}),
    }
}

/// Class 0: horizontal stripes, 1: vertical stripes, 2 (if `classes == 3`): checkerboard-free
/// flat noise. Random phase, contrast and noise; intensities in [0, 1].
fn stripes(n_per_class: usize, classes: u32, seed: u64) -> PatchSet {
    let (h, w) = (8, 8);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for i in 0..n_per_class * classes as usize {
        let class = (i % classes as usize) as u32;
        let phase: f32 = rng.random::<f32>() * std::f32::consts::TAU;
        let amp: f32 = 0.2 + 0.2 * rng.random::<f32>();
        for y in 0..h {
            for x in 0..w {
                let t = match class {
                    0 => y as f32,
                    1 => x as f32,
                    _ => 0.0,
                };
                let s = if class < 2 {
                    (t * 1.9 + phase).sin()
                } else {
                    0.0
                };
                let v = 0.5 + amp * s + 0.1 * (rng.random::<f32>() - 0.5);
                pixels.push(v.clamp(0.0, 1.0));
            }
        }
        labels.push(class);
    }
    let n = labels.len();
    PatchSet::new(
        "stripes",
        h,
        w,
        pixels,
        labels,
        (0..n as u32).collect(),
        (0..classes).map(|c| format!("c{c}")).collect(),
        (0..n).map(|g| format!("g{g}")).collect(),
    )
    .unwrap()
}

fn quick(seed: u64) -> TrainConfig {
    TrainConfig {
        epochs: 6,
        batch_size: 16,
        lr: 3e-2,
        patience: None,
        seed,
        ..Default::default()
    }
}

fn pretrain_tiny(set: &PatchSet, cfg: &TrainConfig) -> Trained<TinyCnn> {
    let classes = set.num_classes();
    pretrain_with(
        |vb| TinyCnn::new(1, 6, classes, 0.0, vb),
        &spec(1),
        set,
        None,
        cfg,
    )
    .unwrap()
}

fn weights(t: &Trained<TinyCnn>) -> Vec<(String, Vec<f32>)> {
    let mut w: Vec<(String, Vec<f32>)> = varmap_tensors(&t.varmap)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

/// Epoch, train loss, val loss, val AUC, lr as bit patterns.
type MetricBits = (usize, u64, Option<u64>, Option<u64>, u64);

/// Metrics without the wall-clock seconds, as exact bit patterns.
fn metric_bits(t: &Trained<TinyCnn>) -> Vec<MetricBits> {
    t.history
        .iter()
        .map(|m| {
            (
                m.epoch,
                m.train_loss.to_bits(),
                m.val_loss.map(f64::to_bits),
                m.val_auc.map(f64::to_bits),
                m.lr.to_bits(),
            )
        })
        .collect()
}

#[test]
fn pretraining_loss_decreases_on_an_easy_task() {
    let set = stripes(24, 3, 1);
    let t = pretrain_tiny(
        &set,
        &TrainConfig {
            epochs: 15,
            ..quick(5)
        },
    );
    let losses: Vec<f64> = t.history.iter().map(|m| m.train_loss).collect();
    eprintln!("pretrain losses {losses:?}");
    assert_eq!(losses.len(), 15);
    // 3 classes: chance is ln 3 = 1.10 nats
    assert!(losses[14] < 0.5 * losses[0], "{losses:?}");
    assert!(losses[12..].iter().all(|&l| l < 0.6), "{losses:?}");
    // the trained model separates class 1 from the rest on fresh data
    let test = stripes(20, 3, 99);
    let p1 = t.predict_scores(&test).unwrap();
    let auc = roc_auc(&p1, &test.labels, 1).unwrap();
    eprintln!("pretrain class-1 AUC on fresh data {auc}");
    assert!(auc > 0.9, "{auc}");
}

#[test]
fn same_seed_gives_bit_identical_weights_and_metrics() {
    let set = stripes(12, 3, 2);
    let val = stripes(6, 3, 3);
    let run = |seed: u64, threads: Option<usize>| {
        let cfg = TrainConfig {
            epochs: 3,
            threads,
            ..quick(seed)
        };
        // dropout on, augmentation on (default), validation on: every random source is used
        pretrain_with(
            |vb| TinyCnn::new(1, 6, 3, 0.3, vb),
            &spec(1),
            &set,
            Some(&val),
            &cfg,
        )
        .unwrap()
    };
    let a = run(11, Some(1));
    let b = run(11, Some(1));
    assert_eq!(weights(&a), weights(&b));
    assert_eq!(metric_bits(&a), metric_bits(&b));
    // the thread count does not change the result either
    let c = run(11, Some(2));
    assert_eq!(weights(&a), weights(&c));
    assert_eq!(metric_bits(&a), metric_bits(&c));
    let d = run(12, Some(1));
    assert_ne!(weights(&a), weights(&d));
    assert_ne!(metric_bits(&a), metric_bits(&d));
}

#[test]
fn finetuning_replaces_the_head_and_beats_chance() {
    let source = stripes(24, 3, 4);
    let pre = pretrain_tiny(&source, &quick(6));
    let from = varmap_tensors(&pre.varmap).unwrap();
    // binary target: vertical (1) vs horizontal (0) stripes, fresh samples
    let train = stripes(20, 2, 7);
    let val = stripes(10, 2, 8);
    let test = stripes(20, 2, 9);
    let cfg = TrainConfig {
        epochs: 4,
        lr: 1e-2,
        patience: Some(2),
        seed: 3,
        ..Default::default()
    };
    let ft = finetune_with(
        |vb| TinyCnn::new(1, 6, 2, cfg.head_dropout, vb),
        &spec(1),
        &from,
        "fc.",
        &train,
        Some(&val),
        &cfg,
    )
    .unwrap();
    let tensors = varmap_tensors(&ft.varmap).unwrap();
    assert_eq!(tensors["fc.weight"].dims(), &[2, 6]);
    assert!(ft.best_epoch.is_some());
    let p1 = ft.predict_scores(&test).unwrap();
    let auc = roc_auc(&p1, &test.labels, 1).unwrap();
    let aucs: Vec<Option<f64>> = ft.history.iter().map(|m| m.val_auc).collect();
    eprintln!("finetune val AUCs {aucs:?}, test AUC {auc}");
    assert!(auc > 0.8, "{auc}");

    // a source of another architecture is rejected, naming the tensor
    let mut wrong: HashMap<String, Tensor> = from.clone();
    wrong.insert(
        "conv1.weight".into(),
        Tensor::zeros((5, 1, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let e = finetune_with(
        |vb| TinyCnn::new(1, 6, 2, 0.5, vb),
        &spec(1),
        &wrong,
        "fc.",
        &train,
        None,
        &cfg,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("conv1.weight"), "{e}");
    let e = finetune_with(
        |vb| TinyCnn::new(1, 6, 2, 0.5, vb),
        &spec(1),
        &from,
        "fc.",
        &source,
        None,
        &cfg,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("binary"), "{e}");
}

#[test]
fn transferred_weights_are_copied_and_the_head_is_fresh() {
    let source = stripes(8, 3, 4);
    let pre = pretrain_tiny(
        &source,
        &TrainConfig {
            epochs: 1,
            ..quick(1)
        },
    );
    let from = varmap_tensors(&pre.varmap).unwrap();
    let (varmap, _m) = spectral_transfer::train::build_seeded(
        |vb| TinyCnn::new(1, 6, 2, 0.5, vb),
        9,
        &Device::Cpu,
    )
    .unwrap();
    let n = spectral_transfer::train::transfer_weights(&from, &varmap, "fc.").unwrap();
    // conv1.weight, conv1.bias, bn1.{weight, bias, running_mean, running_var}
    assert_eq!(n, 6);
    let to = varmap_tensors(&varmap).unwrap();
    let v = |m: &HashMap<String, Tensor>, k: &str| {
        m[k].flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    assert_eq!(v(&to, "conv1.weight"), v(&from, "conv1.weight"));
    assert_eq!(v(&to, "bn1.running_var"), v(&from, "bn1.running_var"));
    assert_eq!(to["fc.weight"].dims(), &[2, 6]);
}

#[test]
fn early_stopping_restores_the_best_epoch() {
    let train = stripes(12, 2, 20);
    // validation labels unrelated to the images: the validation loss soon rises
    let mut val = stripes(12, 2, 21);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for l in val.labels.iter_mut() {
        *l = rng.random_range(0..2);
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        epochs: 12,
        lr: 5e-2,
        patience: Some(2),
        checkpoint_dir: Some(dir.path().to_path_buf()),
        ..quick(2)
    };
    let t = pretrain_with(
        |vb| TinyCnn::new(1, 6, 2, 0.0, vb),
        &spec(1),
        &train,
        Some(&val),
        &cfg,
    )
    .unwrap();
    let losses: Vec<f64> = t.history.iter().map(|m| m.val_loss.unwrap()).collect();
    let best = t.best_epoch.unwrap();
    eprintln!("val losses {losses:?}, best epoch {best}");
    let min = losses.iter().cloned().fold(f64::INFINITY, f64::min);
    assert_eq!(losses[best - 1], min);
    // stopped exactly `patience` epochs after the best one (or ran out of epochs)
    assert!(
        t.history.len() == best + 2 || t.history.len() == 12,
        "{} epochs",
        t.history.len()
    );
    // the final weights are those written after the best epoch
    let (saved, meta) = load_checkpoint(
        &dir.path().join(format!("epoch-{best:03}.safetensors")),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(meta.epoch, best);
    assert_eq!(meta.seed, 2);
    assert_eq!(meta.history.len(), best);
    let now = varmap_tensors(&t.varmap).unwrap();
    for (k, v) in &saved {
        let a = v.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = now[k].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, b, "{k}");
    }
}

#[test]
fn checkpoints_round_trip_and_bad_files_are_named() {
    let set = stripes(8, 2, 30);
    let t = pretrain_with(
        |vb| TinyCnn::new(1, 4, 2, 0.0, vb),
        &spec(1),
        &set,
        None,
        &TrainConfig {
            epochs: 2,
            ..quick(4)
        },
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.safetensors");
    t.save_checkpoint(&path).unwrap();
    assert!(sidecar_path(&path).exists());
    // no temporary files are left behind
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);

    // load into a model built from another seed: predictions become identical
    let (varmap, model) = spectral_transfer::train::build_seeded(
        |vb| TinyCnn::new(1, 4, 2, 0.0, vb),
        77,
        &Device::Cpu,
    )
    .unwrap();
    let meta = load_into_varmap(&path, &varmap).unwrap();
    assert_eq!(meta.train_config, t.config);
    assert_eq!(meta.model_config["arch"], "tiny-cnn");
    // the sidecar's floats are decimal JSON: equal to the last bit or two (serde_json without
    // `float_roundtrip`); the weights file is exact
    assert_eq!(meta.history.len(), t.history.len());
    for (a, b) in meta.history.iter().zip(&t.history) {
        assert_eq!(a.epoch, b.epoch);
        assert!((a.train_loss - b.train_loss).abs() <= 1e-15 * b.train_loss.abs());
    }
    assert_eq!(meta.tensors["conv1.weight"], vec![4, 1, 3, 3]);
    let norm = &t.config.normalise;
    let p_a = t.predict_scores(&set).unwrap();
    let p_b = spectral_transfer::train::predict_scores_with(&model, &set, 1, norm, 5, &Device::Cpu)
        .unwrap();
    // (another evaluation batch size may change the last bits of a matmul)
    for (a, b) in p_a.iter().zip(&p_b) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }

    // another architecture: the mismatching tensor is named
    let (wide, _) = spectral_transfer::train::build_seeded(
        |vb| TinyCnn::new(1, 5, 2, 0.0, vb),
        0,
        &Device::Cpu,
    )
    .unwrap();
    let e = load_into_varmap(&path, &wide).unwrap_err().to_string();
    assert!(e.contains("tiny.safetensors") && e.contains("shape"), "{e}");

    // a truncated weights file: the error names the file
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_checkpoint(&path, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("tiny.safetensors"), "{e}");
    // a broken sidecar: the error names the sidecar
    std::fs::write(&path, &bytes).unwrap();
    std::fs::write(sidecar_path(&path), "{not json").unwrap();
    let e = load_checkpoint(&path, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("tiny.json"), "{e}");
    std::fs::remove_file(sidecar_path(&path)).unwrap();
    let e = load_checkpoint(&path, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("tiny.json"), "{e}");
}

#[test]
fn channel_replication_feeds_a_three_channel_model() {
    let set = stripes(8, 2, 40);
    let cfg = TrainConfig {
        epochs: 1,
        normalise: spectral_transfer::train::Normalise::imagenet(),
        augment: Augment::none(),
        ..quick(1)
    };
    let t = pretrain_with(
        |vb| TinyCnn::new(3, 4, 2, 0.0, vb),
        &spec(3),
        &set,
        None,
        &cfg,
    )
    .unwrap();
    assert_eq!(t.predict_scores(&set).unwrap().len(), set.len());
    // a 1-channel spec for a 3-channel model fails with candle's shape error, not a panic
    let e = pretrain_with(
        |vb| TinyCnn::new(3, 4, 2, 0.0, vb),
        &spec(1),
        &set,
        None,
        &TrainConfig {
            normalise: Default::default(),
            ..cfg.clone()
        },
    );
    assert!(e.is_err());
    // ImageNet statistics need 3 channels
    let e = pretrain_with(
        |vb| TinyCnn::new(1, 4, 2, 0.0, vb),
        &spec(1),
        &set,
        None,
        &cfg,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("normalise.mean"), "{e}");
    // a model with too few outputs for the labels is a clear shape error
    let three = stripes(4, 3, 41);
    let e = pretrain_with(
        |vb| TinyCnn::new(1, 4, 2, 0.0, vb),
        &spec(1),
        &three,
        None,
        &quick(0),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("logits"), "{e}");
}
