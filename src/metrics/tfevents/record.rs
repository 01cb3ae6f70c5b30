//! TFRecord framing: each record is
//!
//! ```text
//! u64 length (little-endian) | u32 masked CRC-32C of the length | length bytes of data | u32 masked CRC-32C of the data
//! ```
//!
//! A record whose data checksum fails is skipped by length. A header whose length checksum fails
//! gives no length to skip by, so the reader scans forward for the next offset where a valid
//! header starts (and, when that record is complete, where its data checksum holds too).

/// Bytes before the data: length and its checksum.
pub const HEADER_LEN: usize = 12;
/// Bytes after the data: its checksum.
pub const FOOTER_LEN: usize = 4;
/// Lengths above this are taken as corruption: serialized protobufs stay under 2 GiB.
pub const MAX_RECORD_LEN: u64 = 1 << 31;

const MASK_DELTA: u32 = 0xa282_ead8;

/// The masked CRC-32C (Castagnoli) TFRecords store, the same masking as LevelDB's.
pub fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Frames `data` as one TFRecord (used by tests and tools that write event files).
pub fn encode_record(data: &[u8], out: &mut Vec<u8>) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
}

/// What starts at the beginning of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole record, `size` bytes with framing; `data_ok` tells whether its data checksum holds.
    Record {
        data: &'a [u8],
        size: usize,
        data_ok: bool,
    },
    /// A valid header (or fewer than 12 bytes) whose record is not complete yet.
    Incomplete,
    /// The length checksum fails (or the length is absurd): this is not a record boundary.
    BadHeader,
}

/// Reads the frame at the start of `buf`.
pub fn frame(buf: &[u8]) -> Frame<'_> {
    let Some(len) = header_len(buf) else {
        return if buf.len() < HEADER_LEN {
            Frame::Incomplete
        } else {
            Frame::BadHeader
        };
    };
    let len = len as usize;
    let size = HEADER_LEN + len + FOOTER_LEN;
    if buf.len() < size {
        return Frame::Incomplete;
    }
    let data = &buf[HEADER_LEN..HEADER_LEN + len];
    let want = le_u32(&buf[HEADER_LEN + len..size]);
    Frame::Record {
        data,
        size,
        data_ok: masked_crc(data) == want,
    }
}

/// A little-endian u32 from a 4-byte slice.
fn le_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(std::array::from_fn(|i| bytes[i]))
}

/// The length in a valid header at the start of `buf`; `None` if `buf` is shorter than a
/// header or the header is not valid.
fn header_len(buf: &[u8]) -> Option<u64> {
    let header = buf.get(..HEADER_LEN)?;
    let len_bytes = &header[..8];
    if masked_crc(len_bytes) != le_u32(&header[8..12]) {
        return None;
    }
    let len = u64::from_le_bytes(std::array::from_fn(|i| len_bytes[i]));
    (len <= MAX_RECORD_LEN).then_some(len)
}

/// Where the next plausible record starts in `buf`: the first offset whose header is valid and
/// whose record, if complete within `buf`, has a valid data checksum. `None` if there is none;
/// a header cut off by the end of `buf` is not found either (see [`resync_keep`]).
pub fn resync(buf: &[u8]) -> Option<usize> {
    (0..buf.len().saturating_sub(HEADER_LEN - 1)).find(|&i| match frame(&buf[i..]) {
        Frame::Record { data_ok, .. } => data_ok,
        Frame::Incomplete => true,
        Frame::BadHeader => false,
    })
}

/// When [`resync`] finds nothing in `buf`, how many bytes at its end must be kept because a
/// header could start there once more bytes arrive.
pub fn resync_keep(buf: &[u8]) -> usize {
    buf.len().min(HEADER_LEN - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_reference_values() {
        // CRC-32C of 32 zero bytes (RFC 3720, B.4) is 0x8a9136aa, then masked.
        let crc: u32 = 0x8a91_36aa;
        assert_eq!(
            masked_crc(&[0; 32]),
            crc.rotate_right(15).wrapping_add(MASK_DELTA)
        );
        // A `file_version` event from a real TensorFlow event file.
        assert_eq!(masked_crc(b"\x1a\x11CRC test, one two"), 0x5794_d08a);
    }

    #[test]
    fn frames_and_resyncs() {
        let mut buf = Vec::new();
        encode_record(b"hello", &mut buf);
        let first = buf.len();
        encode_record(b"world!", &mut buf);
        assert_eq!(
            frame(&buf),
            Frame::Record {
                data: b"hello",
                size: first,
                data_ok: true
            }
        );
        assert_eq!(frame(&buf[..first - 1]), Frame::Incomplete);
        assert_eq!(frame(&buf[..5]), Frame::Incomplete);
        let mut bad = buf.clone();
        bad[9] ^= 1;
        assert_eq!(frame(&bad), Frame::BadHeader);
        assert_eq!(resync(&bad[1..]), Some(first - 1));
        let mut bad_data = buf.clone();
        bad_data[HEADER_LEN] ^= 1;
        assert!(matches!(
            frame(&bad_data),
            Frame::Record { data_ok: false, .. }
        ));
    }
}
