//! Files written so that a reader sees the old content or the new, never a part.

use std::path::Path;

use crate::path_error::{PathError, at};

/// Writes a file so readers see the old or the new content, never a part: temp file, then rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PathError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(at("create the folder for", path))?;
    }
    let tmp = temp_path(path);
    std::fs::write(&tmp, bytes).map_err(at("write", path))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        PathError::io("write", path, &e)
    })
}

/// The temp file a write of `path` goes through: in the same folder (so the rename is atomic), named for this
/// process and ending in `.tmp<pid>`, so nothing that lists files by their extension takes it for the file.
pub fn temp_path(path: &Path) -> std::path::PathBuf {
    path.with_extension(format!(
        "{}.tmp{}",
        path.extension().and_then(|e| e.to_str()).unwrap_or(""),
        std::process::id()
    ))
}
