//! Sharded runs (`difflab run --shard I/N`, or a job-array task's environment) and their merge: the
//! merged results equal one machine's, a rerun shard skips what it finished, and a missing shard, a
//! shard of another experiment or a damaged file is named.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests report failure by panicking"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use difflab::lab::{CellResult, Results};

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// The analytic model at 16×16 scored by the MNIST-16 feature network (128 features, so 160 samples
/// give full-rank covariances), against a DPM++ 3M reference; one stochastic sampler.
fn experiment(dir: &Path, steps: &str) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let text = format!(
        "name = \"shards\"\noutput = \"out\"\n[model]\npath = \"analytic\"\nsample_shape = [1, 16, 16]\n\
         [sampling]\nseeds = 8\nbatch = 16\n\
         [[sampler]]\nname = \"dpm++2m\"\nsteps = {steps}\n[[sampler]]\nname = \"euler-a\"\nsteps = 8\n\
         [quality]\nfeatures = {:?}\nreference = {:?}\nsamples = 160\nkid_subsets = 10\n\
         kid_subset_size = 50\nreference_sampler = \"dpm++3m:100\"\nbaseline = \"euler-a 8\"\n",
        models().join("mnist16-features.onnx"),
        models().join("mnist16-reference.npz"),
    );
    let path = dir.join("exp.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn difflab(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_difflab"));
    command.args(args);
    for var in [
        "SLURM_ARRAY_TASK_ID",
        "JOB_COMPLETION_INDEX",
        "RANK",
        "WORLD_SIZE",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    command.output().unwrap()
}

fn ok(output: Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    stderr
}

fn failure(output: Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "should have failed: {stderr}");
    stderr
}

fn shards(exp: &Path, count: usize) {
    for i in 0..count {
        ok(difflab(
            &[
                "run",
                exp.to_str().unwrap(),
                "--shard",
                &format!("{i}/{count}"),
            ],
            &[],
        ));
    }
}

fn cell<'a>(results: &'a Results, name: &str) -> &'a CellResult {
    results.cells.iter().find(|c| c.name == name).unwrap()
}

#[test]
fn three_shards_merge_into_what_one_machine_writes() {
    let dir = std::env::temp_dir().join(format!("difflab-shards-merge-{}", std::process::id()));
    let exp = experiment(&dir, "[5, 10]");
    let single = dir.join("single");
    ok(difflab(
        &[
            "run",
            exp.to_str().unwrap(),
            "--out",
            single.to_str().unwrap(),
        ],
        &[],
    ));
    shards(&exp, 3);
    let out = dir.join("out");
    let merged = ok(difflab(&["merge", out.to_str().unwrap()], &[]));
    assert!(merged.contains("merged 3 shards"), "{merged}");
    let (one, many) = (
        Results::load(&single.join("results.json")),
        Results::load(&out.join("results.json")),
    );
    assert_eq!(many.cells.len(), 3);
    for a in &one.cells {
        let b = cell(&many, &a.name);
        assert_eq!((a.samples, a.nfe, &a.key), (b.samples, b.nfe, &b.key));
        let (fa, fb) = (a.score("fid").unwrap(), b.score("fid").unwrap());
        println!("{}: FID {fa} vs merged {fb}", a.name);
        assert!((fa - fb).abs() <= 1e-9 * fa.abs(), "{}: {fa} {fb}", a.name);
        assert_eq!(
            (a.score("kid"), a.score("kid_std")),
            (b.score("kid"), b.score("kid_std")),
            "{}",
            a.name
        );
        let (ra, rb) = (a.score("ref_rmse").unwrap(), b.score("ref_rmse").unwrap());
        assert!((ra - rb).abs() <= 1e-12 * ra, "{}: {ra} {rb}", a.name);
        // The same grids give the same difference from the baseline cell.
        assert!(a.score("baseline_rmse").is_some(), "{}", a.name);
        assert_eq!(
            a.score("baseline_rmse"),
            b.score("baseline_rmse"),
            "{}",
            a.name
        );
        let grid = |root: &Path| std::fs::read(root.join(&a.grid)).unwrap();
        assert!(
            grid(&single) == grid(&out),
            "{}: the merged grid differs",
            a.name
        );
    }
    for figure in [
        "comparison.png",
        "quality_vs_nfe.png",
        "accuracy_vs_nfe.png",
        "difference.png",
    ] {
        assert!(out.join(figure).is_file(), "{figure}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_rerun_shard_skips_what_it_finished_and_a_missing_one_is_named() {
    let dir = std::env::temp_dir().join(format!("difflab-shards-resume-{}", std::process::id()));
    let exp = experiment(&dir, "[5]");
    let e = exp.to_str().unwrap();
    ok(difflab(&["run", e, "--shard", "0/3"], &[]));
    ok(difflab(&["run", e, "--shard", "1/3"], &[]));
    let out = dir.join("out");
    let missing = failure(difflab(&["merge", out.to_str().unwrap()], &[]));
    assert!(missing.contains("shard 2/3 has not started"), "{missing}");
    assert!(missing.contains("--shard I/3"), "{missing}");
    // The task for shard 2, as Slurm starts an array from 1 (--array=1-3): its third task.
    let slurm = [
        ("SLURM_ARRAY_TASK_ID", "3"),
        ("SLURM_ARRAY_TASK_MIN", "1"),
        ("SLURM_ARRAY_TASK_MAX", "3"),
    ];
    let task = ok(difflab(&["run", e], &slurm));
    assert!(
        task.contains("shard 2/3 (from SLURM_ARRAY_TASK_ID=3"),
        "{task}"
    );
    // Preempted after one cell: its other cell's tally is gone; the rerun redoes only that one.
    std::fs::remove_file(out.join("shards/2-of-3/cells/euler-a_8.npz")).unwrap();
    let rerun = ok(difflab(&["run", e], &slurm));
    let line = |name: &str| {
        let start = format!("{name}: 54 samples");
        rerun
            .lines()
            .find(|l| l.starts_with(&start))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("dpm++2m 5").ends_with("(unchanged, reused)"),
        "{rerun}"
    );
    assert!(
        !line("euler-a 8").is_empty() && !line("euler-a 8").contains("unchanged"),
        "{rerun}"
    );
    // `difflab run` on the experiment finds the complete shards and merges them.
    let merged = ok(difflab(&["run", e], &[]));
    assert!(merged.contains("euler-a 8: 160 samples"), "{merged}");
    assert_eq!(Results::load(&out.join("results.json")).cells.len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shards_of_another_experiment_and_damaged_tallies_are_refused() {
    let dir = std::env::temp_dir().join(format!("difflab-shards-refuse-{}", std::process::id()));
    let exp = experiment(&dir, "[5]");
    shards(&exp, 2);
    let out = dir.join("out");
    let tally = out.join("shards/1-of-2/cells/dpm++2m_5.npz");
    let bytes = std::fs::read(&tally).unwrap();
    std::fs::write(&tally, &bytes[..bytes.len() / 2]).unwrap();
    let damaged = failure(difflab(&["merge", out.to_str().unwrap()], &[]));
    assert!(
        damaged.contains("dpm++2m_5.npz") && damaged.contains("rerun shard 1/2"),
        "{damaged}"
    );
    assert!(!out.join("results.json").exists(), "nothing merged");
    // The experiment changed after the shards ran: a 6-step cell is not the 5-step one they drew.
    let text = std::fs::read_to_string(&exp)
        .unwrap()
        .replace("steps = [5]", "steps = [6]");
    std::fs::write(&exp, text).unwrap();
    let other = failure(difflab(&["merge", out.to_str().unwrap()], &[]));
    assert!(other.contains("ran another experiment"), "{other}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_shard_numbers_are_clear_errors() {
    let dir = std::env::temp_dir().join(format!("difflab-shards-bad-{}", std::process::id()));
    let exp = experiment(&dir, "[5]");
    let e = exp.to_str().unwrap();
    for (shard, expected) in [
        ("3/2", "0 ≤ I < 2"),
        ("0/0", "at least one shard"),
        ("1", "write I/N"),
        ("0/500", "at most 160 shards"),
    ] {
        let err = failure(difflab(&["run", e, "--shard", shard], &[]));
        assert!(err.contains(expected), "--shard {shard}: {err}");
    }
    let only = failure(difflab(
        &["run", e, "--shard", "0/2", "--only", "euler-a"],
        &[],
    ));
    assert!(only.contains("a sharded run runs every cell"), "{only}");
    let lone = failure(difflab(&["run", e], &[("JOB_COMPLETION_INDEX", "1")]));
    assert!(lone.contains("JOB_COMPLETIONS"), "{lone}");
    let no_shards = failure(difflab(&["merge", dir.join("out").to_str().unwrap()], &[]));
    assert!(no_shards.contains("has no shards"), "{no_shards}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A video model's cells shard and merge too: FID over the clips' frames, their frame-to-frame change and the
/// clip GIFs come out as one machine's.
#[test]
fn video_shards_merge_into_what_one_machine_writes() {
    let dir = std::env::temp_dir().join(format!("difflab-shards-video-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        "name = \"video\"\noutput = \"out\"\n[model]\npath = {:?}\nproviders = [\"cpu\"]\n[sampling]\nseeds = 4\n\
         [[sampler]]\nname = \"ddim\"\nsteps = 4\n\
         [quality]\nfeatures = {:?}\nreference = {:?}\nsamples = 24\nkid_subsets = 4\nkid_subset_size = 50\n",
        models().join("digits-video/model.onnx"),
        models().join("mnist16-features.onnx"),
        models().join("digits-video/reference.npz"),
    );
    let exp = dir.join("exp.toml");
    std::fs::write(&exp, text).unwrap();
    let single = dir.join("single");
    let args = [
        "run",
        exp.to_str().unwrap(),
        "--out",
        single.to_str().unwrap(),
    ];
    ok(difflab(&args, &[]));
    shards(&exp, 2);
    let out = dir.join("out");
    ok(difflab(&["merge", out.to_str().unwrap()], &[]));
    let (one, many) = (
        Results::load(&single.join("results.json")),
        Results::load(&out.join("results.json")),
    );
    let (a, b) = (&one.cells[0], cell(&many, &one.cells[0].name));
    for key in ["fid", "kid", "frame_change"] {
        let (x, y) = (a.score(key).unwrap(), b.score(key).unwrap());
        assert!((x - y).abs() <= 1e-9 * x.abs().max(1e-12), "{key}: {x} {y}");
    }
    let gif = a.grid.replace(".png", ".gif");
    assert_eq!(
        std::fs::read(single.join(&gif)).unwrap(),
        std::fs::read(out.join(&gif)).unwrap(),
        "the merged GIF differs"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
