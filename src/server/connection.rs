//! One client connection: size prefix → bound check → read → decode →
//! handle → encode → write. Requests take effect and are answered in the
//! order they came (Kafka's guarantee). A produce that waits for its fsync
//! does not stop the connection: later produce requests are read and
//! appended meanwhile, so their fsyncs merge (group commit within one
//! connection as well as across them), and the answers leave in order.

use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use kafka_protocol::messages::{ApiKey, ResponseKind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::limits::Limits;
use crate::api::sasl::{Auth, AuthError};
use crate::api::{self, Row, REGISTRY};
use crate::broker::Broker;
use crate::protocol::{self, fetch_frame, Decoded};
use crate::security::Session;

/// Bytes read per step while a frame arrives: memory follows the bytes that
/// actually came, not the size the peer announced.
const READ_CHUNK: usize = 64 * 1024;
/// Room made for each read between frames: request headers and small
/// requests.
const READ_BUFFER: usize = 4 * 1024;
/// Produce responses a connection may owe while it reads on; at this depth
/// it stops reading until the oldest is sent.
const PIPELINE_DEPTH: usize = 64;
/// The idle timeout while answers are owed: none to speak of (the client
/// waits for them).
const OWED_WAIT: Duration = Duration::from_secs(24 * 3600);
/// Largest frame before authentication on a SASL listener (Kafka's
/// sasl.server.max.receive.size).
const MAX_UNAUTHENTICATED_FRAME: usize = 512 * 1024;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("request size {0} is outside 0..={1}")]
    BadSize(i32, usize),
    #[error("peer closed the connection mid-frame")]
    Truncated,
    #[error("idle for longer than connections.max.idle.ms")]
    Idle,
    #[error(transparent)]
    Protocol(#[from] protocol::ProtocolError),
    #[error(transparent)]
    Api(#[from] api::ApiError),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// What the connection last said about itself, for its log events.
#[derive(Debug, Default)]
struct ConnCtx {
    client_id: Option<String>,
    api: Option<&'static str>,
}

/// Serves one connection until the peer leaves, an error, or shutdown.
pub async fn serve<S>(
    broker: Arc<Broker>,
    stream: S,
    mut session: Session,
    shutdown: CancellationToken,
    limits: Limits,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (rd, mut wr) = tokio::io::split(stream);
    let mut rd = FrameReader::new(rd);
    let mut out = BytesMut::new();
    let mut ctx = ConnCtx::default();
    let peer = session.peer;
    let result = run(
        &broker,
        &mut session,
        &mut ctx,
        &mut rd,
        &mut wr,
        &mut out,
        &shutdown,
        &limits,
    )
    .await;
    let client_id = ctx.client_id.as_deref().unwrap_or("-");
    let api = ctx.api.unwrap_or("-");
    match result {
        Ok(()) => tracing::debug!(%peer, client_id, "connection closed"),
        Err(ConnError::Io(e)) if is_disconnect(&e) => {
            tracing::debug!(%peer, client_id, "peer disconnected")
        }
        Err(ConnError::Idle) => tracing::debug!(%peer, client_id, "closing idle connection"),
        Err(ConnError::Auth(AuthError::Failed)) => {
            tracing::debug!(%peer, client_id, "closed after failed authentication")
        }
        Err(e) => {
            broker
                .metrics
                .connection_errors_total
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, client_id, api, error = %e, "closing connection");
        }
    }
    let _ = wr.shutdown().await;
}

fn is_disconnect(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | BrokenPipe | ConnectionAborted
    )
}

/// One request frame, without its size prefix, and the share of the
/// in-flight byte budget it holds.
struct Frame {
    bytes: Bytes,
    len: usize,
    permit: OwnedSemaphorePermit,
}

/// Reads size-prefixed frames. Every await in [`FrameReader::next`] is a
/// read into the buffer or a wait for budget, and the partial frame lives
/// in the reader, so a `select!` may drop a pending call and call again
/// without losing bytes.
struct FrameReader<R> {
    rd: R,
    buf: BytesMut,
    /// The size of the frame being read, once its prefix has arrived.
    len: Option<usize>,
    permit: Option<OwnedSemaphorePermit>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    fn new(rd: R) -> Self {
        Self {
            rd,
            buf: BytesMut::new(),
            len: None,
            permit: None,
        }
    }

    /// The next frame of at most `max` bytes; `None` when the peer closed
    /// the connection between frames. No byte for `idle` is an error.
    async fn next(
        &mut self,
        max: usize,
        idle: Duration,
        limits: &Limits,
    ) -> Result<Option<Frame>, ConnError> {
        loop {
            if self.len.is_none() && self.buf.len() >= 4 {
                let size = self.buf.get_i32();
                let len = usize::try_from(size).map_err(|_| ConnError::BadSize(size, max))?;
                if len > max {
                    return Err(ConnError::BadSize(size, max));
                }
                self.len = Some(len);
            }
            if let Some(len) = self.len {
                // Budget for request bytes held across all connections:
                // wait for room before reading the body.
                let permit = match self.permit.take() {
                    Some(p) => p,
                    None => limits
                        .reserve(len)
                        .await
                        .map_err(|_| std::io::Error::other("broker shutting down"))?,
                };
                if self.buf.len() >= len {
                    let bytes = self.buf.split_to(len).freeze();
                    self.len = None;
                    if self.buf.is_empty() && self.buf.capacity() > 1 << 20 {
                        // Do not keep a large buffer alive for an idle
                        // connection.
                        self.buf = BytesMut::new();
                    }
                    return Ok(Some(Frame { bytes, len, permit }));
                }
                self.permit = Some(permit);
                // Memory follows the bytes that actually came, not the size
                // the peer announced.
                self.buf.reserve((len - self.buf.len()).min(READ_CHUNK));
            } else {
                self.buf.reserve(READ_BUFFER);
            }
            let n = tokio::time::timeout(idle, self.rd.read_buf(&mut self.buf))
                .await
                .map_err(|_| ConnError::Idle)??;
            if n == 0 {
                return match self.len {
                    None => Ok(None),
                    Some(_) => Err(ConnError::Truncated),
                };
            }
        }
    }
}

/// A response on its way out, with what its accounting needs.
struct Reply {
    correlation_id: i32,
    row: &'static Row,
    version: i16,
    started: Instant,
    resp: Option<ResponseKind>,
    /// Charged when the request took effect; the connection is muted for
    /// it once the response is sent.
    throttle: Duration,
    /// The request's share of the in-flight byte budget, held until the
    /// response is sent: names in the response and the queue still point
    /// into the request's frame.
    _budget: OwnedSemaphorePermit,
}

/// A response owed in request order, waiting for its fsync.
type Owed = Pin<Box<dyn Future<Output = Reply> + Send>>;

#[allow(clippy::too_many_arguments)]
async fn run<R, W>(
    broker: &Arc<Broker>,
    session: &mut Session,
    ctx: &mut ConnCtx,
    rd: &mut FrameReader<R>,
    wr: &mut W,
    out: &mut BytesMut,
    shutdown: &CancellationToken,
    limits: &Limits,
) -> Result<(), ConnError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let idle = Duration::from_millis(broker.config.args.connections_max_idle_ms);
    let max = broker.config.args.max_request_bytes;
    let mut auth = Auth::new(session);
    // Produce responses waiting for their fsync while later requests are
    // read and appended. Any other request waits until these are sent, so
    // requests take effect, and are answered, in the order they came.
    let mut owed: FuturesOrdered<Owed> = FuturesOrdered::new();
    loop {
        // Until it has authenticated, a SASL connection gets small frames
        // and a fixed time to authenticate in.
        let (max, wait) = match auth.time_left() {
            None => (max, idle),
            Some(left) if left.is_zero() => {
                return Err(AuthError::Unauthenticated("no authentication in time").into());
            }
            Some(left) => (max.min(MAX_UNAUTHENTICATED_FRAME), idle.min(left)),
        };
        // While answers are owed the client is waiting for them, not idle.
        let read_wait = if owed.is_empty() { wait } else { OWED_WAIT };
        let frame = tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                // Records already appended get their answers.
                settle(broker, wr, out, &mut owed, shutdown).await?;
                return Ok(());
            }
            Some(reply) = owed.next(), if !owed.is_empty() => {
                send_owed(broker, wr, out, reply, &mut owed, shutdown).await?;
                continue;
            }
            r = rd.next(max, read_wait, limits),
                if owed.len() < PIPELINE_DEPTH => match r {
                Ok(frame) => frame,
                Err(e) => return close_with(broker, wr, out, &mut owed, shutdown, e).await,
            },
        };
        let Some(Frame {
            bytes: frame,
            len,
            permit,
        }) = frame
        else {
            settle(broker, wr, out, &mut owed, shutdown).await?;
            return Ok(());
        };
        let started = Instant::now();
        if auth.expects_token() {
            drop(permit);
            let reply = auth.token(broker, session, frame).await?;
            write_token(wr, &reply).await?;
            continue;
        }
        let decoded = match protocol::decode(frame, api::served) {
            Ok(d) => d,
            Err(e) => return close_with(broker, wr, out, &mut owed, shutdown, e.into()).await,
        };
        let (header, key, body) = match decoded {
            Decoded::ApiVersionsTooNew {
                correlation_id,
                version,
            } => {
                settle(broker, wr, out, &mut owed, shutdown).await?;
                tracing::debug!(version, "ApiVersions above our range: answering v0");
                let body = ResponseKind::ApiVersions(api::versions::too_new(&REGISTRY));
                write_response(wr, out, correlation_id, ApiKey::ApiVersions, 0, &body).await?;
                continue;
            }
            Decoded::Request { header, key, body } => (header, key, body),
        };
        let version = header.request_api_version;
        let Some(row) = REGISTRY.get(key) else {
            // The decoder refuses what the registry does not serve.
            return close_with(
                broker,
                wr,
                out,
                &mut owed,
                shutdown,
                api::ApiError(format!("{key:?} is not served")).into(),
            )
            .await;
        };
        ctx.api = Some(row.name);
        if ctx.client_id.is_none() {
            ctx.client_id = header
                .client_id
                .as_ref()
                .map(|c| c.chars().take(128).collect());
        }
        if key != ApiKey::Produce {
            settle(broker, wr, out, &mut owed, shutdown).await?;
        }
        if row.connection {
            // The SASL exchange: small requests; the failure delay must
            // not hold budget.
            drop(permit);
            let (resp, close) = auth.request(broker, session, version, *body).await;
            write_response(wr, out, header.correlation_id, key, version, &resp).await?;
            if close {
                return Err(AuthError::Failed.into());
            }
            continue;
        }
        auth.admit(row.name, key == ApiKey::ApiVersions)?;
        let handled = match api::start(broker, &header, session, *body).await {
            Ok(h) => h,
            Err(e) => return close_with(broker, wr, out, &mut owed, shutdown, e.into()).await,
        };
        // Quotas are charged now, when the request has taken effect, for
        // the handler's time (not a produce's wait for its fsync).
        let throttle = if broker.quotas.any() {
            let client_id = header.client_id.as_ref().map_or("", |c| c.as_str());
            // Requests that wait by design are not charged for their wait.
            let busy = if row.waits {
                0
            } else {
                started.elapsed().as_micros() as u64
            };
            let metered = row.metered(len, handled.resp.as_ref());
            broker
                .quotas
                .charge_request(session.user(), client_id, busy, metered)
        } else {
            Duration::ZERO
        };
        let mut reply = Reply {
            correlation_id: header.correlation_id,
            row,
            version,
            started,
            resp: None,
            throttle,
            _budget: permit,
        };
        if handled.is_ready() && owed.is_empty() {
            reply.resp = handled.resp;
            send(broker, wr, out, reply, shutdown).await?;
        } else if !throttle.is_zero() {
            // A throttled client gets nothing more read until its answer
            // is sent and the throttle time has passed: answered in turn.
            settle(broker, wr, out, &mut owed, shutdown).await?;
            reply.resp = handled.finish().await;
            send(broker, wr, out, reply, shutdown).await?;
        } else {
            owed.push_back(Box::pin(async move {
                reply.resp = handled.finish().await;
                reply
            }));
        }
    }
}

/// Ends the connection with `e`, after sending the answers owed for
/// records already in the log (as far as the socket still takes them).
async fn close_with<W: AsyncWrite + Unpin>(
    broker: &Broker,
    wr: &mut W,
    out: &mut BytesMut,
    owed: &mut FuturesOrdered<Owed>,
    shutdown: &CancellationToken,
    e: ConnError,
) -> Result<(), ConnError> {
    if !owed.is_empty() {
        let _ = settle(broker, wr, out, owed, shutdown).await;
    }
    Err(e)
}

/// Sends every owed response, in order.
async fn settle<W: AsyncWrite + Unpin>(
    broker: &Broker,
    wr: &mut W,
    out: &mut BytesMut,
    owed: &mut FuturesOrdered<Owed>,
    shutdown: &CancellationToken,
) -> Result<(), ConnError> {
    while let Some(reply) = owed.next().await {
        send_owed(broker, wr, out, reply, owed, shutdown).await?;
    }
    Ok(())
}

/// Sends `first` and every owed response already done after it, in one
/// write.
async fn send_owed<W: AsyncWrite + Unpin>(
    broker: &Broker,
    wr: &mut W,
    out: &mut BytesMut,
    first: Reply,
    owed: &mut FuturesOrdered<Owed>,
    shutdown: &CancellationToken,
) -> Result<(), ConnError> {
    out.clear();
    let mut throttle = Duration::ZERO;
    let mut next = Some(first);
    while let Some(mut reply) = next.take() {
        throttle = throttle.max(account(broker, &mut reply));
        if let Some(resp) = &reply.resp {
            protocol::encode(
                out,
                reply.correlation_id,
                reply.row.key,
                reply.version,
                resp,
            )?;
        }
        next = owed.next().now_or_never().flatten();
    }
    if !out.is_empty() {
        wr.write_all(out).await?;
        wr.flush().await?;
    }
    shrink(out);
    mute(broker, throttle, shutdown).await;
    Ok(())
}

/// Sends one response as soon as it is ready.
async fn send<W: AsyncWrite + Unpin>(
    broker: &Broker,
    wr: &mut W,
    out: &mut BytesMut,
    mut reply: Reply,
    shutdown: &CancellationToken,
) -> Result<(), ConnError> {
    let throttle = account(broker, &mut reply);
    match &reply.resp {
        Some(ResponseKind::Fetch(f)) if fetch_frame::supported(f, reply.version) => {
            // Record data goes from the segment maps to the socket without
            // a copy.
            let chunks = fetch_frame::frame(reply.correlation_id, reply.version, f)?;
            write_chunks(wr, chunks).await?;
            wr.flush().await?;
        }
        Some(resp) => {
            write_response(
                wr,
                out,
                reply.correlation_id,
                reply.row.key,
                reply.version,
                resp,
            )
            .await?;
        }
        None => {}
    }
    mute(broker, throttle, shutdown).await;
    Ok(())
}

/// Encodes one response into `out` and writes it.
async fn write_response<W: AsyncWrite + Unpin>(
    wr: &mut W,
    out: &mut BytesMut,
    correlation_id: i32,
    key: ApiKey,
    version: i16,
    resp: &ResponseKind,
) -> Result<(), ConnError> {
    out.clear();
    protocol::encode(out, correlation_id, key, version, resp)?;
    wr.write_all(out).await?;
    wr.flush().await?;
    shrink(out);
    Ok(())
}

/// Do not keep a large output buffer alive for an idle connection.
fn shrink(out: &mut BytesMut) {
    if out.capacity() > 1 << 20 {
        *out = BytesMut::new();
    }
}

/// Request and error metrics for a finished request; puts the throttle
/// time charged when it took effect into the response and returns it.
fn account(broker: &Broker, reply: &mut Reply) -> Duration {
    let micros = reply.started.elapsed().as_micros() as u64;
    broker.metrics.record_request(reply.row.name, micros);
    if let Some(resp) = reply.resp.as_mut() {
        reply.row.set_throttle(resp, reply.throttle);
        for code in reply.row.errors(resp) {
            broker.metrics.record_error(code);
        }
    }
    reply.throttle
}

/// A bare SASL token: size prefix and bytes (SaslHandshake v0).
async fn write_token<W: AsyncWrite + Unpin>(wr: &mut W, token: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(token.len()).map_err(std::io::Error::other)?;
    wr.write_all(&len.to_be_bytes()).await?;
    wr.write_all(token).await?;
    wr.flush().await
}

/// Writes `chunks` in order with vectored writes.
async fn write_chunks<W: AsyncWrite + Unpin>(
    wr: &mut W,
    chunks: Vec<Bytes>,
) -> std::io::Result<()> {
    let mut chunks: VecDeque<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
    while !chunks.is_empty() {
        let mut n = {
            let slices: Vec<IoSlice<'_>> =
                chunks.iter().take(64).map(|c| IoSlice::new(c)).collect();
            wr.write_vectored(&slices).await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let Some(front) = chunks.front_mut() else {
                break;
            };
            if n >= front.len() {
                n -= front.len();
                chunks.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
    Ok(())
}

/// Reads nothing more from the connection for `t` (Kafka mutes a throttled
/// channel).
async fn mute(broker: &Broker, t: Duration, shutdown: &CancellationToken) {
    if t.is_zero() {
        return;
    }
    broker
        .metrics
        .throttled_responses_total
        .fetch_add(1, Ordering::Relaxed);
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(t) => {}
    }
}
