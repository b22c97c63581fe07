//! kill -9 a child broker right after acknowledgements; everything
//! acknowledged must be there after a restart.

use std::time::Duration;

use rdkafka::consumer::Consumer;
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
    let marker = dir.path().join(weir::broker::CLEAN_SHUTDOWN_FILE);
    assert!(marker.exists(), "a clean shutdown leaves its marker");
    let child = ChildBroker::start(dir.path(), &[]);
    // The listeners are bound before the data dir is opened: the marker
    // goes while the broker starts.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while marker.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!marker.exists(), "the marker is consumed at start");
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

/// A tiny deterministic generator, so that a failing round can be replayed
/// from the printed seed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kill_9_rounds_under_full_speed_acks_all_lose_nothing_acknowledged() {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let seed = std::env::var("WEIR_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| weir::broker::now_ms() as u64);
    eprintln!("crash test seed: {seed} (WEIR_CRASH_SEED to replay)");
    let mut rng = Lcg(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // (partition, offset) -> value of every acknowledged record, all rounds.
    let mut acked: HashMap<(i32, i64), String> = HashMap::new();
    // Frequent recovery points and small segments: restarts recover from a
    // checkpoint, across rolls, as often as from a bare scan.
    let args = [
        "--recovery-checkpoint-interval-ms",
        "100",
        "--log-segment-bytes",
        "1048576",
    ];
    for round in 0..20 {
        let mut child = ChildBroker::start(&data, &args);
        let bs = child.bootstrap();
        if round == 0 {
            create_topic(&bs, "kill", 3, &[]).await;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let got: Arc<Mutex<Vec<(i32, i64, String)>>> = Arc::default();
        let p = producer(&bs, &[("message.timeout.ms", "3000")]);
        let (s2, g2, p2) = (Arc::clone(&stop), Arc::clone(&got), p.clone());
        let writer = tokio::spawn(async move {
            let mut i = 0u64;
            let mut inflight = futures::stream::FuturesUnordered::new();
            use futures::StreamExt;
            while !s2.load(Ordering::Relaxed) && i < 30_000 {
                let v = format!("r{round}-{i}");
                i += 1;
                match p2.send_result(FutureRecord::to("kill").key(&v).payload(&v)) {
                    Ok(f) => inflight.push(async move { (f.await, v) }),
                    Err(_) => break,
                }
                while inflight.len() > 2000 {
                    if let Some((Ok(Ok(d)), v)) = inflight.next().await {
                        g2.lock().unwrap().push((d.partition, d.offset, v));
                    }
                }
                if i.is_multiple_of(500) {
                    tokio::task::yield_now().await;
                }
            }
            while let Some((res, v)) = inflight.next().await {
                if let Ok(Ok(d)) = res {
                    g2.lock().unwrap().push((d.partition, d.offset, v));
                }
            }
        });
        let run_ms = 100 + rng.next() % 500;
        tokio::time::sleep(Duration::from_millis(run_ms)).await;
        child.kill9();
        stop.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(20), writer).await;
        drop(p);
        for (part, off, v) in got.lock().unwrap().drain(..) {
            assert!(
                acked.insert((part, off), v).is_none(),
                "offset {part}/{off} acknowledged twice"
            );
        }
        // Restart and check: every acknowledged record at its offset, the
        // offsets of each partition contiguous from 0.
        let child = ChildBroker::start(&data, &args);
        let bs = child.bootstrap();
        let c = consumer(&bs);
        let mut ends = Vec::new();
        for part in 0..3 {
            ends.push(
                c.fetch_watermarks("kill", part, Duration::from_secs(10))
                    .unwrap()
                    .1,
            );
        }
        let total: i64 = ends.iter().sum();
        let bs2 = bs.clone();
        let read = tokio::task::spawn_blocking(move || {
            read_all(&bs2, "kill", 3, total as usize, Duration::from_secs(60))
        })
        .await
        .unwrap();
        assert_eq!(
            read.len() as i64,
            total,
            "round {round}: everything below the high watermark is readable"
        );
        let mut next = [0i64; 3];
        let mut stored: HashMap<(i32, i64), Vec<u8>> = HashMap::new();
        for (part, off, _, v) in read {
            assert_eq!(
                off, next[part as usize],
                "round {round}: no gap or duplicate in partition {part}"
            );
            next[part as usize] += 1;
            stored.insert((part, off), v);
        }
        for ((part, off), v) in &acked {
            assert_eq!(
                stored.get(&(*part, *off)).map(Vec::as_slice),
                Some(v.as_bytes()),
                "round {round} (seed {seed}): acknowledged record {part}/{off} lost"
            );
        }
        drop(child);
    }
    assert!(!acked.is_empty());
}

#[test]
fn a_flipped_byte_in_the_active_segment_truncates_there_and_keeps_what_came_before() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // No recovery point: the whole active segment is the unflushed tail.
        let child = ChildBroker::start(&data, &["--recovery-checkpoint-interval-ms", "3600000"]);
        let p = producer(&child.bootstrap(), &[("linger.ms", "0")]);
        for i in 0..10 {
            p.send(
                FutureRecord::to("flip").key("k").payload(&format!("{i}")),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        }
    });
    let seg = data.join("flip-0").join("00000000000000000000.log");
    let mut bytes = std::fs::read(&seg).unwrap();
    // Find the 8th batch (one record each, linger 0) and flip a byte inside it.
    let mut pos = 0usize;
    for _ in 0..7 {
        let l = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap());
        pos += 12 + l as usize;
    }
    // A byte inside its records, under the CRC.
    let l = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize;
    bytes[pos + 61 + (l + 12 - 61) / 2] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    rt.block_on(async {
        let child = ChildBroker::start(&data, &[]);
        let bs = child.bootstrap();
        let read = tokio::task::spawn_blocking(move || {
            read_all(&bs, "flip", 1, 10, Duration::from_secs(5))
        })
        .await
        .unwrap();
        let values: Vec<String> = read
            .iter()
            .map(|r| String::from_utf8(r.3.clone()).unwrap())
            .collect();
        assert_eq!(
            values,
            (0..7).map(|i| i.to_string()).collect::<Vec<_>>(),
            "served up to the damage, nothing corrupt"
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_0_in_time_keeps_every_ack_and_restarts_clean() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let mut child = ChildBroker::start(dir.path(), &[]);
    let bs = child.bootstrap();
    create_topic(&bs, "term-load", 2, &[]).await;
    let acked: Arc<Mutex<Vec<(i32, i64, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2 {
        let p = producer(&bs, &[("message.timeout.ms", "3000")]);
        let (a, s) = (Arc::clone(&acked), Arc::clone(&stop));
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !s.load(Ordering::Relaxed) {
                let v = format!("w{w}-{i}");
                i += 1;
                if let Ok(d) = p
                    .send(
                        FutureRecord::to("term-load").key(&v).payload(&v),
                        Duration::from_secs(5),
                    )
                    .await
                {
                    a.lock().unwrap().push((d.partition, d.offset, v));
                }
            }
        }));
    }
    // Under load: the writers have had acknowledgements (on a busy machine
    // the first can take a while), and keep writing.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 20 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let status = tokio::task::block_in_place(|| child.terminate());
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
    }
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(10), "stopped in {took:?}");
    assert!(
        dir.path().join(weir::broker::CLEAN_SHUTDOWN_FILE).exists(),
        "restart will skip recovery"
    );
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());
    let child = ChildBroker::start(dir.path(), &[]);
    let bs = child.bootstrap();
    let c = consumer(&bs);
    let total: i64 = (0..2)
        .map(|p| {
            c.fetch_watermarks("term-load", p, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .sum();
    let read = tokio::task::spawn_blocking(move || {
        read_all(&bs, "term-load", 2, total as usize, Duration::from_secs(30))
    })
    .await
    .unwrap();
    let stored: std::collections::HashMap<(i32, i64), Vec<u8>> =
        read.into_iter().map(|(p, o, _, v)| ((p, o), v)).collect();
    for (p, o, v) in &acked {
        assert_eq!(
            stored.get(&(*p, *o)).map(Vec::as_slice),
            Some(v.as_bytes()),
            "acknowledged {p}/{o} kept"
        );
    }
}

#[test]
fn damaged_or_missing_index_files_are_rebuilt_and_everything_is_served() {
    use rdkafka::TopicPartitionList;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let n = 3000usize;
    let t0 = 1_700_000_000_000i64;
    rt.block_on(async {
        let mut child = ChildBroker::start(&data, &["--log-segment-bytes", "65536"]);
        let bs = child.bootstrap();
        let p = producer(&bs, &[("linger.ms", "5"), ("batch.size", "2000")]);
        let mut futs = Vec::new();
        for i in 0..n {
            let v = format!("{i:05}-{}", "x".repeat(100));
            futs.push(
                p.send_result(
                    FutureRecord::to("idx")
                        .key("k")
                        .payload(&v)
                        .timestamp(t0 + i as i64),
                )
                .ok()
                .unwrap(),
            );
        }
        for f in futs {
            f.await.unwrap().unwrap();
        }
        drop(p);
        assert!(child.terminate().success());
    });
    let part = data.join("idx-0");
    let mut indexes: Vec<_> = std::fs::read_dir(&part)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "index"))
        .collect();
    indexes.sort();
    let listing: Vec<_> = std::fs::read_dir(&part)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name(), e.metadata().unwrap().len())
        })
        .collect();
    assert!(indexes.len() >= 4, "several sealed segments: {listing:?}");
    assert!(part.join("recovery-point").exists());
    // Cut one index mid-entry, flip bytes in another, delete a time index,
    // and fill the active segment's index with garbage.
    let len = std::fs::metadata(&indexes[0]).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&indexes[0])
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let mut b = std::fs::read(&indexes[1]).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x5a;
    b[mid + 4] ^= 0xa5;
    std::fs::write(&indexes[1], &b).unwrap();
    std::fs::remove_file(indexes[2].with_extension("timeindex")).unwrap();
    let last = indexes.last().unwrap();
    let garbage: Vec<u8> = (0..std::fs::metadata(last).unwrap().len())
        .map(|i| (i * 7) as u8)
        .collect();
    std::fs::write(last, garbage).unwrap();
    rt.block_on(async {
        let child = ChildBroker::start(&data, &[]);
        let bs = child.bootstrap();
        let bs2 = bs.clone();
        let read = tokio::task::spawn_blocking(move || {
            read_all(&bs2, "idx", 1, n, Duration::from_secs(30))
        })
        .await
        .unwrap();
        let values: Vec<String> = read
            .iter()
            .map(|r| String::from_utf8(r.3[..5].to_vec()).unwrap())
            .collect();
        assert_eq!(
            values,
            (0..n).map(|i| format!("{i:05}")).collect::<Vec<_>>(),
            "every record served in order"
        );
        // Timestamp lookups land on the right record in every segment.
        let c = consumer(&bs);
        for i in [0usize, 1, 777, 1500, 2222, n - 1] {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset("idx", 0, rdkafka::Offset::Offset(t0 + i as i64))
                .unwrap();
            let got = c.offsets_for_times(tpl, Duration::from_secs(10)).unwrap();
            let off = got.elements()[0].offset();
            assert_eq!(
                off,
                rdkafka::Offset::Offset(i as i64),
                "timestamp of record {i}"
            );
        }
    });
}
