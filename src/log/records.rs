//! Full decoding of record batches, for the few paths that need records
//! rather than bytes (retry hand-backs, DLQ listing and redrive, timestamp
//! lookups), with a cap on how large a batch may grow when decompressed.
//!
//! Batches are stored compressed as producers sent them and only their
//! compressed size is limited by `max.message.bytes`; a small gzip or zstd
//! batch of zeros can expand a thousandfold. Decompression goes through
//! [`crate::log::compression`] with the broker's bound
//! (`--max-decompressed-batch-bytes`, [`max_decompressed_bytes`]), the same
//! one produced batches are checked against, so no request can make the
//! broker allocate more than that per batch.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Buf, Bytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, RecordSet,
    TimestampType,
};

use super::{batch, compression};

/// Default largest decompressed size of one batch the broker will
/// materialise (`--max-decompressed-batch-bytes`).
pub const MAX_DECOMPRESSED_BYTES: usize = compression::DEFAULT_MAX_DECOMPRESSED_BYTES;

/// The bound in force; set once at start from the broker's configuration.
static MAX_DECOMPRESSED: AtomicUsize = AtomicUsize::new(MAX_DECOMPRESSED_BYTES);

/// Sets the bound [`decode_all`] decompresses to (process-wide).
pub fn set_max_decompressed_bytes(limit: usize) {
    MAX_DECOMPRESSED.store(limit, Ordering::Relaxed);
}

/// The bound [`decode_all`] decompresses to.
pub fn max_decompressed_bytes() -> usize {
    MAX_DECOMPRESSED.load(Ordering::Relaxed)
}

fn decompress(buf: &mut Bytes, c: Compression) -> anyhow::Result<Bytes> {
    let data = buf.split_to(buf.len());
    let codec = match c {
        Compression::None => return Ok(data),
        Compression::Gzip => compression::GZIP,
        Compression::Snappy => compression::SNAPPY,
        Compression::Lz4 => compression::LZ4,
        Compression::Zstd => compression::ZSTD,
    };
    let mut out = Vec::new();
    compression::decompress_into(codec, &data, max_decompressed_bytes(), &mut out)?;
    Ok(Bytes::from(out))
}

/// Decodes every batch in `bytes`, with decompression capped.
///
/// # Errors
/// Malformed batches, or a batch over the decompressed-size cap.
pub fn decode_all(bytes: &Bytes) -> anyhow::Result<Vec<RecordSet>> {
    let mut buf = bytes.clone();
    let mut sets = Vec::new();
    while buf.has_remaining() {
        sets.push(RecordBatchDecoder::decode_with_custom_compression(
            &mut buf,
            Some(decompress),
        )?);
    }
    Ok(sets)
}

/// The whole batches at the start of `bytes` (a read may end inside one),
/// and the offset after the last of them.
pub fn whole_batches(bytes: &Bytes) -> (Bytes, Option<i64>) {
    let mut pos = 0usize;
    let mut next = None;
    while let Some(h) = bytes
        .get(pos..)
        .and_then(|b| batch::BatchHeader::parse(b).ok())
        .filter(|h| h.batch_length > 0 && pos + h.total_len() <= bytes.len())
    {
        pos += h.total_len();
        next = Some(h.last_offset() + 1);
    }
    (bytes.slice(..pos), next)
}

/// A record for [`encode_batch`]: not idempotent, not transactional,
/// CreateTime, at `offset` within its batch.
pub fn plain_record(
    offset: i64,
    timestamp: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: &[(String, Option<Bytes>)],
) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        // The encoder keeps records in one batch while offset − sequence is
        // constant; `encode_batch` resets the base sequence to -1.
        sequence: offset as i32,
        timestamp,
        key,
        value,
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    kafka_protocol::protocol::StrBytes::from_string(n.clone()),
                    v.clone(),
                )
            })
            .collect(),
    }
}

/// Encodes [`plain_record`]s as one v2 batch that is not idempotent (base
/// sequence -1, CRC over it): what the broker builds for retry deliveries
/// and dead letters, and what benchmarks and tests send.
///
/// # Errors
/// The encoder's error.
pub fn encode_batch(records: &[Record], compression: Compression) -> anyhow::Result<Bytes> {
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )?;
    if let Ok(h) = batch::BatchHeader::parse(&buf) {
        batch::set_producer(&mut buf, h.producer_id, h.producer_epoch, -1);
        batch::update_crc(&mut buf);
    }
    Ok(buf.freeze())
}

/// Compresses a batch body (its records) as Kafka producers do: gzip,
/// snappy in the xerial framing, an LZ4 frame, zstd. For tests, benchmarks
/// and fuzz seeds that build batches [`encode_batch`] would not.
///
/// # Errors
/// An unknown codec, or the compressor's error.
pub fn compress_body(codec: i16, body: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    Ok(match codec {
        compression::NONE => body.to_vec(),
        compression::GZIP => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(body)?;
            e.finish()?
        }
        compression::SNAPPY => {
            let mut out = vec![
                0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1,
            ];
            let mut enc = snap::raw::Encoder::new();
            for chunk in body.chunks(32 * 1024) {
                let c = enc.compress_vec(chunk)?;
                out.extend_from_slice(&u32::try_from(c.len())?.to_be_bytes());
                out.extend_from_slice(&c);
            }
            out
        }
        compression::LZ4 => {
            let mut e = lz4::EncoderBuilder::new().build(Vec::new())?;
            e.write_all(body)?;
            let (out, r) = e.finish();
            r?;
            out
        }
        compression::ZSTD => zstd::bulk::compress(body, 3)?,
        c => anyhow::bail!("unknown compression codec {c}"),
    })
}

/// A v2 batch around `body` (records, compressed with `codec` or not) whose
/// header claims `records_count` records, with a correct CRC: what a
/// producer would send, however wrong the body. For tests and fuzz seeds.
pub fn batch_around(codec: i16, records_count: i32, body: &[u8]) -> Bytes {
    let mut b = batch::new_header(codec, records_count, 0);
    b.extend_from_slice(body);
    batch::seal(&mut b);
    Bytes::from(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(value: Vec<u8>, compression: Compression) -> Bytes {
        let r = plain_record(0, 1, None, Some(Bytes::from(value)), &[]);
        encode_batch(&[r], compression).unwrap()
    }

    #[test]
    fn every_codec_round_trips_under_the_cap() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = batch(vec![7u8; 10_000], c);
            let sets = decode_all(&b).unwrap();
            assert_eq!(
                sets[0].records[0].value.as_ref().unwrap().len(),
                10_000,
                "{c:?}"
            );
        }
    }

    #[test]
    fn a_decompression_bomb_is_refused() {
        for c in [
            Compression::Gzip,
            Compression::Zstd,
            Compression::Lz4,
            Compression::Snappy,
        ] {
            let b = batch(vec![0u8; MAX_DECOMPRESSED_BYTES + 1024], c);
            assert!(b.len() < 8 << 20, "{c:?} compresses zeros well");
            assert!(decode_all(&b).is_err(), "{c:?}");
        }
    }
}
