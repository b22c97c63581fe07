//! Full decoding of record batches, for the few paths that need records
//! rather than bytes (retry hand-backs, DLQ listing and redrive, timestamp
//! lookups), with a cap on how large a batch may grow when decompressed.
//!
//! Batches are stored compressed as producers sent them and only their
//! compressed size is limited by `max.message.bytes`; a small gzip or zstd
//! batch of zeros can expand a thousandfold. Every decompressor here reads at
//! most [`MAX_DECOMPRESSED_BYTES`] and fails beyond, so no request can make
//! the broker allocate more than that per batch.

use std::io::Read;

use anyhow::{bail, Context};
use bytes::{Buf, Bytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, RecordSet,
    TimestampType,
};

/// Largest decompressed size of one batch the broker will materialise.
pub const MAX_DECOMPRESSED_BYTES: usize = 64 << 20;

fn read_capped(mut r: impl Read, what: &str) -> anyhow::Result<Bytes> {
    let mut out = Vec::new();
    (&mut r)
        .take(MAX_DECOMPRESSED_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .with_context(|| format!("failed to decompress {what}"))?;
    if out.len() > MAX_DECOMPRESSED_BYTES {
        bail!("{what} batch decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes");
    }
    Ok(Bytes::from(out))
}

/// Kafka's snappy: the xerial framing (magic, then length-prefixed blocks),
/// or raw snappy when the magic is absent.
fn snappy(buf: &Bytes) -> anyhow::Result<Bytes> {
    const MAGIC: &[u8] = &[0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
    let raw = |block: &[u8], out: &mut Vec<u8>| -> anyhow::Result<()> {
        let n = snap::raw::decompress_len(block).context("bad snappy length")?;
        if out.len().saturating_add(n) > MAX_DECOMPRESSED_BYTES {
            bail!("snappy batch decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes");
        }
        let start = out.len();
        out.resize(start + n, 0);
        snap::raw::Decoder::new()
            .decompress(block, &mut out[start..])
            .context("failed to decompress snappy")?;
        Ok(())
    };
    let mut out = Vec::new();
    if buf.len() < 16 || &buf[..8] != MAGIC {
        raw(buf, &mut out)?;
        return Ok(Bytes::from(out));
    }
    // magic (8), version (4), compatible version (4), then blocks.
    let mut rest = &buf[16..];
    while rest.has_remaining() {
        if rest.len() < 4 {
            bail!("truncated snappy block length");
        }
        let n = rest.get_u32() as usize;
        if n > rest.len() {
            bail!("truncated snappy block");
        }
        raw(&rest[..n], &mut out)?;
        rest = &rest[n..];
    }
    Ok(Bytes::from(out))
}

fn decompress(buf: &mut Bytes, c: Compression) -> anyhow::Result<Bytes> {
    let data = buf.split_to(buf.len());
    match c {
        Compression::None => Ok(data),
        Compression::Gzip => read_capped(flate2::read::GzDecoder::new(data.reader()), "gzip"),
        Compression::Zstd => read_capped(
            zstd::stream::read::Decoder::new(data.reader()).context("bad zstd stream")?,
            "zstd",
        ),
        Compression::Lz4 => read_capped(
            lz4::Decoder::new(data.reader()).context("bad lz4 stream")?,
            "lz4",
        ),
        Compression::Snappy => snappy(&data),
    }
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
    if buf.len() >= crate::log::batch::HEADER_LEN {
        buf[53..57].copy_from_slice(&(-1i32).to_be_bytes());
        let crc = crate::log::batch::compute_crc(&buf);
        buf[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    Ok(buf.freeze())
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
