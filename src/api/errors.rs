//! Kafka error codes weir answers with, and the one mapping from domain
//! errors to them.

use crate::log::LogError;
use crate::topics::TopicError;

pub const NONE: i16 = 0;
pub const UNKNOWN_SERVER_ERROR: i16 = -1;
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
pub const CORRUPT_MESSAGE: i16 = 2;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const MESSAGE_TOO_LARGE: i16 = 10;
pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
pub const INVALID_REQUIRED_ACKS: i16 = 21;
pub const UNSUPPORTED_VERSION: i16 = 35;
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
pub const INVALID_PARTITIONS: i16 = 37;
pub const INVALID_REPLICATION_FACTOR: i16 = 38;
pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
pub const INVALID_CONFIG: i16 = 40;
pub const INVALID_REQUEST: i16 = 42;
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
pub const KAFKA_STORAGE_ERROR: i16 = 56;
pub const INVALID_RECORD: i16 = 87;
pub const UNKNOWN_TOPIC_ID: i16 = 100;

/// The code a Kafka broker would answer for a storage error.
pub fn log_error_code(e: &LogError) -> i16 {
    use crate::log::batch::BatchError;
    match e {
        LogError::Io { .. } | LogError::Corruption { .. } => KAFKA_STORAGE_ERROR,
        LogError::OffsetOutOfRange { .. } => OFFSET_OUT_OF_RANGE,
        LogError::InvalidBatch(BatchError::Invalid(_) | BatchError::Record { .. }) => {
            INVALID_RECORD
        }
        LogError::InvalidBatch(BatchError::DecompressedTooLarge { .. }) => MESSAGE_TOO_LARGE,
        LogError::InvalidBatch(BatchError::Magic(_)) => CORRUPT_MESSAGE,
        LogError::InvalidBatch(_) => CORRUPT_MESSAGE,
        LogError::TooLarge { .. } => MESSAGE_TOO_LARGE,
        LogError::OutOfOrderSequence => OUT_OF_ORDER_SEQUENCE_NUMBER,
        LogError::InvalidProducerEpoch => INVALID_PRODUCER_EPOCH,
        LogError::Transactional => INVALID_RECORD,
        LogError::Closed => UNKNOWN_TOPIC_OR_PARTITION,
        LogError::ReservedTopic => INVALID_TOPIC_EXCEPTION,
    }
}

/// The code a Kafka broker would answer for a topic operation error.
pub fn topic_error_code(e: &TopicError) -> i16 {
    match e {
        TopicError::AlreadyExists(_) => TOPIC_ALREADY_EXISTS,
        TopicError::Unknown(_) => UNKNOWN_TOPIC_OR_PARTITION,
        TopicError::InvalidName { .. } => INVALID_TOPIC_EXCEPTION,
        TopicError::InvalidPartitions(_) => INVALID_PARTITIONS,
        TopicError::InvalidReplicationFactor(_) => INVALID_REPLICATION_FACTOR,
        TopicError::InvalidConfig(_) => INVALID_CONFIG,
        TopicError::Storage(e) => log_error_code(e),
    }
}
pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
pub const GROUP_AUTHORIZATION_FAILED: i16 = 30;
pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
pub const ILLEGAL_SASL_STATE: i16 = 34;
pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
pub const SECURITY_DISABLED: i16 = 54;
pub const SASL_AUTHENTICATION_FAILED: i16 = 58;
pub const RESOURCE_NOT_FOUND: i16 = 91;
pub const DUPLICATE_RESOURCE: i16 = 92;
pub const UNACCEPTABLE_CREDENTIAL: i16 = 93;
