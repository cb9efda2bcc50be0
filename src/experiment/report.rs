//! `report.md`: each of the paper's claims (method.md, "What the paper reports"), tested against
//! THIS run's table with a criterion stated next to the numbers. Nothing is hard-coded: every
//! verdict and number is computed from the rows.

use std::fmt::Write as _;

use super::analysis::{
    auc_curves, centroid, clean_finetuned, distinct, fold_noise, mean_sd, ood_loss_per_fold,
    psd_distance, TestSet,
};
use super::figures::ORIGINAL;
use super::results::RunResult;

/// A claim's verdict on this run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Supported,
    NotSupported,
    /// The table lacks what the test needs (e.g. one source only, no edits).
    Untestable,
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Supported => "**supported**",
            Verdict::NotSupported => "**not supported**",
            Verdict::Untestable => "**not testable with this table**",
        }
    }
}

/// One claim, its criterion, the evidence and the verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct Claim {
    pub statement: String,
    pub criterion: String,
    pub evidence: Vec<String>,
    pub verdict: Verdict,
}

fn f3(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "n/a".into()
    }
}

/// The unedited sources in table order.
fn sources(results: &[RunResult]) -> Vec<String> {
    distinct(
        results
            .iter()
            .filter(|r| r.edit == ORIGINAL)
            .map(|r| r.source.clone()),
    )
}

fn pre_psd<'a>(results: &'a [RunResult], source: &str, edit: &str) -> Option<&'a RunResult> {
    results
        .iter()
        .find(|r| r.source == source && r.edit == edit)
}

/// Mean fold noise over the given (source, edit) pairs.
fn noise(results: &[RunResult], keys: &[(String, String)]) -> f64 {
    let v: Vec<f64> = keys
        .iter()
        .map(|(s, e)| fold_noise(&clean_finetuned(results, s, e)))
        .collect();
    mean_sd(&v).0
}

/// Claim 1: the pre-trained PSDs of the sources differ.
pub fn claim_psd_differs(results: &[RunResult]) -> Claim {
    let srcs = sources(results);
    let statement =
        "Gradient PSDs of models pre-trained on natural and on medical images differ.".into();
    let criterion = "PSD distance d (mean |Δ| over rings of the normalised curves) between the \
        pre-trained models of the first two sources exceeds the fold noise (mean d between two folds' \
        fine-tuned models of the same source at p = 0: the difference two identically trained \
        models show)."
        .into();
    if srcs.len() < 2 {
        return Claim {
            statement,
            criterion,
            evidence: vec![format!("only {} unedited source(s)", srcs.len())],
            verdict: Verdict::Untestable,
        };
    }
    let (a, b) = (&srcs[0], &srcs[1]);
    let (ra, rb) = (pre_psd(results, a, ORIGINAL), pre_psd(results, b, ORIGINAL));
    let (Some(ra), Some(rb)) = (ra, rb) else {
        return Claim {
            statement,
            criterion,
            evidence: vec!["no pre-trained PSD".into()],
            verdict: Verdict::Untestable,
        };
    };
    let d = psd_distance(&ra.psd_pretrained, &rb.psd_pretrained);
    let nz = noise(
        results,
        &[(a.clone(), ORIGINAL.into()), (b.clone(), ORIGINAL.into())],
    );
    let (ca, cb) = (
        centroid(&ra.omega, &ra.psd_pretrained),
        centroid(&rb.omega, &rb.psd_pretrained),
    );
    let verdict = if !(d.is_finite() && nz.is_finite()) {
        Verdict::Untestable
    } else if d > nz {
        Verdict::Supported
    } else {
        Verdict::NotSupported
    };
    Claim {
        statement,
        criterion,
        evidence: vec![
            format!(
                "d({a}, {b}) pre-trained = {}; fold noise = {}",
                f3(d),
                f3(nz)
            ),
            format!(
                "spectral centroid ω̄: {a} {}, {b} {} (higher = more weight on high frequencies)",
                f3(ca),
                f3(cb)
            ),
        ],
        verdict,
    }
}

/// Claim 2: the difference mostly persists after fine-tuning.
pub fn claim_persists(results: &[RunResult]) -> Claim {
    let srcs = sources(results);
    let statement =
        "The difference between the sources' PSDs mostly persists after fine-tuning.".into();
    let criterion = "At p = 0, fold by fold, the fine-tuned models of the two sources are further \
        apart (mean d over folds) than two folds of one source (fold noise), and the sign of the \
        centroid difference is the one the pre-trained models had."
        .into();
    if srcs.len() < 2 {
        return Claim {
            statement,
            criterion,
            evidence: vec![format!("only {} unedited source(s)", srcs.len())],
            verdict: Verdict::Untestable,
        };
    }
    let (a, b) = (&srcs[0], &srcs[1]);
    let (fa, fb) = (
        clean_finetuned(results, a, ORIGINAL),
        clean_finetuned(results, b, ORIGINAL),
    );
    let mut between = Vec::new();
    let mut dc = Vec::new();
    for ra in &fa {
        if let Some(rb) = fb.iter().find(|r| r.fold == ra.fold) {
            between.push(psd_distance(&ra.psd_finetuned, &rb.psd_finetuned));
            dc.push(
                centroid(&ra.omega, &ra.psd_finetuned) - centroid(&rb.omega, &rb.psd_finetuned),
            );
        }
    }
    let (db, db_sd) = mean_sd(&between);
    let nz = noise(
        results,
        &[(a.clone(), ORIGINAL.into()), (b.clone(), ORIGINAL.into())],
    );
    let (dcm, dcs) = mean_sd(&dc);
    let pre_dc = match (pre_psd(results, a, ORIGINAL), pre_psd(results, b, ORIGINAL)) {
        (Some(x), Some(y)) => {
            centroid(&x.omega, &x.psd_pretrained) - centroid(&y.omega, &y.psd_pretrained)
        }
        _ => f64::NAN,
    };
    let d_pre = match (pre_psd(results, a, ORIGINAL), pre_psd(results, b, ORIGINAL)) {
        (Some(x), Some(y)) => psd_distance(&x.psd_pretrained, &y.psd_pretrained),
        _ => f64::NAN,
    };
    let verdict = if between.is_empty() || !nz.is_finite() {
        Verdict::Untestable
    } else if db > nz && dcm.signum() == pre_dc.signum() {
        Verdict::Supported
    } else {
        Verdict::NotSupported
    };
    Claim {
        statement,
        criterion,
        evidence: vec![
            format!(
                "d({a}, {b}) fine-tuned at p = 0 = {} ± {} over {} folds (pre-trained: {}); fold noise = {}",
                f3(db),
                f3(db_sd),
                between.len(),
                f3(d_pre),
                f3(nz)
            ),
            format!(
                "centroid difference {a} − {b}: pre-trained {}, fine-tuned {} ± {}",
                f3(pre_dc),
                f3(dcm),
                f3(dcs)
            ),
        ],
        verdict,
    }
}

/// Claim 3: the model whose priority overlaps the artifact's PSD loses the most O.O.D. AUC.
pub fn claim_overlap_loses(results: &[RunResult]) -> Claim {
    let srcs = sources(results);
    let artifacts = distinct(results.iter().map(|r| r.artifact.clone()));
    let statement =
        "The model whose high-priority band overlaps the artifact's PSD loses the most \
        O.O.D. AUC as degradation grows."
            .into();
    let criterion = "Per artifact, among the unedited sources: the source with the highest alignment \
        (spectrum::alignment of its pre-trained PSD with the artifact-residual PSD) has the largest \
        O.O.D. loss (AUC at p = 0 minus the mean over p > 0, mean over folds). Supported when this \
        holds for more than half of the artifacts."
        .into();
    if srcs.len() < 2 {
        return Claim {
            statement,
            criterion,
            evidence: vec![format!("only {} unedited source(s)", srcs.len())],
            verdict: Verdict::Untestable,
        };
    }
    let mut evidence = Vec::new();
    let (mut hits, mut tested) = (0, 0);
    for a in &artifacts {
        let mut rows = Vec::new();
        for s in &srcs {
            let align = results
                .iter()
                .find(|r| &r.source == s && r.edit == ORIGINAL && &r.artifact == a)
                .map(|r| r.alignment_pretrained)
                .unwrap_or(f64::NAN);
            let losses: Vec<f64> = ood_loss_per_fold(results, s, ORIGINAL, a)
                .into_iter()
                .map(|x| x.1)
                .collect();
            let (m, sd) = mean_sd(&losses);
            rows.push((s.clone(), align, m, sd));
        }
        let valid: Vec<_> = rows
            .iter()
            .filter(|r| r.1.is_finite() && r.2.is_finite())
            .collect();
        let line = rows
            .iter()
            .map(|(s, al, m, sd)| {
                format!(
                    "{s}: alignment {}, O.O.D. loss {} ± {}",
                    f3(*al),
                    f3(*m),
                    f3(*sd)
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        if valid.len() >= 2 {
            tested += 1;
            let most_aligned = valid
                .iter()
                .max_by(|x, y| x.1.total_cmp(&y.1))
                .map(|r| &r.0);
            let most_loss = valid
                .iter()
                .max_by(|x, y| x.2.total_cmp(&y.2))
                .map(|r| &r.0);
            let hit = most_aligned == most_loss;
            if hit {
                hits += 1;
            }
            evidence.push(format!(
                "{a}: {line} → {}",
                if hit { "matches" } else { "does not match" }
            ));
        } else {
            evidence.push(format!("{a}: {line} → not enough levels"));
        }
    }
    let verdict = if tested == 0 {
        Verdict::Untestable
    } else if 2 * hits > tested {
        Verdict::Supported
    } else {
        Verdict::NotSupported
    };
    evidence.push(format!("{hits} of {tested} artifacts match"));
    Claim {
        statement,
        criterion,
        evidence,
        verdict,
    }
}

/// Claim 4: editing the source shifts the PSD and changes the O.O.D. loss.
pub fn claim_editing(results: &[RunResult]) -> Claim {
    let statement = "Editing the source data shifts the PSD and changes that loss.".into();
    let criterion = "For an edited source: the pre-trained PSD moves by more than the fold noise \
        (d(original, edited) > noise), and for at least one artifact the O.O.D. loss changes by more \
        than twice its standard error over folds (paired by fold). Supported when some edit meets both."
        .into();
    let edited = distinct(
        results
            .iter()
            .filter(|r| r.edit != ORIGINAL)
            .map(|r| (r.source.clone(), r.edit.clone())),
    );
    if edited.is_empty() {
        return Claim {
            statement,
            criterion,
            evidence: vec!["no edited source in this table".into()],
            verdict: Verdict::Untestable,
        };
    }
    let artifacts = distinct(results.iter().map(|r| r.artifact.clone()));
    let mut evidence = Vec::new();
    let mut any = false;
    let mut tested = false;
    for (s, e) in &edited {
        let (Some(o), Some(x)) = (pre_psd(results, s, ORIGINAL), pre_psd(results, s, e)) else {
            continue;
        };
        let d = psd_distance(&o.psd_pretrained, &x.psd_pretrained);
        let nz = noise(
            results,
            &[(s.clone(), ORIGINAL.into()), (s.clone(), e.clone())],
        );
        let shift = centroid(&x.omega, &x.psd_pretrained) - centroid(&o.omega, &o.psd_pretrained);
        let moved = d > nz;
        let mut changed = false;
        let mut parts = Vec::new();
        for a in &artifacts {
            let lo = ood_loss_per_fold(results, s, ORIGINAL, a);
            let le = ood_loss_per_fold(results, s, e, a);
            let diffs: Vec<f64> = le
                .iter()
                .filter_map(|(f, v)| lo.iter().find(|(g, _)| g == f).map(|(_, w)| v - w))
                .collect();
            if diffs.len() < 2 {
                continue;
            }
            tested = true;
            let (m, sd) = mean_sd(&diffs);
            let se = sd / (diffs.len() as f64).sqrt();
            let sig = m.abs() > 2.0 * se;
            changed |= sig;
            parts.push(format!(
                "{a}: Δloss {} ± {} (SE){}",
                f3(m),
                f3(se),
                if sig { " *" } else { "" }
            ));
        }
        any |= moved && changed;
        evidence.push(format!(
            "{s} ({e}): d(original, edited) = {} vs fold noise {}; centroid shift {}; {}",
            f3(d),
            f3(nz),
            f3(shift),
            if parts.is_empty() {
                "no paired folds".into()
            } else {
                parts.join(", ")
            }
        ));
    }
    let verdict = if !tested {
        Verdict::Untestable
    } else if any {
        Verdict::Supported
    } else {
        Verdict::NotSupported
    };
    Claim {
        statement,
        criterion,
        evidence,
        verdict,
    }
}

/// All four claims.
pub fn claims(results: &[RunResult]) -> Vec<Claim> {
    vec![
        claim_psd_differs(results),
        claim_persists(results),
        claim_overlap_loses(results),
        claim_editing(results),
    ]
}

/// Extra facts for the report's header.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunInfo {
    pub study: String,
    pub runs_done: usize,
    pub runs_total: usize,
    pub wall_time_s: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    pub figures: Vec<String>,
}

/// The report as Markdown.
pub fn to_markdown(results: &[RunResult], info: &RunInfo) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Report: study `{}`\n", info.study);
    let _ = writeln!(
        md,
        "Runs in the table: {} of {}.{}{}\n",
        info.runs_done,
        info.runs_total,
        info.wall_time_s
            .map(|t| format!(" Wall time of this reproduction: {:.0} s.", t))
            .unwrap_or_default(),
        info.peak_rss_mib
            .map(|m| format!(" Peak memory (max RSS): {:.0} MiB.", m))
            .unwrap_or_default()
    );
    let _ = writeln!(
        md,
        "Every number below is computed from `results.parquet` by `experiment::report`; the \
         verdicts are this run's, with the criterion stated. AUC is the positive-class ROC AUC.\n"
    );
    // The shortcut itself, as context: does O.O.D. AUC fall and I.I.D. stay up?
    let _ = writeln!(md, "## The shortcut (context)\n");
    let _ = writeln!(
        md,
        "| artifact | source | edit | O.O.D. AUC p=min | O.O.D. AUC p=max | I.I.D. AUC p=max | clean AUC p=0 |\n|---|---|---|---|---|---|---|"
    );
    for a in distinct(results.iter().map(|r| r.artifact.clone())) {
        let ood = auc_curves(results, &a, TestSet::Ood);
        let iid = auc_curves(results, &a, TestSet::Iid);
        let clean = auc_curves(results, &a, TestSet::Clean);
        for ((o, i), c) in ood.iter().zip(&iid).zip(&clean) {
            let cell = |m: &[f64], s: &[f64], k: usize| {
                m.get(k)
                    .map(|v| format!("{} ± {}", f3(*v), f3(s[k])))
                    .unwrap_or_else(|| "n/a".into())
            };
            let last = o.levels.len().saturating_sub(1);
            let _ = writeln!(
                md,
                "| {a} | {} | {} | {} (p={}) | {} (p={}) | {} | {} |",
                o.source,
                o.edit,
                cell(&o.mean, &o.sd, 0),
                o.levels.first().copied().unwrap_or(f64::NAN),
                cell(&o.mean, &o.sd, last),
                o.levels.last().copied().unwrap_or(f64::NAN),
                cell(&i.mean, &i.sd, last),
                cell(&c.mean, &c.sd, 0),
            );
        }
    }
    baseline_section(&mut md, results);
    let _ = writeln!(md, "\n## The paper's claims\n");
    for (k, c) in claims(results).iter().enumerate() {
        let _ = writeln!(md, "### Claim {}: {}\n", k + 1, c.statement);
        let _ = writeln!(md, "Verdict on this run: {}.\n", c.verdict.word());
        let _ = writeln!(md, "Criterion: {}\n", c.criterion);
        for e in &c.evidence {
            let _ = writeln!(md, "- {e}");
        }
        let _ = writeln!(md);
    }
    if !info.figures.is_empty() {
        let _ = writeln!(md, "## Figures\n");
        for f in &info.figures {
            let _ = writeln!(md, "- `figures/{f}.png` (and `.svg`)");
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "## Definitions\n\nPSD curves are the radially averaged amplitude spectra of the input \
         gradient (method.md Eq. 1-2), min-max normalised per image and averaged over at most \
         `psd.max_images` clean test images. d(a, b) = mean over rings of |a_k − b_k|. Spectral \
         centroid = Σ ω_k a_k / Σ a_k. O.O.D. loss (one fold) = AUC_ood(p=0) − mean over p>0 of \
         AUC_ood(p). Alignment: `spectrum::alignment`, documented there.\n"
    );
    md
}

/// The networks' clean-test AUC at the lowest degradation level against the floor they must
/// beat (logistic regression on four patch statistics, the same folds and test sets).
fn baseline_section(md: &mut String, results: &[RunResult]) {
    let Some(p0) = results
        .iter()
        .map(|r| r.level)
        .min_by(|a, b| a.total_cmp(b))
    else {
        return;
    };
    let _ = writeln!(
        md,
        "\n## The fine-tuned networks against a patch-statistics baseline (context)\n\n\
         Clean-test AUC at p={p0}, over every run at that level (folds x artifacts), beside a \
         logistic regression on four patch statistics (mean, SD, gradient and Laplacian energy; \
         `baseline`) trained on the clean training split of the same fold and scored on the same \
         test set. A network that does not beat it has not learnt more than first-order \
         statistics.\n\n| source | edit | network clean AUC | baseline clean AUC | runs | beats the baseline |\n|---|---|---|---|---|---|"
    );
    let rows: Vec<&RunResult> = results.iter().filter(|r| r.level == p0).collect();
    for src in distinct(rows.iter().map(|r| r.source.clone())) {
        for edit in distinct(
            rows.iter()
                .filter(|r| r.source == src)
                .map(|r| r.edit.clone()),
        ) {
            let sel: Vec<&&RunResult> = rows
                .iter()
                .filter(|r| r.source == src && r.edit == edit)
                .collect();
            let net_v: Vec<f64> = sel.iter().map(|r| r.auc_clean).collect();
            let base_v: Vec<f64> = sel.iter().map(|r| r.auc_baseline_clean).collect();
            let (net, net_sd) = super::analysis::mean_sd(&net_v);
            let (base, base_sd) = super::analysis::mean_sd(&base_v);
            let _ = writeln!(
                md,
                "| {src} | {edit} | {} ± {} | {} ± {} | {} | {} |",
                f3(net),
                f3(net_sd),
                f3(base),
                f3(base_sd),
                sel.len(),
                if net > base { "yes" } else { "no" }
            );
        }
    }
}
