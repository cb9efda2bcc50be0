//! The quick reproduction end to end: `spectral-transfer reproduce --quick` writes the table, the
//! figures and a report that states the four claims with numbers.

use std::process::Command;

use spectral_transfer::experiment::results;

#[test]
fn quick_reproduction_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("results");
    let o = Command::new(env!("CARGO_BIN_EXE_spectral-transfer"))
        .args(["reproduce", "--quick", "--out"])
        .arg(&out)
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("JOB_COMPLETION_INDEX")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let rows =
        results::from_frame(&results::read_parquet(&out.join("results.parquet")).unwrap()).unwrap();
    assert_eq!(rows.len(), 36);
    for r in &rows {
        for auc in [r.auc_iid, r.auc_ood, r.auc_clean] {
            assert!((0.0..=1.0).contains(&auc), "{auc}");
        }
        assert_eq!(r.omega.len(), r.psd_finetuned.len());
        assert_eq!(r.omega.len(), r.psd_pretrained.len());
        assert_eq!(r.omega.len(), r.psd_artifact.len());
        assert!(r.psd_finetuned.iter().all(|v| v.is_finite()));
    }
    for f in ["fig1_spectrum", "fig3a_pretrained_psd", "fig4_ood_editing"] {
        assert!(
            out.join("figures").join(format!("{f}.png")).is_file(),
            "{f}"
        );
        assert!(
            out.join("figures").join(format!("{f}.svg")).is_file(),
            "{f}"
        );
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for k in 1..=4 {
        assert!(md.contains(&format!("### Claim {k}")), "{md}");
    }
    assert!(md.contains("Runs in the table: 36 of 36"), "{md}");
    assert!(err.contains("summary of `quick`"), "{err}");
}
