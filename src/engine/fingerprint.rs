//! What a model is, byte for byte: the SHA-256 of every file a network reads — the graph, the external data its
//! initializers name, the configs and tokenizer files beside it. A file's digest is kept in difflab's cache
//! folder under its (path, size, mtime, ctime, inode, device), so an unchanged multi-gigabyte model is never read
//! again, while any write to it (which moves its ctime, whatever its mtime says) makes it read afresh.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::graph_io::external_data;

/// A file as the cache knows it: its identity and the digest of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Known {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    inode: u64,
    device: u64,
    sha256: String,
}

impl Known {
    fn stat(meta: &std::fs::Metadata, sha256: String) -> Self {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Known {
            size: meta.len(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
            inode: meta.ino(),
            device: meta.dev(),
            sha256,
        }
    }

    fn same_file(&self, other: &Known) -> bool {
        (
            self.size,
            self.mtime_ns,
            self.ctime_ns,
            self.inode,
            self.device,
        ) == (
            other.size,
            other.mtime_ns,
            other.ctime_ns,
            other.inode,
            other.device,
        )
    }
}

/// The cache file, read once per process and written whole (atomically) when it learns a digest.
static KNOWN: Mutex<Option<BTreeMap<String, Known>>> = Mutex::new(None);

fn cache_file() -> PathBuf {
    crate::cache_dir::cache_dir().join("fingerprints.json")
}

/// A file written this recently may still be being written within its timestamp's resolution: its digest is
/// computed but not remembered.
const SETTLE_NS: i128 = 2_000_000_000;

/// The SHA-256 of `path`'s bytes, from the cache when the file is unchanged since it was last read.
pub fn file_digest(path: &Path) -> std::io::Result<String> {
    let meta = std::fs::metadata(path)?;
    let key = std::fs::canonicalize(path)?.to_string_lossy().into_owned();
    let now = Known::stat(&meta, String::new());
    let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    let map = known.get_or_insert_with(load);
    if let Some(k) = map.get(&key).filter(|k| k.same_file(&now)) {
        return Ok(k.sha256.clone());
    }
    let digest = hash_file(path)?;
    let settled = now_ns() - now.mtime_ns.max(now.ctime_ns) > SETTLE_NS;
    if settled {
        map.insert(key, Known::stat(&meta, digest.clone()));
        save(map);
    }
    Ok(digest)
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// The cache as written, less the files that are gone (so it does not grow with every temporary model).
fn load() -> BTreeMap<String, Known> {
    let mut map: BTreeMap<String, Known> = std::fs::read(cache_file())
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    map.retain(|path, _| Path::new(path).exists());
    map
}

/// Best effort: a cache that cannot be written only means reading the files again next time.
fn save(map: &BTreeMap<String, Known>) {
    let path = cache_file();
    if let Ok(bytes) = serde_json::to_vec(map) {
        let _ = crate::atomic_file::write_atomic(&path, &bytes);
    }
}

fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(hex(&hash.finalize()))
}

/// Every file an ONNX network reads: the graph and the external-data files its initializers name (which must
/// exist: ONNX Runtime cannot load the model without them).
pub fn network_files(model: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files = vec![model.to_path_buf()];
    let dir = model.parent().unwrap_or(Path::new("."));
    for location in external_data(model)? {
        let file = dir.join(&location);
        if !file.is_file() {
            return Err(format!(
                "{}: its weights are kept in {location}, which is not there ({}); copy it beside the model",
                model.display(),
                file.display()
            ));
        }
        files.push(file);
    }
    Ok(files)
}

/// One digest of several files, each named by its path relative to `root` (so a moved folder keeps its
/// fingerprint, and a renamed part changes it).
pub fn files_digest(root: &Path, files: &[PathBuf]) -> std::io::Result<String> {
    let mut hash = Sha256::new();
    for file in files {
        let name = file.strip_prefix(root).unwrap_or(file);
        hash.update(name.to_string_lossy().as_bytes());
        hash.update([0]);
        hash.update(file_digest(file)?.as_bytes());
    }
    Ok(hex(&hash.finalize()))
}

/// Bytes as lowercase hex, as digests are written.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_byte_changes_the_digest_and_an_unchanged_file_is_not_reread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weights.bin");
        std::fs::write(&path, b"abcd").unwrap();
        let first = file_digest(&path).unwrap();
        assert_eq!(first, hash_file(&path).unwrap());
        // Same size and mtime, different bytes: the ctime moved, so the digest is computed again.
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::fs::write(&path, b"abce").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_ne!(file_digest(&path).unwrap(), first);
    }

    #[test]
    fn the_cache_remembers_only_settled_files() {
        let meta_of = |size, ctime_ns| Known {
            size,
            mtime_ns: 0,
            ctime_ns,
            inode: 1,
            device: 1,
            sha256: "x".into(),
        };
        assert!(meta_of(4, 10).same_file(&meta_of(4, 10)));
        assert!(!meta_of(4, 10).same_file(&meta_of(4, 11)));
        assert!(!meta_of(4, 10).same_file(&meta_of(5, 10)));
    }
}
