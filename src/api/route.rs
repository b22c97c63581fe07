//! The row of one Kafka API: everything weir knows about it, declared once
//! in its family's file as an implementation of [`Api`].
//!
//! A row says which versions are served, how a request is authorized (what
//! is taken out of it before handling and put back, with Kafka's error
//! codes, after), how it is handled, which error codes its response
//! carries, where its throttle time goes and which quota bytes it is
//! metered by. [`row`] turns an implementation into a [`Row`] of plain
//! function pointers; `api::REGISTRY` is built from the families' rows and
//! everything per API (dispatch, ApiVersions, the version check before
//! decoding, names in logs and metrics, throttling, error accounting) is
//! read from it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::security::quotas::QuotaKind;
use crate::security::Session;

/// A request that cannot be answered; the connection is closed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ApiError(pub String);

/// `StrBytes` from a string.
pub fn sb(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// `TopicName` from a string.
pub fn tn(s: impl Into<String>) -> TopicName {
    TopicName(sb(s))
}

/// A boxed future that may cross threads.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a handler knows of the request besides its body.
#[derive(Clone, Copy)]
pub struct Cx<'a> {
    pub broker: &'a Arc<Broker>,
    pub session: &'a Session,
    pub header: &'a RequestHeader,
    /// The request's version.
    pub version: i16,
    /// The registry the request was dispatched from.
    pub registry: &'a Registry,
}

impl Cx<'_> {
    /// The host and port the client should use for this broker: those of
    /// the listener it came in on.
    pub fn advertised(&self) -> (&str, i32) {
        let cfg = &self.broker.config;
        match cfg.listeners.get(self.session.listener) {
            Some(l) if self.session.listener != 0 => {
                (l.advertised_host.as_str(), l.advertised_port)
            }
            _ => (cfg.advertised_host.as_str(), cfg.advertised_port),
        }
    }
}

/// The authorizer's verdict on a request.
pub enum Verdict<R, D> {
    /// Handle what is left of the request, then put `D` back into the
    /// response.
    Proceed(D),
    /// Answer with this response without handling the request.
    Answer(R),
}

/// A handled request.
pub enum Handled<R> {
    /// Answer with this response.
    Now(R),
    /// No answer (Produce with acks=0).
    Silent,
    /// The request has taken effect; the answer (none for acks=0) waits
    /// for the future (a produce's fsync), which may amend it.
    After(Option<R>, Later<R>),
}

/// One Kafka API as weir serves it. Every item but the request kind,
/// versions and handler has a default: no authorization needed, no error
/// codes counted, no throttle field, no quota bytes.
pub trait Api {
    /// The API key; [`kind!`] sets it with the request and response types.
    const KEY: ApiKey;
    /// The name used in logs and metrics labels.
    const NAME: &'static str;
    /// The lowest and highest version served.
    const VERSIONS: (i16, i16);
    /// Whether the request waits by design (long polls, joins held for a
    /// rebalance): its wait is not charged to the request-time quota.
    const WAITS: bool = false;
    /// Whether the connection answers this API itself (the SASL exchange,
    /// which changes the connection's state).
    const CONNECTION: bool = false;

    type Request: Send + 'static;
    type Response: Send + 'static;
    /// What authorization took out of the request, to be answered.
    type Denied: Send + 'static;

    fn unwrap(body: RequestKind) -> Option<Self::Request>;
    fn wrap(resp: Self::Response) -> ResponseKind;
    fn peek(resp: &ResponseKind) -> Option<&Self::Response>;
    fn peek_mut(resp: &mut ResponseKind) -> Option<&mut Self::Response>;

    /// Checks the request against the principal's ACLs (only called when
    /// an authorizer is on): takes out what may not be touched, or answers
    /// the whole request.
    fn authorize(cx: Cx<'_>, req: &mut Self::Request) -> Verdict<Self::Response, Self::Denied>;

    /// Puts what [`Api::authorize`] took out back into the response.
    fn deny(cx: Cx<'_>, resp: &mut Self::Response, denied: Self::Denied);

    /// Handles the request.
    fn handle(
        cx: Cx<'_>,
        req: Self::Request,
    ) -> impl Future<Output = Handled<Self::Response>> + Send;

    /// Every error code in the response, for the error metrics.
    fn errors(_resp: &Self::Response, _out: &mut Vec<i16>) {}

    /// Sets the response's throttle time, where it has one.
    fn throttle(_resp: &mut Self::Response, _ms: i32) {}

    /// The byte quota this request is metered by, and the bytes: from the
    /// request's size, or the response when it is ready.
    fn metered(_request_len: usize, _resp: Option<&Self::Response>) -> Option<(QuotaKind, u64)> {
        None
    }
}

/// Declares an API's key, name, request and response types: `kind!(Produce,
/// ProduceRequest, ProduceResponse)` inside an `impl Api`.
macro_rules! kind {
    ($variant:ident, $req:ty, $resp:ty) => {
        const KEY: ::kafka_protocol::messages::ApiKey =
            ::kafka_protocol::messages::ApiKey::$variant;
        const NAME: &'static str = stringify!($variant);
        type Request = $req;
        type Response = $resp;
        fn unwrap(body: ::kafka_protocol::messages::RequestKind) -> Option<$req> {
            match body {
                ::kafka_protocol::messages::RequestKind::$variant(r) => Some(r),
                _ => None,
            }
        }
        fn wrap(resp: $resp) -> ::kafka_protocol::messages::ResponseKind {
            ::kafka_protocol::messages::ResponseKind::$variant(resp)
        }
        fn peek(resp: &::kafka_protocol::messages::ResponseKind) -> Option<&$resp> {
            match resp {
                ::kafka_protocol::messages::ResponseKind::$variant(r) => Some(r),
                _ => None,
            }
        }
        fn peek_mut(resp: &mut ::kafka_protocol::messages::ResponseKind) -> Option<&mut $resp> {
            match resp {
                ::kafka_protocol::messages::ResponseKind::$variant(r) => Some(r),
                _ => None,
            }
        }
    };
}
pub(crate) use kind;

/// Declares that an API needs no authorization beyond being connected:
/// `open!()` inside an `impl Api`.
macro_rules! open {
    () => {
        type Denied = ();
        fn authorize(
            _cx: $crate::api::route::Cx<'_>,
            _req: &mut Self::Request,
        ) -> $crate::api::route::Verdict<Self::Response, ()> {
            $crate::api::route::Verdict::Proceed(())
        }
        fn deny(_cx: $crate::api::route::Cx<'_>, _resp: &mut Self::Response, _denied: ()) {}
    };
}
pub(crate) use open;

/// Declares an API whose permission is checked by its handler, with or
/// without an authorizer (the security admin APIs, through
/// `authz::cluster_allowed`): `checked_in_handler!(CreateAcls,
/// CreateAclsRequest, CreateAclsResponse, (1, 3), create_acls)`, where
/// `async fn create_acls(&Arc<Broker>, &Session, CreateAclsRequest) ->
/// CreateAclsResponse`.
macro_rules! checked_in_handler {
    ($(#[$doc:meta])* $name:ident, $req:ty, $resp:ty, $versions:expr, $handler:path) => {
        $(#[$doc])*
        pub struct $name;

        impl $crate::api::route::Api for $name {
            $crate::api::route::kind!($name, $req, $resp);
            const VERSIONS: (i16, i16) = $versions;
            $crate::api::route::open!();

            async fn handle(
                cx: $crate::api::route::Cx<'_>,
                req: $req,
            ) -> $crate::api::route::Handled<$resp> {
                $crate::api::route::Handled::Now($handler(cx.broker, cx.session, req).await)
            }
        }
    };
}
pub(crate) use checked_in_handler;

/// A handled request whose response may still wait (a produce's fsync).
pub struct Started {
    pub resp: Option<ResponseKind>,
    pub later: Option<BoxFuture<'static, Option<ResponseKind>>>,
}

impl Started {
    /// The response, once whatever it waits for is done.
    pub async fn finish(self) -> Option<ResponseKind> {
        match self.later {
            Some(later) => later.await,
            None => self.resp,
        }
    }

    /// Whether the response is ready now.
    pub fn is_ready(&self) -> bool {
        self.later.is_none()
    }
}

/// A byte quota and the bytes charged to it.
pub type Metered = Option<(QuotaKind, u64)>;

type Serve = for<'a> fn(Cx<'a>, RequestKind) -> BoxFuture<'a, Result<Started, ApiError>>;

/// An [`Api`] as plain data and function pointers, for the registry.
#[derive(Clone, Copy)]
pub struct Row {
    pub key: ApiKey,
    pub name: &'static str,
    pub min: i16,
    pub max: i16,
    pub waits: bool,
    /// Answered by the connection itself ([`Api::CONNECTION`]).
    pub connection: bool,
    serve: Serve,
    errors: fn(&ResponseKind, &mut Vec<i16>),
    throttle: fn(&mut ResponseKind, i32),
    metered: fn(usize, Option<&ResponseKind>) -> Metered,
}

impl std::fmt::Debug for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} v{}-{}", self.name, self.min, self.max)
    }
}

impl Row {
    /// Whether `version` is served.
    pub fn serves(&self, version: i16) -> bool {
        (self.min..=self.max).contains(&version)
    }

    /// Authorizes and handles one request.
    pub fn serve<'a>(
        &self,
        cx: Cx<'a>,
        body: RequestKind,
    ) -> BoxFuture<'a, Result<Started, ApiError>> {
        (self.serve)(cx, body)
    }

    /// The non-zero error codes in `resp`.
    pub fn errors(&self, resp: &ResponseKind) -> Vec<i16> {
        let mut out = Vec::new();
        (self.errors)(resp, &mut out);
        out.retain(|&c| c != 0);
        out
    }

    /// Puts `t` into the response's throttle field, where it has one.
    pub fn set_throttle(&self, resp: &mut ResponseKind, t: std::time::Duration) {
        if !t.is_zero() {
            (self.throttle)(resp, i32::try_from(t.as_millis()).unwrap_or(i32::MAX));
        }
    }

    /// The byte quota the request is metered by, and the bytes.
    pub fn metered(
        &self,
        request_len: usize,
        resp: Option<&ResponseKind>,
    ) -> Option<(QuotaKind, u64)> {
        (self.metered)(request_len, resp)
    }
}

/// What a handled request still waits for before it is answered.
pub type Later<R> = Box<dyn FnOnce(Option<R>) -> BoxFuture<'static, Option<R>> + Send>;

/// The row of `A`.
pub const fn row<A: Api>() -> Row {
    Row {
        key: A::KEY,
        name: A::NAME,
        min: A::VERSIONS.0,
        max: A::VERSIONS.1,
        waits: A::WAITS,
        connection: A::CONNECTION,
        serve: serve::<A>,
        errors: errors_of::<A>,
        throttle: throttle_of::<A>,
        metered: metered_of::<A>,
    }
}

fn errors_of<A: Api>(resp: &ResponseKind, out: &mut Vec<i16>) {
    if let Some(r) = A::peek(resp) {
        A::errors(r, out);
    }
}

fn throttle_of<A: Api>(resp: &mut ResponseKind, ms: i32) {
    if let Some(r) = A::peek_mut(resp) {
        A::throttle(r, ms);
    }
}

fn metered_of<A: Api>(len: usize, resp: Option<&ResponseKind>) -> Option<(QuotaKind, u64)> {
    A::metered(len, resp.and_then(A::peek))
}

fn serve<A: Api>(cx: Cx<'_>, body: RequestKind) -> BoxFuture<'_, Result<Started, ApiError>> {
    Box::pin(async move {
        let Some(mut req) = A::unwrap(body) else {
            return Err(ApiError(format!("{} got another API's body", A::NAME)));
        };
        let denied = if cx.broker.authorizer.enabled() {
            match A::authorize(cx, &mut req) {
                Verdict::Proceed(d) => Some(d),
                Verdict::Answer(resp) => {
                    return Ok(Started {
                        resp: Some(A::wrap(resp)),
                        later: None,
                    })
                }
            }
        } else {
            None
        };
        let put_back = |resp: &mut A::Response, denied: Option<A::Denied>| {
            if let Some(d) = denied {
                A::deny(cx, resp, d);
            }
        };
        Ok(match A::handle(cx, req).await {
            Handled::Now(mut resp) => {
                put_back(&mut resp, denied);
                Started {
                    resp: Some(A::wrap(resp)),
                    later: None,
                }
            }
            Handled::Silent => Started {
                resp: None,
                later: None,
            },
            Handled::After(mut resp, wait) => {
                if let Some(resp) = resp.as_mut() {
                    put_back(resp, denied);
                }
                let later = wait(resp);
                Started {
                    resp: None,
                    later: Some(Box::pin(async move { later.await.map(A::wrap) })),
                }
            }
        })
    })
}

/// Every served API, looked up by key.
pub struct Registry {
    rows: Vec<Row>,
    /// Index into `rows` by api key.
    by_key: Vec<Option<usize>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.rows).finish()
    }
}

impl Registry {
    /// The registry of `families`' rows.
    ///
    /// # Panics
    /// An API registered twice (a programming error, caught by the tests).
    pub fn new(families: &[&[Row]]) -> Self {
        let mut rows: Vec<Row> = families.iter().flat_map(|f| f.iter().copied()).collect();
        rows.sort_by_key(|r| r.key as i16);
        let top = rows.iter().map(|r| r.key as i16).max().unwrap_or(0);
        let mut by_key = vec![None; usize::try_from(top).unwrap_or(0) + 1];
        for (i, r) in rows.iter().enumerate() {
            let slot = &mut by_key[usize::try_from(r.key as i16).unwrap_or(0)];
            assert!(slot.is_none(), "{} registered twice", r.name);
            *slot = Some(i);
        }
        Self { rows, by_key }
    }

    /// The row of `key`, if weir serves it.
    pub fn get(&self, key: ApiKey) -> Option<&Row> {
        let i = usize::try_from(key as i16).ok()?;
        self.by_key.get(i).copied().flatten().map(|i| &self.rows[i])
    }

    /// Every row, by api key.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }
}
