//! Damaged files: flipped bytes, truncation, foreign files, broken chunk sequences, noise.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests report failure by panicking"
)]

use crate::common::{Event, Rng, chunks, read_pieces, read_whole, run_files};
use difflab::metrics::Skipped;
use difflab::metrics::wandb::framing::{BLOCK_SIZE, FILE_HEADER, chunk_crc, encode_record};
use difflab::metrics::wandb::proto::{HistoryRecord, Item, Record};
use prost::Message;

const BLOCK: usize = BLOCK_SIZE as usize;

fn run_a() -> Vec<u8> {
    std::fs::read(&run_files("dlabwb01")[0]).unwrap()
}

/// The chunks of each record: FULL alone, or FIRST, MIDDLE..., LAST.
fn records_of(bytes: &[u8]) -> Vec<Vec<(usize, usize, u8)>> {
    let mut out: Vec<Vec<_>> = Vec::new();
    for c in chunks(bytes) {
        if c.2 == 1 || c.2 == 2 {
            out.push(vec![c]);
        } else {
            out.last_mut().unwrap().push(c);
        }
    }
    out
}

/// A history row at `step` with one scalar `x` and `pad` bytes of filler.
fn row(step: i64, pad: usize) -> Vec<u8> {
    let item = |key: &str, json: String| Item::new(key, &[], &json);
    Record {
        history: Some(HistoryRecord {
            item: vec![
                item("_step", step.to_string()),
                item("x", format!("{step}.5")),
                item("_pad", format!("\"{}\"", "p".repeat(pad))),
            ],
            step: None,
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// A synthetic file of `n` rows of varied sizes (some split over blocks).
fn synthetic(n: i64) -> Vec<u8> {
    let mut bytes = FILE_HEADER.to_vec();
    for step in 0..n {
        let pad = [40, 900, 5000, 12000, 300][step as usize % 5];
        bytes.extend(encode_record(&row(step, pad), bytes.len() as u64));
    }
    bytes
}

fn steps(events: &[Event]) -> Vec<i64> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Scalar(t, p) if t == "x" => Some(p.step),
            _ => None,
        })
        .collect()
}

/// Flips a byte inside the chunk at `chunk` and checks that exactly the records with a chunk
/// between it and the end of its block are lost.
fn check_flip(bytes: &[u8], chunk: usize) -> (crate::common::Read, Vec<usize>) {
    let block_end = (chunk / BLOCK + 1) * BLOCK;
    let records = records_of(bytes);
    let hit = |r: &Vec<(usize, usize, u8)>| r.iter().any(|c| c.0 >= chunk && c.0 < block_end);
    let lost: Vec<usize> = (0..records.len()).filter(|&i| hit(&records[i])).collect();
    let outside: usize = lost
        .iter()
        .flat_map(|&i| &records[i])
        .filter(|c| c.0 < chunk || c.0 >= block_end)
        .map(|c| 7 + c.1)
        .sum();
    let len = chunks(bytes).iter().find(|c| c.0 == chunk).unwrap().1;
    let mut damaged = bytes.to_vec();
    damaged[chunk + 7 + len / 2] ^= 0x01;
    let read = read_whole(&damaged);
    assert_eq!(read.records as usize, records.len() - lost.len());
    let skipped_bytes = (block_end.min(bytes.len()) - chunk + outside) as u64;
    let want = Skipped {
        bad_records: 1,
        skipped_bytes,
        ..Default::default()
    };
    assert_eq!(read.skipped, want, "flip in chunk at {chunk}");
    (read, lost)
}

#[test]
fn flipped_byte_in_split_run_record() {
    let bytes = run_a();
    let (read, lost) = check_flip(&bytes, 91);
    // Only the run record (FIRST in block 0, MIDDLE in block 1, LAST in block 2) is lost.
    assert_eq!(lost, vec![1]);
    assert_eq!(read.records, 110);
    assert_eq!(read.skipped.skipped_bytes, 79826 - 91);
    assert!(
        !read
            .events
            .iter()
            .any(|e| matches!(e, Event::Fact(_, k, _) if k == "name"))
    );
    assert_eq!(read.scalars("train/loss").len(), 30);
}

#[test]
fn flipped_byte_in_last_block() {
    let bytes = run_a();
    // The history row of step 10: it and every record after it in its block are lost.
    let chunk = chunks(&bytes)
        .into_iter()
        .find(|c| c.0 >= 85_000 && c.2 == 1)
        .unwrap()
        .0;
    let (read, lost) = check_flip(&bytes, chunk);
    assert!(lost.len() > 40, "{}", lost.len());
    let loss: Vec<i64> = read.scalars("train/loss").iter().map(|p| p.step).collect();
    assert!(loss.iter().all(|&s| s < 10) && !loss.is_empty(), "{loss:?}");
}

#[test]
fn flipped_byte_in_middle_block_of_synthetic_file() {
    let bytes = synthetic(60);
    assert!(bytes.len() > 5 * BLOCK);
    let all = records_of(&bytes);
    for chunk in chunks(&bytes).iter().map(|c| c.0) {
        let (read, lost) = check_flip(&bytes, chunk);
        let want: Vec<i64> = (0..all.len() as i64)
            .filter(|i| !lost.contains(&(*i as usize)))
            .collect();
        assert_eq!(steps(&read.events), want, "flip in chunk at {chunk}");
    }
}

#[test]
fn truncated_file_reports_partial_tail() {
    let bytes = run_a();
    // Inside the run record's MIDDLE chunk: only the header record is whole.
    let read = read_whole(&bytes[..50_000]);
    assert_eq!(read.records, 1);
    let want = Skipped {
        partial_tail_bytes: 50_000 - 91,
        ..Default::default()
    };
    assert_eq!(read.skipped, want);
    // Inside the exit record, the last one.
    let last = chunks(&bytes).last().unwrap().0;
    let cut = bytes.len() - 3;
    let read = read_whole(&bytes[..cut]);
    assert_eq!(read.records, 110);
    assert_eq!(read.skipped.partial_tail_bytes, (cut - last) as u64);
    assert_eq!(read.skipped.bad_records + read.skipped.skipped_bytes, 0);
    // Inside the file header.
    let read = read_whole(&bytes[..5]);
    assert_eq!(read.skipped.partial_tail_bytes, 5);
    // A follower that is not at the end yet waits instead.
    let mut d = difflab::metrics::wandb::WandbDecoder::new();
    let mut sink = crate::common::Collect::default();
    use difflab::metrics::LogDecoder;
    let used = d.decode(&bytes[..50_000], false, &mut sink);
    assert!(used <= 50_000);
    assert_eq!(d.skipped(), Skipped::default());
}

#[test]
fn not_a_wandb_file() {
    let read = read_whole(b"hello, this is a text file\n");
    assert!(read.events.is_empty());
    assert_eq!(read.skipped.bad_records, 1);
    assert_eq!(read.skipped.skipped_bytes, 27);
    let read = read_whole(b"");
    assert_eq!(read.skipped, Skipped::default());
    // A future store version is refused, as wandb-core does.
    let mut bytes = run_a();
    bytes[6] = 1;
    let read = read_whole(&bytes);
    assert!(read.events.is_empty());
    assert_eq!(read.skipped.skipped_bytes, bytes.len() as u64);
}

/// A chunk with a valid CRC.
fn chunk(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = chunk_crc(kind, payload).to_le_bytes().to_vec();
    out.extend((payload.len() as u16).to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
    out
}

#[test]
fn broken_chunk_sequences() {
    let good = row(5, 10);
    // A LAST chunk with no FIRST: dropped on its own, the next record is read.
    let mut bytes = FILE_HEADER.to_vec();
    bytes.extend(chunk(4, b"orphan"));
    bytes.extend(chunk(1, &good));
    let read = read_whole(&bytes);
    assert_eq!(steps(&read.events), vec![5]);
    let orphan = Skipped {
        bad_records: 1,
        skipped_bytes: 13,
        ..Default::default()
    };
    assert_eq!(read.skipped, orphan);
    // A FIRST followed by a FULL: the unfinished record is dropped.
    let mut bytes = FILE_HEADER.to_vec();
    bytes.extend(chunk(2, &good[..4]));
    bytes.extend(chunk(1, &good));
    let read = read_whole(&bytes);
    assert_eq!(steps(&read.events), vec![5]);
    assert_eq!(read.skipped.bad_records, 1);
    assert_eq!(read.skipped.skipped_bytes, 11);
    // An unknown chunk type costs the rest of the block.
    let mut bytes = FILE_HEADER.to_vec();
    bytes.extend(chunk(9, &good));
    bytes.extend(chunk(1, &good));
    let read = read_whole(&bytes);
    assert!(steps(&read.events).is_empty());
    assert_eq!(read.skipped.bad_records, 1);
    assert_eq!(read.skipped.skipped_bytes, (bytes.len() - 7) as u64);
    // A chunk longer than its block.
    let mut bytes = FILE_HEADER.to_vec();
    bytes.extend(chunk(1, &vec![0; BLOCK]));
    let read = read_whole(&bytes);
    assert_eq!(read.skipped.bad_records, 1);
}

#[test]
fn record_that_does_not_decode() {
    let mut bytes = FILE_HEADER.to_vec();
    bytes.extend(chunk(1, &[0xff, 0xff, 0xff]));
    bytes.extend(chunk(1, &row(3, 0)));
    let read = read_whole(&bytes);
    assert_eq!(read.records, 2);
    assert_eq!(steps(&read.events), vec![3]);
    let want = Skipped {
        bad_records: 1,
        ..Default::default()
    };
    assert_eq!(read.skipped, want);
}

#[test]
fn zeroed_rest_of_block_is_skipped() {
    // A writer that died after preallocating: zeros up to the end of the first block.
    let mut bytes = FILE_HEADER.to_vec();
    bytes.extend(chunk(1, &row(0, 10)));
    let zeros = BLOCK - bytes.len();
    bytes.resize(BLOCK, 0);
    bytes.extend(encode_record(&row(1, 10), BLOCK as u64));
    let read = read_whole(&bytes);
    assert_eq!(steps(&read.events), vec![0, 1]);
    let want = Skipped {
        skipped_bytes: zeros as u64,
        ..Default::default()
    };
    assert_eq!(read.skipped, want);
}

/// Random chunk sequences: valid or broken CRCs, any type, any length.
fn random_chunks(rng: &mut Rng) -> Vec<u8> {
    let mut bytes = if rng.below(10) == 0 {
        vec![]
    } else {
        FILE_HEADER.to_vec()
    };
    for _ in 0..rng.below(40) {
        let len = match rng.below(4) {
            0 => rng.below(20),
            1 => rng.below(3000),
            2 => rng.below(40000),
            _ => BLOCK - bytes.len() % BLOCK - 7,
        }
        .min(u16::MAX as usize);
        let payload: Vec<u8> = if rng.below(2) == 0 {
            row(rng.below(100) as i64, len)
        } else {
            (0..len).map(|_| rng.next() as u8).collect()
        };
        let mut c = chunk(rng.below(6) as u8, &payload);
        if rng.below(5) == 0 {
            c[0] ^= 1;
        }
        bytes.extend(c);
    }
    bytes
}

#[test]
fn random_bytes_never_panic_and_read_the_same_in_pieces() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for round in 0..300 {
        let bytes: Vec<u8> = match round % 3 {
            0 => (0..rng.below(5000)).map(|_| rng.next() as u8).collect(),
            1 => {
                let mut b = FILE_HEADER.to_vec();
                b.extend((0..rng.below(70000)).map(|_| rng.next() as u8));
                b
            }
            _ => random_chunks(&mut rng),
        };
        let whole = read_whole(&bytes);
        let sizes: Vec<usize> = (0..8).map(|_| 1 + rng.below(5000)).collect();
        assert_eq!(
            read_pieces(&bytes, &sizes).text(),
            whole.text(),
            "round {round}"
        );
    }
}

#[test]
fn random_damage_to_fixture() {
    let original = run_a();
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    for round in 0..60 {
        let mut bytes = original.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(bytes.len());
            bytes[at] = rng.next() as u8;
        }
        if rng.below(3) == 0 {
            bytes.truncate(rng.below(bytes.len()));
        }
        let whole = read_whole(&bytes);
        assert!(whole.records <= 111);
        let sizes: Vec<usize> = (0..4).map(|_| 1 + rng.below(40000)).collect();
        assert_eq!(
            read_pieces(&bytes, &sizes).text(),
            whole.text(),
            "round {round}"
        );
    }
}
