//! The ONNX engine on the tiny models in tests/data/onnx (built by make_models.py): numbers, shapes, roles,
//! providers and the errors for bad models. Runs on the CPU build of ONNX Runtime that the build fetched.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::path::{Path, PathBuf};

use difflab::engine::{
    AttemptOutcome, DenoiseError, Denoiser, ElemType, EngineError, OnnxDenoiser, OnnxOptions,
    PredictionSource, ProviderKind, ProviderOptions, Role, RoleError, TimingPlan, inspect,
};
use difflab::sampler::PredictionType;

fn model(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/onnx")
        .join(name)
}

fn cpu() -> OnnxOptions {
    OnnxOptions {
        providers: ProviderOptions::cpu(),
        intra_threads: Some(1),
        ..OnnxOptions::default()
    }
}

fn load(name: &str) -> OnnxDenoiser {
    OnnxDenoiser::load(model(name), &cpu()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn load_err(name: &str, options: &OnnxOptions) -> EngineError {
    match OnnxDenoiser::load(model(name), options) {
        Ok(_) => panic!("{name} loaded, but it should not"),
        Err(e) => e,
    }
}

/// A batch of `batch` 4×8×8 samples with distinct values in [-1, 1].
fn sample(batch: usize) -> Vec<f32> {
    (0..batch * 256)
        .map(|i| ((i as f32) * 0.37).sin())
        .collect()
}

fn assert_close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "value {i}: got {g}, want {w}"
        );
    }
}

/// 0.5 * x + t, t per item.
fn half_plus_t(x: &[f32], t: &[f64]) -> Vec<f32> {
    let per = x.len() / t.len();
    x.iter()
        .enumerate()
        .map(|(i, v)| 0.5 * v + t[i / per] as f32)
        .collect()
}

#[test]
fn f32_model_gives_the_expected_numbers() {
    let mut m = load("tiny_f32.onnx");
    let info = m.info();
    assert_eq!(info.sample_shape, [4, 8, 8]);
    assert_eq!(info.provider, "CPUExecutionProvider");
    assert_eq!(info.name, "tiny_f32.onnx");
    assert_eq!(m.roles().sample.name, "sample");
    assert_eq!(m.roles().timestep.name, "timestep");
    assert_eq!(m.roles().output.name, "out_sample");
    assert_eq!(m.roles().fixed_batch, None);

    let x = sample(3);
    let t = [0.0, 10.0, 999.0];
    let mut out = vec![0.0; x.len()];
    m.predict(&x, &t, &mut out).unwrap();
    assert_close(&out, &half_plus_t(&x, &t), 1e-6);

    // The same model answers again, with another batch size.
    let x = sample(1);
    let mut out = vec![0.0; x.len()];
    m.predict(&x, &[42.0], &mut out).unwrap();
    assert_close(&out, &half_plus_t(&x, &[42.0]), 1e-6);
}

#[test]
fn integer_timesteps_are_rounded() {
    let mut m = load("tiny_f32.onnx");
    let x = sample(2);
    let mut out = vec![0.0; x.len()];
    m.predict(&x, &[2.6, 7.4], &mut out).unwrap();
    assert_close(&out, &half_plus_t(&x, &[3.0, 7.0]), 1e-6);
}

#[test]
fn f16_model_converts_at_the_boundary() {
    let mut m = load("tiny_f16.onnx");
    assert_eq!(m.roles().sample.name, "x");
    assert_eq!(m.roles().output.name, "eps");
    let x = sample(2);
    let t = [1.0, 3.0];
    let mut out = vec![0.0; x.len()];
    m.predict(&x, &t, &mut out).unwrap();
    assert_close(&out, &half_plus_t(&x, &t), 2e-3);
}

#[test]
fn bf16_model_converts_at_the_boundary() {
    let mut m = load("tiny_bf16.onnx");
    assert_eq!(m.roles().sample.elem, ElemType::Bf16);
    let x = sample(2);
    let t = [1.0, 3.0];
    let mut out = vec![0.0; x.len()];
    m.predict(&x, &t, &mut out).unwrap();
    // bfloat16 keeps 8 significant bits: the inputs and the output are each rounded to 1 part in 256.
    let want = half_plus_t(&x, &t);
    for (got, want) in out.iter().zip(&want) {
        assert!(
            (got - want).abs() <= 1e-2 * want.abs().max(1.0),
            "{got} vs {want}"
        );
    }
}

#[test]
fn fixed_batch_model_splits_batches() {
    let mut m = load("tiny_fixed_batch1.onnx");
    assert_eq!(m.roles().fixed_batch, Some(1));
    assert!(!m.roles().timestep_per_item);
    let x = sample(5);
    let t = [900.0, 700.0, 700.0, 1.0, 0.0];
    let mut out = vec![0.0; x.len()];
    m.predict(&x, &t, &mut out).unwrap();
    assert_close(&out, &half_plus_t(&x, &t), 1e-6);
}

#[test]
fn class_labels_are_fed() {
    let mut m = load("tiny_class_cond.onnx");
    assert_eq!(m.roles().class_labels.as_ref().unwrap().name, "y");
    let x = sample(2);
    let t = [5.0, 6.0];
    let mut out = vec![0.0; x.len()];

    // Default label 0.
    m.predict(&x, &t, &mut out).unwrap();
    assert_close(&out, &half_plus_t(&x, &t), 1e-6);

    m.set_class_labels(&[3, 7]).unwrap();
    m.predict(&x, &t, &mut out).unwrap();
    let mut want = half_plus_t(&x, &t);
    for (i, w) in want.iter_mut().enumerate() {
        *w += 0.01 * [3.0, 7.0][i / 256];
    }
    assert_close(&out, &want, 1e-6);

    // Too few labels for the batch is an error, not a panic.
    let x3 = sample(3);
    let mut out3 = vec![0.0; x3.len()];
    let err = m.predict(&x3, &[1.0, 1.0, 1.0], &mut out3).unwrap_err();
    assert!(err.to_string().contains("2 class labels"), "{err}");
}

#[test]
fn conditioning_defaults_to_zeros_and_can_be_set() {
    let mut m = load("tiny_text_cond.onnx");
    assert_eq!(
        m.roles().conditioning.as_ref().unwrap().name,
        "encoder_hidden_states"
    );
    let x = sample(2);
    let t = [5.0, 6.0];
    let mut out = vec![0.0; x.len()];
    m.predict(&x, &t, &mut out).unwrap();
    assert_close(&out, &half_plus_t(&x, &t), 1e-6);

    // One item shared by the batch: mean 2.
    m.set_conditioning(vec![2.0; 3 * 16]).unwrap();
    m.predict(&x, &t, &mut out).unwrap();
    let want: Vec<f32> = half_plus_t(&x, &t).iter().map(|v| v + 2.0).collect();
    assert_close(&out, &want, 1e-6);

    // One item each: means 1 and -1.
    let mut cond = vec![1.0; 3 * 16];
    cond.extend(vec![-1.0; 3 * 16]);
    m.set_conditioning(cond).unwrap();
    m.predict(&x, &t, &mut out).unwrap();
    let want: Vec<f32> = half_plus_t(&x, &t)
        .iter()
        .enumerate()
        .map(|(i, v)| v + if i < 256 { 1.0 } else { -1.0 })
        .collect();
    assert_close(&out, &want, 1e-6);

    let err = m.set_conditioning(vec![1.0; 5]).unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");
}

#[test]
fn wrong_batch_lengths_are_errors() {
    let mut m = load("tiny_f32.onnx");
    let x = sample(2);
    let mut out = vec![0.0; x.len()];
    let err = m.predict(&x, &[1.0], &mut out).unwrap_err();
    assert!(matches!(err, DenoiseError::BatchShape { .. }), "{err}");
    let err = m.predict(&x[..100], &[1.0], &mut out[..100]).unwrap_err();
    assert!(matches!(err, DenoiseError::BatchShape { .. }), "{err}");
    let err = m.predict(&x, &[1.0, 2.0], &mut out[..256]).unwrap_err();
    assert!(matches!(err, DenoiseError::OutputLength { .. }), "{err}");
}

#[test]
fn wrong_input_names_say_what_the_model_has() {
    let err = load_err("bad_input_names.onnx", &cpu());
    let EngineError::Roles {
        problem: RoleError::MissingRole { role, .. },
        ..
    } = &err
    else {
        panic!("unexpected error: {err}");
    };
    assert_eq!(*role, Role::Sample);
    let text = err.to_string();
    for needle in ["noisy sample", "'image'", "'noise_level'", "--role sample="] {
        assert!(text.contains(needle), "{needle:?} not in: {text}");
    }
}

#[test]
fn role_overrides_win() {
    let mut options = cpu();
    options.roles.insert(Role::Sample, "image".into());
    options.roles.insert(Role::Timestep, "noise_level".into());
    let mut m = OnnxDenoiser::load(model("bad_input_names.onnx"), &options).unwrap();
    let x = sample(1);
    let mut out = vec![0.0; x.len()];
    m.predict(&x, &[4.0], &mut out).unwrap();
    assert_close(&out, &half_plus_t(&x, &[4.0]), 1e-6);

    options.roles.insert(Role::Timestep, "sigma".into());
    let err = load_err("bad_input_names.onnx", &options);
    assert!(
        matches!(
            &err,
            EngineError::Roles {
                problem: RoleError::OverrideNotFound { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn wrong_rank_is_an_error() {
    let err = load_err("bad_rank.onnx", &cpu());
    assert!(
        matches!(
            &err,
            EngineError::Roles {
                problem: RoleError::WrongRank {
                    role: Role::Sample,
                    rank: 2,
                    ..
                },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("rank 4"), "{err}");
}

#[test]
fn wrong_output_shape_is_an_error_at_load() {
    let err = load_err("bad_output_shape.onnx", &cpu());
    assert!(
        matches!(
            &err,
            EngineError::Roles {
                problem: RoleError::OutputShape { .. },
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("[batch, 4, 4, 4]") && text.contains("[batch, 4, 8, 8]"),
        "{text}"
    );
}

#[test]
fn wrong_output_shape_hidden_by_dynamic_dims_is_an_error_at_run() {
    let mut m = load("hidden_bad_output_shape.onnx");
    let x = sample(2);
    let mut out = vec![0.0; x.len()];
    let err = m.predict(&x, &[1.0, 2.0], &mut out).unwrap_err();
    assert!(matches!(err, DenoiseError::OutputShape { .. }), "{err}");
    assert!(err.to_string().contains("[2, 4, 4, 4]"), "{err}");
}

#[test]
fn a_non_onnx_file_is_an_error() {
    let err = load_err("not_a_model.onnx", &cpu());
    assert!(matches!(&err, EngineError::NotOnnx { .. }), "{err}");
    assert!(err.to_string().contains("text file"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    let err = OnnxDenoiser::load(&empty, &cpu()).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");

    let zip = dir.path().join("model.pt.onnx");
    std::fs::write(&zip, b"PK\x03\x04rest of a torch checkpoint").unwrap();
    let err = OnnxDenoiser::load(&zip, &cpu()).unwrap_err();
    assert!(err.to_string().contains("zip archive"), "{err}");

    let err = OnnxDenoiser::load(dir.path(), &cpu()).unwrap_err();
    assert!(err.to_string().contains("folder"), "{err}");

    let err = OnnxDenoiser::load(dir.path().join("absent.onnx"), &cpu()).unwrap_err();
    assert!(matches!(&err, EngineError::ModelMissing { .. }), "{err}");
}

#[test]
fn a_truncated_file_is_an_error() {
    let good = std::fs::read(model("tiny_f32.onnx")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for keep in [good.len() / 2, good.len() - 7, 40] {
        let path = dir.path().join(format!("truncated_{keep}.onnx"));
        std::fs::write(&path, &good[..keep]).unwrap();
        let err = OnnxDenoiser::load(&path, &cpu()).unwrap_err();
        assert!(
            matches!(&err, EngineError::ModelLoad { .. }),
            "cut at {keep}: {err}"
        );
        if let EngineError::ModelLoad { message, .. } = &err {
            assert!(message.contains("truncated"), "cut at {keep}: {message}");
        }
    }
}

#[test]
fn unavailable_gpu_providers_fall_back_to_the_cpu() {
    let mut options = cpu();
    options.providers.preference = vec![ProviderKind::Cuda];
    let m = OnnxDenoiser::load(model("tiny_f32.onnx"), &options).unwrap();
    assert_eq!(m.provider(), ProviderKind::Cpu);
    let attempts = m.attempts();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].provider, ProviderKind::Cuda);
    let AttemptOutcome::NotAvailable(reason) = &attempts[0].outcome else {
        panic!("cuda: {:?}", attempts[0].outcome);
    };
    assert!(reason.contains("built without it"), "{reason}");
    assert_eq!(attempts[1].provider, ProviderKind::Cpu);
    assert_eq!(attempts[1].outcome, AttemptOutcome::Ran);

    options.providers.preference = ProviderKind::ALL.to_vec();
    let m = OnnxDenoiser::load(model("tiny_f32.onnx"), &options).unwrap();
    let outcomes: Vec<_> = m
        .attempts()
        .iter()
        .map(|a| (a.provider, &a.outcome))
        .collect();
    assert!(matches!(
        outcomes[0],
        (ProviderKind::TensorRt, AttemptOutcome::NotAvailable(_))
    ));
    assert!(matches!(
        outcomes[1],
        (ProviderKind::Cuda, AttemptOutcome::NotAvailable(_))
    ));
    assert_eq!(outcomes[2], (ProviderKind::Cpu, &AttemptOutcome::Ran));
    assert_eq!(m.info().provider, "CPUExecutionProvider");
}

#[test]
fn without_fallback_an_unavailable_provider_is_an_error() {
    let mut options = cpu();
    options.providers.preference = vec![ProviderKind::TensorRt, ProviderKind::Cpu];
    options.providers.fallback = false;
    let err = load_err("tiny_f32.onnx", &options);
    let EngineError::ProviderFailed { provider, attempts } = &err else {
        panic!("unexpected error: {err}");
    };
    assert_eq!(*provider, ProviderKind::TensorRt);
    assert_eq!(attempts.len(), 1);
    let text = err.to_string();
    assert!(
        text.contains("tensorrt") && text.contains("not available"),
        "{text}"
    );

    options.providers.preference = vec![ProviderKind::Cuda];
    let err = load_err("tiny_f32.onnx", &options);
    assert!(
        matches!(
            &err,
            EngineError::ProviderFailed {
                provider: ProviderKind::Cuda,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn prediction_type_comes_from_options_then_scheduler_config() {
    let m = load("tiny_f32.onnx");
    assert_eq!(m.info().prediction_type, PredictionType::Epsilon);
    assert_eq!(m.prediction_source(), &PredictionSource::Default);

    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("unet.onnx");
    std::fs::copy(model("tiny_f32.onnx"), &copy).unwrap();
    let config = dir.path().join("scheduler_config.json");
    std::fs::write(
        &config,
        r#"{"_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "prediction_type": "v_prediction"}"#,
    )
    .unwrap();
    let m = OnnxDenoiser::load(&copy, &cpu()).unwrap();
    assert_eq!(m.info().prediction_type, PredictionType::VPrediction);
    assert_eq!(
        m.prediction_source(),
        &PredictionSource::SchedulerConfig(config.clone())
    );

    let mut options = cpu();
    options.prediction_type = Some(PredictionType::Sample);
    let m = OnnxDenoiser::load(&copy, &options).unwrap();
    assert_eq!(m.info().prediction_type, PredictionType::Sample);

    std::fs::write(&config, r#"{"prediction_type": "flow"}"#).unwrap();
    let err = OnnxDenoiser::load(&copy, &cpu()).unwrap_err();
    assert!(err.to_string().contains("\"flow\""), "{err}");
}

#[test]
fn profiling_counts_nodes_per_provider() {
    let mut options = cpu();
    options.profile_nodes = true;
    let mut m = OnnxDenoiser::load(model("tiny_class_cond.onnx"), &options).unwrap();
    let x = sample(1);
    let mut out = vec![0.0; x.len()];
    m.predict(&x, &[1.0], &mut out).unwrap();
    let nodes = m.nodes_per_provider().unwrap().expect("profiling was on");
    assert!(nodes["CPUExecutionProvider"] >= 4, "{nodes:?}");
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    // Profiling has ended; the model still runs.
    m.predict(&x, &[1.0], &mut out).unwrap();
    assert_eq!(m.nodes_per_provider().unwrap(), None);
}

#[test]
fn inspect_reports_everything_info_prints() {
    let plan = TimingPlan {
        batch: 4,
        runs: Some(2),
        ..TimingPlan::default()
    };
    let report = inspect(model("tiny_f32.onnx"), &cpu(), &plan).unwrap();
    assert_eq!(report.provider, ProviderKind::Cpu);
    assert_eq!(report.timings.len(), 1);
    assert_eq!((report.timings[0].batch, report.timings[0].runs), (4, 2));
    assert!(report.peak_rss.is_some_and(|b| b > 1 << 20));
    assert!(
        report
            .nodes
            .as_ref()
            .is_some_and(|n| n.contains_key("CPUExecutionProvider"))
    );
    assert_eq!(report.inputs[0].1, Some(Role::Sample));
    assert_eq!(report.outputs[0].1, Some(Role::Output));
    let text = report.to_string();
    for needle in [
        "ONNX Runtime 1.",
        "found via",
        "sample",
        "-> noisy sample",
        "-> timestep",
        "-> output",
        "runs on   cpu",
        "batch 4",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
}
