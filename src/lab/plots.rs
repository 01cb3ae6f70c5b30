//! The run's figures: the labelled comparison grid (rows = preview samples, columns = cells), quality against
//! NFE (one line per sampler, log-x) and time per sample per cell, as PNG and SVG.

use std::path::Path;

use image::RgbImage;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::difference::heat_map;
use super::images::{GAP, grid, save_png, upscale_factor};
use super::results::CellResult;
use super::scores::reference_error::{PSNR, PSNR_DECODED, RMSE};
use super::scores::{Chart, charts};
use crate::atomic_file::write_atomic;
use crate::path_error::PathError;
use crate::plot::{FONT_NAME, PALETTE as COLOURS, plot_reason, register_font};

/// One column of the comparison: a cell's name and its preview images (model space, [-1, 1]).
pub struct Column<'a> {
    pub name: &'a str,
    pub images: &'a [f32],
}

/// Rows = preview samples labelled `rows` ("seed 3", "a cat · seed 3"; as many as the longest column has images), columns = cells, each column headed by
/// its cell's name; written as PNG. `difflab run` and the dashboard's save key both write
/// comparison.png through this.
pub fn comparison_grid(
    columns: &[Column],
    shape: [usize; 3],
    rows: &[String],
    path: &Path,
) -> Result<(), PathError> {
    let [_, h, w] = shape;
    let item = shape.iter().product::<usize>().max(1);
    let shown = columns
        .iter()
        .map(|c| c.images.len() / item)
        .max()
        .unwrap_or(0);
    let rows = &rows[..shown.min(rows.len())];
    let scale = upscale_factor(shape) as usize;
    // A tile is one sample with its grid gutter on each side, upscaled.
    let (tile_w, tile_h) = ((w + 2 * GAP) * scale, (h + 2 * GAP) * scale);
    let longest = columns
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(0);
    // Room for the header text (about 8 px a character at 14 px).
    let widest_row = rows.iter().map(|r| r.chars().count()).max().unwrap_or(0);
    let left = (8 * widest_row + 12).clamp(64, 320);
    let (col_w, header, gap) = ((tile_w + 8).max(8 * longest + 12), 28, 4);
    let width = left + columns.len() * col_w;
    let height = header + rows.len() * (tile_h + gap) + gap;
    let mut canvas = RgbImage::from_pixel(width as u32, height as u32, image::Rgb([255, 255, 255]));
    for (c, column) in columns.iter().enumerate() {
        let count = column.images.len() / shape.iter().product::<usize>().max(1);
        for s in 0..count.min(rows.len()) {
            let item = shape.iter().product::<usize>();
            let one = grid(&column.images[s * item..(s + 1) * item], shape, 1, 1);
            let one = image::imageops::resize(
                &one,
                one.width() * scale as u32,
                one.height() * scale as u32,
                image::imageops::FilterType::Nearest,
            );
            let x = left + c * col_w + (col_w - one.width() as usize) / 2;
            let y = header + s * (tile_h + gap);
            image::imageops::overlay(&mut canvas, &one, x as i64, y as i64);
        }
    }
    register_font();
    {
        let (wu, hu) = (width as u32, height as u32);
        let area = BitMapBackend::with_buffer(canvas.as_mut(), (wu, hu)).into_drawing_area();
        let style = (FONT_NAME, 14).into_font().color(&BLACK);
        for (c, column) in columns.iter().enumerate() {
            let x = (left + c * col_w + 4) as i32;
            draw_text(&area, column.name, (x, 6), &style);
        }
        for (s, row) in rows.iter().enumerate() {
            let y = (header + s * (tile_h + gap) + tile_h / 2 - 7) as i32;
            draw_text(&area, row, (4, y), &style);
        }
        area.present()
            .map_err(|e| PathError::other("draw the labels of", path, e))?;
    }
    save_png(&canvas, path)
}

/// difference.png: a column per cell, a row per preview sample; the baseline's own samples in its
/// column, and for every other cell its absolute difference from the baseline's sample of the same seed
/// as a heat map (black: none; pale yellow: 1 and more, data in [-1, 1]). False (nothing written) when the
/// baseline is not among `columns`.
pub fn difference_grid(
    columns: &[Column],
    shape: [usize; 3],
    baseline: &str,
    rows: &[String],
    path: &Path,
) -> Result<bool, PathError> {
    let Some(base) = columns.iter().find(|c| c.name == baseline) else {
        return Ok(false);
    };
    let [c, h, w] = shape;
    let item = (c * h * w).max(1);
    let as_rgb = |sample: &[f32]| match c {
        3 => sample.to_vec(),
        _ => sample[..h * w].repeat(3),
    };
    let heat: Vec<(String, Vec<f32>)> = columns
        .iter()
        .map(|col| {
            let pairs = col.images.chunks(item).zip(base.images.chunks(item));
            let is_base = col.name == baseline;
            let images = pairs
                .flat_map(|(s, b)| match is_base {
                    true => as_rgb(s),
                    false => heat_map(s, b, shape).unwrap_or_else(|| vec![-1.0; 3 * h * w]),
                })
                .collect();
            let name = match is_base {
                true => format!("{} (baseline)", col.name),
                false => col.name.to_string(),
            };
            (name, images)
        })
        .collect();
    let heat: Vec<Column> = (heat.iter())
        .map(|(name, images)| Column { name, images })
        .collect();
    comparison_grid(&heat, [3, h, w], rows, path)?;
    Ok(true)
}

fn draw_text<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    at: (i32, i32),
    style: &TextStyle,
) {
    let _ = area.draw(&Text::new(text.to_string(), at, style.clone()));
}

/// Writes `quality_vs_nfe.{png,svg}` (when cells have FID), `accuracy_vs_nfe.{png,svg}` (when they were
/// compared with a reference solve), `quality_vs_guidance.{png,svg}` (when guidance varies) and `time_per_sample.{png,svg}` into
/// `dir`; returns the files written.
pub fn write_plots(cells: &[CellResult], dir: &Path) -> Result<Vec<String>, PathError> {
    register_font();
    let mut written = Vec::new();
    for ext in ["png", "svg"] {
        if !nfe_charts(cells).is_empty() {
            let path = dir.join(format!("quality_vs_nfe.{ext}"));
            render(&path, (800, 500), Figure::QualityVsNfe, cells)?;
            written.push(path.display().to_string());
        }
        if cells.iter().any(|c| c.score(RMSE).is_some_and(|e| e > 0.0)) {
            let path = dir.join(format!("accuracy_vs_nfe.{ext}"));
            render(&path, (1000, 460), Figure::AccuracyVsNfe, cells)?;
            written.push(path.display().to_string());
        }
        if guidance_is_an_axis(cells) {
            let path = dir.join(format!("quality_vs_guidance.{ext}"));
            render(&path, (1000, 460), Figure::QualityVsGuidance, cells)?;
            written.push(path.display().to_string());
        }
        let path = dir.join(format!("time_per_sample.{ext}"));
        render(&path, (800, 460), Figure::TimePerSample, cells)?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

#[derive(Clone, Copy)]
enum Figure {
    QualityVsNfe,
    AccuracyVsNfe,
    QualityVsGuidance,
    TimePerSample,
}

/// Whether the cells were scored at more than one guidance scale.
fn guidance_is_an_axis(cells: &[CellResult]) -> bool {
    let keys: Vec<&str> = charts()
        .filter(|c| c.against_guidance)
        .map(|c| c.key)
        .collect();
    let scored = || {
        cells
            .iter()
            .filter(|c| keys.iter().any(|k| c.scores.has(k)))
    };
    scored().any(|c| scored().any(|d| d.guidance != c.guidance))
}

/// The charted metrics against NFE that some cell has.
fn nfe_charts(cells: &[CellResult]) -> Vec<Chart> {
    charts()
        .filter(|c| c.against_nfe && cells.iter().any(|r| r.scores.has(c.key)))
        .collect()
}

/// Draws a figure as a PNG or SVG (by extension) in memory, then writes it atomically.
fn render(
    path: &Path,
    size: (u32, u32),
    figure: Figure,
    cells: &[CellResult],
) -> Result<(), PathError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("png")
        .to_string();
    // Drawn in memory and written whole: readers never see a half-drawn plot.
    let drawn = if ext == "svg" {
        let mut svg = String::new();
        {
            let area = SVGBackend::with_string(&mut svg, size).into_drawing_area();
            figure
                .draw(&area, cells)
                .and_then(|()| area.present().map_err(|e| e.to_string()))
        }
        .map(|()| svg.into_bytes())
    } else {
        let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
        {
            let area = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
            figure
                .draw(&area, cells)
                .and_then(|()| area.present().map_err(|e| e.to_string()))
        }
        .map(|()| rgb)
    };
    let bytes = drawn.map_err(|e| PathError::other("draw the plot", path, plot_reason(&e)))?;
    match ext.as_str() {
        "svg" => write_atomic(path, &bytes),
        _ => match RgbImage::from_raw(size.0, size.1, bytes) {
            Some(img) => save_png(&img, path),
            None => Err(PathError::other(
                "draw the plot",
                path,
                "the bitmap has the wrong size",
            )),
        },
    }
}

impl Figure {
    fn draw<DB: DrawingBackend>(
        self,
        area: &DrawingArea<DB, Shift>,
        cells: &[CellResult],
    ) -> Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        area.fill(&WHITE).map_err(|e| e.to_string())?;
        match self {
            Figure::QualityVsNfe => quality_vs_nfe(area, cells),
            Figure::AccuracyVsNfe => accuracy_vs_nfe(area, cells),
            Figure::QualityVsGuidance => quality_vs_guidance(area, cells),
            Figure::TimePerSample => time_per_sample(area, cells),
        }
        .map_err(|e| e.to_string())
    }
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Each charted metric (FID) against NFE, one line per sampler (label), log-x, side by side.
fn quality_vs_nfe<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    cells: &[CellResult],
) -> DrawResult<DB> {
    // One line per sampler, and per guidance scale when there are several.
    let several = guidance_is_an_axis(cells);
    let family = |c: &CellResult| match several {
        true => format!("{} g{}", c.label, c.guidance),
        false => c.label.clone(),
    };
    let charts = nfe_charts(cells);
    let panels = area.split_evenly((1, charts.len().max(1)));
    for (chart, panel) in charts.iter().zip(&panels) {
        let families = lines(cells, family, |c| Some((c.nfe as f64, c.score(chart.key)?)));
        let all = families.iter().flat_map(|(_, p)| p.iter());
        let (lo, hi) = all.clone().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
            (lo.min(p.0), hi.max(p.0))
        });
        let y = y_range(chart, &families);
        let mut plot = ChartBuilder::on(panel)
            .caption("Sample quality against cost", (FONT_NAME, 20))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d((lo * 0.8..hi * 1.25).log_scale(), y)?;
        plot.configure_mesh()
            .x_desc("NFE (model evaluations per sample)")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_desc(chart.y_desc)
            .label_style((FONT_NAME, 13))
            .axis_desc_style((FONT_NAME, 14))
            .draw()?;
        draw_lines(&mut plot, &families)?;
        draw_legend(&mut plot, SeriesLabelPosition::MiddleRight)?;
    }
    Ok(())
}

/// A chart's y range: the unit interval, or from zero to a bit above its largest value.
fn y_range(chart: &Chart, series: &[(String, Vec<(f64, f64)>)]) -> std::ops::Range<f64> {
    if chart.unit_interval {
        return 0.0..1.05;
    }
    let top = series
        .iter()
        .flat_map(|(_, p)| p)
        .fold(0.0f64, |m, p| m.max(p.1))
        * 1.1;
    0.0..top.max(1e-9)
}

/// Error against the reference solve (RMSE, log-log, left) and PSNR of the images (decoded for latent
/// models, right) against NFE, one line per sampler (and guidance scale): the curve sampler papers draw.
fn accuracy_vs_nfe<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    cells: &[CellResult],
) -> DrawResult<DB> {
    let several = cells
        .iter()
        .any(|c| cells.iter().any(|d| d.guidance != c.guidance));
    let name = |c: &CellResult| match several {
        true => format!("{} g{}", c.label, c.guidance),
        false => c.label.clone(),
    };
    let nfe = |c: &CellResult| c.nfe as f64;
    let decoded = cells.iter().any(|c| c.scores.has(PSNR_DECODED));
    let rmse = lines(cells, name, |c| {
        Some((nfe(c), c.score(RMSE).filter(|&e| e > 0.0)?))
    });
    let psnr_key = if decoded { PSNR_DECODED } else { PSNR };
    let psnr = lines(cells, name, |c| Some((nfe(c), c.score(psnr_key)?)));
    let points = || rmse.iter().chain(&psnr).flat_map(|(_, p)| p.iter());
    let (x_lo, x_hi) = points().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p.0), hi.max(p.0))
    });
    let x = (x_lo * 0.8).max(0.5)..(x_hi * 1.25).max(1.0);
    let (e_lo, e_hi) = rmse
        .iter()
        .flat_map(|(_, p)| p)
        .fold((f64::MAX, f64::MIN), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
    let (p_lo, p_hi) = psnr
        .iter()
        .flat_map(|(_, p)| p)
        .fold((f64::MAX, f64::MIN), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
    let (left, right) = area.split_horizontally(area.dim_in_pixel().0 / 2);
    let mut chart = ChartBuilder::on(&left)
        .caption("Error against the reference solve", (FONT_NAME, 18))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(
            x.clone().log_scale(),
            ((e_lo * 0.7).min(1.0)..(e_hi * 1.4).max(1e-12)).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("NFE (model evaluations per sample)")
        .y_desc("RMSE of the samples (lower is better)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .y_labels(8)
        .light_line_style(TRANSPARENT)
        .label_style((FONT_NAME, 13))
        .axis_desc_style((FONT_NAME, 14))
        .draw()?;
    if !rmse.is_empty() {
        draw_lines(&mut chart, &rmse)?;
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    }
    let span = (p_hi - p_lo).max(1.0);
    let mut chart = ChartBuilder::on(&right)
        .caption("PSNR against the reference solve", (FONT_NAME, 18))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(
            x.log_scale(),
            (p_lo - span * 0.1).min(p_hi)..(p_hi + span * 0.1),
        )?;
    chart
        .configure_mesh()
        .x_desc("NFE (model evaluations per sample)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .y_desc(match decoded {
            true => "PSNR of the decoded images, dB",
            false => "PSNR, dB (higher is better)",
        })
        .label_style((FONT_NAME, 13))
        .axis_desc_style((FONT_NAME, 14))
        .draw()?;
    if !psnr.is_empty() {
        draw_lines(&mut chart, &psnr)?;
    }
    Ok(())
}

/// Points grouped into named lines (in first-seen order), each sorted by x.
fn lines(
    cells: &[CellResult],
    name: impl Fn(&CellResult) -> String,
    point: impl Fn(&CellResult) -> Option<(f64, f64)>,
) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut out: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for c in cells {
        let Some(p) = point(c) else { continue };
        let n = name(c);
        match out.iter_mut().find(|(l, _)| *l == n) {
            Some((_, pts)) => pts.push(p),
            None => out.push((n, vec![p])),
        }
    }
    for (_, pts) in &mut out {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// FID (left) and prompt accuracy (right) against the guidance scale, one line per sampler and step
/// count: the classic trade-off of classifier-free guidance.
fn quality_vs_guidance<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    cells: &[CellResult],
) -> DrawResult<DB> {
    let name = |c: &CellResult| format!("{} {}", c.label, c.steps);
    let (g_lo, g_hi) = cells.iter().fold((f64::MAX, f64::MIN), |(lo, hi), c| {
        (lo.min(c.guidance), hi.max(c.guidance))
    });
    let span = (g_hi - g_lo).max(1e-9);
    let x = (g_lo - span * 0.05)..(g_hi + span * 0.05);
    let charts: Vec<Chart> = charts().filter(|c| c.against_guidance).collect();
    let panels = area.split_evenly((1, charts.len().max(1)));
    for (chart, panel) in charts.iter().zip(&panels) {
        let series = lines(cells, name, |c| Some((c.guidance, c.score(chart.key)?)));
        let mut plot = ChartBuilder::on(panel)
            .caption(format!("{} against guidance", chart.name), (FONT_NAME, 18))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(x.clone(), y_range(chart, &series))?;
        plot.configure_mesh()
            .x_desc("guidance scale g")
            .y_desc(chart.y_desc)
            .label_style((FONT_NAME, 13))
            .axis_desc_style((FONT_NAME, 14))
            .draw()?;
        if series.is_empty() {
            continue;
        }
        draw_lines(&mut plot, &series)?;
        draw_legend(&mut plot, SeriesLabelPosition::MiddleRight)?;
    }
    Ok(())
}

/// Each named line with its points marked, in the palette's colours, labelled for the legend.
fn draw_lines<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    series: &[(String, Vec<(f64, f64)>)],
) -> DrawResult<DB>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (i, (label, pts)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))?
            .label(label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, colour.filled())))?;
    }
    Ok(())
}

/// The legend box the run plots use.
fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> DrawResult<DB> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT_NAME, 13))
        .draw()
}

/// Milliseconds per sample for each cell, split into model and sampler time.
fn time_per_sample<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    cells: &[CellResult],
) -> DrawResult<DB> {
    let per_sample =
        |c: &CellResult, ms_per_step: f64| ms_per_step * c.steps as f64 / c.samples.max(1) as f64;
    let top = cells.iter().map(|c| c.ms_per_sample).fold(0.0f64, f64::max) * 1.15;
    let names: Vec<String> = cells.iter().map(|c| c.name.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption("Time per sample", (FONT_NAME, 20))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d((0..cells.len()).into_segmented(), 0.0..top.max(1e-9))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(cells.len().max(1))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .y_desc("ms per sample")
        .label_style((FONT_NAME, 12))
        .axis_desc_style((FONT_NAME, 14))
        .draw()?;
    let (model_colour, sampler_colour) = (COLOURS[0], COLOURS[1]);
    chart
        .draw_series(cells.iter().enumerate().map(|(i, c)| {
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (
                        SegmentValue::Exact(i + 1),
                        per_sample(c, c.model_ms_per_step),
                    ),
                ],
                model_colour.filled(),
            );
            bar.set_margin(0, 0, 12, 12);
            bar
        }))?
        .label("model")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], model_colour.filled()));
    chart
        .draw_series(cells.iter().enumerate().map(|(i, c)| {
            let model = per_sample(c, c.model_ms_per_step);
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), model),
                    (
                        SegmentValue::Exact(i + 1),
                        model + per_sample(c, c.sampler_ms_per_step),
                    ),
                ],
                sampler_colour.filled(),
            );
            bar.set_margin(0, 0, 12, 12);
            bar
        }))?
        .label("sampler")
        .legend(move |(x, y)| {
            Rectangle::new([(x, y - 5), (x + 14, y + 5)], sampler_colour.filled())
        });
    draw_legend(&mut chart, SeriesLabelPosition::MiddleRight)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_tiles_fit_their_columns_for_short_names() {
        // 8×8 samples upscale to 96-pixel tiles with their gutter, wider than a short name needs.
        let shape = [1, 8, 8];
        let white = vec![1.0; 2 * 64];
        let columns = [
            Column {
                name: "a",
                images: &white,
            },
            Column {
                name: "b",
                images: &white,
            },
        ];
        let dir = std::env::temp_dir().join(format!("difflab-comparison-{}", std::process::id()));
        let path = dir.join("comparison.png");
        let rows: Vec<String> = (0..4).map(|s| format!("seed {s}")).collect();
        comparison_grid(&columns, shape, &rows, &path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let (left, tile) = (64, 96);
        assert_eq!(
            img.width() as usize,
            left + 2 * (tile + 8),
            "two columns of 96-pixel tiles"
        );
        assert_eq!(
            img.height() as usize,
            28 + 2 * (tile + 4) + 4,
            "two seeds shown, not four"
        );
        // Each column's tiles are drawn inside it: white sample pixels in both halves.
        let white_in = |x0: usize| {
            (x0..x0 + tile + 8).any(|x| img.get_pixel(x as u32, 28 + 48).0 == [255, 255, 255])
                && (x0..x0 + tile + 8).any(|x| img.get_pixel(x as u32, 28 + 48).0 == [40, 40, 40])
        };
        assert!(white_in(left) && white_in(left + tile + 8));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
