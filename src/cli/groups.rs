//! `weir groups`: consumer-group administration over the Kafka protocol,
//! against any Kafka-compatible broker. Requests about a group go to its
//! coordinator (FindCoordinator); offsets come from partition leaders.
//! Exit codes as `weir topics`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use bytes::Buf;
use kafka_protocol::messages::consumer_protocol_assignment::ConsumerProtocolAssignment;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, DeleteGroupsRequest,
    DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest,
    FindCoordinatorResponse, GroupId, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use serde_json::{json, Value};

use super::args::{GroupsAction, GroupsArgs, ResetTo};
use super::client::{error_name, Conn, Dialer};
use super::topics::{
    by_leader, check, dialer, list_offsets, metadata, run_tool, table, Failure, Leaders,
};

/// `weir groups`.
pub fn main(args: GroupsArgs) -> ExitCode {
    run_tool("groups", run(args))
}

fn gid(g: &str) -> GroupId {
    GroupId(StrBytes::from_string(g.to_string()))
}

/// A connection to `group`'s coordinator.
async fn coordinator(c: &mut Conn, d: &Dialer, group: &str) -> Result<Conn, Failure> {
    let v = c.version(ApiKey::FindCoordinator, (0, 3)).await?;
    let req = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(group.to_string()))
        .with_key_type(0);
    let r: FindCoordinatorResponse = c.call(ApiKey::FindCoordinator, v, &req).await?;
    check(r.error_code, group, r.error_message.as_ref())?;
    Ok(d.connect(&format!("{}:{}", r.host, r.port)).await?)
}

struct Described {
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<Member>,
}

/// A member: id, client id, host, assigned partitions by topic.
type Member = (String, String, String, Assignment);
/// Partitions by topic.
type Assignment = BTreeMap<String, Vec<i32>>;

async fn describe_group(cc: &mut Conn, group: &str) -> Result<Described, Failure> {
    let v = cc.version(ApiKey::DescribeGroups, (0, 5)).await?;
    let req = DescribeGroupsRequest::default().with_groups(vec![gid(group)]);
    let r: DescribeGroupsResponse = cc.call(ApiKey::DescribeGroups, v, &req).await?;
    let g = r
        .groups
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("empty DescribeGroups answer"))?;
    check(g.error_code, group, g.error_message.as_ref())?;
    // A group of the consumer protocol (KIP-848) is Dead to DescribeGroups.
    if g.group_state.as_str() == "Dead" {
        if let Some(d) = describe_consumer_group(cc, group).await? {
            return Ok(d);
        }
    }
    let consumer = g.protocol_type.as_str() == "consumer";
    let members = g
        .members
        .iter()
        .map(|m| {
            let assigned = if consumer {
                decode_assignment(m.member_assignment.clone())
            } else {
                BTreeMap::new()
            };
            (
                m.member_id.to_string(),
                m.client_id.to_string(),
                m.client_host.to_string(),
                assigned,
            )
        })
        .collect();
    Ok(Described {
        state: g.group_state.to_string(),
        protocol_type: g.protocol_type.to_string(),
        protocol: g.protocol_data.to_string(),
        members,
    })
}

/// A consumer-protocol group (KIP-848) by ConsumerGroupDescribe, where the
/// broker serves it and knows the group: the state, `consumer` and the
/// assignor as protocol, the members with their assignments.
async fn describe_consumer_group(cc: &mut Conn, group: &str) -> Result<Option<Described>, Failure> {
    let Ok(v) = cc.version(ApiKey::ConsumerGroupDescribe, (0, 1)).await else {
        return Ok(None);
    };
    let req = ConsumerGroupDescribeRequest::default().with_group_ids(vec![gid(group)]);
    let r: ConsumerGroupDescribeResponse = cc.call(ApiKey::ConsumerGroupDescribe, v, &req).await?;
    let Some(g) = r.groups.into_iter().next().filter(|g| g.error_code == 0) else {
        return Ok(None);
    };
    let members = g
        .members
        .iter()
        .map(|m| {
            let assigned: Assignment = m
                .assignment
                .topic_partitions
                .iter()
                .map(|tp| (tp.topic_name.0.to_string(), tp.partitions.clone()))
                .collect();
            (
                m.member_id.to_string(),
                m.client_id.to_string(),
                m.client_host.to_string(),
                assigned,
            )
        })
        .collect();
    Ok(Some(Described {
        state: g.group_state.to_string(),
        protocol_type: "consumer".into(),
        protocol: g.assignor_name.to_string(),
        members,
    }))
}

/// A consumer member's assignment (a version, then the partitions by
/// topic); empty when it does not decode.
fn decode_assignment(mut b: bytes::Bytes) -> Assignment {
    if b.remaining() < 2 {
        return BTreeMap::new();
    }
    let version = b.get_i16();
    match ConsumerProtocolAssignment::decode(&mut b, version.clamp(0, 3)) {
        Ok(a) => a
            .assigned_partitions
            .into_iter()
            .map(|tp| (tp.topic.0.to_string(), tp.partitions))
            .collect(),
        Err(_) => BTreeMap::new(),
    }
}

/// The group's committed offsets: topic → partition → offset.
async fn committed(
    cc: &mut Conn,
    group: &str,
) -> Result<BTreeMap<String, BTreeMap<i32, i64>>, Failure> {
    let v = cc.version(ApiKey::OffsetFetch, (1, 7)).await?;
    let req = OffsetFetchRequest::default()
        .with_group_id(gid(group))
        .with_topics(if v >= 2 { None } else { Some(Vec::new()) });
    let r: OffsetFetchResponse = cc.call(ApiKey::OffsetFetch, v, &req).await?;
    check(r.error_code, group, None)?;
    let mut out: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
    for t in r.topics {
        for p in t.partitions {
            if p.error_code == 0 && p.committed_offset >= 0 {
                out.entry(t.name.0.to_string())
                    .or_default()
                    .insert(p.partition_index, p.committed_offset);
            }
        }
    }
    Ok(out)
}

/// End (or `ts`) offsets of every partition of `topics`, from their leaders.
async fn offsets_of(
    c: &mut Conn,
    d: &Dialer,
    topics: &[&str],
    ts: i64,
) -> Result<BTreeMap<String, BTreeMap<i32, i64>>, Failure> {
    let md = metadata(c, Some(topics)).await?;
    let mut leaders = Leaders::new(&md, d);
    let mut out: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
    for t in &md.topics {
        let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
        if t.error_code != 0 {
            continue;
        }
        for (leader, parts) in by_leader(t) {
            let lc = leaders.get(leader).await?;
            for (p, o) in list_offsets(lc, &name, &parts, ts).await? {
                out.entry(name.clone()).or_default().insert(p, o?);
            }
        }
    }
    Ok(out)
}

async fn run(args: GroupsArgs) -> Result<Value, Failure> {
    let json = args.client.json;
    let dial = dialer(&args.client)?;
    let mut c = dial.connect_any(&args.client.bootstrap).await?;
    match args.action {
        GroupsAction::List => {
            // Each broker coordinates its own groups: ask them all.
            let md = metadata(&mut c, Some(&[])).await?;
            let mut leaders = Leaders::new(&md, &dial);
            let mut groups = BTreeMap::new();
            for b in &md.brokers {
                let bc = leaders.get(b.node_id.0).await?;
                let v = bc.version(ApiKey::ListGroups, (0, 5)).await?;
                let r: ListGroupsResponse = bc
                    .call(ApiKey::ListGroups, v, &ListGroupsRequest::default())
                    .await?;
                check(r.error_code, "ListGroups", None)?;
                for g in r.groups {
                    // Before v5 every group is a classic one.
                    let kind = if v >= 5 && !g.group_type.is_empty() {
                        g.group_type.to_string()
                    } else {
                        "classic".to_string()
                    };
                    groups.insert(
                        g.group_id.0.to_string(),
                        (g.group_state.to_string(), g.protocol_type.to_string(), kind),
                    );
                }
            }
            if json {
                return Ok(Value::Array(
                    groups
                        .iter()
                        .map(|(g, (s, t, k))| {
                            json!({"group": g, "state": s, "protocol_type": t, "group_type": k})
                        })
                        .collect(),
                ));
            }
            let rows: Vec<Vec<String>> = groups
                .into_iter()
                .map(|(g, (s, t, k))| vec![g, s, k, t])
                .collect();
            Ok(Value::String(table(
                &["GROUP", "STATE", "TYPE", "PROTOCOL TYPE"],
                &rows,
            )))
        }
        GroupsAction::Describe { group } => {
            let mut cc = coordinator(&mut c, &dial, &group).await?;
            let d = describe_group(&mut cc, &group).await?;
            let offsets = committed(&mut cc, &group).await?;
            let topics: Vec<&str> = offsets.keys().map(String::as_str).collect();
            let ends = if topics.is_empty() {
                BTreeMap::new()
            } else {
                offsets_of(&mut c, &dial, &topics, -1).await?
            };
            let owner = |t: &str, p: i32| {
                d.members
                    .iter()
                    .find(|m| m.3.get(t).is_some_and(|ps| ps.contains(&p)))
                    .map(|m| m.0.clone())
            };
            let mut rows = Vec::new();
            for (t, parts) in &offsets {
                for (p, o) in parts {
                    let end = ends.get(t).and_then(|e| e.get(p)).copied();
                    rows.push((
                        t.clone(),
                        *p,
                        *o,
                        end,
                        end.map(|e| (e - o).max(0)),
                        owner(t, *p),
                    ));
                }
            }
            if json {
                return Ok(json!({
                    "group": group,
                    "state": d.state,
                    "protocol_type": d.protocol_type,
                    "protocol": d.protocol,
                    "members": d.members.iter().map(|(id, client, host, a)| json!({
                        "member_id": id, "client_id": client, "host": host, "assignment": a,
                    })).collect::<Vec<_>>(),
                    "offsets": rows.iter().map(|(t, p, o, e, l, m)| json!({
                        "topic": t, "partition": p, "committed": o, "end": e, "lag": l, "member": m,
                    })).collect::<Vec<_>>(),
                }));
            }
            let protocol = [d.protocol_type.as_str(), d.protocol.as_str()]
                .iter()
                .filter(|p| !p.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("/");
            let mut out = format!(
                "group {group}  state {}  protocol {}  members {}",
                d.state,
                if protocol.is_empty() { "-" } else { &protocol },
                d.members.len()
            );
            if !d.members.is_empty() {
                let mrows: Vec<Vec<String>> = d
                    .members
                    .iter()
                    .map(|(id, client, host, a)| {
                        let assigned = a
                            .iter()
                            .map(|(t, ps)| {
                                format!(
                                    "{t}:{}",
                                    ps.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(" ");
                        vec![id.clone(), client.clone(), host.clone(), assigned]
                    })
                    .collect();
                out.push_str("\n\n");
                out.push_str(&table(
                    &["MEMBER", "CLIENT-ID", "HOST", "ASSIGNMENT"],
                    &mrows,
                ));
            }
            let dash = |v: Option<i64>| v.map_or_else(|| "-".into(), |v| v.to_string());
            let orows: Vec<Vec<String>> = rows
                .into_iter()
                .map(|(t, p, o, e, l, m)| {
                    vec![
                        t,
                        p.to_string(),
                        o.to_string(),
                        dash(e),
                        dash(l),
                        m.unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            out.push_str("\n\n");
            out.push_str(&table(
                &["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "MEMBER"],
                &orows,
            ));
            Ok(Value::String(out))
        }
        GroupsAction::ResetOffsets {
            group,
            topic,
            to,
            dry_run,
        } => reset(&mut c, &dial, &group, &topic, &to, dry_run, json).await,
        GroupsAction::Delete { group } => {
            let mut cc = coordinator(&mut c, &dial, &group).await?;
            let v = cc.version(ApiKey::DeleteGroups, (0, 2)).await?;
            let req = DeleteGroupsRequest::default().with_groups_names(vec![gid(&group)]);
            let r: DeleteGroupsResponse = cc.call(ApiKey::DeleteGroups, v, &req).await?;
            for res in &r.results {
                check(res.error_code, &group, None)?;
            }
            Ok(if json {
                json!({"group": group, "deleted": true})
            } else {
                Value::String(format!("deleted group {group}"))
            })
        }
    }
}

async fn reset(
    c: &mut Conn,
    dial: &Dialer,
    group: &str,
    topic: &str,
    to: &ResetTo,
    dry_run: bool,
    json: bool,
) -> Result<Value, Failure> {
    let at = match &to.to_datetime {
        Some(s) => Some(parse_time(s).map_err(Failure::Usage)?),
        None => None,
    };
    let mut cc = coordinator(c, dial, group).await?;
    let d = describe_group(&mut cc, group).await?;
    if !d.members.is_empty() {
        return Err(Failure::Refused(format!(
            "{group}: the group has {} member(s) (state {}); offsets can only be reset while it has none: stop its consumers first",
            d.members.len(),
            d.state
        )));
    }
    let start = offsets_of(c, dial, &[topic], -2).await?;
    let end = offsets_of(c, dial, &[topic], -1).await?;
    let (Some(start), Some(end)) = (start.get(topic), end.get(topic)) else {
        return Err(Failure::Refused(format!(
            "{topic}: {}",
            error_name(kafka_protocol::ResponseError::UnknownTopicOrPartition.code())
        )));
    };
    let current = committed(&mut cc, group)
        .await?
        .remove(topic)
        .unwrap_or_default();
    let by_time = match at {
        Some(ms) => Some(
            offsets_of(c, dial, &[topic], ms)
                .await?
                .remove(topic)
                .unwrap_or_default(),
        ),
        None => None,
    };
    let mut plan = Vec::new();
    for (&p, &hi) in end {
        let lo = start.get(&p).copied().unwrap_or(0);
        let cur = current.get(&p).copied();
        let target = if to.to_earliest {
            lo
        } else if to.to_latest {
            hi
        } else if let Some(o) = to.to_offset {
            o
        } else if let Some(n) = to.shift_by {
            cur.unwrap_or(lo).saturating_add(n)
        } else if let Some(t) = &by_time {
            // No record at or after the time: the end.
            t.get(&p).copied().filter(|o| *o >= 0).unwrap_or(hi)
        } else {
            return Err(Failure::Usage("say where to: --to-earliest, --to-latest, --to-offset, --to-datetime or --shift-by".into()));
        };
        plan.push((p, cur, target.clamp(lo, hi)));
    }
    if !dry_run {
        let v = cc.version(ApiKey::OffsetCommit, (2, 8)).await?;
        let req = OffsetCommitRequest::default()
            .with_group_id(gid(group))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::from_static_str(""))
            .with_retention_time_ms(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(
                    plan.iter()
                        .map(|(p, _, o)| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(*p)
                                .with_committed_offset(*o)
                                .with_committed_leader_epoch(-1)
                        })
                        .collect(),
                )]);
        let r: OffsetCommitResponse = cc.call(ApiKey::OffsetCommit, v, &req).await?;
        for t in &r.topics {
            for p in &t.partitions {
                check(
                    p.error_code,
                    &format!("{group} {topic}/{}", p.partition_index),
                    None,
                )?;
            }
        }
    }
    if json {
        return Ok(json!({
            "group": group,
            "topic": topic,
            "committed": !dry_run,
            "partitions": plan.iter().map(|(p, cur, new)| json!({
                "partition": p, "previous": cur, "new": new,
            })).collect::<Vec<_>>(),
        }));
    }
    let rows: Vec<Vec<String>> = plan
        .iter()
        .map(|(p, cur, new)| {
            vec![
                topic.to_string(),
                p.to_string(),
                cur.map_or_else(|| "-".into(), |c| c.to_string()),
                new.to_string(),
            ]
        })
        .collect();
    let mut out = table(&["TOPIC", "PARTITION", "PREVIOUS", "NEW"], &rows);
    out.push_str(if dry_run {
        "\n(dry run: nothing committed)"
    } else {
        "\ncommitted"
    });
    Ok(Value::String(out))
}

/// Milliseconds since the epoch of an ISO 8601 time:
/// `YYYY-MM-DDTHH:MM[:SS[.fff]]` then `Z` or `±HH:MM` (UTC when absent).
fn parse_time(s: &str) -> Result<i64, String> {
    let bad = || format!("{s:?} is not a time like 2026-12-06T10:00:00Z");
    let (date, rest) = s.split_once(['T', ' ']).ok_or_else(bad)?;
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let [y, mo, day] = d[..] else {
        return Err(bad());
    };
    let (clock, offset_min) = if let Some(c) = rest.strip_suffix('Z') {
        (c, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (c, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (h, m) = off[1..].split_once(':').ok_or_else(bad)?;
        let h: i64 = h.parse().map_err(|_| bad())?;
        let m: i64 = m.parse().map_err(|_| bad())?;
        (c, sign * (h * 60 + m))
    } else {
        (rest, 0)
    };
    let parts: Vec<&str> = clock.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return Err(bad());
    }
    let h: i64 = parts[0].parse().map_err(|_| bad())?;
    let mi: i64 = parts[1].parse().map_err(|_| bad())?;
    let (sec, ms) = match parts.get(2) {
        Some(x) => match x.split_once('.') {
            Some((s, f)) => {
                let frac = format!("{f:0<3}");
                (
                    s.parse::<i64>().map_err(|_| bad())?,
                    frac[..3].parse::<i64>().map_err(|_| bad())?,
                )
            }
            None => (x.parse::<i64>().map_err(|_| bad())?, 0),
        },
        None => (0, 0),
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    // Days from the civil date (proleptic Gregorian).
    let (yy, mm) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 24 + h) * 60 + mi - offset_min) * 60_000 + sec * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times_parse_as_iso_8601() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time("2026-12-06T10:00:00Z"), Ok(1_796_551_200_000));
        assert_eq!(
            parse_time("2026-12-06T11:00:00+01:00"),
            Ok(1_796_551_200_000)
        );
        assert_eq!(
            parse_time("2026-12-06T09:30:00.250-00:30"),
            Ok(1_796_551_200_250)
        );
        assert_eq!(parse_time("2000-02-29T00:00"), Ok(951_782_400_000));
        for bad in [
            "yesterday",
            "2026-13-01T00:00Z",
            "2026-12-06",
            "2026-12-06T25:00Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
