//! The report's verdicts follow the table: a table built to agree with a claim supports it, one
//! built to contradict it does not.

#[path = "experiment_common/mod.rs"]
mod common;
use common::{fake_result, study};

use spectral_transfer::experiment::report::{self, Verdict};
use spectral_transfer::experiment::{expand, results::RunResult};

/// Natural models favour high frequencies, medical ones low; the fine-tuned curves keep that
/// with a small fold-dependent wobble; the artifact sits at high frequencies; the natural
/// model loses more O.O.D. AUC; whitening moves natural's curve and halves its loss.
fn shaped(agree: bool) -> Vec<RunResult> {
    expand(&study())
        .unwrap()
        .iter()
        .map(|run| {
            let mut r = fake_result(run);
            let w = r.omega.clone();
            let natural = r.source == "natural";
            let whitened = r.edit != "original";
            let slope = if !agree {
                2.0
            } else if natural {
                0.5
            } else {
                4.0
            };
            let slope = if whitened { slope * 0.2 } else { slope };
            r.psd_pretrained = w.iter().map(|x| (-slope * x).exp()).collect();
            let wobble = 0.01 * (r.fold as f64 + 1.0);
            r.psd_finetuned = w
                .iter()
                .map(|x| (-slope * x).exp() + wobble * (7.0 * x).sin())
                .collect();
            r.psd_artifact = w.iter().map(|x| x * x).collect();
            r.alignment_pretrained = if natural { 0.9 } else { 0.3 };
            let drop = if !agree {
                0.1
            } else if natural && !whitened {
                0.6
            } else if natural {
                0.3
            } else {
                0.1
            };
            let drop = if agree {
                drop
            } else if natural {
                0.05
            } else {
                0.4
            };
            r.auc_ood = 0.9 - drop * r.level + 0.001 * r.fold as f64;
            r
        })
        .collect()
}

#[test]
fn verdicts_follow_the_table() {
    let yes = report::claims(&shaped(true));
    assert_eq!(yes.len(), 4);
    for c in &yes {
        assert_eq!(
            c.verdict,
            Verdict::Supported,
            "{}: {:?}",
            c.statement,
            c.evidence
        );
    }
    let no = report::claims(&shaped(false));
    // Identical sources: no PSD difference, so claims 1 and 2 fail; the more aligned source
    // (natural) loses less, so claim 3 fails.
    assert_eq!(no[0].verdict, Verdict::NotSupported, "{:?}", no[0].evidence);
    assert_eq!(no[1].verdict, Verdict::NotSupported, "{:?}", no[1].evidence);
    assert_eq!(no[2].verdict, Verdict::NotSupported, "{:?}", no[2].evidence);
}

#[test]
fn markdown_states_each_claim_with_numbers() {
    let rows = shaped(true);
    let info = report::RunInfo {
        study: "quick".into(),
        runs_done: rows.len(),
        runs_total: rows.len(),
        ..Default::default()
    };
    let md = report::to_markdown(&rows, &info);
    for k in 1..=4 {
        assert!(md.contains(&format!("### Claim {k}")), "{md}");
    }
    assert!(md.contains("supported"));
    assert!(md.contains("d(natural, medical)"));
    // One source only: the comparisons are untestable, not "supported".
    let single: Vec<RunResult> = rows.into_iter().filter(|r| r.source == "natural").collect();
    let c = report::claims(&single);
    assert_eq!(c[0].verdict, Verdict::Untestable);
    assert_eq!(c[2].verdict, Verdict::Untestable);
}

#[test]
fn markdown_compares_the_networks_with_the_baseline() {
    // the rows of the baseline table start with the source (the shortcut table's with the artifact)
    fn baseline_rows(md: &str) -> Vec<&str> {
        md.lines()
            .filter(|l| l.starts_with("| natural |") || l.starts_with("| medical |"))
            .collect()
    }
    let rows = shaped(true);
    let md = report::to_markdown(&rows, &report::RunInfo::default());
    assert!(md.contains("against a patch-statistics baseline"), "{md}");
    // the fixture's clean AUC 0.85 against the baseline's 0.80: every source and edit beats it
    let yes = baseline_rows(&md);
    assert_eq!(yes.len(), 3, "{md}");
    assert!(
        yes.iter()
            .all(|l| l.contains("| 0.850 ± 0.000 | 0.800 ± 0.000 |") && l.ends_with("| yes |")),
        "{yes:?}"
    );
    // a baseline above the network is reported as not beaten
    let worse: Vec<RunResult> = rows
        .into_iter()
        .map(|mut r| {
            r.auc_baseline_clean = 0.9;
            r
        })
        .collect();
    let md = report::to_markdown(&worse, &report::RunInfo::default());
    let no = baseline_rows(&md);
    assert_eq!(no.len(), 3, "{md}");
    assert!(
        no.iter()
            .all(|l| l.contains("| 0.850 ± 0.000 | 0.900 ± 0.000 |") && l.ends_with("| no |")),
        "{no:?}"
    );
}
