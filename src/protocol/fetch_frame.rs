//! Fetch responses framed without copying record data.
//!
//! The generic encoder writes a whole response into one buffer, which for a
//! fetch means copying every record byte out of the mapped segments. Here the
//! response becomes a list of chunks instead: the fields around the records
//! in small buffers, and each partition's records as the `Bytes` window of
//! the segment map it was read as. The connection hands the chunks to the
//! socket with vectored writes. The bytes are those the generic encoder
//! produces (a property test holds the two together); responses with fields
//! this framer does not write (tagged fields weir never sets) go through the
//! generic encoder.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{
    EpochEndOffset, LeaderIdAndEpoch, PartitionData, SnapshotId,
};
use kafka_protocol::messages::FetchResponse;

use super::ProtocolError;

/// Records shorter than this are copied into the framing buffer: a separate
/// chunk costs more than the copy.
const COPY_BELOW: usize = 4096;
/// Highest Fetch version framed here.
const MAX_VERSION: i16 = 13;

/// Whether [`frame`] can write this response.
pub fn supported(resp: &FetchResponse, version: i16) -> bool {
    (4..=MAX_VERSION).contains(&version)
        && resp.unknown_tagged_fields.is_empty()
        && resp.node_endpoints.is_empty()
        && resp.responses.iter().all(|t| {
            t.unknown_tagged_fields.is_empty()
                && t.partitions.iter().all(|p| {
                    p.unknown_tagged_fields.is_empty()
                        && p.diverging_epoch == EpochEndOffset::default()
                        && p.current_leader == LeaderIdAndEpoch::default()
                        && p.snapshot_id == SnapshotId::default()
                        && (version >= 11 || p.preferred_read_replica == -1)
                        && p.aborted_transactions
                            .iter()
                            .flatten()
                            .all(|a| a.unknown_tagged_fields.is_empty())
                })
        })
}

struct Chunks {
    done: Vec<Bytes>,
    cur: BytesMut,
    len: usize,
}

impl Chunks {
    fn put_records(&mut self, r: &Bytes) {
        if r.len() < COPY_BELOW {
            self.cur.put_slice(r);
        } else {
            let head = std::mem::replace(&mut self.cur, BytesMut::with_capacity(256));
            self.len += head.len() + r.len();
            self.done.push(head.freeze());
            self.done.push(r.clone());
        }
    }

    fn finish(mut self) -> (Vec<Bytes>, usize) {
        self.len += self.cur.len();
        if !self.cur.is_empty() {
            self.done.push(self.cur.freeze());
        }
        (self.done, self.len)
    }
}

fn put_uvarint(b: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        b.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

fn put_len(b: &mut BytesMut, flexible: bool, n: usize) -> Result<(), ProtocolError> {
    let n = u32::try_from(n)
        .ok()
        .filter(|n| *n < i32::MAX as u32)
        .ok_or_else(|| ProtocolError::Encode("fetch response field too long".into()))?;
    if flexible {
        put_uvarint(b, n + 1);
    } else {
        b.put_i32(n as i32);
    }
    Ok(())
}

fn put_null(b: &mut BytesMut, flexible: bool) {
    if flexible {
        put_uvarint(b, 0);
    } else {
        b.put_i32(-1);
    }
}

/// Frames a whole Fetch response (size prefix, header, body) as chunks.
///
/// # Errors
/// A field too long for its length prefix, or a response larger than 2 GiB.
pub fn frame(
    correlation_id: i32,
    version: i16,
    resp: &FetchResponse,
) -> Result<Vec<Bytes>, ProtocolError> {
    let flexible = version >= 12;
    // The size prefix is a chunk of its own, set at the end.
    let mut c = Chunks {
        done: vec![Bytes::new()],
        cur: BytesMut::with_capacity(256),
        len: 4,
    };
    c.cur.put_i32(correlation_id);
    if flexible {
        put_uvarint(&mut c.cur, 0);
    }
    c.cur.put_i32(resp.throttle_time_ms);
    if version >= 7 {
        c.cur.put_i16(resp.error_code);
        c.cur.put_i32(resp.session_id);
    }
    put_len(&mut c.cur, flexible, resp.responses.len())?;
    for t in &resp.responses {
        if version <= 12 {
            if flexible {
                put_len(&mut c.cur, true, t.topic.len())?;
            } else {
                let n = i16::try_from(t.topic.len())
                    .map_err(|_| ProtocolError::Encode("topic name too long".into()))?;
                c.cur.put_i16(n);
            }
            c.cur.put_slice(t.topic.as_bytes());
        }
        if version >= 13 {
            c.cur.put_slice(t.topic_id.as_bytes());
        }
        put_len(&mut c.cur, flexible, t.partitions.len())?;
        for p in &t.partitions {
            put_partition(&mut c, p, version)?;
        }
        if flexible {
            put_uvarint(&mut c.cur, 0);
        }
    }
    if flexible {
        put_uvarint(&mut c.cur, 0);
    }
    let (mut chunks, len) = c.finish();
    let size = i32::try_from(len - 4)
        .map_err(|_| ProtocolError::Encode("response larger than 2 GiB".into()))?;
    if let Some(first) = chunks.first_mut() {
        *first = Bytes::copy_from_slice(&size.to_be_bytes());
    }
    Ok(chunks)
}

fn put_partition(c: &mut Chunks, p: &PartitionData, version: i16) -> Result<(), ProtocolError> {
    let flexible = version >= 12;
    let b = &mut c.cur;
    b.put_i32(p.partition_index);
    b.put_i16(p.error_code);
    b.put_i64(p.high_watermark);
    b.put_i64(p.last_stable_offset);
    if version >= 5 {
        b.put_i64(p.log_start_offset);
    }
    match &p.aborted_transactions {
        None => put_null(b, flexible),
        Some(list) => {
            put_len(b, flexible, list.len())?;
            for a in list {
                b.put_i64(a.producer_id.0);
                b.put_i64(a.first_offset);
                if flexible {
                    put_uvarint(b, 0);
                }
            }
        }
    }
    if version >= 11 {
        b.put_i32(p.preferred_read_replica.0);
    }
    match &p.records {
        None => put_null(b, flexible),
        Some(r) => {
            put_len(b, flexible, r.len())?;
            c.put_records(r);
        }
    }
    if flexible {
        put_uvarint(&mut c.cur, 0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse};
    use kafka_protocol::messages::{ApiKey, ProducerId, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use proptest::prelude::*;

    use crate::protocol::encode;
    use kafka_protocol::messages::ResponseKind;

    /// Partition index, error, high watermark, records length, aborted count.
    type Part = (i32, i16, i64, Option<usize>, Option<u8>);

    fn response(topics: Vec<(String, Vec<Part>)>, throttle: i32) -> FetchResponse {
        let responses = topics
            .into_iter()
            .map(|(name, parts)| {
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_string(name)))
                    .with_topic_id(uuid::Uuid::from_u128(0x1234_5678))
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|(i, err, hw, records, aborted)| {
                                PartitionData::default()
                                    .with_partition_index(i)
                                    .with_error_code(err)
                                    .with_high_watermark(hw)
                                    .with_last_stable_offset(hw)
                                    .with_log_start_offset(hw / 2)
                                    .with_aborted_transactions(aborted.map(|n| {
                                        (0..n)
                                            .map(|k| {
                                                AbortedTransaction::default()
                                                    .with_producer_id(ProducerId(i64::from(k)))
                                                    .with_first_offset(i64::from(k) * 3)
                                            })
                                            .collect()
                                    }))
                                    .with_records(records.map(|n| {
                                        Bytes::from((0..n).map(|x| x as u8).collect::<Vec<_>>())
                                    }))
                            })
                            .collect(),
                    )
            })
            .collect();
        FetchResponse::default()
            .with_throttle_time_ms(throttle)
            .with_responses(responses)
    }

    proptest! {
        #[test]
        fn framed_bytes_equal_the_generic_encoder(
            version in 4i16..=13,
            throttle in any::<i32>(),
            topics in proptest::collection::vec(
                ("[a-z.]{0,20}", proptest::collection::vec(
                    (any::<i32>(), any::<i16>(), any::<i64>(),
                     proptest::option::of(0usize..10_000), proptest::option::of(0u8..3)),
                    0..4)),
                0..4),
            corr in any::<i32>(),
        ) {
            let resp = response(topics, throttle);
            prop_assert!(supported(&resp, version));
            let mut want = BytesMut::new();
            encode(&mut want, corr, ApiKey::Fetch, version, &ResponseKind::Fetch(resp.clone())).unwrap();
            let chunks = frame(corr, version, &resp).unwrap();
            let got: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            prop_assert_eq!(got, want.to_vec());
        }
    }

    #[test]
    fn large_records_are_passed_through_not_copied() {
        let resp = response(vec![("t".into(), vec![(0, 0, 10, Some(100_000), None)])], 0);
        let records = resp.responses[0].partitions[0].records.clone().unwrap();
        let chunks = frame(1, 13, &resp).unwrap();
        assert!(chunks.iter().any(|c| c.as_ptr() == records.as_ptr()));
    }

    #[test]
    fn tagged_fields_weir_never_sets_fall_back_to_the_generic_encoder() {
        let mut resp = response(vec![("t".into(), vec![(0, 0, 10, None, None)])], 0);
        resp.responses[0].partitions[0].snapshot_id.epoch = 3;
        assert!(!supported(&resp, 12));
        assert!(supported(&response(vec![], 0), 12));
        assert!(!supported(&response(vec![], 0), 14));
    }
}
