use clap::{Parser, Subcommand};
use difflab::cli;

/// A terminal lab for diffusion models: compare samplers on your own ONNX U-Net, read sample quality
/// and training curves.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the timesteps, sigmas and solver order a sampler uses at each step.
    Schedule(cli::schedule::Args),
    /// Compare samplers on the built-in analytic model, where the exact answer is known.
    Demo(cli::demo::Args),
    /// Load an ONNX model and show the runtime, its inputs and outputs with their roles, the execution
    /// provider that runs it, and how long a call takes.
    Info(cli::info::InfoArgs),
    /// Run an experiment headless: grids, results (JSON, CSV) and plots in its output folder.
    Run(cli::run::Args),
    /// Merge the shards of a sharded run (`run --shard`, `slurm`) into its results, grids and plots.
    Merge(cli::merge::Args),
    /// Run an experiment as a Slurm job array, one shard per task, and merge it after: writes the
    /// sbatch scripts and submits them where sbatch exists.
    Slurm(cli::slurm::Args),
    /// Open the dashboard on an experiment: samplers side by side as they run, training curves,
    /// quality against cost. `difflab` alone opens experiments/default.toml.
    Ui(cli::ui::Args),
    /// Read training logs (JSON lines, CSV, TensorBoard event files): summary, plots, follow.
    Metrics(cli::metrics::MetricsArgs),
}

fn main() {
    restore_sigpipe();
    let result = match Cli::parse().command {
        Some(Command::Schedule(args)) => cli::schedule::run(&args),
        Some(Command::Demo(args)) => cli::demo::run(&args),
        Some(Command::Info(args)) => cli::info::run(&args),
        Some(Command::Run(args)) => cli::run::run(&args),
        Some(Command::Merge(args)) => cli::merge::run(&args),
        Some(Command::Slurm(args)) => cli::slurm::run(&args),
        Some(Command::Ui(args)) => cli::ui::run(&args),
        Some(Command::Metrics(args)) => cli::metrics::run(args),
        None => cli::ui::run_default(),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Rust ignores SIGPIPE, so a write to a closed pipe (`difflab run --json | head`) would panic in
/// `println!`. Restoring the default ends the process quietly, with status 141, as Unix tools do.
fn restore_sigpipe() {
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
