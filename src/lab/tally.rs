//! What a cell's samples add up to, in a form that adds across shards: feature sums and rows, prompt
//! hits, squared errors against the reference solve, and the preview images, each sample named by its
//! index in the cell. A whole cell is the tally of one shard; the scores come from a tally either way.

use std::io::Cursor;
use std::path::Path;

use ndarray::{Array1, Array2, ArrayD, IxDyn};
use ndarray_npy::{NpzReader, NpzWriter};
use serde::{Deserialize, Serialize};

use crate::atomic_file::write_atomic;
use crate::path_error::PathError;
use crate::quality::{FeatureSums, FrameChange, Hits, SquaredError};

/// A cell's (or a shard's part of a cell's) samples, reduced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Each sample's index among the cell's items, in the order the rows below are.
    pub items: Vec<usize>,
    /// The leading `preview` of `items` are previews; `previews` holds their images.
    pub preview: usize,
    pub previews: Vec<f32>,
    pub features: Option<FeatureTally>,
    pub hits: Option<Hits>,
    pub against: Option<Against>,
    /// A video model's clips' change from frame to frame.
    pub frame_change: Option<FrameChange>,
    /// Frames per sample (a video model's features are one row per frame); 1 for images (0 is read as 1).
    pub frames: usize,
}

/// Feature sums for FID and the rows themselves for KID (in `Tally::items` order).
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureTally {
    pub sums: FeatureSums,
    pub rows: Vec<f32>,
}

/// Squared errors against the reference solve: of the samples, and of the decoded images.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Against {
    pub reference: String,
    pub data: SquaredError,
    pub decoded: Option<SquaredError>,
}

/// The scalars of a tally file, as JSON inside it.
#[derive(Serialize, Deserialize)]
struct Meta {
    key: String,
    preview: usize,
    hits: Option<Hits>,
    against: Option<Against>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    frame_change: Option<FrameChange>,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    frames: usize,
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

impl Tally {
    /// Adds the tallies of one cell's shards into the cell's: samples in cell order.
    pub fn merge(parts: Vec<Tally>) -> Result<Tally, String> {
        let mut all = Tally::default();
        let mut previews: Vec<(usize, &[f32])> = Vec::new();
        let mut rows: Vec<(usize, &[f32])> = Vec::new();
        for part in &parts {
            let preview_size = part.previews.len() / part.preview.max(1);
            previews.extend(
                (part.items.iter().copied())
                    .zip(part.previews.chunks_exact(preview_size.max(1)))
                    .take(part.preview),
            );
            all.preview += part.preview;
            if let Some(f) = &part.features {
                // A clip has a feature row per frame.
                let per_item = f.sums.dim.max(1) * part.frames.max(1);
                rows.extend(
                    part.items
                        .iter()
                        .copied()
                        .zip(f.rows.chunks_exact(per_item)),
                );
                match &mut all.features {
                    Some(a) => a.sums.merge(&f.sums)?,
                    None => {
                        all.features = Some(FeatureTally {
                            sums: f.sums.clone(),
                            rows: Vec::new(),
                        })
                    }
                }
            }
            match (&mut all.hits, &part.hits) {
                (Some(a), Some(h)) => a.merge(h)?,
                (None, Some(h)) => all.hits = Some(h.clone()),
                _ => {}
            }
            match (&mut all.frame_change, &part.frame_change) {
                (Some(a), Some(p)) => a.merge(p),
                (None, Some(p)) => all.frame_change = Some(*p),
                _ => {}
            }
            all.frames = part.frames;
            match (&mut all.against, &part.against) {
                (Some(a), Some(p)) => {
                    a.data.merge(&p.data);
                    if let (Some(d), Some(pd)) = (&mut a.decoded, &p.decoded) {
                        d.merge(pd);
                    }
                }
                (None, Some(p)) => all.against = Some(p.clone()),
                _ => {}
            }
        }
        let mut items: Vec<usize> = parts.iter().flat_map(|p| p.items.iter().copied()).collect();
        items.sort_unstable();
        if items.windows(2).any(|w| w[0] == w[1]) {
            return Err("two shards drew the same sample".into());
        }
        previews.sort_by_key(|p| p.0);
        rows.sort_by_key(|r| r.0);
        all.previews = previews.iter().flat_map(|p| p.1.iter().copied()).collect();
        if let Some(f) = &mut all.features {
            f.rows = rows.iter().flat_map(|r| r.1.iter().copied()).collect();
        }
        all.items = items;
        Ok(all)
    }

    /// Writes the tally of the cell with `key` as an `.npz` (arrays `items`, `previews`, `sum`,
    /// `sum_outer`, `features` and `meta`, JSON), atomically.
    pub fn save(&self, path: &Path, key: &str, image_shape: [usize; 3]) -> Result<(), PathError> {
        let fail = |e: &dyn std::fmt::Display| PathError::other("write the tally", path, e);
        let meta = Meta {
            key: key.to_string(),
            preview: self.preview,
            hits: self.hits.clone(),
            against: self.against.clone(),
            frame_change: self.frame_change,
            frames: self.frames.max(1),
        };
        let meta = serde_json::to_vec(&meta).map_err(|e| fail(&e))?;
        let mut npz = NpzWriter::new(Cursor::new(Vec::new()));
        let items = Array1::from_iter(self.items.iter().map(|&i| i as i64));
        let [c, h, w] = image_shape;
        let previews =
            ArrayD::from_shape_vec(IxDyn(&[self.preview, c, h, w]), self.previews.clone())
                .map_err(|e| fail(&e))?;
        npz.add_array("meta", &Array1::from(meta))
            .map_err(|e| fail(&e))?;
        npz.add_array("items", &items).map_err(|e| fail(&e))?;
        npz.add_array("previews", &previews).map_err(|e| fail(&e))?;
        if let Some(f) = &self.features {
            let d = f.sums.dim;
            let sum = Array1::from(f.sums.sum.clone());
            let outer =
                Array2::from_shape_vec((d, d), f.sums.sum_outer.clone()).map_err(|e| fail(&e))?;
            let rows = Array2::from_shape_vec((f.rows.len() / d.max(1), d), f.rows.clone())
                .map_err(|e| fail(&e))?;
            npz.add_array("sum", &sum).map_err(|e| fail(&e))?;
            npz.add_array("sum_outer", &outer).map_err(|e| fail(&e))?;
            npz.add_array("features", &rows).map_err(|e| fail(&e))?;
        }
        let bytes = npz.finish().map_err(|e| fail(&e))?.into_inner();
        write_atomic(path, &bytes)
    }

    /// Reads a tally file back with the key it was written for and its images' C × H × W; a damaged
    /// file is an error that says what is wrong with it.
    pub fn load(path: &Path) -> Result<(Tally, String, [usize; 3]), String> {
        let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
        let mut npz = NpzReader::new(file).map_err(|e| format!("not a readable .npz ({e})"))?;
        let names = npz
            .names()
            .map_err(|e| format!("not a readable .npz ({e})"))?;
        let mut array = |name: &str| -> Result<ArrayD<f64>, String> {
            read_any(&mut npz, name).map_err(|e| format!("array `{name}`: {e}"))
        };
        let meta: Array1<u8> = {
            let raw = array("meta")?;
            raw.iter().map(|&v| v as u8).collect()
        };
        let meta: Meta = serde_json::from_slice(meta.as_slice().unwrap_or_default())
            .map_err(|e| format!("array `meta` is not the tally's JSON ({e})"))?;
        let items: Vec<usize> = array("items")?.iter().map(|&v| v as usize).collect();
        let previews = array("previews")?;
        let image_shape = match previews.shape() {
            &[n, c, h, w] if n == meta.preview && n <= items.len() => [c, h, w],
            other => {
                return Err(format!(
                    "array `previews` has shape {other:?} for {} previews of {} samples",
                    meta.preview,
                    items.len()
                ));
            }
        };
        let previews: Vec<f32> = previews.iter().map(|&v| v as f32).collect();
        let features = match names.iter().any(|n| n.trim_end_matches(".npy") == "sum") {
            true => {
                let sum: Vec<f64> = array("sum")?.iter().copied().collect();
                let outer = array("sum_outer")?;
                let rows: Vec<f32> = array("features")?.iter().map(|&v| v as f32).collect();
                let dim = sum.len();
                if outer.len() != dim * dim || rows.len() != items.len() * meta.frames * dim {
                    return Err(format!(
                        "{} features for {} samples of {dim} values, and a {}-value Σffᵀ",
                        rows.len(),
                        items.len(),
                        outer.len()
                    ));
                }
                Some(FeatureTally {
                    sums: FeatureSums {
                        dim,
                        count: items.len() * meta.frames,
                        sum,
                        sum_outer: outer.iter().copied().collect(),
                    },
                    rows,
                })
            }
            false => None,
        };
        let tally = Tally {
            items,
            preview: meta.preview,
            previews,
            features,
            hits: meta.hits,
            against: meta.against,
            frame_change: meta.frame_change,
            frames: meta.frames,
        };
        Ok((tally, meta.key, image_shape))
    }
}

/// An array of any of the element types a tally holds, as f64 (exact for each of them).
fn read_any(npz: &mut NpzReader<std::fs::File>, name: &str) -> Result<ArrayD<f64>, String> {
    if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<f64>, IxDyn>(name) {
        return Ok(a);
    }
    if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<f32>, IxDyn>(name) {
        return Ok(a.mapv(f64::from));
    }
    if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<i64>, IxDyn>(name) {
        return Ok(a.mapv(|v| v as f64));
    }
    match npz.by_name::<ndarray::OwnedRepr<u8>, IxDyn>(name) {
        Ok(a) => Ok(a.mapv(f64::from)),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shard's tally of `items` (previews first), with 2 features and 1-value images per sample.
    fn part(items: Vec<usize>, preview: usize) -> Tally {
        let rows: Vec<f32> = items
            .iter()
            .flat_map(|&i| [i as f32, 1.0 - i as f32])
            .collect();
        Tally {
            previews: items[..preview].iter().map(|&i| i as f32 / 10.0).collect(),
            preview,
            features: Some(FeatureTally {
                sums: FeatureSums::of(&rows, 2),
                rows,
            }),
            hits: Some(Hits {
                hits: vec![items.len() / 2],
                totals: vec![items.len()],
            }),
            against: Some(Against {
                reference: "reference ddim 100".into(),
                data: SquaredError {
                    count: items.len(),
                    sum: items.len() as f64 * 0.25,
                },
                decoded: None,
            }),
            frame_change: Some(FrameChange {
                sum: 0.5 * items.len() as f64,
                pairs: items.len(),
            }),
            frames: 1,
            items,
        }
    }

    #[test]
    fn a_tally_reads_back_as_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cells/a.npz");
        let tally = part(vec![1, 4, 5], 1);
        tally.save(&path, "key-1", [1, 1, 1]).expect("saved");
        let (back, key, shape) = Tally::load(&path).expect("read back");
        assert_eq!((back, key.as_str(), shape), (tally, "key-1", [1, 1, 1]));
        std::fs::write(&path, b"PK\x03\x04 not the rest").expect("written");
        assert!(
            Tally::load(&path)
                .unwrap_err()
                .contains("not a readable .npz")
        );
    }

    #[test]
    fn merged_parts_are_in_cell_order() {
        // Cell of 6 with 2 previews over 2 shards: shard 0 draws previews [0] and [2, 3], shard 1 [1]
        // and [4, 5].
        let merged =
            Tally::merge(vec![part(vec![1, 4, 5], 1), part(vec![0, 2, 3], 1)]).expect("merged");
        let whole = part(vec![0, 1, 2, 3, 4, 5], 2);
        assert_eq!(merged.items, whole.items);
        assert_eq!(merged.previews, whole.previews);
        assert_eq!(
            merged.features.as_ref().map(|f| &f.rows),
            whole.features.as_ref().map(|f| &f.rows)
        );
        assert_eq!(
            merged.hits,
            Some(Hits {
                hits: vec![2],
                totals: vec![6]
            })
        );
        assert_eq!(merged.against.map(|a| a.data.count), Some(6));
        assert!(Tally::merge(vec![part(vec![0, 1], 1), part(vec![1], 1)]).is_err());
    }
}
