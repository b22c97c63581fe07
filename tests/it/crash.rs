//! kill -9 a child broker right after acknowledgements; everything
//! acknowledged must be there after a restart.

use std::time::Duration;

use rdkafka::producer::FutureRecord;

use crate::common::*;

async fn produce_then_kill(fsync: &str, acks: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = ChildBroker::start(dir.path(), &["--fsync", fsync]);
    let bs = child.bootstrap();
    create_topic(&bs, "crash", 4, &[]).await;
    let p = producer(
        &bs,
        &[
            ("acks", acks),
            (
                "enable.idempotence",
                if acks == "all" { "true" } else { "false" },
            ),
        ],
    );
    let mut acked = Vec::new();
    for round in 0..5 {
        let mut futs = Vec::new();
        for i in 0..2000 {
            let v = format!("r{round}-{i}");
            futs.push((
                p.send_result(FutureRecord::to("crash").key(&v).payload(&v))
                    .ok()
                    .unwrap(),
                v,
            ));
        }
        for (f, v) in futs {
            let d = f.await.unwrap().unwrap();
            acked.push((d.partition, d.offset, v));
        }
    }
    drop(p);
    child.kill9();
    let child = ChildBroker::start(dir.path(), &["--fsync", fsync]);
    let bs = child.bootstrap();
    let n = acked.len();
    let read =
        tokio::task::spawn_blocking(move || read_all(&bs, "crash", 4, n, Duration::from_secs(60)))
            .await
            .unwrap();
    let got: std::collections::HashMap<(i32, i64), Vec<u8>> =
        read.into_iter().map(|(p, o, _, v)| ((p, o), v)).collect();
    for (p, o, v) in &acked {
        assert_eq!(
            got.get(&(*p, *o)).map(Vec::as_slice),
            Some(v.as_bytes()),
            "acknowledged record at {p}/{o} survives kill -9"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_records_survive_kill_9() {
    produce_then_kill("acks-all", "all").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_one_records_survive_kill_9_of_the_process() {
    // Without fsync the page cache still holds them: only a power loss could
    // lose acks=1 data.
    produce_then_kill("never", "1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_cleanly_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = ChildBroker::start(dir.path(), &[]);
    let bs = child.bootstrap();
    let p = producer(&bs, &[]);
    for i in 0..100 {
        p.send(
            FutureRecord::to("term").key("k").payload(&format!("{i}")),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    drop(p);
    let started = std::time::Instant::now();
    let status = child.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let child = ChildBroker::start(dir.path(), &[]);
    let bs = child.bootstrap();
    let read =
        tokio::task::spawn_blocking(move || read_all(&bs, "term", 1, 100, Duration::from_secs(30)))
            .await
            .unwrap();
    assert_eq!(read.len(), 100);
}

#[test]
fn a_torn_tail_is_truncated_at_restart() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let child = ChildBroker::start(&data, &[]);
        let bs = child.bootstrap();
        let p = producer(&bs, &[]);
        for i in 0..10 {
            p.send(
                FutureRecord::to("torn").key("k").payload(&format!("{i}")),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        }
    });
    // Append half a batch of garbage to the segment, as a crash mid-write would.
    let seg = data.join("torn-0").join("00000000000000000000.log");
    let bytes = std::fs::read(&seg).unwrap();
    let mut end = 0usize;
    while end + 12 <= bytes.len() {
        let l = i32::from_be_bytes(bytes[end + 8..end + 12].try_into().unwrap());
        if l <= 0 {
            break;
        }
        end += 12 + l as usize;
    }
    assert!(end > 0);
    let len = end as u64;
    let mut f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(len)).unwrap();
    // A batch header claiming 1000 bytes, cut short.
    f.write_all(&[
        0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 3, 0xe8, 0, 0, 0, 0, 2, 0xde, 0xad,
    ])
    .unwrap();
    drop(f);
    rt.block_on(async {
        let child = ChildBroker::start(&data, &[]);
        let bs = child.bootstrap();
        let read = tokio::task::spawn_blocking(move || {
            read_all(&bs, "torn", 1, 10, Duration::from_secs(30))
        })
        .await
        .unwrap();
        assert_eq!(read.len(), 10);
        // New data goes after the last whole batch.
        let p = producer(&child.bootstrap(), &[]);
        let d = p
            .send(
                FutureRecord::to("torn").key("k").payload("after"),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert_eq!(d.offset, 10);
    });
    assert!(std::fs::metadata(&seg).unwrap().len() > len);
}
