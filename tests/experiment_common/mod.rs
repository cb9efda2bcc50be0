//! Helpers shared by the experiment tests.
#![allow(dead_code)]

use spectral_transfer::experiment::grid::Run;
use spectral_transfer::experiment::results::RunResult;
use spectral_transfer::experiment::Study;

pub fn study() -> Study {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/presets/quick.toml"))
        .unwrap();
    Study::from_toml(&text).unwrap()
}

/// Results that are a pure function of the run (so two executions agree), with a timing that
/// is not.
pub fn fake_result(run: &Run) -> RunResult {
    let h = u64::from_str_radix(&run.id[..8], 16).unwrap() as f64 / u32::MAX as f64;
    let omega: Vec<f64> = (1..=16).map(|k| k as f64 / 16.0).collect();
    RunResult {
        run_id: run.id.clone(),
        index: run.index as u32,
        pretrain_id: run.pretrain_id.clone(),
        source: run.source.clone(),
        edit: run.edit_label.clone(),
        artifact: run.artifact_label.clone(),
        artifact_kind: "grating".into(),
        config_json: spectral_transfer::experiment::grid::canonical_json(&run.config).unwrap(),
        level: run.level,
        fold: run.fold as u32,
        seed: 7,
        n_train: 100,
        n_val: 20,
        n_test: 30,
        auc_iid: 0.9,
        auc_ood: 0.9 - 0.5 * run.level * h,
        auc_clean: 0.85,
        auc_baseline_clean: 0.8,
        psd_pretrained: omega.iter().map(|w| (-w * (1.0 + h)).exp()).collect(),
        psd_finetuned: omega.iter().map(|w| (-w * 2.0 * (1.0 + h)).exp()).collect(),
        psd_artifact: omega
            .iter()
            .map(|w| if (*w - 0.5).abs() < 0.05 { 1.0 } else { 0.0 })
            .collect(),
        omega,
        alignment_pretrained: h,
        alignment_finetuned: h / 2.0,
        epochs: 2,
        best_val_loss: 0.5,
        time_pretrain_s: 1.0,
        time_finetune_s: std::time::Instant::now().elapsed().as_secs_f64(),
        time_eval_s: 0.1,
        time_psd_s: 0.1,
        time_total_s: 1.3,
    }
}
