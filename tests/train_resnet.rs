//! The ResNet wrappers of `train` on a tiny ResNet-18 (base width 4, small-input stem, 8 x 8
//! patches): pre-training, fine-tuning with a fresh 2-class `fc` head, determinism, checkpoints.
//! Run with RAYON_NUM_THREADS=1.

use candle_core::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spectral_transfer::data::PatchSet;
use spectral_transfer::model::{Arch, ResNet, ResNetConfig};
use spectral_transfer::train::{
    finetune, finetune_trained, load_into_varmap, predict_scores, pretrain, roc_auc,
    varmap_tensors, TrainConfig, Trained,
};

/// Class 0: horizontal stripes, 1: vertical, 2: flat; random phase, contrast and noise.
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
                let t = if class == 0 { y as f32 } else { x as f32 };
                let s = if class < 2 {
                    (t * 1.9 + phase).sin()
                } else {
                    0.0
                };
                pixels.push((0.5 + amp * s + 0.1 * (rng.random::<f32>() - 0.5)).clamp(0.0, 1.0));
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

fn tiny(classes: usize) -> ResNetConfig {
    ResNetConfig {
        arch: Arch::ResNet18,
        base_width: 4,
        in_channels: 1,
        num_classes: classes,
        dropout: 0.0,
        small_input: true,
    }
}

fn cfg(seed: u64, epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 16,
        lr: 1e-2,
        patience: Some(3),
        seed,
        ..Default::default()
    }
}

fn flat(t: &Trained<ResNet>) -> Vec<(String, Vec<f32>)> {
    let mut w: Vec<_> = varmap_tensors(&t.varmap)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

#[test]
fn resnet_pretrain_then_finetune_beats_chance_and_is_deterministic() {
    let source = stripes(16, 3, 1);
    let pre = pretrain(&source, &tiny(3), &cfg(1, 6)).unwrap();
    let losses: Vec<f64> = pre.history.iter().map(|m| m.train_loss).collect();
    eprintln!("resnet pretrain losses {losses:?}");
    assert!(losses[losses.len() - 1] < losses[0], "{losses:?}");
    // wrong head size for the set
    assert!(pretrain(&source, &tiny(2), &cfg(1, 1)).is_err());

    let train = stripes(16, 2, 2);
    let val = stripes(8, 2, 3);
    let test = stripes(16, 2, 4);
    let ft = finetune_trained(&pre, &train, &val, &cfg(5, 6)).unwrap();
    let tensors = varmap_tensors(&ft.varmap).unwrap();
    assert_eq!(tensors["fc.weight"].dims(), &[2, 32]);
    assert_eq!(ft.model.config().dropout, 0.5);
    let p1 = ft.predict_scores(&test).unwrap();
    let auc = roc_auc(&p1, &test.labels, 1).unwrap();
    let vals: Vec<_> = ft.history.iter().map(|m| (m.val_loss, m.val_auc)).collect();
    eprintln!(
        "resnet finetune val {vals:?}, best {:?}, test AUC {auc}",
        ft.best_epoch
    );
    assert!(auc > 0.75, "{auc}");
    // the free function agrees (identity normalisation is the default)
    assert_eq!(predict_scores(&ft.model, &test, 128).unwrap(), p1);

    // same seed: bit-identical (dropout 0.5 on, augmentation on)
    let from = varmap_tensors(&pre.varmap).unwrap();
    let again = finetune(&from, pre.model.config(), &train, &val, &cfg(5, 6)).unwrap();
    assert_eq!(flat(&ft), flat(&again));
    let other = finetune(&from, pre.model.config(), &train, &val, &cfg(6, 6)).unwrap();
    assert_ne!(flat(&ft), flat(&other));

    // checkpoint round trip into a fresh ResNet
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ft.safetensors");
    ft.save_checkpoint(&path).unwrap();
    let varmap = candle_nn::VarMap::new();
    let fresh = ResNet::seeded(
        ft.model.config(),
        &varmap,
        candle_core::DType::F32,
        &Device::Cpu,
        99,
    )
    .unwrap();
    let meta = load_into_varmap(&path, &varmap).unwrap();
    assert_eq!(meta.model_config["num_classes"], 2);
    assert_eq!(predict_scores(&fresh, &test, 7).unwrap().len(), test.len());
    let q = predict_scores(&fresh, &test, 128).unwrap();
    for (a, b) in p1.iter().zip(&q) {
        assert!((a - b).abs() < 1e-6);
    }
}
