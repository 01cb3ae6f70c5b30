//! `difflab metrics --images DIR`: each image tag of each run as a PNG strip (step × image).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use image::RgbaImage;

use crate::metrics::image_strip::{compose, rows_of};
use crate::metrics::{Store, tag_matches};

/// Writes DIR/RUN/TAG.png for every image tag matching `patterns`, and a line per strip to `out`.
pub fn write_strips(
    store: &Store,
    dir: &Path,
    patterns: &[String],
    out: &mut dyn Write,
) -> Result<()> {
    let mut written = 0;
    for run in store.runs() {
        for tag in run.image_tags() {
            if !patterns.is_empty() && !patterns.iter().any(|p| tag_matches(p, tag)) {
                continue;
            }
            let mut rows = Vec::new();
            let mut steps = Vec::new();
            for (step, images) in rows_of(run, tag) {
                let mut row = Vec::new();
                for (path, format, image) in images {
                    match load(path, format, image) {
                        Ok(img) => row.push(img),
                        Err(e) => eprintln!("{}: {tag} at step {step}: {e:#}", run.name),
                    }
                }
                if !row.is_empty() {
                    rows.push(row);
                    steps.push(step);
                }
            }
            let Some(strip) = compose(&rows) else {
                continue;
            };
            let path = strip_path(dir, &run.name, tag);
            save(&strip, &path)?;
            written += 1;
            let shown: Vec<String> = steps.iter().map(i64::to_string).collect();
            writeln!(
                out,
                "{}: {tag}: steps {} -> {}",
                run.name,
                shown.join(", "),
                path.display()
            )?;
        }
    }
    if written == 0 {
        writeln!(out, "no images to write")?;
    }
    Ok(())
}

/// DIR/RUN/TAG.png, the `/` of run and tag kept as folders (the run `.` is DIR itself); a part that could
/// leave DIR becomes `_`.
fn strip_path(dir: &Path, run: &str, tag: &str) -> PathBuf {
    let safe = |part: &str| match part {
        "" | "." | ".." => "_".to_string(),
        p => p.to_string(),
    };
    let mut path = dir.to_path_buf();
    for part in run.split('/').filter(|p| *p != ".") {
        path.push(safe(part));
    }
    let mut parts: Vec<String> = tag.split('/').map(safe).collect();
    if let Some(last) = parts.last_mut() {
        last.push_str(".png");
    }
    path.extend(parts);
    path
}

fn load(
    path: &Path,
    format: crate::metrics::Format,
    image: &crate::metrics::LogImage,
) -> Result<RgbaImage> {
    let png = format
        .load_image(path, &image.source)
        .with_context(|| format!("reading {}", path.display()))?;
    let decoded = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
        .context("decoding its PNG")?;
    Ok(decoded.to_rgba8())
}

fn save(strip: &RgbaImage, path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut png = Vec::new();
    strip.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    crate::atomic_file::write_atomic(path, &png)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_paths_stay_in_their_folder_and_keep_dots() {
        let dir = Path::new("out");
        assert_eq!(
            strip_path(dir, ".", "noise/gray"),
            Path::new("out/noise/gray.png")
        );
        assert_eq!(
            strip_path(dir, "runs/a", "eval.fid"),
            Path::new("out/runs/a/eval.fid.png")
        );
        assert_eq!(strip_path(dir, "..", "../x"), Path::new("out/_/_/x.png"));
    }
}
