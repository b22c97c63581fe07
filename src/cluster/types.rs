//! The quorum's types: its commands, their answers, and the replicated
//! metadata they change.

use std::collections::BTreeMap;
// `declare_raft_types!` names `Cursor` for the snapshot data type.
use std::io::Cursor;

use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// The quorum's types: commands are [`Command`], answers [`Reply`].
    pub TypeConfig:
        D = Command,
        R = Reply,
);

/// Node ids as Kafka's `node.id`.
pub type NodeId = u64;

/// A change to the cluster's metadata, proposed by any broker and applied
/// in log order on every one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Command {
    /// A broker announces itself and where clients reach it.
    RegisterBroker {
        id: NodeId,
        kafka: String,
        http: String,
    },
}

/// What applying a command answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Whether the command changed the state.
    pub changed: bool,
}

/// A broker as the quorum knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    pub id: NodeId,
    /// `host:port` of its first advertised Kafka listener.
    pub kafka: String,
    /// Its admin HTTP address.
    pub http: String,
}

/// The replicated metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub brokers: BTreeMap<NodeId, BrokerInfo>,
}

impl Metadata {
    /// Applies one command; the same commands in the same order give the
    /// same state on every node.
    pub fn apply(&mut self, cmd: &Command) -> Reply {
        match cmd {
            Command::RegisterBroker { id, kafka, http } => {
                let info = BrokerInfo {
                    id: *id,
                    kafka: kafka.clone(),
                    http: http.clone(),
                };
                let changed = self.brokers.get(id) != Some(&info);
                self.brokers.insert(*id, info);
                Reply { changed }
            }
        }
    }
}
