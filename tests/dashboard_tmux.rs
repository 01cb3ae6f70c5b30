//! The dashboard end to end, in a real terminal: tmux runs `difflab ui` on an analytic-model
//! experiment in a detached session of fixed size, and the test reads the screen. It watches samples
//! appear, edits the file (reload), breaks it (error, old results stay), fixes it, checks that an
//! idle dashboard uses no CPU and writes nothing, quits, and checks the shell works again.
//! Skips, saying so, where tmux is not installed, unless DIFFLAB_REQUIRE_E2E is set (as CI sets it).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const WIDTH: u16 = 120;
const HEIGHT: u16 = 36;

struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("run tmux")
    }

    fn capture(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "lab"]).stdout).into_owned()
    }

    fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "lab"];
        args.extend_from_slice(keys);
        assert!(self.cmd(&args).status.success());
    }

    fn display(&self, format: &str) -> String {
        let out = self.cmd(&["display-message", "-p", "-t", "lab", format]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Polls the screen until `ok` holds; panics with the screen after `limit`.
    fn wait_for(&self, what: &str, limit: Duration, ok: impl Fn(&str) -> bool) -> Duration {
        let start = Instant::now();
        loop {
            let screen = self.capture();
            if ok(&screen) {
                return start.elapsed();
            }
            if start.elapsed() > limit {
                panic!("timed out waiting for {what}; the screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

fn experiment(ddim_steps: &str) -> String {
    format!(
        r#"name = "tmux-test"
output = "out"

[model]
path = "analytic"
sample_shape = [1, 8, 8]

[sampling]
seeds = 4

[[sampler]]
name = "ddim"
steps = {ddim_steps}

[[sampler]]
name = "dpm++2m-karras"
steps = 10
"#
    )
}

/// Saves like an editor does: a new file renamed over the old one.
fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.swp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The dashboard process: the pane's shell's child.
fn dashboard_pid(tmux: &Tmux) -> u32 {
    let shell: u32 = tmux.display("#{pane_pid}").parse().unwrap();
    let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).unwrap();
    children
        .split_whitespace()
        .next()
        .expect("the dashboard runs under the shell")
        .parse()
        .unwrap()
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Whether tmux is here. Where end-to-end tests are required (CI sets `DIFFLAB_REQUIRE_E2E`), a
/// missing tmux fails the test instead of skipping it.
fn have_tmux(test: &str) -> bool {
    let ok = Command::new("tmux").arg("-V").output().is_ok();
    if !ok {
        assert!(
            std::env::var_os("DIFFLAB_REQUIRE_E2E").is_none(),
            "{test} needs tmux (apt-get install tmux); DIFFLAB_REQUIRE_E2E is set, so it may not skip"
        );
        println!("tmux is not installed: skipping {test}");
    }
    ok
}

/// A detached tmux session running `sh` in `dir`, on a server of its own.
fn session(name: &str, dir: &Path) -> Tmux {
    let tmux = Tmux {
        socket: format!("difflab-{name}-{}", std::process::id()),
    };
    let started = tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "lab",
        "-x",
        &WIDTH.to_string(),
        "-y",
        &HEIGHT.to_string(),
        "-c",
        dir.to_str().unwrap(),
        "sh",
    ]);
    assert!(started.status.success(), "tmux: {started:?}");
    tmux
}

#[test]
fn dashboard_in_tmux() {
    if !have_tmux("the dashboard's end-to-end test") {
        return;
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_difflab"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lab.toml");
    save(&file, &experiment("10"));
    let tmux = session("e2e", dir.path());
    let bytes = dir.path().join("terminal.bytes");
    let minute = Duration::from_secs(60);

    // Open: the first frame, then the cells finish.
    let t0 = Instant::now();
    tmux.send(&[&format!("{} ui lab.toml", bin.display()), "Enter"]);
    tmux.wait_for("the first frame", minute, |s| s.contains("1 Samplers"));
    println!(
        "first frame seen after {:.0} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    // Samples are drawn in half blocks once encoded.
    tmux.wait_for("both cells done and drawn", minute, |s| {
        s.contains("done 2/2") && s.contains("ddim 10") && s.contains("▀")
    });
    assert!(tmux.capture().contains("dpm++2m-karras 10"));

    // Idle: no CPU, no bytes to the terminal.
    let pid = dashboard_pid(&tmux);
    let pipe = format!("cat >> {}", bytes.display());
    assert!(
        tmux.cmd(&["pipe-pane", "-t", "lab", "-o", &pipe])
            .status
            .success()
    );
    std::thread::sleep(Duration::from_millis(300));
    let (cpu0, len0) = (cpu_ticks(pid), file_len(&bytes));
    std::thread::sleep(Duration::from_secs(3));
    let (cpu1, len1) = (cpu_ticks(pid), file_len(&bytes));
    println!(
        "idle for 3 s: {} clock ticks of CPU, {} bytes written",
        cpu1 - cpu0,
        len1 - len0
    );
    assert!(
        cpu1 - cpu0 <= 2,
        "idle dashboard used {} ticks of CPU in 3 s",
        cpu1 - cpu0
    );
    assert_eq!(
        len1, len0,
        "an idle dashboard writes nothing to the terminal"
    );

    // Sampling: the bytes sent per second while every cell reruns.
    let (t1, len1) = (Instant::now(), file_len(&bytes));
    tmux.send(&["r"]);
    tmux.wait_for("the forced rerun", minute, |s| {
        s.contains("done 2/2") && s.contains("rerunning")
    });
    let secs = t1.elapsed().as_secs_f64();
    println!(
        "rerun: {} bytes to the terminal in {secs:.2} s ({:.0} bytes/s)",
        file_len(&bytes) - len1,
        (file_len(&bytes) - len1) as f64 / secs
    );
    tmux.cmd(&["pipe-pane", "-t", "lab"]);

    // Reload: a new step count reruns that cell; the other is reused.
    let t2 = Instant::now();
    save(&file, &experiment("20"));
    tmux.wait_for("the reload", Duration::from_secs(10), |s| {
        s.contains("ddim 20") && s.contains("done 2/2")
    });
    println!(
        "reload applied and finished {:.0} ms after the save",
        t2.elapsed().as_secs_f64() * 1e3
    );
    assert!(tmux.capture().contains("reused"), "{}", tmux.capture());

    // A broken file: its error with line and key, and the last results stay.
    save(&file, &experiment("[0, -3]"));
    tmux.wait_for("the file error", Duration::from_secs(10), |s| {
        s.contains("file error")
    });
    let screen = tmux.capture();
    assert!(
        screen.contains("lab.toml:"),
        "the error names the file and line: {screen}"
    );
    assert!(
        screen.contains("`steps`") || screen.contains("steps"),
        "{screen}"
    );
    assert!(
        screen.contains("ddim 20") && screen.contains("done 2/2"),
        "{screen}"
    );

    // Fixed again.
    save(&file, &experiment("30"));
    tmux.wait_for("the fixed file", Duration::from_secs(10), |s| {
        s.contains("ddim 30") && s.contains("done 2/2") && !s.contains("file error")
    });

    // Focus a cell, back; save the comparison grid.
    tmux.send(&["Enter"]);
    tmux.wait_for("the focused cell", Duration::from_secs(10), |s| {
        s.contains("Enter/Esc back")
    });
    tmux.send(&["Escape"]);
    tmux.wait_for("the columns again", Duration::from_secs(10), |s| {
        s.contains("dpm++2m-karras 10")
    });
    tmux.send(&["s"]);
    tmux.wait_for("the saved grid", Duration::from_secs(10), |s| {
        s.contains("saved ") && s.contains("comparison.png")
    });
    assert!(dir.path().join("out/comparison.png").is_file());

    // Too small a terminal says so; back to size, the dashboard returns.
    tmux.cmd(&["resize-window", "-t", "lab", "-x", "70", "-y", "20"]);
    tmux.wait_for("the too-small notice", Duration::from_secs(10), |s| {
        s.contains("terminal too small")
    });
    tmux.cmd(&[
        "resize-window",
        "-t",
        "lab",
        "-x",
        &WIDTH.to_string(),
        "-y",
        &HEIGHT.to_string(),
    ]);
    tmux.wait_for("the dashboard again", Duration::from_secs(10), |s| {
        s.contains("ddim 30")
    });

    // Quit: the terminal is given back; the shell reads lines again.
    tmux.send(&["q"]);
    tmux.wait_for("the shell again", Duration::from_secs(10), |s| {
        !s.contains("1 Samplers")
    });
    assert_eq!(
        tmux.display("#{alternate_on}"),
        "0",
        "left the alternate screen"
    );
    assert_eq!(tmux.display("#{cursor_flag}"), "1", "the cursor is shown");
    tmux.send(&["echo shell-$((6 * 7))", "Enter"]);
    tmux.wait_for("echo to run", Duration::from_secs(10), |s| {
        s.contains("shell-42\n")
    });
    println!("whole run: {:.1} s", t0.elapsed().as_secs_f64());
}

/// SIGTERM and SIGHUP end the dashboard with the terminal restored.
#[test]
fn signals_restore_the_terminal() {
    if !have_tmux("the dashboard's signal test") {
        return;
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_difflab"));
    let dir = tempfile::tempdir().unwrap();
    save(&dir.path().join("lab.toml"), &experiment("10"));
    let tmux = session("signals", dir.path());
    for (round, signal) in ["TERM", "HUP"].into_iter().enumerate() {
        tmux.send(&[&format!("{} ui lab.toml", bin.display()), "Enter"]);
        tmux.wait_for("the dashboard", Duration::from_secs(60), |s| {
            s.contains("done 2/2")
        });
        let pid = dashboard_pid(&tmux);
        let killed = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status();
        assert!(killed.unwrap().success());
        tmux.wait_for("the shell", Duration::from_secs(10), |s| {
            !s.contains("1 Samplers")
        });
        assert_eq!(
            tmux.display("#{alternate_on}"),
            "0",
            "SIG{signal}: left the alternate screen"
        );
        assert_eq!(
            tmux.display("#{cursor_flag}"),
            "1",
            "SIG{signal}: the cursor is shown"
        );
        let marker = format!("after-{signal}-{}", round * 7 + 35);
        tmux.send(&[
            &format!("echo after-{signal}-$(({round} * 7 + 35))"),
            "Enter",
        ]);
        tmux.wait_for("echo to run", Duration::from_secs(10), |s| {
            s.contains(&format!("{marker}\n"))
        });
    }
}

/// `difflab` alone opens experiments/default.toml, and says what to do where there is none.
#[test]
fn bare_difflab_without_a_default_experiment_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_difflab"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("experiments/default.toml"), "{err}");
    assert!(
        err.contains("difflab ui experiments/analytic.toml"),
        "{err}"
    );
}

/// Opened on an experiment whose shards are writing into its output folder, the dashboard runs nothing
/// itself (nor loads the model): it shows each cell's samples across the shards, and merges them once the
/// last shard is done.
#[test]
fn the_dashboard_watches_a_sharded_run_and_merges_it() {
    if !have_tmux("the dashboard's sharded-run test") {
        return;
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_difflab"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lab.toml");
    save(&file, &experiment("10").replace("seeds = 4", "seeds = 6"));
    let shard = |i: usize| {
        let out = Command::new(&bin)
            .args(["run", file.to_str().unwrap(), "--shard", &format!("{i}/2")])
            .env_remove("SLURM_ARRAY_TASK_ID")
            .env_remove("RANK")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    shard(0);
    let tmux = session("shards", dir.path());
    let minute = Duration::from_secs(60);
    tmux.send(&[&format!("{} ui lab.toml", bin.display()), "Enter"]);
    tmux.wait_for("shard progress", minute, |s| {
        s.contains("shards 1/2 · 3/6 samples")
            && s.contains("watching 2 shards")
            && s.contains("it is not loaded here")
    });
    shard(1);
    tmux.wait_for("the merged cells", minute, |s| {
        s.contains("merged the 2 shards") && !s.contains("shards 1/2")
    });
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out/results.json")).unwrap(),
    )
    .unwrap();
    let cells = results["cells"].as_array().unwrap();
    assert!(!cells.is_empty());
    assert!(cells.iter().all(|c| c["samples"] == 6), "{results}");
    tmux.send(&["q"]);
}
