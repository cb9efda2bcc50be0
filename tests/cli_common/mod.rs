//! The real binary on a study file, for the CLI tests.

use std::path::Path;
use std::process::Command;

/// `spectral-transfer --preset STUDY --out OUT`, with the array-job index variables removed so
/// that `run` does all the runs; each test adds its own environment.
pub fn study_cli(study: &Path, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_spectral-transfer"));
    c.arg("--preset")
        .arg(study)
        .arg("--out")
        .arg(out)
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("JOB_COMPLETION_INDEX");
    c
}
