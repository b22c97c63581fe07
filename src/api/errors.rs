//! The one mapping from domain errors to Kafka error codes; the codes
//! themselves are named in [`crate::protocol::errors`].

pub use crate::protocol::errors::*;

use crate::log::batch::BatchError;
use crate::log::LogError;
use crate::topics::TopicError;

/// The code a Kafka broker would answer for a storage error.
pub fn log_error_code(e: &LogError) -> i16 {
    match e {
        LogError::Io { .. } | LogError::Corruption { .. } => KAFKA_STORAGE_ERROR,
        LogError::OffsetOutOfRange { .. } => OFFSET_OUT_OF_RANGE,
        LogError::InvalidBatch(
            BatchError::Invalid(_) | BatchError::Record { .. } | BatchError::Keyless(_),
        ) => INVALID_RECORD,
        LogError::InvalidBatch(BatchError::DecompressedTooLarge { .. }) => MESSAGE_TOO_LARGE,
        LogError::InvalidBatch(BatchError::Magic(_)) => CORRUPT_MESSAGE,
        LogError::InvalidBatch(_) => CORRUPT_MESSAGE,
        LogError::TooLarge { .. } => MESSAGE_TOO_LARGE,
        LogError::OutOfOrderSequence => OUT_OF_ORDER_SEQUENCE_NUMBER,
        LogError::InvalidProducerEpoch => INVALID_PRODUCER_EPOCH,
        LogError::ControlBatch => INVALID_RECORD,
        LogError::Closed => UNKNOWN_TOPIC_OR_PARTITION,
        LogError::ReservedTopic => INVALID_TOPIC_EXCEPTION,
        // Replication only; a follower's own fetch loop handles it.
        LogError::NonContiguous { .. } => UNKNOWN_SERVER_ERROR,
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
