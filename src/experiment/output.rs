//! Writing the figures of a study: Fig. 1 from one image, Figs. 2-4 from the results table.

use super::figures::{self, Figure1Data};
use super::results::{Layout, RunResult};
use super::Study;
use crate::error::Result;
use crate::image::{Image, ImageBatch};
use crate::plot::Figure;

/// The data behind Fig. 1 for `image`: its log spectrum (`spectrum::log_spectrum`) and radial
/// PSD (`spectrum::RadialPsd` with method.md's defaults but no normalisation: a natural or
/// medical image's spectrum falls over decades, so the figure plots log10 of the ring means;
/// min-max normalised it is one spike at the lowest ring), with `marked_omega` marked.
pub fn figure1_data(image: &Image, marked_omega: f64, caption: &str) -> Result<Figure1Data> {
    let log_spectrum = crate::spectrum::log_spectrum(image)?;
    let radial = crate::spectrum::RadialPsd {
        normalisation: crate::spectrum::Normalisation::None,
        ..Default::default()
    };
    let mut curves =
        radial.compute(&ImageBatch::from_images(std::slice::from_ref(image))?, None)?;
    // a ring of exact zeros (a constant image) stays finite on the log axis
    let floor = curves
        .mean
        .iter()
        .copied()
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let floor = if floor.is_finite() { floor } else { 1.0 };
    for v in &mut curves.mean {
        *v = v.max(floor).log10();
    }
    let k_max = curves.omega.len() as f64;
    Ok(Figure1Data {
        image: image.clone(),
        log_spectrum,
        omega: curves.omega,
        psd: curves.mean,
        marked_omega,
        ring_radius: marked_omega * k_max,
        caption: caption.to_string(),
    })
}

/// Draws Fig. 1 (when an image is given) and Figs. 2-4 into `figures/` (PNG and SVG); returns
/// the figures' names.
pub fn write_figures(
    study: &Study,
    layout: &Layout,
    rows: &[RunResult],
    fig1_image: Option<(&Image, &str)>,
) -> Result<Vec<String>> {
    let mut figs: Vec<Figure> = Vec::new();
    if let Some((image, caption)) = fig1_image {
        let d = figure1_data(image, study.figures.marked_omega, caption)?;
        figs.push(figures::figure1(&d, study.figures.width));
    }
    figs.extend(figures::table_figures(rows, study.figures.width));
    let dir = layout.figures_dir();
    let mut names = Vec::new();
    for f in &figs {
        f.save(&dir)?;
        names.push(f.name.clone());
    }
    Ok(names)
}

/// The figures already drawn (stems of `figures/*.png`), sorted.
pub fn figure_names(layout: &Layout) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(layout.figures_dir())
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().to_string();
                    n.strip_suffix(".png").map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
