//! `spectral-transfer run` takes its index from --index, SLURM_ARRAY_TASK_ID or
//! JOB_COMPLETION_INDEX (in that order); `grid` lists the runs.

use std::process::Command;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_spectral-transfer"));
    c.env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("JOB_COMPLETION_INDEX");
    c
}

#[test]
fn grid_lists_every_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["--preset", "quick", "--out"])
        .arg(dir.path())
        .arg("grid")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().skip(1).collect();
    // quick: (2 + 1) source-edits x 2 artifacts x 3 levels x 2 folds.
    assert_eq!(lines.len(), 36);
    for (i, l) in lines.iter().enumerate() {
        let cols: Vec<&str> = l.split('\t').collect();
        assert_eq!(cols[0], i.to_string());
        assert_eq!(cols[1].len(), 16);
        assert_eq!(cols[7], "false");
    }
}

/// An index past the grid fails before any work, and says where the index came from.
#[test]
fn index_comes_from_argument_then_slurm_then_kubernetes() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = bin();
        c.args(["--preset", "quick", "--out"])
            .arg(dir.path())
            .arg("run")
            .args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let e = run(
        &["--index", "9001"],
        &[
            ("SLURM_ARRAY_TASK_ID", "9002"),
            ("JOB_COMPLETION_INDEX", "9003"),
        ],
    );
    assert!(e.contains("run 9001") && e.contains("--index"), "{e}");
    let e = run(
        &[],
        &[
            ("SLURM_ARRAY_TASK_ID", "9002"),
            ("JOB_COMPLETION_INDEX", "9003"),
        ],
    );
    assert!(
        e.contains("run 9002") && e.contains("SLURM_ARRAY_TASK_ID"),
        "{e}"
    );
    let e = run(&[], &[("JOB_COMPLETION_INDEX", "9003")]);
    assert!(
        e.contains("run 9003") && e.contains("JOB_COMPLETION_INDEX"),
        "{e}"
    );
    assert!(e.contains("index") && e.contains("36 runs"), "{e}");
    let e = run(&[], &[("SLURM_ARRAY_TASK_ID", "seven")]);
    assert!(
        e.contains("SLURM_ARRAY_TASK_ID") && e.contains("seven"),
        "{e}"
    );
    // Nothing was written.
    assert!(
        !dir.path().join("runs").exists()
            || std::fs::read_dir(dir.path().join("runs")).unwrap().count() == 0
    );
}
