//! `difflab ui`: the dashboard on an experiment file.

use std::path::{Path, PathBuf};

use crate::tui::{self, images::ImageMode};

/// The experiment `difflab` opens when given no command.
pub const DEFAULT_EXPERIMENT: &str = "experiments/default.toml";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The experiment file (TOML); saving it reruns the cells whose settings changed.
    pub experiment: PathBuf,
    /// How sample images are drawn: halfblocks work everywhere (and are used inside tmux); auto asks
    /// the terminal for sixel, kitty or iTerm2 graphics.
    #[arg(long, value_enum, default_value_t = ImageMode::Auto)]
    pub images: ImageMode,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    // Checked before anything touches the terminal: raw mode on a pipe would fail halfway.
    if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
        anyhow::bail!(
            "the dashboard needs a terminal, and stdin or stdout is not one; run it in a terminal (or tmux), or run the experiment headless with `difflab run {}`",
            args.experiment.display()
        );
    }
    tui::run(tui::Options {
        experiment: args.experiment.clone(),
        images: args.images,
    })
}

/// `difflab` alone: the dashboard on the default experiment, or a clear word on how to open another.
pub fn run_default() -> anyhow::Result<()> {
    let path = Path::new(DEFAULT_EXPERIMENT);
    if !path.is_file() {
        anyhow::bail!(
            "{DEFAULT_EXPERIMENT} not found (difflab with no command opens it); open another experiment with `difflab ui experiments/analytic.toml`"
        );
    }
    run(&Args {
        experiment: path.to_path_buf(),
        images: ImageMode::Auto,
    })
}
