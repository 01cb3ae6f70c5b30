//! A tag's logged images as one PNG: a row per step, the step's images side by side (`difflab metrics
//! --images`), so a run's validation samples read top to bottom as training went.

use image::{Rgba, RgbaImage};

use super::{LogImage, Run};

/// Most steps drawn in one strip: evenly spaced over the run, first and last included, so a long run's
/// strip stays a readable size.
pub const MAX_ROWS: usize = 32;
/// Pixels between images and rows.
const GAP: u32 = 2;

/// The steps of `images` drawn in a strip: all of them up to [`MAX_ROWS`], else evenly spaced ones.
pub fn strip_steps(images: &[&LogImage]) -> Vec<i64> {
    let mut steps: Vec<i64> = images.iter().map(|i| i.step).collect();
    steps.sort_unstable();
    steps.dedup();
    if steps.len() <= MAX_ROWS {
        return steps;
    }
    let last = steps.len() - 1;
    let mut picked: Vec<i64> = (0..MAX_ROWS)
        .filter_map(|k| steps.get(k * last / (MAX_ROWS - 1)).copied())
        .collect();
    picked.dedup();
    picked
}

/// The strip of decoded images, one row per entry of `rows` (each a step's images in order); `None` when
/// there is nothing to draw.
pub fn compose(rows: &[Vec<RgbaImage>]) -> Option<RgbaImage> {
    let cell_w = rows.iter().flatten().map(|i| i.width()).max()?;
    let cell_h = rows.iter().flatten().map(|i| i.height()).max()?;
    let columns = rows.iter().map(Vec::len).max()? as u32;
    let width = columns * cell_w + (columns.saturating_sub(1)) * GAP;
    let height = rows.len() as u32 * cell_h + (rows.len() as u32).saturating_sub(1) * GAP;
    let mut strip = RgbaImage::from_pixel(width, height, Rgba([24, 24, 24, 255]));
    for (r, row) in rows.iter().enumerate() {
        for (c, img) in row.iter().enumerate() {
            let x = c as u32 * (cell_w + GAP);
            let y = r as u32 * (cell_h + GAP);
            image::imageops::overlay(&mut strip, img, i64::from(x), i64::from(y));
        }
    }
    Some(strip)
}

/// An image with the log it is in.
pub type Located<'a> = (&'a std::path::Path, super::Format, &'a LogImage);

/// The images of `tag` in `run` grouped by the steps a strip draws.
pub fn rows_of<'a>(run: &'a Run, tag: &str) -> Vec<(i64, Vec<Located<'a>>)> {
    let images = run.images(tag);
    let all: Vec<&LogImage> = images.iter().map(|(_, _, i)| *i).collect();
    strip_steps(&all)
        .into_iter()
        .map(|step| {
            (
                step,
                images
                    .iter()
                    .filter(|(_, _, i)| i.step == step)
                    .copied()
                    .collect(),
            )
        })
        .collect()
}
