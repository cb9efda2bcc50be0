//! Stratified group k-fold cross-validation: train / validation / test index sets per fold,
//! with no group (patient, volume, slice block) in two folds and the class balance of every
//! fold as even as the groups allow.
//!
//! The assignment is greedy, in the manner of scikit-learn's `StratifiedGroupKFold`: groups are
//! shuffled with the seed, then taken largest first (a stable sort, so the shuffle breaks ties);
//! each goes to the fold where it increases the squared deviation of the per-class counts from
//! their targets (`class total / k`) the least, ties to the fold with fewer samples, then the
//! lower index. With one sample per group every class is spread over the folds within one
//! sample of each other.
//!
//! Validation rule (method.md: train/validation/test per fold): for fold `i` the test set is
//! fold `i`, the validation set is fold `(i + 1) mod k` and the training set the other `k - 2`
//! folds. For `k = 2` there is no third fold: the groups of the other fold are split in two by
//! the same greedy rule (seeded), one half validation, one half training.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// One fold of the cross-validation: sorted sample indices, pairwise disjoint, covering all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoldSplit {
    pub fold: usize,
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
}

/// Per-group class counts and members, for the groups present in `members`.
struct GroupInfo {
    counts: Vec<usize>,
    members: Vec<usize>,
}

/// Greedy stratified assignment of `groups` (indices into `info`) into `parts` parts.
fn assign(
    info: &[GroupInfo],
    groups: &[usize],
    parts: usize,
    n_classes: usize,
    seed: u64,
) -> Vec<Vec<usize>> {
    let mut order = groups.to_vec();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    order.sort_by_key(|&g| std::cmp::Reverse(info[g].members.len()));
    let mut totals = vec![0f64; n_classes];
    for &g in groups {
        for (c, &n) in info[g].counts.iter().enumerate() {
            totals[c] += n as f64;
        }
    }
    let target: Vec<f64> = totals.iter().map(|t| t / parts as f64).collect();
    let mut counts = vec![vec![0f64; n_classes]; parts];
    let mut sizes = vec![0usize; parts];
    let mut out = vec![Vec::new(); parts];
    for g in order {
        let gc = &info[g].counts;
        let mut best = (f64::INFINITY, usize::MAX, 0usize);
        for f in 0..parts {
            let delta: f64 = (0..n_classes)
                .map(|c| {
                    let m = counts[f][c] - target[c];
                    let add = gc[c] as f64;
                    (m + add).powi(2) - m.powi(2)
                })
                .sum();
            // Compare with a small tolerance so that round-off never decides a tie.
            let better =
                delta < best.0 - 1e-9 || ((delta - best.0).abs() <= 1e-9 && sizes[f] < best.1);
            if better {
                best = (delta, sizes[f], f);
            }
        }
        let f = best.2;
        for c in 0..n_classes {
            counts[f][c] += gc[c] as f64;
        }
        sizes[f] += info[g].members.len();
        out[f].push(g);
    }
    out
}

/// Splits samples with `labels` (class indices) and `groups` (group ids) into `k` folds.
///
/// Errors: `labels` and `groups` of different lengths or empty; `k < 2`; fewer distinct groups
/// than `k`; for `k = 2`, a fold with a single group (no group left for validation).
/// Deterministic given `seed`.
pub fn stratified_group_kfold(
    labels: &[u32],
    groups: &[u32],
    k: usize,
    seed: u64,
) -> Result<Vec<FoldSplit>> {
    if labels.len() != groups.len() {
        return Err(Error::Shape {
            what: "stratified_group_kfold labels and groups".into(),
            expected: format!("{} groups (one per label)", labels.len()),
            got: groups.len().to_string(),
        });
    }
    if labels.is_empty() {
        return Err(Error::param("labels", "[]", "no samples to split"));
    }
    if k < 2 {
        return Err(Error::param("k", k, "at least 2 folds are needed"));
    }
    let n_classes = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
    // Map group ids to dense indices in order of first appearance.
    let mut dense = std::collections::HashMap::new();
    let mut info: Vec<GroupInfo> = Vec::new();
    for (i, (&l, &g)) in labels.iter().zip(groups).enumerate() {
        let gi = *dense.entry(g).or_insert_with(|| {
            info.push(GroupInfo {
                counts: vec![0; n_classes],
                members: Vec::new(),
            });
            info.len() - 1
        });
        info[gi].counts[l as usize] += 1;
        info[gi].members.push(i);
    }
    if info.len() < k {
        return Err(Error::param(
            "k",
            k,
            format!(
                "only {} distinct groups: need at least one group per fold",
                info.len()
            ),
        ));
    }
    let all: Vec<usize> = (0..info.len()).collect();
    let folds = assign(&info, &all, k, n_classes, seed);
    let members = |gs: &[usize]| -> Vec<usize> {
        let mut v: Vec<usize> = gs
            .iter()
            .flat_map(|&g| info[g].members.iter().copied())
            .collect();
        v.sort_unstable();
        v
    };
    let mut out = Vec::with_capacity(k);
    for i in 0..k {
        let test = members(&folds[i]);
        let (train_groups, val_groups): (Vec<usize>, Vec<usize>) = if k >= 3 {
            let v = (i + 1) % k;
            let train = (0..k)
                .filter(|&f| f != i && f != v)
                .flat_map(|f| folds[f].iter().copied())
                .collect();
            (train, folds[v].clone())
        } else {
            let other = &folds[1 - i];
            if other.len() < 2 {
                return Err(Error::param(
                    "k",
                    k,
                    format!(
                        "fold {} has a single group: nothing left to split off for validation",
                        1 - i
                    ),
                ));
            }
            let halves = assign(&info, other, 2, n_classes, seed ^ 0x5eed_f7a1 ^ i as u64);
            (halves[1].clone(), halves[0].clone())
        };
        out.push(FoldSplit {
            fold: i,
            train: members(&train_groups),
            val: members(&val_groups),
            test,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn check_partition(splits: &[FoldSplit], n: usize, groups: &[u32]) {
        let mut seen_test = vec![0usize; n];
        for s in splits {
            let mut all: Vec<usize> = s
                .train
                .iter()
                .chain(&s.val)
                .chain(&s.test)
                .copied()
                .collect();
            all.sort_unstable();
            assert_eq!(
                all,
                (0..n).collect::<Vec<_>>(),
                "fold {} is not a partition",
                s.fold
            );
            assert!(!s.train.is_empty() && !s.val.is_empty() && !s.test.is_empty());
            for &i in &s.test {
                seen_test[i] += 1;
            }
            // No group straddles train / val / test.
            let gset = |v: &[usize]| {
                v.iter()
                    .map(|&i| groups[i])
                    .collect::<std::collections::HashSet<_>>()
            };
            let (a, b, c) = (gset(&s.train), gset(&s.val), gset(&s.test));
            assert!(a.is_disjoint(&b) && a.is_disjoint(&c) && b.is_disjoint(&c));
        }
        assert!(
            seen_test.iter().all(|&c| c == 1),
            "every sample in exactly one test set"
        );
        // No group in two test sets.
        for (x, sx) in splits.iter().enumerate() {
            for sy in &splits[x + 1..] {
                let gx: std::collections::HashSet<_> = sx.test.iter().map(|&i| groups[i]).collect();
                assert!(sy.test.iter().all(|&i| !gx.contains(&groups[i])));
            }
        }
    }

    #[test]
    fn singleton_groups_balance_within_one_sample() {
        let n = 103;
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let labels: Vec<u32> = (0..n).map(|_| (rng.random::<f64>() < 0.3) as u32).collect();
        let groups: Vec<u32> = (0..n as u32).collect();
        let splits = stratified_group_kfold(&labels, &groups, 5, 42).unwrap();
        check_partition(&splits, n, &groups);
        for c in 0..2u32 {
            let per: Vec<usize> = splits
                .iter()
                .map(|s| s.test.iter().filter(|&&i| labels[i] == c).count())
                .collect();
            let (lo, hi) = (per.iter().min().unwrap(), per.iter().max().unwrap());
            assert!(hi - lo <= 1, "class {c}: {per:?}");
        }
    }

    #[test]
    fn grouped_samples_are_balanced_as_groups_allow() {
        // 60 groups of 1-6 samples, each group mostly one class (slice blocks of one region).
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (mut labels, mut groups) = (Vec::new(), Vec::new());
        let mut max_group = 0;
        for g in 0..60u32 {
            let size = rng.random_range(1..=6);
            max_group = max_group.max(size);
            let class = (g % 3 == 0) as u32;
            for _ in 0..size {
                let flip = rng.random::<f64>() < 0.1;
                labels.push(class ^ flip as u32);
                groups.push(g);
            }
        }
        let n = labels.len();
        let splits = stratified_group_kfold(&labels, &groups, 5, 7).unwrap();
        check_partition(&splits, n, &groups);
        for c in 0..2u32 {
            let total = labels.iter().filter(|&&l| l == c).count() as f64;
            for s in &splits {
                let m = s.test.iter().filter(|&&i| labels[i] == c).count() as f64;
                assert!(
                    (m - total / 5.0).abs() <= max_group as f64,
                    "class {c} fold {}: {m} vs target {}",
                    s.fold,
                    total / 5.0
                );
            }
        }
    }

    #[test]
    fn validation_is_the_next_fold_and_k2_splits_the_other() {
        let labels: Vec<u32> = (0..40).map(|i| (i % 2) as u32).collect();
        let groups: Vec<u32> = (0..40).map(|i| (i / 2) as u32).collect();
        let s = stratified_group_kfold(&labels, &groups, 4, 3).unwrap();
        for i in 0..4 {
            assert_eq!(s[i].val, s[(i + 1) % 4].test);
        }
        let s2 = stratified_group_kfold(&labels, &groups, 2, 3).unwrap();
        check_partition(&s2, 40, &groups);
        assert_eq!(s2[0].test.len(), 20);
        assert_eq!(s2[0].val.len() + s2[0].train.len(), 20);
    }

    #[test]
    fn deterministic_and_seeded() {
        let labels: Vec<u32> = (0..50).map(|i| (i % 3 == 0) as u32).collect();
        let groups: Vec<u32> = (0..50).map(|i| (i / 2) as u32).collect();
        let a = stratified_group_kfold(&labels, &groups, 5, 9).unwrap();
        assert_eq!(a, stratified_group_kfold(&labels, &groups, 5, 9).unwrap());
        assert_ne!(a, stratified_group_kfold(&labels, &groups, 5, 10).unwrap());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let l = [0u32, 1, 0, 1];
        let g = [0u32, 0, 1, 1];
        let e = stratified_group_kfold(&l, &g, 1, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`k`"), "{e}");
        let e = stratified_group_kfold(&l, &g, 3, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`k`") && e.contains("2 distinct groups"), "{e}");
        assert!(stratified_group_kfold(&l, &g[..3], 2, 0).is_err());
        assert!(stratified_group_kfold(&[], &[], 2, 0).is_err());
        // k = 2 with one group per fold leaves nothing for validation.
        let e = stratified_group_kfold(&l, &g, 2, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("validation"), "{e}");
    }
}
