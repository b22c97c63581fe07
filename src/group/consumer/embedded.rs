//! The consumer protocol embedded in classic groups' JoinGroup and
//! SyncGroup (Kafka's `ConsumerProtocolSubscription` and
//! `ConsumerProtocolAssignment`): a classic member's subscription read
//! from its join, and its assignment written for its sync. A consumer
//! group reads and writes these for the classic members it holds, and
//! an online upgrade or downgrade turns one group type into the other
//! through them.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::{
    ConsumerProtocolAssignment, TopicPartition as AssignedTopic,
};
use kafka_protocol::messages::consumer_protocol_subscription::ConsumerProtocolSubscription;
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::assign::Parts;

/// The highest version of either structure this broker reads; a newer
/// one is read as this one (later versions only add fields at the end).
const MAX_VERSION: i16 = 3;

/// What a classic member's join says of its subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    pub topics: Vec<String>,
    /// The partitions it owns now (version 1 and later; a member of an
    /// eager protocol gives them all up before it joins, so owns none).
    pub owned: Parts,
    pub rack: Option<String>,
}

/// Reads a subscription; `None` when it does not decode.
pub fn subscription(metadata: &[u8]) -> Option<Subscription> {
    let mut b = Bytes::copy_from_slice(metadata);
    if b.remaining() < 2 {
        return None;
    }
    let version = b.get_i16();
    if version < 0 {
        return None;
    }
    let s = ConsumerProtocolSubscription::decode(&mut b, version.min(MAX_VERSION)).ok()?;
    let mut topics: Vec<String> = s.topics.iter().map(|t| t.to_string()).collect();
    topics.sort();
    topics.dedup();
    let mut owned = Parts::new();
    for tp in s.owned_partitions {
        owned
            .entry(tp.topic.0.to_string())
            .or_default()
            .extend(tp.partitions);
    }
    Some(Subscription {
        topics,
        owned,
        rack: s.rack_id.map(|r| r.to_string()),
    })
}

/// Reads an assignment; an empty one (a member that has not synced yet)
/// is no partitions, and `None` is one that does not decode.
pub fn assignment(bytes: &[u8]) -> Option<Parts> {
    if bytes.is_empty() {
        return Some(Parts::new());
    }
    let mut b = Bytes::copy_from_slice(bytes);
    if b.remaining() < 2 {
        return None;
    }
    let version = b.get_i16();
    if version < 0 {
        return None;
    }
    let a = ConsumerProtocolAssignment::decode(&mut b, version.min(MAX_VERSION)).ok()?;
    let mut out = Parts::new();
    for tp in a.assigned_partitions {
        out.entry(tp.topic.0.to_string())
            .or_default()
            .extend(tp.partitions);
    }
    Some(out)
}

/// Writes an assignment at version 0, which every client reads.
pub fn encode_assignment(parts: &Parts) -> Bytes {
    let a = ConsumerProtocolAssignment::default().with_assigned_partitions(
        parts
            .iter()
            .filter(|(_, ps)| !ps.is_empty())
            .map(|(t, ps)| {
                AssignedTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(t.clone())))
                    .with_partitions(ps.iter().copied().collect())
            })
            .collect(),
    );
    let mut out = BytesMut::with_capacity(64);
    out.put_i16(0);
    // Encoding an assignment built here at a version it has cannot fail;
    // were it to, the member is given no partitions rather than a
    // malformed assignment.
    if a.encode(&mut out, 0).is_err() {
        out.clear();
        out.put_i16(0);
        out.put_i32(0);
        out.put_i32(-1);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedTopic;
    use proptest::prelude::*;

    fn sub_bytes(version: i16, s: &ConsumerProtocolSubscription) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.put_i16(version);
        s.encode(&mut out, version).expect("encodes");
        out.to_vec()
    }

    #[test]
    fn a_subscription_reads_at_every_version() {
        let s = ConsumerProtocolSubscription::default()
            .with_topics(vec![
                StrBytes::from_static_str("b"),
                StrBytes::from_static_str("a"),
            ])
            .with_owned_partitions(vec![OwnedTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("a")))
                .with_partitions(vec![2, 0])])
            .with_rack_id(Some(StrBytes::from_static_str("r1")));
        let v0 = subscription(&sub_bytes(0, &s)).expect("v0");
        assert_eq!(v0.topics, vec!["a", "b"]);
        assert!(v0.owned.is_empty());
        let v1 = subscription(&sub_bytes(1, &s)).expect("v1");
        assert_eq!(
            v1.owned["a"].iter().copied().collect::<Vec<_>>(),
            vec![0, 2]
        );
        assert_eq!(v1.rack, None);
        let v3 = subscription(&sub_bytes(3, &s)).expect("v3");
        assert_eq!(v3.rack.as_deref(), Some("r1"));
    }

    #[test]
    fn bad_metadata_does_not_decode() {
        assert_eq!(subscription(&[]), None);
        assert_eq!(subscription(&[0]), None);
        assert_eq!(subscription(&[0xff, 0xff, 0, 0, 0, 0]), None);
        // A topic count far past the bytes that follow.
        assert_eq!(subscription(&[0, 0, 0x7f, 0xff, 0xff, 0xff]), None);
        assert_eq!(assignment(&[0, 0, 0x7f, 0xff, 0xff, 0xff]), None);
        assert_eq!(assignment(&[]), Some(Parts::new()));
    }

    proptest! {
        #[test]
        fn an_assignment_reads_back(
            parts in proptest::collection::btree_map(
                "[a-z]{1,8}",
                proptest::collection::btree_set(0i32..64, 1..6),
                0..6,
            ),
        ) {
            let bytes = encode_assignment(&parts);
            prop_assert_eq!(assignment(&bytes), Some(parts));
        }

        #[test]
        fn any_bytes_decode_or_not_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = subscription(&bytes);
            let _ = assignment(&bytes);
        }
    }
}
