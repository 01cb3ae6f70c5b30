//! `difflab merge OUT`: the shards a job array wrote under OUT/shards, merged into OUT's results,
//! grids and plots, exactly as one machine would have written them.

use std::path::PathBuf;

use crate::experiment::Experiment;
use crate::lab::merge::{experiment_of_shards, merge, shard_counts};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The output folder the shards wrote into (their folders are OUT/shards/<I>-of-<N>).
    pub out: PathBuf,
    /// The experiment file; default: the one the shards ran (recorded in their shard.json).
    #[arg(long)]
    pub experiment: Option<PathBuf>,
    /// Print the merged results as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let path = match &args.experiment {
        Some(p) => p.clone(),
        None => experiment_of_shards(&args.out).map_err(anyhow::Error::msg)?,
    };
    let mut experiment = Experiment::load(&path)?;
    experiment.output_dir = args.out.clone();
    let mut why = Vec::new();
    for count in shard_counts(&args.out) {
        match merge(&experiment, count) {
            Ok(merged) => {
                eprintln!(
                    "merged {count} shards of {} ({} cells)",
                    path.display(),
                    merged.len()
                );
                return super::run::report_merged(&experiment, &merged, args.json);
            }
            Err(e) => why.push(format!("\n  {count} shards: {e}")),
        }
    }
    anyhow::bail!("nothing merged:{}", why.concat())
}
