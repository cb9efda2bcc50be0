//! Grid expansion, run ids and study validation.

use spectral_transfer::experiment::{expand, stable_id, Study};

fn study_text() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/presets/embedded.toml"
    ))
    .unwrap()
}

#[test]
fn presets_parse_and_validate() {
    for name in ["embedded", "quick", "paper"] {
        let path = format!("{}/presets/{name}.toml", env!("CARGO_MANIFEST_DIR"));
        let s =
            Study::from_file(std::path::Path::new(&path)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(s.name, name);
        assert!(!expand(&s).unwrap().is_empty());
    }
}

#[test]
fn grid_is_the_full_product_in_order() {
    let s = Study::from_toml(&study_text()).unwrap();
    let runs = expand(&s).unwrap();
    let edits: usize = s.sources.iter().map(|x| x.edits.len()).sum();
    assert_eq!(
        runs.len(),
        edits * s.artifacts.len() * s.levels.len() * s.folds
    );
    for (i, r) in runs.iter().enumerate() {
        assert_eq!(r.index, i);
    }
    // Innermost axis is the fold, then the level.
    assert_eq!((runs[0].fold, runs[1].fold), (0, 1));
    assert_eq!(runs[s.folds].level, s.levels[1]);
    // Every id is distinct, and runs of one source + edit share one pre-training.
    let mut ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), runs.len());
    let pre = spectral_transfer::experiment::grid::pretrain_jobs(&runs);
    assert_eq!(pre.len(), edits);
}

#[test]
fn ids_are_stable_and_depend_only_on_the_run() {
    let s = Study::from_toml(&study_text()).unwrap();
    let a = expand(&s).unwrap();
    // Same study parsed again: same ids.
    let b = expand(&Study::from_toml(&study_text()).unwrap()).unwrap();
    assert_eq!(
        a.iter().map(|r| &r.id).collect::<Vec<_>>(),
        b.iter().map(|r| &r.id).collect::<Vec<_>>()
    );
    // Renaming the study, or adding a level, keeps the ids of the existing runs.
    let mut t = s.clone();
    t.name = "renamed".into();
    t.levels.push(0.35);
    let c = expand(&t).unwrap();
    for r in &a {
        assert!(c
            .iter()
            .any(|x| x.id == r.id && x.level == r.level && x.fold == r.fold));
    }
    // Changing the seed or the fine-tuning budget changes every id.
    let mut u = s.clone();
    u.seed += 1;
    let d = expand(&u).unwrap();
    assert!(a.iter().zip(&d).all(|(x, y)| x.id != y.id));
    let mut v = s.clone();
    v.finetune.lr *= 2.0;
    assert!(a
        .iter()
        .zip(expand(&v).unwrap().iter())
        .all(|(x, y)| x.id != y.id));
    // The id is SHA-256 of canonical JSON: a pinned value guards against accidental changes to
    // the hashing itself (not to the config, whose changes are meant to change ids).
    assert_eq!(
        stable_id(&serde_json::json!({"b": 1, "a": [1.5, "x"]})).unwrap(),
        "27edd5497e48a293"
    );
}

#[test]
fn bad_studies_name_the_field() {
    let cases = [
        (
            "levels = [0.0, 0.1, 0.2, 0.5, 0.8, 1.0]",
            "levels = [0.0, 1.5]",
            "levels",
        ),
        ("folds = 5", "folds = 1", "folds"),
        ("base_width = 4", "base_width = 0", "model.base_width"),
        ("arch = \"resnet18\"", "arch = \"vgg\"", "model.arch"),
        ("name = \"medical\"", "name = \"natural\"", "sources.name"),
        ("max_patches = 900", "max_patches = 0", "target.max_patches"),
    ];
    for (from, to, field) in cases {
        let text = study_text().replacen(from, to, 1);
        assert_ne!(text, study_text(), "{from}");
        let e = Study::from_toml(&text).unwrap_err().to_string();
        assert!(e.contains(field), "{field}: {e}");
    }
    let e =
        Study::from_toml(&study_text().replace("[finetune]", "[finetune]\nbogus = 1")).unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");
}
