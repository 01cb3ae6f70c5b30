use clap::{Parser, Subcommand};

mod cli;

/// A terminal lab for diffusion models.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Load an ONNX model and show the runtime, its inputs and outputs with their roles, the execution
    /// provider that runs it, and how long a call takes.
    Info(cli::info::InfoArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Info(args)) => cli::info::run(&args),
        None => Ok(()),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
