//! SASL: SaslHandshake and SaslAuthenticate. They change what the
//! connection is allowed to do, so the connection answers them itself,
//! driving an [`Auth`]: the exchange (`security::sasl`), whether it has
//! authenticated, and whether bare tokens follow (after a v0 handshake).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{
    RequestKind, ResponseKind, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::errors::{ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED, UNSUPPORTED_SASL_MECHANISM};
use super::route::{kind, open, row, Api, Cx, Handled, Row};
use crate::broker::Broker;
use crate::security::sasl::{HandshakeError, SaslSession, Step};
use crate::security::Session;

/// The APIs this family serves.
pub const ROWS: &[Row] = &[row::<SaslHandshake>(), row::<SaslAuthenticate>()];

/// Time a SASL connection has to authenticate.
pub const AUTHENTICATION_TIMEOUT: Duration = Duration::from_secs(30);

/// SaslHandshake: picks the mechanism. After v0 the tokens follow as bare
/// size-prefixed frames (older sarama); v1 clients send SaslAuthenticate.
/// librdkafka 2.0 only looks for SASL support when v0 is listed.
pub struct SaslHandshake;

impl Api for SaslHandshake {
    kind!(SaslHandshake, SaslHandshakeRequest, SaslHandshakeResponse);
    const VERSIONS: (i16, i16) = (0, 1);
    const CONNECTION: bool = true;
    open!();

    /// Reached only out of turn: the connection answers these.
    async fn handle(_cx: Cx<'_>, _req: SaslHandshakeRequest) -> Handled<SaslHandshakeResponse> {
        Handled::Now(SaslHandshakeResponse::default().with_error_code(ILLEGAL_SASL_STATE))
    }
}

/// SaslAuthenticate: one token of the exchange.
pub struct SaslAuthenticate;

impl Api for SaslAuthenticate {
    kind!(
        SaslAuthenticate,
        SaslAuthenticateRequest,
        SaslAuthenticateResponse
    );
    const VERSIONS: (i16, i16) = (0, 2);
    const CONNECTION: bool = true;
    open!();

    /// Reached only out of turn: the connection answers these.
    async fn handle(
        _cx: Cx<'_>,
        _req: SaslAuthenticateRequest,
    ) -> Handled<SaslAuthenticateResponse> {
        Handled::Now(SaslAuthenticateResponse::default().with_error_code(ILLEGAL_SASL_STATE))
    }
}

/// Why authentication ends a connection.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0} before SASL authentication")]
    Unauthenticated(&'static str),
    #[error("SASL authentication failed")]
    Failed,
}

/// One connection's authentication.
#[derive(Debug)]
pub struct Auth {
    exchange: SaslSession,
    authenticated: bool,
    /// After a v0 SaslHandshake: the next frames are bare SASL tokens.
    raw_tokens: bool,
    deadline: tokio::time::Instant,
}

impl Auth {
    /// The state of a new connection on `session`'s listener: a SASL
    /// listener's connection must authenticate within
    /// [`AUTHENTICATION_TIMEOUT`].
    pub fn new(session: &Session) -> Self {
        Self {
            exchange: SaslSession::default(),
            authenticated: !session.protocol.is_sasl(),
            raw_tokens: false,
            deadline: tokio::time::Instant::now() + AUTHENTICATION_TIMEOUT,
        }
    }

    /// Time left to authenticate; `None` once authenticated (or on a
    /// listener without SASL).
    pub fn time_left(&self) -> Option<Duration> {
        (!self.authenticated).then(|| {
            self.deadline
                .saturating_duration_since(tokio::time::Instant::now())
        })
    }

    /// Whether the next frame is a bare token, not a request.
    pub fn expects_token(&self) -> bool {
        self.raw_tokens
    }

    /// Checks that a request of `name` may be handled now: before
    /// authentication only ApiVersions (and SASL) may be.
    ///
    /// # Errors
    /// Kafka closes a SASL connection that skips the handshake.
    pub fn admit(&self, name: &'static str, api_versions: bool) -> Result<(), AuthError> {
        if self.authenticated || api_versions {
            Ok(())
        } else {
            Err(AuthError::Unauthenticated(name))
        }
    }

    /// A bare token (after a v0 handshake): the reply to send back as a
    /// bare frame.
    ///
    /// # Errors
    /// A failed exchange: without SaslAuthenticate there is no error
    /// response, Kafka closes the connection.
    pub async fn token(
        &mut self,
        broker: &Arc<Broker>,
        session: &mut Session,
        token: Bytes,
    ) -> Result<Vec<u8>, AuthError> {
        match step(broker, session, &mut self.exchange, token).await {
            Step::Continue(reply) => Ok(reply),
            Step::Done { reply, .. } => {
                self.raw_tokens = false;
                self.authenticated = true;
                Ok(reply)
            }
            Step::Failed { .. } => Err(AuthError::Failed),
            Step::IllegalState => Err(AuthError::Unauthenticated("a SASL token")),
        }
    }

    /// SaslHandshake and SaslAuthenticate: the response, and whether to
    /// close the connection after it.
    pub async fn request(
        &mut self,
        broker: &Arc<Broker>,
        session: &mut Session,
        version: i16,
        body: RequestKind,
    ) -> (ResponseKind, bool) {
        let enabled = &broker.config.args.sasl_mechanisms;
        let offered = || {
            enabled
                .iter()
                .map(|m| StrBytes::from_string(m.clone()))
                .collect::<Vec<_>>()
        };
        let sasl_listener = session.protocol.is_sasl();
        match body {
            RequestKind::SaslHandshake(r) => {
                if !sasl_listener || self.authenticated {
                    let resp = SaslHandshakeResponse::default()
                        .with_error_code(ILLEGAL_SASL_STATE)
                        .with_mechanisms(if sasl_listener { offered() } else { Vec::new() });
                    return (ResponseKind::SaslHandshake(resp), sasl_listener);
                }
                let code = match self.exchange.handshake(r.mechanism.as_str(), enabled) {
                    Ok(()) => 0,
                    Err(HandshakeError::Unsupported) => UNSUPPORTED_SASL_MECHANISM,
                    Err(HandshakeError::IllegalState) => ILLEGAL_SASL_STATE,
                };
                // v0: the tokens follow as bare size-prefixed frames, not
                // SaslAuthenticate requests.
                self.raw_tokens = code == 0 && version == 0;
                let resp = SaslHandshakeResponse::default()
                    .with_error_code(code)
                    .with_mechanisms(offered());
                (
                    ResponseKind::SaslHandshake(resp),
                    code == ILLEGAL_SASL_STATE,
                )
            }
            RequestKind::SaslAuthenticate(r) => {
                if !sasl_listener || self.authenticated {
                    let resp = authenticate_error(
                        ILLEGAL_SASL_STATE,
                        "no SASL authentication in progress".into(),
                    );
                    return (ResponseKind::SaslAuthenticate(resp), sasl_listener);
                }
                let mechanism = self.exchange.mechanism().unwrap_or("-");
                let (resp, close) =
                    match step(broker, session, &mut self.exchange, r.auth_bytes).await {
                        Step::Continue(reply) => (
                            SaslAuthenticateResponse::default().with_auth_bytes(reply.into()),
                            false,
                        ),
                        Step::Done { reply, .. } => {
                            self.authenticated = true;
                            (
                                SaslAuthenticateResponse::default().with_auth_bytes(reply.into()),
                                false,
                            )
                        }
                        Step::Failed { .. } => (
                            authenticate_error(
                                SASL_AUTHENTICATION_FAILED,
                                format!(
                                    "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
                                ),
                            ),
                            true,
                        ),
                        Step::IllegalState => (
                            authenticate_error(
                                ILLEGAL_SASL_STATE,
                                "SaslAuthenticate before SaslHandshake".into(),
                            ),
                            true,
                        ),
                    };
                (ResponseKind::SaslAuthenticate(resp), close)
            }
            _ => (
                ResponseKind::SaslHandshake(
                    SaslHandshakeResponse::default().with_error_code(ILLEGAL_SASL_STATE),
                ),
                true,
            ),
        }
    }
}

fn authenticate_error(code: i16, message: String) -> SaslAuthenticateResponse {
    SaslAuthenticateResponse::default()
        .with_error_code(code)
        .with_error_message(Some(StrBytes::from_string(message)))
}

/// One SASL token through the exchange, off the connection's task (key
/// derivation and the credential file's reload are blocking work). On
/// success the session takes the principal; a failure is logged, counted
/// and returned after `--sasl-failure-delay-ms`.
async fn step(
    broker: &Arc<Broker>,
    session: &mut Session,
    sasl: &mut SaslSession,
    token: Bytes,
) -> Step {
    let mechanism = sasl.mechanism().unwrap_or("-");
    // Key derivations run a few at a time (one per core): a flood of
    // attempts queues here instead of taking every core.
    let Ok(_slot) = broker.auth_slots().acquire().await else {
        return Step::Failed {
            user: None,
            reason: "broker shutting down".into(),
        };
    };
    let mut exchange = std::mem::take(sasl);
    let b = Arc::clone(broker);
    let step = match tokio::task::spawn_blocking(move || {
        let step = exchange.authenticate(&token, &b.users);
        (exchange, step)
    })
    .await
    {
        Ok((exchange, step)) => {
            *sasl = exchange;
            step
        }
        Err(e) => Step::Failed {
            user: None,
            reason: format!("authentication task failed: {e}"),
        },
    };
    match &step {
        Step::Done { user, .. } => {
            session.principal = format!("User:{user}");
            tracing::debug!(peer = %session.peer, principal = %session.principal, mechanism, "authenticated");
        }
        Step::Failed { user, reason } => {
            broker
                .metrics
                .sasl_authentication_failures_total
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                peer = %session.peer,
                user = user.as_deref().unwrap_or("-"),
                mechanism,
                reason,
                "SASL authentication failed"
            );
            // Slow down password guessing: the answer, and the close, come
            // after the delay.
            tokio::time::sleep(Duration::from_millis(
                broker.config.args.sasl_failure_delay_ms,
            ))
            .await;
        }
        Step::Continue(_) | Step::IllegalState => {}
    }
    step
}
