//! The figures' data: the right panels and number of series for a given table, and that each
//! renders to PNG and SVG. Set SPECTRAL_TRANSFER_FIGURE_DIR to keep the rendered files.

#[path = "experiment_common/mod.rs"]
mod common;
use common::{fake_result, study};

use spectral_transfer::experiment::figures;
use spectral_transfer::experiment::{expand, results::RunResult};
use spectral_transfer::plot::{Dash, Panel};

fn table() -> Vec<RunResult> {
    expand(&study()).unwrap().iter().map(fake_result).collect()
}

#[test]
fn figure2_has_one_series_per_unedited_source_in_each_panel() {
    let rows = table();
    let s = study();
    let art = &rows[0].artifact;
    let f = figures::figure2(&rows, art, 800);
    let panels = f.line_panels();
    assert_eq!(panels.len(), 2);
    assert!(panels[0].title.contains("O.O.D.") && panels[1].title.contains("I.I.D."));
    for p in &panels {
        assert_eq!(p.series.len(), s.sources.len());
        for series in &p.series {
            assert_eq!(series.x, s.levels);
            let sd = series.sd.as_ref().unwrap();
            assert_eq!(sd.len(), s.levels.len());
            assert!(sd.iter().all(|v| v.is_finite() && *v >= 0.0));
        }
        assert!(!p.x_label.is_empty() && !p.y_label.is_empty());
    }
    // The O.O.D. mean at each level is the mean over folds of the table's values.
    let src = &panels[0].series[0];
    let vals: Vec<f64> = rows
        .iter()
        .filter(|r| {
            r.source == src.label && r.edit == "original" && &r.artifact == art && r.level == 1.0
        })
        .map(|r| r.auc_ood)
        .collect();
    assert_eq!(vals.len(), s.folds);
    let m = vals.iter().sum::<f64>() / vals.len() as f64;
    assert!((src.y[src.x.len() - 1] - m).abs() < 1e-12);
}

#[test]
fn figure3_and_4_series_and_arrows() {
    let rows = table();
    let s = study();
    let pairs: usize = s.sources.iter().map(|x| x.edits.len()).sum();
    let edited = pairs - s.sources.len();
    let f3 = figures::figure3_pretrained(&rows, 800);
    assert_eq!(f3.series_count(), pairs);
    assert_eq!(f3.line_panels()[0].arrows.len(), edited);
    let dotted = f3.line_panels()[0]
        .series
        .iter()
        .filter(|x| x.dash == Dash::Dotted)
        .count();
    assert_eq!(dotted, edited);
    let heat = figures::figure3_heatmaps(&rows, &rows[0].artifact, 800);
    assert_eq!(heat.panels.len(), pairs);
    for p in &heat.panels {
        let Panel::Heatmap(h) = p else {
            panic!("not a heat map")
        };
        assert_eq!(h.values.len(), s.levels.len());
        assert!(h
            .values
            .iter()
            .all(|r| r.len() == h.x.len() && !r.is_empty()));
    }
    let f4 = figures::figure4(&rows, 800);
    assert_eq!(f4.line_panels().len(), s.artifacts.len());
    for p in f4.line_panels() {
        assert_eq!(p.series.len(), pairs);
        assert_eq!(
            p.series.iter().filter(|x| x.dash == Dash::Dotted).count(),
            edited
        );
    }
    // Figures 2 (per artifact), 3a, 3b (per artifact), 4.
    assert_eq!(
        figures::table_figures(&rows, 800).len(),
        2 * s.artifacts.len() + 2
    );
}

#[test]
fn every_table_figure_renders() {
    let rows = table();
    let keep = std::env::var_os("SPECTRAL_TRANSFER_FIGURE_DIR");
    let tmp = tempfile::tempdir().unwrap();
    let dir = keep
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    for f in figures::table_figures(&rows, 800) {
        let (png, svg) = f.save(&dir).unwrap();
        let img = image::open(&png).unwrap();
        assert_eq!(img.width(), 800);
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(
            text.contains("<svg") && text.contains("ω") || text.contains("degradation"),
            "{}",
            f.name
        );
    }
}
