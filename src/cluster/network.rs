//! The quorum's messages between brokers on `--controller-listen`: one TCP
//! connection per peer, each message a 4-byte big-endian length and a JSON
//! body, answered in turn. Lengths are checked before anything is
//! allocated.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::auth::{self, Auth};
use super::types::{
    AppendReply, AppendRequest, Command, CoordinatorCall, CoordinatorReply, FetchReply,
    FetchRequest, NodeId, ReplicaSource, Reply, TypeConfig,
};

/// Largest message; snapshots of the metadata are far below it.
const MAX_MESSAGE: usize = 64 << 20;
/// How long a forwarded proposal may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize)]
pub(super) enum Request {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A proposal sent to the leader by another broker.
    Propose(Command),
    /// A follower's fetch from a partition's leader.
    Fetch(FetchRequest),
    /// Another broker's batch for a partition this broker leads; the batch
    /// follows the message.
    Deliver(AppendRequest),
    /// A broker that is not a voter asks to follow the quorum's log.
    Join {
        id: NodeId,
        addr: String,
    },
    /// A call between coordinators.
    Coordinate(CoordinatorCall),
}

#[derive(Serialize, Deserialize)]
pub(super) enum Response {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Propose(Result<Reply, String>),
    /// Followed by the records' bytes when it is `Records`.
    Fetch(FetchReply),
    Deliver(AppendReply),
    Join(Result<(), String>),
    Coordinate(CoordinatorReply),
}

/// Where followers' fetches are answered, once the broker has said.
pub(super) type Source = Arc<std::sync::OnceLock<Arc<dyn ReplicaSource>>>;

pub(super) async fn write_msg<T: Serialize>(s: &mut TcpStream, msg: &T) -> std::io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    if body.len() > MAX_MESSAGE {
        return Err(std::io::Error::other("message too large"));
    }
    let len = u32::try_from(body.len()).map_err(std::io::Error::other)?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&body);
    s.write_all(&buf).await
}

pub(super) async fn read_msg<T: for<'de> Deserialize<'de>>(
    s: &mut TcpStream,
) -> std::io::Result<T> {
    let len = s.read_u32().await? as usize;
    if len > MAX_MESSAGE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a quorum message claims {len} bytes"),
        ));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    serde_json::from_slice(&body)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Reads the `len` raw bytes that follow a message.
pub(super) async fn read_tail(s: &mut TcpStream, len: u32) -> std::io::Result<bytes::Bytes> {
    let len = len as usize;
    if len > MAX_MESSAGE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("records of {len} bytes announced"),
        ));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    Ok(body.into())
}

/// Answers peers until the quorum stops.
pub(super) async fn serve(
    raft: Raft<TypeConfig>,
    source: Source,
    stop: CancellationToken,
    listener: TcpListener,
    auth: Auth,
    refusals: Arc<Refusals>,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(peer_connection(
                    raft.clone(),
                    Arc::clone(&source),
                    stop.clone(),
                    stream,
                    auth.clone(),
                    Arc::clone(&refusals),
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "controller listener accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Connections refused for want of the secret, logged at most once per
/// interval (a misconfigured peer retries many times a second).
#[derive(Default)]
pub(super) struct Refusals {
    last_logged: parking_lot::Mutex<Option<Instant>>,
    since: std::sync::atomic::AtomicU64,
    /// Every refusal since the start.
    pub(super) total: std::sync::atomic::AtomicU64,
}

impl Refusals {
    fn note(&self, peer: Option<std::net::SocketAddr>, e: &std::io::Error) {
        self.total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let count = self
            .since
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let mut last = self.last_logged.lock();
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            *last = Some(Instant::now());
            self.since.store(0, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(
                peer = ?peer, error = %e, refused = count,
                "refused a controller connection that did not prove the cluster's secret"
            );
        }
    }
}

async fn peer_connection(
    raft: Raft<TypeConfig>,
    source: Source,
    stop: CancellationToken,
    mut stream: TcpStream,
    auth: Auth,
    refusals: Arc<Refusals>,
) {
    if let Some(secret) = &auth {
        if let Err(e) = auth::check(&mut stream, secret).await {
            refusals.note(stream.peer_addr().ok(), &e);
            return;
        }
    }
    loop {
        let req = tokio::select! {
            () = stop.cancelled() => return,
            r = read_msg::<Request>(&mut stream) => r,
        };
        let Ok(req) = req else { return };
        let resp = match req {
            Request::Append(r) => Response::Append(raft.append_entries(r).await),
            Request::Vote(r) => Response::Vote(raft.vote(r).await),
            Request::Snapshot(r) => Response::Snapshot(raft.install_snapshot(r).await),
            // Only the leader takes a forwarded proposal: no second hop.
            Request::Propose(cmd) => Response::Propose(match raft.client_write(cmd).await {
                Ok(r) => Ok(r.data),
                Err(e) => Err(e.to_string()),
            }),
            Request::Fetch(r) => Response::Fetch(match source.get() {
                Some(src) => src.fetch(r).await,
                None => FetchReply::NotLeader,
            }),
            // Only the leader adds a learner; others answer with an error
            // and the broker asks the next voter.
            Request::Join { id, addr } => Response::Join(
                raft.add_learner(id, BasicNode::new(addr), false)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            ),
            Request::Coordinate(call) => Response::Coordinate(match source.get() {
                Some(src) => src.coordinate(call).await,
                None => CoordinatorReply::Code(crate::protocol::errors::NOT_COORDINATOR),
            }),
            Request::Deliver(r) => {
                let Ok(batch) = read_tail(&mut stream, r.len).await else {
                    return;
                };
                Response::Deliver(match source.get() {
                    Some(src) => src.append(r, batch).await,
                    None => AppendReply::NotLeader,
                })
            }
        };
        if write_msg(&mut stream, &resp).await.is_err() {
            return;
        }
        if let Response::Fetch(FetchReply::Records { records, .. }) = &resp {
            if stream.write_all(records).await.is_err() {
                return;
            }
        }
    }
}

/// Sends a proposal to the leader at `addr`.
pub(super) async fn forward(addr: &str, auth: &Auth, cmd: Command) -> Result<Reply, String> {
    let call = async {
        let mut s = auth::connect(addr, auth).await?;
        write_msg(&mut s, &Request::Propose(cmd)).await?;
        read_msg::<Response>(&mut s).await
    };
    match tokio::time::timeout(FORWARD_TIMEOUT, call).await {
        Ok(Ok(Response::Propose(r))) => r,
        Ok(Ok(_)) => Err("unexpected answer from the controller".into()),
        Ok(Err(e)) => Err(format!("controller at {addr}: {e}")),
        Err(_) => Err(format!("controller at {addr} did not answer in time")),
    }
}

/// Asks the voter at `addr` to add broker `id`, reachable at `me`, as a
/// learner.
pub(super) async fn join(addr: &str, auth: &Auth, id: NodeId, me: &str) -> Result<(), String> {
    let call = async {
        let mut s = auth::connect(addr, auth).await?;
        write_msg(
            &mut s,
            &Request::Join {
                id,
                addr: me.to_string(),
            },
        )
        .await?;
        read_msg::<Response>(&mut s).await
    };
    match tokio::time::timeout(FORWARD_TIMEOUT, call).await {
        Ok(Ok(Response::Join(r))) => r,
        Ok(Ok(_)) => Err(format!("unexpected answer from {addr}")),
        Ok(Err(e)) => Err(format!("voter at {addr}: {e}")),
        Err(_) => Err(format!("voter at {addr} did not answer in time")),
    }
}

/// How long another broker's append may take at the leader (the leader
/// waits for its in-sync replicas).
const DELIVER_TIMEOUT: Duration = Duration::from_secs(15);

/// Sends a batch to the leader of its partition at `addr` (its controller
/// listener), and waits for the in-sync replicas to hold it.
///
/// # Errors
/// The leader cannot be reached or did not answer in time.
pub(super) async fn deliver(
    addr: &str,
    auth: &Auth,
    topic: &str,
    partition: i32,
    batch: &[u8],
) -> Result<AppendReply, String> {
    let len = u32::try_from(batch.len()).map_err(|e| e.to_string())?;
    let req = AppendRequest {
        topic: topic.to_string(),
        partition,
        len,
    };
    let call = async {
        let mut s = auth::connect(addr, auth).await?;
        write_msg(&mut s, &Request::Deliver(req)).await?;
        s.write_all(batch).await?;
        read_msg::<Response>(&mut s).await
    };
    match tokio::time::timeout(DELIVER_TIMEOUT, call).await {
        Ok(Ok(Response::Deliver(r))) => Ok(r),
        Ok(Ok(_)) => Err(format!("unexpected answer from {addr}")),
        Ok(Err(e)) => Err(format!("leader at {addr}: {e}")),
        Err(_) => Err(format!("leader at {addr} did not answer in time")),
    }
}

/// Sends a call to another broker's coordinator at `addr`.
///
/// # Errors
/// The broker cannot be reached or did not answer in time.
pub(super) async fn coordinate(
    addr: &str,
    auth: &Auth,
    call: CoordinatorCall,
) -> Result<CoordinatorReply, String> {
    let call = async {
        let mut s = auth::connect(addr, auth).await?;
        write_msg(&mut s, &Request::Coordinate(call)).await?;
        read_msg::<Response>(&mut s).await
    };
    match tokio::time::timeout(DELIVER_TIMEOUT, call).await {
        Ok(Ok(Response::Coordinate(r))) => Ok(r),
        Ok(Ok(_)) => Err(format!("unexpected answer from {addr}")),
        Ok(Err(e)) => Err(format!("coordinator at {addr}: {e}")),
        Err(_) => Err(format!("coordinator at {addr} did not answer in time")),
    }
}

/// Makes a [`Peer`] for each node the engine talks to (a new one for each
/// election and replication stream).
#[derive(Default, Clone)]
pub(super) struct Peers {
    /// The cluster's secret, proven on every connection.
    auth: Auth,
    /// Peers whose last call failed, shared by all clients so that a peer
    /// going away is logged once, not once per client.
    down: Arc<parking_lot::Mutex<std::collections::BTreeSet<NodeId>>>,
    /// When each peer last answered a call.
    pub(super) answered: Arc<parking_lot::Mutex<std::collections::BTreeMap<NodeId, Instant>>>,
    /// Peers whose last call found nothing listening (a process gone).
    /// (and when): calls since have not been answered.
    pub(super) refused: Arc<parking_lot::Mutex<std::collections::BTreeMap<NodeId, Instant>>>,
}

impl Peers {
    pub(super) fn new(auth: Auth) -> Self {
        Self {
            auth,
            ..Self::default()
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Peers {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            addr: node.addr.clone(),
            conn: None,
            peers: self.clone(),
        }
    }
}

/// One peer: a connection made when needed and dropped on any error.
pub(super) struct Peer {
    target: NodeId,
    addr: String,
    conn: Option<TcpStream>,
    peers: Peers,
}

/// Why a call did not get an answer.
enum CallError {
    /// No connection could be made.
    Unreachable(std::io::Error),
    /// The connection failed or timed out mid-call.
    Network(std::io::Error),
}

impl Peer {
    async fn call(&mut self, req: &Request, ttl: Duration) -> Result<Response, CallError> {
        let attempt = async {
            if self.conn.is_none() {
                let s = auth::connect(&self.addr, &self.peers.auth)
                    .await
                    .map_err(CallError::Unreachable)?;
                self.conn = Some(s);
            }
            let Some(s) = self.conn.as_mut() else {
                return Err(CallError::Unreachable(std::io::Error::other(
                    "no connection",
                )));
            };
            write_msg(s, req).await.map_err(CallError::Network)?;
            read_msg::<Response>(s).await.map_err(CallError::Network)
        };
        let result = match tokio::time::timeout(ttl, attempt).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Network(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer from node {} in {ttl:?}", self.target),
            ))),
        };
        if let Err(CallError::Unreachable(e)) = &result {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                self.peers
                    .refused
                    .lock()
                    .insert(self.target, Instant::now());
            }
        }
        match &result {
            Err(CallError::Unreachable(e) | CallError::Network(e)) => {
                self.conn = None;
                if self.peers.down.lock().insert(self.target) {
                    tracing::warn!(node = self.target, addr = %self.addr, error = %e, "quorum peer unreachable");
                }
            }
            Ok(_) => {
                self.peers
                    .answered
                    .lock()
                    .insert(self.target, Instant::now());
                self.peers.refused.lock().remove(&self.target);
                if self.peers.down.lock().remove(&self.target) {
                    tracing::info!(node = self.target, addr = %self.addr, "quorum peer reachable again");
                }
            }
        }
        result
    }

    fn rpc_error<E: std::error::Error>(&self, e: CallError) -> RPCError<NodeId, BasicNode, E> {
        match e {
            CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Network(e) => RPCError::Network(NetworkError::new(&e)),
        }
    }

    fn unexpected<E: std::error::Error>(&self) -> RPCError<NodeId, BasicNode, E> {
        let e = std::io::Error::new(std::io::ErrorKind::InvalidData, "mismatched answer");
        RPCError::Network(NetworkError::new(&e))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(&Request::Append(rpc), option.hard_ttl()).await {
            Ok(Response::Append(Ok(r))) => Ok(r),
            Ok(Response::Append(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.unexpected()),
            Err(e) => Err(self.rpc_error(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self.call(&Request::Snapshot(rpc), option.hard_ttl()).await {
            Ok(Response::Snapshot(Ok(r))) => Ok(r),
            Ok(Response::Snapshot(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.unexpected()),
            Err(e) => Err(self.rpc_error(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(&Request::Vote(rpc), option.hard_ttl()).await {
            Ok(Response::Vote(Ok(r))) => Ok(r),
            Ok(Response::Vote(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(self.unexpected()),
            Err(e) => Err(self.rpc_error(e)),
        }
    }
}

/// A follower's connection to one leader's controller listener.
pub struct ReplicaClient {
    addr: String,
    auth: Auth,
    conn: Option<TcpStream>,
}

impl ReplicaClient {
    pub(super) fn new(addr: String, auth: Auth) -> Self {
        Self {
            addr,
            auth,
            conn: None,
        }
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
                self.conn = Some(auth::connect(&self.addr, &self.auth).await?);
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
