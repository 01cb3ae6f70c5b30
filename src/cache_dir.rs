//! Where difflab keeps what it can always recompute (file fingerprints, TensorRT engines): `$DIFFLAB_CACHE_DIR`,
//! else `$XDG_CACHE_HOME/difflab`, else `~/.cache/difflab`, else a folder in the temp folder.

use std::path::PathBuf;

pub fn cache_dir() -> PathBuf {
    let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = set("DIFFLAB_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    set("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| set("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("difflab")
}
