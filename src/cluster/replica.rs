//! Replication's messages: a follower's fetch from a partition's leader,
//! carried on the controller listener beside the quorum's own. The records
//! travel as raw bytes after the JSON header of the answer, as the leader
//! stored them.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use super::network::{read_msg, read_tail, write_msg, Request, Response};
use super::NodeId;

/// A follower asks its leader for the records from `offset` on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchRequest {
    pub topic: String,
    pub partition: i32,
    /// The follower.
    pub replica: NodeId,
    /// The leader epoch the follower believes current.
    pub leader_epoch: i32,
    /// The follower's log end offset.
    pub offset: i64,
    /// The epoch of the follower's last batch, to find where its log
    /// diverged from the leader's.
    pub last_fetched_epoch: Option<i32>,
    pub max_bytes: u32,
    /// How long the leader may wait for new records.
    pub max_wait_ms: u32,
}

/// The leader's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FetchReply {
    /// Whole batches from the requested offset (possibly none).
    Records {
        high_watermark: i64,
        log_start_offset: i64,
        /// Sent after the header, not in it.
        #[serde(skip)]
        records: Bytes,
        /// Length of `records` on the wire.
        len: u32,
    },
    /// The follower's log diverged: truncate to `end_offset` and fetch
    /// again.
    Diverging { epoch: i32, end_offset: i64 },
    /// The follower asked below the leader's log start: start over there.
    OffsetOutOfRange { log_start_offset: i64 },
    /// This broker does not lead the partition at that epoch.
    NotLeader,
    /// Another failure, in words.
    Error(String),
}

/// Serves followers' fetches: the broker's side of replication.
pub trait ReplicaSource: Send + Sync + 'static {
    fn fetch(&self, req: FetchRequest) -> Pin<Box<dyn Future<Output = FetchReply> + Send + '_>>;
}

/// A follower's connection to one leader's controller listener.
pub struct ReplicaClient {
    addr: String,
    conn: Option<TcpStream>,
}

impl ReplicaClient {
    pub fn new(addr: String) -> Self {
        Self { addr, conn: None }
    }

    /// Where the connection goes.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// One fetch; the connection is dropped on any error.
    ///
    /// # Errors
    /// The leader cannot be reached or did not answer in time.
    pub async fn fetch(&mut self, req: FetchRequest) -> std::io::Result<FetchReply> {
        let ttl = Duration::from_millis(u64::from(req.max_wait_ms) + 5_000);
        let call = async {
            if self.conn.is_none() {
                let s = TcpStream::connect(&self.addr).await?;
                let _ = s.set_nodelay(true);
                self.conn = Some(s);
            }
            let Some(s) = self.conn.as_mut() else {
                return Err(std::io::Error::other("no connection"));
            };
            write_msg(s, &Request::Fetch(req)).await?;
            match read_msg::<Response>(s).await? {
                Response::Fetch(FetchReply::Records {
                    high_watermark,
                    log_start_offset,
                    len,
                    ..
                }) => Ok(FetchReply::Records {
                    high_watermark,
                    log_start_offset,
                    records: read_tail(s, len).await?,
                    len,
                }),
                Response::Fetch(r) => Ok(r),
                _ => Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "mismatched answer to a fetch",
                )),
            }
        };
        let r = match tokio::time::timeout(ttl, call).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer from {} in {ttl:?}", self.addr),
            )),
        };
        if r.is_err() {
            self.conn = None;
        }
        r
    }
}
