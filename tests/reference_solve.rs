//! Accuracy against a reference solve (`[quality] reference_sampler`): every cell's preview samples are
//! compared with a long run of an accurate sampler on the same seeds, written as `ref_rmse`/`ref_psnr`,
//! plotted against NFE, and the solve is kept on disk and reused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests report failure by panicking"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use difflab::experiment::Experiment;
use difflab::lab::{CellResult, Results};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("difflab-ref-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const ANALYTIC: &str =
    "[model]\npath = \"analytic\"\nsample_shape = [1, 8, 8]\n[sampling]\nseeds = 8\n";

/// Runs `difflab run` on `text`; returns its stderr and the results.
fn run(dir: &Path, text: &str) -> (String, Results) {
    let path = dir.join("exp.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_difflab"))
        .arg("run")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "difflab run failed: {stderr}");
    let results = Results::load(&dir.join("out/exp/results.json"));
    (stderr, results)
}

fn cell<'a>(results: &'a Results, name: &str) -> &'a CellResult {
    results
        .cells
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no cell {name}"))
}

fn rmse(results: &Results, name: &str) -> f64 {
    cell(results, name)
        .score("ref_rmse")
        .unwrap_or_else(|| panic!("{name} has no ref_rmse"))
}

#[test]
fn cells_are_ranked_against_a_reference_solve_that_is_kept_and_reused() {
    let dir = temp_dir("rank");
    let samplers = "[[sampler]]\nname = \"dpm++2m\"\nsteps = [10, 40, 160]\n\
                    [[sampler]]\nname = \"euler\"\nsteps = [10, 40]\n\
                    [[sampler]]\nname = \"dpm++3m\"\nsteps = 300\n";
    let quality = "[quality]\nreference_sampler = \"dpm++3m:300\"\n";
    let (log, results) = run(&dir, &format!("{ANALYTIC}{samplers}{quality}"));
    assert!(
        log.contains("reference dpm++3m 300: solved 8 samples"),
        "{log}"
    );
    for c in &results.cells {
        assert_eq!(
            c.reference.as_deref(),
            Some("reference dpm++3m 300"),
            "{}",
            c.name
        );
        // Without a feature network a cell draws only its previews and has no FID.
        assert_eq!((c.samples, c.score("fid")), (8, None), "{}", c.name);
    }
    let e = |n| rmse(&results, n);
    eprintln!(
        "dpm++2m 10/40/160: {:.3e} {:.3e} {:.3e}; euler 10/40: {:.3e} {:.3e}",
        e("dpm++2m 10"),
        e("dpm++2m 40"),
        e("dpm++2m 160"),
        e("euler 10"),
        e("euler 40")
    );
    assert!(e("dpm++2m 10") > e("dpm++2m 40") && e("dpm++2m 40") > 4.0 * e("dpm++2m 160"));
    assert!(e("euler 10") > e("euler 40"));
    assert!(
        e("dpm++2m 40") < e("euler 40"),
        "second order beats first at 40 steps"
    );
    // The reference's own sampler and steps reproduce it exactly: the samples line up seed by seed.
    let same = cell(&results, "dpm++3m 300");
    assert_eq!(same.score("ref_rmse"), Some(0.0));
    assert_eq!(same.score("ref_psnr"), None);
    let psnr = cell(&results, "dpm++2m 160").score("ref_psnr").unwrap();
    assert!(
        (psnr - 20.0 * (2.0 / e("dpm++2m 160")).log10()).abs() < 1e-9,
        "{psnr}"
    );
    let out = dir.join("out/exp");
    for file in ["accuracy_vs_nfe.png", "accuracy_vs_nfe.svg"] {
        assert!(out.join(file).is_file(), "{file} written");
    }
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(csv.lines().next().unwrap().contains("ref_rmse,ref_psnr"));
    let saved: Vec<_> = std::fs::read_dir(out.join("reference")).unwrap().collect();
    assert_eq!(saved.len(), 1, "one reference solve on disk");

    // A new cell is compared with the saved solve, which is not solved again.
    let more = format!("{samplers}[[sampler]]\nname = \"heun\"\nsteps = 20\n");
    let (log, again) = run(&dir, &format!("{ANALYTIC}{more}{quality}"));
    assert!(
        log.contains("reference dpm++3m 300: unchanged, reused"),
        "{log}"
    );
    assert!(!log.contains("solved"), "{log}");
    assert!(rmse(&again, "heun 20") > 0.0);
    assert_eq!(
        rmse(&again, "dpm++2m 40"),
        e("dpm++2m 40"),
        "reused unchanged"
    );
}

#[test]
fn a_stochastic_sampler_does_not_converge_to_the_ode_reference() {
    // Euler a follows the SDE: more steps do not bring it to the probability-flow ODE's solution.
    let dir = temp_dir("sde");
    let samplers = "[[sampler]]\nname = \"euler-a\"\nsteps = [20, 80]\n\
                    [[sampler]]\nname = \"heun\"\nsteps = [20, 80]\n";
    let quality = "[quality]\nreference_sampler = \"heun:400\"\n";
    let (_, results) = run(&dir, &format!("{ANALYTIC}{samplers}{quality}"));
    assert!(rmse(&results, "heun 80") < 0.2 * rmse(&results, "heun 20"));
    assert!(rmse(&results, "euler-a 80") > 10.0 * rmse(&results, "heun 80"));
}

fn parse_error(quality: &str) -> String {
    let dir = temp_dir("errors");
    let path = dir.join("bad.toml");
    let text = format!("{ANALYTIC}[[sampler]]\nname = \"ddim\"\nsteps = 10\n{quality}");
    std::fs::write(&path, text).unwrap();
    Experiment::load(&path).unwrap_err().to_string()
}

#[test]
fn reference_sampler_mistakes_are_named_with_what_to_write() {
    for (quality, expected) in [
        (
            "[quality]\nreference_sampler = \"dpm++3m\"\n",
            "has no step count: write \"<sampler>:<steps>\"",
        ),
        (
            "[quality]\nreference_sampler = \"dpm++3m:0\"\n",
            "must be a whole number from 1 to 1000",
        ),
        (
            "[quality]\nreference_sampler = \"dpm++3m:lots\"\n",
            "must be a whole number",
        ),
        (
            "[quality]\nreference_sampler = \"dpm++3x:500\"\n",
            "did you mean `dpm++3m`?",
        ),
        (
            "[quality]\nreference_sampler = \"dpm++3m:1000\"\n",
            "(timestep 500) twice",
        ),
        (
            "[quality]\nsamples = 10\n",
            "or reference_sampler = \"dpm++3m:500\"",
        ),
        (
            "[quality]\nfeatures = \"exp.toml\"\nreference_sampler = \"ddim:100\"\n",
            "FID needs the reference statistics too",
        ),
    ] {
        let e = parse_error(quality);
        assert!(e.contains("quality"), "{e}");
        assert!(e.contains(expected), "{quality}: {e}");
    }
}

#[test]
fn a_stochastic_reference_and_kid_settings_without_features_are_warnings() {
    let dir = temp_dir("warnings");
    let path = dir.join("warn.toml");
    let text = format!(
        "{ANALYTIC}[[sampler]]\nname = \"ddim\"\nsteps = 10\n\
         [quality]\nreference_sampler = \"euler-a:200\"\nkid_subsets = 10\n"
    );
    std::fs::write(&path, text).unwrap();
    let e = Experiment::load(&path).unwrap();
    let warnings: Vec<String> = e.warnings.iter().map(ToString::to_string).collect();
    assert!(
        warnings.iter().any(|w| w.contains("euler-a is stochastic")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("KID needs a feature network")),
        "{warnings:?}"
    );
}

/// DPM-Solver's "leading" spacing starts 5 steps at t = 831 and 200 at t = 801 (its step is
/// 1000 // (steps + 1), as diffusers'): the cell solves from another time
/// than the reference, a warning that says what to set; trailing spacing on both is quiet.
#[test]
fn a_cell_that_starts_elsewhere_than_the_reference_is_a_warning() {
    let dir = temp_dir("start");
    let path = dir.join("start.toml");
    let warnings = |sampler: &str, reference: &str| {
        let text = format!(
            "{ANALYTIC}[[sampler]]\nname = \"dpm++2m\"\nsteps = [5]\n{sampler}\n\
             [quality]\nreference_sampler = \"dpm++3m:200\"\n{reference}\n"
        );
        std::fs::write(&path, text).unwrap();
        let e = Experiment::load(&path).unwrap();
        e.warnings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    let leading = "settings = { timestep_spacing = \"leading\", steps_offset = 1 }";
    let both = warnings(
        leading,
        "reference_settings = { timestep_spacing = \"leading\", steps_offset = 1 }",
    );
    assert!(
        both.iter()
            .any(|w| w.contains("starts from t=831 at 5 steps")
                && w.contains("reference from t=801")
                && w.contains("timestep_spacing = \"trailing\"")),
        "{both:?}"
    );
    let trailing = "settings = { timestep_spacing = \"trailing\" }";
    let quiet = warnings(
        trailing,
        "reference_settings = { timestep_spacing = \"trailing\" }",
    );
    assert!(
        !quiet.iter().any(|w| w.contains("starts from")),
        "{quiet:?}"
    );
}

/// DDIM clipping its x0 predictions solves another equation than an unclipped DPM++ 3M reference.
#[test]
fn a_cell_that_clips_unlike_the_reference_is_a_warning() {
    let dir = temp_dir("clip");
    let path = dir.join("clip.toml");
    let text = format!(
        "{ANALYTIC}[[sampler]]\nname = \"ddim\"\nsteps = [10]\nsettings = {{ clip_sample = true }}\n\
         [[sampler]]\nname = \"ddim\"\nlabel = \"unclipped\"\nsteps = [10]\n\
         settings = {{ clip_sample = false }}\n\
         [quality]\nreference_sampler = \"dpm++3m:200\"\n"
    );
    std::fs::write(&path, text).unwrap();
    let e = Experiment::load(&path).unwrap();
    let warnings: Vec<String> = e.warnings.iter().map(ToString::to_string).collect();
    let clipping: Vec<_> = warnings
        .iter()
        .filter(|w| w.contains("clip_sample"))
        .collect();
    assert_eq!(clipping.len(), 1, "{warnings:?}");
    assert!(
        clipping[0].contains("ddim sets clip_sample, the other not"),
        "{clipping:?}"
    );
    assert_eq!(
        e.warnings_for(1)
            .iter()
            .filter(|w| w.contains("clip_sample"))
            .count(),
        0
    );
}

/// A wrong value in `reference_settings` is named at that key with what is allowed; no sampler name is
/// suggested, since the name was right.
#[test]
fn a_wrong_reference_setting_is_named_at_its_key_without_a_sampler_suggestion() {
    let e = parse_error(
        "[quality]\nreference_sampler = \"ddim:100\"\nreference_settings = { timestep_spacing = \"trailng\" }\n",
    );
    assert!(
        e.contains(
            "`quality.reference_settings`: scheduler setting `timestep_spacing`: got \"trailng\", expected one of"
        ),
        "{e}"
    );
    assert!(!e.contains("did you mean"), "{e}");
}

/// `[quality] baseline`: every cell's preview samples against one cell's, seed by seed, in results.json
/// and difference.png; a name that is no cell is one clear error naming the cells.
#[test]
fn cells_are_compared_with_the_baseline_cell() {
    let dir = temp_dir("baseline");
    let text = format!(
        "{ANALYTIC}[[sampler]]\nname = \"ddim\"\nsteps = [5, 50]\n[[sampler]]\nname = \"dpm++2m\"\nsteps = 20\n\
         [quality]\nbaseline = \"ddim 50\"\n"
    );
    let (stderr, results) = run(&dir, &text);
    let coarse = cell(&results, "ddim 5").score("baseline_rmse").unwrap();
    let close = cell(&results, "dpm++2m 20").score("baseline_rmse").unwrap();
    // Converged samplers agree with the 50-step baseline far better than 5 DDIM steps.
    assert!(
        close < 0.5 * coarse,
        "dpm++2m 20 {close} vs ddim 5 {coarse}"
    );
    assert!(cell(&results, "dpm++2m 20").score("baseline_psnr").unwrap() > 20.0);
    let base = cell(&results, "ddim 50");
    assert_eq!(
        (base.score("baseline_rmse"), base.score("baseline_psnr")),
        (Some(0.0), None)
    );
    assert!(stderr.contains("ddim 5: RMSE to the baseline"), "{stderr}");
    let png = image::open(dir.join("out/exp/difference.png")).unwrap();
    assert!(
        png.width() > 3 * 64 && png.height() > 8 * 32,
        "{}×{}",
        png.width(),
        png.height()
    );

    let wrong = text.replace("baseline = \"ddim 50\"", "baseline = \"ddim 500\"");
    std::fs::write(dir.join("exp.toml"), &wrong).unwrap();
    let error = Experiment::load(&dir.join("exp.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("quality.baseline")
            && error.contains("its cells are ddim 5, ddim 50, dpm++2m 20"),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
