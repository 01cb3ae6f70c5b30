//! One error for "doing X on path P failed: reason", so every output error names its file and what
//! difflab was doing, in words rather than an OS code or a debug dump.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// An I/O step on a path that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {doing} {}: {reason}", path.display())]
pub struct PathError {
    /// What difflab was doing, e.g. "create the output folder".
    pub doing: &'static str,
    pub path: PathBuf,
    pub reason: String,
}

impl PathError {
    /// An I/O error's reason in words: which part of the path is a file, or the OS message without
    /// its code.
    pub fn io(doing: &'static str, path: &Path, e: &std::io::Error) -> Self {
        PathError::other(doing, path, reason(path, e))
    }

    pub fn other(doing: &'static str, path: &Path, reason: impl std::fmt::Display) -> Self {
        PathError {
            doing,
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

/// `map_err(at("write", path))`.
pub fn at<'a>(
    doing: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> PathError + 'a {
    move |e| PathError::io(doing, path, &e)
}

/// An I/O error in words: which part of `path` is a file, or the OS message without its code.
pub fn reason(path: &Path, e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::NotADirectory | ErrorKind::AlreadyExists => {
            if let Some(file) = path.ancestors().skip(1).find(|a| a.is_file()) {
                return format!("{} is a file, not a folder", file.display());
            }
        }
        ErrorKind::IsADirectory => return "it is a folder, not a file".into(),
        ErrorKind::PermissionDenied => return "permission denied".into(),
        _ => {}
    }
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_in_the_way_is_named() {
        let dir = std::env::temp_dir().join(format!("difflab-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("afile");
        std::fs::write(&file, "x").unwrap();
        let out = file.join("out");
        let e = std::fs::create_dir_all(&out)
            .map_err(at("create the output folder", &out))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "cannot create the output folder {}: {} is a file, not a folder",
                out.display(),
                file.display()
            )
        );
        let e = std::fs::read_to_string(&dir)
            .map_err(at("read", &dir))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("cannot read {}: it is a folder, not a file", dir.display())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
