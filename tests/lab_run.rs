//! The lab on the analytic model: every cell runs on the same seeds with batched model calls, results
//! are written, unchanged cells are reused, and a cancelled run keeps the cells it finished.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::path::{Path, PathBuf};

use difflab::experiment::Experiment;
use difflab::lab::{LabEvent, Results, RunOptions, start};

fn experiment(dir: &Path, samplers: &str) -> Experiment {
    let text = format!(
        "[model]\npath = \"analytic\"\nsample_shape = [1, 4, 4]\n[sampling]\nseeds = 4\nbatch = 64\n{samplers}"
    );
    let path = dir.join("lab.toml");
    std::fs::write(&path, text).unwrap();
    Experiment::load(&path).unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("difflab-lab-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const THREE: &str = "[[sampler]]\nname = \"ddim\"\nsteps = [5, 20]\nsettings = { clip_sample = false }\n[[sampler]]\nname = \"dpm++2m-karras\"\nsteps = 10\n";

fn run_to_end(e: &Experiment) -> Vec<LabEvent> {
    let lab = start(e.clone(), RunOptions::default());
    let events: Vec<LabEvent> = lab.events.iter().collect();
    lab.join();
    events
}

#[test]
fn cells_run_batched_and_are_reused_when_unchanged() {
    let dir = temp_dir("reuse");
    let e = experiment(&dir, THREE);
    let events = run_to_end(&e);
    let done: Vec<(usize, bool)> = events
        .iter()
        .filter_map(|ev| match ev {
            LabEvent::CellDone {
                cell,
                cached,
                images,
                ..
            } => {
                assert_eq!(images.len(), 4 * 16, "one preview image per seed");
                Some((*cell, *cached))
            }
            _ => None,
        })
        .collect();
    assert_eq!(done.len(), 3);
    assert!(done.iter().all(|(_, cached)| !cached));
    // The short cell finishes first: it does not wait for the others.
    assert_eq!(done[0].0, 0, "ddim 5 is reported first: {done:?}");
    let Some(LabEvent::Finished {
        model_calls,
        unbatched_model_calls,
        cancelled,
        error,
        ..
    }) = events.last()
    else {
        panic!("the run ends with Finished")
    };
    assert!(!cancelled && error.is_none(), "{error:?}");
    assert_eq!(*unbatched_model_calls, 5 + 20 + 10);
    assert_eq!(
        *model_calls, 20,
        "one shared call per step of the longest cell"
    );

    let results = Results::load(&e.output_dir.join("results.json"));
    assert_eq!(results.cells.len(), 3);
    for c in &results.cells {
        assert!(
            e.output_dir.join(&c.grid).is_file(),
            "{} has its grid",
            c.name
        );
        assert_eq!(c.nfe, c.steps);
    }
    assert!(e.output_dir.join("results.csv").is_file());

    // Same inputs: every cell is reused. A changed step count reruns only the new cell.
    let again = run_to_end(&e);
    let cached = again
        .iter()
        .filter(|ev| matches!(ev, LabEvent::CellDone { cached: true, .. }))
        .count();
    assert_eq!(cached, 3);
    let changed = experiment(&dir, &THREE.replace("steps = 10", "steps = 12"));
    let events = run_to_end(&changed);
    let fresh: Vec<&str> = events
        .iter()
        .filter_map(|ev| match ev {
            LabEvent::CellDone {
                cached: false,
                result,
                ..
            } => Some(result.name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(fresh, ["dpm++2m-karras 12"]);
}

/// A label edit reuses the samples but not the old name: results.json and the reported results carry the
/// cell's name now, with its grid under that name, and the old entry is gone.
#[test]
fn a_relabelled_cell_is_reused_under_its_new_name() {
    let dir = temp_dir("relabel");
    let e = experiment(&dir, THREE);
    run_to_end(&e);
    let relabelled = experiment(
        &dir,
        &THREE.replace("steps = 10", "steps = 10\nlabel = \"K\""),
    );
    let events = run_to_end(&relabelled);
    let reused: Vec<&str> = events
        .iter()
        .filter_map(|ev| match ev {
            LabEvent::CellDone {
                cached: true,
                result,
                ..
            } => Some(result.name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(reused, ["ddim 5", "ddim 20", "K 10"]);
    let results = Results::load(&e.output_dir.join("results.json"));
    let names: Vec<&str> = results.cells.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["ddim 5", "ddim 20", "K 10"]);
    let k = &results.cells[2];
    assert_eq!((k.label.as_str(), k.grid.as_str()), ("K", "cells/K_10.png"));
    assert!(e.output_dir.join(&k.grid).is_file());
}

/// A list of flow shifts is an axis: one cell per shift and step count, named by it, with the shift in
/// results.json.
#[test]
fn a_shift_list_makes_a_cell_per_shift() {
    let dir = temp_dir("shift");
    let text = "[model]\npath = \"analytic\"\nsample_shape = [1, 4, 4]\nprediction_type = \"flow_prediction\"\n\
                [sampling]\nseeds = 2\n[[sampler]]\nname = \"euler\"\nsteps = [4, 8]\nshift = [1, 3]\n";
    let path = dir.join("lab.toml");
    std::fs::write(&path, text).unwrap();
    let e = Experiment::load(&path).unwrap();
    run_to_end(&e);
    let results = Results::load(&e.output_dir.join("results.json"));
    let cells: Vec<(&str, Option<f64>)> = results
        .cells
        .iter()
        .map(|c| (c.name.as_str(), c.shift))
        .collect();
    assert_eq!(
        cells,
        [
            ("euler s1 4", Some(1.0)),
            ("euler s3 4", Some(3.0)),
            ("euler s1 8", Some(1.0)),
            ("euler s3 8", Some(3.0)),
        ]
    );
    assert!(
        results
            .cells
            .iter()
            .all(|c| c.class == "FlowMatchEulerDiscreteScheduler")
    );
}

/// On a flow model the web UIs' deterministic loops solve the flow's own ODE: on the analytic model in
/// rectified-flow form they converge to the flow Heun reference, res_multistep (order 2) faster than flow
/// Euler, whatever the schedule.
#[test]
fn web_ui_loops_converge_on_a_flow_model() {
    let dir = temp_dir("flow-loops");
    let text = "[model]\npath = \"analytic\"\nsample_shape = [1, 4, 4]\nprediction_type = \"flow_prediction\"\n\
                [sampling]\nseeds = 4\n\
                [[sampler]]\nname = \"euler\"\nsteps = [16, 64]\nshift = 3\n\
                [[sampler]]\nname = \"res_multistep\"\nsteps = [16, 64]\nshift = 3\n\
                [[sampler]]\nname = \"ipndm\"\nsteps = 64\nshift = 3\nschedule = \"simple\"\n\
                [quality]\nreference_sampler = \"heun:500\"\nreference_settings = { shift = 3.0 }\n";
    let path = dir.join("lab.toml");
    std::fs::write(&path, text).unwrap();
    let e = Experiment::load(&path).unwrap();
    run_to_end(&e);
    let results = Results::load(&e.output_dir.join("results.json"));
    let error = |name: &str| {
        let cell = results.cells.iter().find(|c| c.name == name).unwrap();
        cell.score("ref_rmse").unwrap()
    };
    let classes: Vec<&str> = results.cells.iter().map(|c| c.class.as_str()).collect();
    assert!(classes.contains(&"KDiffusionSampler"), "{classes:?}");
    // 16 → 64 steps: order 1.5 or more for res_multistep (6.0e-2 → 6.9e-3 measured), 1 for Euler.
    assert!(error("res_multistep 64") < 0.25 * error("res_multistep 16"));
    assert!(error("res_multistep 64") < 0.85 * error("euler 64"));
    assert!(error("ipndm 64") < error("euler 64"));
    assert!(
        error("res_multistep 64") < 1e-2,
        "{}",
        error("res_multistep 64")
    );
}

#[test]
fn a_cancelled_run_keeps_its_finished_cells() {
    let dir = temp_dir("cancel");
    let e = experiment(
        &dir,
        "[[sampler]]\nname = \"ddim\"\nsteps = 3\n[[sampler]]\nname = \"ddpm\"\nsteps = 1000\n",
    );
    let lab = start(e.clone(), RunOptions::default());
    let mut cancelled_at = None;
    let mut finished = None;
    for ev in lab.events.iter() {
        match ev {
            LabEvent::CellDone { result, .. } => {
                assert_eq!(result.name, "ddim 3");
                lab.cancel();
            }
            LabEvent::Progress { cell: 1, step, .. } if cancelled_at.is_none() && step > 3 => {
                cancelled_at = Some(step);
            }
            LabEvent::Finished { cancelled, .. } => finished = Some(cancelled),
            _ => {}
        }
    }
    lab.join();
    assert_eq!(finished, Some(true), "the run reports it was cancelled");
    let results = Results::load(&e.output_dir.join("results.json"));
    let names: Vec<&str> = results.cells.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["ddim 3"],
        "the finished cell is kept, the cancelled one is not"
    );
    // Rerunning reuses the finished cell.
    let events = run_to_end(&e);
    assert!(events.iter().any(|ev| matches!(ev, LabEvent::CellDone { cached: true, result, .. } if result.name == "ddim 3")));
}

#[test]
fn cells_with_more_samples_than_a_lane_refill_as_lanes_finish() {
    let dir = temp_dir("lanes");
    let text = "[model]\npath = \"analytic\"\nsample_shape = [1, 4, 4]\n[sampling]\nseeds = 4\nbatch = 8\n\
        [[sampler]]\nname = \"ddim\"\nsteps = 5\nsamples = 20\n[[sampler]]\nname = \"dpm++2m\"\nsteps = 10\nsamples = 20\n";
    let path = dir.join("lab.toml");
    std::fs::write(&path, text).unwrap();
    let e = Experiment::load(&path).unwrap();
    let events = run_to_end(&e);
    let Some(LabEvent::Finished {
        model_calls,
        unbatched_model_calls,
        ..
    }) = events.last()
    else {
        panic!("the run ends with Finished")
    };
    // 4 samples per lane, 5 lanes per cell; each cell starts its next lane when one ends.
    assert_eq!(*unbatched_model_calls, 5 * 5 + 5 * 10);
    assert_eq!(*model_calls, 5 * 10);
    let results = Results::load(&e.output_dir.join("results.json"));
    assert!(results.cells.iter().all(|c| c.samples == 20));
}

fn finished_error(events: &[LabEvent]) -> Option<String> {
    match events.last() {
        Some(LabEvent::Finished { error, .. }) => error.clone(),
        other => panic!("the run ends with Finished, not {other:?}"),
    }
}

#[test]
fn an_unreadable_results_file_is_moved_aside_not_overwritten() {
    let dir = temp_dir("corrupt");
    let e = experiment(&dir, THREE);
    std::fs::create_dir_all(&e.output_dir).unwrap();
    let results = e.output_dir.join("results.json");
    std::fs::write(&results, "{ not json").unwrap();
    let events = run_to_end(&e);
    assert_eq!(finished_error(&events), None);
    let aside: Vec<PathBuf> = std::fs::read_dir(&e.output_dir)
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("results.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "moved aside once");
    assert_eq!(std::fs::read_to_string(&aside[0]).unwrap(), "{ not json");
    let warned = events.iter().any(|ev| {
        matches!(ev, LabEvent::Log(l) if l.starts_with(&format!("warning: {} is not a results file difflab can read", results.display()))
            && l.contains(&format!("moved it to {}", aside[0].display())))
    });
    assert!(warned, "{events:#?}");
    assert_eq!(Results::load(&results).cells.len(), 3, "a new results file");
}

#[test]
fn a_results_path_that_is_a_folder_is_an_error_naming_it() {
    let dir = temp_dir("results-folder");
    let e = experiment(&dir, THREE);
    let results = e.output_dir.join("results.json");
    std::fs::create_dir_all(&results).unwrap();
    let error = finished_error(&run_to_end(&e));
    assert_eq!(
        error.as_deref(),
        Some(
            format!(
                "cannot read the results file {}: it is a folder, not a file",
                results.display()
            )
            .as_str()
        )
    );
}

#[test]
fn an_output_folder_under_a_file_names_the_file() {
    let dir = temp_dir("afile");
    let afile = dir.join("afile");
    std::fs::write(&afile, "x").unwrap();
    let mut e = experiment(&dir, THREE);
    e.output_dir = afile.join("out");
    let error = finished_error(&run_to_end(&e));
    assert_eq!(
        error.as_deref(),
        Some(
            format!(
                "cannot create the output folder {}: {} is a file, not a folder",
                e.output_dir.display(),
                afile.display()
            )
            .as_str()
        )
    );
}

#[test]
fn difflab_run_shows_what_the_experiment_asks_that_is_ignored() {
    let dir = temp_dir("warnings");
    let samplers = "[[sampler]]\nname = \"ddim\"\nsteps = 5\nsettings = { etta = 0.5, clip_sample = false }\n[[sampler]]\nname = \"dpm++2m\"\nsteps = 5\n";
    experiment(&dir, samplers);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_difflab"))
        .args(["run", "--json"])
        .arg(dir.join("lab.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let warning =
        "`sampler[0].settings`: unknown key `etta` ignored (DDIMScheduler does not use it)";
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("warning: ") && l.contains(warning)),
        "{stderr}"
    );
    let cells: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings_of = |cells: &serde_json::Value, i: usize| -> Vec<String> {
        cells[i]["warnings"]
            .as_array()
            .map(|w| w.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    assert_eq!(cells[0]["name"], "ddim 5");
    assert!(warnings_of(&cells, 0)[0].contains(warning), "{cells:#}");
    assert!(warnings_of(&cells, 1).is_empty(), "{cells:#}");
    let results = Results::load(&dir.join("out/lab/results.json"));
    assert!(
        results
            .cells
            .iter()
            .any(|c| c.warnings.iter().any(|w| w.contains(warning)))
    );
}

/// What a run holds does not grow with the sample count (finished samples are decoded, scored and written
/// lane by lane), but its previews are kept whole: 20000 preview seeds of 800000 values do not fit.
#[test]
fn a_run_whose_previews_do_not_fit_in_memory_is_refused_before_it_starts() {
    let dir = temp_dir("memory");
    let text = "[model]\npath = \"analytic\"\nsample_shape = [1, 1000, 800]\n[sampling]\nseeds = 20000\n[[sampler]]\nname = \"ddim\"\nsteps = 2\n";
    std::fs::write(dir.join("big.toml"), text).unwrap();
    let e = Experiment::load(&dir.join("big.toml")).unwrap();
    let events = run_to_end(&e);
    let error = finished_error(&events).expect("the run is refused");
    assert!(
        error.starts_with("the lanes and the kept samples of this run need ")
            && error.contains("lower `batch`, `seeds` or `sample_shape`"),
        "{error}"
    );
}

/// A bare U-Net whose weights live in an external-data file: a run with nothing to do reports every cell
/// reused without loading the model; changing bytes inside the weights file (same size, same mtime) makes
/// the cell run again with the new weights.
#[test]
fn external_weights_are_part_of_the_key_and_an_up_to_date_run_loads_no_model() {
    let dir = temp_dir("external");
    let onnx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx");
    for name in ["tiny_external.onnx", "tiny_external.onnx_data"] {
        std::fs::copy(onnx.join(name), dir.join(name)).unwrap();
    }
    let text = "[model]\npath = \"tiny_external.onnx\"\nproviders = [\"cpu\"]\n[sampling]\nseeds = 2\n\
                [[sampler]]\nname = \"ddim\"\nsteps = 3\n";
    std::fs::write(dir.join("lab.toml"), text).unwrap();
    let e = Experiment::load(&dir.join("lab.toml")).unwrap();
    let first = run_to_end(&e);
    assert_eq!(finished_error(&first), None);
    let before = Results::load(&e.output_dir.join("results.json"));

    let again = run_to_end(&e);
    let note = again.iter().find_map(|ev| match ev {
        LabEvent::Planned { providers_note, .. } => Some(providers_note.clone()),
        _ => None,
    });
    assert_eq!(
        note.as_deref(),
        Some("every cell is up to date: the model was not loaded (the cells ran on cpu)")
    );
    let cached: Vec<bool> = again
        .iter()
        .filter_map(|ev| match ev {
            LabEvent::CellDone { cached, images, .. } => {
                assert_eq!(
                    images.len(),
                    2 * 4 * 8 * 8,
                    "the previews come back from the grid"
                );
                Some(*cached)
            }
            _ => None,
        })
        .collect();
    assert_eq!(cached, vec![true]);

    // Same size and modification time, other weights: 0.5 becomes 0.25 (f32 0x3e800000) in the first value.
    let data = dir.join("tiny_external.onnx_data");
    let mtime = std::fs::metadata(&data).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[..4].copy_from_slice(&0.25f32.to_le_bytes());
    std::fs::write(&data, &bytes).unwrap();
    let file = std::fs::File::options().write(true).open(&data).unwrap();
    file.set_modified(mtime).unwrap();
    drop(file);
    let changed = run_to_end(&e);
    let cached: Vec<bool> = changed
        .iter()
        .filter_map(|ev| match ev {
            LabEvent::CellDone { cached, .. } => Some(*cached),
            _ => None,
        })
        .collect();
    assert_eq!(cached, vec![false], "new weights run the cell again");
    let after = Results::load(&e.output_dir.join("results.json"));
    assert_ne!(after.cells[0].key, before.cells[0].key);
}

/// NaN or Inf in the initial noise is refused when the file is read, naming it, how many and where the
/// first one is, instead of being blamed on the model at the first step.
#[test]
fn initial_noise_that_is_not_finite_is_refused_naming_the_file() {
    let dir = temp_dir("init-noise");
    let mut noise = ndarray::Array4::<f32>::zeros((4, 1, 4, 4));
    noise[[1, 0, 2, 3]] = f32::NAN;
    noise[[3, 0, 0, 0]] = f32::NAN;
    noise[[2, 0, 1, 1]] = f32::INFINITY;
    let path = dir.join("noise.npy");
    ndarray_npy::write_npy(&path, &noise).unwrap();
    let mut e = experiment(&dir, THREE);
    e.init_noise = Some(path.clone());
    let error = finished_error(&run_to_end(&e));
    assert_eq!(
        error.as_deref(),
        Some(
            format!(
                "{}: init_noise is not finite: 2 of 64 values are NaN, 1 are +Inf, the first at [1, 0, 2, 3]; \
                 the initial noise must be finite",
                path.display()
            )
            .as_str()
        )
    );
}

#[test]
fn float64_initial_noise_is_refused_with_how_to_convert_it() {
    let dir = temp_dir("init-noise-f64");
    let path = dir.join("noise.npy");
    ndarray_npy::write_npy(&path, &ndarray::Array4::<f64>::zeros((4, 1, 4, 4))).unwrap();
    let mut e = experiment(&dir, THREE);
    e.init_noise = Some(path.clone());
    let error = finished_error(&run_to_end(&e));
    assert_eq!(
        error,
        Some(format!(
            "{}: init_noise is float64 ('<f8'); it must be a float32 .npy [N, C, H, W]: convert it with \
             np.save(path, a.astype(np.float32))",
            path.display()
        ))
    );
}

/// Reference statistics of another feature width than the network's: `difflab run` says so on stderr, not
/// only inside results.json.
#[test]
fn a_reference_of_another_feature_width_is_named_on_stderr() {
    let dir = temp_dir("feature-width");
    let reference = dir.join("reference8.npz");
    let mut npz = ndarray_npy::NpzWriter::new(std::fs::File::create(&reference).unwrap());
    npz.add_array("mu", &ndarray::Array1::<f64>::zeros(8))
        .unwrap();
    npz.add_array("sigma", &ndarray::Array2::<f64>::eye(8))
        .unwrap();
    npz.add_array("features", &ndarray::Array2::<f32>::zeros((4, 8)))
        .unwrap();
    npz.finish().unwrap();
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let text = format!(
        "[model]\npath = \"analytic\"\nsample_shape = [1, 16, 16]\n[sampling]\nseeds = 2\n\
         [[sampler]]\nname = \"ddim\"\nsteps = 2\n[quality]\nfeatures = {:?}\nreference = {:?}\nsamples = 4\n",
        models.join("mnist16-features.onnx"),
        reference
    );
    std::fs::write(dir.join("width.toml"), text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_difflab"))
        .arg("run")
        .arg(dir.join("width.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let message = format!(
        "ddim 2: the cell's quality cannot be computed: the feature network {} gives 128 features, but the \
         reference statistics {} have 8: make the reference (mu, sigma, features) with this network's features",
        models.join("mnist16-features.onnx").display(),
        reference.display()
    );
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.lines().any(|l| l == message), "{stderr}");
}
