//! Data: the labelled patch sets of the study (natural source, medical source, target), the readers
//! for the formats they come from, and the embedded default built from registry packages.

pub mod archive;
pub mod build;
pub mod embedded;
pub mod montage;
pub mod readers;
pub mod user;

pub use build::{build_embedded, BuildConfig, BuildReport};
pub use embedded::{default_data_dir, list_embedded, load_embedded, EmbeddedSet, SetSummary};
pub use montage::montage_png;
pub use user::{load_csv_manifest, load_image_folder};

use crate::error::{Error, Result};
use crate::image::Image;

/// A labelled set of equally sized single-channel patches, intensities in [0, 1].
///
/// `groups[i]` is the unit that must never be split across folds (the source photo or volume,
/// the patient, the slice block of the target).
#[derive(Clone, Debug, PartialEq)]
pub struct PatchSet {
    /// Short name: "natural", "medical", "target", or a user dataset's name.
    pub name: String,
    pub height: usize,
    pub width: usize,
    /// N x H x W, row-major, in [0, 1].
    pub pixels: Vec<f32>,
    /// Class index of each patch, `< class_names.len()`.
    pub labels: Vec<u32>,
    /// Group index of each patch, `< group_names.len()`.
    pub groups: Vec<u32>,
    pub class_names: Vec<String>,
    pub group_names: Vec<String>,
}

impl PatchSet {
    /// Builds a set and checks that every length and index is consistent.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: impl Into<String>,
        height: usize,
        width: usize,
        pixels: Vec<f32>,
        labels: Vec<u32>,
        groups: Vec<u32>,
        class_names: Vec<String>,
        group_names: Vec<String>,
    ) -> Result<Self> {
        let set = Self {
            name: name.into(),
            height,
            width,
            pixels,
            labels,
            groups,
            class_names,
            group_names,
        };
        set.validate()?;
        Ok(set)
    }

    /// Checks lengths, label and group ranges, and that every pixel is finite.
    pub fn validate(&self) -> Result<()> {
        let n = self.labels.len();
        let shape = |what: &str, expected: String, got: String| Error::Shape {
            what: format!("patch set `{}`: {what}", self.name),
            expected,
            got,
        };
        if self.height == 0 || self.width == 0 {
            return Err(shape(
                "patch size",
                "> 0".into(),
                format!("{} x {}", self.height, self.width),
            ));
        }
        if self.pixels.len() != n * self.height * self.width {
            return Err(shape(
                "pixels",
                format!("{n} x {} x {}", self.height, self.width),
                format!("{} values", self.pixels.len()),
            ));
        }
        if self.groups.len() != n {
            return Err(shape(
                "groups",
                n.to_string(),
                self.groups.len().to_string(),
            ));
        }
        if let Some(l) = self
            .labels
            .iter()
            .find(|&&l| l as usize >= self.class_names.len())
        {
            return Err(shape(
                "labels",
                format!("< {} classes", self.class_names.len()),
                l.to_string(),
            ));
        }
        if let Some(g) = self
            .groups
            .iter()
            .find(|&&g| g as usize >= self.group_names.len())
        {
            return Err(shape(
                "groups",
                format!("< {} groups", self.group_names.len()),
                g.to_string(),
            ));
        }
        if !self.pixels.iter().all(|v| v.is_finite()) {
            return Err(Error::NonFinite(format!(
                "pixels of patch set `{}`",
                self.name
            )));
        }
        Ok(())
    }

    /// Number of patches.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Pixels of patch `i` (H * W values).
    pub fn pixels_of(&self, i: usize) -> &[f32] {
        let hw = self.height * self.width;
        &self.pixels[i * hw..(i + 1) * hw]
    }

    /// Patch `i` as an [`Image`].
    pub fn image(&self, i: usize) -> Image {
        Image {
            height: self.height,
            width: self.width,
            data: self.pixels_of(i).to_vec(),
        }
    }

    /// Replaces patch `i`; the image must have the set's size.
    pub fn set_image(&mut self, i: usize, image: &Image) -> Result<()> {
        if (image.height, image.width) != (self.height, self.width) {
            return Err(Error::Shape {
                what: format!("patch {i} of `{}`", self.name),
                expected: format!("{} x {}", self.height, self.width),
                got: format!("{} x {}", image.height, image.width),
            });
        }
        let hw = self.height * self.width;
        self.pixels[i * hw..(i + 1) * hw].copy_from_slice(&image.data);
        Ok(())
    }

    /// The patches at `indices`, in that order, with the same class and group names.
    pub fn subset(&self, indices: &[usize]) -> PatchSet {
        let hw = self.height * self.width;
        let mut pixels = Vec::with_capacity(indices.len() * hw);
        for &i in indices {
            pixels.extend_from_slice(self.pixels_of(i));
        }
        PatchSet {
            name: self.name.clone(),
            height: self.height,
            width: self.width,
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            groups: indices.iter().map(|&i| self.groups[i]).collect(),
            class_names: self.class_names.clone(),
            group_names: self.group_names.clone(),
        }
    }

    /// Count of patches per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes()];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> PatchSet {
        PatchSet::new(
            "t",
            1,
            2,
            vec![0.0, 0.1, 0.2, 0.3, 0.4, 0.5],
            vec![0, 1, 1],
            vec![0, 0, 1],
            vec!["a".into(), "b".into()],
            vec!["g0".into(), "g1".into()],
        )
        .unwrap()
    }

    #[test]
    fn subset_and_counts() {
        let s = tiny();
        let sub = s.subset(&[2, 0]);
        assert_eq!(sub.pixels, vec![0.4, 0.5, 0.0, 0.1]);
        assert_eq!(sub.labels, vec![1, 0]);
        assert_eq!(s.class_counts(), vec![1, 2]);
    }

    #[test]
    fn inconsistent_sets_are_rejected() {
        let mut s = tiny();
        s.labels[0] = 7;
        assert!(s.validate().unwrap_err().to_string().contains("labels"));
        let mut s = tiny();
        s.pixels[1] = f32::NAN;
        assert!(s.validate().is_err());
        let mut s = tiny();
        s.pixels.pop();
        assert!(s.validate().unwrap_err().to_string().contains("pixels"));
    }
}
