//! Readers for the image formats the study's data come in: PNG/JPEG, NIfTI volumes (with their
//! voxel-to-world affine), DICOM (uncompressed, RLE and JPEG baseline; multi-frame; rescale
//! slope/intercept applied, i.e. CT in HU) and InVesalius `.inv3` projects (a gzip tar with an
//! int16 `matrix.dat` and its `main.plist`).
//!
//! Every reader takes the bytes plus a path used only to name the file in errors, so it works on
//! files on disk and on members read out of packages ([`super::archive`]) alike. A truncated,
//! corrupt or mislabelled input gives [`Error::File`] naming the file and the field; nothing
//! panics.

use std::io::Cursor;
use std::path::Path;

use crate::error::{Error, Result};
use crate::image::Image;

/// Reads a PNG or JPEG (any bit depth, grey or colour) as greyscale in [0, 1].
///
/// Colour is reduced to luma with the image crate's Rec. 709 weights.
pub fn read_image_bytes(bytes: &[u8], path: &Path) -> Result<Image> {
    let img = image::load_from_memory(bytes)
        .map_err(|e| Error::file(path, format!("not a readable PNG/JPEG image: {e}")))?;
    let luma = img.to_luma32f();
    let (w, h) = luma.dimensions();
    let data: Vec<f32> = luma
        .into_raw()
        .into_iter()
        .map(|v| v.clamp(0.0, 1.0))
        .collect();
    Image::new(h as usize, w as usize, data).map_err(|e| Error::file(path, e.to_string()))
}

/// Reads a PNG or JPEG file as greyscale in [0, 1].
pub fn read_image_file(path: &Path) -> Result<Image> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    read_image_bytes(&bytes, path)
}

/// A 3-D scalar volume. Voxel (i, j, k) is `data[i + nx * (j + ny * k)]` (NIfTI order: the first
/// axis varies fastest).
#[derive(Clone, Debug, PartialEq)]
pub struct Volume {
    /// (nx, ny, nz) voxels.
    pub dims: [usize; 3],
    /// Voxel values with the file's scaling (NIfTI `scl_slope`/`scl_inter`, or HU for CT).
    pub data: Vec<f32>,
    /// Rows of the voxel-to-world affine in mm: world = A[.., 0..3] * (i, j, k) + A[.., 3].
    pub affine: [[f64; 4]; 3],
}

impl Volume {
    /// Value of voxel (i, j, k).
    #[inline]
    pub fn get(&self, i: usize, j: usize, k: usize) -> f32 {
        self.data[i + self.dims[0] * (j + self.dims[1] * k)]
    }

    /// World coordinates (mm) of voxel (i, j, k).
    pub fn world(&self, i: f64, j: f64, k: f64) -> [f64; 3] {
        let a = &self.affine;
        [0, 1, 2].map(|r| a[r][0] * i + a[r][1] * j + a[r][2] * k + a[r][3])
    }

    /// Voxel coordinates of a world point (mm), through the inverse affine.
    /// Errors when the affine is singular.
    pub fn voxel_of(&self, world: [f64; 3]) -> Result<[f64; 3]> {
        let a = &self.affine;
        let m = [
            [a[0][0], a[0][1], a[0][2]],
            [a[1][0], a[1][1], a[1][2]],
            [a[2][0], a[2][1], a[2][2]],
        ];
        let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
        if det.abs() < 1e-12 || !det.is_finite() {
            return Err(Error::param(
                "affine",
                det,
                "the voxel-to-world affine is singular",
            ));
        }
        let b = [world[0] - a[0][3], world[1] - a[1][3], world[2] - a[2][3]];
        // Cramer's rule: 3 x 3, no linear-algebra crate needed.
        let solve = |c: usize| {
            let mut mc = m;
            for r in 0..3 {
                mc[r][c] = b[r];
            }
            (mc[0][0] * (mc[1][1] * mc[2][2] - mc[1][2] * mc[2][1])
                - mc[0][1] * (mc[1][0] * mc[2][2] - mc[1][2] * mc[2][0])
                + mc[0][2] * (mc[1][0] * mc[2][1] - mc[1][1] * mc[2][0]))
                / det
        };
        Ok([solve(0), solve(1), solve(2)])
    }

    /// Axial slice k (x along columns, y along rows, row 0 = smallest j) as an image of raw values.
    pub fn axial(&self, k: usize) -> Image {
        let [nx, ny, _] = self.dims;
        Image {
            height: ny,
            width: nx,
            data: self.data[nx * ny * k..nx * ny * (k + 1)].to_vec(),
        }
    }
}

/// Reads a NIfTI-1 volume (`.nii`, or gzip-compressed `.nii.gz`, detected by its magic) with its
/// affine: the sform when `sform_code > 0`, else the qform when `qform_code > 0`, else the
/// voxel sizes (NIfTI "method 1"). 4-D files keep their first volume.
pub fn read_nifti_bytes(bytes: &[u8], path: &Path) -> Result<Volume> {
    let raw = super::archive::maybe_gunzip(bytes, path)?;
    if raw.len() < 348 {
        return Err(Error::file(
            path,
            format!("NIfTI header truncated: {} bytes, need 348", raw.len()),
        ));
    }
    use nifti::NiftiObject;
    let obj = nifti::InMemNiftiObject::from_reader(Cursor::new(&raw))
        .map_err(|e| Error::file(path, format!("not a readable NIfTI-1 file: {e}")))?;
    let h = obj.header().clone();
    let ndim = h.dim[0] as usize;
    if !(1..=7).contains(&ndim) {
        return Err(Error::file(
            path,
            format!("header field dim[0] = {ndim} is not in 1..=7"),
        ));
    }
    let d = |i: usize| {
        if i <= ndim {
            h.dim[i].max(1) as usize
        } else {
            1
        }
    };
    let dims = [d(1), d(2), d(3)];
    let n3 = dims[0] * dims[1] * dims[2];
    let data = voxels_as_f32(
        obj.volume().raw_data(),
        h.datatype,
        h.endianness == nifti::Endianness::Big,
    )
    .map_err(|e| Error::file(path, e))?;
    if data.len() < n3 {
        return Err(Error::file(
            path,
            format!(
                "voxel data truncated: {} values for dim {:?}",
                data.len(),
                dims
            ),
        ));
    }
    let (slope, inter) = if h.scl_slope.is_finite() && h.scl_slope != 0.0 {
        (
            h.scl_slope,
            if h.scl_inter.is_finite() {
                h.scl_inter
            } else {
                0.0
            },
        )
    } else {
        (1.0, 0.0)
    };
    let mut data = data;
    data.truncate(n3);
    if (slope, inter) != (1.0, 0.0) {
        for v in &mut data {
            *v = *v * slope + inter;
        }
    }
    if let Some(bad) = data.iter().position(|v| !v.is_finite()) {
        return Err(Error::file(path, format!("voxel {bad} is not finite")));
    }
    Ok(Volume {
        dims,
        data,
        affine: nifti_affine(&h, path)?,
    })
}

/// Raw NIfTI voxels of `datatype` as f32 (the nifti crate converts only to the stored type).
fn voxels_as_f32(raw: &[u8], datatype: i16, big: bool) -> std::result::Result<Vec<f32>, String> {
    fn conv<const N: usize>(raw: &[u8], big: bool, f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
        raw.chunks_exact(N)
            .map(|c| {
                let mut b = [0u8; N];
                b.copy_from_slice(c);
                if big {
                    b.reverse();
                }
                f(b)
            })
            .collect()
    }
    Ok(match datatype {
        2 => raw.iter().map(|&v| v as f32).collect(),
        256 => raw.iter().map(|&v| v as i8 as f32).collect(),
        4 => conv::<2>(raw, big, |b| i16::from_le_bytes(b) as f32),
        512 => conv::<2>(raw, big, |b| u16::from_le_bytes(b) as f32),
        8 => conv::<4>(raw, big, |b| i32::from_le_bytes(b) as f32),
        768 => conv::<4>(raw, big, |b| u32::from_le_bytes(b) as f32),
        16 => conv::<4>(raw, big, f32::from_le_bytes),
        64 => conv::<8>(raw, big, |b| f64::from_le_bytes(b) as f32),
        other => {
            return Err(format!(
                "header field `datatype` = {other} is not a supported scalar type"
            ))
        }
    })
}

/// Reads a NIfTI-1 file from disk; see [`read_nifti_bytes`].
pub fn read_nifti(path: &Path) -> Result<Volume> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    read_nifti_bytes(&bytes, path)
}

/// The voxel-to-world affine of a NIfTI header (the nifti crate computes it only with its
/// nalgebra feature, which this crate does not enable, so it is written out here).
fn nifti_affine(h: &nifti::NiftiHeader, path: &Path) -> Result<[[f64; 4]; 3]> {
    let f = |v: f32| v as f64;
    let a = if h.sform_code > 0 {
        [h.srow_x, h.srow_y, h.srow_z].map(|r| r.map(f))
    } else if h.qform_code > 0 {
        // NIfTI-1 standard, method 2: quaternion (b, c, d), a = sqrt(1 - b^2 - c^2 - d^2).
        let (b, c, d) = (f(h.quatern_b), f(h.quatern_c), f(h.quatern_d));
        let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
        let r = [
            [
                a * a + b * b - c * c - d * d,
                2.0 * (b * c - a * d),
                2.0 * (b * d + a * c),
            ],
            [
                2.0 * (b * c + a * d),
                a * a + c * c - b * b - d * d,
                2.0 * (c * d - a * b),
            ],
            [
                2.0 * (b * d - a * c),
                2.0 * (c * d + a * b),
                a * a + d * d - c * c - b * b,
            ],
        ];
        let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let s = [f(h.pixdim[1]), f(h.pixdim[2]), f(h.pixdim[3]) * qfac];
        let o = [f(h.quatern_x), f(h.quatern_y), f(h.quatern_z)];
        [0, 1, 2].map(|i| [r[i][0] * s[0], r[i][1] * s[1], r[i][2] * s[2], o[i]])
    } else {
        let s = [1, 2, 3].map(|i| f(h.pixdim[i]).abs());
        [
            [s[0], 0.0, 0.0, 0.0],
            [0.0, s[1], 0.0, 0.0],
            [0.0, 0.0, s[2], 0.0],
        ]
    };
    if a.iter().flatten().any(|v| !v.is_finite()) {
        return Err(Error::file(
            path,
            "header affine (srow/quatern/pixdim) is not finite",
        ));
    }
    Ok(a)
}

/// A decoded DICOM image: all frames, greyscale, in modality units (rescale slope/intercept
/// applied, so CT is in HU). MONOCHROME1 is *not* inverted here (see `monochrome1`); colour is
/// reduced to Rec. 601 luma.
#[derive(Clone, Debug, PartialEq)]
pub struct DicomImage {
    pub rows: usize,
    pub columns: usize,
    pub frames: usize,
    /// Modality (0008,0060), e.g. "CT", "MR", "US"; empty when absent.
    pub modality: String,
    /// Photometric interpretation (0028,0004) as written in the file.
    pub photometric: String,
    /// True for MONOCHROME1 (the minimum is displayed white).
    pub monochrome1: bool,
    /// (slope, intercept) applied to the stored values.
    pub rescale: (f64, f64),
    /// frames x rows x columns values, row-major.
    pub values: Vec<f32>,
}

impl DicomImage {
    /// Frame `f` as an [`Image`] of modality values.
    pub fn frame(&self, f: usize) -> Image {
        let n = self.rows * self.columns;
        Image {
            height: self.rows,
            width: self.columns,
            data: self.values[f * n..(f + 1) * n].to_vec(),
        }
    }
}

/// Reads a DICOM file (with or without the 128-byte preamble) and decodes its pixel data.
pub fn read_dicom_bytes(bytes: &[u8], path: &Path) -> Result<DicomImage> {
    use dicom_dictionary_std::tags;
    use dicom_pixeldata::PixelDecoder;
    let body = if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        &bytes[128..]
    } else if bytes.starts_with(b"DICM") {
        bytes
    } else {
        return Err(Error::file(
            path,
            "not a DICOM file: no `DICM` magic at byte 128",
        ));
    };
    // The parser validates lengths against the data, so a truncated file is an error here, not
    // a panic; decoding is guarded again below in case a codec panics on corrupt input.
    let obj = dicom_object::OpenFileOptions::new()
        .from_reader(Cursor::new(body))
        .map_err(|e| Error::file(path, format!("corrupt or truncated DICOM data set: {e}")))?;
    let text = |tag| -> String {
        obj.element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let modality = text(tags::MODALITY);
    let photometric = text(tags::PHOTOMETRIC_INTERPRETATION);
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        obj.decode_pixel_data().and_then(|d| {
            let v: Vec<f32> = d.to_vec()?;
            Ok((
                d.rows(),
                d.columns(),
                d.number_of_frames(),
                d.samples_per_pixel(),
                d.rescale().ok().map(|r| r.to_vec()),
                v,
            ))
        })
    }))
    .map_err(|_| Error::file(path, "pixel data decoder failed on corrupt input"))?
    .map_err(|e| Error::file(path, format!("pixel data (7FE0,0010): {e}")))?;
    let (rows, columns, frames, spp, rescale, values) = decoded;
    let (rows, columns, frames, spp) = (
        rows as usize,
        columns as usize,
        frames as usize,
        spp as usize,
    );
    let n = rows * columns * frames;
    if rows == 0 || columns == 0 || frames == 0 {
        return Err(Error::file(
            path,
            format!("empty image: {rows} x {columns} x {frames} frames"),
        ));
    }
    if values.len() != n * spp {
        return Err(Error::file(
            path,
            format!(
                "pixel data length: {} values for {frames} frames of {rows} x {columns} x {spp}",
                values.len()
            ),
        ));
    }
    let grey: Vec<f32> = match spp {
        1 => values,
        3 => values
            .chunks_exact(3)
            .map(|c| 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2])
            .collect(),
        other => {
            return Err(Error::file(
                path,
                format!("samples per pixel (0028,0002) = {other}, expected 1 or 3"),
            ))
        }
    };
    let rescale = rescale
        .and_then(|r| r.first().map(|r| (r.slope, r.intercept)))
        .unwrap_or((1.0, 0.0));
    if let Some(bad) = grey.iter().position(|v| !v.is_finite()) {
        return Err(Error::file(path, format!("pixel {bad} is not finite")));
    }
    Ok(DicomImage {
        rows,
        columns,
        frames,
        monochrome1: photometric == "MONOCHROME1",
        modality,
        photometric,
        rescale,
        values: grey,
    })
}

/// Reads a DICOM file from disk; see [`read_dicom_bytes`].
pub fn read_dicom(path: &Path) -> Result<DicomImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    read_dicom_bytes(&bytes, path)
}

/// Reads the CT volume of an InVesalius 3 project (`.inv3`: a gzip tar holding `main.plist` and
/// the int16 `matrix.dat`, slices x rows x columns, little endian, values in HU). The volume's
/// first axis is the column, the third the slice; the affine is the plist's spacing.
pub fn read_inv3_bytes(bytes: &[u8], path: &Path) -> Result<Volume> {
    let members = super::archive::read_members_from_bytes(
        bytes,
        super::archive::ArchiveKind::Tar,
        path,
        &["*/main.plist", "*/matrix.dat"],
    )?;
    let plist = String::from_utf8_lossy(&members[0]);
    let matrix = plist_dict(&plist, "matrix")
        .ok_or_else(|| Error::file(path, "main.plist: no `matrix` dict"))?;
    let dtype = plist_value(matrix, "dtype", "string")
        .ok_or_else(|| Error::file(path, "main.plist: matrix has no `dtype`"))?;
    if dtype != "int16" {
        return Err(Error::file(
            path,
            format!("main.plist: matrix dtype `{dtype}`, expected int16"),
        ));
    }
    let shape = plist_array(matrix, "shape", "integer")
        .ok_or_else(|| Error::file(path, "main.plist: matrix has no `shape` array"))?;
    let shape: Vec<usize> = shape
        .iter()
        .map(|s| s.parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| {
            Error::file(
                path,
                format!("main.plist: matrix shape {shape:?} is not integers"),
            )
        })?;
    if shape.len() != 3 || shape.contains(&0) {
        return Err(Error::file(
            path,
            format!("main.plist: matrix shape {shape:?}, expected 3 positive sizes"),
        ));
    }
    let spacing: Vec<f64> = plist_array(&plist, "spacing", "real")
        .map(|v| v.iter().filter_map(|s| s.parse().ok()).collect())
        .unwrap_or_else(|| vec![1.0, 1.0, 1.0]);
    let spacing = if spacing.len() == 3 {
        spacing
    } else {
        vec![1.0, 1.0, 1.0]
    };
    let (nz, ny, nx) = (shape[0], shape[1], shape[2]);
    let raw = &members[1];
    if raw.len() != nz * ny * nx * 2 {
        return Err(Error::file(
            path,
            format!(
                "matrix.dat: {} bytes, expected {} for int16 {shape:?}",
                raw.len(),
                nz * ny * nx * 2
            ),
        ));
    }
    let data = raw
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32)
        .collect();
    Ok(Volume {
        dims: [nx, ny, nz],
        data,
        affine: [
            [spacing[0], 0.0, 0.0, 0.0],
            [0.0, spacing[1], 0.0, 0.0],
            [0.0, 0.0, spacing[2], 0.0],
        ],
    })
}

// A minimal reader for the few plist fields needed (a full plist parser would be a new
// dependency for three values).
fn plist_dict<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let start = text.find(&format!("<key>{key}</key>"))?;
    let rest = &text[start..];
    let open = rest.find("<dict>")?;
    let close = rest.find("</dict>")?;
    (open < close).then(|| &rest[open..close])
}

fn plist_value<'a>(text: &'a str, key: &str, kind: &str) -> Option<&'a str> {
    let start = text.find(&format!("<key>{key}</key>"))?;
    let rest = &text[start..];
    let open = rest.find(&format!("<{kind}>"))? + kind.len() + 2;
    let close = rest[open..].find(&format!("</{kind}>"))? + open;
    Some(rest[open..close].trim())
}

fn plist_array<'a>(text: &'a str, key: &str, kind: &str) -> Option<Vec<&'a str>> {
    let start = text.find(&format!("<key>{key}</key>"))?;
    let rest = &text[start..];
    let open = rest.find("<array>")?;
    let close = rest.find("</array>")?;
    if open > close {
        return None;
    }
    let body = &rest[open..close];
    let mut out = Vec::new();
    let (o, c) = (format!("<{kind}>"), format!("</{kind}>"));
    let mut s = body;
    while let Some(i) = s.find(&o) {
        let j = s[i..].find(&c)? + i;
        out.push(s[i + o.len()..j].trim());
        s = &s[j + c.len()..];
    }
    Some(out)
}
