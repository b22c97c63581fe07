use super::classic::{ClassicJoin, CONSUMER_PROTOCOL_TYPE};
use super::*;

fn topology(topics: &[(&str, i32)]) -> Topology {
    topics.iter().map(|(t, n)| ((*t).to_string(), *n)).collect()
}

fn join(member: &str, topics: &[&str]) -> Heartbeat {
    Heartbeat {
        group_id: "g".into(),
        member_id: member.into(),
        member_epoch: 0,
        rebalance_timeout_ms: 30_000,
        topics: Some(topics.iter().map(|t| (*t).to_string()).collect()),
        owned: Some(Parts::new()),
        ..Default::default()
    }
}

fn beat(member: &str, epoch: i32, owned: &Parts) -> Heartbeat {
    Heartbeat {
        group_id: "g".into(),
        member_id: member.into(),
        member_epoch: epoch,
        rebalance_timeout_ms: -1,
        owned: Some(owned.clone()),
        ..Default::default()
    }
}

/// A client as librdkafka behaves: it owns what it was last given and
/// heartbeats with it.
struct Client {
    id: String,
    epoch: i32,
    owned: Parts,
}

impl Client {
    fn apply(&mut self, a: &Answer) {
        assert_eq!(a.error, NONE, "{a:?}");
        self.epoch = a.member_epoch;
        if let Some(p) = &a.assignment {
            self.owned = p.clone();
        }
    }
}

fn run(gs: &Groups, topo: &Topology, c: &mut Client, now: Instant) -> Answer {
    let out = gs.heartbeat(beat(&c.id, c.epoch, &c.owned), 1, topo, || None, now);
    c.apply(&out.answer);
    out.answer
}

fn no_partition_owned_twice(clients: &[Client]) {
    let mut seen = BTreeSet::new();
    for c in clients {
        for (t, ps) in &c.owned {
            for p in ps {
                assert!(seen.insert((t.clone(), *p)), "{t}-{p} owned twice");
            }
        }
    }
}

#[test]
fn a_second_member_gets_partitions_only_after_the_first_revokes_them() {
    let gs = Groups::new(Settings::default());
    let topo = topology(&[("t", 4)]);
    let now = Instant::now();
    let a = gs
        .heartbeat(join("a", &["t"]), 1, &topo, || None, now)
        .answer;
    assert_eq!(a.member_epoch, 1);
    assert_eq!(count(a.assignment.as_ref().unwrap()), 4);
    let mut ca = Client {
        id: "a".into(),
        epoch: 0,
        owned: Parts::new(),
    };
    ca.apply(&a);
    let b = gs
        .heartbeat(join("b", &["t"]), 1, &topo, || None, now)
        .answer;
    let mut cb = Client {
        id: "b".into(),
        epoch: 0,
        owned: Parts::new(),
    };
    cb.apply(&b);
    // b is at the new epoch but its partitions are still a's.
    assert_eq!(cb.epoch, 2);
    assert_eq!(count(&cb.owned), 0);
    // a is told to give two up, keeping its epoch.
    let r = run(&gs, &topo, &mut ca, now);
    assert_eq!(r.member_epoch, 1);
    assert_eq!(count(&ca.owned), 2);
    // Its next heartbeat shows it kept two only: it moves to epoch 2.
    let r = run(&gs, &topo, &mut ca, now);
    assert_eq!(r.member_epoch, 2);
    run(&gs, &topo, &mut cb, now);
    assert_eq!(count(&cb.owned), 2);
    let clients = [ca, cb];
    no_partition_owned_twice(&clients);
    let g = gs.describe("g", || None).unwrap();
    assert_eq!(g.state_name(), "Stable");
}

#[test]
fn members_that_keep_partitions_never_lose_them_and_none_is_owned_twice() {
    let gs = Groups::new(Settings::default());
    let topo = topology(&[("t", 12), ("u", 5)]);
    let now = Instant::now();
    let mut clients: Vec<Client> = Vec::new();
    for i in 0..6 {
        let id = format!("m{i}");
        let a = gs
            .heartbeat(join(&id, &["t", "u"]), 1, &topo, || None, now)
            .answer;
        let mut c = Client {
            id,
            epoch: 0,
            owned: Parts::new(),
        };
        c.apply(&a);
        clients.push(c);
        for _ in 0..4 {
            for c in clients.iter_mut() {
                run(&gs, &topo, c, now);
            }
            no_partition_owned_twice(&clients);
        }
    }
    let g = gs.describe("g", || None).unwrap();
    assert_eq!(g.state_name(), "Stable", "{g:?}");
    let loads: Vec<usize> = clients.iter().map(|c| count(&c.owned)).collect();
    assert_eq!(loads.iter().sum::<usize>(), 17);
    assert!(
        loads.iter().max().unwrap() - loads.iter().min().unwrap() <= 1,
        "{loads:?}"
    );
}

#[test]
fn a_member_past_its_session_is_removed_and_its_partitions_move() {
    let settings = Settings {
        session_timeout: Duration::from_secs(10),
        ..Settings::default()
    };
    let gs = Groups::new(settings);
    let topo = topology(&[("t", 2)]);
    let t0 = Instant::now();
    let mut a = Client {
        id: "a".into(),
        epoch: 0,
        owned: Parts::new(),
    };
    let mut b = Client {
        id: "b".into(),
        epoch: 0,
        owned: Parts::new(),
    };
    a.apply(
        &gs.heartbeat(join("a", &["t"]), 1, &topo, || None, t0)
            .answer,
    );
    b.apply(
        &gs.heartbeat(join("b", &["t"]), 1, &topo, || None, t0)
            .answer,
    );
    for _ in 0..3 {
        run(&gs, &topo, &mut a, t0);
        run(&gs, &topo, &mut b, t0);
    }
    assert_eq!((count(&a.owned), count(&b.owned)), (1, 1));
    let later = t0 + Duration::from_secs(8);
    run(&gs, &topo, &mut a, later);
    let records = gs.tick(t0 + Duration::from_secs(11));
    assert_eq!(records.len(), 1);
    run(&gs, &topo, &mut a, t0 + Duration::from_secs(11));
    assert_eq!(count(&a.owned), 2);
    let gone = gs.heartbeat(beat("b", b.epoch, &b.owned), 1, &topo, || None, later);
    assert_eq!(gone.answer.error, UNKNOWN_MEMBER_ID);
}

#[test]
fn a_static_member_comes_back_with_its_partitions_and_epoch() {
    let gs = Groups::new(Settings::default());
    let topo = topology(&[("t", 3)]);
    let now = Instant::now();
    let mut hb = join("a1", &["t"]);
    hb.instance_id = Some("i".into());
    let first = gs.heartbeat(hb.clone(), 1, &topo, || None, now).answer;
    let owned = first.assignment.clone().unwrap();
    // While it is in the group, another process with the instance id is
    // refused.
    let mut dup = hb.clone();
    dup.member_id = "a2".into();
    assert_eq!(
        gs.heartbeat(dup.clone(), 1, &topo, || None, now)
            .answer
            .error,
        UNRELEASED_INSTANCE_ID
    );
    let mut leave = beat("a1", LEAVE_STATIC_EPOCH, &owned);
    leave.instance_id = Some("i".into());
    let left = gs.heartbeat(leave, 1, &topo, || None, now);
    assert_eq!(left.answer.member_epoch, LEAVE_STATIC_EPOCH);
    let back = gs.heartbeat(dup, 1, &topo, || None, now).answer;
    assert_eq!(back.error, NONE);
    assert_eq!(back.member_epoch, first.member_epoch);
    assert_eq!(back.assignment, Some(owned));
    let g = gs.describe("g", || None).unwrap();
    assert_eq!(g.epoch, 1, "no rebalance for a static member's restart");
}

#[test]
fn stale_and_fenced_epochs_are_answered_as_kafka_does() {
    let gs = Groups::new(Settings::default());
    let topo = topology(&[("t", 1)]);
    let now = Instant::now();
    let a = gs
        .heartbeat(join("a", &["t"]), 1, &topo, || None, now)
        .answer;
    assert_eq!(a.member_epoch, 1);
    let ahead = gs.heartbeat(beat("a", 7, &Parts::new()), 1, &topo, || None, now);
    assert_eq!(ahead.answer.error, FENCED_MEMBER_EPOCH);
    assert_eq!(gs.check_member("g", "a", 1, || None), Some(NONE));
    assert_eq!(
        gs.check_member("g", "a", 0, || None),
        Some(STALE_MEMBER_EPOCH)
    );
    assert_eq!(
        gs.check_member("g", "x", 1, || None),
        Some(UNKNOWN_MEMBER_ID)
    );
    assert_eq!(
        gs.check_member("g", "", -1, || None),
        Some(UNKNOWN_MEMBER_ID)
    );
    assert_eq!(gs.check_member("h", "", -1, || None), None);
    let bad = Heartbeat {
        regex: Some("(".into()),
        ..join("b", &[])
    };
    let mut bad = bad;
    bad.topics = None;
    assert_eq!(
        gs.heartbeat(bad, 1, &topo, || None, now).answer.error,
        INVALID_REGULAR_EXPRESSION
    );
    let mut odd = join("c", &["t"]);
    odd.assignor = Some("sticky".into());
    assert_eq!(
        gs.heartbeat(odd, 1, &topo, || None, now).answer.error,
        UNSUPPORTED_ASSIGNOR
    );
}

#[test]
fn a_regex_subscription_picks_up_a_new_topic() {
    let gs = Groups::new(Settings::default());
    let now = Instant::now();
    let mut hb = join("a", &[]);
    hb.topics = None;
    hb.regex = Some("orders-.*".into());
    let topo = topology(&[("orders-1", 2), ("other", 3)]);
    let mut a = Client {
        id: "a".into(),
        epoch: 0,
        owned: Parts::new(),
    };
    a.apply(&gs.heartbeat(hb, 1, &topo, || None, now).answer);
    assert_eq!(a.owned.keys().collect::<Vec<_>>(), vec!["orders-1"]);
    let topo = topology(&[("orders-1", 2), ("orders-2", 1), ("other", 3)]);
    run(&gs, &topo, &mut a, now);
    assert_eq!(count(&a.owned), 3);
    assert_eq!(a.epoch, 2);
}

#[test]
fn the_state_survives_a_record_round_trip() {
    let gs = Groups::new(Settings::default());
    let topo = topology(&[("t", 3)]);
    let now = Instant::now();
    let mut hb = join("a", &["t"]);
    hb.instance_id = Some("i".into());
    hb.regex = Some("x.*".into());
    let out = gs.heartbeat(hb, 1, &topo, || None, now);
    let out2 = gs.heartbeat(join("b", &["t"]), 1, &topo, || None, now);
    let (_, Some(rec)) = out2.record.clone().unwrap() else {
        panic!("no record")
    };
    assert!(seq_of(&rec) > seq_of(out.record.unwrap().1.as_ref().unwrap()));
    let restored = Groups::new(Settings::default());
    let g = restored.describe("g", || Some(rec.clone())).unwrap();
    let orig = gs.describe("g", || None).unwrap();
    assert_eq!(record::encode(&g), record::encode(&orig));
    assert_eq!(g.owners, orig.owners);
    // A record cut anywhere, or with junk after it, is refused.
    for cut in 0..rec.len() {
        assert!(
            record::decode("g", &rec.slice(..cut), now).is_none(),
            "{cut}"
        );
    }
}

fn classic_join_req<'a>(member: &'a str, protocols: &'a [(String, Bytes)]) -> ClassicJoin<'a> {
    ClassicJoin {
        group_id: "g",
        member_id: member,
        instance_id: None,
        client_id: "c",
        client_host: "/127.0.0.1",
        session_timeout_ms: 6_000,
        rebalance_timeout_ms: 10_000,
        protocol_type: CONSUMER_PROTOCOL_TYPE,
        protocols,
        require_known_member_id: true,
    }
}

/// A version 0 subscription to topic `t`.
fn subscription_to_t() -> Bytes {
    Bytes::from_static(&[0, 0, 0, 0, 0, 1, 0, 1, b't', 0xff, 0xff, 0xff, 0xff])
}

#[test]
fn a_classic_member_joins_a_consumer_group_and_both_survive_a_record_round_trip() {
    let gs = Groups::new(Settings::default());
    let topo = topology(&[("t", 4)]);
    let now = Instant::now();
    let mut a = Client {
        id: "a".into(),
        epoch: 0,
        owned: Parts::new(),
    };
    a.apply(
        &gs.heartbeat(join("a", &["t"]), 1, &topo, || None, now)
            .answer,
    );
    assert_eq!(count(&a.owned), 4);
    let protocols = vec![("range".to_string(), subscription_to_t())];
    // Not a consumer group: the classic coordinator serves it.
    let other = ClassicJoin {
        group_id: "h",
        ..classic_join_req("", &protocols)
    };
    assert!(gs.classic_join(&other, &topo, || None, now).is_none());
    // A new dynamic member is asked for its member id first.
    let (j, rec) = gs
        .classic_join(&classic_join_req("", &protocols), &topo, || None, now)
        .unwrap();
    assert_eq!(j.error, crate::protocol::errors::MEMBER_ID_REQUIRED);
    assert!(rec.is_none());
    let id = j.member_id;
    let (j, rec) = gs
        .classic_join(&classic_join_req(&id, &protocols), &topo, || None, now)
        .unwrap();
    assert_eq!((j.error, j.generation), (NONE, 2), "{j:?}");
    assert_eq!(j.protocol_name.as_deref(), Some("range"));
    let (_, Some(rec)) = rec.expect("a record") else {
        panic!("no state")
    };
    // Its partitions are still the consumer member's: it has none yet,
    // and its heartbeat says to wait (not to rejoin) until they are free.
    let s = gs
        .classic_sync("g", (&id, None), 2, (None, None), || None, now)
        .unwrap();
    assert_eq!(embedded::assignment(&s.assignment), Some(Parts::new()));
    assert_eq!(
        gs.classic_heartbeat("g", &id, None, 2, || None, now),
        Some(NONE)
    );
    assert_eq!(
        gs.classic_heartbeat("g", &id, None, 1, || None, now),
        Some(crate::protocol::errors::ILLEGAL_GENERATION)
    );
    // The record holds the classic member's protocols and session.
    let restored = Groups::new(Settings::default());
    let g = restored.describe("g", || Some(rec.clone())).unwrap();
    let m = &g.members[&id];
    let c = m.classic.as_ref().expect("a classic member");
    assert_eq!(
        (c.session_timeout_ms, c.protocols.clone()),
        (6_000, protocols.clone())
    );
    assert!(g.members["a"].classic.is_none());
    // The consumer member gives two partitions up; the classic one is
    // then told to rejoin, and its join hands them over.
    run(&gs, &topo, &mut a, now);
    run(&gs, &topo, &mut a, now);
    assert_eq!(count(&a.owned), 2);
    assert_eq!(
        gs.classic_heartbeat("g", &id, None, 2, || None, now),
        Some(crate::protocol::errors::REBALANCE_IN_PROGRESS)
    );
    let (j, _) = gs
        .classic_join(&classic_join_req(&id, &protocols), &topo, || None, now)
        .unwrap();
    assert_eq!(j.generation, 2);
    let s = gs
        .classic_sync("g", (&id, None), 2, (None, Some("range")), || None, now)
        .unwrap();
    let got = embedded::assignment(&s.assignment).unwrap();
    assert_eq!(count(&got), 2);
    assert!(!got["t"].iter().any(|p| a.owned["t"].contains(p)));
    // The consumer member times out: only the classic member is left,
    // and the group is handed over to become classic again.
    let later = now + Duration::from_secs(50);
    assert_eq!(
        gs.classic_heartbeat("g", &id, None, 2, || None, later),
        Some(NONE)
    );
    let records = gs.tick(later);
    assert_eq!(records.len(), 1);
    let g = gs.take_if_all_classic("g").expect("all classic");
    assert_eq!(g.members.len(), 1);
    assert!(!gs.exists("g", || Some(rec.clone())), "not loaded again");
}
