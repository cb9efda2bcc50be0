//! Positive-class ROC AUC.
//!
//! This is the area under the ROC curve of one class against all others, i.e. the Mann-Whitney
//! statistic `P(score of a positive > score of a negative) + 1/2 P(equal)`. It is the number
//! scikit-learn's `roc_auc_score(labels == positive, scores)` returns. It is NOT the
//! micro-averaged one-hot AUC of the group's Keras code, which pools both columns of a softmax
//! output and gives a different number.
//!
//! Written by hand (a rank sum, a few lines) rather than through a crate: it needs exact
//! tie handling and f64 accumulation, and no maintained Rust crate documents both.

use crate::error::{Error, Result};

/// Exact positive-class ROC AUC of `scores` (higher = more likely `positive`).
///
/// Computed from mid-ranks: `(R+ - n+ (n+ + 1) / 2) / (n+ n-)`, where `R+` is the sum of the
/// ranks (1-based, ties given their average rank) of the positive patches. Ties between a
/// positive and a negative count 1/2.
///
/// Errors: lengths differ, no positive or no negative example (the AUC is undefined), or a
/// score that is NaN (infinities are allowed: they order fine).
pub fn roc_auc(scores: &[f32], labels: &[u32], positive: u32) -> Result<f64> {
    if scores.len() != labels.len() {
        return Err(Error::Shape {
            what: "roc_auc scores and labels".into(),
            expected: format!("{} scores (one per label)", labels.len()),
            got: scores.len().to_string(),
        });
    }
    if let Some(i) = scores.iter().position(|s| s.is_nan()) {
        return Err(Error::NonFinite(format!("roc_auc score {i} is NaN")));
    }
    let n_pos = labels.iter().filter(|&&l| l == positive).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return Err(Error::param(
            "labels",
            format!("{n_pos} positive (class {positive}), {n_neg} other"),
            "ROC AUC needs at least one positive and one negative example",
        ));
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // partial_cmp, not total_cmp: -0.0 and 0.0 must tie; it is total here since NaN was rejected.
    order.sort_by(|&a, &b| {
        scores[a]
            .partial_cmp(&scores[b])
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut rank_sum_pos = 0f64;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        // ranks start+1 ..= end, all tied: each gets their mean
        let mid_rank = (start + 1 + end) as f64 / 2.0;
        let pos_in_tie = order[start..end]
            .iter()
            .filter(|&&i| labels[i] == positive)
            .count();
        rank_sum_pos += mid_rank * pos_in_tie as f64;
        start = end;
    }
    let (np, nn) = (n_pos as f64, n_neg as f64);
    Ok((rank_sum_pos - np * (np + 1.0) / 2.0) / (np * nn))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn hand_computed_case_with_ties() {
        // positives (label 1): 0.8, 0.4, 0.4 ; negatives: 0.4, 0.1
        // pairs (pos, neg): (0.8,0.4)=1 (0.8,0.1)=1 (0.4,0.4)=1/2 (0.4,0.1)=1 (0.4,0.4)=1/2
        // (0.4,0.1)=1  -> 5 / 6
        let scores = [0.8, 0.4, 0.4, 0.4, 0.1];
        let labels = [1, 1, 0, 1, 0];
        let auc = roc_auc(&scores, &labels, 1).unwrap();
        assert!((auc - 5.0 / 6.0).abs() < 1e-15, "{auc}");
        // the other class as positive, with the same scores: 1 - 5/6
        let auc0 = roc_auc(&scores, &labels, 0).unwrap();
        assert!((auc0 - 1.0 / 6.0).abs() < 1e-15);
        // perfect, reversed, all tied
        assert_eq!(roc_auc(&[0.1, 0.9], &[0, 1], 1).unwrap(), 1.0);
        assert_eq!(roc_auc(&[0.9, 0.1], &[0, 1], 1).unwrap(), 0.0);
        assert_eq!(roc_auc(&[0.5; 4], &[0, 1, 1, 0], 1).unwrap(), 0.5);
        // -0 and +0 tie, infinities order
        assert_eq!(roc_auc(&[-0.0, 0.0], &[0, 1], 1).unwrap(), 0.5);
        assert_eq!(
            roc_auc(&[f32::NEG_INFINITY, f32::INFINITY], &[0, 1], 1).unwrap(),
            1.0
        );
    }

    #[test]
    fn undefined_cases_are_errors() {
        let e = roc_auc(&[0.1, 0.2], &[1, 1], 1).unwrap_err();
        assert!(e.to_string().contains("labels"), "{e}");
        assert!(roc_auc(&[0.1, 0.2], &[0, 0], 1).is_err());
        assert!(roc_auc(&[0.1, f32::NAN], &[0, 1], 1)
            .unwrap_err()
            .to_string()
            .contains("NaN"));
        assert!(roc_auc(&[0.1], &[0, 1], 1).is_err());
        assert!(roc_auc(&[], &[], 1).is_err());
    }

    #[derive(Deserialize)]
    struct Case {
        name: String,
        scores: Vec<f32>,
        labels: Vec<u32>,
        positive: u32,
        auc: f64,
    }

    #[derive(Deserialize)]
    struct Fixture {
        sklearn_version: String,
        cases: Vec<Case>,
    }

    /// scikit-learn's `roc_auc_score` on random cases with and without ties, multi-class labels
    /// (one class against the rest) and imbalance; made by tests/fixtures/auc/make_auc_fixture.py.
    #[test]
    fn agrees_with_scikit_learn() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/auc/sklearn_auc.json"
        );
        let text = std::fs::read_to_string(path).expect("fixture present");
        let fx: Fixture = serde_json::from_str(&text).expect("fixture parses");
        assert!(fx.cases.len() >= 10, "sklearn {}", fx.sklearn_version);
        for c in &fx.cases {
            let auc = roc_auc(&c.scores, &c.labels, c.positive).unwrap();
            assert!(
                (auc - c.auc).abs() < 1e-12,
                "{}: ours {auc}, sklearn {}",
                c.name,
                c.auc
            );
        }
    }
}
