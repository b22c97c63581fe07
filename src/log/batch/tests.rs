//! Tests of batch validation and the record walk, and the batch builder
//! other tests use.

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
    let mut b = new_header(0, count, ts);
    b.extend_from_slice(&records);
    seal(&mut b);
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

use crate::log::records::{batch_around, compress_body, encode_batch, plain_record};
use bytes::Bytes;
use kafka_protocol::records::Compression;
use proptest::prelude::*;

const LIMIT: usize = 1 << 20;
const CODECS: [i16; 5] = [0, 1, 2, 3, 4];

fn kp(codec: i16) -> Compression {
    match codec {
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => Compression::None,
    }
}

/// Header check, then the records walk, as an append does.
fn check(b: &[u8], limit: usize) -> Result<BatchHeader, BatchError> {
    let h = validate(b)?;
    validate_records(b, &h, limit, false)?;
    Ok(h)
}

/// Records with the given offsets, encoded by kafka-protocol.
fn encoded(offsets: &[i64], codec: i16) -> Bytes {
    let recs: Vec<_> = offsets
        .iter()
        .map(|&o| {
            plain_record(
                o,
                1000 + o,
                Some(Bytes::from(format!("k{o}"))),
                Some(Bytes::from(vec![b'v'; 100])),
                &[("h".to_string(), Some(Bytes::from_static(b"x")))],
            )
        })
        .collect();
    encode_batch(&recs, kp(codec)).unwrap()
}

/// The records of an uncompressed encoded batch.
fn body_of(offsets: &[i64]) -> Vec<u8> {
    encoded(offsets, 0)[HEADER_LEN..].to_vec()
}

#[test]
fn batches_of_every_codec_pass_the_records_walk() {
    for codec in CODECS {
        let b = encoded(&[0, 1, 2, 3], codec);
        let h = check(&b, LIMIT).unwrap();
        assert_eq!(h.compression(), codec);
        assert_eq!(h.records_count, 4);
    }
}

#[test]
fn a_partition_that_needs_keys_names_every_keyless_record() {
    let recs: Vec<_> = (0..4)
        .map(|o| {
            let key = (o % 2 == 0).then(|| Bytes::from(format!("k{o}")));
            plain_record(o, 1000, key, Some(Bytes::from_static(b"v")), &[])
        })
        .collect();
    for codec in [0, 3, 4] {
        let b = encode_batch(&recs, kp(codec)).unwrap();
        let h = validate(&b).unwrap();
        assert!(validate_records(&b, &h, 1 << 20, false).is_ok());
        assert!(matches!(
            validate_records(&b, &h, 1 << 20, true),
            Err(BatchError::Keyless(ix)) if ix == [1, 3]
        ));
    }
}

#[test]
fn inner_offset_deltas_must_count_up_from_zero() {
    for codec in CODECS {
        // Deltas 1, 0: the header (last delta 1, two records) is fine.
        let b = encoded(&[1, 0], codec);
        assert_eq!(
            check(&b, LIMIT),
            Err(BatchError::Record {
                index: 0,
                reason: "offset delta is not the record's position in the batch"
            }),
            "codec {codec}"
        );
    }
}

#[test]
fn a_record_count_that_disagrees_with_the_records_is_refused() {
    for codec in CODECS {
        let body = compress_body(codec, &body_of(&[0, 1])).unwrap();
        for (count, want) in [
            (3, "the batch holds fewer records than its header counts"),
            (1, "the batch holds more records than its header counts"),
        ] {
            // Uncompressed records are counted by the header check.
            let want = if codec == 0 {
                "record count does not match the records in the batch"
            } else {
                want
            };
            let b = batch_around(codec, count, &body);
            assert_eq!(
                check(&b, LIMIT),
                Err(BatchError::Invalid(want)),
                "codec {codec}"
            );
        }
    }
}

#[test]
fn a_gzip_body_that_does_not_decompress_is_corrupt() {
    let mut body = vec![0x1f, 0x8b];
    body.extend_from_slice(&[0u8; 100]);
    let b = batch_around(1, 1, &body);
    // The CRC is right: only the records walk sees it.
    assert!(validate(&b).is_ok());
    assert!(matches!(check(&b, LIMIT), Err(BatchError::Compression(_))));
    for codec in [2, 3, 4] {
        let b = batch_around(codec, 1, &body);
        assert!(
            matches!(check(&b, LIMIT), Err(BatchError::Compression(_))),
            "codec {codec}"
        );
    }
}

#[test]
fn a_decompression_bomb_is_refused_at_the_limit() {
    // One record of 4 MiB of zeros, under a 1 MiB limit.
    let r = plain_record(0, 1, None, Some(Bytes::from(vec![0u8; 4 << 20])), &[]);
    for codec in [1, 2, 3, 4] {
        let b = encode_batch(std::slice::from_ref(&r), kp(codec)).unwrap();
        assert!(b.len() < 256 << 10, "codec {codec}: {} bytes", b.len());
        assert_eq!(
            check(&b, LIMIT),
            Err(BatchError::DecompressedTooLarge { limit: LIMIT }),
            "codec {codec}"
        );
        assert!(check(&b, 8 << 20).is_ok(), "codec {codec}");
    }
}

#[test]
fn malformed_record_fields_are_named() {
    let good = make_batch(1, 0)[HEADER_LEN..].to_vec();
    // The record: length, attributes, ts delta, offset delta, key length...
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            {
                // Key length -2.
                let mut b = good.clone();
                b[4] = 3;
                b
            },
            "key length is invalid or runs past the record",
        ),
        (
            {
                // One byte more than the fields inside the stated length.
                let mut b = good.clone();
                b[0] += 2;
                b.push(0);
                b
            },
            "record length does not match its fields",
        ),
        (
            {
                // A length varint that never ends.
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
            },
            "malformed record length",
        ),
        (
            {
                let mut b = good.clone();
                b[0] = 1; // -1
                b
            },
            "negative record length",
        ),
    ];
    for (body, want) in cases {
        // Uncompressed, the header check's count of record lengths may
        // see it first.
        assert!(check(&batch_around(0, 1, &body), LIMIT).is_err());
        let b = batch_around(1, 1, &compress_body(1, &body).unwrap());
        assert_eq!(
            check(&b, LIMIT),
            Err(BatchError::Record {
                index: 0,
                reason: want
            }),
            "{body:?}"
        );
    }
}

fn arb_records() -> impl Strategy<Value = Vec<kafka_protocol::records::Record>> {
    let bytes = || proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300));
    let header = ("[a-z.]{0,12}", bytes());
    proptest::collection::vec(
        (
            bytes(),
            bytes(),
            proptest::collection::vec(header, 0..4),
            -1_000_000i64..1_000_000,
        ),
        1..20,
    )
    .prop_map(|rs| {
        rs.into_iter()
            .enumerate()
            .map(|(i, (k, v, hs, ts))| {
                let hs: Vec<_> = hs
                    .into_iter()
                    .map(|(n, v)| (n, v.map(Bytes::from)))
                    .collect();
                plain_record(i as i64, ts, k.map(Bytes::from), v.map(Bytes::from), &hs)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn anything_the_encoder_builds_passes(recs in arb_records(), codec in 0i16..5) {
        let b = encode_batch(&recs, kp(codec)).unwrap();
        let h = check(&b, LIMIT).unwrap();
        prop_assert_eq!(h.records_count as usize, recs.len());
    }

    #[test]
    fn mutated_bodies_never_panic_and_truncated_ones_are_refused(
        recs in arb_records(),
        codec in 0i16..5,
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let b = encode_batch(&recs, kp(codec)).unwrap();
        let count = recs.len() as i32;
        let body = &b[HEADER_LEN..];
        // One byte changed, the CRC made right again.
        let mut m = body.to_vec();
        let i = at.index(m.len());
        m[i] = byte;
        let _ = check(&batch_around(codec, count, &m), LIMIT);
        // Cut short.
        let n = cut.index(body.len());
        prop_assert!(check(&batch_around(codec, count, &body[..n]), LIMIT).is_err());
    }

    #[test]
    fn arbitrary_bodies_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..400),
        codec in 0i16..5,
        count in 1i32..50,
    ) {
        let _ = check(&batch_around(codec, count, &body), LIMIT);
    }
}

#[test]
fn wrong_magic_is_refused() {
    let mut b = make_batch(1, 5);
    b[16] = 1;
    assert_eq!(validate(&b), Err(BatchError::Magic(1)));
}
