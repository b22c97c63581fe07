//! Request handlers: one file per API family, each a thin translation from a
//! decoded request to calls on the broker state and back to a response.
//!
//! Per-partition failures are Kafka error codes inside a full response; an
//! `Err` from [`handle`] means the connection must be closed.

pub mod admin;
pub mod authz;
pub mod commits;
pub mod errors;
pub mod fetch;
pub mod groups;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod producer_ids;
pub mod security;
pub mod versions;

use std::sync::Arc;

use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use crate::security::Session;

/// A request that cannot be answered; the connection is closed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ApiError(pub String);

/// Handles one request. `Ok(None)` means no response is sent (acks=0).
///
/// # Errors
/// A request kind this broker does not serve (the version table should have
/// refused it before).
pub async fn handle(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    session: &Session,
    key: ApiKey,
    body: RequestKind,
) -> Result<Option<ResponseKind>, ApiError> {
    Ok(start(broker, header, session, key, body)
        .await?
        .finish()
        .await)
}

/// A handled request whose response may still wait for an fsync.
pub struct Started {
    pub resp: Option<ResponseKind>,
    pub flush: Option<produce::Flush>,
}

impl Started {
    /// Waits for the fsyncs the response depends on and returns it.
    pub async fn finish(self) -> Option<ResponseKind> {
        let Started { mut resp, flush } = self;
        if let Some(flush) = flush {
            let produce = match resp.as_mut() {
                Some(ResponseKind::Produce(r)) => Some(r),
                _ => None,
            };
            flush.wait(produce).await;
        }
        resp
    }
}

/// Handles one request up to its wait for durability: a produce's records
/// are appended when this returns, and [`Started::finish`] waits for their
/// fsync. Other requests are complete.
///
/// # Errors
/// As [`handle`].
pub async fn start(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    session: &Session,
    key: ApiKey,
    body: RequestKind,
) -> Result<Started, ApiError> {
    let v = header.request_api_version;
    let (body, post) = match authz::guard(broker, session, body, v) {
        authz::Guard::Respond(resp) => {
            return Ok(Started {
                resp: Some(*resp),
                flush: None,
            })
        }
        authz::Guard::Proceed(body, post) => (*body, post),
    };
    let mut flush = None;
    let resp = dispatch(broker, header, session, key, body, &mut flush).await?;
    let resp = resp.map(|mut resp| {
        authz::finish(broker, session, &mut resp, post);
        advertise(broker, session, &mut resp);
        resp
    });
    Ok(Started { resp, flush })
}

/// Tells a client the address of the listener it came in on.
fn advertise(broker: &Broker, session: &Session, resp: &mut ResponseKind) {
    if session.listener == 0 {
        return;
    }
    let Some(l) = broker.config.listeners.get(session.listener) else {
        return;
    };
    let host = sb(l.advertised_host.clone());
    match resp {
        ResponseKind::Metadata(r) => {
            for b in &mut r.brokers {
                b.host = host.clone();
                b.port = l.advertised_port;
            }
        }
        ResponseKind::DescribeCluster(r) => {
            for b in &mut r.brokers {
                b.host = host.clone();
                b.port = l.advertised_port;
            }
        }
        ResponseKind::FindCoordinator(r) => {
            if r.port >= 0 && r.error_code == 0 && r.coordinators.is_empty() {
                r.host = host.clone();
                r.port = l.advertised_port;
            }
            for c in &mut r.coordinators {
                if c.error_code == 0 {
                    c.host = host.clone();
                    c.port = l.advertised_port;
                }
            }
        }
        _ => {}
    }
}

async fn dispatch(
    broker: &Arc<Broker>,
    header: &RequestHeader,
    session: &Session,
    key: ApiKey,
    body: RequestKind,
    flush: &mut Option<produce::Flush>,
) -> Result<Option<ResponseKind>, ApiError> {
    let v = header.request_api_version;
    let peer = session.peer;
    let resp = match body {
        RequestKind::ApiVersions(r) => ResponseKind::ApiVersions(versions::handle(&r, v)),
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata::metadata(broker, r, v)),
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(metadata::describe_cluster(broker, &r))
        }
        RequestKind::Produce(r) => {
            let (resp, wait) = produce::handle(broker, r, v).await;
            *flush = wait;
            match resp {
                Some(resp) => ResponseKind::Produce(resp),
                None => return Ok(None),
            }
        }
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch::handle(broker, r, v).await),
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(offsets::list_offsets(broker, r, v))
        }
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(offsets::delete_records(broker, r).await)
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(producer_ids::handle(broker, &r))
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(admin::create_topics(broker, r, v))
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(admin::delete_topics(broker, r, v))
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(admin::create_partitions(broker, r))
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(admin::describe_configs(broker, r, v))
        }
        RequestKind::AlterConfigs(r) => ResponseKind::AlterConfigs(admin::alter_configs(broker, r)),
        RequestKind::IncrementalAlterConfigs(r) => {
            ResponseKind::IncrementalAlterConfigs(admin::incremental_alter_configs(broker, r))
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(groups::find_coordinator(broker, r, v))
        }
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(groups::join_group(broker, header, peer, r, v).await)
        }
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(groups::sync_group(broker, r).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(groups::heartbeat(broker, &r)),
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(groups::leave_group(broker, &r, v)),
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(groups::list_groups(broker, &r)),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(groups::describe_groups(broker, &r))
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(groups::delete_groups(broker, &r))
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(commits::offset_commit(broker, r).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(commits::offset_fetch(broker, r, v))
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(commits::offset_delete(broker, r))
        }
        // The connection answers these itself; here only out of turn.
        RequestKind::SaslHandshake(_) => ResponseKind::SaslHandshake(
            kafka_protocol::messages::SaslHandshakeResponse::default()
                .with_error_code(errors::ILLEGAL_SASL_STATE),
        ),
        RequestKind::SaslAuthenticate(_) => ResponseKind::SaslAuthenticate(
            kafka_protocol::messages::SaslAuthenticateResponse::default()
                .with_error_code(errors::ILLEGAL_SASL_STATE),
        ),
        RequestKind::CreateAcls(r) => {
            ResponseKind::CreateAcls(security::create_acls(broker, session, r))
        }
        RequestKind::DescribeAcls(r) => {
            ResponseKind::DescribeAcls(security::describe_acls(broker, session, &r))
        }
        RequestKind::DeleteAcls(r) => {
            ResponseKind::DeleteAcls(security::delete_acls(broker, session, r))
        }
        RequestKind::DescribeUserScramCredentials(r) => ResponseKind::DescribeUserScramCredentials(
            security::describe_scram(broker, session, &r),
        ),
        RequestKind::AlterUserScramCredentials(r) => {
            ResponseKind::AlterUserScramCredentials(security::alter_scram(broker, session, r))
        }
        RequestKind::DescribeClientQuotas(r) => {
            ResponseKind::DescribeClientQuotas(security::describe_quotas(broker, session, &r))
        }
        RequestKind::AlterClientQuotas(r) => {
            ResponseKind::AlterClientQuotas(security::alter_quotas(broker, session, r))
        }
        _ => return Err(ApiError(format!("{key:?} is not served"))),
    };
    Ok(Some(resp))
}

/// `StrBytes` from a string.
pub(crate) fn sb(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// `TopicName` from a string.
pub(crate) fn tn(s: impl Into<String>) -> TopicName {
    TopicName(sb(s))
}

/// Every error code in a response (top level, per resource, per
/// partition), for the error metrics.
pub fn response_error_codes(resp: &ResponseKind) -> Vec<i16> {
    let mut codes = Vec::new();
    match resp {
        ResponseKind::Produce(r) => {
            for t in &r.responses {
                codes.extend(t.partition_responses.iter().map(|p| p.error_code));
            }
        }
        ResponseKind::Fetch(r) => {
            codes.push(r.error_code);
            for t in &r.responses {
                codes.extend(t.partitions.iter().map(|p| p.error_code));
            }
        }
        ResponseKind::CreateTopics(r) => codes.extend(r.topics.iter().map(|t| t.error_code)),
        ResponseKind::DeleteTopics(r) => codes.extend(r.responses.iter().map(|t| t.error_code)),
        ResponseKind::ListOffsets(r) => {
            for t in &r.topics {
                codes.extend(t.partitions.iter().map(|p| p.error_code));
            }
        }
        ResponseKind::Metadata(r) => codes.extend(r.topics.iter().map(|t| t.error_code)),
        ResponseKind::ApiVersions(r) => codes.push(r.error_code),
        ResponseKind::DescribeCluster(r) => codes.push(r.error_code),
        ResponseKind::InitProducerId(r) => codes.push(r.error_code),
        ResponseKind::DeleteRecords(r) => {
            for t in &r.topics {
                codes.extend(t.partitions.iter().map(|p| p.error_code));
            }
        }
        ResponseKind::CreatePartitions(r) => codes.extend(r.results.iter().map(|t| t.error_code)),
        ResponseKind::DescribeConfigs(r) => codes.extend(r.results.iter().map(|t| t.error_code)),
        ResponseKind::AlterConfigs(r) => codes.extend(r.responses.iter().map(|t| t.error_code)),
        ResponseKind::IncrementalAlterConfigs(r) => {
            codes.extend(r.responses.iter().map(|t| t.error_code));
        }
        ResponseKind::FindCoordinator(r) => {
            codes.push(r.error_code);
            codes.extend(r.coordinators.iter().map(|c| c.error_code));
        }
        ResponseKind::JoinGroup(r) => codes.push(r.error_code),
        ResponseKind::SyncGroup(r) => codes.push(r.error_code),
        ResponseKind::Heartbeat(r) => codes.push(r.error_code),
        ResponseKind::LeaveGroup(r) => {
            codes.push(r.error_code);
            codes.extend(r.members.iter().map(|m| m.error_code));
        }
        ResponseKind::ListGroups(r) => codes.push(r.error_code),
        ResponseKind::DescribeGroups(r) => codes.extend(r.groups.iter().map(|g| g.error_code)),
        ResponseKind::DeleteGroups(r) => codes.extend(r.results.iter().map(|g| g.error_code)),
        ResponseKind::OffsetCommit(r) => {
            for t in &r.topics {
                codes.extend(t.partitions.iter().map(|p| p.error_code));
            }
        }
        ResponseKind::OffsetFetch(r) => {
            codes.push(r.error_code);
            for t in &r.topics {
                codes.extend(t.partitions.iter().map(|p| p.error_code));
            }
            for g in &r.groups {
                codes.push(g.error_code);
                for t in &g.topics {
                    codes.extend(t.partitions.iter().map(|p| p.error_code));
                }
            }
        }
        ResponseKind::OffsetDelete(r) => {
            codes.push(r.error_code);
            for t in &r.topics {
                codes.extend(t.partitions.iter().map(|p| p.error_code));
            }
        }
        _ => {}
    }
    codes.retain(|&c| c != 0);
    codes
}
