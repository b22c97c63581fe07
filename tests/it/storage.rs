//! The storage engine under a full disk: writes fail with
//! KAFKA_STORAGE_ERROR, reads go on, nothing written is damaged, and writes
//! resume by themselves when space returns.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;

use crate::common::*;

/// A small tmpfs, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    /// Mounts a tmpfs of `size` (as `mount -o size=`) on a new directory in
    /// `parent`; `None` where mounting is not allowed (not root).
    fn mount(parent: &Path, size: &str) -> Option<Self> {
        let dir = parent.join("disk");
        std::fs::create_dir_all(&dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self(dir))
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remount {size}");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_keeps_reads_and_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(dir.path(), "3m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let data = disk.0.join("data");
    let child = ChildBroker::start(&data, &[]);
    let bs = child.bootstrap();
    create_topic(&bs, "full", 1, &[]).await;
    let p = producer(
        &bs,
        &[
            ("acks", "all"),
            ("enable.idempotence", "false"),
            ("retries", "0"),
            ("linger.ms", "0"),
            ("message.timeout.ms", "10000"),
        ],
    );
    let value = "v".repeat(1000);
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..20_000 {
        let v = format!("{i:06}{value}");
        match p
            .send(
                FutureRecord::to("full").key("k").payload(&v),
                Duration::from_secs(10),
            )
            .await
        {
            Ok(d) => acked.push((d.offset, v)),
            Err((e, _)) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("a 3 MiB disk fills up");
    assert!(
        matches!(
            refused,
            KafkaError::MessageProduction(RDKafkaErrorCode::KafkaStorageError)
        ),
        "a full disk is KAFKA_STORAGE_ERROR, got {refused:?}"
    );
    assert!(acked.len() > 100, "{} records fit", acked.len());
    for (i, (off, _)) in acked.iter().enumerate() {
        assert_eq!(*off, i as i64, "contiguous offsets before the disk filled");
    }
    // Reads go on while writes fail.
    let check = |bs: String, expected: Vec<String>| async move {
        let n = expected.len();
        let read = tokio::task::spawn_blocking(move || {
            read_all(&bs, "full", 1, n, Duration::from_secs(30))
        })
        .await
        .unwrap();
        let got: Vec<String> = read
            .into_iter()
            .map(|r| String::from_utf8(r.3).unwrap())
            .collect();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "every acknowledged record, in order");
    };
    let mut expected: Vec<String> = acked.iter().map(|(_, v)| v.clone()).collect();
    check(bs.clone(), expected.clone()).await;
    // Space returns: the same broker takes writes again, at the next offset.
    disk.resize("64m");
    for i in 0..50 {
        let v = format!("after-{i}");
        let d = p
            .send(
                FutureRecord::to("full").key("k").payload(&v),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        assert_eq!(d.offset, expected.len() as i64);
        expected.push(v);
    }
    check(bs, expected.clone()).await;
    drop(p);
    // And nothing on disk was damaged: a restart serves the same.
    drop(child);
    let child = ChildBroker::start(&data, &[]);
    check(child.bootstrap(), expected).await;
    drop(child);
    drop(disk);
}

/// Descriptors of a process, and its maps of `.log` files.
/// Descriptors open on segment files of topic `many`, and mapped `.log`
/// files. Sockets and other descriptors (clients come and go) are not
/// counted.
fn fds_and_log_maps(pid: u32) -> (usize, usize) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| {
            let t = target.to_string_lossy();
            t.contains("/many-") && t.ends_with(".log")
        })
        .count();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .filter(|l| l.ends_with(".log"))
        .count();
    (fds, maps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_segments_hold_no_descriptors_and_idle_maps_are_released() {
    let dir = tempfile::tempdir().unwrap();
    let child = ChildBroker::start(
        dir.path(),
        &[
            "--log-segment-bytes",
            "16384",
            "--segment-idle-release-ms",
            "300",
            "--recovery-checkpoint-interval-ms",
            "100",
        ],
    );
    let bs = child.bootstrap();
    let partitions = 8;
    create_topic(&bs, "many", partitions, &[]).await;
    let p = producer(&bs, &[("batch.size", "4000"), ("linger.ms", "1")]);
    let n = 4000;
    let value = "x".repeat(500);
    let mut futs = Vec::new();
    for i in 0..n {
        futs.push(
            p.send_result(
                FutureRecord::to("many")
                    .partition(i % partitions)
                    .key("k")
                    .payload(&value),
            )
            .ok()
            .unwrap(),
        );
    }
    for f in futs {
        f.await.unwrap().unwrap();
    }
    drop(p);
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            e.file_name()
                .to_string_lossy()
                .starts_with("many-")
                .then(|| e.path())
        })
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count();
    assert!(segments > 8 * partitions as usize, "{segments} segments");
    // Read everything: every sealed segment is mapped on the way.
    let bs2 = bs.clone();
    let read = tokio::task::spawn_blocking(move || {
        read_all(
            &bs2,
            "many",
            partitions,
            n as usize,
            Duration::from_secs(30),
        )
    })
    .await
    .unwrap();
    assert_eq!(read.len(), n as usize);
    let pid = child.child.id();
    let (fds, _) = fds_and_log_maps(pid);
    // One per partition: the active segment's.
    assert!(
        fds <= partitions as usize,
        "{fds} segment descriptors for {segments} segments in {partitions} partitions"
    );
    // Once idle, only the active segments stay mapped.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, maps) = fds_and_log_maps(pid);
        if maps <= partitions as usize {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{maps} segment maps still held after the idle release"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
