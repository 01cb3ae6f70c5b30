//! A follower with nothing new to read does no work. Its own reads of the log files and folders
//! cause file-system access events; answering those would read again, forever (a core kept busy).
//! This test has its own binary so that the process's CPU time is the follower's alone.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]
#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use difflab::metrics::{FollowEvent, FollowOptions, Follower};

/// User plus system CPU time of this process, in clock ticks (1/100 s on Linux).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn an_idle_follower_uses_no_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let lines: String = (1..=2000)
        .map(|s| format!("{{\"step\": {s}, \"loss\": {}}}\n", 1.0 / s as f64))
        .collect();
    std::fs::write(run.join("metrics.jsonl"), lines).unwrap();

    let (follower, rx) =
        Follower::spawn(&[dir.path().to_path_buf()], FollowOptions::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rx.recv_timeout(Duration::from_millis(100)).ok() != Some(FollowEvent::CaughtUp) {
        assert!(Instant::now() < deadline, "no CaughtUp");
    }
    // Let the first read's own notifications arrive and settle.
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks();
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks() - before;
    drop(follower);
    // The feedback loop this guards against used well over a second of CPU in two seconds; an
    // idle follower polls twice a second and uses next to nothing.
    assert!(
        used < 30,
        "the idle follower used {used} ticks of CPU in 2 s"
    );
    assert!(
        rx.try_iter()
            .all(|e| !matches!(e, FollowEvent::Points { .. })),
        "nothing new was written"
    );
}
