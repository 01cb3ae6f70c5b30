//! The order in which ONNX Runtime is looked for. Only file names matter here: nothing is loaded, so the
//! "libraries" are empty files.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use difflab::engine::runtime::{
    Candidate, DiscoveryInputs, RuntimeError, RuntimeSource, candidates, library_in,
};

const LIB: &str = "libonnxruntime.so.1.32.0";

fn fake_lib(dir: &Path, name: &str) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    fs::write(&path, b"").unwrap();
    path
}

/// A stand-in interpreter that answers the package probe with `capi` and `dist`.
#[cfg(unix)]
fn fake_python(dir: &Path, capi: &Path, dist: &str) -> OsString {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("python3");
    fs::write(
        &script,
        format!("#!/bin/sh\necho '{}'\necho '{dist}'\n", capi.display()),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    script.into_os_string()
}

struct Places {
    _root: tempfile::TempDir,
    env: PathBuf,
    caller: PathBuf,
    exe_dir: PathBuf,
    python: OsString,
    python_lib: PathBuf,
    bundled: PathBuf,
}

fn places() -> Places {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let env = fake_lib(&r.join("env"), LIB);
    let caller = fake_lib(&r.join("caller"), LIB);
    let exe_dir = r.join("bin");
    fake_lib(&exe_dir, "libonnxruntime.so");
    let capi = r.join("site-packages/onnxruntime/capi");
    let python_lib = fake_lib(&capi, LIB);
    fake_lib(&capi, "libonnxruntime_providers_cuda.so");
    let python = fake_python(r, &capi, "onnxruntime-gpu");
    let bundled = fake_lib(&r.join("cache"), LIB);
    Places {
        _root: root,
        env,
        caller,
        exe_dir,
        python,
        python_lib,
        bundled,
    }
}

fn all(p: &Places) -> DiscoveryInputs {
    DiscoveryInputs {
        env_path: Some(p.env.clone()),
        caller_path: Some(p.caller.clone()),
        exe_dir: Some(p.exe_dir.clone()),
        python: Some(p.python.clone()),
        bundled: Some(p.bundled.clone()),
    }
}

fn sources(found: &[Candidate]) -> Vec<RuntimeSource> {
    found.iter().map(|c| c.source.clone()).collect()
}

#[test]
fn env_var_comes_first_and_alone() {
    let p = places();
    let found = candidates(&all(&p)).unwrap();
    assert_eq!(
        found,
        vec![Candidate {
            source: RuntimeSource::EnvVar,
            path: p.env.clone()
        }]
    );
}

#[test]
fn caller_path_comes_next_and_may_be_a_folder() {
    let p = places();
    let mut inputs = all(&p);
    inputs.env_path = None;
    assert_eq!(
        sources(&candidates(&inputs).unwrap()),
        [RuntimeSource::Caller]
    );
    inputs.caller_path = Some(p.caller.parent().unwrap().to_path_buf());
    let found = candidates(&inputs).unwrap();
    assert_eq!(found[0].path, p.caller);
}

#[cfg(unix)]
#[test]
fn then_the_executable_folder_python_and_the_bundled_build_in_order() {
    let p = places();
    let mut inputs = all(&p);
    inputs.env_path = None;
    inputs.caller_path = None;
    let found = candidates(&inputs).unwrap();
    assert_eq!(
        sources(&found),
        [
            RuntimeSource::NextToExecutable,
            RuntimeSource::PythonPackage("onnxruntime-gpu".into()),
            RuntimeSource::Bundled
        ]
    );
    assert_eq!(found[0].path, p.exe_dir.join("libonnxruntime.so"));
    assert_eq!(found[1].path, p.python_lib);
    assert_eq!(found[2].path, p.bundled);

    // Absent places are left out.
    inputs.exe_dir = Some(p.env.parent().unwrap().join("no-such-dir"));
    inputs.python = Some("/no/such/python3".into());
    assert_eq!(
        sources(&candidates(&inputs).unwrap()),
        [RuntimeSource::Bundled]
    );
    fs::remove_file(&p.bundled).unwrap();
    assert!(candidates(&inputs).unwrap().is_empty());
}

#[test]
fn explicit_places_that_hold_nothing_are_errors() {
    let p = places();
    let mut inputs = all(&p);
    inputs.env_path = Some(p.env.with_file_name("missing.so"));
    let err = candidates(&inputs).unwrap_err();
    assert!(
        matches!(
            &err,
            RuntimeError::Missing {
                origin: RuntimeSource::EnvVar,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().starts_with("ORT_DYLIB_PATH points at"),
        "{err}"
    );

    inputs.env_path = None;
    let empty = p.env.parent().unwrap().join("empty");
    fs::create_dir_all(&empty).unwrap();
    inputs.caller_path = Some(empty);
    let err = candidates(&inputs).unwrap_err();
    assert!(matches!(&err, RuntimeError::EmptyFolder { .. }), "{err}");
}

#[test]
fn library_in_prefers_the_plain_name_then_the_highest_version() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    fake_lib(dir, "libonnxruntime_providers_shared.so");
    fake_lib(dir, "libonnxruntime.so.1.9.0");
    fake_lib(dir, "libonnxruntime.so.1.32.0");
    fake_lib(dir, "libonnxruntime.so.1.22.1");
    assert_eq!(library_in(dir), Some(dir.join("libonnxruntime.so.1.32.0")));
    fake_lib(dir, "libonnxruntime.so");
    assert_eq!(library_in(dir), Some(dir.join("libonnxruntime.so")));
    assert_eq!(library_in(&dir.join("absent")), None);
}

/// The process environment: ORT_DYLIB_PATH and DIFFLAB_PYTHON. The only test here that touches environment
/// variables (the others pass their inputs by hand), so parallel tests do not see them change.
#[test]
fn from_process_reads_the_environment() {
    let p = places();
    // SAFETY: no other test in this binary reads or writes these variables.
    unsafe {
        std::env::set_var("ORT_DYLIB_PATH", &p.env);
        std::env::set_var("DIFFLAB_PYTHON", "none");
    }
    let inputs = DiscoveryInputs::from_process(Some(&p.caller));
    assert_eq!(inputs.env_path.as_deref(), Some(p.env.as_path()));
    assert_eq!(inputs.caller_path.as_deref(), Some(p.caller.as_path()));
    assert_eq!(inputs.python, None);
    assert_eq!(
        candidates(&inputs).unwrap()[0].source,
        RuntimeSource::EnvVar
    );

    unsafe {
        std::env::set_var("ORT_DYLIB_PATH", "");
        std::env::set_var("DIFFLAB_PYTHON", &p.python);
    }
    let inputs = DiscoveryInputs::from_process(None);
    assert_eq!(
        inputs.env_path, None,
        "an empty ORT_DYLIB_PATH counts as unset"
    );
    assert_eq!(inputs.python.as_deref(), Some(p.python.as_os_str()));
    assert!(inputs.exe_dir.is_some());

    unsafe {
        std::env::remove_var("ORT_DYLIB_PATH");
        std::env::remove_var("DIFFLAB_PYTHON");
    }
    let inputs = DiscoveryInputs::from_process(None);
    assert_eq!(
        inputs.python.as_deref(),
        Some(std::ffi::OsStr::new("python3"))
    );
}
