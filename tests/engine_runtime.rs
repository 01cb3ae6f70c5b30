//! Loading ONNX Runtime from bad places gives clear errors and leaves the process able to load a good one.
//!
//! ONNX Runtime is set up once per process, so this binary holds one test that runs its steps in order.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::path::Path;

use difflab::engine::runtime::{DiscoveryInputs, RuntimeError, RuntimeSource, runtime_from};
use difflab::engine::{EngineError, OnnxDenoiser, OnnxOptions, ProviderOptions, runtime};

fn only(caller: &Path) -> DiscoveryInputs {
    DiscoveryInputs {
        caller_path: Some(caller.to_path_buf()),
        ..DiscoveryInputs::default()
    }
}

#[test]
fn bad_runtime_paths_fail_clearly_and_do_not_poison_the_process() {
    // ORT_DYLIB_PATH would win over the caller's path: where it is set, the test runs again without it.
    if std::env::var_os("ORT_DYLIB_PATH").is_some() {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "bad_runtime_paths_fail_clearly_and_do_not_poison_the_process",
            ])
            .env_remove("ORT_DYLIB_PATH")
            .status()
            .unwrap();
        assert!(status.success(), "the test without ORT_DYLIB_PATH failed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();

    // A path that does not exist.
    let missing = dir.path().join("nowhere/libonnxruntime.so");
    let err = runtime_from(&only(&missing)).unwrap_err();
    assert!(matches!(err, RuntimeError::Missing { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("nowhere/libonnxruntime.so"), "{text}");
    assert!(text.contains("pip install onnxruntime==1.32.0"), "{text}");
    assert!(text.contains("ORT_DYLIB_PATH"), "{text}");

    // The same through the model loader: a runtime error, not a panic.
    let options = OnnxOptions {
        providers: ProviderOptions::cpu(),
        runtime_path: Some(missing.clone()),
        ..OnnxOptions::default()
    };
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx/tiny_f32.onnx");
    let err = OnnxDenoiser::load(&model, &options).unwrap_err();
    assert!(
        matches!(err, EngineError::Runtime(RuntimeError::Missing { .. })),
        "{err}"
    );

    // A folder without a library.
    let err = runtime_from(&only(dir.path())).unwrap_err();
    assert!(matches!(err, RuntimeError::EmptyFolder { .. }), "{err}");

    // A file that is not a shared library.
    let fake = dir.path().join("libonnxruntime.so");
    std::fs::write(&fake, b"not a library").unwrap();
    let err = runtime_from(&only(&fake)).unwrap_err();
    assert!(matches!(err, RuntimeError::Load { .. }), "{err}");
    assert!(err.to_string().contains("not a shared library"), "{err}");

    // A real shared library that is not ONNX Runtime.
    let libc = [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
    ]
    .into_iter()
    .map(Path::new)
    .find(|p| p.exists());
    if let Some(libc) = libc {
        let err = runtime_from(&only(libc)).unwrap_err();
        assert!(err.to_string().contains("OrtGetApiBase"), "{err}");
    }

    // Nothing found anywhere.
    let err = runtime_from(&DiscoveryInputs::default()).unwrap_err();
    assert!(matches!(err, RuntimeError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("pip install"), "{err}");

    // After all that, the normal discovery still loads ONNX Runtime and runs a model.
    let rt = runtime(None).expect("the build fetched ONNX Runtime");
    assert!(rt.info.version.starts_with("1."), "{:?}", rt.info);
    assert!(
        rt.info
            .providers
            .iter()
            .any(|p| p == "CPUExecutionProvider")
    );
    assert!(
        matches!(
            rt.info.source,
            RuntimeSource::Bundled
                | RuntimeSource::PythonPackage(_)
                | RuntimeSource::NextToExecutable
        ),
        "{:?}",
        rt.info.source
    );

    let options = OnnxOptions {
        providers: ProviderOptions::cpu(),
        ..OnnxOptions::default()
    };
    OnnxDenoiser::load(&model, &options).expect("loads once a runtime is there");

    // Once loaded, asking for another library is refused plainly; the loaded one stays.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::copy(&rt.info.path, other.join("libonnxruntime.so")).unwrap();
    let err = runtime_from(&only(&other)).unwrap_err();
    assert!(matches!(err, RuntimeError::AlreadyLoaded { .. }), "{err}");
    // The same library again is fine.
    runtime_from(&only(&rt.info.path)).unwrap();
}
