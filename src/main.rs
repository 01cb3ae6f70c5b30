use clap::{Parser, Subcommand};

/// A terminal lab for diffusion models.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read training logs (JSON lines, CSV, TensorBoard event files): summary, plots, follow.
    Metrics(difflab::cli::metrics::MetricsArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Metrics(args) => difflab::cli::metrics::run(args),
    }
}
