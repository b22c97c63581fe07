//! A view over the fixed 61-byte header of a Kafka v2 record batch.
//!
//! The broker never decodes records on the produce or fetch path: it checks a
//! batch's framing (length, magic, CRC-32C), reads the few header fields it
//! needs (offset delta, timestamps, producer id and sequence) and rewrites
//! only the fields that lie outside the CRC (base offset, partition leader
//! epoch). Layout, all big-endian:
//!
//! ```text
//! 0  baseOffset i64          8  batchLength i32      12 partitionLeaderEpoch i32
//! 16 magic i8                17 crc u32 (CRC-32C of bytes 21..end)
//! 21 attributes i16          23 lastOffsetDelta i32  27 baseTimestamp i64
//! 35 maxTimestamp i64        43 producerId i64       51 producerEpoch i16
//! 53 baseSequence i32        57 recordsCount i32     61 records...
//! ```

use thiserror::Error;

/// Size of the v2 batch header, before the records.
pub const HEADER_LEN: usize = 61;
/// Bytes of a batch before (and including) the length field.
pub const LOG_OVERHEAD: usize = 12;
/// The only record batch format weir accepts.
pub const MAGIC_V2: i8 = 2;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// Why a batch was refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchError {
    /// Fewer bytes than a header, or a length field that disagrees with the bytes.
    #[error("record batch framing is invalid: {0}")]
    Framing(&'static str),
    /// A magic byte other than 2.
    #[error("unsupported record batch magic {0}")]
    Magic(i8),
    /// The stored CRC-32C does not match the bytes.
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    /// Header fields that cannot describe a valid batch.
    #[error("record batch is invalid: {0}")]
    Invalid(&'static str),
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(x)
}

/// Header fields of one batch, read from a slice whose length has been checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Value of the length field: bytes after it (total = this + 12).
    pub batch_length: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Reads the header at the start of `bytes`, which must hold at least
    /// [`HEADER_LEN`] bytes. Checks nothing but the length.
    pub fn parse(bytes: &[u8]) -> Result<Self, BatchError> {
        if bytes.len() < HEADER_LEN {
            return Err(BatchError::Framing("shorter than a batch header"));
        }
        Ok(Self {
            base_offset: be_i64(bytes, 0),
            batch_length: be_i32(bytes, 8),
            magic: bytes[16] as i8,
            crc: be_u32(bytes, 17),
            attributes: be_i16(bytes, 21),
            last_offset_delta: be_i32(bytes, 23),
            base_timestamp: be_i64(bytes, 27),
            max_timestamp: be_i64(bytes, 35),
            producer_id: be_i64(bytes, 43),
            producer_epoch: be_i16(bytes, 51),
            base_sequence: be_i32(bytes, 53),
            records_count: be_i32(bytes, 57),
        })
    }

    /// Total size of the batch on the wire and on disk.
    pub fn total_len(&self) -> usize {
        self.batch_length.max(0) as usize + LOG_OVERHEAD
    }

    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Compression codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & ATTR_COMPRESSION_MASK
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_TYPE != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Last sequence number in the batch, with Kafka's wrap-around at i32::MAX.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return -1;
        }
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        (last % (i64::from(i32::MAX) + 1)) as i32
    }
}

/// Computes the CRC-32C a v2 batch carries: over `attributes..end`.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[21..])
}

/// Checks one complete batch: framing, magic, CRC and header consistency.
/// `batch` must be exactly one batch.
pub fn validate(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = BatchHeader::parse(batch)?;
    if h.batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(BatchError::Framing("batch length smaller than its header"));
    }
    if h.total_len() != batch.len() {
        return Err(BatchError::Framing("batch length does not match the bytes"));
    }
    if h.magic != MAGIC_V2 {
        return Err(BatchError::Magic(h.magic));
    }
    let computed = compute_crc(batch);
    if computed != h.crc {
        return Err(BatchError::Crc {
            stored: h.crc,
            computed,
        });
    }
    if h.records_count <= 0 {
        return Err(BatchError::Invalid("a batch must hold at least one record"));
    }
    if h.last_offset_delta != h.records_count - 1 {
        return Err(BatchError::Invalid(
            "last offset delta does not match the record count",
        ));
    }
    if h.compression() > 4 {
        return Err(BatchError::Invalid("unknown compression codec"));
    }
    if h.compression() == 0 && count_records(&batch[HEADER_LEN..]) != Some(h.records_count as usize)
    {
        // Uncompressed records are counted by their length prefixes (no
        // decode): a header claiming more records than the batch holds would
        // take offsets it does not use.
        return Err(BatchError::Invalid(
            "record count does not match the records in the batch",
        ));
    }
    Ok(h)
}

/// Number of records in an uncompressed batch body, by walking their varint
/// length prefixes; `None` when they do not tile the body exactly.
fn count_records(mut body: &[u8]) -> Option<usize> {
    let mut n = 0usize;
    while !body.is_empty() {
        let (len, used) = read_varint(body)?;
        let len = usize::try_from(len).ok()?;
        body = body.get(used..)?.get(len..)?;
        n += 1;
    }
    Some(n)
}

/// A zigzag varint (the record format's `varint`): value and bytes used.
fn read_varint(b: &[u8]) -> Option<(i64, usize)> {
    let mut raw: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let v = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
            return Some((v, i + 1));
        }
    }
    None
}

/// Splits a buffer of concatenated batches, validating each.
pub fn split_batches(mut bytes: &[u8]) -> Result<Vec<(usize, BatchHeader)>, BatchError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while !bytes.is_empty() {
        if bytes.len() < HEADER_LEN {
            return Err(BatchError::Framing("trailing bytes shorter than a batch"));
        }
        let len_field = be_i32(bytes, 8);
        if len_field < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(BatchError::Framing("batch length smaller than its header"));
        }
        let total = len_field as usize + LOG_OVERHEAD;
        if total > bytes.len() {
            return Err(BatchError::Framing("batch longer than the bytes sent"));
        }
        let h = validate(&bytes[..total])?;
        out.push((pos, h));
        pos += total;
        bytes = &bytes[total..];
    }
    Ok(out)
}

/// Rewrites the base offset (outside the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Rewrites the partition leader epoch (outside the CRC).
pub fn set_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[12..16].copy_from_slice(&epoch.to_be_bytes());
}

/// Stamps a batch with LogAppendTime: sets the timestamp-type attribute and the
/// max timestamp, then recomputes the CRC (the only rewrite inside the CRC).
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attrs = be_i16(batch, 21) | ATTR_TIMESTAMP_TYPE;
    batch[21..23].copy_from_slice(&attrs.to_be_bytes());
    batch[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = compute_crc(batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a valid uncompressed v2 batch of `count` tiny records (for tests).
    pub(crate) fn make_batch(count: i32, ts: i64) -> Vec<u8> {
        let mut records = Vec::new();
        for i in 0..count {
            // record: length varint, attributes i8, tsDelta varint, offsetDelta varint,
            // keyLen varint(-1), valueLen varint(1), value, headers varint(0)
            let body = [
                0u8,
                0,
                zigzag(i as i64),
                1, /* -1 */
                2, /* 1 */
                b'x',
                0,
            ];
            records.push(zigzag(body.len() as i64));
            records.extend_from_slice(&body);
        }
        let mut b = vec![0u8; HEADER_LEN];
        b.extend_from_slice(&records);
        let len = (b.len() - LOG_OVERHEAD) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[16] = 2;
        b[23..27].copy_from_slice(&(count - 1).to_be_bytes());
        b[27..35].copy_from_slice(&ts.to_be_bytes());
        b[35..43].copy_from_slice(&ts.to_be_bytes());
        b[43..51].copy_from_slice(&(-1i64).to_be_bytes());
        b[51..53].copy_from_slice(&(-1i16).to_be_bytes());
        b[53..57].copy_from_slice(&(-1i32).to_be_bytes());
        b[57..61].copy_from_slice(&count.to_be_bytes());
        let crc = compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn zigzag(v: i64) -> u8 {
        (((v << 1) ^ (v >> 63)) as u8) & 0x7f
    }

    #[test]
    fn a_built_batch_validates() {
        let b = make_batch(3, 1000);
        let h = validate(&b).unwrap();
        assert_eq!(h.records_count, 3);
        assert_eq!(h.last_offset_delta, 2);
    }

    #[test]
    fn a_flipped_byte_inside_the_crc_is_refused() {
        let mut b = make_batch(3, 1000);
        let last = b.len() - 1;
        b[last] ^= 0xff;
        assert!(matches!(validate(&b), Err(BatchError::Crc { .. })));
    }

    #[test]
    fn base_offset_and_epoch_rewrites_keep_the_crc_valid() {
        let mut b = make_batch(2, 5);
        set_base_offset(&mut b, 12345);
        set_leader_epoch(&mut b, 7);
        let h = validate(&b).unwrap();
        assert_eq!(h.base_offset, 12345);
    }

    #[test]
    fn log_append_time_recomputes_the_crc() {
        let mut b = make_batch(2, 5);
        set_log_append_time(&mut b, 99);
        let h = validate(&b).unwrap();
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 99);
    }

    #[test]
    fn truncated_and_oversized_lengths_are_framing_errors() {
        let b = make_batch(2, 5);
        assert!(matches!(
            split_batches(&b[..b.len() - 1]),
            Err(BatchError::Framing(_))
        ));
        let mut c = b.clone();
        c[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(split_batches(&c), Err(BatchError::Framing(_))));
        let mut d = b;
        d[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(split_batches(&d), Err(BatchError::Framing(_))));
    }

    #[test]
    fn wrong_magic_is_refused() {
        let mut b = make_batch(1, 5);
        b[16] = 1;
        assert_eq!(validate(&b), Err(BatchError::Magic(1)));
    }
}
