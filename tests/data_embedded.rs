//! The committed embedded sets: they load offline, have the documented counts, balance, ranges
//! and groups; corrupt copies are rejected; montages are written; and (with
//! SPECTRAL_PACKAGE_CACHE) a rebuild from the registry packages is bit-identical.

use std::path::{Path, PathBuf};

use spectral_transfer::data::embedded::set_paths;
use spectral_transfer::data::{
    build_embedded, default_data_dir, list_embedded, load_embedded, montage_png, BuildConfig,
    EmbeddedSet,
};
use spectral_transfer::Error;

const COMMITTED: [EmbeddedSet; 3] = [
    EmbeddedSet::Natural,
    EmbeddedSet::Medical,
    EmbeddedSet::Target,
];

#[test]
fn committed_sets_load_with_documented_shape() {
    let dir = default_data_dir();
    for which in COMMITTED {
        let set = load_embedded(which, &dir).unwrap();
        assert_eq!((set.height, set.width), (32, 32), "{which:?}");
        assert!(set.pixels.iter().all(|v| (0.0..=1.0).contains(v)));
        let counts = set.class_counts();
        assert!(
            counts.iter().all(|&c| c > 0),
            "{which:?}: empty class in {counts:?}"
        );
        match which {
            EmbeddedSet::Natural => {
                assert_eq!(set.len(), 6000);
                assert_eq!(set.num_classes(), 13);
                // label = photo: quotas differ by at most one
                assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1);
            }
            EmbeddedSet::Medical => {
                assert_eq!(set.len(), 8000);
                assert!(set.num_classes() >= 12);
                assert!(!set.class_names.iter().any(|c| c.contains("colin")));
            }
            EmbeddedSet::Target => {
                assert_eq!(set.class_names, vec!["cerebrum", "cerebellum"]);
                assert_eq!(counts[0], counts[1], "target classes are balanced");
                assert!(set.len() >= 2000, "{}", set.len());
                // enough slice blocks holding each class for 5-fold group splits
                for class in 0..2u32 {
                    let mut g: Vec<u32> = (0..set.len())
                        .filter(|&i| set.labels[i] == class)
                        .map(|i| set.groups[i])
                        .collect();
                    g.sort();
                    g.dedup();
                    assert!(g.len() >= 5, "class {class} in only {} blocks", g.len());
                }
            }
            EmbeddedSet::TargetAal => unreachable!(),
        }
        // patches are not blank: a real mix of contrast
        let flat = (0..set.len())
            .filter(|&i| {
                let p = set.pixels_of(i);
                let m = p.iter().sum::<f32>() / p.len() as f32;
                p.iter().map(|v| (v - m).abs()).sum::<f32>() / (p.len() as f32) < 1e-3
            })
            .count();
        assert!(flat * 50 < set.len(), "{which:?}: {flat} flat patches");
    }
}

#[test]
fn list_reports_counts_and_sizes() {
    let list = list_embedded(&default_data_dir()).unwrap();
    let mut total = 0;
    for s in &list {
        if s.committed {
            assert!(s.available, "{:?} missing", s.set);
            assert_eq!(s.classes.iter().map(|c| c.1).sum::<usize>(), s.count);
            total += s.bytes_on_disk;
        }
    }
    assert!(total < 40 * 1024 * 1024, "committed data is {total} bytes");
}

#[test]
fn corrupt_or_missing_sets_are_rejected() {
    let d = tempfile::tempdir().unwrap();
    let (st, js) = set_paths(EmbeddedSet::Target, &default_data_dir());
    let (st2, js2) = set_paths(EmbeddedSet::Target, d.path());
    std::fs::copy(&js, &js2).unwrap();
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st2, &bytes[..bytes.len() - 1000]).unwrap();
    let err = load_embedded(EmbeddedSet::Target, d.path()).unwrap_err();
    assert!(
        matches!(&err, Error::File { path, reason } if *path == st2 && reason.contains("sha256")),
        "{err}"
    );
    // a sidecar whose counts disagree with the file
    std::fs::write(&st2, &bytes).unwrap();
    let text = std::fs::read_to_string(&js).unwrap();
    std::fs::write(
        &js2,
        text.replacen(
            "\"format\": \"spectral-transfer-patches/1\"",
            "\"format\": \"other\"",
            1,
        ),
    )
    .unwrap();
    let err = load_embedded(EmbeddedSet::Target, d.path()).unwrap_err();
    assert!(err.to_string().contains("format"), "{err}");
    std::fs::write(&js2, "{ not json").unwrap();
    assert!(matches!(
        load_embedded(EmbeddedSet::Target, d.path()),
        Err(Error::File { .. })
    ));
    // missing set: the message says how to get it
    let err = load_embedded(EmbeddedSet::TargetAal, d.path()).unwrap_err();
    assert!(err.to_string().contains("data build"), "{err}");
}

#[test]
fn montages_have_one_row_per_class() {
    let d = tempfile::tempdir().unwrap();
    let set = load_embedded(EmbeddedSet::Target, &default_data_dir()).unwrap();
    let p = d.path().join("m.png");
    montage_png(&set, &p, 12, 1).unwrap();
    let img = image::open(&p).unwrap();
    assert_eq!((img.width(), img.height()), (12 * 34 + 2, 2 * 34 + 2));
    assert!(montage_png(&set, &p, 0, 1).is_err());
    // write all three to a fixed place so a person can look at them
    if let Some(out) = std::env::var_os("SPECTRAL_MONTAGE_DIR") {
        for which in COMMITTED {
            let s = load_embedded(which, &default_data_dir()).unwrap();
            montage_png(
                &s,
                &Path::new(&out).join(format!("{}.png", which.stem())),
                16,
                0,
            )
            .unwrap();
        }
    }
}

#[test]
fn rebuild_from_packages_is_bit_identical() {
    let Some(cache) = std::env::var_os("SPECTRAL_PACKAGE_CACHE").map(PathBuf::from) else {
        println!("note: SPECTRAL_PACKAGE_CACHE unset; skipping the rebuild of the embedded sets (run scripts/fetch-packages.sh DIR and set it)");
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let report = build_embedded(&cache, d.path(), &BuildConfig::default()).unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    for which in COMMITTED {
        let (a_st, a_js) = set_paths(which, &default_data_dir());
        let (b_st, b_js) = set_paths(which, d.path());
        assert!(
            std::fs::read(&a_st).unwrap() == std::fs::read(&b_st).unwrap(),
            "{which:?}: safetensors differ from the committed file"
        );
        assert_eq!(
            std::fs::read_to_string(&a_js).unwrap(),
            std::fs::read_to_string(&b_js).unwrap(),
            "{which:?}: sidecar differs"
        );
    }
    // the committed target labels agree with AAL-derived labels where both are defined
    let aal = load_embedded(EmbeddedSet::TargetAal, d.path()).unwrap();
    assert_eq!(aal.class_counts()[0], aal.class_counts()[1]);
    let note = &report.notes[0];
    let pct: f64 = note
        .split("both: ")
        .nth(1)
        .unwrap()
        .split('%')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(pct >= 97.0, "{note}");
}

/// Regenerates the committed sets in `data/` (and the set-up-only `target-aal`):
/// `SPECTRAL_PACKAGE_CACHE=DIR cargo test --test data_embedded -- --ignored write_committed_sets`
/// (the CLI's `spectral-transfer data build` calls the same function).
#[test]
#[ignore]
fn write_committed_sets() {
    let cache = PathBuf::from(
        std::env::var_os("SPECTRAL_PACKAGE_CACHE").expect("set SPECTRAL_PACKAGE_CACHE"),
    );
    let report = build_embedded(&cache, &default_data_dir(), &BuildConfig::default()).unwrap();
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
