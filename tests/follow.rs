//! Live follow: values appended while a follower runs arrive within a second or two; partial
//! lines and records wait; truncated and replaced files are reread; nothing is read twice.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use difflab::metrics::tfevents::proto;
use difflab::metrics::tfevents::record::encode_record;
use difflab::metrics::{FollowEvent, FollowOptions, Follower, Store};
use prost::Message;

/// Applies events to `store` until `done` holds, for at most `limit`.
fn wait_until(
    rx: &Receiver<FollowEvent>,
    store: &mut Store,
    events: &mut Vec<FollowEvent>,
    limit: Duration,
    done: impl Fn(&Store, &[FollowEvent]) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done(store, events) {
            return true;
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return false;
        };
        if let Ok(e) = rx.recv_timeout(left.min(Duration::from_millis(50))) {
            store.apply(&e);
            events.push(e);
        }
    }
}

fn append(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
    f.flush().unwrap();
}

fn values(store: &Store, run: &str, tag: &str) -> Vec<(i64, f64)> {
    store
        .run(run)
        .and_then(|r| r.series(tag))
        .map(|s| s.points.iter().map(|p| (p.step, p.value)).collect())
        .unwrap_or_default()
}

const ARRIVAL: Duration = Duration::from_secs(2);

#[test]
fn json_lines_appended_arrive_and_partial_lines_wait() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run1");
    std::fs::create_dir(&run).unwrap();
    let log = run.join("metrics.jsonl");
    append(&log, b"{\"step\": 0, \"loss\": 1.0}\n");

    let (follower, rx) = Follower::spawn(&[dir.path().to_path_buf()], FollowOptions::default())
        .expect("follower starts");
    let mut store = Store::new();
    let mut events = Vec::new();
    assert!(wait_until(&rx, &mut store, &mut events, ARRIVAL, |_, e| {
        e.contains(&FollowEvent::CaughtUp)
    }));
    assert_eq!(values(&store, "run1", "loss"), [(0, 1.0)]);

    // A whole line arrives within the limit.
    let t = Instant::now();
    append(&log, b"{\"step\": 1, \"loss\": 0.5}\n");
    assert!(
        wait_until(&rx, &mut store, &mut events, ARRIVAL, |s, _| values(
            s, "run1", "loss"
        )
        .len()
            == 2),
        "appended line not seen"
    );
    let latency = t.elapsed();

    // Half a line: nothing, and no bad line; the rest completes it.
    append(&log, b"{\"step\": 2, \"lo");
    append(&log, b"ss\": 0.25}\n");
    assert!(wait_until(
        &rx,
        &mut store,
        &mut events,
        ARRIVAL,
        |s, _| values(s, "run1", "loss").len() == 3
    ));
    assert_eq!(
        values(&store, "run1", "loss"),
        [(0, 1.0), (1, 0.5), (2, 0.25)]
    );
    assert!(store.run("run1").unwrap().skipped().is_empty());

    // A new run folder appears while following.
    let run2 = dir.path().join("run2");
    std::fs::create_dir(&run2).unwrap();
    append(&run2.join("log.csv"), b"step,fid\n10,42.5\n");
    assert!(
        wait_until(&rx, &mut store, &mut events, ARRIVAL, |s, _| values(
            s, "run2", "fid"
        ) == [(
            10, 42.5
        )]),
        "new run not seen"
    );
    follower.stop();
    assert!(latency < ARRIVAL, "took {latency:?}");
}

#[test]
fn event_records_cut_mid_write_wait_until_complete() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.out.tfevents.1.test");
    let record = |step: i64, value: f32| {
        let event = proto::Event {
            wall_time: 100.0 + step as f64,
            step,
            file_version: None,
            summary: Some(proto::Summary {
                value: vec![proto::SummaryValue {
                    tag: "loss".into(),
                    simple_value: Some(value),
                    tensor: None,
                    image: None,
                    metadata: None,
                }],
            }),
        };
        let mut buf = Vec::new();
        encode_record(&event.encode_to_vec(), &mut buf);
        buf
    };
    append(&log, &record(0, 1.0));
    let (follower, rx) =
        Follower::spawn(&[dir.path().to_path_buf()], FollowOptions::default()).unwrap();
    let mut store = Store::new();
    let mut events = Vec::new();
    assert!(wait_until(
        &rx,
        &mut store,
        &mut events,
        ARRIVAL,
        |s, _| values(s, ".", "loss").len() == 1
    ));

    let r1 = record(1, 0.5);
    append(&log, &r1[..7]); // inside the header
    append(&log, &r1[7..20]); // inside the data
    append(&log, &r1[20..]);
    append(&log, &record(2, 0.25));
    assert!(wait_until(
        &rx,
        &mut store,
        &mut events,
        ARRIVAL,
        |s, _| values(s, ".", "loss").len() == 3
    ));
    assert_eq!(values(&store, ".", "loss"), [(0, 1.0), (1, 0.5), (2, 0.25)]);
    assert!(store.run(".").unwrap().skipped().is_empty());
    follower.stop();
}

#[test]
fn truncated_and_replaced_files_are_reread() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("m.jsonl");
    append(&log, b"{\"step\": 0, \"x\": 1}\n{\"step\": 1, \"x\": 2}\n");
    let (follower, rx) =
        Follower::spawn(&[dir.path().to_path_buf()], FollowOptions::default()).unwrap();
    let mut store = Store::new();
    let mut events = Vec::new();
    assert!(wait_until(
        &rx,
        &mut store,
        &mut events,
        ARRIVAL,
        |s, _| values(s, ".", "x").len() == 2
    ));

    // Truncate and write a shorter file: a reset, then the new content only.
    std::fs::write(&log, b"{\"step\": 0, \"x\": 9}\n").unwrap();
    assert!(
        wait_until(&rx, &mut store, &mut events, ARRIVAL, |s, _| values(
            s, ".", "x"
        ) == [(
            0, 9.0
        )]),
        "truncation not seen: {:?}",
        values(&store, ".", "x")
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, FollowEvent::Reset { .. }))
    );

    // Replace by rename (a new inode), longer than before.
    let tmp = dir.path().join("m.tmp");
    std::fs::write(
        &tmp,
        b"{\"step\": 5, \"x\": 7}\n{\"step\": 6, \"x\": 8}\n{\"step\": 7, \"x\": 9}\n",
    )
    .unwrap();
    std::fs::rename(&tmp, &log).unwrap();
    assert!(
        wait_until(&rx, &mut store, &mut events, ARRIVAL, |s, _| {
            values(s, ".", "x") == [(5, 7.0), (6, 8.0), (7, 9.0)]
        }),
        "replacement not seen: {:?}",
        values(&store, ".", "x")
    );
    follower.stop();
}

#[test]
fn nothing_is_read_twice_under_many_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("m.jsonl");
    append(&log, b"");
    let (follower, rx) =
        Follower::spawn(&[dir.path().to_path_buf()], FollowOptions::default()).unwrap();
    let mut store = Store::new();
    let mut events = Vec::new();
    let n = 2000;
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            for i in 0..n {
                // Split each line in two writes to exercise partial lines.
                let line = format!("{{\"step\": {i}, \"v\": {i}}}\n");
                let (a, b) = line.as_bytes().split_at(line.len() / 2);
                append(&log, a);
                append(&log, b);
            }
        })
    };
    writer.join().unwrap();
    assert!(wait_until(
        &rx,
        &mut store,
        &mut events,
        Duration::from_secs(10),
        |s, _| { values(s, ".", "v").len() >= n }
    ));
    let v = values(&store, ".", "v");
    assert_eq!(v.len(), n);
    assert!(
        v.iter()
            .enumerate()
            .all(|(i, &(s, x))| s == i as i64 && x == i as f64)
    );
    assert!(store.run(".").unwrap().skipped().is_empty());
    follower.stop();
}

#[test]
fn callback_follower_can_stop_itself() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.jsonl"), b"{\"v\": 1}\n").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let follower = Follower::spawn_with(
        &[dir.path().to_path_buf()],
        FollowOptions::default(),
        move |e| {
            let caught_up = e == FollowEvent::CaughtUp;
            let _ = tx.send(e);
            !caught_up
        },
    )
    .unwrap();
    let mut got = Vec::new();
    while let Ok(e) = rx.recv_timeout(ARRIVAL) {
        got.push(e);
    }
    assert!(matches!(got.first(), Some(FollowEvent::Points { .. })));
    assert_eq!(got.last(), Some(&FollowEvent::CaughtUp));
    drop(follower);
}
