//! A consumer-protocol (KIP-848) group in a cluster: its state is journaled
//! in `__consumer_offsets`, so when its coordinator is killed -9 the next
//! one goes on at the same epochs, without a rejoin.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::cluster::{coordinator_of, produce_numbered, wait_placement, TestCluster};
use crate::common::*;
use crate::groups::{split_evenly, wait_for, Member, Seen};

const CONSUMER: &[(&str, &str)] = &[("group.protocol", "consumer")];

/// The group as node `i`'s `/api/groups` shows it, if it coordinates it.
fn group_at(c: &TestCluster, i: usize, id: &str) -> Option<Value> {
    let addr = format!("127.0.0.1:{}", c.ports[i].1).parse().ok()?;
    let (status, _, body) = http_get(addr, "/api/groups", &[]);
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    v["groups"]
        .as_array()?
        .iter()
        .find(|g| g["group"] == id)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_goes_on_at_its_epochs_after_its_coordinator_is_killed() {
    let mut c = TestCluster::start(3);
    c.agreed(&[0, 1, 2], None, Duration::from_secs(30));
    let bootstrap = c.bootstrap();
    let topic = "kip848c";
    let t = rdkafka::admin::NewTopic::new(topic, 4, rdkafka::admin::TopicReplication::Fixed(3));
    for r in admin(&bootstrap)
        .create_topics([&t], &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
    wait_placement(&bootstrap, topic, Duration::from_secs(10), |p| {
        p.len() == 4 && p.iter().all(|(l, _, i)| *l > 0 && i.len() == 3)
    });
    let group = "kip848-cluster";
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    // Three members join and one leaves: the group is at epoch 4, which a
    // group rebuilt from nothing by the two left would not reach.
    let a = Member::start(0, &bootstrap, group, topic, CONSUMER, Arc::clone(&seen));
    let b = Member::start(1, &bootstrap, group, topic, CONSUMER, Arc::clone(&seen));
    tokio::task::block_in_place(|| {
        wait_for("two members", Duration::from_secs(60), || {
            split_evenly(&[&a, &b], 4)
        })
    });
    let third = Member::start(2, &bootstrap, group, topic, CONSUMER, Arc::clone(&seen));
    tokio::task::block_in_place(|| {
        wait_for("three members", Duration::from_secs(60), || {
            split_evenly(&[&a, &b, &third], 4)
        })
    });
    third.close();
    tokio::task::block_in_place(|| {
        wait_for("two members again", Duration::from_secs(60), || {
            split_evenly(&[&a, &b], 4)
        })
    });
    let p = producer(&bootstrap, &[]);
    assert_eq!(produce_numbered(&p, topic, 4, 0, 25).await.len(), 100);
    tokio::task::block_in_place(|| {
        wait_for("the first 100 records", Duration::from_secs(30), || {
            seen.lock().unwrap().len() >= 100
        })
    });
    let coordinator = coordinator_of(&bootstrap, group, Duration::from_secs(20));
    let before = group_at(&c, coordinator as usize - 1, group).expect("the coordinator lists it");
    assert_eq!(before["type"], "consumer");
    assert_eq!(before["group_epoch"], 4, "{before}");

    c.kill9(coordinator as usize - 1);
    let survivors = c.bootstrap_without(coordinator);
    let offsets = wait_placement(
        &survivors,
        "__consumer_offsets",
        Duration::from_secs(30),
        |p| {
            let at = weir::group::journal::partition_for(group, p.len());
            p.get(at as usize)
                .is_some_and(|(l, _, _)| *l > 0 && *l != coordinator)
        },
    );
    let next = offsets[weir::group::journal::partition_for(group, offsets.len()) as usize].0;
    let p = producer(&survivors, &[]);
    assert_eq!(produce_numbered(&p, topic, 4, 25, 25).await.len(), 100);
    tokio::task::block_in_place(|| {
        wait_for("the next 100 records", Duration::from_secs(60), || {
            let s = seen.lock().unwrap();
            s.iter()
                .map(|(_, p, o)| (*p, *o))
                .collect::<HashSet<_>>()
                .len()
                >= 200
        })
    });
    let mut after = None;
    tokio::task::block_in_place(|| {
        wait_for(
            "the new coordinator to list it",
            Duration::from_secs(15),
            || {
                after = group_at(&c, next as usize - 1, group);
                after.is_some()
            },
        )
    });
    let after = after.expect("the new coordinator lists it");
    assert_eq!(
        after["group_epoch"], 4,
        "the group went on at its epoch: {after}"
    );
    let members = after["members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{after}");
    assert!(members.iter().all(|m| m["member_epoch"] == 4), "{after}");
    assert!(split_evenly(&[&a, &b], 4));
    a.close();
    b.close();
}
