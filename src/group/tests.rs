//! Tests of the coordinator's state machine.

use super::*;

fn coordinator() -> (tempfile::TempDir, Coordinator) {
    coordinator_with_delay(0)
}

fn coordinator_with_delay(ms: u64) -> (tempfile::TempDir, Coordinator) {
    let dir = tempfile::tempdir().unwrap();
    let store = OffsetStore::open(dir.path(), false).unwrap();
    let settings = GroupSettings {
        initial_rebalance_delay_ms: ms,
        ..Default::default()
    };
    (dir, Coordinator::new(store, settings))
}

fn join_req(member: &str, instance: Option<&str>) -> JoinRequest {
    JoinRequest {
        group_id: "g".into(),
        member_id: member.into(),
        group_instance_id: instance.map(str::to_string),
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
        require_known_member_id: true,
    }
}

fn now_join(c: &Coordinator, r: JoinRequest, now: Instant) -> JoinOutcome {
    match c.join(r, now) {
        Reply::Now(o) => o,
        Reply::Wait(mut rx, _) => rx.try_recv().expect("join completed"),
    }
}

#[test]
fn a_single_member_joins_syncs_and_becomes_stable() {
    let (_d, c) = coordinator();
    let t = Instant::now();
    let first = now_join(&c, join_req("", None), t);
    assert_eq!(first.error, MEMBER_ID_REQUIRED);
    let joined = now_join(&c, join_req(&first.member_id, None), t);
    assert_eq!(joined.error, NONE);
    assert_eq!(joined.generation, 1);
    assert_eq!(joined.leader, first.member_id);
    assert_eq!(joined.members.len(), 1);
    let assignment = Bytes::from_static(b"a");
    match c.sync(
        "g",
        1,
        &first.member_id,
        None,
        vec![(first.member_id.clone(), assignment.clone())],
    ) {
        Reply::Wait(mut rx, _) => assert_eq!(rx.try_recv().unwrap().assignment, assignment),
        Reply::Now(o) => panic!("unexpected {o:?}"),
    }
    assert_eq!(c.describe("g").unwrap().state, State::Stable);
    assert_eq!(c.heartbeat("g", 1, &first.member_id, None, t), NONE);
    assert_eq!(
        c.heartbeat("g", 0, &first.member_id, None, t),
        ILLEGAL_GENERATION
    );
    assert_eq!(c.heartbeat("g", 1, "nobody", None, t), UNKNOWN_MEMBER_ID);
}

#[test]
fn an_expired_session_removes_the_member_and_rebalances() {
    let (_d, c) = coordinator();
    let t = Instant::now();
    let a = now_join(&c, join_req("", Some("a")), t);
    assert_eq!(a.error, NONE);
    let _ = c.sync("g", a.generation, &a.member_id, Some("a"), vec![]);
    c.tick(t + Duration::from_secs(11));
    let g = c.describe("g").unwrap();
    assert_eq!(g.state, State::Empty);
    assert!(g.members.is_empty());
}

#[test]
fn a_static_member_rejoining_a_stable_group_keeps_its_assignment() {
    let (_d, c) = coordinator();
    let t = Instant::now();
    let a = now_join(&c, join_req("", Some("inst")), t);
    let asg = Bytes::from_static(b"parts");
    let _ = c.sync(
        "g",
        a.generation,
        &a.member_id,
        Some("inst"),
        vec![(a.member_id.clone(), asg.clone())],
    );
    let again = now_join(&c, join_req("", Some("inst")), t);
    assert_eq!(again.error, NONE);
    assert_eq!(again.generation, a.generation, "no new generation");
    assert_ne!(again.member_id, a.member_id);
    match c.sync(
        "g",
        again.generation,
        &again.member_id,
        Some("inst"),
        vec![],
    ) {
        Reply::Now(o) => assert_eq!(o.assignment, asg),
        Reply::Wait(..) => panic!("stable group answers at once"),
    }
    // The old incarnation is fenced.
    assert_eq!(
        c.heartbeat("g", a.generation, &a.member_id, Some("inst"), t),
        FENCED_INSTANCE_ID
    );
}

#[test]
fn protocol_selection_takes_the_common_preferred_one() {
    let (_d, c) = coordinator_with_delay(100);
    let t = Instant::now();
    let mut r1 = join_req("", Some("1"));
    r1.protocols = vec![
        ("cooperative-sticky".into(), Bytes::new()),
        ("range".into(), Bytes::new()),
    ];
    let mut r2 = join_req("", Some("2"));
    r2.protocols = vec![("range".into(), Bytes::new())];
    let (Reply::Wait(mut rx1, _), Reply::Wait(mut rx2, _)) = (c.join(r1, t), c.join(r2, t)) else {
        panic!("both wait for the initial delay");
    };
    assert!(
        rx1.try_recv().is_err(),
        "the initial delay holds the first rebalance"
    );
    c.tick(t + Duration::from_millis(200));
    let o1 = rx1.try_recv().unwrap();
    let o2 = rx2.try_recv().unwrap();
    assert_eq!(o1.protocol_name.as_deref(), Some("range"));
    assert_eq!(o2.generation, o1.generation);
}

#[test]
fn subscription_topics_are_parsed() {
    let mut m = vec![0, 1, 0, 0, 0, 2];
    for t in ["a", "bc"] {
        m.extend_from_slice(&(t.len() as i16).to_be_bytes());
        m.extend_from_slice(t.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(parse_subscription_topics(&m), vec!["a", "bc"]);
    assert!(parse_subscription_topics(&[0, 1, 0x7f, 0, 0, 0]).is_empty());
}

/// A consumer's classic subscription (version 1: topics and the
/// partitions it owns).
fn consumer_subscription(topics: &[&str], owned: &consumer::Parts) -> Bytes {
    use bytes::BufMut;
    use kafka_protocol::messages::consumer_protocol_subscription::{
        ConsumerProtocolSubscription, TopicPartition,
    };
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let s = ConsumerProtocolSubscription::default()
        .with_topics(
            topics
                .iter()
                .map(|t| StrBytes::from_string((*t).to_string()))
                .collect(),
        )
        .with_owned_partitions(
            owned
                .iter()
                .map(|(t, ps)| {
                    TopicPartition::default()
                        .with_topic(TopicName(StrBytes::from_string(t.clone())))
                        .with_partitions(ps.iter().copied().collect())
                })
                .collect(),
        );
    let mut out = bytes::BytesMut::new();
    out.put_i16(1);
    s.encode(&mut out, 1).unwrap();
    out.freeze()
}

fn parts(topic: &str, ps: &[i32]) -> consumer::Parts {
    [(topic.to_string(), ps.iter().copied().collect())].into()
}

fn classic_join(
    c: &Coordinator,
    member: &str,
    owned: &consumer::Parts,
    now: Instant,
) -> JoinOutcome {
    let mut r = join_req(member, None);
    r.protocols = vec![(
        "cooperative-sticky".into(),
        consumer_subscription(&["t"], owned),
    )];
    match c.consumer_join(&r, &[("t".to_string(), 4)].into(), now) {
        interop::Mixed::Answered(o, _) => o,
        interop::Mixed::Classic(_) => now_join(c, r, now),
    }
}

#[test]
fn a_classic_group_is_upgraded_online_and_downgraded_when_its_consumer_member_leaves() {
    use consumer::{embedded, Heartbeat};
    let (_d, c) = coordinator();
    let topo: consumer::Topology = [("t".to_string(), 4)].into();
    let t = Instant::now();
    // A classic group of one member that owns every partition.
    let id = now_join(&c, join_req("", None), t).member_id;
    let a = classic_join(&c, &id, &consumer::Parts::new(), t);
    assert_eq!((a.error, a.generation), (NONE, 1));
    let all = parts("t", &[0, 1, 2, 3]);
    match c.sync(
        "g",
        1,
        &id,
        None,
        vec![(id.clone(), embedded::encode_assignment(&all))],
    ) {
        Reply::Wait(mut rx, _) => assert_eq!(rx.try_recv().unwrap().error, NONE),
        Reply::Now(o) => panic!("{o:?}"),
    }
    // A consumer-protocol member joins: the group is upgraded, and the
    // newcomer waits for the partitions the classic member holds.
    let hb = Heartbeat {
        group_id: "g".into(),
        member_id: "b".into(),
        member_epoch: 0,
        rebalance_timeout_ms: 10_000,
        topics: Some(vec!["t".into()]),
        owned: Some(consumer::Parts::new()),
        ..Default::default()
    };
    let out = c.consumer_heartbeat(hb.clone(), 1, &topo, t);
    assert_eq!(out.answer.error, NONE, "{:?}", out.answer);
    assert_eq!(out.answer.member_epoch, 2);
    assert!(out.record.as_ref().is_some_and(|(_, s)| s.is_some()));
    assert!(c.is_consumer_group("g"));
    assert!(c.describe("g").is_none());
    // The classic member learns of it in a heartbeat and joins again,
    // still owning everything: it is told to give two partitions up.
    assert_eq!(
        c.consumer_group_heartbeat("g", 1, (&id, None), t),
        Some(REBALANCE_IN_PROGRESS)
    );
    let j = classic_join(&c, &id, &all, t);
    assert_eq!((j.error, j.generation, j.leader.as_str()), (NONE, 1, ""));
    assert_eq!(j.protocol_name.as_deref(), Some("cooperative-sticky"));
    let s = c
        .consumer_sync("g", 1, (&id, None), (None, None), t)
        .unwrap();
    let kept = embedded::assignment(&s.assignment).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept["t"].len(), 2);
    // Once it shows it gave them up, it moves to the group's epoch.
    assert_eq!(
        c.consumer_group_heartbeat("g", 1, (&id, None), t),
        Some(REBALANCE_IN_PROGRESS)
    );
    let j = classic_join(&c, &id, &kept, t);
    assert_eq!(j.generation, 2);
    let s = c
        .consumer_sync("g", 2, (&id, None), (None, None), t)
        .unwrap();
    assert_eq!(embedded::assignment(&s.assignment).unwrap(), kept);
    assert_eq!(
        c.consumer_group_heartbeat("g", 2, (&id, None), t),
        Some(NONE)
    );
    // The consumer-protocol member takes the released partitions.
    let beat = Heartbeat {
        member_epoch: 2,
        rebalance_timeout_ms: -1,
        topics: None,
        ..hb.clone()
    };
    let out = c.consumer_heartbeat(beat, 1, &topo, t);
    let got = out.answer.assignment.expect("an assignment");
    assert_eq!(got["t"].len(), 2);
    assert!(got["t"].is_disjoint(&kept["t"]));
    // An old generation's commit is refused as a classic member knows it.
    assert_eq!(c.check_commit("g", 1, &id, None), ILLEGAL_GENERATION);
    assert_eq!(c.check_commit("g", 2, &id, None), NONE);
    // The consumer-protocol member leaves: the group is classic again and
    // its member rejoins through a classic rebalance.
    let leave = Heartbeat {
        member_epoch: consumer::LEAVE_EPOCH,
        ..hb
    };
    let out = c.consumer_heartbeat(leave, 1, &topo, t);
    assert_eq!(out.answer.error, NONE);
    assert_eq!(
        out.record,
        Some(("g".to_string(), None)),
        "the consumer group's end"
    );
    assert!(!c.is_consumer_group("g"));
    let view = c.describe("g").expect("a classic group");
    assert_eq!(view.state, State::PreparingRebalance);
    assert_eq!(c.heartbeat("g", 2, &id, None, t), REBALANCE_IN_PROGRESS);
    let j = classic_join(&c, &id, &kept, t);
    assert_eq!(j.error, NONE);
    assert!(
        j.generation > 2,
        "a generation past the member's epoch: {j:?}"
    );
    assert_eq!(j.leader, id);
}

#[test]
fn a_classic_group_not_of_consumers_is_not_upgraded() {
    let (_d, c) = coordinator();
    let t = Instant::now();
    let mut r = join_req("", None);
    r.protocol_type = "connect".into();
    r.require_known_member_id = false;
    assert_eq!(now_join(&c, r, t).error, NONE);
    let hb = consumer::Heartbeat {
        group_id: "g".into(),
        member_id: "b".into(),
        member_epoch: 0,
        rebalance_timeout_ms: 10_000,
        topics: Some(vec!["t".into()]),
        owned: Some(consumer::Parts::new()),
        ..Default::default()
    };
    let out = c.consumer_heartbeat(hb, 1, &[("t".to_string(), 4)].into(), t);
    assert_eq!(out.answer.error, GROUP_ID_NOT_FOUND);
    assert!(c.describe("g").is_some());
}
