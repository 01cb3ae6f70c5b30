//! Finding W&B runs on disk and the media files beside them.

use std::io;
use std::path::{Component, Path};

use super::ImageSource;

const PREFIX: &str = "run-";
const SUFFIX: &str = ".wandb";

/// Whether `name` is the name of a W&B transaction log, `run-<id>.wandb`.
pub fn is_run_file(name: &str) -> bool {
    id_of(name).is_some()
}

/// The run id in a transaction log's file name (`run-<id>.wandb`).
pub fn run_id(path: &Path) -> Option<String> {
    id_of(path.file_name()?.to_str()?).map(str::to_string)
}

/// The id in `run-<id>.wandb`.
fn id_of(name: &str) -> Option<&str> {
    let id = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    (!id.is_empty()).then_some(id)
}

/// The name of the run whose transaction log is at `rel` (relative to the folder the user gave):
/// the folder holding the `wandb/` folder, then the run id, so that the parts of a run resumed
/// offline (two `offline-run-…-<id>` folders) share it.
///
/// `wandb_offline/wandb/offline-run-20261206_223805-dlabwb01/run-dlabwb01.wandb` is
/// `wandb_offline/dlabwb01`; a run folder not inside a `wandb/` folder counts from the folder
/// holding it; a log in the given folder itself is just its id.
pub fn run_key(rel: &Path) -> Option<String> {
    let id = run_id(rel)?;
    let mut folders: Vec<String> = rel
        .parent()
        .into_iter()
        .flat_map(Path::components)
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    // Drop the run folder, then the `wandb/` folder that holds run folders.
    folders.pop();
    if folders.last().is_some_and(|f| f == "wandb") {
        folders.pop();
    }
    folders.push(id);
    Some(folders.join("/"))
}

/// The bytes of a logged image: a file beside the transaction log at `log_path`. A path that
/// climbs out of the run folder (`..`) or is absolute is refused with `InvalidData`; a source
/// inside a record (which W&B does not write) with `InvalidInput`.
pub fn load_image(log_path: &Path, source: &ImageSource) -> io::Result<Vec<u8>> {
    let ImageSource::File(rel) = source else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "W&B images are files beside the run, not inside records",
        ));
    };
    let inside = rel
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !inside {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("media path {} leaves the run folder", rel.display()),
        ));
    }
    let folder = log_path.parent().unwrap_or(Path::new(""));
    std::fs::read(folder.join(rel))
}
