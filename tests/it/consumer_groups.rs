//! The consumer group protocol (KIP-848) with librdkafka's
//! `group.protocol=consumer`: members joining and leaving while the others
//! keep consuming, a member killed -9 (session timeout), a regex
//! subscription picking up a new topic, a static member's restart, the
//! group's state across a broker kill -9, the rules between classic and
//! consumer groups, and the online upgrade and downgrade of a group with
//! members.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::messages::{
    ApiKey, ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, GroupId, JoinGroupRequest,
    JoinGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use serde_json::Value;

use crate::common::*;
use crate::groups::{
    group_consumer, produce_n, spawn_child_consumer, split_evenly, wait_for, Member, Seen,
};

const CONSUMER: &[(&str, &str)] = &[("group.protocol", "consumer")];

/// How many distinct records (partition, offset) the members read.
fn distinct(seen: &Seen) -> usize {
    let s = seen.lock().unwrap();
    s.iter()
        .map(|(_, p, o)| (*p, *o))
        .collect::<HashSet<_>>()
        .len()
}

/// One group as `/api/groups` shows it.
fn group_json(http: std::net::SocketAddr, id: &str) -> Option<Value> {
    let (status, _, body) = http_get(http, "/api/groups", &[]);
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == id)
        .cloned()
}

fn describe(addr: std::net::SocketAddr, id: &str) -> ConsumerGroupDescribeResponse {
    raw_request(
        addr,
        ApiKey::ConsumerGroupDescribe,
        0,
        &ConsumerGroupDescribeRequest::default()
            .with_group_ids(vec![GroupId(StrBytes::from_string(id.into()))]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_and_leave_and_those_that_keep_partitions_never_stop() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(&bs, "kip848", 6, &[]).await;
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let a = Member::start(0, &bs, "g848", "kip848", CONSUMER, Arc::clone(&seen));
    tokio::task::block_in_place(|| {
        wait_for("a holds every partition", Duration::from_secs(30), || {
            a.assigned().len() == 6
        })
    });
    produce_n(&bs, "kip848", 300).await;
    tokio::task::block_in_place(|| {
        wait_for("a reads them", Duration::from_secs(30), || {
            seen.lock().unwrap().len() >= 300
        })
    });

    // Two more members join, one at a time. The member already there only
    // ever gives partitions up: what it keeps it holds throughout.
    let mut members = vec![a];
    for id in 1..3 {
        let before = members[0].assigned();
        members.push(Member::start(
            id,
            &bs,
            "g848",
            "kip848",
            CONSUMER,
            Arc::clone(&seen),
        ));
        let mut samples = Vec::new();
        let refs: Vec<&Member> = members.iter().collect();
        tokio::task::block_in_place(|| {
            wait_for("an even split", Duration::from_secs(30), || {
                samples.push(refs[0].assigned());
                split_evenly(&refs, 6)
            })
        });
        let kept = members[0].assigned();
        assert!(kept.is_subset(&before), "{before:?} → {kept:?}");
        for s in &samples {
            assert!(
                kept.is_subset(s),
                "a stopped consuming {kept:?} at some point: {s:?}"
            );
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    produce_n(&bs, "kip848", 300).await;
    tokio::task::block_in_place(|| {
        wait_for("every record", Duration::from_secs(30), || {
            distinct(&seen) >= 600
        })
    });

    let g = group_json(b.http_addr(), "g848").expect("the group is listed");
    assert_eq!(g["type"], "consumer");
    assert_eq!(g["state"], "Stable");
    let epoch = g["group_epoch"].as_i64().unwrap();
    assert_eq!(epoch, 3, "one epoch per join: {g}");
    let members_json = g["members"].as_array().unwrap();
    assert_eq!(members_json.len(), 3);
    assert!(
        members_json.iter().all(|m| m["member_epoch"] == epoch),
        "{g}"
    );
    let d = describe(b.kafka_addr(), "g848");
    assert_eq!(d.groups[0].error_code, 0);
    assert_eq!(d.groups[0].group_epoch, 3);
    assert_eq!(d.groups[0].assignor_name.as_str(), "uniform");
    assert_eq!(d.groups[0].members.len(), 3);
    // `weir groups describe` shows it too.
    let w = tokio::task::block_in_place(|| {
        crate::tools::weir_json(&bs, &["groups", "describe", "g848"])
    });
    assert_eq!(w["state"], "Stable", "{w}");
    assert_eq!(w["protocol_type"], "consumer");
    assert_eq!(w["protocol"], "uniform");
    let held: usize = w["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["assignment"]["kip848"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(held, 6, "{w}");

    // The last one leaves: its partitions go to the other two.
    let leaver = members.pop().unwrap();
    leaver.close();
    let refs: Vec<&Member> = members.iter().collect();
    tokio::task::block_in_place(|| {
        wait_for("two share the six", Duration::from_secs(30), || {
            split_evenly(&refs, 6)
        })
    });
    let g = group_json(b.http_addr(), "g848").unwrap();
    assert_eq!(g["members"].as_array().unwrap().len(), 2);
    for m in members {
        m.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_is_removed_at_its_session_timeout() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(&bs, "crash848", 4, &[]).await;
    let mut child = spawn_child_consumer(&bs, "crash848", "consumer");
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let a = Member::start(0, &bs, "crash848", "crash848", CONSUMER, seen);
    let http = b.http_addr();
    tokio::task::block_in_place(|| {
        wait_for("the child to hold half", Duration::from_secs(30), || {
            a.assigned().len() == 2
                && group_json(http, "crash848")
                    .is_some_and(|g| g["members"].as_array().unwrap().len() == 2)
        })
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| {
        wait_for("a takes over", Duration::from_secs(30), || {
            a.assigned().len() == 4
        })
    });
    let took = killed_at.elapsed();
    // The test broker's session timeout is 6 s.
    assert!(
        took >= Duration::from_secs(4),
        "the session is honoured ({took:?})"
    );
    let g = group_json(http, "crash848").unwrap();
    assert_eq!(g["members"].as_array().unwrap().len(), 1, "{g}");
    a.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regex_subscription_picks_up_a_new_topic() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(&bs, "rx-one", 2, &[]).await;
    create_topic(&bs, "other", 1, &[]).await;
    let c = group_consumer(&bs, "rx848", CONSUMER);
    c.subscribe(&["^rx-.*"]).unwrap();
    let assigned = |c: &BaseConsumer| -> BTreeSet<(String, i32)> {
        c.assignment()
            .map(|t| {
                t.elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect()
            })
            .unwrap_or_default()
    };
    tokio::task::block_in_place(|| {
        wait_for("rx-one's partitions", Duration::from_secs(30), || {
            let _ = c.poll(Duration::from_millis(100));
            assigned(&c).len() == 2
        })
    });
    create_topic(&bs, "rx-two", 1, &[]).await;
    produce_n(&bs, "rx-two", 10).await;
    let mut got = 0;
    tokio::task::block_in_place(|| {
        wait_for("rx-two's records", Duration::from_secs(30), || {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                assert_eq!(m.topic(), "rx-two");
                got += 1;
            }
            got == 10
        })
    });
    let all = assigned(&c);
    assert!(all.contains(&("rx-two".to_string(), 0)), "{all:?}");
    assert!(!all.iter().any(|(t, _)| t == "other"), "{all:?}");
    let d = describe(b.kafka_addr(), "rx848");
    // librdkafka sends its regex subscriptions as one alternation.
    assert_eq!(
        d.groups[0].members[0].subscribed_topic_regex.as_deref(),
        Some("(^rx-.*)")
    );
}

/// Consumes until `n` records came, committing each; returns them.
fn consume_n(c: &BaseConsumer, n: usize) -> Vec<(i32, i64)> {
    let mut out = Vec::new();
    wait_for("records", Duration::from_secs(30), || {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            out.push((m.partition(), m.offset()));
            c.commit_message(&m, CommitMode::Sync).unwrap();
        }
        out.len() >= n
    });
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_restarts_with_its_partitions_and_offsets() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(&bs, "static848", 3, &[]).await;
    produce_n(&bs, "static848", 90).await;
    let stat = [
        ("group.protocol", "consumer"),
        ("group.instance.id", "inst-1"),
    ];
    let c = group_consumer(&bs, "static848", &stat);
    c.subscribe(&["static848"]).unwrap();
    let first = tokio::task::block_in_place(|| consume_n(&c, 90));
    assert_eq!(first.len(), 90);
    let before = group_json(b.http_addr(), "static848").unwrap();
    let epoch = before["group_epoch"].as_i64().unwrap();
    drop(c);
    // The instance is kept for its next incarnation.
    let left = group_json(b.http_addr(), "static848").unwrap();
    assert_eq!(left["members"][0]["member_epoch"], -2, "{left}");

    produce_n(&bs, "static848", 30).await;
    let c = group_consumer(&bs, "static848", &stat);
    c.subscribe(&["static848"]).unwrap();
    let second = tokio::task::block_in_place(|| consume_n(&c, 30));
    // Only the new records: the committed offsets were kept.
    let first: HashSet<(i32, i64)> = first.into_iter().collect();
    assert!(second.iter().all(|r| !first.contains(r)), "{second:?}");
    let after = group_json(b.http_addr(), "static848").unwrap();
    assert_eq!(
        after["group_epoch"].as_i64().unwrap(),
        epoch,
        "no new epoch: {after}"
    );
    assert_eq!(after["members"].as_array().unwrap().len(), 1);
    assert_eq!(after["members"][0]["group_instance_id"], "inst-1");
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_survives_a_broker_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = ChildBroker::start(
        dir.path(),
        &["--group-consumer-heartbeat-interval-ms", "500"],
    );
    let bs = child.bootstrap();
    create_topic(&bs, "dur848", 2, &[]).await;
    produce_n(&bs, "dur848", 20).await;
    let c = group_consumer(&bs, "dur848", CONSUMER);
    c.subscribe(&["dur848"]).unwrap();
    let first: HashSet<(i32, i64)> = tokio::task::block_in_place(|| consume_n(&c, 20))
        .into_iter()
        .collect();
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", child.http_port).parse().unwrap();
    let before = group_json(http, "dur848").unwrap();
    let (port, http_port) = (child.port, child.http_port);
    child.kill9();
    let child = ChildBroker::start_on(
        dir.path(),
        port,
        http_port,
        &["--group-consumer-heartbeat-interval-ms", "500"],
    );
    // Before the member is heard from again, the group is there as it was.
    let after = group_json(http, "dur848").expect("the group is back");
    assert_eq!(after["type"], "consumer");
    assert_eq!(after["group_epoch"], before["group_epoch"]);
    assert_eq!(
        after["members"][0]["member_id"],
        before["members"][0]["member_id"]
    );
    assert_eq!(
        after["members"][0]["assigned"],
        before["members"][0]["assigned"]
    );
    // The member goes on at its epoch and reads only what is new.
    produce_n(&child.bootstrap(), "dur848", 10).await;
    let more = tokio::task::block_in_place(|| consume_n(&c, 10));
    assert!(more.iter().all(|r| !first.contains(r)), "{more:?}");
    let now = group_json(http, "dur848").unwrap();
    assert_eq!(
        now["group_epoch"], before["group_epoch"],
        "no rejoin: {now}"
    );
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_and_consumer_groups_side_by_side_and_the_upgrade_of_an_empty_group() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(&bs, "mixed", 2, &[]).await;
    produce_n(&bs, "mixed", 40).await;
    // A classic group reads half and commits, then leaves.
    let classic = group_consumer(&bs, "upgrade", &[]);
    classic.subscribe(&["mixed"]).unwrap();
    let mut got = 0;
    tokio::task::block_in_place(|| {
        wait_for("twenty records", Duration::from_secs(30), || {
            if let Some(Ok(m)) = classic.poll(Duration::from_millis(100)) {
                if m.offset() < 10 {
                    classic.commit_message(&m, CommitMode::Sync).unwrap();
                    got += 1;
                }
            }
            got == 20
        })
    });
    // Beside it, a consumer group on the same topic.
    let other = group_consumer(&bs, "beside", CONSUMER);
    other.subscribe(&["mixed"]).unwrap();
    let n = tokio::task::block_in_place(|| consume_n(&other, 40)).len();
    assert_eq!(n, 40);
    drop(classic);
    // The empty classic group becomes a consumer group, offsets kept.
    let upgraded = group_consumer(&bs, "upgrade", CONSUMER);
    upgraded.subscribe(&["mixed"]).unwrap();
    let rest = tokio::task::block_in_place(|| consume_n(&upgraded, 20));
    assert!(rest.iter().all(|(_, o)| *o >= 10), "{rest:?}");
    let g = group_json(b.http_addr(), "upgrade").unwrap();
    assert_eq!(g["type"], "consumer");
    // A JoinGroup without the consumer protocol is refused by a consumer
    // group with members.
    let join: JoinGroupResponse = raw_request(
        b.kafka_addr(),
        ApiKey::JoinGroup,
        5,
        &JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("upgrade")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(StrBytes::from_static_str(""))
            .with_protocol_type(StrBytes::from_static_str("consumer")),
    );
    assert_eq!(join.error_code, 23, "INCONSISTENT_GROUP_PROTOCOL");
    // ListGroups filters by type.
    let list: kafka_protocol::messages::ListGroupsResponse = raw_request(
        b.kafka_addr(),
        ApiKey::ListGroups,
        5,
        &kafka_protocol::messages::ListGroupsRequest::default()
            .with_types_filter(vec![StrBytes::from_static_str("consumer")]),
    );
    let ids: BTreeSet<String> = list.groups.iter().map(|g| g.group_id.to_string()).collect();
    assert_eq!(
        ids,
        BTreeSet::from(["beside".to_string(), "upgrade".to_string()])
    );
    drop(upgraded);
    drop(other);
}

/// Members of the group as `/api/groups` shows them: (protocol, epoch).
fn member_protocols(http: std::net::SocketAddr, id: &str) -> Vec<(String, i64)> {
    group_json(http, id)
        .and_then(|g| g["members"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|m| {
            (
                m["member_protocol"].as_str().unwrap_or("").to_string(),
                m["member_epoch"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classic_group_with_members_is_upgraded_online_and_downgraded_when_its_last_consumer_member_leaves(
) {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(&bs, "migrate", 6, &[]).await;
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    const COOPERATIVE: &[(&str, &str)] = &[("partition.assignment.strategy", "cooperative-sticky")];
    let a1 = Member::start(
        0,
        &bs,
        "migrating",
        "migrate",
        COOPERATIVE,
        Arc::clone(&seen),
    );
    let a2 = Member::start(
        1,
        &bs,
        "migrating",
        "migrate",
        COOPERATIVE,
        Arc::clone(&seen),
    );
    tokio::task::block_in_place(|| {
        wait_for("two classic members split", Duration::from_secs(40), || {
            split_evenly(&[&a1, &a2], 6)
        })
    });
    produce_n(&bs, "migrate", 300).await;
    let g = group_json(b.http_addr(), "migrating").expect("listed");
    assert_eq!(g["type"], "classic", "{g}");

    // A consumer-protocol member joins the classic group with members: it
    // is upgraded online, the classic members stay and give up a
    // partition each, and never stop consuming the partitions they keep.
    let (before1, before2) = (a1.assigned(), a2.assigned());
    let c = Member::start(2, &bs, "migrating", "migrate", CONSUMER, Arc::clone(&seen));
    let mut samples = Vec::new();
    tokio::task::block_in_place(|| {
        wait_for("three members split", Duration::from_secs(40), || {
            samples.push((a1.assigned(), a2.assigned()));
            split_evenly(&[&a1, &a2, &c], 6) && c.assigned().len() == 2
        })
    });
    let (kept1, kept2) = (a1.assigned(), a2.assigned());
    assert!(kept1.is_subset(&before1), "{before1:?} → {kept1:?}");
    assert!(kept2.is_subset(&before2), "{before2:?} → {kept2:?}");
    for (s1, s2) in &samples {
        assert!(
            kept1.is_subset(s1) && kept2.is_subset(s2),
            "a classic member stopped consuming what it keeps: {samples:?}"
        );
    }
    let g = group_json(b.http_addr(), "migrating").expect("listed");
    assert_eq!(g["type"], "consumer", "{g}");
    let mut protocols: Vec<String> = member_protocols(b.http_addr(), "migrating")
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    protocols.sort();
    assert_eq!(protocols, ["classic", "classic", "consumer"]);
    let d: ConsumerGroupDescribeResponse = raw_request(
        b.kafka_addr(),
        ApiKey::ConsumerGroupDescribe,
        1,
        &ConsumerGroupDescribeRequest::default()
            .with_group_ids(vec![GroupId(StrBytes::from_static_str("migrating"))]),
    );
    let mut types: Vec<i8> = d.groups[0].members.iter().map(|m| m.member_type).collect();
    types.sort_unstable();
    assert_eq!(types, [0, 0, 1], "member types in ConsumerGroupDescribe");
    produce_n(&bs, "migrate", 300).await;
    tokio::task::block_in_place(|| {
        wait_for(
            "every record read in the mixed group",
            Duration::from_secs(40),
            || distinct(&seen) >= 600,
        )
    });

    // The consumer-protocol member leaves: the group goes back to being a
    // classic group, whose rebalance hands its partitions to the others.
    c.close();
    tokio::task::block_in_place(|| {
        wait_for(
            "the classic members split again",
            Duration::from_secs(40),
            || {
                split_evenly(&[&a1, &a2], 6)
                    && group_json(b.http_addr(), "migrating")
                        .is_some_and(|g| g["type"] == "classic")
            },
        )
    });
    produce_n(&bs, "migrate", 300).await;
    tokio::task::block_in_place(|| {
        wait_for(
            "every record read after the downgrade",
            Duration::from_secs(40),
            || distinct(&seen) >= 900,
        )
    });
    a1.close();
    a2.close();
}
