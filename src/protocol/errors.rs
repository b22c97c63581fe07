//! The Kafka error codes weir answers with, by name. The numbers come from
//! the codec's one table (`kafka_protocol::error::ResponseError`), so no
//! code is written down twice.

use kafka_protocol::error::ResponseError as E;

macro_rules! codes {
    ($($name:ident = $variant:ident),* $(,)?) => {
        $(pub const $name: i16 = E::$variant.code();)*
    };
}

pub const NONE: i16 = 0;

codes! {
    UNKNOWN_SERVER_ERROR = UnknownServerError,
    OFFSET_OUT_OF_RANGE = OffsetOutOfRange,
    CORRUPT_MESSAGE = CorruptMessage,
    UNKNOWN_TOPIC_OR_PARTITION = UnknownTopicOrPartition,
    LEADER_NOT_AVAILABLE = LeaderNotAvailable,
    NOT_LEADER_OR_FOLLOWER = NotLeaderOrFollower,
    REQUEST_TIMED_OUT = RequestTimedOut,
    NOT_ENOUGH_REPLICAS = NotEnoughReplicas,
    NOT_ENOUGH_REPLICAS_AFTER_APPEND = NotEnoughReplicasAfterAppend,
    NOT_CONTROLLER = NotController,
    MESSAGE_TOO_LARGE = MessageTooLarge,
    OFFSET_METADATA_TOO_LARGE = OffsetMetadataTooLarge,
    COORDINATOR_NOT_AVAILABLE = CoordinatorNotAvailable,
    COORDINATOR_LOAD_IN_PROGRESS = CoordinatorLoadInProgress,
    NOT_COORDINATOR = NotCoordinator,
    INVALID_TOPIC_EXCEPTION = InvalidTopicException,
    INVALID_REQUIRED_ACKS = InvalidRequiredAcks,
    ILLEGAL_GENERATION = IllegalGeneration,
    INCONSISTENT_GROUP_PROTOCOL = InconsistentGroupProtocol,
    INVALID_GROUP_ID = InvalidGroupId,
    UNKNOWN_MEMBER_ID = UnknownMemberId,
    INVALID_SESSION_TIMEOUT = InvalidSessionTimeout,
    REBALANCE_IN_PROGRESS = RebalanceInProgress,
    TOPIC_AUTHORIZATION_FAILED = TopicAuthorizationFailed,
    GROUP_AUTHORIZATION_FAILED = GroupAuthorizationFailed,
    CLUSTER_AUTHORIZATION_FAILED = ClusterAuthorizationFailed,
    UNSUPPORTED_SASL_MECHANISM = UnsupportedSaslMechanism,
    ILLEGAL_SASL_STATE = IllegalSaslState,
    UNSUPPORTED_VERSION = UnsupportedVersion,
    TOPIC_ALREADY_EXISTS = TopicAlreadyExists,
    INVALID_PARTITIONS = InvalidPartitions,
    INVALID_REPLICATION_FACTOR = InvalidReplicationFactor,
    INVALID_REPLICA_ASSIGNMENT = InvalidReplicaAssignment,
    INVALID_CONFIG = InvalidConfig,
    INVALID_REQUEST = InvalidRequest,
    OUT_OF_ORDER_SEQUENCE_NUMBER = OutOfOrderSequenceNumber,
    INVALID_PRODUCER_EPOCH = InvalidProducerEpoch,
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED = TransactionalIdAuthorizationFailed,
    SECURITY_DISABLED = SecurityDisabled,
    KAFKA_STORAGE_ERROR = KafkaStorageError,
    LOG_DIR_NOT_FOUND = LogDirNotFound,
    SASL_AUTHENTICATION_FAILED = SaslAuthenticationFailed,
    NON_EMPTY_GROUP = NonEmptyGroup,
    GROUP_ID_NOT_FOUND = GroupIdNotFound,
    FETCH_SESSION_ID_NOT_FOUND = FetchSessionIdNotFound,
    MEMBER_ID_REQUIRED = MemberIdRequired,
    GROUP_MAX_SIZE_REACHED = GroupMaxSizeReached,
    FENCED_INSTANCE_ID = FencedInstanceId,
    GROUP_SUBSCRIBED_TO_TOPIC = GroupSubscribedToTopic,
    INVALID_RECORD = InvalidRecord,
    RESOURCE_NOT_FOUND = ResourceNotFound,
    DUPLICATE_RESOURCE = DuplicateResource,
    UNACCEPTABLE_CREDENTIAL = UnacceptableCredential,
    UNKNOWN_TOPIC_ID = UnknownTopicId,
    PREFERRED_LEADER_NOT_AVAILABLE = PreferredLeaderNotAvailable,
    ELIGIBLE_LEADERS_NOT_AVAILABLE = EligibleLeadersNotAvailable,
    ELECTION_NOT_NEEDED = ElectionNotNeeded,
    INVALID_TXN_STATE = InvalidTxnState,
    INVALID_PRODUCER_ID_MAPPING = InvalidProducerIdMapping,
    INVALID_TRANSACTION_TIMEOUT = InvalidTransactionTimeout,
    CONCURRENT_TRANSACTIONS = ConcurrentTransactions,
    OPERATION_NOT_ATTEMPTED = OperationNotAttempted,
    UNSTABLE_OFFSET_COMMIT = UnstableOffsetCommit,
    PRODUCER_FENCED = ProducerFenced,
    TRANSACTIONAL_ID_NOT_FOUND = TransactionalIdNotFound,
    FENCED_MEMBER_EPOCH = FencedMemberEpoch,
    UNRELEASED_INSTANCE_ID = UnreleasedInstanceId,
    UNSUPPORTED_ASSIGNOR = UnsupportedAssignor,
    STALE_MEMBER_EPOCH = StaleMemberEpoch,
    INVALID_REGULAR_EXPRESSION = InvalidRegularExpression,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_kafka_numbers() {
        assert_eq!(UNKNOWN_SERVER_ERROR, -1);
        assert_eq!(CORRUPT_MESSAGE, 2);
        assert_eq!(UNKNOWN_TOPIC_OR_PARTITION, 3);
        assert_eq!(COORDINATOR_NOT_AVAILABLE, 15);
        assert_eq!(TOPIC_AUTHORIZATION_FAILED, 29);
        assert_eq!(KAFKA_STORAGE_ERROR, 56);
        assert_eq!(FENCED_INSTANCE_ID, 82);
        assert_eq!(INVALID_RECORD, 87);
        assert_eq!(UNKNOWN_TOPIC_ID, 100);
    }
}
