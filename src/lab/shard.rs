//! Shards: one run split over the tasks of a job array. Shard I of N draws, of every cell, the I-th of N
//! contiguous parts of its preview samples and of the rest, so each shard steps every sampler (the cells'
//! costs differ) and a cell's previews and its reference solve split alike. A sample's noise depends on
//! its seed alone, so which shard drew it changes nothing.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::plan::{Cell, Plan};
use crate::atomic_file::write_atomic;
use crate::experiment::Experiment;

/// Shard `index` of `count`, counting from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

/// The environment variables a shard is read from, in the order they are tried.
pub const SHARD_VARIABLES: &str = "SLURM_ARRAY_TASK_ID (with SLURM_ARRAY_TASK_COUNT or MIN/MAX), \
     JOB_COMPLETION_INDEX (with JOB_COMPLETIONS) or RANK (with WORLD_SIZE)";

impl Shard {
    /// `--shard I/N`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let usage =
            format!("--shard {text:?}: write I/N, shard I of N counting from 0, e.g. --shard 0/4");
        let (i, n) = text.split_once('/').ok_or_else(|| usage.clone())?;
        let number = |s: &str| s.trim().parse::<usize>().map_err(|_| usage.clone());
        Self::new(number(i)?, number(n)?)
    }

    pub fn new(index: usize, count: usize) -> Result<Self, String> {
        if count == 0 {
            return Err("a run has at least one shard: N must be 1 or more".into());
        }
        if index >= count {
            return Err(format!(
                "shard {index} of {count} does not exist: shards count from 0, so I must be below N \
                 (0 ≤ I < {count})"
            ));
        }
        Ok(Self { index, count })
    }

    /// The shard a job-array task is, from its environment (`var` reads one variable), and where it
    /// came from; `None` outside a job array.
    pub fn from_env(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<(Self, String)>, String> {
        let number = |name: &str| -> Result<Option<usize>, String> {
            match var(name) {
                None => Ok(None),
                Some(v) => v.trim().parse().map(Some).map_err(|_| {
                    format!("{name}={v:?} is not a whole number; pass --shard I/N instead")
                }),
            }
        };
        if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
            // Arrays may start at 1 (--array=1-8) or step (--array=0-15:4): the shard is the task's place.
            let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let step = number("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
            let count = match (
                number("SLURM_ARRAY_TASK_COUNT")?,
                number("SLURM_ARRAY_TASK_MAX")?,
            ) {
                (Some(n), _) => n,
                (None, Some(max)) => max.saturating_sub(min) / step + 1,
                (None, None) => {
                    return Err(
                        "SLURM_ARRAY_TASK_ID is set without SLURM_ARRAY_TASK_COUNT or \
                                SLURM_ARRAY_TASK_MAX; pass --shard I/N"
                            .into(),
                    );
                }
            };
            let index = id.checked_sub(min).ok_or_else(|| {
                format!("SLURM_ARRAY_TASK_ID={id} is below SLURM_ARRAY_TASK_MIN={min}")
            })? / step;
            let source =
                format!("SLURM_ARRAY_TASK_ID={id}, array from {min} step {step}, {count} tasks");
            return Ok(Some((Self::new(index, count)?, source)));
        }
        let pairs = [
            ("JOB_COMPLETION_INDEX", "JOB_COMPLETIONS"),
            ("RANK", "WORLD_SIZE"),
        ];
        for (index_var, count_var) in pairs {
            let Some(index) = number(index_var)? else {
                continue;
            };
            let count = number(count_var)?.ok_or_else(|| {
                format!(
                    "{index_var}={index} is set without {count_var}: set {count_var} to the number of \
                     shards, or pass --shard {index}/N"
                )
            })?;
            let source = format!("{index_var}={index}, {count_var}={count}");
            return Ok(Some((Self::new(index, count)?, source)));
        }
        Ok(None)
    }

    /// This shard's part of `n` things: contiguous, the parts' sizes differing by at most one.
    pub fn part(&self, n: usize) -> Range<usize> {
        n * self.index / self.count..n * (self.index + 1) / self.count
    }

    /// The indices into `cell.items` this shard draws: its part of the previews, then of the rest.
    pub fn items(&self, cell: &Cell) -> Vec<usize> {
        let preview = self.part(cell.preview);
        let rest = self.part(cell.samples() - cell.preview);
        preview
            .chain(rest.start + cell.preview..rest.end + cell.preview)
            .collect()
    }

    /// `cell` as this shard draws it: its items and previews only.
    pub fn restrict(&self, cell: &Cell) -> Cell {
        Cell {
            items: self
                .items(cell)
                .into_iter()
                .map(|i| cell.items[i])
                .collect(),
            preview: self.part(cell.preview).len(),
            ..cell.clone()
        }
    }

    /// More shards than the largest cell has samples would leave shards without work.
    pub fn check_work(&self, cells: &[Cell]) -> Result<(), String> {
        let most = cells.iter().map(Cell::samples).max().unwrap_or(0);
        if self.count > most {
            return Err(format!(
                "{} shards for cells of at most {most} samples: every shard needs a sample of each \
                 cell; use at most {most} shards, or more seeds or [quality] samples",
                self.count
            ));
        }
        Ok(())
    }

    /// The shard's folder under the output folder: `shards/<I>-of-<N>`.
    pub fn folder_name(&self) -> String {
        format!("{}-of-{}", self.index, self.count)
    }
}

/// What one shard runs: its part of every cell and reference, where it writes, and each cell's samples
/// as indices among the whole cell's (`None` when the run is not sharded).
pub struct ShardPlan {
    pub cells: Vec<Cell>,
    pub references: Vec<Cell>,
    pub out: PathBuf,
    pub items: Option<Vec<Vec<usize>>>,
}

/// What a shard ran, written into its folder before it starts: the merge checks that every shard ran
/// the same plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub experiment: PathBuf,
    pub name: String,
    pub shard: String,
    pub plan: String,
    pub cells: Vec<String>,
}

/// The folder of `shard` under an output folder.
pub fn shard_folder(out: &Path, shard: Shard) -> PathBuf {
    out.join("shards").join(shard.folder_name())
}

/// The plan a run with `shard` (or without) carries out; a shard's manifest is written here.
pub fn shard_plan(
    experiment: &Experiment,
    plan: Plan,
    shard: Option<Shard>,
) -> Result<ShardPlan, String> {
    let Some(shard) = shard else {
        return Ok(ShardPlan {
            cells: plan.cells,
            references: plan.references,
            out: experiment.output_dir.clone(),
            items: None,
        });
    };
    shard.check_work(&plan.cells)?;
    let out = shard_folder(&experiment.output_dir, shard);
    let manifest = Manifest {
        experiment: std::fs::canonicalize(&experiment.path)
            .unwrap_or_else(|_| experiment.path.clone()),
        name: experiment.name.clone(),
        shard: shard.to_string(),
        plan: plan.key(),
        cells: plan.cells.iter().map(|c| c.name.clone()).collect(),
    };
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
    write_atomic(&out.join("shard.json"), &text).map_err(|e| e.to_string())?;
    Ok(ShardPlan {
        items: Some(plan.cells.iter().map(|c| shard.items(c)).collect()),
        cells: plan.cells.iter().map(|c| shard.restrict(c)).collect(),
        references: plan.references.iter().map(|r| shard.restrict(r)).collect(),
        out,
    })
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn parse_takes_i_of_n_and_names_each_mistake() {
        assert_eq!(Shard::parse("2/3"), Ok(Shard { index: 2, count: 3 }));
        assert!(Shard::parse("3/2").unwrap_err().contains("0 ≤ I < 2"));
        assert!(
            Shard::parse("0/0")
                .unwrap_err()
                .contains("at least one shard")
        );
        assert!(Shard::parse("two/3").unwrap_err().contains("write I/N"));
        assert!(Shard::parse("3").unwrap_err().contains("write I/N"));
    }

    #[test]
    fn parts_cover_everything_once_in_order() {
        for n in [0, 1, 7, 16, 100] {
            for count in 1..=9 {
                let parts: Vec<usize> = (0..count)
                    .flat_map(|index| Shard { index, count }.part(n))
                    .collect();
                assert_eq!(parts, (0..n).collect::<Vec<_>>(), "{n} over {count}");
            }
        }
    }

    #[test]
    fn slurm_arrays_from_zero_from_one_and_with_steps() {
        let zero = env(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ]);
        assert_eq!(
            Shard::from_env(zero).unwrap().unwrap().0,
            Shard { index: 2, count: 3 }
        );
        let one = env(&[
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "4"),
        ]);
        assert_eq!(
            Shard::from_env(one).unwrap().unwrap().0,
            Shard { index: 0, count: 4 }
        );
        let step = env(&[
            ("SLURM_ARRAY_TASK_ID", "8"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "12"),
            ("SLURM_ARRAY_TASK_STEP", "4"),
        ]);
        assert_eq!(
            Shard::from_env(step).unwrap().unwrap().0,
            Shard { index: 2, count: 4 }
        );
        let lone = env(&[("SLURM_ARRAY_TASK_ID", "2")]);
        assert!(Shard::from_env(lone).unwrap_err().contains("--shard I/N"));
    }

    #[test]
    fn kubernetes_and_torchrun_indices_need_their_counts() {
        let k8s = env(&[("JOB_COMPLETION_INDEX", "1"), ("JOB_COMPLETIONS", "4")]);
        assert_eq!(
            Shard::from_env(k8s).unwrap().unwrap().0,
            Shard { index: 1, count: 4 }
        );
        let torch = env(&[("RANK", "3"), ("WORLD_SIZE", "4")]);
        assert_eq!(
            Shard::from_env(torch).unwrap().unwrap().0,
            Shard { index: 3, count: 4 }
        );
        let lone = env(&[("JOB_COMPLETION_INDEX", "1")]);
        assert!(
            Shard::from_env(lone)
                .unwrap_err()
                .contains("JOB_COMPLETIONS")
        );
        let bad = env(&[("RANK", "x"), ("WORLD_SIZE", "4")]);
        assert!(Shard::from_env(bad).unwrap_err().contains("RANK=\"x\""));
        assert_eq!(Shard::from_env(env(&[])), Ok(None));
        let over = env(&[("RANK", "4"), ("WORLD_SIZE", "4")]);
        assert!(Shard::from_env(over).is_err());
    }
}
