//! Plots of training curves: one panel per tag, one line per run, PNG or SVG.
//!
//! Series of any length draw in about the same time: each line is downsampled to the panel's
//! pixel width (first, min, max and last per pixel column, see
//! [`downsample_minmax`](crate::metrics::series::downsample_minmax)), which keeps every spike,
//! in the same pass that smooths it. With smoothing, the raw line is drawn faint under the smoothed one, as in
//! TensorBoard. Text is drawn with DejaVu Sans, shipped in the binary, so no system font or
//! font library is needed.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::metrics::series::{DisplaySeries, Ema, MinMaxBuckets, Point, XAxis, YScale};
use crate::metrics::{Store, tag_matches};

static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
pub(crate) const FONT_NAME: &str = "sans-serif";

/// Errors from plotting.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("{0}: plots are written as .png or .svg")]
    UnsupportedFormat(String),
    #[error("nothing to plot")]
    Empty,
    #[error("{0}")]
    Drawing(String),
}

/// A plotters error message without its debug wrapping, e.g. the OS error inside
/// `DrawingErrorKind::DrawingError(Os { .. })`.
pub fn plot_reason(message: &str) -> String {
    match message.find("message: \"") {
        Some(i) => message[i + 10..]
            .split('"')
            .next()
            .unwrap_or(message)
            .to_string(),
        None => message.to_string(),
    }
}

/// How to draw.
#[derive(Debug, Clone)]
pub struct PlotOptions {
    /// Size of the whole figure in pixels; `None` sizes it from the number of panels.
    pub size: Option<(u32, u32)>,
    /// EMA smoothing weight in `[0, 1)`; 0 draws the raw lines only.
    pub smoothing: f64,
    pub x_axis: XAxis,
    pub y_scale: YScale,
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions {
            size: None,
            smoothing: 0.0,
            x_axis: XAxis::Step,
            y_scale: YScale::Linear,
        }
    }
}

/// One line of a panel: a run's series for the panel's tag (borrowed from the store when it
/// can be, so a redraw copies no points).
#[derive(Debug, Clone)]
pub struct Curve<'a> {
    pub label: String,
    pub points: Cow<'a, [Point]>,
    /// The same series kept as a [`DisplaySeries`] by a caller that redraws often; used
    /// instead of `points` when its axis and smoothing match the plot's.
    pub prepared: Option<&'a DisplaySeries>,
}

impl<'a> Curve<'a> {
    /// A curve over `points`.
    pub fn new(label: impl Into<String>, points: impl Into<Cow<'a, [Point]>>) -> Self {
        Curve {
            label: label.into(),
            points: points.into(),
            prepared: None,
        }
    }
}

/// One chart: a tag and a line per run.
#[derive(Debug, Clone)]
pub struct Panel<'a> {
    pub title: String,
    pub curves: Vec<Curve<'a>>,
}

/// The panels for every tag in `store` that `tags` matches (all tags when `tags` is empty;
/// see [`tag_matches`]), with a curve per run holding the tag.
pub fn panels_from_store<'a>(store: &'a Store, tags: &[String]) -> Vec<Panel<'a>> {
    let mut all_tags: Vec<&str> = store.runs().flat_map(|r| r.tags()).collect();
    all_tags.sort_unstable();
    all_tags.dedup();
    all_tags
        .into_iter()
        .filter(|t| tags.is_empty() || tags.iter().any(|p| tag_matches(p, t)))
        .map(|tag| Panel {
            title: tag.to_owned(),
            curves: store
                .runs()
                .filter_map(|run| {
                    run.series(tag).map(|s| Curve {
                        label: run.name.clone(),
                        points: match s {
                            Cow::Borrowed(s) => Cow::Borrowed(&s.points[..]),
                            Cow::Owned(s) => Cow::Owned(s.points),
                        },
                        prepared: None,
                    })
                })
                .collect(),
        })
        .collect()
}

/// Writes `panels` to `path`, as PNG or SVG by its extension.
pub fn plot_to_file(path: &Path, panels: &[Panel], options: &PlotOptions) -> Result<(), PlotError> {
    if panels.is_empty() {
        return Err(PlotError::Empty);
    }
    // Say which part of the path is wrong; the image encoder would only report an OS code.
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.is_dir())
    {
        return Err(PlotError::Drawing(
            match dir.ancestors().find(|a| a.is_file()) {
                Some(file) => format!("{} is a file, not a folder", file.display()),
                None => format!("there is no folder {}", dir.display()),
            },
        ));
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    // Drawn in memory and written whole, so a reader never sees half a plot.
    let bytes = match ext.as_deref() {
        Some("png") => {
            let (rgb, w, h) = plot_to_rgb(panels, options)?;
            let image = image::RgbImage::from_raw(w, h, rgb)
                .ok_or_else(|| PlotError::Drawing("the bitmap has the wrong size".into()))?;
            let mut png = Vec::new();
            image
                .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .map_err(|e| PlotError::Drawing(e.to_string()))?;
            png
        }
        Some("svg") => plot_to_svg_string(panels, options)?.into_bytes(),
        _ => return Err(PlotError::UnsupportedFormat(path.display().to_string())),
    };
    crate::atomic_file::write_atomic(path, &bytes).map_err(|e| PlotError::Drawing(e.reason))
}

/// Renders `panels` as an SVG document.
pub fn plot_to_svg_string(panels: &[Panel], options: &PlotOptions) -> Result<String, PlotError> {
    if panels.is_empty() {
        return Err(PlotError::Empty);
    }
    let (w, h) = figure_size(panels.len(), options);
    let mut out = String::new();
    {
        let backend = SVGBackend::with_string(&mut out, (w, h));
        draw(backend.into_drawing_area(), panels, options)?;
    }
    Ok(out)
}

/// Renders `panels` into an RGB buffer of `width * height * 3` bytes (for a terminal image, a
/// test, or an encoder of the caller's choice).
pub fn plot_to_rgb(
    panels: &[Panel],
    options: &PlotOptions,
) -> Result<(Vec<u8>, u32, u32), PlotError> {
    if panels.is_empty() {
        return Err(PlotError::Empty);
    }
    let (w, h) = figure_size(panels.len(), options);
    let mut buf = vec![0u8; w as usize * h as usize * 3];
    {
        let backend = BitMapBackend::with_buffer(&mut buf, (w, h));
        draw(backend.into_drawing_area(), panels, options)?;
    }
    Ok((buf, w, h))
}

fn grid(n: usize) -> (usize, usize) {
    let cols = match n {
        0..=1 => 1,
        2..=4 => 2,
        _ => 3,
    };
    (cols, n.div_ceil(cols))
}

fn figure_size(n: usize, options: &PlotOptions) -> (u32, u32) {
    options.size.unwrap_or_else(|| {
        let (cols, rows) = grid(n);
        ((cols as u32 * 640).max(800), rows as u32 * 420)
    })
}

pub(crate) fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in and known to parse; a failure would only lose the text.
        let _ = plotters::style::register_font(FONT_NAME, FontStyle::Normal, FONT);
    });
}

/// Tableau 10, the palette TensorBoard-like tools use.
pub(crate) const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    panels: &[Panel],
    options: &PlotOptions,
) -> Result<(), PlotError> {
    register_font();
    let err =
        |e: DrawingAreaErrorKind<DB::ErrorType>| PlotError::Drawing(plot_reason(&e.to_string()));
    root.fill(&WHITE).map_err(err)?;
    let (cols, rows) = grid(panels.len());
    let areas = root.split_evenly((rows, cols));
    // Every run keeps its colour across panels.
    let mut labels: Vec<&str> = panels
        .iter()
        .flat_map(|p| p.curves.iter().map(|c| c.label.as_str()))
        .collect();
    labels.sort_unstable();
    labels.dedup();
    let color_of = |label: &str| {
        let i = labels.binary_search(&label).unwrap_or(0);
        PALETTE[i % PALETTE.len()]
    };
    for (panel, area) in panels.iter().zip(areas.iter()) {
        draw_panel(area, panel, options, &color_of).map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// A curve ready to draw: downsampled raw and smoothed lines in axis coordinates.
struct Prepared {
    label: String,
    raw: Vec<(f64, f64)>,
    smooth: Option<Vec<(f64, f64)>>,
}

/// Smooths, scales and downsamples a curve in one pass over its points when x ascends (the
/// usual case), so the cost is a few nanoseconds per point and no copy of the series.
fn prepare(curve: &Curve, options: &PlotOptions, buckets: usize) -> Prepared {
    let points = &curve.points[..];
    let start = match options.x_axis {
        XAxis::Relative => points
            .iter()
            .map(|p| p.wall_time)
            .find(|t| t.is_finite())
            .unwrap_or(f64::NAN),
        _ => 0.0,
    };
    let x_of = |p: &Point| match options.x_axis {
        XAxis::Step => p.step as f64,
        XAxis::WallTime => p.wall_time,
        XAxis::Relative => p.wall_time - start,
    };
    let log = options.y_scale == YScale::Log;
    let y_of = |v: f64| {
        if !log {
            v
        } else if v > 0.0 {
            v.log10()
        } else {
            f64::NAN
        }
    };
    if let Some(d) = curve.prepared
        && d.x_axis() == options.x_axis
        && d.smoothing() == options.smoothing
        && let Some((raw, smooth)) = d.downsample(buckets, y_of)
    {
        return Prepared {
            label: curve.label.clone(),
            raw,
            smooth,
        };
    }
    // x usually ascends: take the range from the ends and check the order while drawing,
    // falling back to sorting when it does not. (A constant series smooths to itself up to
    // rounding, so TensorBoard's special case for it is not needed at pixel resolution.)
    let finite_x = |p: &&Point| x_of(p).is_finite();
    let lo = points.iter().find(finite_x).map(x_of).unwrap_or(0.0);
    let hi = points.iter().rev().find(finite_x).map(x_of).unwrap_or(0.0);
    let smoothing = options.smoothing > 0.0;
    let mut raw = MinMaxBuckets::new(lo, hi, buckets);
    let mut smooth = smoothing.then(|| MinMaxBuckets::new(lo, hi, buckets));
    let mut ema = Ema::new(options.smoothing);
    let mut prev = lo;
    let mut ascending = true;
    for p in points {
        let x = x_of(p);
        if x < prev {
            ascending = false;
            break;
        }
        if x.is_finite() {
            prev = x;
        }
        raw.push(x, y_of(p.value));
        if let Some(s) = &mut smooth {
            s.push(x, y_of(ema.next(p.value)));
        }
    }
    if !ascending {
        // Wall time can go backwards across restarts: smooth in series order, draw in x order.
        let mut ema = Ema::new(options.smoothing);
        let mut rows: Vec<(f64, f64, f64)> = points
            .iter()
            .map(|p| (x_of(p), y_of(p.value), y_of(ema.next(p.value))))
            .collect();
        rows.sort_by(|a, b| a.0.total_cmp(&b.0));
        let lo = rows.iter().find(|r| r.0.is_finite()).map_or(0.0, |r| r.0);
        let hi = rows
            .iter()
            .rev()
            .find(|r| r.0.is_finite())
            .map_or(0.0, |r| r.0);
        raw = MinMaxBuckets::new(lo, hi, buckets);
        smooth = smoothing.then(|| MinMaxBuckets::new(lo, hi, buckets));
        for (x, y, v) in rows {
            raw.push(x, y);
            if let Some(s) = &mut smooth {
                s.push(x, v);
            }
        }
    }
    Prepared {
        label: curve.label.clone(),
        raw: raw.finish(),
        smooth: smooth.map(MinMaxBuckets::finish),
    }
}

fn bounds(prepared: &[Prepared]) -> Option<((f64, f64), (f64, f64))> {
    let mut xs = (f64::INFINITY, f64::NEG_INFINITY);
    let mut ys = (f64::INFINITY, f64::NEG_INFINITY);
    for p in prepared {
        for &(x, y) in p.raw.iter().chain(p.smooth.iter().flatten()) {
            xs = (xs.0.min(x), xs.1.max(x));
            ys = (ys.0.min(y), ys.1.max(y));
        }
    }
    if !xs.0.is_finite() {
        return None;
    }
    let pad = |(lo, hi): (f64, f64), frac: f64| {
        if hi > lo {
            let d = (hi - lo) * frac;
            (lo - d, hi + d)
        } else {
            let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
            (lo - d, hi + d)
        }
    };
    Some((pad(xs, 0.0), pad(ys, 0.05)))
}

/// A short label for an axis value.
pub fn format_number(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into()
    } else if !(1e-3..1e6).contains(&a) {
        format!("{v:.2e}")
    } else {
        let s = format!("{v:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    }
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    options: &PlotOptions,
    color_of: &dyn Fn(&str) -> RGBColor,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (w, _) = area.dim_in_pixel();
    let buckets = (w as usize).max(16);
    let prepared: Vec<Prepared> = panel
        .curves
        .iter()
        .map(|c| prepare(c, options, buckets))
        .collect();
    let title = (panel.title.as_str(), (FONT_NAME, 18).into_font());
    let Some(((x0, x1), (y0, y1))) = bounds(&prepared) else {
        let why = match options.x_axis {
            XAxis::Step => "no finite points",
            XAxis::WallTime | XAxis::Relative => "no points with a wall time",
        };
        area.draw(&Text::new(
            format!("{}: {why}", panel.title),
            (10, 10),
            (FONT_NAME, 14).into_font(),
        ))?;
        return Ok(());
    };
    let mut chart = ChartBuilder::on(area)
        .caption(title.0, title.1)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    let log = options.y_scale == YScale::Log;
    let y_fmt = |v: &f64| {
        if log {
            format_number(10f64.powf(*v))
        } else {
            format_number(*v)
        }
    };
    let x_fmt = |v: &f64| format_number(*v);
    let y_desc = if log { "value (log)" } else { "value" };
    chart
        .configure_mesh()
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(210, 210, 210))
        .x_desc(options.x_axis.label())
        .y_desc(y_desc)
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style((FONT_NAME, 13))
        .axis_desc_style((FONT_NAME, 14))
        .draw()?;
    for p in &prepared {
        let color = color_of(&p.label);
        match &p.smooth {
            Some(smooth) => {
                chart.draw_series(LineSeries::new(
                    p.raw.iter().copied(),
                    color.mix(0.25).stroke_width(1),
                ))?;
                chart
                    .draw_series(LineSeries::new(
                        smooth.iter().copied(),
                        color.stroke_width(2),
                    ))?
                    .label(p.label.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
            }
            None => {
                chart
                    .draw_series(LineSeries::new(
                        p.raw.iter().copied(),
                        color.stroke_width(2),
                    ))?
                    .label(p.label.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .label_font((FONT_NAME, 13))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(format_number(0.0), "0");
        assert_eq!(format_number(1500.0), "1500");
        assert_eq!(format_number(0.25), "0.25");
        assert_eq!(format_number(1e-5), "1.00e-5");
        assert_eq!(format_number(2.5e7), "2.50e7");
    }

    #[test]
    fn renders_svg_with_text() {
        let panel = Panel {
            title: "train/loss".into(),
            curves: vec![Curve {
                prepared: None,
                label: "run-a".into(),
                points: (0..100)
                    .map(|i| Point::new(i, f64::NAN, 1.0 / (1.0 + i as f64)))
                    .collect::<Vec<_>>()
                    .into(),
            }],
        };
        let svg = plot_to_svg_string(
            &[panel],
            &PlotOptions {
                smoothing: 0.6,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(svg.contains("train/loss"));
        assert!(svg.contains("run-a"));
        assert!(svg.contains("<polyline"));
    }
}
