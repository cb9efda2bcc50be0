//! The paper's four figures, built as plain [`Figure`] data from the results table (and, for
//! Fig. 1, from one target image and its spectra).

use super::analysis::{self, auc_curves, distinct, TestSet};
use super::results::RunResult;
use crate::image::Image;
use crate::plot::{
    Arrow, Dash, Figure, HeatmapPanel, ImagePanel, LinePanel, LineSeries, Marker, Panel,
};

const OMEGA: &str = "normalised radial frequency ω (1 = Nyquist)";
const PSD: &str = "normalised gradient PSD (a.u.)";
const LEVEL: &str = "degradation p (fraction of positives with artifact)";
const AUC: &str = "AUC (positive class)";

/// What Fig. 1 is drawn from: an image, its log amplitude spectrum (fftshifted, DC at
/// (H/2, W/2)), and its radial PSD, with one frequency marked.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure1Data {
    pub image: Image,
    /// log(1 + |F|), shifted.
    pub log_spectrum: Image,
    pub omega: Vec<f64>,
    /// log10 of the radial PSD's ring means (un-normalised).
    pub psd: Vec<f64>,
    /// The marked frequency (normalised) and its ring radius in spectrum pixels.
    pub marked_omega: f64,
    pub ring_radius: f64,
    pub caption: String,
}

/// Fig. 1: image | log spectrum with one ring | radial PSD with the same frequency marked.
pub fn figure1(d: &Figure1Data, width: u32) -> Figure {
    Figure {
        name: "fig1_spectrum".into(),
        title: format!("Fig. 1 — {}", d.caption),
        rows: 1,
        cols: 3,
        width,
        height: width * 3 / 8,
        panels: vec![
            Panel::Image(ImagePanel {
                title: "image".into(),
                image: d.image.clone(),
                ring_radius: None,
                x_label: "x (px)".into(),
                y_label: "y (px)".into(),
            }),
            Panel::Image(ImagePanel {
                title: format!("log amplitude spectrum, ring ω = {:.2}", d.marked_omega),
                image: d.log_spectrum.clone(),
                ring_radius: Some(d.ring_radius),
                x_label: "u (bins, DC centred)".into(),
                y_label: "v (bins)".into(),
            }),
            Panel::Lines(LinePanel {
                title: "radial PSD".into(),
                x_label: "ω (1 = Nyquist)".into(),
                y_label: "log10 ring-mean amplitude".into(),
                series: vec![LineSeries {
                    label: "image".into(),
                    x: d.omega.clone(),
                    y: d.psd.clone(),
                    sd: None,
                    dash: Dash::Solid,
                    colour: 0,
                }],
                markers: vec![Marker {
                    x: d.marked_omega,
                    label: format!("ω = {:.2}", d.marked_omega),
                }],
                arrows: vec![],
                y_range: None,
            }),
        ],
    }
}

/// Colour per source, the same in every figure.
fn source_colours(results: &[RunResult]) -> Vec<String> {
    distinct(results.iter().map(|r| r.source.clone()))
}

fn colour_of(sources: &[String], s: &str) -> usize {
    sources.iter().position(|x| x == s).unwrap_or(0)
}

/// The original (unedited) edit label.
pub const ORIGINAL: &str = "original";

/// Fig. 2 for one artifact: mean ± SD of AUC over folds against p, O.O.D. (top) and I.I.D.
/// (bottom), one line per source (unedited sources).
pub fn figure2(results: &[RunResult], artifact: &str, width: u32) -> Figure {
    let colours = source_colours(results);
    let panel = |set: TestSet| {
        let series = auc_curves(results, artifact, set)
            .into_iter()
            .filter(|c| c.edit == ORIGINAL)
            .map(|c| LineSeries {
                label: c.source.clone(),
                x: c.levels,
                y: c.mean,
                sd: Some(c.sd),
                dash: Dash::Solid,
                colour: colour_of(&colours, &c.source),
            })
            .collect();
        Panel::Lines(LinePanel {
            title: format!("{} test set", set.name()),
            x_label: LEVEL.into(),
            y_label: AUC.into(),
            series,
            markers: vec![],
            arrows: vec![],
            y_range: Some((0.0, 1.02)),
        })
    };
    Figure {
        name: format!("fig2_auc_{artifact}"),
        title: format!("Fig. 2 — AUC vs degradation, artifact {artifact} (mean ± SD over folds)"),
        rows: 2,
        cols: 1,
        width,
        height: width * 7 / 8,
        panels: vec![panel(TestSet::Ood), panel(TestSet::Iid)],
    }
}

/// Fig. 3a: normalised PSDs of the pre-trained models; edited sources dotted, with an arrow per
/// edit from the original's spectral centroid to the edited one's.
pub fn figure3_pretrained(results: &[RunResult], width: u32) -> Figure {
    let colours = source_colours(results);
    let psds = analysis::pretrained_psds(results);
    let mut series = Vec::new();
    let mut arrows = Vec::new();
    let top = psds
        .iter()
        .flat_map(|p| p.3.iter().copied())
        .fold(f64::NEG_INFINITY, f64::max);
    for (i, (source, edit, omega, psd)) in psds.iter().enumerate() {
        let colour = colour_of(&colours, source);
        series.push(LineSeries {
            label: format!("{source} ({edit})"),
            x: omega.clone(),
            y: psd.clone(),
            sd: None,
            dash: if edit == ORIGINAL {
                Dash::Solid
            } else {
                Dash::Dotted
            },
            colour,
        });
        if edit != ORIGINAL {
            if let Some(orig) = psds.iter().find(|p| &p.0 == source && p.1 == ORIGINAL) {
                let y = top * (1.04 + 0.05 * (i % 4) as f64);
                arrows.push(Arrow {
                    from: (analysis::centroid(&orig.2, &orig.3), y),
                    to: (analysis::centroid(omega, psd), y),
                    colour,
                });
            }
        }
    }
    Figure {
        name: "fig3a_pretrained_psd".into(),
        title:
            "Fig. 3a — gradient PSD of the pre-trained models (arrows: centroid shift by editing)"
                .into(),
        rows: 1,
        cols: 1,
        width,
        height: width / 2,
        panels: vec![Panel::Lines(LinePanel {
            title: "pre-trained, on clean target images".into(),
            x_label: OMEGA.into(),
            y_label: PSD.into(),
            series,
            markers: vec![],
            arrows,
            y_range: None,
        })],
    }
}

/// Fig. 3b for one artifact: heat maps of the fine-tuned models' PSD (ring x degradation, mean
/// over folds), one panel per (source, edit).
pub fn figure3_heatmaps(results: &[RunResult], artifact: &str, width: u32) -> Figure {
    let keys = distinct(
        results
            .iter()
            .filter(|r| r.artifact == artifact)
            .map(|r| (r.source.clone(), r.edit.clone())),
    );
    let mut panels = Vec::new();
    for (source, edit) in &keys {
        let mut levels = distinct(
            results
                .iter()
                .filter(|r| r.artifact == artifact && &r.source == source && &r.edit == edit)
                .map(|r| r.level),
        );
        levels.sort_by(f64::total_cmp);
        let mut omega = Vec::new();
        let values: Vec<Vec<f64>> = levels
            .iter()
            .map(|&p| {
                let runs = analysis::finetuned_psds(results, source, edit, artifact, p);
                if omega.is_empty() {
                    if let Some(r) = runs.first() {
                        omega = r.omega.clone();
                    }
                }
                let curves: Vec<&[f64]> = runs.iter().map(|r| r.psd_finetuned.as_slice()).collect();
                analysis::mean_curve(&curves).0
            })
            .collect();
        panels.push(Panel::Heatmap(HeatmapPanel {
            title: format!("{source} ({edit})"),
            x_label: "ω (1 = Nyquist)".into(),
            y_label: "p".into(),
            x: omega,
            y: levels,
            values,
            colour_label: "norm. PSD".into(),
        }));
    }
    let cols = panels.len().clamp(1, 2);
    let rows = panels.len().div_ceil(cols).max(1);
    Figure {
        name: format!("fig3b_psd_heatmaps_{artifact}"),
        title: format!("Fig. 3b — fine-tuned gradient PSD vs degradation, artifact {artifact}"),
        rows,
        cols,
        width,
        height: (width as f64 * 0.36 * rows as f64) as u32 + 40,
        panels,
    }
}

/// Fig. 4: O.O.D. AUC against p with (dotted) and without (solid) source editing, one panel per
/// artifact, one colour per source.
pub fn figure4(results: &[RunResult], width: u32) -> Figure {
    let colours = source_colours(results);
    let artifacts = distinct(results.iter().map(|r| r.artifact.clone()));
    let panels: Vec<Panel> = artifacts
        .iter()
        .map(|a| {
            let series = auc_curves(results, a, TestSet::Ood)
                .into_iter()
                .map(|c| LineSeries {
                    label: format!("{} ({})", c.source, c.edit),
                    dash: if c.edit == ORIGINAL {
                        Dash::Solid
                    } else {
                        Dash::Dotted
                    },
                    colour: colour_of(&colours, &c.source),
                    x: c.levels,
                    y: c.mean,
                    sd: None,
                })
                .collect();
            Panel::Lines(LinePanel {
                title: format!("O.O.D., {a}"),
                x_label: LEVEL.into(),
                y_label: AUC.into(),
                series,
                markers: vec![],
                arrows: vec![],
                y_range: Some((0.0, 1.02)),
            })
        })
        .collect();
    let cols = panels.len().clamp(1, 2);
    let rows = panels.len().div_ceil(cols).max(1);
    Figure {
        name: "fig4_ood_editing".into(),
        title: "Fig. 4 — O.O.D. AUC with (dotted) and without (solid) source editing".into(),
        rows,
        cols,
        width,
        height: (width as f64 * 0.42 * rows as f64) as u32 + 40,
        panels,
    }
}

/// Figures 2-4 from the table (Fig. 1 needs an image; see [`figure1`]).
pub fn table_figures(results: &[RunResult], width: u32) -> Vec<Figure> {
    let artifacts = distinct(results.iter().map(|r| r.artifact.clone()));
    let mut figs: Vec<Figure> = artifacts
        .iter()
        .map(|a| figure2(results, a, width))
        .collect();
    figs.push(figure3_pretrained(results, width));
    figs.extend(
        artifacts
            .iter()
            .map(|a| figure3_heatmaps(results, a, width)),
    );
    figs.push(figure4(results, width));
    figs
}
