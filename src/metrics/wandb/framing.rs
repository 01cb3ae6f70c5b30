//! The framing of a `.wandb` file: a 7-byte header, then the LevelDB log format.
//!
//! ```text
//! header  ":W&B" | u16 LE magic 0xBEE1 | u8 version 0
//! blocks  32 KiB, counted from the start of the file (the header sits in the first block)
//! chunk   u32 LE CRC | u16 LE length | u8 type (FULL 1, FIRST 2, MIDDLE 3, LAST 4) | payload
//! ```
//!
//! Unlike LevelDB, the CRC is plain CRC-32 (IEEE) over the type byte and the payload, unmasked. A
//! chunk never crosses a block; fewer than 7 bytes left at the end of a block are padding. A record
//! longer than what is left of a block is split into FIRST, MIDDLE... and LAST chunks.
//!
//! Recovery follows wandb-core's reader: a corrupt chunk costs the rest of its block, and reading
//! goes on with the next FULL or FIRST chunk; the MIDDLE and LAST chunks of a broken record are
//! dropped on their own.

use super::Skipped;

/// The file header: ident, magic (little-endian) and store version.
pub const FILE_HEADER: [u8; 7] = *b":W&B\xE1\xBE\x00";
/// Size of a block; chunk boundaries are aligned to blocks from the start of the file.
pub const BLOCK_SIZE: u64 = 32 * 1024;
/// Bytes of a chunk header: CRC, length and type.
pub const CHUNK_HEADER: usize = 7;

const FULL: u8 = 1;
const FIRST: u8 = 2;
const MIDDLE: u8 = 3;
const LAST: u8 = 4;

/// Frames `payload` into chunks starting at file offset `offset` (used by tests and tools that
/// write `.wandb` files). Returns the bytes to append, padding included.
pub fn encode_record(payload: &[u8], offset: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = offset;
    let mut rest = payload;
    let mut first = true;
    loop {
        let room = block_room(at);
        if room < CHUNK_HEADER as u64 {
            out.resize(out.len() + room as usize, 0);
            at += room;
            continue;
        }
        let take = rest
            .len()
            .min(room as usize - CHUNK_HEADER)
            .min(u16::MAX as usize);
        let (piece, tail) = rest.split_at(take);
        let kind = match (first, tail.is_empty()) {
            (true, true) => FULL,
            (true, false) => FIRST,
            (false, false) => MIDDLE,
            (false, true) => LAST,
        };
        out.extend_from_slice(&chunk_crc(kind, piece).to_le_bytes());
        out.extend_from_slice(&(take as u16).to_le_bytes());
        out.push(kind);
        out.extend_from_slice(piece);
        at += (CHUNK_HEADER + take) as u64;
        rest = tail;
        first = false;
        if rest.is_empty() {
            return out;
        }
    }
}

/// The CRC a chunk header stores: CRC-32 (IEEE) of the type byte followed by the payload.
pub fn chunk_crc(kind: u8, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind]);
    h.update(payload);
    h.finalize()
}

/// Bytes from `offset` to the end of its block.
fn block_room(offset: u64) -> u64 {
    BLOCK_SIZE - offset % BLOCK_SIZE
}

/// Whether the file header has been checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Start {
    #[default]
    Pending,
    Good,
    /// Not a W&B file: every byte is skipped.
    Bad,
}

/// The chunks of a record split over blocks, read so far.
#[derive(Debug)]
struct Partial {
    data: Vec<u8>,
    /// File bytes of its chunks, headers included.
    bytes: u64,
}

/// What one step of framing did.
enum Next {
    /// Consumed this many bytes (at least one).
    Used(usize),
    /// Needs more bytes than the buffer holds.
    More,
}

/// Incremental framer: turns the bytes of a `.wandb` file into record payloads.
#[derive(Debug, Default)]
pub struct Framer {
    /// File offset of the next byte to be passed in.
    offset: u64,
    start: Start,
    partial: Option<Partial>,
    /// File offset up to which bytes are dropped (the end of a block with a corrupt chunk).
    skip_to: u64,
    /// Like wandb-core: after a corrupt chunk, further corrupt chunks before the next good one
    /// belong to the same damage and are not counted again as bad records.
    recovering: bool,
    /// The broken record whose leftover MIDDLE/LAST chunks may follow is already counted.
    lost_counted: bool,
    records: u64,
    skipped: Skipped,
}

impl Framer {
    /// Frames the complete chunks at the start of `buf` (which starts at the file offset where
    /// the previous call stopped), calls `on_record` with each whole record's payload, and returns
    /// how many bytes were consumed. With `eof`, an incomplete tail is counted and all of `buf` is
    /// consumed.
    pub fn feed(&mut self, buf: &[u8], eof: bool, on_record: &mut dyn FnMut(&[u8])) -> usize {
        let mut pos = 0;
        loop {
            let rest = buf.get(pos..).unwrap_or_default();
            let at = self.offset + pos as u64;
            match self.next(rest, at, on_record) {
                Next::Used(n) => pos += n,
                Next::More => {
                    if eof {
                        self.tail(rest.len());
                        pos = buf.len();
                    }
                    break;
                }
            }
        }
        self.offset += pos as u64;
        pos
    }

    /// Records framed so far (whole records, whether or not their contents decode).
    pub fn records(&self) -> u64 {
        self.records
    }

    /// What was skipped so far.
    pub fn skipped(&self) -> Skipped {
        self.skipped
    }

    /// The file ended: what is left and the record being assembled are an incomplete tail.
    fn tail(&mut self, left: usize) {
        let partial = self.partial.take().map_or(0, |p| p.bytes);
        self.skipped.partial_tail_bytes += left as u64 + partial;
    }

    /// Handles what starts at the beginning of `rest`, which lies at file offset `at`.
    fn next(&mut self, rest: &[u8], at: u64, on_record: &mut dyn FnMut(&[u8])) -> Next {
        if rest.is_empty() {
            return Next::More;
        }
        match self.start {
            Start::Pending => return self.header(rest),
            Start::Bad => return self.drop_bytes(rest.len()),
            Start::Good => {}
        }
        if at < self.skip_to {
            let n = (self.skip_to - at).min(rest.len() as u64) as usize;
            return self.drop_bytes(n);
        }
        let room = block_room(at);
        if room < CHUNK_HEADER as u64 {
            // Block trailer: zero padding the writer leaves when no chunk header fits.
            return if (rest.len() as u64) < room {
                Next::More
            } else {
                Next::Used(room as usize)
            };
        }
        self.chunk(rest, at, room, on_record)
    }

    /// Checks the file header.
    fn header(&mut self, rest: &[u8]) -> Next {
        let n = rest.len().min(FILE_HEADER.len());
        let head = rest.get(..n).unwrap_or_default();
        if FILE_HEADER.starts_with(head) {
            if n < FILE_HEADER.len() {
                return Next::More;
            }
            self.start = Start::Good;
            return Next::Used(n);
        }
        self.start = Start::Bad;
        self.skipped.bad_records += 1;
        self.drop_bytes(rest.len())
    }

    /// Reads the chunk at the start of `rest`; `room` bytes are left in its block.
    fn chunk(&mut self, rest: &[u8], at: u64, room: u64, on_record: &mut dyn FnMut(&[u8])) -> Next {
        let avail = rest.len();
        let Some(&[c0, c1, c2, c3, l0, l1, kind]) = rest.get(..CHUNK_HEADER) else {
            return Next::More;
        };
        let crc = u32::from_le_bytes([c0, c1, c2, c3]);
        let len = usize::from(u16::from_le_bytes([l0, l1]));
        if crc == 0 && len == 0 && kind == 0 {
            return self.zeroed(at, avail);
        }
        let size = CHUNK_HEADER + len;
        if size as u64 > room {
            return self.corrupt(at, avail);
        }
        let Some(payload) = rest.get(CHUNK_HEADER..size) else {
            return Next::More;
        };
        if chunk_crc(kind, payload) != crc || !(FULL..=LAST).contains(&kind) {
            return self.corrupt(at, avail);
        }
        self.recovering = false;
        match kind {
            FULL => {
                self.start_record();
                self.records += 1;
                on_record(payload);
            }
            FIRST => {
                self.start_record();
                self.partial = Some(Partial {
                    data: payload.to_vec(),
                    bytes: size as u64,
                });
            }
            _ => self.continue_record(payload, size, kind == LAST, on_record),
        }
        Next::Used(size)
    }

    /// A FULL or FIRST chunk starts a record: one still being assembled is broken.
    fn start_record(&mut self) {
        if let Some(p) = self.partial.take() {
            self.skipped.bad_records += 1;
            self.skipped.skipped_bytes += p.bytes;
        }
        self.lost_counted = false;
    }

    /// Appends a MIDDLE or LAST chunk to the record being assembled.
    fn continue_record(
        &mut self,
        payload: &[u8],
        size: usize,
        last: bool,
        on_record: &mut dyn FnMut(&[u8]),
    ) {
        let Some(p) = self.partial.as_mut() else {
            // The rest of a record whose start was lost.
            if !self.lost_counted {
                self.skipped.bad_records += 1;
                self.lost_counted = true;
            }
            self.skipped.skipped_bytes += size as u64;
            return;
        };
        p.data.extend_from_slice(payload);
        p.bytes += size as u64;
        if last && let Some(p) = self.partial.take() {
            self.records += 1;
            on_record(&p.data);
        }
    }

    /// An all-zero chunk header: the rest of the block is unwritten. Outside a record wandb-core
    /// skips it without an error; inside one it breaks the record.
    fn zeroed(&mut self, at: u64, avail: usize) -> Next {
        if self.partial.is_some() {
            return self.corrupt(at, avail);
        }
        self.recovering = true;
        self.skip_block(at, avail)
    }

    /// A corrupt chunk: the record it belongs to is lost and so is the rest of its block.
    fn corrupt(&mut self, at: u64, avail: usize) -> Next {
        if let Some(p) = self.partial.take() {
            self.skipped.bad_records += 1;
            self.skipped.skipped_bytes += p.bytes;
        } else if !self.recovering {
            self.skipped.bad_records += 1;
        }
        self.recovering = true;
        self.lost_counted = true;
        self.skip_block(at, avail)
    }

    /// Drops the bytes from `at` to the end of its block (some may not have arrived yet).
    fn skip_block(&mut self, at: u64, avail: usize) -> Next {
        self.skip_to = at + block_room(at);
        let n = block_room(at).min(avail as u64) as usize;
        self.drop_bytes(n)
    }

    /// Consumes `n` bytes as skipped.
    fn drop_bytes(&mut self, n: usize) -> Next {
        self.skipped.skipped_bytes += n as u64;
        Next::Used(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_covers_type_byte_and_payload() {
        // The CRC-32 (IEEE) check value: "123456789" with '1' as the type byte.
        assert_eq!(chunk_crc(b'1', b"23456789"), 0xcbf4_3926);
    }

    #[test]
    fn split_records_come_back_whole() {
        let mut file = FILE_HEADER.to_vec();
        let payloads: Vec<Vec<u8>> = (0..12u8)
            .map(|i| vec![i; 7000 * usize::from(i % 4) + usize::from(i)])
            .collect();
        for p in &payloads {
            file.extend(encode_record(p, file.len() as u64));
        }
        assert!(file.len() > 2 * BLOCK_SIZE as usize);
        let mut framer = Framer::default();
        let mut got = Vec::new();
        let used = framer.feed(&file, true, &mut |p| got.push(p.to_vec()));
        assert_eq!(used, file.len());
        assert_eq!(got, payloads);
        assert_eq!(framer.records(), 12);
        assert_eq!(framer.skipped(), Skipped::default());
    }

    #[test]
    fn trailer_is_padding() {
        // A record that leaves 3 bytes in the first block: the next starts in the second.
        let first = BLOCK_SIZE as usize - FILE_HEADER.len() - CHUNK_HEADER - 3;
        let mut file = FILE_HEADER.to_vec();
        file.extend(encode_record(&vec![1; first], file.len() as u64));
        assert_eq!(file.len(), BLOCK_SIZE as usize - 3);
        file.extend(encode_record(b"next", file.len() as u64));
        assert_eq!(file.len(), BLOCK_SIZE as usize + CHUNK_HEADER + 4);
        let mut framer = Framer::default();
        let mut got = 0;
        framer.feed(&file, true, &mut |_| got += 1);
        assert_eq!((got, framer.skipped()), (2, Skipped::default()));
    }
}
