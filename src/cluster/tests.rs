use super::*;

#[test]
fn voters_parse_as_kafka_writes_them() {
    let v = parse_voters("1@127.0.0.1:9093, 2@host-b:9093,3@[::1]:9093").unwrap();
    assert_eq!(v.len(), 3);
    assert_eq!(v[&2], "host-b:9093");
    assert_eq!(v[&3], "[::1]:9093");
    for bad in ["", "1", "x@h:1", "1@h", "1@h:99999", "1@:9", "1@a:1,1@b:2"] {
        assert!(parse_voters(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn registration_is_idempotent() {
    let mut m = Metadata::default();
    let cmd = Command::RegisterBroker {
        id: 1,
        kafka: "a:1".into(),
        http: "a:2".into(),
        listeners: Vec::new(),
        cluster_id: None,
        incarnation: 1,
    };
    assert!(m.apply(&cmd).changed);
    assert!(!m.apply(&cmd).changed);
    assert_eq!(m.brokers.len(), 1);
}

#[test]
fn a_client_gets_the_address_of_the_listener_it_came_in_on() {
    let mut m = Metadata::default();
    m.apply(&Command::RegisterBroker {
        id: 1,
        kafka: "inside:9092".into(),
        http: String::new(),
        listeners: vec!["inside:9092".into(), "outside.example.com:9094".into()],
        cluster_id: None,
        incarnation: 1,
    });
    let b = &m.brokers[&1];
    assert_eq!(b.endpoint(0), ("inside", 9092));
    assert_eq!(b.endpoint(1), ("outside.example.com", 9094));
    // A listener the broker does not have: its first.
    assert_eq!(b.endpoint(2), ("inside", 9092));
    // A registration from before listeners were registered.
    let old: BrokerInfo = serde_json::from_str(r#"{"id":2,"kafka":"h:1","http":"h:2"}"#).unwrap();
    assert_eq!(old.endpoint(1), ("h", 1));
}

fn three_brokers() -> Metadata {
    let mut m = Metadata::default();
    for id in 1..=3 {
        m.apply(&Command::RegisterBroker {
            id,
            kafka: format!("h:{id}"),
            http: String::new(),
            listeners: Vec::new(),
            cluster_id: Some("c".into()),
            incarnation: 1,
        });
    }
    m
}

fn create(m: &mut Metadata, name: &str, partitions: i32, rf: i16) -> Reply {
    m.apply(&Command::CreateTopic {
        name: name.into(),
        id: uuid::Uuid::new_v4(),
        partitions,
        replication_factor: rf,
        configs: Default::default(),
    })
}

#[test]
fn topics_are_placed_with_leaders_spread_over_the_brokers() {
    let mut m = three_brokers();
    assert_eq!(m.cluster_id.as_deref(), Some("c"));
    assert!(create(&mut m, "t", 6, 3).changed);
    let t = &m.topics["t"];
    let mut leaders = std::collections::BTreeMap::new();
    for p in &t.partitions {
        assert_eq!(p.replicas.len(), 3);
        let mut r = p.replicas.clone();
        r.sort_unstable();
        r.dedup();
        assert_eq!(r.len(), 3, "distinct replicas: {p:?}");
        assert_eq!(p.isr, p.replicas);
        assert_eq!(p.leader, p.replicas.first().copied());
        *leaders.entry(p.leader).or_insert(0) += 1;
    }
    assert_eq!(leaders.len(), 3);
    assert!(leaders.values().all(|n| *n == 2), "{leaders:?}");
    // A second create, too many replicas, no partitions: refused.
    assert_eq!(create(&mut m, "t", 1, 1).error, Some(Refusal::TopicExists));
    assert!(matches!(
        create(&mut m, "u", 1, 4).error,
        Some(Refusal::ReplicationFactor {
            asked: 4,
            brokers: 3
        })
    ));
    assert_eq!(
        create(&mut m, "v", 0, 1).error,
        Some(Refusal::InvalidPartitions)
    );
    // Growing keeps the replication factor.
    assert!(
        m.apply(&Command::CreatePartitions {
            name: "t".into(),
            total: 8
        })
        .changed
    );
    assert_eq!(m.topics["t"].partitions.len(), 8);
    assert!(m.topics["t"]
        .partitions
        .iter()
        .all(|p| p.replicas.len() == 3));
}

#[test]
fn a_partition_change_from_a_stale_view_is_refused() {
    let mut m = three_brokers();
    create(&mut m, "t", 1, 3);
    let p = m.partition("t", 0).unwrap().clone();
    let change = |epoch: i32, leader: NodeId| Command::ChangePartition {
        topic: "t".into(),
        partition: 0,
        partition_epoch: epoch,
        leader: Some(leader),
        isr: vec![leader],
    };
    let other = p.replicas[1];
    assert!(m.apply(&change(p.partition_epoch, other)).changed);
    let now = m.partition("t", 0).unwrap();
    assert_eq!(now.leader, Some(other));
    assert_eq!(now.leader_epoch, p.leader_epoch + 1);
    assert_eq!(now.partition_epoch, p.partition_epoch + 1);
    // The same change again carries the old partition epoch.
    assert_eq!(
        m.apply(&change(p.partition_epoch, p.replicas[2])).error,
        Some(Refusal::StaleEpoch)
    );
    // An ISR change alone keeps the leader epoch.
    let e = m.partition("t", 0).unwrap().clone();
    m.apply(&Command::ChangePartition {
        topic: "t".into(),
        partition: 0,
        partition_epoch: e.partition_epoch,
        leader: e.leader,
        isr: e.replicas.clone(),
    });
    assert_eq!(m.partition("t", 0).unwrap().leader_epoch, e.leader_epoch);
}

#[test]
fn the_controller_fences_the_dead_and_elects_from_the_isr() {
    let mut m = three_brokers();
    create(&mut m, "t", 3, 3);
    create(&mut m, "one", 1, 1);
    let dead_id = m.partition("t", 0).unwrap().leader.unwrap();
    let dead = move |id: NodeId| id == dead_id;
    let cmds = decide(&m, &dead);
    assert!(cmds.contains(&Command::SetFenced {
        id: dead_id,
        fenced: true
    }));
    for cmd in &cmds {
        m.apply(cmd);
    }
    for i in 0..3 {
        let p = m.partition("t", i).unwrap();
        assert_ne!(p.leader, Some(dead_id));
        assert!(p.leader.is_some());
        assert!(!p.isr.contains(&dead_id));
        // The new leader is the first live replica in preference order.
        let want = p.replicas.iter().copied().find(|r| *r != dead_id);
        assert_eq!(p.leader, want);
    }
    // Nothing more to do while nothing changes.
    assert!(decide(&m, &dead).is_empty());
    // A single-replica topic on the dead broker is offline, its ISR kept.
    let one = m.partition("one", 0).unwrap();
    if one.replicas == vec![dead_id] {
        assert_eq!(one.leader, None);
        assert_eq!(one.isr, vec![dead_id]);
    }
    // Back: unfenced, and an offline partition gets its leader again.
    let cmds = decide(&m, &|_| false);
    assert!(cmds.contains(&Command::SetFenced {
        id: dead_id,
        fenced: false
    }));
    for cmd in &cmds {
        m.apply(cmd);
    }
    for cmd in decide(&m, &|_| false) {
        m.apply(&cmd);
    }
    assert!(m.partition("one", 0).unwrap().leader.is_some());
}

#[test]
fn a_restarted_broker_leaves_the_isrs_others_can_hold() {
    let mut m = three_brokers();
    create(&mut m, "t", 3, 3);
    create(&mut m, "one", 1, 1);
    let led: Vec<i32> = (0..3)
        .filter(|i| m.partition("t", *i).unwrap().leader == Some(1))
        .collect();
    assert_eq!(led.len(), 1);
    let before = m.partition("t", led[0]).unwrap().clone();
    // The same process registering again changes nothing.
    let again = |m: &mut Metadata, incarnation| {
        m.apply(&Command::RegisterBroker {
            id: 1,
            kafka: "h:1".into(),
            http: String::new(),
            listeners: Vec::new(),
            cluster_id: Some("c".into()),
            incarnation,
        })
    };
    assert!(!again(&mut m, 1).changed);
    assert_eq!(m.partition("t", led[0]).unwrap(), &before);
    // A new process of broker 1 (its disk may be empty): out of every ISR
    // the others can hold, its leadership handed on with a new epoch.
    assert!(again(&mut m, 2).changed);
    for i in 0..3 {
        let p = m.partition("t", i).unwrap();
        assert!(!p.isr.contains(&1), "{p:?}");
        assert_ne!(p.leader, Some(1));
    }
    let after = m.partition("t", led[0]).unwrap();
    assert_eq!(after.leader_epoch, before.leader_epoch + 1);
    assert_eq!(
        after.leader,
        before.replicas.iter().copied().find(|r| *r != 1)
    );
    // Alone in its ISR, a partition keeps its only copy's broker.
    let one = m.partition("one", 0).unwrap();
    if one.replicas == vec![1] {
        assert_eq!(one.isr, vec![1]);
        assert_eq!(one.leader, Some(1));
    }
}

#[test]
fn partitions_go_back_to_their_preferred_replica_when_it_is_in_sync() {
    let mut m = three_brokers();
    create(&mut m, "t", 3, 3);
    assert!(rebalance(&m, &|_| false).is_empty(), "placed on preferred");
    // Broker 2 dies: its partitions move; nothing goes back while it is
    // gone or out of the ISR.
    let dead2 = |id: NodeId| id == 2;
    for cmd in decide(&m, &dead2) {
        m.apply(&cmd);
    }
    let moved: Vec<usize> = m.topics["t"]
        .partitions
        .iter()
        .enumerate()
        .filter(|(_, p)| p.replicas[0] == 2)
        .map(|(i, _)| i)
        .collect();
    assert!(!moved.is_empty());
    assert!(rebalance(&m, &dead2).is_empty());
    for cmd in decide(&m, &|_| false) {
        m.apply(&cmd);
    }
    assert!(rebalance(&m, &|_| false).is_empty(), "2 is not in sync yet");
    // Back in the ISR: its preferred partitions go back to it, with a new
    // leader epoch.
    for &i in &moved {
        let p = &m.topics["t"].partitions[i];
        let mut isr = p.isr.clone();
        isr.push(2);
        m.apply(&Command::ChangePartition {
            topic: "t".into(),
            partition: i as i32,
            partition_epoch: p.partition_epoch,
            leader: p.leader,
            isr,
        });
    }
    let epochs: Vec<i32> = moved
        .iter()
        .map(|&i| m.topics["t"].partitions[i].leader_epoch)
        .collect();
    let cmds = rebalance(&m, &|_| false);
    assert_eq!(cmds.len(), moved.len());
    for cmd in cmds {
        assert!(m.apply(&cmd).changed);
    }
    for (&i, e) in moved.iter().zip(epochs) {
        let p = &m.topics["t"].partitions[i];
        assert_eq!(p.leader, Some(2));
        assert_eq!(p.leader_epoch, e + 1);
    }
    assert!(rebalance(&m, &|_| false).is_empty());
}

#[test]
fn elections_asked_for_follow_kafka_rules() {
    let mut m = three_brokers();
    create(&mut m, "t", 1, 2);
    let p = m.partition("t", 0).unwrap().clone();
    let (preferred, other) = (p.replicas[0], p.replicas[1]);
    let set = |m: &mut Metadata, leader: Option<NodeId>, isr: Vec<NodeId>| {
        let epoch = m.partition("t", 0).unwrap().partition_epoch;
        assert!(
            m.apply(&Command::ChangePartition {
                topic: "t".into(),
                partition: 0,
                partition_epoch: epoch,
                leader,
                isr,
            })
            .changed
        );
    };
    let fence = |m: &mut Metadata, id: NodeId, fenced: bool| {
        m.apply(&Command::SetFenced { id, fenced });
    };
    assert_eq!(
        elect(&m, "t", 0, Election::Preferred),
        Err(NoElection::NotNeeded)
    );
    assert_eq!(
        elect(&m, "t", 1, Election::Preferred),
        Err(NoElection::UnknownPartition)
    );
    // The preferred replica out of sync, then back in sync.
    set(&mut m, Some(other), vec![other]);
    assert_eq!(
        elect(&m, "t", 0, Election::Preferred),
        Err(NoElection::PreferredNotAvailable)
    );
    set(&mut m, Some(other), vec![other, preferred]);
    let (leader, cmd) = elect(&m, "t", 0, Election::Preferred).unwrap();
    assert_eq!(leader, preferred);
    assert!(m.apply(&cmd).changed);
    assert_eq!(m.partition("t", 0).unwrap().leader, Some(preferred));
    // A live leader needs no unclean election.
    assert_eq!(
        elect(&m, "t", 0, Election::Unclean),
        Err(NoElection::NotNeeded)
    );
    // Offline: the leader and only in-sync replica fenced, the other
    // replica live but out of sync. Unclean elects it, alone in the ISR.
    set(&mut m, Some(preferred), vec![preferred]);
    fence(&mut m, preferred, true);
    set(&mut m, None, vec![preferred]);
    assert_eq!(
        elect(&m, "t", 0, Election::Preferred),
        Err(NoElection::PreferredNotAvailable)
    );
    let (leader, cmd) = elect(&m, "t", 0, Election::Unclean).unwrap();
    assert_eq!(leader, other);
    assert!(m.apply(&cmd).changed);
    let after = m.partition("t", 0).unwrap();
    assert_eq!(
        (after.leader, after.isr.clone()),
        (Some(other), vec![other])
    );
    // No live replica at all: nobody to elect.
    fence(&mut m, other, true);
    set(&mut m, None, vec![other]);
    assert_eq!(
        elect(&m, "t", 0, Election::Unclean),
        Err(NoElection::NoEligibleLeader)
    );
}
