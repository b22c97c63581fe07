//! An online backup taken while producers write, restored into a new data
//! dir: a broker started there serves a consistent prefix, with the group
//! offsets and pending retries of the moment.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_to_a_consistent_prefix_with_group_offsets() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(&bs, "bk", 2, &[("segment.bytes", "20000")]).await;
    create_topic(
        &bs,
        "bkr",
        1,
        &[("retry.max.attempts", "1"), ("retry.backoff.ms", "600000")],
    )
    .await;
    let p = producer(&bs, &[]);
    for i in 0..1000 {
        let v = format!("v{i}");
        p.send(
            FutureRecord::to("bk").key(&v).payload(&v),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    p.send(
        FutureRecord::to("bkr.retry").key("held").payload("held"),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let bs2 = bs.clone();
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = client_config(&bs2).set("group.id", "bkg").create().unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("bk", 0, Offset::Offset(100))
            .unwrap();
        tpl.add_partition_offset("bk", 1, Offset::Offset(50))
            .unwrap();
        c.commit(&tpl, CommitMode::Sync).unwrap();
    })
    .await
    .unwrap();

    // Keep producing while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = Arc::clone(&stop);
    let p2 = p.clone();
    let load = tokio::spawn(async move {
        let mut i = 0;
        while !s2.load(Ordering::Relaxed) {
            let v = format!("load{i}");
            let _ = p2
                .send(
                    FutureRecord::to("bk").key(&v).payload(&v),
                    Duration::from_secs(10),
                )
                .await;
            i += 1;
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let target = b.dir.path().join("backup");
    let body = format!("{{\"to\": \"{}\"}}", target.display());
    let http = b.http_addr();
    let (status, resp) =
        tokio::task::spawn_blocking(move || http_post(http, "/api/backup", &body, &[]))
            .await
            .unwrap();
    assert_eq!(status, 200, "{resp}");
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&resp).unwrap();
    let ends: Vec<i64> = (0..2)
        .map(|p| {
            manifest["manifest"]["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["topic"] == "bk" && e["partition"] == p)
                .unwrap()["end_offset"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert!(ends.iter().sum::<i64>() >= 1000);
    // A second backup into a non-empty directory is refused.
    let body = format!("{{\"to\": \"{}\"}}", target.display());
    let (status, _) =
        tokio::task::spawn_blocking(move || http_post(http, "/api/backup", &body, &[]))
            .await
            .unwrap();
    assert_eq!(status, 400);

    let restored = b.dir.path().join("restored");
    weir::backup::restore(&target, &restored).unwrap();
    let r = TestBroker::start_with(|c| c.args.data_dir = restored.clone()).await;
    let rbs = r.bootstrap();
    let total = ends.iter().sum::<i64>() as usize;
    let rbs2 = rbs.clone();
    let read = tokio::task::spawn_blocking(move || {
        read_all(&rbs2, "bk", 2, total, Duration::from_secs(30))
    })
    .await
    .unwrap();
    assert_eq!(read.len(), total, "exactly the backed-up prefix");
    let mut next = [0i64; 2];
    for (part, off, _, _) in &read {
        assert_eq!(*off, next[*part as usize], "contiguous offsets");
        next[*part as usize] += 1;
    }
    assert_eq!(next.to_vec(), ends);
    // Group offsets came along, and a pending retry is still pending.
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = client_config(&rbs).set("group.id", "bkg").create().unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("bk", 0);
        tpl.add_partition("bk", 1);
        let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        assert_eq!(
            got.find_partition("bk", 0).unwrap().offset(),
            Offset::Offset(100)
        );
        assert_eq!(
            got.find_partition("bk", 1).unwrap().offset(),
            Offset::Offset(50)
        );
    })
    .await
    .unwrap();
    assert_eq!(r.broker().retries.store.pending(), 1);
}
