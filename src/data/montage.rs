//! A PNG montage of a patch set, to look at the data: one row per class (up to `per_class`
//! random patches of that class, in label order), a 2 px grey gutter between patches.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::PatchSet;
use crate::error::{Error, Result};

/// Writes the montage of `set` to `path` (PNG, 8-bit grey): rows = classes, `per_class`
/// patches per row drawn at random (seeded) from that class; short classes leave gaps.
pub fn montage_png(set: &PatchSet, path: &Path, per_class: usize, seed: u64) -> Result<()> {
    set.validate()?;
    if per_class == 0 {
        return Err(Error::param("per_class", 0, "must be positive"));
    }
    if set.is_empty() {
        return Err(Error::param("set", &set.name, "the set is empty"));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (h, w, gap) = (set.height, set.width, 2usize);
    let rows = set.num_classes();
    let width = per_class * (w + gap) + gap;
    let height = rows * (h + gap) + gap;
    let mut canvas = vec![96u8; width * height];
    for class in 0..rows {
        let mut members: Vec<usize> = (0..set.len())
            .filter(|&i| set.labels[i] as usize == class)
            .collect();
        let take = per_class.min(members.len());
        for t in 0..take {
            let s = rng.random_range(t..members.len());
            members.swap(t, s);
        }
        for (col, &i) in members[..take].iter().enumerate() {
            let px = set.pixels_of(i);
            let (oy, ox) = (gap + class * (h + gap), gap + col * (w + gap));
            for y in 0..h {
                for x in 0..w {
                    canvas[(oy + y) * width + ox + x] =
                        (px[y * w + x].clamp(0.0, 1.0) * 255.0).round() as u8;
                }
            }
        }
    }
    image::save_buffer(
        path,
        &canvas,
        width as u32,
        height as u32,
        image::ExtendedColorType::L8,
    )
    .map_err(|e| Error::file(path, format!("cannot write the montage PNG: {e}")))
}
