//! Kill the real binary at random moments, rerun, and the collected table equals that of an
//! uninterrupted run (timings aside). A tiny study keeps this to about a minute on 2 cores.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use spectral_transfer::experiment::results;

#[path = "cli_common/mod.rs"]
mod cli_common;
use cli_common::study_cli;

const TINY: &str = include_str!("../presets/quick.toml");

/// The quick preset shrunk further: 2 sources, 1 artifact, 2 levels, 2 folds = 8 runs.
fn tiny_study(dir: &Path) -> std::path::PathBuf {
    let text = TINY
        .replace("name = \"quick\"", "name = \"tiny\"")
        .replace("levels = [0.0, 0.5, 1.0]", "levels = [0.0, 1.0]")
        .replace(
            "edits = [{ kind = \"original\" }, { kind = \"whiten\" }]",
            "edits = [{ kind = \"original\" }]",
        )
        .replace("max_patches = 160", "max_patches = 120")
        .replace("max_patches = 300", "max_patches = 160")
        .replace("max_images = 32", "max_images = 16");
    // Keep only the first artifact.
    let first = text.find("[[artifacts]]").unwrap();
    let second = text[first + 1..].find("[[artifacts]]").unwrap() + first + 1;
    let end = text.find("[model]").unwrap();
    let text = format!("{}{}", &text[..second], &text[end..]);
    let path = dir.join("tiny.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn bin(study: &Path, out: &Path) -> Command {
    let mut c = study_cli(study, out);
    c.env("RAYON_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn run_to_end(study: &Path, out: &Path) {
    let o = bin(study, out).arg("run").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn collected(study: &Path, out: &Path) -> polars::prelude::DataFrame {
    let o = bin(study, out).arg("collect").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let df = results::read_parquet(&out.join("results.parquet")).unwrap();
    df.drop_many(results::timing_columns(&df))
}

fn no_partial_files(dir: &Path) {
    for sub in ["runs", "pretrained"] {
        let Ok(rd) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.ends_with(".parquet") {
                // Every result file that exists is complete and readable.
                results::read_parquet(&e.path()).unwrap_or_else(|err| panic!("{name}: {err}"));
            }
        }
    }
}

#[test]
fn killed_runs_resume_to_the_uninterrupted_table() {
    let tmp = tempfile::tempdir().unwrap();
    let study = tiny_study(tmp.path());
    let reference_dir = tmp.path().join("reference");
    let t = Instant::now();
    run_to_end(&study, &reference_dir);
    let full_secs = t.elapsed().as_secs_f64();
    let reference = collected(&study, &reference_dir);
    assert_eq!(reference.height(), 8);

    let killed_dir = tmp.path().join("killed");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut kills = 0;
    for _ in 0..4 {
        let mut child = bin(&study, &killed_dir).arg("run").spawn().unwrap();
        let wait = rng.random_range(0.05..0.6) * full_secs;
        let deadline = Instant::now() + Duration::from_secs_f64(wait);
        while Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL: no chance to clean up
            kills += 1;
        }
        child.wait().unwrap();
        no_partial_files(&killed_dir);
        // A partial table can be collected at any point.
        let partial = collected(&study, &killed_dir);
        assert!(partial.height() <= 8);
    }
    assert!(
        kills > 0,
        "the study finished before any kill; the test proves nothing"
    );
    run_to_end(&study, &killed_dir);
    let resumed = collected(&study, &killed_dir);
    assert_eq!(resumed.height(), 8);
    assert!(
        resumed.equals_missing(&reference),
        "resumed table differs from the uninterrupted one:\n{resumed}\n{reference}"
    );
    // A rerun of a finished study executes nothing.
    let o = bin(&study, &killed_dir).arg("run").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("8 were done, 0 executed"), "{err}");
}
