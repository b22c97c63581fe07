//! A view over the fixed 61-byte header of a Kafka v2 record batch, and the
//! checks a batch passes before it is stored.
//!
//! The broker never decodes records into values on the produce or fetch
//! path: it checks a batch's framing (length, magic, CRC-32C), reads the few
//! header fields it needs (offset delta, timestamps, producer id and
//! sequence) and rewrites only the fields that lie outside the CRC (base
//! offset, partition leader epoch). Before an append it also walks the
//! records' varint structure ([`validate_records`]), decompressing a
//! compressed body into a reused scratch buffer first, as Kafka's
//! LogValidator does: a batch that consumers could not read is refused
//! instead of stored. Layout, all big-endian:
//!
//! ```text
//! 0  baseOffset i64          8  batchLength i32      12 partitionLeaderEpoch i32
//! 16 magic i8                17 crc u32 (CRC-32C of bytes 21..end)
//! 21 attributes i16          23 lastOffsetDelta i32  27 baseTimestamp i64
//! 35 maxTimestamp i64        43 producerId i64       51 producerEpoch i16
//! 53 baseSequence i32        57 recordsCount i32     61 records...
//! ```

use thiserror::Error;

use super::compression;

/// Size of the v2 batch header, before the records.
pub const HEADER_LEN: usize = 61;
/// Bytes of a batch before (and including) the length field.
pub const LOG_OVERHEAD: usize = 12;
/// The only record batch format weir accepts.
pub const MAGIC_V2: i8 = 2;

/// Byte offsets of the header's fields: every read or write of a field
/// goes through this module.
pub mod field {
    pub const BASE_OFFSET: usize = 0;
    pub const BATCH_LENGTH: usize = 8;
    pub const PARTITION_LEADER_EPOCH: usize = 12;
    pub const MAGIC: usize = 16;
    pub const CRC: usize = 17;
    /// The CRC covers the batch from here to its end.
    pub const ATTRIBUTES: usize = 21;
    pub const LAST_OFFSET_DELTA: usize = 23;
    pub const BASE_TIMESTAMP: usize = 27;
    pub const MAX_TIMESTAMP: usize = 35;
    pub const PRODUCER_ID: usize = 43;
    pub const PRODUCER_EPOCH: usize = 51;
    pub const BASE_SEQUENCE: usize = 53;
    pub const RECORDS_COUNT: usize = 57;
}
use field as f;

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
    /// One record inside the batch is malformed.
    #[error("record {index} of the batch is invalid: {reason}")]
    Record { index: u32, reason: &'static str },
    /// A compressed body that does not decompress (bad header, truncated,
    /// checksum mismatch).
    #[error("record batch is corrupt: {0}")]
    Compression(String),
    /// A compressed body larger than the broker materialises.
    #[error(
        "record batch decompresses to more than {limit} bytes (the broker's --max-decompressed-batch-bytes)"
    )]
    DecompressedTooLarge { limit: usize },
    /// Records without a key, for a partition that needs one (a compacted
    /// topic's): their positions in the batch.
    #[error("a compacted topic cannot accept a record without a key ({} in the batch)", .0.len())]
    Keyless(Vec<u32>),
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
            base_offset: be_i64(bytes, f::BASE_OFFSET),
            batch_length: be_i32(bytes, f::BATCH_LENGTH),
            magic: bytes[f::MAGIC] as i8,
            crc: be_u32(bytes, f::CRC),
            attributes: be_i16(bytes, f::ATTRIBUTES),
            last_offset_delta: be_i32(bytes, f::LAST_OFFSET_DELTA),
            base_timestamp: be_i64(bytes, f::BASE_TIMESTAMP),
            max_timestamp: be_i64(bytes, f::MAX_TIMESTAMP),
            producer_id: be_i64(bytes, f::PRODUCER_ID),
            producer_epoch: be_i16(bytes, f::PRODUCER_EPOCH),
            base_sequence: be_i32(bytes, f::BASE_SEQUENCE),
            records_count: be_i32(bytes, f::RECORDS_COUNT),
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
    crc32c::crc32c(&batch[f::ATTRIBUTES..])
}

/// Checks one complete batch: framing, magic, CRC and header consistency.
/// `batch` must be exactly one batch.
pub fn validate(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    validate_as(batch, false)
}

/// [`validate`] for a batch already in a log (recovery, a follower's
/// fetch): a batch the log cleaner rewrote holds fewer records than its
/// offset range (its base and last offsets stay, records between them may
/// be gone), so the record count may be below the last offset delta + 1.
pub fn validate_stored(batch: &[u8]) -> Result<BatchHeader, BatchError> {
    validate_as(batch, true)
}

fn validate_as(batch: &[u8], stored: bool) -> Result<BatchHeader, BatchError> {
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
    let count_ok = if stored {
        h.last_offset_delta >= h.records_count - 1
    } else {
        h.last_offset_delta == h.records_count - 1
    };
    if !count_ok {
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

/// A zigzag varint of at most 32 bits (the record format's `varint`): value
/// and bytes used; `None` when truncated or longer than 32 bits.
fn read_varint32(b: &[u8]) -> Option<(i32, usize)> {
    let mut raw: u32 = 0;
    for (i, &byte) in b.iter().enumerate().take(5) {
        let bits = u32::from(byte & 0x7f);
        if i == 4 && bits > 0x0f {
            return None;
        }
        raw |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Some((((raw >> 1) as i32) ^ -((raw & 1) as i32), i + 1));
        }
    }
    None
}

/// A zigzag varlong of at most 64 bits: bytes used; `None` when truncated or
/// longer.
fn skip_varlong(b: &[u8]) -> Option<usize> {
    for (i, &byte) in b.iter().enumerate().take(10) {
        if i == 9 && byte > 0x01 {
            return None;
        }
        if byte & 0x80 == 0 {
            return Some(i + 1);
        }
    }
    None
}

/// A cursor over one record's bytes; every read names what failed.
struct Fields<'a> {
    b: &'a [u8],
    index: u32,
}

impl<'a> Fields<'a> {
    fn bad(&self, reason: &'static str) -> BatchError {
        BatchError::Record {
            index: self.index,
            reason,
        }
    }

    fn varint(&mut self, what: &'static str) -> Result<i32, BatchError> {
        let (v, used) = read_varint32(self.b).ok_or_else(|| self.bad(what))?;
        self.b = &self.b[used..];
        Ok(v)
    }

    /// A length-prefixed field: `len` bytes, or null when -1 and `nullable`.
    fn skip(&mut self, len: i32, nullable: bool, what: &'static str) -> Result<(), BatchError> {
        if len == -1 && nullable {
            return Ok(());
        }
        let n = usize::try_from(len).map_err(|_| self.bad(what))?;
        self.b = self.b.get(n..).ok_or_else(|| self.bad(what))?;
        Ok(())
    }
}

/// Walks the records of a batch body (decompressed): exactly `count`
/// records, each one's fields inside its stated length and filling it, its
/// offset delta equal to its position, nothing after the last, and with
/// `keys_required` a key in each. Reads varints only; allocates nothing
/// unless records lack keys.
///
/// # Errors
/// The first record that is malformed, a count that does not match, or
/// every record without a key when keys are required.
pub fn check_records(mut body: &[u8], count: i32, keys_required: bool) -> Result<(), BatchError> {
    let mut keyless = Vec::new();
    let count = u32::try_from(count)
        .map_err(|_| BatchError::Invalid("a batch must hold at least one record"))?;
    for index in 0..count {
        if body.is_empty() {
            return Err(BatchError::Invalid(
                "the batch holds fewer records than its header counts",
            ));
        }
        let bad = |reason| BatchError::Record { index, reason };
        let (len, used) = read_varint32(body).ok_or_else(|| bad("malformed record length"))?;
        let len = usize::try_from(len).map_err(|_| bad("negative record length"))?;
        let record = body
            .get(used..)
            .and_then(|b| b.get(..len))
            .ok_or_else(|| bad("record length runs past the batch"))?;
        body = &body[used + len..];
        let has_key = check_record(record, index)?;
        if keys_required && !has_key {
            keyless.push(index);
        }
    }
    if !body.is_empty() {
        return Err(BatchError::Invalid(
            "the batch holds more records than its header counts",
        ));
    }
    if !keyless.is_empty() {
        return Err(BatchError::Keyless(keyless));
    }
    Ok(())
}

/// One record after its length: attributes, timestamp delta, offset delta,
/// key, value, headers. Returns whether it has a key.
fn check_record(record: &[u8], index: u32) -> Result<bool, BatchError> {
    let mut f = Fields {
        b: record.get(1..).ok_or(BatchError::Record {
            index,
            reason: "record too short for its attributes",
        })?,
        index,
    };
    let used = skip_varlong(f.b).ok_or_else(|| f.bad("malformed timestamp delta"))?;
    f.b = &f.b[used..];
    let offset_delta = f.varint("malformed offset delta")?;
    if i64::from(offset_delta) != i64::from(index) {
        // Kafka: inner record offsets must be sequential (INVALID_RECORD).
        return Err(f.bad("offset delta is not the record's position in the batch"));
    }
    let key = f.varint("malformed key length")?;
    f.skip(key, true, "key length is invalid or runs past the record")?;
    let value = f.varint("malformed value length")?;
    f.skip(
        value,
        true,
        "value length is invalid or runs past the record",
    )?;
    let headers = f.varint("malformed header count")?;
    if headers < 0 {
        return Err(f.bad("negative header count"));
    }
    for _ in 0..headers {
        let k = f.varint("malformed header key length")?;
        f.skip(
            k,
            false,
            "header key length is invalid or runs past the record",
        )?;
        let v = f.varint("malformed header value length")?;
        f.skip(
            v,
            true,
            "header value length is invalid or runs past the record",
        )?;
    }
    if !f.b.is_empty() {
        return Err(f.bad("record length does not match its fields"));
    }
    Ok(key >= 0)
}

/// Checks the records of one batch whose header passed [`validate`]: a
/// compressed body is decompressed (at most `max_decompressed` bytes, into
/// this thread's scratch buffer, not kept), then walked by
/// [`check_records`] (which, with `keys_required`, wants a key in every
/// record).
///
/// # Errors
/// A body that does not decompress or is too large once decompressed, or
/// malformed or keyless records.
pub fn validate_records(
    batch: &[u8],
    h: &BatchHeader,
    max_decompressed: usize,
    keys_required: bool,
) -> Result<(), BatchError> {
    let body = batch
        .get(HEADER_LEN..)
        .ok_or(BatchError::Framing("shorter than a batch header"))?;
    if h.compression() == compression::NONE {
        return check_records(body, h.records_count, keys_required);
    }
    compression::with_scratch(|buf| {
        let records = compression::decompress_reusing(h.compression(), body, max_decompressed, buf)
            .map_err(|e| match e {
                compression::DecompressError::TooLarge { limit } => {
                    BatchError::DecompressedTooLarge { limit }
                }
                other => BatchError::Compression(other.to_string()),
            })?;
        check_records(records, h.records_count, keys_required)
    })
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
    put(batch, f::BASE_OFFSET, &base_offset.to_be_bytes());
}

/// The partition leader epoch of the batch whose header starts `batch`
/// (at least [`HEADER_LEN`] bytes).
pub fn partition_leader_epoch(batch: &[u8]) -> i32 {
    be_i32(batch, f::PARTITION_LEADER_EPOCH)
}

/// Rewrites the partition leader epoch (outside the CRC).
pub fn set_leader_epoch(batch: &mut [u8], epoch: i32) {
    put(batch, f::PARTITION_LEADER_EPOCH, &epoch.to_be_bytes());
}

/// Sets the first and largest timestamps (inside the CRC: call
/// [`update_crc`] after the last change).
pub fn set_timestamps(batch: &mut [u8], base: i64, max: i64) {
    put(batch, f::BASE_TIMESTAMP, &base.to_be_bytes());
    put(batch, f::MAX_TIMESTAMP, &max.to_be_bytes());
}

/// Sets the producer id, epoch and base sequence (inside the CRC: call
/// [`update_crc`] after the last change).
pub fn set_producer(batch: &mut [u8], id: i64, epoch: i16, base_sequence: i32) {
    put(batch, f::PRODUCER_ID, &id.to_be_bytes());
    put(batch, f::PRODUCER_EPOCH, &epoch.to_be_bytes());
    put(batch, f::BASE_SEQUENCE, &base_sequence.to_be_bytes());
}

/// Writes the CRC-32C of the batch as it now is.
pub fn update_crc(batch: &mut [u8]) {
    let crc = compute_crc(batch);
    put(batch, f::CRC, &crc.to_be_bytes());
}

/// Stamps a batch with LogAppendTime: sets the timestamp-type attribute and
/// the max timestamp, then recomputes the CRC (the only rewrite inside the
/// CRC).
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    let (header, body) = batch.split_at_mut(HEADER_LEN.min(batch.len()));
    stamp_log_append_time(header, body, now_ms);
}

/// [`set_log_append_time`] for a batch held as its header and its body
/// apart (the append path writes the two with one vectored write).
pub fn stamp_log_append_time(header: &mut [u8], body: &[u8], now_ms: i64) {
    let attrs = be_i16(header, f::ATTRIBUTES) | ATTR_TIMESTAMP_TYPE;
    put(header, f::ATTRIBUTES, &attrs.to_be_bytes());
    put(header, f::MAX_TIMESTAMP, &now_ms.to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header[f::ATTRIBUTES..]), body);
    put(header, f::CRC, &crc.to_be_bytes());
}

/// A header for `records_count` records of `codec` at `timestamp`, with no
/// producer id: what a producer sends before the records. Append the
/// records, then [`seal`] it.
pub fn new_header(codec: i16, records_count: i32, timestamp: i64) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_LEN];
    b[f::MAGIC] = MAGIC_V2 as u8;
    put(
        &mut b,
        f::ATTRIBUTES,
        &(codec & ATTR_COMPRESSION_MASK).to_be_bytes(),
    );
    let last_delta = records_count.saturating_sub(1);
    put(&mut b, f::LAST_OFFSET_DELTA, &last_delta.to_be_bytes());
    set_timestamps(&mut b, timestamp, timestamp);
    set_producer(&mut b, -1, -1, -1);
    put(&mut b, f::RECORDS_COUNT, &records_count.to_be_bytes());
    b
}

/// Sets the batch length to the bytes there are and writes the CRC.
pub fn seal(batch: &mut [u8]) {
    let len = i32::try_from(batch.len().saturating_sub(LOG_OVERHEAD)).unwrap_or(i32::MAX);
    put(batch, f::BATCH_LENGTH, &len.to_be_bytes());
    update_crc(batch);
}

fn put(batch: &mut [u8], at: usize, bytes: &[u8]) {
    batch[at..at + bytes.len()].copy_from_slice(bytes);
}

#[cfg(test)]
pub(crate) mod tests;
