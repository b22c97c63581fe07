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
