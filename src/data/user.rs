//! User datasets for the real study: an image folder (one sub-folder per class) or a CSV
//! manifest `path,label,group` (group = patient or volume, so folds never split one).
//!
//! Images are read as greyscale in [0, 1] (PNG/JPEG, or DICOM by extension `.dcm` with its
//! [0.5, 99.5] percentiles as the window) and resized to `size` x `size` with a triangle filter.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::readers::{read_dicom, read_image_file};
use super::PatchSet;
use crate::error::{Error, Result};
use crate::image::Image;

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .map(|e| e.to_string_lossy().to_lowercase())
            .as_deref(),
        Some("png" | "jpg" | "jpeg" | "dcm")
    )
}

/// Reads one user image as greyscale [0, 1], resized to `size` x `size`.
pub fn read_user_image(path: &Path, size: usize) -> Result<Image> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let img = if ext == "dcm" {
        let d = read_dicom(path)?;
        let f = d.frame(0);
        let mut v = f.data.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        let (lo, hi) = (at(0.005), at(0.995));
        let hi = if hi > lo { hi } else { lo + 1.0 };
        Image {
            height: f.height,
            width: f.width,
            data: f
                .data
                .iter()
                .map(|&x| {
                    let t = ((x - lo) / (hi - lo)).clamp(0.0, 1.0);
                    if d.monochrome1 {
                        1.0 - t
                    } else {
                        t
                    }
                })
                .collect(),
        }
    } else {
        read_image_file(path)?
    };
    let buf: image::ImageBuffer<image::Luma<f32>, Vec<f32>> =
        image::ImageBuffer::from_raw(img.width as u32, img.height as u32, img.data)
            .ok_or_else(|| Error::file(path, "decoded pixel count does not match its size"))?;
    let out = image::imageops::resize(
        &buf,
        size as u32,
        size as u32,
        image::imageops::FilterType::Triangle,
    );
    Image::new(
        size,
        size,
        out.into_raw()
            .into_iter()
            .map(|v| v.clamp(0.0, 1.0))
            .collect(),
    )
}

fn check_size(size: usize) -> Result<()> {
    if !(4..=1024).contains(&size) {
        return Err(Error::param(
            "size",
            size,
            "image side must be in 4..=1024 px",
        ));
    }
    Ok(())
}

fn assemble(name: &str, size: usize, rows: Vec<(PathBuf, String, String)>) -> Result<PatchSet> {
    let class_names: Vec<String> = rows
        .iter()
        .map(|r| r.1.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let group_names: Vec<String> = rows
        .iter()
        .map(|r| r.2.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let cidx: BTreeMap<&str, u32> = class_names
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as u32))
        .collect();
    let gidx: BTreeMap<&str, u32> = group_names
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as u32))
        .collect();
    let mut pixels = Vec::with_capacity(rows.len() * size * size);
    let (mut labels, mut groups) = (Vec::new(), Vec::new());
    for (path, class, group) in &rows {
        pixels.extend(read_user_image(path, size)?.data);
        labels.push(cidx[class.as_str()]);
        groups.push(gidx[group.as_str()]);
    }
    PatchSet::new(
        name,
        size,
        size,
        pixels,
        labels,
        groups,
        class_names,
        group_names,
    )
}

/// Loads `root/<class>/<image>` (PNG, JPEG or DICOM); classes are the sub-folder names in
/// sorted order; every image is its own group unless its file name has a `<group>__` prefix
/// (e.g. `patient07__slice12.png`).
pub fn load_image_folder(root: &Path, size: usize, name: &str) -> Result<PatchSet> {
    check_size(size)?;
    let mut class_dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| Error::io(root, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    class_dirs.sort();
    if class_dirs.len() < 2 {
        return Err(Error::file(
            root,
            format!(
                "expected one sub-folder per class (at least 2), found {}",
                class_dirs.len()
            ),
        ));
    }
    let mut rows = Vec::new();
    for dir in &class_dirs {
        let class = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_image(p))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(Error::file(
                dir,
                "class folder holds no PNG, JPEG or DICOM image",
            ));
        }
        for f in files {
            let stem = f
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            let group = match stem.split_once("__") {
                Some((g, _)) if !g.is_empty() => g.to_string(),
                _ => format!("{class}/{stem}"),
            };
            rows.push((f, class.clone(), group));
        }
    }
    assemble(name, size, rows)
}

/// Loads a CSV manifest with the header `path,label,group` (paths relative to the manifest's
/// folder unless absolute; no quoting, no commas inside fields). Classes and groups are
/// numbered in sorted order of their names.
pub fn load_csv_manifest(csv: &Path, size: usize, name: &str) -> Result<PatchSet> {
    check_size(size)?;
    let text = std::fs::read_to_string(csv).map_err(|e| Error::io(csv, e))?;
    let base = csv.parent().unwrap_or(Path::new("."));
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines
        .next()
        .ok_or_else(|| Error::file(csv, "empty manifest"))?;
    let cols: Vec<String> = header.split(',').map(|c| c.trim().to_lowercase()).collect();
    if cols != ["path", "label", "group"] {
        return Err(Error::file(
            csv,
            format!("line 1: header `{header}`, expected `path,label,group`"),
        ));
    }
    let mut rows = Vec::new();
    for (n, line) in lines {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() != 3 || f.iter().any(|x| x.is_empty()) {
            return Err(Error::file(
                csv,
                format!(
                    "line {}: expected 3 non-empty fields path,label,group, got `{line}`",
                    n + 1
                ),
            ));
        }
        let p = Path::new(f[0]);
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        };
        if !p.is_file() {
            return Err(Error::file(
                csv,
                format!(
                    "line {}: field `path`: {} does not exist",
                    n + 1,
                    p.display()
                ),
            ));
        }
        rows.push((p, f[1].to_string(), f[2].to_string()));
    }
    if rows.is_empty() {
        return Err(Error::file(csv, "manifest has a header but no rows"));
    }
    assemble(name, size, rows)
}
