//! `difflab slurm EXP --array N`: the sweep as a Slurm job array — one task per shard, then a merge job
//! that runs after every task — written as sbatch scripts and submitted where `sbatch` exists. With TensorRT
//! among the providers a prebuild job comes first: it builds the engines once (`run --load-only`) and the
//! array starts when it succeeds, so the tasks load the engines instead of each building them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::atomic_file::write_atomic;
use crate::engine::ProviderKind;
use crate::experiment::{Experiment, ModelSource};
use crate::lab::plan;
use crate::lab::shard::Shard;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The experiment file (TOML).
    pub experiment: PathBuf,
    /// Shards: the array's tasks (0 to N-1).
    #[arg(long, value_name = "N")]
    pub array: usize,
    /// Slurm partition (sbatch --partition).
    #[arg(long)]
    pub partition: Option<String>,
    /// Generic resources per task, e.g. gpu:1 (sbatch --gres).
    #[arg(long)]
    pub gres: Option<String>,
    /// Time limit per task, e.g. 04:00:00 (sbatch --time).
    #[arg(long)]
    pub time: Option<String>,
    /// Write results here instead of the experiment's output folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the scripts and the sbatch commands; write and submit nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// No prebuild job before the array, even with TensorRT (the tasks then take turns building engines).
    #[arg(long)]
    pub no_prebuild: bool,
}

/// The scripts: the engine prebuild (with TensorRT), the array of shards and the merge after it.
struct Scripts {
    prebuild: Option<String>,
    shards: String,
    merge: String,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let mut experiment = Experiment::load(&args.experiment)?;
    if let Some(out) = &args.out {
        experiment.output_dir = out.clone();
    }
    let shard =
        Shard::new(0, args.array).map_err(|e| anyhow::anyhow!("--array {}: {e}", args.array))?;
    shard
        .check_work(&plan(&experiment, None)?)
        .map_err(|e| anyhow::anyhow!("--array {}: {e}", args.array))?;
    let out = absolute(&experiment.output_dir)?;
    let scripts = scripts(args, &experiment, &out)?;
    let folder = out.join("slurm");
    let paths = ["prebuild", "shards", "merge"].map(|s| folder.join(format!("{s}.sbatch")));
    let [prebuild_path, shards_path, merge_path] = &paths;
    let steps = submit_commands(scripts.prebuild.is_some(), &paths);
    if args.dry_run {
        if let Some(prebuild) = &scripts.prebuild {
            println!("# {}\n{prebuild}", prebuild_path.display());
        }
        println!("# {}\n{}", shards_path.display(), scripts.shards);
        println!("# {}\n{}", merge_path.display(), scripts.merge);
        println!("# submit with:\n# {}", steps.join("\n# "));
        return Ok(());
    }
    if let Some(prebuild) = &scripts.prebuild {
        write_atomic(prebuild_path, prebuild.as_bytes())?;
    }
    write_atomic(shards_path, scripts.shards.as_bytes())?;
    write_atomic(merge_path, scripts.merge.as_bytes())?;
    eprintln!("wrote the scripts in {}", folder.display());
    let prebuild_id = match &scripts.prebuild {
        Some(_) => match sbatch(&[prebuild_path.as_os_str()]) {
            Ok(id) => Some(id),
            Err(_) => return not_here(&steps),
        },
        None => None,
    };
    let array_id = match &prebuild_id {
        Some(id) => {
            let after = format!("--dependency=afterok:{id}");
            sbatch(&[after.as_ref(), shards_path.as_os_str()])?
        }
        None => match sbatch(&[shards_path.as_os_str()]) {
            Ok(id) => id,
            Err(_) => return not_here(&steps),
        },
    };
    let dependency = format!("--dependency=afterany:{array_id}");
    let merge_id = sbatch(&[dependency.as_ref(), merge_path.as_os_str()])?;
    if let Some(id) = &prebuild_id {
        println!("{id}");
        eprintln!("submitted prebuild job {id}: it builds the TensorRT engines the tasks load");
    }
    println!("{array_id}");
    println!("{merge_id}");
    eprintln!(
        "submitted array job {array_id} ({} shards) and merge job {merge_id} after it\n  watch:   difflab \
         ui {} (or squeue -j {array_id},{merge_id})\n  results: {}/results.json, once job {merge_id} ends \
         (its log: {}/difflab-{}-merge-{merge_id}.out)",
        args.array,
        args.experiment.display(),
        out.display(),
        folder.display(),
        experiment.name
    );
    Ok(())
}

/// Without `sbatch` here: how to submit the written scripts on the cluster.
fn not_here(steps: &[String]) -> anyhow::Result<()> {
    eprintln!(
        "sbatch is not here: submit on the cluster with\n  {}",
        steps.join("\n  ")
    );
    Ok(())
}

/// The sbatch commands that submit the scripts in order, each job after the one before.
fn submit_commands(prebuild: bool, [prebuild_path, shards, merge]: &[PathBuf; 3]) -> Vec<String> {
    let mut steps = Vec::new();
    let mut array = format!("id=$(sbatch --parsable {})", shards.display());
    if prebuild {
        steps.push(format!(
            "pre=$(sbatch --parsable {})",
            prebuild_path.display()
        ));
        array = format!(
            "id=$(sbatch --parsable --dependency=afterok:${{pre%%;*}} {})",
            shards.display()
        );
    }
    steps.push(array);
    steps.push(format!(
        "sbatch --dependency=afterany:${{id%%;*}} {}",
        merge.display()
    ));
    steps
}

/// Submits with `sbatch --parsable`; returns the job id (without a `;cluster` suffix).
fn sbatch(args: &[&std::ffi::OsStr]) -> anyhow::Result<String> {
    let output = Command::new("sbatch")
        .arg("--parsable")
        .args(args)
        .output()?;
    if !output.status.success() {
        anyhow::bail!(
            "sbatch failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let id = text
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    match id.is_empty() {
        true => anyhow::bail!("sbatch printed no job id"),
        false => Ok(id),
    }
}

fn scripts(args: &Args, experiment: &Experiment, out: &Path) -> anyhow::Result<Scripts> {
    let binary = std::env::current_exe()?;
    let exp = absolute(&experiment.path)?;
    let logs = out.join("slurm");
    let name = format!("difflab-{}", experiment.name);
    let mut options = String::new();
    for (flag, value) in [("partition", &args.partition), ("time", &args.time)] {
        if let Some(v) = value {
            options.push_str(&format!("#SBATCH --{flag}={v}\n"));
        }
    }
    let gres = match &args.gres {
        Some(g) => format!("#SBATCH --gres={g}\n"),
        None => String::new(),
    };
    let shards = format!(
        "#!/bin/bash\n#SBATCH --job-name={name}\n#SBATCH --array=0-{last}\n#SBATCH --output={logs}/%x-%A_%a.out\n\
         {options}{gres}\
         # Task I runs shard I of {n} (difflab reads SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT) into\n\
         # {out}/shards/I-of-{n}; a rerun task (requeued, or sbatch --array=I by hand) skips what it finished.\n\
         set -euo pipefail\n\
         exec {binary} run {exp} --out {out_q}\n",
        last = args.array - 1,
        logs = logs.display(),
        n = args.array,
        out = out.display(),
        binary = quote(&binary),
        exp = quote(&exp),
        out_q = quote(out),
    );
    let builds_engines = experiment.model.providers.contains(&ProviderKind::TensorRt)
        && !matches!(experiment.model.source, ModelSource::Analytic);
    let prebuild = (builds_engines && !args.no_prebuild).then(|| {
            format!(
                "#!/bin/bash\n#SBATCH --job-name={name}-prebuild\n#SBATCH --output={logs}/%x-%j.out\n\
                 {options}{gres}\
                 # Builds the TensorRT engines once, for the shapes every task feeds; the array starts when it\n\
                 # succeeds and its tasks load them from the engine cache.\n\
                 set -euo pipefail\n\
                 exec {binary} run {exp} --out {out_q} --load-only\n",
                logs = logs.display(),
                binary = quote(&binary),
                exp = quote(&exp),
                out_q = quote(out),
            )
        });
    let merge = format!(
        "#!/bin/bash\n#SBATCH --job-name={name}-merge\n#SBATCH --output={logs}/%x-%j.out\n{options}\
         # After every shard (afterany: a failed shard is named here rather than leaving this job pending).\n\
         set -euo pipefail\n\
         exec {binary} merge {out_q} --experiment {exp}\n",
        logs = logs.display(),
        binary = quote(&binary),
        exp = quote(&exp),
        out_q = quote(out),
    );
    Ok(Scripts {
        prebuild,
        shards,
        merge,
    })
}

/// A path for a script that runs on another node: absolute.
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(std::path::absolute(path)?)
}

/// A path in single quotes for bash.
fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}
