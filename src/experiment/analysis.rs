//! Summaries of the results table that the figures and the report share: AUC mean and SD over
//! folds, PSD distances and centroids, and the per-fold O.O.D. loss of a shortcut.
//!
//! Definitions (stated in the report too):
//! - **PSD distance** `d(a, b)` = mean over rings of |a_k - b_k| (curves are min-max normalised
//!   per image, so d is in [0, 1]).
//! - **Spectral centroid** = sum_k omega_k a_k / sum_k a_k (normalised frequency).
//! - **Fold noise** of a source = mean PSD distance between the fine-tuned curves of two folds of
//!   the same source and edit at p = 0: how much two models trained the same way differ.
//! - **O.O.D. loss** of one fold = AUC_ood(p = 0) - mean over p > 0 of AUC_ood(p).

use std::collections::BTreeMap;

use super::results::RunResult;

/// Mean and sample standard deviation (n - 1; 0 for one value). NaNs are skipped.
pub fn mean_sd(values: &[f64]) -> (f64, f64) {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (m, 0.0);
    }
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, var.sqrt())
}

/// Mean over rings of |a - b| (over the common length).
pub fn psd_distance(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    if n == 0 {
        return f64::NAN;
    }
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>() / n as f64
}

/// sum omega * a / sum a.
pub fn centroid(omega: &[f64], a: &[f64]) -> f64 {
    let s: f64 = a.iter().sum();
    omega.iter().zip(a).map(|(w, v)| w * v).sum::<f64>() / s
}

/// Element-wise mean and SD of curves of equal length.
pub fn mean_curve(curves: &[&[f64]]) -> (Vec<f64>, Vec<f64>) {
    let n = curves.iter().map(|c| c.len()).min().unwrap_or(0);
    (0..n)
        .map(|k| mean_sd(&curves.iter().map(|c| c[k]).collect::<Vec<_>>()))
        .unzip()
}

/// Which test set an AUC is from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestSet {
    Iid,
    Ood,
    Clean,
}

impl TestSet {
    pub fn of(self, r: &RunResult) -> f64 {
        match self {
            TestSet::Iid => r.auc_iid,
            TestSet::Ood => r.auc_ood,
            TestSet::Clean => r.auc_clean,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            TestSet::Iid => "I.I.D.",
            TestSet::Ood => "O.O.D.",
            TestSet::Clean => "clean",
        }
    }
}

/// AUC against degradation for one (source, edit, artifact): levels ascending, mean and SD over
/// folds, and the number of folds at each level.
#[derive(Clone, Debug, PartialEq)]
pub struct AucCurve {
    pub source: String,
    pub edit: String,
    pub artifact: String,
    pub levels: Vec<f64>,
    pub mean: Vec<f64>,
    pub sd: Vec<f64>,
    pub n: Vec<usize>,
}

/// Distinct values in first-seen order.
pub fn distinct<T: PartialEq + Clone>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// The AUC curves of every (source, edit) under `artifact`, in table order.
pub fn auc_curves(results: &[RunResult], artifact: &str, set: TestSet) -> Vec<AucCurve> {
    let rows: Vec<&RunResult> = results.iter().filter(|r| r.artifact == artifact).collect();
    let keys = distinct(rows.iter().map(|r| (r.source.clone(), r.edit.clone())));
    keys.into_iter()
        .map(|(source, edit)| {
            let mut by_level: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
            for r in rows.iter().filter(|r| r.source == source && r.edit == edit) {
                by_level
                    .entry(r.level.to_bits())
                    .or_default()
                    .push(set.of(r));
            }
            let mut levels: Vec<(f64, Vec<f64>)> = by_level
                .into_iter()
                .map(|(k, v)| (f64::from_bits(k), v))
                .collect();
            levels.sort_by(|a, b| a.0.total_cmp(&b.0));
            let stats: Vec<(f64, f64)> = levels.iter().map(|(_, v)| mean_sd(v)).collect();
            AucCurve {
                source,
                edit,
                artifact: artifact.to_string(),
                levels: levels.iter().map(|l| l.0).collect(),
                mean: stats.iter().map(|s| s.0).collect(),
                sd: stats.iter().map(|s| s.1).collect(),
                n: levels.iter().map(|l| l.1.len()).collect(),
            }
        })
        .collect()
}

/// The pre-trained PSD of each (source, edit) (identical in all its runs): (source, edit, omega,
/// curve), in table order.
pub fn pretrained_psds(results: &[RunResult]) -> Vec<(String, String, Vec<f64>, Vec<f64>)> {
    let mut out: Vec<(String, String, Vec<f64>, Vec<f64>)> = Vec::new();
    for r in results {
        if !out.iter().any(|o| o.0 == r.source && o.1 == r.edit) {
            out.push((
                r.source.clone(),
                r.edit.clone(),
                r.omega.clone(),
                r.psd_pretrained.clone(),
            ));
        }
    }
    out
}

/// Fine-tuned PSD at `level` under `artifact` for one (source, edit), one curve per fold
/// (sorted by fold).
pub fn finetuned_psds<'a>(
    results: &'a [RunResult],
    source: &str,
    edit: &str,
    artifact: &str,
    level: f64,
) -> Vec<&'a RunResult> {
    let mut v: Vec<&RunResult> = results
        .iter()
        .filter(|r| {
            r.source == source && r.edit == edit && r.artifact == artifact && r.level == level
        })
        .collect();
    v.sort_by_key(|r| r.fold);
    v
}

/// Fine-tuned PSD at p = 0 of one (source, edit), one curve per fold. At p = 0 no training
/// image carries the artifact, so every artifact's p = 0 run trains on the same data; the first
/// artifact's runs are used.
pub fn clean_finetuned<'a>(
    results: &'a [RunResult],
    source: &str,
    edit: &str,
) -> Vec<&'a RunResult> {
    let Some(first) = results
        .iter()
        .find(|r| r.source == source && r.edit == edit && r.level == 0.0)
    else {
        return Vec::new();
    };
    finetuned_psds(results, source, edit, &first.artifact.clone(), 0.0)
}

/// Mean PSD distance between two folds' fine-tuned curves (all pairs), or NaN with < 2 folds.
pub fn fold_noise(runs: &[&RunResult]) -> f64 {
    let mut d = Vec::new();
    for i in 0..runs.len() {
        for j in i + 1..runs.len() {
            d.push(psd_distance(&runs[i].psd_finetuned, &runs[j].psd_finetuned));
        }
    }
    mean_sd(&d).0
}

/// Per-fold O.O.D. loss (AUC at p = 0 minus the mean over p > 0) of (source, edit, artifact):
/// (fold, loss), folds that have p = 0 and at least one p > 0.
pub fn ood_loss_per_fold(
    results: &[RunResult],
    source: &str,
    edit: &str,
    artifact: &str,
) -> Vec<(u32, f64)> {
    let rows: Vec<&RunResult> = results
        .iter()
        .filter(|r| r.source == source && r.edit == edit && r.artifact == artifact)
        .collect();
    let folds = {
        let mut f = distinct(rows.iter().map(|r| r.fold));
        f.sort();
        f
    };
    folds
        .into_iter()
        .filter_map(|f| {
            let base = rows.iter().find(|r| r.fold == f && r.level == 0.0)?.auc_ood;
            let later: Vec<f64> = rows
                .iter()
                .filter(|r| r.fold == f && r.level > 0.0)
                .map(|r| r.auc_ood)
                .collect();
            (!later.is_empty()).then(|| (f, base - mean_sd(&later).0))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_sd_is_sample_sd() {
        let (m, s) = mean_sd(&[1.0, 2.0, 3.0, 4.0]);
        assert!((m - 2.5).abs() < 1e-12);
        assert!((s - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_sd(&[2.0]), (2.0, 0.0));
        assert!(mean_sd(&[]).0.is_nan());
    }

    #[test]
    fn distance_and_centroid() {
        assert!((psd_distance(&[0.0, 1.0], &[1.0, 1.0]) - 0.5).abs() < 1e-12);
        assert!((centroid(&[0.5, 1.0], &[1.0, 1.0]) - 0.75).abs() < 1e-12);
        let (m, s) = mean_curve(&[&[1.0, 2.0], &[3.0, 2.0]]);
        assert_eq!(m, vec![2.0, 2.0]);
        assert!((s[0] - 2f64.sqrt()).abs() < 1e-12 && s[1] == 0.0);
    }
}
