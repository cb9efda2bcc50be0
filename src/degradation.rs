//! The shortcut injection protocol (method.md, "Injection protocol"): an artifact applied to a
//! fraction `level` (the paper's degradation p) of the positive class, and the I.I.D., O.O.D. and
//! clean test sets.
//!
//! Rules, for a set with `n_pos` positives (label `positive_class`; every other label is a
//! negative):
//! - training / validation and I.I.D. test ([`Degradation::inject`]): exactly
//!   `round(level * n_pos)` positives (round half away from zero), chosen by a seeded shuffle,
//!   get the artifact (for one seed the chosen sets are nested: those at p = 0.2 are among
//!   those at p = 0.5); every other image gets the artifact's baseline
//!   ([`Artifact::baseline`]: photon noise at the high count) or stays clean if it has none;
//! - O.O.D. test: the artifact on every negative, the baseline (or nothing) on every positive:
//!   the training correlation reversed;
//! - clean test: no shortcut; the baseline still goes on every image, so that "clean" means
//!   "processed like every training image, without the cue".
//!
//! Each image's randomness is seeded by `(seed, index in the set)` through a splitmix64 mix, so
//! the result does not depend on the thread count; the images are processed in parallel
//! (rayon). Every application is recorded as an [`Applied`].

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::artifact::Artifact;
use crate::data::PatchSet;
use crate::error::{Error, Result};

/// An injection: which artifact, on which fraction of which class, with which seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Degradation {
    pub artifact: Artifact,
    /// Fraction p in [0, 1] of the positive class that gets the artifact.
    pub level: f64,
    pub positive_class: u32,
    pub seed: u64,
}

/// One applied artifact: the image's index in the set and the artifact's label (with its
/// strength parameters), e.g. `photon-n1e4` or, for the baseline pass, `photon-n1e6`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub index: usize,
    pub artifact: String,
}

/// The three test sets of one fold and what was applied to each.
#[derive(Clone, Debug, PartialEq)]
pub struct TestSets {
    pub iid: PatchSet,
    pub ood: PatchSet,
    pub clean: PatchSet,
    pub iid_applied: Vec<Applied>,
    pub ood_applied: Vec<Applied>,
    pub clean_applied: Vec<Applied>,
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of image `index` under run seed `seed`.
pub fn image_seed(seed: u64, index: usize) -> u64 {
    splitmix64(seed ^ splitmix64(index as u64))
}

/// Which images get what.
enum Role {
    Shortcut,
    Other,
}

impl Degradation {
    /// Validates `level` in [0, 1] (error names `level`) and the artifact.
    pub fn new(artifact: Artifact, level: f64, positive_class: u32, seed: u64) -> Result<Self> {
        if !(level.is_finite() && (0.0..=1.0).contains(&level)) {
            return Err(Error::param(
                "level",
                level,
                "degradation level must be in [0, 1]",
            ));
        }
        artifact.validate()?;
        Ok(Self {
            artifact,
            level,
            positive_class,
            seed,
        })
    }

    /// Number of positives that get the artifact out of `n_pos`: `round(level * n_pos)`.
    pub fn shortcut_count(&self, n_pos: usize) -> usize {
        ((self.level * n_pos as f64).round() as usize).min(n_pos)
    }

    fn check(&self, set: &PatchSet) -> Result<()> {
        if !(self.level.is_finite() && (0.0..=1.0).contains(&self.level)) {
            return Err(Error::param(
                "level",
                self.level,
                "degradation level must be in [0, 1]",
            ));
        }
        self.artifact.validate()?;
        if self.positive_class as usize >= set.num_classes() {
            return Err(Error::param(
                "positive_class",
                self.positive_class,
                format!("set `{}` has {} classes", set.name, set.num_classes()),
            ));
        }
        Ok(())
    }

    /// The indices of `set` whose positives get the artifact under the training rule, sorted.
    pub fn chosen(&self, set: &PatchSet) -> Result<Vec<usize>> {
        self.check(set)?;
        let mut pos: Vec<usize> = (0..set.len())
            .filter(|&i| set.labels[i] == self.positive_class)
            .collect();
        let n = self.shortcut_count(pos.len());
        pos.shuffle(&mut ChaCha8Rng::seed_from_u64(splitmix64(
            self.seed ^ 0xc405_e11e,
        )));
        let mut chosen = pos[..n].to_vec();
        chosen.sort_unstable();
        Ok(chosen)
    }

    fn apply_roles(&self, set: &PatchSet, roles: &[Role]) -> Result<(PatchSet, Vec<Applied>)> {
        let baseline = self.artifact.baseline();
        let jobs: Vec<(usize, &Artifact)> = roles
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r {
                Role::Shortcut => Some((i, &self.artifact)),
                Role::Other => baseline.as_ref().map(|b| (i, b)),
            })
            .collect();
        let images = jobs
            .par_iter()
            .map(|&(i, a)| a.apply(&set.image(i), image_seed(self.seed, i)))
            .collect::<Result<Vec<_>>>()?;
        let mut out = set.clone();
        let mut applied = Vec::with_capacity(jobs.len());
        for (&(i, a), img) in jobs.iter().zip(&images) {
            out.set_image(i, img)?;
            applied.push(Applied {
                index: i,
                artifact: a.label(),
            });
        }
        Ok((out, applied))
    }

    /// The training / validation rule (also the I.I.D. test rule): see the module doc.
    /// Returns the degraded set and one record per image that was changed, in index order.
    pub fn inject(&self, set: &PatchSet) -> Result<(PatchSet, Vec<Applied>)> {
        let chosen = self.chosen(set)?;
        let mut roles: Vec<Role> = (0..set.len()).map(|_| Role::Other).collect();
        for i in chosen {
            roles[i] = Role::Shortcut;
        }
        self.apply_roles(set, &roles)
    }

    /// The I.I.D., O.O.D. and clean versions of a test set (see the module doc).
    pub fn test_sets(&self, set: &PatchSet) -> Result<TestSets> {
        self.check(set)?;
        let (iid, iid_applied) = self.inject(set)?;
        let ood_roles: Vec<Role> = set
            .labels
            .iter()
            .map(|&l| {
                if l == self.positive_class {
                    Role::Other
                } else {
                    Role::Shortcut
                }
            })
            .collect();
        let (ood, ood_applied) = self.apply_roles(set, &ood_roles)?;
        let clean_roles: Vec<Role> = (0..set.len()).map(|_| Role::Other).collect();
        let (clean, clean_applied) = self.apply_roles(set, &clean_roles)?;
        Ok(TestSets {
            iid,
            ood,
            clean,
            iid_applied,
            ood_applied,
            clean_applied,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fourier::FilterShape;

    /// `n_pos` positives (label 1) and `n_neg` negatives, 8 x 8, distinct smooth images.
    fn set(n_pos: usize, n_neg: usize) -> PatchSet {
        let n = n_pos + n_neg;
        let mut pixels = Vec::new();
        for i in 0..n {
            for p in 0..64 {
                pixels.push(0.3 + 0.4 * (((i * 7 + p) % 13) as f32 / 13.0));
            }
        }
        // Positives and negatives interleaved by a seeded shuffle.
        let mut labels: Vec<u32> = (0..n).map(|i| (i < n_pos) as u32).collect();
        labels.shuffle(&mut ChaCha8Rng::seed_from_u64(99));
        PatchSet::new(
            "t",
            8,
            8,
            pixels,
            labels,
            (0..n as u32).collect(),
            vec!["neg".into(), "pos".into()],
            (0..n).map(|i| format!("g{i}")).collect(),
        )
        .unwrap()
    }

    fn grating() -> Artifact {
        Artifact::Grating {
            omega: 0.5,
            angle_deg: 0.0,
            amplitude: 0.1,
            phase: None,
        }
    }

    fn changed(a: &PatchSet, b: &PatchSet) -> Vec<usize> {
        (0..a.len())
            .filter(|&i| a.pixels_of(i) != b.pixels_of(i))
            .collect()
    }

    #[test]
    fn exact_counts_at_every_level() {
        let s = set(37, 29);
        for p in [0.0, 0.1, 0.2, 0.5, 0.8, 1.0] {
            let d = Degradation::new(grating(), p, 1, 5).unwrap();
            let (out, rec) = d.inject(&s).unwrap();
            let expect = (p * 37.0f64).round() as usize;
            assert_eq!(rec.len(), expect, "p = {p}");
            let idx: Vec<usize> = rec.iter().map(|r| r.index).collect();
            assert!(idx.iter().all(|&i| s.labels[i] == 1), "only positives");
            assert_eq!(changed(&s, &out), idx, "records match the changed images");
            assert!(rec.iter().all(|r| r.artifact == grating().label()));
            assert_eq!(out.labels, s.labels);
        }
        assert_eq!(
            Degradation::new(grating(), 0.5, 1, 0)
                .unwrap()
                .shortcut_count(37),
            19
        );
        // Nested across levels for one seed.
        let at = |p: f64| {
            Degradation::new(grating(), p, 1, 5)
                .unwrap()
                .chosen(&s)
                .unwrap()
        };
        let (a, b) = (at(0.2), at(0.5));
        assert!(a.iter().all(|i| b.contains(i)));
    }

    #[test]
    fn ood_reverses_and_clean_is_clean() {
        let s = set(20, 16);
        let d = Degradation::new(grating(), 0.8, 1, 3).unwrap();
        let t = d.test_sets(&s).unwrap();
        let neg: Vec<usize> = (0..s.len()).filter(|&i| s.labels[i] == 0).collect();
        assert_eq!(changed(&s, &t.ood), neg);
        assert_eq!(
            t.ood_applied.iter().map(|r| r.index).collect::<Vec<_>>(),
            neg
        );
        assert!(changed(&s, &t.clean).is_empty() && t.clean_applied.is_empty());
        assert_eq!(t.iid, d.inject(&s).unwrap().0);
        assert_eq!(t.iid_applied.len(), 16);
    }

    #[test]
    fn baseline_goes_on_every_other_image() {
        let s = set(10, 10);
        let a = Artifact::PhotonNoiseImage {
            n0: 1e4,
            baseline_n0: 1e6,
        };
        let base = a.baseline().unwrap().label();
        let d = Degradation::new(a.clone(), 0.2, 1, 8).unwrap();
        let (out, rec) = d.inject(&s).unwrap();
        assert_eq!(rec.len(), 20);
        assert_eq!(changed(&s, &out).len(), 20);
        let short: Vec<&Applied> = rec.iter().filter(|r| r.artifact == a.label()).collect();
        assert_eq!(short.len(), 2);
        assert!(short.iter().all(|r| s.labels[r.index] == 1));
        assert_eq!(rec.iter().filter(|r| r.artifact == base).count(), 18);
        let t = d.test_sets(&s).unwrap();
        assert!(t.clean_applied.iter().all(|r| r.artifact == base) && t.clean_applied.len() == 20);
        let ood_short: Vec<usize> = t
            .ood_applied
            .iter()
            .filter(|r| r.artifact == a.label())
            .map(|r| r.index)
            .collect();
        assert_eq!(
            ood_short,
            (0..20).filter(|&i| s.labels[i] == 0).collect::<Vec<_>>()
        );
    }

    #[test]
    fn deterministic_seeded_and_thread_independent() {
        let s = set(30, 30);
        let a = Artifact::PhotonNoiseImage {
            n0: 1e4,
            baseline_n0: 1e6,
        };
        let d = Degradation::new(a, 0.5, 1, 21).unwrap();
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let three = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let x = one.install(|| d.inject(&s).unwrap());
        let y = three.install(|| d.inject(&s).unwrap());
        assert_eq!(x, y);
        let mut d2 = d.clone();
        d2.seed = 22;
        assert_ne!(d.chosen(&s).unwrap(), d2.chosen(&s).unwrap());
        assert_eq!(d.chosen(&s).unwrap(), d.chosen(&s).unwrap());
    }

    #[test]
    fn bad_parameters_are_errors() {
        for bad in [-0.1, 1.5, f64::NAN] {
            let e = Degradation::new(grating(), bad, 1, 0)
                .unwrap_err()
                .to_string();
            assert!(e.contains("`level`"), "{e}");
        }
        let bad_art = Artifact::LowPass {
            shape: FilterShape::Ideal,
            cutoff: 2.0,
        };
        let e = Degradation::new(bad_art, 0.5, 1, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`cutoff`"), "{e}");
        let d = Degradation::new(grating(), 0.5, 4, 0).unwrap();
        let e = d.inject(&set(2, 2)).unwrap_err().to_string();
        assert!(e.contains("`positive_class`"), "{e}");
    }
}
