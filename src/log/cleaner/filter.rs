//! Rewriting one record batch without the records the cleaner drops.
//!
//! The kept records are copied byte for byte (they keep their offset and
//! timestamp deltas, so every record keeps its offset and timestamp); the
//! batch keeps its base offset, last offset delta, base timestamp,
//! attributes, producer id, epoch and base sequence, so that its first and
//! last offsets stay where they were, as Kafka's cleaner leaves them. Only
//! the record count, the max timestamp (recomputed from the kept records,
//! unless it is a LogAppendTime), the length and the CRC change; a
//! compressed batch is compressed again with its codec.

use super::super::batch::{self, BatchError, BatchHeader, HEADER_LEN};
use super::super::{compression, records};

/// One record of a batch body as the cleaner looks at it.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub key: Option<&'a [u8]>,
    /// The value is null: a tombstone.
    pub tombstone: bool,
    /// The record's bytes with their length prefix.
    pub raw: &'a [u8],
}

/// What became of a batch.
#[derive(Debug)]
pub enum Filtered {
    /// Every record stays: the batch is copied as it is.
    Unchanged,
    /// No record stays: the batch goes.
    Dropped,
    /// Some records stay: the new batch.
    Rewritten(Vec<u8>),
}

fn varint(b: &[u8]) -> Option<(i64, usize)> {
    let mut raw: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((((raw >> 1) as i64) ^ -((raw & 1) as i64), i + 1));
        }
    }
    None
}

struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn varint(&mut self) -> Option<i64> {
        let (v, n) = varint(self.b)?;
        self.b = &self.b[n..];
        Some(v)
    }

    /// A length-prefixed field; `None` inside for a null (-1).
    fn bytes(&mut self) -> Option<Option<&'a [u8]>> {
        let len = self.varint()?;
        if len < 0 {
            return Some(None);
        }
        let n = usize::try_from(len).ok()?;
        let (v, rest) = (self.b.get(..n)?, self.b.get(n..)?);
        self.b = rest;
        Some(Some(v))
    }
}

const BAD: BatchError = BatchError::Invalid("a stored batch's records do not parse");

/// The records of a (decompressed) batch body.
///
/// # Errors
/// Records that do not parse.
pub fn parse_records(mut body: &[u8]) -> Result<Vec<RecordView<'_>>, BatchError> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let (len, used) = varint(body).ok_or(BAD)?;
        let len = usize::try_from(len).map_err(|_| BAD)?;
        let raw = body.get(..used + len).ok_or(BAD)?;
        let mut c = Cursor {
            b: raw.get(used + 1..).ok_or(BAD)?,
        };
        let timestamp_delta = c.varint().ok_or(BAD)?;
        let offset_delta = i32::try_from(c.varint().ok_or(BAD)?).map_err(|_| BAD)?;
        let key = c.bytes().ok_or(BAD)?;
        let value = c.bytes().ok_or(BAD)?;
        out.push(RecordView {
            offset_delta,
            timestamp_delta,
            key,
            tombstone: value.is_none(),
            raw,
        });
        body = &body[used + len..];
    }
    Ok(out)
}

/// Runs `f` over the records of `batch` (one whole stored batch whose
/// header is `h`), decompressed into `scratch` when need be.
///
/// # Errors
/// A body that does not decompress or records that do not parse.
pub fn with_records<R>(
    batch: &[u8],
    h: &BatchHeader,
    scratch: &mut Vec<u8>,
    f: impl FnOnce(&[RecordView<'_>]) -> R,
) -> Result<R, BatchError> {
    let body = batch
        .get(HEADER_LEN..)
        .ok_or(BatchError::Framing("shorter than a batch header"))?;
    let body = if h.compression() == compression::NONE {
        body
    } else {
        compression::decompress_into(h.compression(), body, usize::MAX, scratch)
            .map_err(|e| BatchError::Compression(e.to_string()))?;
        &scratch[..]
    };
    let recs = parse_records(body)?;
    Ok(f(&recs))
}

/// The batch without the records `keep` refuses (`keep` sees each record
/// with its absolute offset).
///
/// # Errors
/// A body that does not decompress or records that do not parse, or a
/// failure to compress the kept records again.
pub fn filter_batch(
    batch: &[u8],
    h: &BatchHeader,
    scratch: &mut Vec<u8>,
    mut keep: impl FnMut(i64, &RecordView<'_>) -> bool,
) -> Result<Filtered, BatchError> {
    let rebuilt = with_records(batch, h, scratch, |recs| {
        let kept: Vec<&RecordView<'_>> = recs
            .iter()
            .filter(|r| keep(h.base_offset + i64::from(r.offset_delta), r))
            .collect();
        if kept.len() == recs.len() {
            return Ok(Filtered::Unchanged);
        }
        if kept.is_empty() {
            return Ok(Filtered::Dropped);
        }
        let mut body = Vec::with_capacity(kept.iter().map(|r| r.raw.len()).sum());
        for r in &kept {
            body.extend_from_slice(r.raw);
        }
        let max_ts = if h.is_log_append_time() {
            h.max_timestamp
        } else {
            kept.iter()
                .map(|r| h.base_timestamp.saturating_add(r.timestamp_delta))
                .max()
                .unwrap_or(h.max_timestamp)
        };
        let count = i32::try_from(kept.len()).map_err(|_| BAD)?;
        Ok(Filtered::Rewritten(rebuild(
            batch, h, count, max_ts, &body,
        )?))
    })?;
    rebuilt
}

fn rebuild(
    batch: &[u8],
    h: &BatchHeader,
    count: i32,
    max_ts: i64,
    body: &[u8],
) -> Result<Vec<u8>, BatchError> {
    let body = records::compress_body(h.compression(), body)
        .map_err(|e| BatchError::Compression(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&batch[..HEADER_LEN]);
    out[batch::field::RECORDS_COUNT..batch::field::RECORDS_COUNT + 4]
        .copy_from_slice(&count.to_be_bytes());
    batch::set_timestamps(&mut out, h.base_timestamp, max_ts);
    out.extend_from_slice(&body);
    batch::seal(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::records::{encode_batch, plain_record};
    use bytes::Bytes;
    use kafka_protocol::records::Compression;

    fn batch_of(keys: &[(&str, Option<&str>)], c: Compression) -> Vec<u8> {
        let recs: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, (k, v))| {
                plain_record(
                    i as i64,
                    1000 + i as i64,
                    Some(Bytes::from(k.to_string())),
                    v.map(|v| Bytes::from(v.to_string())),
                    &[],
                )
            })
            .collect();
        let mut b = encode_batch(&recs, c).unwrap().to_vec();
        batch::set_base_offset(&mut b, 100);
        b
    }

    #[test]
    fn drops_records_keeping_offsets_and_the_last_offset() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = batch_of(
                &[
                    ("a", Some("1")),
                    ("b", Some("2")),
                    ("a", None),
                    ("c", Some("4")),
                ],
                c,
            );
            let h = BatchHeader::parse(&b).unwrap();
            let mut scratch = Vec::new();
            let out = filter_batch(&b, &h, &mut scratch, |o, _| o == 101 || o == 102).unwrap();
            let Filtered::Rewritten(nb) = out else {
                panic!("rewritten")
            };
            let nh = batch::validate_stored(&nb).unwrap();
            assert_eq!(nh.base_offset, 100);
            assert_eq!(nh.last_offset(), 103);
            assert_eq!(nh.records_count, 2);
            assert_eq!(nh.max_timestamp, 1002);
            assert_eq!(nh.base_timestamp, 1000);
            let got = with_records(&nb, &nh, &mut scratch, |rs| {
                rs.iter()
                    .map(|r| (r.offset_delta, r.key.map(<[u8]>::to_vec), r.tombstone))
                    .collect::<Vec<_>>()
            })
            .unwrap();
            assert_eq!(
                got,
                vec![
                    (1, Some(b"b".to_vec()), false),
                    (2, Some(b"a".to_vec()), true)
                ]
            );
            // The record decoder clients use reads it with the offsets kept.
            let sets = crate::log::records::decode_all(&Bytes::from(nb.clone())).unwrap();
            let offs: Vec<i64> = sets[0].records.iter().map(|r| r.offset).collect();
            assert_eq!(offs, vec![101, 102]);
            assert!(matches!(
                filter_batch(&b, &h, &mut scratch, |_, _| true).unwrap(),
                Filtered::Unchanged
            ));
            assert!(matches!(
                filter_batch(&b, &h, &mut scratch, |_, _| false).unwrap(),
                Filtered::Dropped
            ));
        }
    }
}
