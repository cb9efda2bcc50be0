//! Reader round-trips on files the tests write (NIfTI, DICOM, PNG, zip, ar/deb, inv3, user
//! datasets), corrupt and truncated files, and the real packaged files when
//! SPECTRAL_PACKAGE_CACHE is set.

use std::io::Write;
use std::path::{Path, PathBuf};

use spectral_transfer::data::archive::{list_members, read_member, read_members};
use spectral_transfer::data::readers::{
    read_dicom, read_dicom_bytes, read_image_file, read_inv3_bytes, read_nifti, read_nifti_bytes,
};
use spectral_transfer::data::{load_csv_manifest, load_image_folder};
use spectral_transfer::Error;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Asserts `r` is an `Error::File` naming `path` and containing `what`.
fn assert_file_error<T: std::fmt::Debug>(r: spectral_transfer::Result<T>, path: &Path, what: &str) {
    match r {
        Err(Error::File { path: p, reason }) => {
            assert_eq!(p, path, "error names the wrong file: {reason}");
            assert!(reason.contains(what), "reason `{reason}` lacks `{what}`");
        }
        other => panic!("expected a file error about `{what}`, got {other:?}"),
    }
}

/// A NIfTI-1 single file written by hand from the standard's byte layout (an oracle independent
/// of the nifti crate): int16 data, sform affine, scl_slope 2, scl_inter 1.
fn nifti_bytes(dims: [u16; 3], data: &[i16], srow: [[f32; 4]; 3]) -> Vec<u8> {
    let mut h = vec![0u8; 352];
    fn put(h: &mut [u8], at: usize, b: &[u8]) {
        h[at..at + b.len()].copy_from_slice(b);
    }
    put(&mut h, 0, &348i32.to_le_bytes());
    put(&mut h, 40, &3i16.to_le_bytes());
    for (i, d) in dims.iter().enumerate() {
        put(&mut h, 42 + 2 * i, &(*d as i16).to_le_bytes());
    }
    for i in 3..7 {
        put(&mut h, 42 + 2 * i, &1i16.to_le_bytes());
    }
    put(&mut h, 70, &4i16.to_le_bytes()); // datatype int16
    put(&mut h, 72, &16i16.to_le_bytes()); // bitpix
    for i in 0..4 {
        put(&mut h, 76 + 4 * i, &1f32.to_le_bytes());
    }
    put(&mut h, 108, &352f32.to_le_bytes()); // vox_offset
    put(&mut h, 112, &2f32.to_le_bytes()); // scl_slope
    put(&mut h, 116, &1f32.to_le_bytes()); // scl_inter
    put(&mut h, 254, &2i16.to_le_bytes()); // sform_code
    for (r, row) in srow.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            put(&mut h, 280 + 16 * r + 4 * c, &v.to_le_bytes());
        }
    }
    put(&mut h, 344, b"n+1\0");
    for v in data {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h
}

#[test]
fn nifti_round_trip_plain_and_gz() {
    let dims = [3u16, 4, 2];
    let data: Vec<i16> = (0..24).map(|v| v * 3 - 20).collect();
    let srow = [
        [0.5, 0.0, 0.0, -10.0],
        [0.0, 2.0, 0.0, 5.0],
        [0.0, 0.0, 1.5, -3.0],
    ];
    let bytes = nifti_bytes(dims, &data, srow);
    let d = tmp();
    let plain = d.path().join("v.nii");
    std::fs::write(&plain, &bytes).unwrap();
    let gz = d.path().join("v.nii.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&bytes).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    for p in [&plain, &gz] {
        let v = read_nifti(p).unwrap();
        assert_eq!(v.dims, [3, 4, 2]);
        // voxel (i, j, k) = data[i + 3 (j + 4 k)] * slope + inter
        assert_eq!(v.get(2, 1, 1), (data[2 + 3 * (1 + 4)] as f32) * 2.0 + 1.0);
        assert_eq!(v.data.len(), 24);
        let w = v.world(2.0, 1.0, 1.0);
        assert_eq!(w, [-9.0, 7.0, -1.5]);
        let back = v.voxel_of(w).unwrap();
        for (a, b) in back.iter().zip([2.0, 1.0, 1.0]) {
            assert!((a - b).abs() < 1e-9);
        }
    }
}

#[test]
fn nifti_corrupt_and_truncated() {
    let eye = [
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
    ];
    let bytes = nifti_bytes([3, 4, 2], &[1; 24], eye);
    let d = tmp();
    let p = d.path().join("short.nii");
    std::fs::write(&p, &bytes[..200]).unwrap();
    assert_file_error(read_nifti(&p), &p, "truncated");
    let p = d.path().join("shortdata.nii");
    std::fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
    assert!(matches!(read_nifti(&p), Err(Error::File { .. })));
    let mut bad = bytes.clone();
    bad[344..348].copy_from_slice(b"xxxx");
    bad[0..4].copy_from_slice(&7i32.to_le_bytes());
    assert!(matches!(
        read_nifti_bytes(&bad, Path::new("bad.nii")),
        Err(Error::File { .. })
    ));
    let gz = [0x1f, 0x8b, 8, 0, 0, 0];
    assert_file_error(
        read_nifti_bytes(&gz, Path::new("bad.nii.gz")),
        Path::new("bad.nii.gz"),
        "gzip",
    );
}

#[allow(clippy::too_many_arguments)]
fn write_dicom(
    path: &Path,
    rows: u16,
    cols: u16,
    frames: u16,
    values: &[u16],
    slope: &str,
    intercept: &str,
    photometric: &str,
) {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
    let mut obj = InMemDicomObject::new_empty();
    let s = |v: &str| PrimitiveValue::from(v.to_string());
    obj.put(DataElement::new(
        tags::SOP_CLASS_UID,
        VR::UI,
        s("1.2.840.10008.5.1.4.1.1.2"),
    ));
    obj.put(DataElement::new(
        tags::SOP_INSTANCE_UID,
        VR::UI,
        s("1.2.3.4.5"),
    ));
    obj.put(DataElement::new(tags::MODALITY, VR::CS, s("CT")));
    obj.put(DataElement::new(
        tags::SAMPLES_PER_PIXEL,
        VR::US,
        PrimitiveValue::from(1u16),
    ));
    obj.put(DataElement::new(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        s(photometric),
    ));
    obj.put(DataElement::new(
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        s(&frames.to_string()),
    ));
    obj.put(DataElement::new(
        tags::ROWS,
        VR::US,
        PrimitiveValue::from(rows),
    ));
    obj.put(DataElement::new(
        tags::COLUMNS,
        VR::US,
        PrimitiveValue::from(cols),
    ));
    obj.put(DataElement::new(
        tags::BITS_ALLOCATED,
        VR::US,
        PrimitiveValue::from(16u16),
    ));
    obj.put(DataElement::new(
        tags::BITS_STORED,
        VR::US,
        PrimitiveValue::from(16u16),
    ));
    obj.put(DataElement::new(
        tags::HIGH_BIT,
        VR::US,
        PrimitiveValue::from(15u16),
    ));
    obj.put(DataElement::new(
        tags::PIXEL_REPRESENTATION,
        VR::US,
        PrimitiveValue::from(0u16),
    ));
    obj.put(DataElement::new(
        tags::RESCALE_INTERCEPT,
        VR::DS,
        s(intercept),
    ));
    obj.put(DataElement::new(tags::RESCALE_SLOPE, VR::DS, s(slope)));
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(values.iter().copied().collect()),
    ));
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax("1.2.840.10008.1.2.1")
                .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.2")
                .media_storage_sop_instance_uid("1.2.3.4.5"),
        )
        .unwrap();
    file.write_to_file(path).unwrap();
}

#[test]
fn dicom_round_trip_multiframe_rescale() {
    let d = tmp();
    let p = d.path().join("ct.dcm");
    let values: Vec<u16> = (0..2 * 4 * 3).map(|v| v * 100).collect();
    write_dicom(&p, 4, 3, 2, &values, "2", "-1024", "MONOCHROME2");
    let img = read_dicom(&p).unwrap();
    assert_eq!((img.rows, img.columns, img.frames), (4, 3, 2));
    assert_eq!(img.modality, "CT");
    assert!(!img.monochrome1);
    assert_eq!(img.rescale, (2.0, -1024.0));
    let expect: Vec<f32> = values.iter().map(|&v| v as f32 * 2.0 - 1024.0).collect();
    assert_eq!(img.values, expect);
    let f1 = img.frame(1);
    assert_eq!(f1.get(0, 0), expect[12]);
    // MONOCHROME1 is flagged, not inverted
    let p1 = d.path().join("m1.dcm");
    write_dicom(&p1, 2, 2, 1, &[0, 1, 2, 3], "1", "0", "MONOCHROME1");
    let m1 = read_dicom(&p1).unwrap();
    assert!(m1.monochrome1);
    assert_eq!(m1.values, vec![0.0, 1.0, 2.0, 3.0]);
}

#[test]
fn dicom_corrupt_and_truncated() {
    let d = tmp();
    let p = d.path().join("ct.dcm");
    write_dicom(&p, 16, 16, 1, &[7u16; 256], "1", "0", "MONOCHROME2");
    let bytes = std::fs::read(&p).unwrap();
    let t = d.path().join("truncated.dcm");
    std::fs::write(&t, &bytes[..bytes.len() - 100]).unwrap();
    assert!(matches!(read_dicom(&t), Err(Error::File { ref path, .. }) if *path == t));
    let t2 = d.path().join("header_only.dcm");
    std::fs::write(&t2, &bytes[..300]).unwrap();
    assert!(matches!(read_dicom(&t2), Err(Error::File { ref path, .. }) if *path == t2));
    assert_file_error(
        read_dicom_bytes(b"hello", Path::new("x.dcm")),
        Path::new("x.dcm"),
        "DICM",
    );
    let mut junk = vec![0u8; 128];
    junk.extend_from_slice(b"DICM");
    junk.extend((0..500).map(|i| (i * 37 % 251) as u8));
    assert!(matches!(
        read_dicom_bytes(&junk, Path::new("junk.dcm")),
        Err(Error::File { .. })
    ));
}

#[test]
fn png_round_trip_and_corrupt() {
    let d = tmp();
    let p = d.path().join("g.png");
    let px: Vec<u16> = (0..12).map(|v| v * 5000).collect();
    let buf: image::ImageBuffer<image::Luma<u16>, Vec<u16>> =
        image::ImageBuffer::from_raw(4, 3, px.clone()).unwrap();
    buf.save(&p).unwrap();
    let img = read_image_file(&p).unwrap();
    assert_eq!((img.height, img.width), (3, 4));
    for (a, b) in img.data.iter().zip(&px) {
        assert!((a - *b as f32 / 65535.0).abs() < 1e-6);
    }
    // colour -> luma, Rec. 709 weights
    let c = d.path().join("c.png");
    image::RgbImage::from_raw(1, 1, vec![255, 0, 0])
        .unwrap()
        .save(&c)
        .unwrap();
    let red = read_image_file(&c).unwrap();
    assert!((red.data[0] - 0.2126).abs() < 0.01, "{}", red.data[0]);
    let bytes = std::fs::read(&p).unwrap();
    let t = d.path().join("t.png");
    std::fs::write(&t, &bytes[..bytes.len() / 2]).unwrap();
    assert_file_error(read_image_file(&t), &t, "PNG/JPEG");
}

fn tar_bytes(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&tar_bytes(entries)).unwrap();
    enc.finish().unwrap()
}

#[test]
fn zip_member_round_trip_and_errors() {
    let d = tmp();
    let p = d.path().join("pkg-1.0-py3-none-any.whl");
    {
        let f = std::fs::File::create(&p).unwrap();
        let mut z = zip::ZipWriter::new(f);
        let opt = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        z.start_file("pkg/data/a.txt", opt).unwrap();
        z.write_all(b"alpha").unwrap();
        z.start_file("pkg/data/b.bin", opt).unwrap();
        z.write_all(&[1, 2, 3, 4]).unwrap();
        z.finish().unwrap();
    }
    assert_eq!(read_member(&p, "pkg/data/a.txt").unwrap(), b"alpha");
    assert_eq!(
        read_members(&p, &["pkg/data/b.bin", "pkg/data/a.txt"]).unwrap(),
        vec![vec![1, 2, 3, 4], b"alpha".to_vec()]
    );
    assert_eq!(list_members(&p).unwrap().len(), 2);
    assert_file_error(read_member(&p, "pkg/missing"), &p, "pkg/missing");
    let bytes = std::fs::read(&p).unwrap();
    let t = d.path().join("t.whl");
    std::fs::write(&t, &bytes[..bytes.len() - 30]).unwrap();
    assert_file_error(read_member(&t, "pkg/data/a.txt"), &t, "zip");
}

fn write_deb(path: &Path, data_name: &str, data: Vec<u8>) {
    let f = std::fs::File::create(path).unwrap();
    let mut ar = ar::Builder::new(f);
    let control = tar_gz(&[("./control", b"Package: x\n")]);
    for (name, body) in [
        ("debian-binary", b"2.0\n".to_vec()),
        ("control.tar.gz", control),
        (data_name, data),
    ] {
        let h = ar::Header::new(name.as_bytes().to_vec(), body.len() as u64);
        ar.append(&h, body.as_slice()).unwrap();
    }
}

#[test]
fn deb_member_round_trip_gz_and_xz() {
    let d = tmp();
    let payload: Vec<u8> = (0..5000u32).map(|v| (v % 251) as u8).collect();
    let entries: [(&str, &[u8]); 2] = [
        ("./usr/share/x/file.bin", &payload),
        ("./usr/share/doc/x/copyright", b"MIT"),
    ];
    let gz = d.path().join("x_1.0_all.deb");
    write_deb(&gz, "data.tar.gz", tar_gz(&entries));
    assert_eq!(read_member(&gz, "usr/share/x/file.bin").unwrap(), payload);
    assert_eq!(
        read_member(&gz, "./usr/share/doc/x/copyright").unwrap(),
        b"MIT"
    );
    // xz, as the real Debian packages use
    let mut xz = Vec::new();
    lzma_rs::xz_compress(&mut std::io::Cursor::new(tar_bytes(&entries)), &mut xz).unwrap();
    let xzp = d.path().join("y_1.0_all.deb");
    write_deb(&xzp, "data.tar.xz", xz.clone());
    assert_eq!(read_member(&xzp, "usr/share/x/file.bin").unwrap(), payload);
    assert_eq!(
        list_members(&xzp).unwrap(),
        vec!["usr/share/x/file.bin", "usr/share/doc/x/copyright"]
    );
    assert_file_error(
        read_member(&xzp, "usr/share/x/nope"),
        &xzp,
        "usr/share/x/nope",
    );
    // corrupt (truncated) xz stream
    let badp = d.path().join("z_1.0_all.deb");
    write_deb(&badp, "data.tar.xz", xz[..xz.len() / 2].to_vec());
    assert_file_error(read_member(&badp, "usr/share/x/file.bin"), &badp, "xz");
    // unsupported compression
    let zst = d.path().join("w_1.0_all.deb");
    write_deb(&zst, "data.tar.zst", vec![0; 10]);
    assert_file_error(read_member(&zst, "a"), &zst, "unsupported compression");
    // not an ar archive
    let junk = d.path().join("j_1.0_all.deb");
    std::fs::write(&junk, b"not an archive at all").unwrap();
    assert!(matches!(read_member(&junk, "a"), Err(Error::File { .. })));
}

#[test]
fn inv3_round_trip_and_errors() {
    let plist = r#"<plist><dict><key>matrix</key><dict><key>dtype</key><string>int16</string>
        <key>filename</key><string>matrix.dat</string><key>shape</key><array><integer>2</integer>
        <integer>3</integer><integer>4</integer></array></dict><key>modality</key><string>CT</string>
        <key>spacing</key><array><real>0.5</real><real>0.5</real><real>1.5</real></array></dict></plist>"#;
    let vals: Vec<i16> = (0..24).map(|v| v * 10 - 1000).collect();
    let raw: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let inv = tar_gz(&[
        ("tmpabc/main.plist", plist.as_bytes()),
        ("tmpabc/matrix.dat", &raw),
    ]);
    let v = read_inv3_bytes(&inv, Path::new("c.inv3")).unwrap();
    assert_eq!(v.dims, [4, 3, 2]);
    // matrix[z][y][x] = vals[x + 4 (y + 3 z)]
    assert_eq!(v.get(1, 2, 1), vals[1 + 4 * (2 + 3)] as f32);
    assert_eq!(v.affine[2][2], 1.5);
    let short = tar_gz(&[
        ("tmpabc/main.plist", plist.as_bytes()),
        ("tmpabc/matrix.dat", &raw[..40]),
    ]);
    assert_file_error(
        read_inv3_bytes(&short, Path::new("s.inv3")),
        Path::new("s.inv3"),
        "matrix.dat",
    );
    let nomatrix = tar_gz(&[("tmpabc/main.plist", plist.as_bytes())]);
    assert_file_error(
        read_inv3_bytes(&nomatrix, Path::new("n.inv3")),
        Path::new("n.inv3"),
        "matrix.dat",
    );
}

#[test]
fn user_folder_and_manifest() {
    let d = tmp();
    let root = d.path().join("ds");
    for (class, n) in [("benign", 2), ("malignant", 3)] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..n {
            let v = if class == "benign" { 50u8 } else { 200u8 };
            let f = root.join(class).join(format!("p{i}__img{i}.png"));
            image::GrayImage::from_pixel(10, 8, image::Luma([v]))
                .save(f)
                .unwrap();
        }
    }
    let set = load_image_folder(&root, 16, "user").unwrap();
    assert_eq!(set.len(), 5);
    assert_eq!(set.class_names, vec!["benign", "malignant"]);
    assert_eq!(set.class_counts(), vec![2, 3]);
    assert_eq!((set.height, set.width), (16, 16));
    assert!((set.pixels_of(0)[0] - 50.0 / 255.0).abs() < 1e-3);
    assert_eq!(set.group_names, vec!["p0", "p1", "p2"]);

    let csv = d.path().join("m.csv");
    std::fs::write(
        &csv,
        "path,label,group\nds/benign/p0__img0.png,b,pa\nds/malignant/p1__img1.png,m,pb\n",
    )
    .unwrap();
    let m = load_csv_manifest(&csv, 8, "csv").unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(m.class_names, vec!["b", "m"]);
    assert_eq!(m.group_names, vec!["pa", "pb"]);
    std::fs::write(&csv, "file,label\nx,y\n").unwrap();
    assert_file_error(load_csv_manifest(&csv, 8, "csv"), &csv, "header");
    std::fs::write(&csv, "path,label,group\nds/none.png,b,pa\n").unwrap();
    assert_file_error(load_csv_manifest(&csv, 8, "csv"), &csv, "line 2");
    std::fs::write(&csv, "path,label,group\nds/benign/p0__img0.png,b\n").unwrap();
    assert_file_error(load_csv_manifest(&csv, 8, "csv"), &csv, "line 2");
    // a mislabelled file: text named .png inside a class folder
    let bad = root.join("benign").join("bad.png");
    std::fs::write(&bad, b"not a png").unwrap();
    assert_file_error(load_image_folder(&root, 16, "user"), &bad, "PNG/JPEG");
}

fn cache() -> Option<PathBuf> {
    match std::env::var_os("SPECTRAL_PACKAGE_CACHE") {
        Some(p) if Path::new(&p).is_dir() => Some(PathBuf::from(p)),
        _ => {
            println!("note: SPECTRAL_PACKAGE_CACHE unset; skipping the checks on the real packaged files");
            None
        }
    }
}

#[test]
fn real_packaged_files() {
    let Some(c) = cache() else { return };
    let nl = c.join("nilearn-0.14.1-py3-none-any.whl");
    let b = read_member(
        &nl,
        "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    )
    .unwrap();
    let v = read_nifti_bytes(&b, &nl).unwrap();
    assert_eq!(v.dims, [197, 233, 189]);
    assert_eq!(v.affine[0], [1.0, 0.0, 0.0, -98.0]);
    assert_eq!(v.affine[1][3], -134.0);

    let pdd = c.join("pydicom_data-1.0.0-py3-none-any.whl");
    let names = [
        "data_store/data/693_UNCR.dcm",
        "data_store/data/RG1_UNCR.dcm",
        "data_store/data/US1_UNCR.dcm",
        "data_store/data/color3d_jpeg_baseline.dcm",
    ];
    let m = read_members(&pdd, &names).unwrap();
    let ct = read_dicom_bytes(&m[0], &pdd).unwrap();
    assert_eq!(
        (ct.rows, ct.columns, ct.modality.as_str()),
        (512, 512, "CT")
    );
    assert_eq!(ct.rescale, (1.0, -1024.0));
    let min = ct.values.iter().copied().fold(f32::INFINITY, f32::min);
    assert!((-3100.0..=-900.0).contains(&min), "air in HU, got {min}");
    let cr = read_dicom_bytes(&m[1], &pdd).unwrap();
    assert!(cr.monochrome1);
    assert_eq!((cr.rows, cr.columns), (1955, 1841));
    let us = read_dicom_bytes(&m[2], &pdd).unwrap();
    assert_eq!((us.rows, us.columns, us.frames), (480, 640, 1));
    let cine = read_dicom_bytes(&m[3], &pdd).unwrap();
    assert_eq!((cine.rows, cine.columns, cine.frames), (480, 640, 120));

    let mr = c.join("mricron-data_1.2.20211006+dfsg-4_all.deb");
    if mr.is_file() {
        let b = read_member(&mr, "usr/share/mricron/templates/aal.nii.gz").unwrap();
        let aal = read_nifti_bytes(&b, &mr).unwrap();
        assert_eq!(aal.dims, [181, 217, 181]);
        assert_eq!(aal.data.iter().copied().fold(0.0f32, f32::max), 116.0);
        let cp =
            String::from_utf8(read_member(&mr, "usr/share/doc/mricron-data/copyright").unwrap())
                .unwrap();
        assert!(cp.contains("BSD-3-clause"));
    } else {
        println!("note: {} not in the cache; skipping", mr.display());
    }
    let inv = c.join("invesalius-examples_3.1.99998-4_all.deb");
    if inv.is_file() {
        let b = read_member(
            &inv,
            "usr/share/doc/invesalius-examples/examples/Cranium.inv3",
        )
        .unwrap();
        let v = read_inv3_bytes(&b, &inv).unwrap();
        assert_eq!(v.dims, [256, 256, 108]);
        let max = v.data.iter().copied().fold(f32::MIN, f32::max);
        assert!(max > 1000.0, "bone in HU, got {max}");
    }
}
