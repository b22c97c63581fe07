//! Authorization of requests, kept out of the handlers: before a request is
//! handled, the parts its principal may not touch are taken out of it; after,
//! they are put back into the response with Kafka's error codes. A request
//! denied as a whole is answered here.
//!
//! The operation each API needs is Kafka's (docs/security.md has the table).

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::errors::{
    CLUSTER_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED, TOPIC_AUTHORIZATION_FAILED,
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED, UNKNOWN_TOPIC_OR_PARTITION,
};
use crate::broker::Broker;
use crate::security::acl::{Operation, ResourceType};
use crate::security::Session;

/// The name of the cluster resource.
pub const CLUSTER: &str = "kafka-cluster";

/// What to do with a request.
pub enum Guard {
    /// Handle the (possibly reduced) request, then apply the [`Post`].
    Proceed(Box<RequestKind>, Post),
    /// Answer with this response without handling.
    Respond(Box<ResponseKind>),
}

/// Metadata topics the principal may not describe.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Hidden {
    /// None can be in the response.
    Nothing,
    /// All topics were asked for: leave them out.
    LeaveOut,
    /// Asked for by id: answer TOPIC_AUTHORIZATION_FAILED without the name.
    Refuse,
}

/// Denied parts to put back into the response.
#[derive(Default)]
pub enum Post {
    #[default]
    Nothing,
    Produce(Vec<(TopicName, Vec<i32>, i16)>),
    Fetch(Vec<(TopicName, Uuid, Vec<i32>)>),
    ListOffsets(Vec<(TopicName, Vec<i32>)>),
    /// Denied names, and what to do with topics the principal may not
    /// describe.
    Metadata(Vec<(TopicName, i16)>, Hidden),
    OffsetCommit(Vec<(TopicName, Vec<i32>)>),
    /// Denied groups (v8), and per group whether all its topics were asked
    /// for (undescribable ones are then left out, not reported).
    OffsetFetch(Vec<GroupId>, Vec<bool>),
    DeleteRecords(Vec<(TopicName, Vec<i32>)>),
    CreateTopics(Vec<TopicName>),
    DeleteTopics(Vec<(Option<TopicName>, Uuid)>),
    CreatePartitions(Vec<TopicName>),
    DescribeConfigs(Vec<(i8, StrBytes)>),
    AlterConfigs(Vec<(i8, StrBytes)>),
    IncrementalAlterConfigs(Vec<(i8, StrBytes)>),
    DeleteGroups(Vec<GroupId>),
    DescribeGroups(Vec<GroupId>),
    ListGroups,
    FindCoordinator(Vec<StrBytes>, i16),
    OffsetDelete(Vec<(TopicName, Vec<i32>)>),
}

struct Ctx<'a> {
    broker: &'a Broker,
    session: &'a Session,
}

impl Ctx<'_> {
    fn can(&self, op: Operation, rtype: ResourceType, name: &str) -> bool {
        self.broker.authorizer.authorize(
            &self.session.principal,
            self.session.peer.ip(),
            op,
            rtype,
            name,
        )
    }

    fn topic(&self, op: Operation, name: &str) -> bool {
        self.can(op, ResourceType::Topic, name)
    }

    fn group(&self, op: Operation, name: &str) -> bool {
        self.can(op, ResourceType::Group, name)
    }

    fn cluster(&self, op: Operation) -> bool {
        self.can(op, ResourceType::Cluster, CLUSTER)
    }

    /// Whether a missing topic may be created by this principal.
    fn may_create(&self, name: &str) -> bool {
        self.cluster(Operation::Create) || self.topic(Operation::Create, name)
    }
}

/// Splits `items` into those `keep` accepts and those it refuses.
fn split<T>(items: Vec<T>, mut keep: impl FnMut(&T) -> bool) -> (Vec<T>, Vec<T>) {
    items.into_iter().partition(|t| keep(t))
}

fn respond(r: ResponseKind) -> Guard {
    Guard::Respond(Box::new(r))
}

fn proceed(r: RequestKind, p: Post) -> Guard {
    Guard::Proceed(Box::new(r), p)
}

/// Checks `body` for `session`'s principal.
pub fn guard(broker: &Broker, session: &Session, body: RequestKind, version: i16) -> Guard {
    if !broker.authorizer.enabled() {
        return proceed(body, Post::Nothing);
    }
    let cx = Ctx { broker, session };
    use Operation::*;
    match body {
        RequestKind::Produce(mut r) => {
            if let Some(tid) = &r.transactional_id {
                if !cx.can(Write, ResourceType::TransactionalId, tid.as_str()) {
                    let denied = r
                        .topic_data
                        .iter()
                        .map(|t| {
                            let parts = t.partition_data.iter().map(|p| p.index).collect();
                            (t.name.clone(), parts, TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
                        })
                        .collect();
                    r.topic_data.clear();
                    return proceed(RequestKind::Produce(r), Post::Produce(denied));
                }
            }
            let mut denied = Vec::new();
            let (keep, refused) = split(std::mem::take(&mut r.topic_data), |t| {
                cx.topic(Write, t.name.as_str())
            });
            for t in refused {
                let parts = t.partition_data.iter().map(|p| p.index).collect();
                denied.push((t.name, parts, TOPIC_AUTHORIZATION_FAILED));
            }
            // weir creates unknown topics on produce: that needs Create.
            let (keep, missing) = split(keep, |t| {
                broker.topics.get(t.name.as_str()).is_some()
                    || crate::retry::route_for(&broker.topics, t.name.as_str()).is_some()
                    || cx.may_create(t.name.as_str())
            });
            for t in missing {
                let parts = t.partition_data.iter().map(|p| p.index).collect();
                denied.push((t.name, parts, UNKNOWN_TOPIC_OR_PARTITION));
            }
            r.topic_data = keep;
            proceed(RequestKind::Produce(r), Post::Produce(denied))
        }
        RequestKind::Fetch(mut r) => {
            let name_of = |t: &fetch_request::FetchTopic| -> Option<String> {
                if version >= 13 {
                    broker.topics.get_by_id(t.topic_id).map(|x| x.name.clone())
                } else {
                    Some(t.topic.to_string())
                }
            };
            // Unknown ids are left to the handler (UNKNOWN_TOPIC_ID).
            let (keep, refused) = split(std::mem::take(&mut r.topics), |t| {
                name_of(t).is_none_or(|n| cx.topic(Read, &n))
            });
            r.topics = keep;
            let denied = refused
                .into_iter()
                .map(|t| {
                    let parts = t.partitions.iter().map(|p| p.partition).collect();
                    (t.topic, t.topic_id, parts)
                })
                .collect();
            proceed(RequestKind::Fetch(r), Post::Fetch(denied))
        }
        RequestKind::ListOffsets(mut r) => {
            let (keep, refused) = split(std::mem::take(&mut r.topics), |t| {
                cx.topic(Describe, t.name.as_str())
            });
            r.topics = keep;
            let denied = refused
                .into_iter()
                .map(|t| {
                    (
                        t.name,
                        t.partitions.iter().map(|p| p.partition_index).collect(),
                    )
                })
                .collect();
            proceed(RequestKind::ListOffsets(r), Post::ListOffsets(denied))
        }
        RequestKind::Metadata(mut r) => {
            let auto_create = r.allow_auto_topic_creation && broker.config.args.auto_create_topics;
            let all = match &r.topics {
                None => true,
                Some(list) => version == 0 && list.is_empty(),
            };
            match r.topics.take() {
                t if all => {
                    r.topics = t;
                    proceed(
                        RequestKind::Metadata(r),
                        Post::Metadata(Vec::new(), Hidden::LeaveOut),
                    )
                }
                None => proceed(
                    RequestKind::Metadata(r),
                    Post::Metadata(Vec::new(), Hidden::LeaveOut),
                ),
                Some(topics) => {
                    let mut denied = Vec::new();
                    let mut keep = Vec::new();
                    for t in topics {
                        let Some(name) = t.name.clone() else {
                            // By id: resolved, then filtered after.
                            keep.push(t);
                            continue;
                        };
                        let describable = cx.topic(Describe, name.as_str());
                        let creatable = !(auto_create
                            && broker.topics.get(name.as_str()).is_none())
                            || cx.may_create(name.as_str());
                        if !(describable && creatable) {
                            denied.push((name, TOPIC_AUTHORIZATION_FAILED));
                        } else {
                            keep.push(t);
                        }
                    }
                    let by_id = keep.iter().any(|t| t.name.is_none());
                    r.topics = Some(keep);
                    let hidden = if by_id {
                        Hidden::Refuse
                    } else {
                        Hidden::Nothing
                    };
                    proceed(RequestKind::Metadata(r), Post::Metadata(denied, hidden))
                }
            }
        }
        RequestKind::OffsetCommit(mut r) => {
            if !cx.group(Read, r.group_id.as_str()) {
                let denied: Vec<_> = r
                    .topics
                    .iter()
                    .map(|t| {
                        (
                            t.name.clone(),
                            t.partitions.iter().map(|p| p.partition_index).collect(),
                        )
                    })
                    .collect();
                return respond(ResponseKind::OffsetCommit(offset_commit_errors(
                    &denied,
                    GROUP_AUTHORIZATION_FAILED,
                )));
            }
            let (keep, refused) = split(std::mem::take(&mut r.topics), |t| {
                cx.topic(Read, t.name.as_str())
            });
            r.topics = keep;
            let denied = refused
                .into_iter()
                .map(|t| {
                    (
                        t.name,
                        t.partitions.iter().map(|p| p.partition_index).collect(),
                    )
                })
                .collect();
            proceed(RequestKind::OffsetCommit(r), Post::OffsetCommit(denied))
        }
        RequestKind::OffsetFetch(mut r) => {
            if version < 8 {
                if !cx.group(Describe, r.group_id.as_str()) {
                    // v1 has no top-level error: each partition carries it.
                    use offset_fetch_response::*;
                    let topics = r
                        .topics
                        .iter()
                        .flatten()
                        .map(|t| {
                            OffsetFetchResponseTopic::default()
                                .with_name(t.name.clone())
                                .with_partitions(
                                    t.partition_indexes
                                        .iter()
                                        .map(|p| {
                                            OffsetFetchResponsePartition::default()
                                                .with_partition_index(*p)
                                                .with_committed_offset(-1)
                                                .with_error_code(GROUP_AUTHORIZATION_FAILED)
                                        })
                                        .collect(),
                                )
                        })
                        .collect();
                    return respond(ResponseKind::OffsetFetch(
                        OffsetFetchResponse::default()
                            .with_error_code(GROUP_AUTHORIZATION_FAILED)
                            .with_topics(topics),
                    ));
                }
                let all = r.topics.is_none();
                return proceed(
                    RequestKind::OffsetFetch(r),
                    Post::OffsetFetch(Vec::new(), vec![all]),
                );
            }
            let (keep, refused) = split(std::mem::take(&mut r.groups), |g| {
                cx.group(Describe, g.group_id.as_str())
            });
            r.groups = keep;
            let denied = refused.into_iter().map(|g| g.group_id).collect();
            let all = r.groups.iter().map(|g| g.topics.is_none()).collect();
            proceed(RequestKind::OffsetFetch(r), Post::OffsetFetch(denied, all))
        }
        RequestKind::JoinGroup(r) => {
            if cx.group(Read, r.group_id.as_str()) {
                proceed(RequestKind::JoinGroup(r), Post::Nothing)
            } else {
                respond(ResponseKind::JoinGroup(
                    JoinGroupResponse::default()
                        .with_error_code(GROUP_AUTHORIZATION_FAILED)
                        .with_generation_id(-1)
                        .with_member_id(r.member_id),
                ))
            }
        }
        RequestKind::SyncGroup(r) => {
            if cx.group(Read, r.group_id.as_str()) {
                proceed(RequestKind::SyncGroup(r), Post::Nothing)
            } else {
                respond(ResponseKind::SyncGroup(
                    SyncGroupResponse::default().with_error_code(GROUP_AUTHORIZATION_FAILED),
                ))
            }
        }
        RequestKind::Heartbeat(r) => {
            if cx.group(Read, r.group_id.as_str()) {
                proceed(RequestKind::Heartbeat(r), Post::Nothing)
            } else {
                respond(ResponseKind::Heartbeat(
                    HeartbeatResponse::default().with_error_code(GROUP_AUTHORIZATION_FAILED),
                ))
            }
        }
        RequestKind::LeaveGroup(r) => {
            if cx.group(Read, r.group_id.as_str()) {
                proceed(RequestKind::LeaveGroup(r), Post::Nothing)
            } else {
                respond(ResponseKind::LeaveGroup(
                    LeaveGroupResponse::default().with_error_code(GROUP_AUTHORIZATION_FAILED),
                ))
            }
        }
        RequestKind::FindCoordinator(mut r) => {
            let (op_type, err) = if r.key_type == 1 {
                (
                    ResourceType::TransactionalId,
                    TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                )
            } else {
                (ResourceType::Group, GROUP_AUTHORIZATION_FAILED)
            };
            if version < 4 {
                if cx.can(Describe, op_type, r.key.as_str()) {
                    proceed(RequestKind::FindCoordinator(r), Post::Nothing)
                } else {
                    respond(ResponseKind::FindCoordinator(
                        FindCoordinatorResponse::default()
                            .with_error_code(err)
                            .with_node_id(BrokerId(-1))
                            .with_port(-1),
                    ))
                }
            } else {
                let (keep, refused) = split(std::mem::take(&mut r.coordinator_keys), |k| {
                    cx.can(Describe, op_type, k.as_str())
                });
                r.coordinator_keys = keep;
                proceed(
                    RequestKind::FindCoordinator(r),
                    Post::FindCoordinator(refused, err),
                )
            }
        }
        RequestKind::ListGroups(r) => {
            if cx.cluster(Describe) {
                proceed(RequestKind::ListGroups(r), Post::Nothing)
            } else {
                proceed(RequestKind::ListGroups(r), Post::ListGroups)
            }
        }
        RequestKind::DescribeGroups(mut r) => {
            let (keep, refused) = split(std::mem::take(&mut r.groups), |g| {
                cx.group(Describe, g.as_str())
            });
            r.groups = keep;
            proceed(
                RequestKind::DescribeGroups(r),
                Post::DescribeGroups(refused),
            )
        }
        RequestKind::DeleteGroups(mut r) => {
            let (keep, refused) = split(std::mem::take(&mut r.groups_names), |g| {
                cx.group(Delete, g.as_str())
            });
            r.groups_names = keep;
            proceed(RequestKind::DeleteGroups(r), Post::DeleteGroups(refused))
        }
        RequestKind::OffsetDelete(mut r) => {
            if !cx.group(Delete, r.group_id.as_str()) {
                return respond(ResponseKind::OffsetDelete(
                    OffsetDeleteResponse::default().with_error_code(GROUP_AUTHORIZATION_FAILED),
                ));
            }
            let (keep, refused) = split(std::mem::take(&mut r.topics), |t| {
                cx.topic(Read, t.name.as_str())
            });
            r.topics = keep;
            let denied = refused
                .into_iter()
                .map(|t| {
                    (
                        t.name,
                        t.partitions.iter().map(|p| p.partition_index).collect(),
                    )
                })
                .collect();
            proceed(RequestKind::OffsetDelete(r), Post::OffsetDelete(denied))
        }
        RequestKind::CreateTopics(mut r) => {
            let cluster = cx.cluster(Create);
            let (keep, refused) = split(std::mem::take(&mut r.topics), |t| {
                cluster || cx.topic(Create, t.name.as_str())
            });
            r.topics = keep;
            let denied = refused.into_iter().map(|t| t.name).collect();
            proceed(RequestKind::CreateTopics(r), Post::CreateTopics(denied))
        }
        RequestKind::DeleteTopics(mut r) => {
            let name_of = |n: &Option<TopicName>, id: Uuid| {
                n.as_ref()
                    .map(|n| n.to_string())
                    .or_else(|| broker.topics.get_by_id(id).map(|t| t.name.clone()))
            };
            let mut denied = Vec::new();
            let (keep, refused) = split(std::mem::take(&mut r.topic_names), |n| {
                cx.topic(Delete, n.as_str())
            });
            r.topic_names = keep;
            denied.extend(refused.into_iter().map(|n| (Some(n), Uuid::nil())));
            let (keep, refused) = split(std::mem::take(&mut r.topics), |t| {
                name_of(&t.name, t.topic_id).is_none_or(|n| cx.topic(Delete, &n))
            });
            r.topics = keep;
            denied.extend(refused.into_iter().map(|t| (t.name, t.topic_id)));
            proceed(RequestKind::DeleteTopics(r), Post::DeleteTopics(denied))
        }
        RequestKind::CreatePartitions(mut r) => {
            let (keep, refused) = split(std::mem::take(&mut r.topics), |t| {
                cx.topic(Alter, t.name.as_str())
            });
            r.topics = keep;
            let denied = refused.into_iter().map(|t| t.name).collect();
            proceed(
                RequestKind::CreatePartitions(r),
                Post::CreatePartitions(denied),
            )
        }
        RequestKind::DeleteRecords(mut r) => {
            let (keep, refused) = split(std::mem::take(&mut r.topics), |t| {
                cx.topic(Delete, t.name.as_str())
            });
            r.topics = keep;
            let denied = refused
                .into_iter()
                .map(|t| {
                    (
                        t.name,
                        t.partitions.iter().map(|p| p.partition_index).collect(),
                    )
                })
                .collect();
            proceed(RequestKind::DeleteRecords(r), Post::DeleteRecords(denied))
        }
        RequestKind::DescribeConfigs(mut r) => {
            let (keep, refused) = split(std::mem::take(&mut r.resources), |res| {
                config_resource_allowed(&cx, DescribeConfigs, res.resource_type, &res.resource_name)
            });
            r.resources = keep;
            let denied = refused
                .into_iter()
                .map(|res| (res.resource_type, res.resource_name))
                .collect();
            proceed(
                RequestKind::DescribeConfigs(r),
                Post::DescribeConfigs(denied),
            )
        }
        RequestKind::AlterConfigs(mut r) => {
            let (keep, refused) = split(std::mem::take(&mut r.resources), |res| {
                config_resource_allowed(&cx, AlterConfigs, res.resource_type, &res.resource_name)
            });
            r.resources = keep;
            let denied = refused
                .into_iter()
                .map(|res| (res.resource_type, res.resource_name))
                .collect();
            proceed(RequestKind::AlterConfigs(r), Post::AlterConfigs(denied))
        }
        RequestKind::IncrementalAlterConfigs(mut r) => {
            let (keep, refused) = split(std::mem::take(&mut r.resources), |res| {
                config_resource_allowed(&cx, AlterConfigs, res.resource_type, &res.resource_name)
            });
            r.resources = keep;
            let denied = refused
                .into_iter()
                .map(|res| (res.resource_type, res.resource_name))
                .collect();
            proceed(
                RequestKind::IncrementalAlterConfigs(r),
                Post::IncrementalAlterConfigs(denied),
            )
        }
        RequestKind::InitProducerId(r) => {
            let ok = match &r.transactional_id {
                Some(t) => cx.can(Write, ResourceType::TransactionalId, t.as_str()),
                None => {
                    cx.cluster(IdempotentWrite)
                        || broker.authorizer.authorize_any(
                            &session.principal,
                            session.peer.ip(),
                            Write,
                            ResourceType::Topic,
                        )
                }
            };
            if ok {
                proceed(RequestKind::InitProducerId(r), Post::Nothing)
            } else {
                let code = if r.transactional_id.is_some() {
                    TRANSACTIONAL_ID_AUTHORIZATION_FAILED
                } else {
                    CLUSTER_AUTHORIZATION_FAILED
                };
                respond(ResponseKind::InitProducerId(
                    InitProducerIdResponse::default()
                        .with_error_code(code)
                        .with_producer_id(ProducerId(-1))
                        .with_producer_epoch(-1),
                ))
            }
        }
        other => proceed(other, Post::Nothing),
    }
}

/// Config resources: topic (2) by name, broker (4) as the cluster.
fn config_resource_allowed(cx: &Ctx<'_>, op: Operation, rtype: i8, name: &StrBytes) -> bool {
    match rtype {
        2 => cx.topic(op, name.as_str()),
        _ => cx.cluster(op),
    }
}

fn config_error_code(rtype: i8) -> i16 {
    if rtype == 2 {
        TOPIC_AUTHORIZATION_FAILED
    } else {
        CLUSTER_AUTHORIZATION_FAILED
    }
}

fn offset_commit_errors(denied: &[(TopicName, Vec<i32>)], code: i16) -> OffsetCommitResponse {
    let mut resp = OffsetCommitResponse::default();
    append_offset_commit(&mut resp, denied, code);
    resp
}

fn append_offset_commit(
    resp: &mut OffsetCommitResponse,
    denied: &[(TopicName, Vec<i32>)],
    code: i16,
) {
    use offset_commit_response::*;
    for (name, parts) in denied {
        resp.topics.push(
            OffsetCommitResponseTopic::default()
                .with_name(name.clone())
                .with_partitions(
                    parts
                        .iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(*p)
                                .with_error_code(code)
                        })
                        .collect(),
                ),
        );
    }
}

/// Puts the denied parts back into `resp`.
pub fn finish(broker: &Broker, session: &Session, resp: &mut ResponseKind, post: Post) {
    let cx = Ctx { broker, session };
    match (resp, post) {
        (_, Post::Nothing) => {}
        (ResponseKind::Produce(r), Post::Produce(denied)) => {
            use produce_response::*;
            for (name, parts, code) in denied {
                r.responses.push(
                    TopicProduceResponse::default()
                        .with_name(name)
                        .with_partition_responses(
                            parts
                                .into_iter()
                                .map(|p| {
                                    PartitionProduceResponse::default()
                                        .with_index(p)
                                        .with_error_code(code)
                                        .with_base_offset(-1)
                                        .with_log_append_time_ms(-1)
                                        .with_log_start_offset(-1)
                                })
                                .collect(),
                        ),
                );
            }
        }
        (ResponseKind::Fetch(r), Post::Fetch(denied)) => {
            use fetch_response::*;
            for (name, id, parts) in denied {
                r.responses.push(
                    FetchableTopicResponse::default()
                        .with_topic(name)
                        .with_topic_id(id)
                        .with_partitions(
                            parts
                                .into_iter()
                                .map(|p| {
                                    PartitionData::default()
                                        .with_partition_index(p)
                                        .with_error_code(TOPIC_AUTHORIZATION_FAILED)
                                        .with_high_watermark(-1)
                                        .with_last_stable_offset(-1)
                                        .with_log_start_offset(-1)
                                        .with_records(Some(bytes::Bytes::new()))
                                })
                                .collect(),
                        ),
                );
            }
        }
        (ResponseKind::ListOffsets(r), Post::ListOffsets(denied)) => {
            use list_offsets_response::*;
            for (name, parts) in denied {
                r.topics.push(
                    ListOffsetsTopicResponse::default()
                        .with_name(name)
                        .with_partitions(
                            parts
                                .into_iter()
                                .map(|p| {
                                    ListOffsetsPartitionResponse::default()
                                        .with_partition_index(p)
                                        .with_error_code(TOPIC_AUTHORIZATION_FAILED)
                                        .with_timestamp(-1)
                                        .with_offset(-1)
                                })
                                .collect(),
                        ),
                );
            }
        }
        (ResponseKind::Metadata(r), Post::Metadata(denied, hidden)) => {
            let visible = |t: &metadata_response::MetadataResponseTopic| {
                t.name
                    .as_ref()
                    .is_some_and(|n| cx.topic(Operation::Describe, n.as_str()))
            };
            match hidden {
                Hidden::Nothing => {}
                Hidden::LeaveOut => r.topics.retain(visible),
                Hidden::Refuse => {
                    for t in &mut r.topics {
                        if t.name.is_some() && !visible(t) {
                            *t = metadata_response::MetadataResponseTopic::default()
                                .with_topic_id(t.topic_id)
                                .with_error_code(TOPIC_AUTHORIZATION_FAILED);
                        }
                    }
                }
            }
            for (name, code) in denied {
                r.topics.push(
                    metadata_response::MetadataResponseTopic::default()
                        .with_name(Some(name))
                        .with_error_code(code),
                );
            }
        }
        (ResponseKind::OffsetCommit(r), Post::OffsetCommit(denied)) => {
            append_offset_commit(r, &denied, TOPIC_AUTHORIZATION_FAILED);
        }
        (ResponseKind::OffsetFetch(r), Post::OffsetFetch(denied, all)) => {
            let can = |n: &str| cx.topic(Operation::Describe, n);
            // Offsets of topics the principal may not describe: left out
            // when all were asked for, answered with the error when named.
            if all.first().copied().unwrap_or(false) {
                r.topics.retain(|t| can(t.name.as_str()));
            }
            for t in &mut r.topics {
                if !can(t.name.as_str()) {
                    for p in &mut t.partitions {
                        p.error_code = TOPIC_AUTHORIZATION_FAILED;
                        p.committed_offset = -1;
                        p.metadata = None;
                    }
                }
            }
            for (i, g) in r.groups.iter_mut().enumerate() {
                if all.get(i).copied().unwrap_or(false) {
                    g.topics.retain(|t| can(t.name.as_str()));
                }
                for t in &mut g.topics {
                    if !can(t.name.as_str()) {
                        for p in &mut t.partitions {
                            p.error_code = TOPIC_AUTHORIZATION_FAILED;
                            p.committed_offset = -1;
                            p.metadata = None;
                        }
                    }
                }
            }
            for g in denied {
                r.groups.push(
                    offset_fetch_response::OffsetFetchResponseGroup::default()
                        .with_group_id(g)
                        .with_error_code(GROUP_AUTHORIZATION_FAILED),
                );
            }
        }
        (ResponseKind::DeleteRecords(r), Post::DeleteRecords(denied)) => {
            use delete_records_response::*;
            for (name, parts) in denied {
                r.topics.push(
                    DeleteRecordsTopicResult::default()
                        .with_name(name)
                        .with_partitions(
                            parts
                                .into_iter()
                                .map(|p| {
                                    DeleteRecordsPartitionResult::default()
                                        .with_partition_index(p)
                                        .with_low_watermark(-1)
                                        .with_error_code(TOPIC_AUTHORIZATION_FAILED)
                                })
                                .collect(),
                        ),
                );
            }
        }
        (ResponseKind::CreateTopics(r), Post::CreateTopics(denied)) => {
            for name in denied {
                r.topics.push(
                    create_topics_response::CreatableTopicResult::default()
                        .with_name(name)
                        .with_error_code(TOPIC_AUTHORIZATION_FAILED)
                        .with_num_partitions(-1)
                        .with_replication_factor(-1),
                );
            }
        }
        (ResponseKind::DeleteTopics(r), Post::DeleteTopics(denied)) => {
            for (name, id) in denied {
                r.responses.push(
                    delete_topics_response::DeletableTopicResult::default()
                        .with_name(name)
                        .with_topic_id(id)
                        .with_error_code(TOPIC_AUTHORIZATION_FAILED),
                );
            }
        }
        (ResponseKind::CreatePartitions(r), Post::CreatePartitions(denied)) => {
            for name in denied {
                r.results.push(
                    create_partitions_response::CreatePartitionsTopicResult::default()
                        .with_name(name)
                        .with_error_code(TOPIC_AUTHORIZATION_FAILED),
                );
            }
        }
        (ResponseKind::DescribeConfigs(r), Post::DescribeConfigs(denied)) => {
            for (rtype, name) in denied {
                r.results.push(
                    describe_configs_response::DescribeConfigsResult::default()
                        .with_resource_type(rtype)
                        .with_resource_name(name)
                        .with_error_code(config_error_code(rtype)),
                );
            }
        }
        (ResponseKind::AlterConfigs(r), Post::AlterConfigs(denied)) => {
            for (rtype, name) in denied {
                r.responses.push(
                    alter_configs_response::AlterConfigsResourceResponse::default()
                        .with_resource_type(rtype)
                        .with_resource_name(name)
                        .with_error_code(config_error_code(rtype)),
                );
            }
        }
        (ResponseKind::IncrementalAlterConfigs(r), Post::IncrementalAlterConfigs(denied)) => {
            for (rtype, name) in denied {
                r.responses.push(
                    incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                        .with_resource_type(rtype)
                        .with_resource_name(name)
                        .with_error_code(config_error_code(rtype)),
                );
            }
        }
        (ResponseKind::DeleteGroups(r), Post::DeleteGroups(denied)) => {
            for g in denied {
                r.results.push(
                    delete_groups_response::DeletableGroupResult::default()
                        .with_group_id(g)
                        .with_error_code(GROUP_AUTHORIZATION_FAILED),
                );
            }
        }
        (ResponseKind::DescribeGroups(r), Post::DescribeGroups(denied)) => {
            for g in denied {
                r.groups.push(
                    describe_groups_response::DescribedGroup::default()
                        .with_group_id(g)
                        .with_error_code(GROUP_AUTHORIZATION_FAILED),
                );
            }
        }
        (ResponseKind::ListGroups(r), Post::ListGroups) => {
            r.groups
                .retain(|g| cx.group(Operation::Describe, g.group_id.as_str()));
        }
        (ResponseKind::FindCoordinator(r), Post::FindCoordinator(denied, code)) => {
            for key in denied {
                r.coordinators.push(
                    find_coordinator_response::Coordinator::default()
                        .with_key(key)
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(code),
                );
            }
        }
        (ResponseKind::OffsetDelete(r), Post::OffsetDelete(denied)) => {
            use offset_delete_response::*;
            for (name, parts) in denied {
                r.topics.push(
                    OffsetDeleteResponseTopic::default()
                        .with_name(name)
                        .with_partitions(
                            parts
                                .into_iter()
                                .map(|p| {
                                    OffsetDeleteResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_error_code(TOPIC_AUTHORIZATION_FAILED)
                                })
                                .collect(),
                        ),
                );
            }
        }
        _ => {}
    }
}

/// Whether the principal may use the cluster-level security APIs
/// (`Describe` to read ACLs, SCRAM users and quotas' configs, `Alter` or
/// `AlterConfigs` to change them).
pub fn cluster_allowed(broker: &Broker, session: &Session, op: Operation) -> bool {
    if !broker.authorizer.enabled() {
        // Without ACLs, on a broker with SASL users, only super users may
        // read or change users and quotas: anyone else could take over an
        // account. A broker without SASL listeners has no identities to
        // protect and answers everyone, as Kafka does.
        let sasl = broker.config.listeners.iter().any(|l| l.protocol.is_sasl());
        return !sasl || broker.config.args.super_users.contains(&session.principal);
    }
    broker.authorizer.authorize(
        &session.principal,
        session.peer.ip(),
        op,
        ResourceType::Cluster,
        CLUSTER,
    )
}
