//! Figures of the study, drawn with plotters (PNG through the bitmap backend, SVG through the SVG
//! backend, text with the shipped DejaVu Sans through ab_glyph: no system font libraries).
//!
//! A figure is plain data ([`Figure`]: panels of line series, heat maps or images) so that tests
//! and notebooks can inspect what a figure shows (how many series, which values) without looking
//! at pixels. `experiment::figures` builds the paper's four figures from the results table.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::image::Image;

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are DejaVu Sans, checked at build time by `include_bytes!`; a failure here
        // would be a corrupt checkout, reported later as FontUnavailable by plotters.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// How a line is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dash {
    Solid,
    Dotted,
}

/// One curve: y(x), optionally with a ±`sd` band.
#[derive(Clone, Debug, PartialEq)]
pub struct LineSeries {
    pub label: String,
    pub x: Vec<f64>,
    pub y: Vec<f64>,
    /// Spread drawn as a shaded band y ± sd (same length as y).
    pub sd: Option<Vec<f64>>,
    pub dash: Dash,
    /// Index into the palette (same colour = same source across panels).
    pub colour: usize,
}

/// A vertical marker line at `x` (e.g. the marked frequency).
#[derive(Clone, Debug, PartialEq)]
pub struct Marker {
    pub x: f64,
    pub label: String,
}

/// An arrow from one point to another, in data coordinates.
#[derive(Clone, Debug, PartialEq)]
pub struct Arrow {
    pub from: (f64, f64),
    pub to: (f64, f64),
    pub colour: usize,
}

/// A panel of curves.
#[derive(Clone, Debug, PartialEq)]
pub struct LinePanel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<LineSeries>,
    pub markers: Vec<Marker>,
    pub arrows: Vec<Arrow>,
    /// Fixed y range (e.g. AUC in [0, 1]); None = fitted to the data.
    pub y_range: Option<(f64, f64)>,
}

/// A heat map: `values[row][col]`, rows along y (bottom to top), columns along x.
#[derive(Clone, Debug, PartialEq)]
pub struct HeatmapPanel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Centres of the columns.
    pub x: Vec<f64>,
    /// Labels of the rows (e.g. degradation levels).
    pub y: Vec<f64>,
    pub values: Vec<Vec<f64>>,
    /// What the colour means, with its unit.
    pub colour_label: String,
}

/// A greyscale image (values mapped min..max to black..white) with an optional ring.
#[derive(Clone, Debug, PartialEq)]
pub struct ImagePanel {
    pub title: String,
    pub image: Image,
    /// A circle of this radius in pixels around the centre (H/2, W/2), e.g. a frequency ring.
    /// The image is drawn with row 0 at the top; the y axis counts rows from the bottom.
    pub ring_radius: Option<f64>,
    pub x_label: String,
    pub y_label: String,
}

/// One panel of a figure.
#[derive(Clone, Debug, PartialEq)]
pub enum Panel {
    Lines(LinePanel),
    Heatmap(HeatmapPanel),
    Image(ImagePanel),
}

/// A figure: a grid of panels (row-major), a title and a size in pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// File stem, e.g. `fig2_auc_grating`.
    pub name: String,
    pub title: String,
    pub rows: usize,
    pub cols: usize,
    pub panels: Vec<Panel>,
    pub width: u32,
    pub height: u32,
}

/// The palette: colour-blind-safe (Okabe-Ito).
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(240, 228, 66),
    RGBColor(0, 0, 0),
];

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Viridis, 8 stops linearly interpolated (plotters' `colormaps` feature is off in this build).
fn viridis(t: f64) -> RGBColor {
    const STOPS: [(u8, u8, u8); 8] = [
        (68, 1, 84),
        (70, 50, 127),
        (54, 92, 141),
        (39, 127, 143),
        (31, 162, 136),
        (74, 194, 110),
        (160, 219, 57),
        (254, 232, 37),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let s = t * (STOPS.len() - 1) as f64;
    let i = (s.floor() as usize).min(STOPS.len() - 2);
    let f = s - i as f64;
    let lerp = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    RGBColor(lerp(a.0, b.0), lerp(a.1, b.1), lerp(a.2, b.2))
}

fn draw_err<E: std::fmt::Debug>(e: E) -> Error {
    Error::Other(format!("drawing a figure: {e:?}"))
}

fn finite_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        None
    } else if hi - lo < 1e-12 {
        Some((lo - 0.5, hi + 0.5))
    } else {
        Some((lo, hi))
    }
}

impl LinePanel {
    fn ranges(&self) -> ((f64, f64), (f64, f64)) {
        let xs = self.series.iter().flat_map(|s| s.x.iter().copied());
        let ax = self.arrows.iter().flat_map(|a| [a.from.0, a.to.0]);
        let mx = self.markers.iter().map(|m| m.x);
        let x = finite_range(xs.chain(ax).chain(mx)).unwrap_or((0.0, 1.0));
        let y = self.y_range.unwrap_or_else(|| {
            let ys = self.series.iter().flat_map(|s| {
                let sd = s.sd.clone().unwrap_or_else(|| vec![0.0; s.y.len()]);
                s.y.iter()
                    .zip(sd)
                    .flat_map(|(&y, d)| [y - d, y + d])
                    .collect::<Vec<_>>()
            });
            let ay = self.arrows.iter().flat_map(|a| [a.from.1, a.to.1]);
            let (lo, hi) = finite_range(ys.chain(ay)).unwrap_or((0.0, 1.0));
            let pad = 0.05 * (hi - lo);
            (lo - pad, hi + pad)
        });
        (x, y)
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>, scale: f64) -> Result<()> {
        let ((x0, x1), (y0, y1)) = self.ranges();
        let font = |s: f64| (FAMILY, (s * scale).round() as u32);
        let mut chart = ChartBuilder::on(area)
            .caption(&self.title, font(16.0))
            .margin((8.0 * scale) as u32)
            .x_label_area_size((38.0 * scale) as u32)
            .y_label_area_size((52.0 * scale) as u32)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style(font(12.0))
            .axis_desc_style(font(13.0))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(draw_err)?;
        let stroke = (2.0 * scale).max(1.0) as u32;
        for s in &self.series {
            let c = colour(s.colour);
            if let Some(sd) = &s.sd {
                let mut poly: Vec<(f64, f64)> =
                    s.x.iter()
                        .zip(&s.y)
                        .zip(sd)
                        .map(|((&x, &y), &d)| (x, y + d))
                        .collect();
                poly.extend(
                    s.x.iter()
                        .zip(&s.y)
                        .zip(sd)
                        .rev()
                        .map(|((&x, &y), &d)| (x, y - d)),
                );
                chart
                    .draw_series(std::iter::once(Polygon::new(poly, c.mix(0.18).filled())))
                    .map_err(draw_err)?;
            }
            let pts: Vec<(f64, f64)> = s.x.iter().copied().zip(s.y.iter().copied()).collect();
            let style = c.stroke_width(stroke);
            let legend_dash = s.dash;
            let anno = match s.dash {
                Dash::Solid => chart
                    .draw_series(plotters::series::LineSeries::new(pts.clone(), style))
                    .map_err(draw_err)?,
                Dash::Dotted => chart
                    .draw_series(DashedLineSeries::new(
                        pts.clone(),
                        (3.0 * scale) as u32,
                        (4.0 * scale) as u32,
                        style,
                    ))
                    .map_err(draw_err)?,
            };
            let lw = (18.0 * scale) as i32;
            anno.label(&s.label).legend(move |(x, y)| {
                let seg: Vec<(i32, i32)> = match legend_dash {
                    Dash::Solid => vec![(x, y), (x + lw, y)],
                    Dash::Dotted => vec![(x, y), (x + lw / 3, y)],
                };
                PathElement::new(seg, c.stroke_width(stroke))
            });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, stroke + 1, c.filled())))
                .map_err(draw_err)?;
        }
        for m in &self.markers {
            let grey = RGBColor(90, 90, 90);
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(m.x, y0), (m.x, y1)],
                    (5.0 * scale) as u32,
                    (4.0 * scale) as u32,
                    grey.stroke_width(stroke),
                ))
                .map_err(draw_err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!(" {}", m.label),
                    (m.x, y1 - 0.04 * (y1 - y0)),
                    font(12.0).into_font().color(&grey),
                )))
                .map_err(draw_err)?;
        }
        if !self.arrows.is_empty() {
            let (pw, ph) = chart.plotting_area().dim_in_pixel();
            let (sx, sy) = ((x1 - x0) / pw.max(1) as f64, (y1 - y0) / ph.max(1) as f64);
            for a in &self.arrows {
                let c = colour(a.colour);
                // The head is built in pixel space so that it is not skewed by the axes' scales.
                let (dx, dy) = ((a.to.0 - a.from.0) / sx, (a.to.1 - a.from.1) / sy);
                let len = (dx * dx + dy * dy).sqrt().max(1e-9);
                let (ux, uy) = (dx / len, dy / len);
                let h = 9.0 * scale;
                let head = |sign: f64| {
                    let (bx, by) = (-ux * h, -uy * h);
                    let (px, py) = (-uy * h * 0.5 * sign, ux * h * 0.5 * sign);
                    (a.to.0 + (bx + px) * sx, a.to.1 + (by + py) * sy)
                };
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![a.from, a.to],
                        c.stroke_width(stroke),
                    )))
                    .map_err(draw_err)?;
                chart
                    .draw_series(std::iter::once(Polygon::new(
                        vec![a.to, head(1.0), head(-1.0)],
                        c.filled(),
                    )))
                    .map_err(draw_err)?;
            }
        }
        if self.series.iter().any(|s| !s.label.is_empty()) {
            chart
                .configure_series_labels()
                .label_font(font(12.0))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(160, 160, 160))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(draw_err)?;
        }
        Ok(())
    }
}

impl HeatmapPanel {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>, scale: f64) -> Result<()> {
        let font = |s: f64| (FAMILY, (s * scale).round() as u32);
        let (plot, bar) = area.split_horizontally((area.dim_in_pixel().0 as f64 * 0.80) as i32);
        let nx = self.x.len().max(1);
        let ny = self.values.len().max(1);
        let (lo, hi) = finite_range(self.values.iter().flatten().copied()).unwrap_or((0.0, 1.0));
        let dx = if nx > 1 {
            (self.x[nx - 1] - self.x[0]) / (nx - 1) as f64
        } else {
            1.0
        };
        let (x0, x1) = (
            self.x.first().copied().unwrap_or(0.0) - dx / 2.0,
            self.x.last().copied().unwrap_or(1.0) + dx / 2.0,
        );
        let mut chart = ChartBuilder::on(&plot)
            .caption(&self.title, font(16.0))
            .margin((8.0 * scale) as u32)
            .x_label_area_size((38.0 * scale) as u32)
            .y_label_area_size((52.0 * scale) as u32)
            .build_cartesian_2d(x0..x1, -0.5..ny as f64 - 0.5)
            .map_err(draw_err)?;
        let ylabels = self.y.clone();
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style(font(12.0))
            .axis_desc_style(font(13.0))
            .y_labels(ny)
            .y_label_formatter(&move |v| {
                let i = v.round();
                if i >= 0.0 && (i as usize) < ylabels.len() && (v - i).abs() < 1e-6 {
                    format!("{}", ylabels[i as usize])
                } else {
                    String::new()
                }
            })
            .draw()
            .map_err(draw_err)?;
        let cells = self.values.iter().enumerate().flat_map(|(r, row)| {
            row.iter().enumerate().map(move |(c, &v)| {
                let xc = self.x.get(c).copied().unwrap_or(c as f64);
                let t = (v - lo) / (hi - lo);
                Rectangle::new(
                    [
                        (xc - dx / 2.0, r as f64 - 0.5),
                        (xc + dx / 2.0, r as f64 + 0.5),
                    ],
                    viridis(t).filled(),
                )
            })
        });
        chart.draw_series(cells).map_err(draw_err)?;
        // Colour bar: a strip of the map with its range and meaning.
        let mut cb = ChartBuilder::on(&bar)
            .margin_top((34.0 * scale) as u32)
            .margin_bottom((46.0 * scale) as u32)
            .margin_right((4.0 * scale) as u32)
            .y_label_area_size((52.0 * scale) as u32)
            .build_cartesian_2d(0.0..1.0, lo..hi)
            .map_err(draw_err)?;
        cb.configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_labels(5)
            .y_desc(&self.colour_label)
            .label_style(font(11.0))
            .axis_desc_style(font(12.0))
            .draw()
            .map_err(draw_err)?;
        let steps = 64;
        cb.draw_series((0..steps).map(|i| {
            let a = lo + (hi - lo) * i as f64 / steps as f64;
            let b = lo + (hi - lo) * (i + 1) as f64 / steps as f64;
            Rectangle::new(
                [(0.0, a), (1.0, b)],
                viridis(i as f64 / (steps - 1) as f64).filled(),
            )
        }))
        .map_err(draw_err)?;
        Ok(())
    }
}

impl ImagePanel {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>, scale: f64) -> Result<()> {
        let font = |s: f64| (FAMILY, (s * scale).round() as u32);
        let (h, w) = (self.image.height as f64, self.image.width as f64);
        let mut chart = ChartBuilder::on(area)
            .caption(&self.title, font(16.0))
            .margin((8.0 * scale) as u32)
            .x_label_area_size((38.0 * scale) as u32)
            .y_label_area_size((44.0 * scale) as u32)
            .build_cartesian_2d(0.0..w, 0.0..h)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style(font(12.0))
            .axis_desc_style(font(13.0))
            .x_labels(5)
            .y_labels(5)
            .draw()
            .map_err(draw_err)?;
        let (lo, hi) =
            finite_range(self.image.data.iter().map(|&v| v as f64)).unwrap_or((0.0, 1.0));
        let img = &self.image;
        chart
            .draw_series((0..img.height).flat_map(|y| {
                (0..img.width).map(move |x| {
                    let g = (((img.get(y, x) as f64 - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0)
                        .round() as u8;
                    // Row 0 at the top, as an image is shown.
                    let top = h - y as f64;
                    Rectangle::new(
                        [(x as f64, top), (x as f64 + 1.0, top - 1.0)],
                        RGBColor(g, g, g).filled(),
                    )
                })
            }))
            .map_err(draw_err)?;
        if let Some(r) = self.ring_radius {
            // Centre of the DC bin (row H/2, column W/2) in the flipped coordinates.
            let (cy, cx) = (h - (h / 2.0).floor() - 0.5, (w / 2.0).floor() + 0.5);
            let pts: Vec<(f64, f64)> = (0..=180)
                .map(|i| {
                    let t = i as f64 / 180.0 * std::f64::consts::TAU;
                    (cx + r * t.cos(), cy + r * t.sin())
                })
                .collect();
            chart
                .draw_series(std::iter::once(PathElement::new(
                    pts,
                    RGBColor(230, 60, 40).stroke_width((2.0 * scale).max(1.0) as u32),
                )))
                .map_err(draw_err)?;
        }
        Ok(())
    }
}

impl Figure {
    /// Number of line series over all panels (what tests count).
    pub fn series_count(&self) -> usize {
        self.panels
            .iter()
            .map(|p| match p {
                Panel::Lines(l) => l.series.len(),
                _ => 0,
            })
            .sum()
    }

    /// The line panels, in order.
    pub fn line_panels(&self) -> Vec<&LinePanel> {
        self.panels
            .iter()
            .filter_map(|p| match p {
                Panel::Lines(l) => Some(l),
                _ => None,
            })
            .collect()
    }

    /// Whether the figure is dense (heat maps, images): then PNG is the format to show.
    pub fn is_dense(&self) -> bool {
        self.panels.iter().any(|p| !matches!(p, Panel::Lines(_)))
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<()> {
        register_fonts();
        let scale = self.width as f64 / 800.0;
        root.fill(&WHITE).map_err(draw_err)?;
        let body = if self.title.is_empty() {
            root.clone()
        } else {
            root.titled(&self.title, (FAMILY, (19.0 * scale).round() as u32))
                .map_err(draw_err)?
        };
        let areas = body.split_evenly((self.rows.max(1), self.cols.max(1)));
        for (panel, area) in self.panels.iter().zip(areas.iter()) {
            match panel {
                Panel::Lines(p) => p.draw(area, scale)?,
                Panel::Heatmap(p) => p.draw(area, scale)?,
                Panel::Image(p) => p.draw(area, scale)?,
            }
        }
        root.present().map_err(draw_err)?;
        Ok(())
    }

    /// The figure as an SVG document.
    pub fn to_svg(&self) -> Result<String> {
        if self.panels.len() > self.rows * self.cols {
            return Err(Error::param(
                "figure.panels",
                self.panels.len(),
                format!("more panels than the {} x {} grid", self.rows, self.cols),
            ));
        }
        let mut out = String::new();
        {
            let root =
                SVGBackend::with_string(&mut out, (self.width, self.height)).into_drawing_area();
            self.draw(root)?;
        }
        Ok(out)
    }

    /// The figure as PNG bytes.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        if self.panels.len() > self.rows * self.cols {
            return Err(Error::param(
                "figure.panels",
                self.panels.len(),
                format!("more panels than the {} x {} grid", self.rows, self.cols),
            ));
        }
        let (w, h) = (self.width, self.height);
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
            self.draw(root)?;
        }
        let mut png = Vec::new();
        let encoder = image::codecs::png::PngEncoder::new(&mut png);
        image::ImageEncoder::write_image(encoder, &rgb, w, h, image::ExtendedColorType::Rgb8)
            .map_err(|e| Error::Other(format!("encoding PNG: {e}")))?;
        Ok(png)
    }

    /// Writes `<dir>/<name>.png` and `<dir>/<name>.svg` atomically; returns both paths.
    pub fn save(&self, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        let png = dir.join(format!("{}.png", self.name));
        let svg = dir.join(format!("{}.svg", self.name));
        crate::experiment::results::write_bytes_atomic(&png, &self.to_png()?)?;
        crate::experiment::results::write_bytes_atomic(&svg, self.to_svg()?.as_bytes())?;
        Ok((png, svg))
    }

    /// Shows the figure inline in an evcxr (Rust Jupyter) notebook: SVG for line plots, PNG
    /// (base64) for dense ones (heat maps, images), which would make large SVGs.
    pub fn evcxr_display(&self) {
        let shown = if self.is_dense() {
            self.to_png()
                .map(|png| format!("image/png\n{}", base64(&png)))
        } else {
            self.to_svg().map(|svg| format!("image/svg+xml\n{svg}"))
        };
        match shown {
            Ok(content) => println!("EVCXR_BEGIN_CONTENT {content}\nEVCXR_END_CONTENT"),
            Err(e) => println!("EVCXR_BEGIN_CONTENT text/plain\n{e}\nEVCXR_END_CONTENT"),
        }
    }
}

/// Standard base64 (RFC 4648, padded). Written out because it is a dozen lines and only the
/// notebook display needs it.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
        out.push(A[(n >> 18) as usize & 63] as char);
        out.push(A[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn viridis_ends() {
        assert_eq!(viridis(0.0), RGBColor(68, 1, 84));
        assert_eq!(viridis(1.0), RGBColor(254, 232, 37));
        assert_eq!(viridis(f64::NAN), RGBColor(68, 1, 84));
    }

    fn demo() -> Figure {
        Figure {
            name: "demo".into(),
            title: "Demo".into(),
            rows: 1,
            cols: 2,
            width: 800,
            height: 360,
            panels: vec![
                Panel::Lines(LinePanel {
                    title: "lines".into(),
                    x_label: "omega".into(),
                    y_label: "PSD".into(),
                    series: vec![LineSeries {
                        label: "a".into(),
                        x: vec![0.0, 0.5, 1.0],
                        y: vec![1.0, 0.3, 0.1],
                        sd: Some(vec![0.1, 0.1, 0.05]),
                        dash: Dash::Dotted,
                        colour: 0,
                    }],
                    markers: vec![Marker {
                        x: 0.5,
                        label: "k".into(),
                    }],
                    arrows: vec![Arrow {
                        from: (0.2, 0.8),
                        to: (0.6, 0.4),
                        colour: 1,
                    }],
                    y_range: None,
                }),
                Panel::Heatmap(HeatmapPanel {
                    title: "heat".into(),
                    x_label: "omega".into(),
                    y_label: "p".into(),
                    x: vec![0.25, 0.5, 0.75, 1.0],
                    y: vec![0.0, 0.5],
                    values: vec![vec![0.0, 0.2, 0.4, 1.0], vec![1.0, 0.5, 0.2, 0.0]],
                    colour_label: "PSD".into(),
                }),
            ],
        }
    }

    #[test]
    fn renders_png_and_svg_with_text() {
        let f = demo();
        let png = f.to_png().unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let decoded = image::load_from_memory(&png).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (800, 360));
        let svg = f.to_svg().unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("omega") && svg.contains("Demo"));
        assert_eq!(f.series_count(), 1);
        assert!(f.is_dense());
    }

    #[test]
    fn too_many_panels_is_an_error() {
        let mut f = demo();
        f.cols = 1;
        assert!(f
            .to_png()
            .unwrap_err()
            .to_string()
            .contains("figure.panels"));
    }
}
