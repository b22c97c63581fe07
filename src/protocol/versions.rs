//! The one table of Kafka APIs weir serves and the versions of each.
//!
//! ApiVersions is built from this table and requests outside it are refused.
//! It is written by hand, never derived from `kafka-protocol`'s
//! `valid_versions()`, which includes versions Kafka has not released; floors
//! follow Kafka 4 (KIP-896) except where older clients still need less.

use kafka_protocol::messages::ApiKey;

/// One supported API and its version range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Supported {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
}

const fn s(key: ApiKey, min: i16, max: i16) -> Supported {
    Supported { key, min, max }
}

/// Every API weir implements end to end.
pub const SUPPORTED: &[Supported] = &[
    s(ApiKey::Produce, 3, 11),
    s(ApiKey::Fetch, 4, 13),
    s(ApiKey::ListOffsets, 1, 8),
    s(ApiKey::Metadata, 0, 12),
    s(ApiKey::ApiVersions, 0, 3),
    s(ApiKey::CreateTopics, 2, 7),
    s(ApiKey::DeleteTopics, 1, 6),
    s(ApiKey::DeleteRecords, 0, 2),
    s(ApiKey::InitProducerId, 0, 4),
    s(ApiKey::DescribeConfigs, 1, 4),
    s(ApiKey::AlterConfigs, 0, 2),
    s(ApiKey::CreatePartitions, 0, 3),
    s(ApiKey::IncrementalAlterConfigs, 0, 1),
    s(ApiKey::DescribeCluster, 0, 1),
    s(ApiKey::FindCoordinator, 0, 4),
    s(ApiKey::JoinGroup, 0, 9),
    s(ApiKey::SyncGroup, 0, 5),
    s(ApiKey::Heartbeat, 0, 4),
    s(ApiKey::LeaveGroup, 0, 5),
    s(ApiKey::OffsetCommit, 2, 8),
    s(ApiKey::OffsetFetch, 1, 8),
    s(ApiKey::ListGroups, 0, 5),
    s(ApiKey::DescribeGroups, 0, 5),
    s(ApiKey::DeleteGroups, 0, 2),
    s(ApiKey::OffsetDelete, 0, 0),
    // After v0 of SaslHandshake the tokens come as bare size-prefixed frames
    // (older sarama); v1 clients then send SaslAuthenticate. librdkafka 2.0
    // only looks for SASL support when v0 is listed.
    s(ApiKey::SaslHandshake, 0, 1),
    s(ApiKey::SaslAuthenticate, 0, 2),
    s(ApiKey::DescribeAcls, 1, 3),
    s(ApiKey::CreateAcls, 1, 3),
    s(ApiKey::DeleteAcls, 1, 3),
    s(ApiKey::DescribeClientQuotas, 0, 1),
    s(ApiKey::AlterClientQuotas, 0, 1),
    s(ApiKey::DescribeUserScramCredentials, 0, 0),
    s(ApiKey::AlterUserScramCredentials, 0, 0),
];

/// The supported range of `key`, if weir serves it.
pub fn range(key: ApiKey) -> Option<Supported> {
    SUPPORTED.iter().copied().find(|s| s.key == key)
}

/// Whether `version` of `key` is served.
pub fn is_supported(key: ApiKey, version: i16) -> bool {
    range(key).is_some_and(|s| (s.min..=s.max).contains(&version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_no_duplicates_and_stays_within_the_codec() {
        for (i, a) in SUPPORTED.iter().enumerate() {
            assert!(a.min <= a.max, "{:?}", a.key);
            let codec = a.key.valid_versions();
            assert!(a.min >= codec.min && a.max <= codec.max, "{:?}", a.key);
            for b in &SUPPORTED[i + 1..] {
                assert_ne!(a.key, b.key, "duplicate entry");
            }
        }
    }

    #[test]
    fn kip_896_floors_hold() {
        assert_eq!(range(ApiKey::Produce).unwrap().min, 3);
        assert_eq!(range(ApiKey::Fetch).unwrap().min, 4);
        assert_eq!(range(ApiKey::Metadata).unwrap().min, 0);
        assert!(range(ApiKey::ConsumerGroupHeartbeat).is_none());
    }
}
