//! Reading a file in pieces of any sizes gives exactly what reading it whole gives.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests report failure by panicking"
)]

use crate::common::{Rng, chunks, read_pieces, read_whole, run_files};

const SIZES: [&[usize]; 8] = [
    &[1],
    &[7],
    &[6, 1, 8],
    &[4096],
    &[32761],
    &[32768],
    &[32769, 5],
    &[100_000],
];

fn fixtures() -> Vec<Vec<u8>> {
    ["dlabwb01", "dlabwb02"]
        .iter()
        .flat_map(|id| run_files(id))
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

fn assert_same_in_pieces(bytes: &[u8], what: &str) {
    let whole = read_whole(bytes).text();
    for sizes in SIZES {
        assert_eq!(
            read_pieces(bytes, sizes).text(),
            whole,
            "{what} in {sizes:?}"
        );
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ bytes.len() as u64);
    let random: Vec<usize> = (0..64).map(|_| 1 + rng.below(9000)).collect();
    assert_eq!(
        read_pieces(bytes, &random).text(),
        whole,
        "{what} in random pieces"
    );
}

#[test]
fn fixtures_in_pieces() {
    for bytes in fixtures() {
        assert_same_in_pieces(&bytes, "fixture");
    }
}

#[test]
fn damaged_fixture_in_pieces() {
    let bytes = fixtures().swap_remove(0);
    let mut flipped = bytes.clone();
    // A byte inside the payload of the run record's MIDDLE chunk, in the second block.
    flipped[40_000] ^= 0x20;
    assert_same_in_pieces(&flipped, "flipped");
    assert_same_in_pieces(&bytes[..50_000], "cut in a MIDDLE chunk");
    assert_same_in_pieces(&bytes[..bytes.len() - 3], "cut in the last chunk");
    assert_same_in_pieces(&bytes[..32_770], "cut in a chunk header");
    assert_same_in_pieces(&bytes[..4], "cut in the file header");
    let mut bad_header = bytes.clone();
    bad_header[3] = b'X';
    assert_same_in_pieces(&bad_header, "bad header");
}

#[test]
fn every_chunk_boundary_split() {
    // Split exactly at every chunk start and one byte either side, and around block ends.
    let bytes = fixtures().swap_remove(0);
    let whole = read_whole(&bytes).text();
    let mut cuts: Vec<usize> = chunks(&bytes)
        .iter()
        .flat_map(|c| [c.0 - 1, c.0, c.0 + 1])
        .collect();
    cuts.extend([32_767, 32_768, 32_769, 65_535, 65_536, 65_537]);
    for cut in cuts {
        let got = read_pieces(&bytes, &[cut, bytes.len()]).text();
        assert_eq!(got, whole, "cut at {cut}");
    }
}
