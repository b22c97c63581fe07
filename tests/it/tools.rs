//! `weir topics` and `weir groups`, run as a user runs them, against a
//! broker in the test process; a librdkafka consumer checks that a reset
//! group resumes where the tool put it.

use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use serde_json::Value;

use crate::common::*;

/// Runs `weir <args>` against `bootstrap`; (exit code, stdout, stderr).
fn weir(bootstrap: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .args(["--bootstrap", bootstrap])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) fn weir_json(bootstrap: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, out, err) = weir(bootstrap, &all);
    assert_eq!(code, 0, "weir {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_described_changed_and_deleted_with_weir_topics() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    let bs2 = bs.clone();
    tokio::task::spawn_blocking(move || {
        let bs = bs2;
        let (code, out, err) = weir(
            &bs,
            &[
                "topics",
                "create",
                "tools-a",
                "--partitions",
                "3",
                "--config",
                "retention.ms=3600000",
            ],
        );
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("created topic tools-a"), "{out}");
        // Again: the Kafka error by name, exit 1.
        let (code, _, err) = weir(&bs, &["topics", "create", "tools-a"]);
        assert_eq!(code, 1);
        assert!(err.contains("TOPIC_ALREADY_EXISTS (36)"), "{err}");
        // A bad config value is the broker's refusal too.
        let (code, _, err) = weir(
            &bs,
            &[
                "topics",
                "create",
                "tools-b",
                "--config",
                "retention.ms=soon",
            ],
        );
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("INVALID_CONFIG"), "{err}");
        // Arguments that make no request: exit 2.
        let (code, _, _) = weir(&bs, &["topics", "create", "tools-b", "--config", "novalue"]);
        assert_eq!(code, 2);

        let list = weir_json(&bs, &["topics", "list"]);
        let names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"tools-a"), "{list}");

        let (code, _, err) = weir(
            &bs,
            &[
                "topics",
                "alter-config",
                "tools-a",
                "--set",
                "cleanup.policy=delete",
                "--delete",
                "retention.ms",
            ],
        );
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = weir(
            &bs,
            &["topics", "add-partitions", "tools-a", "--total", "5"],
        );
        assert_eq!(code, 0, "{err}");
        let d = weir_json(&bs, &["topics", "describe", "tools-a"]);
        assert_eq!(d["partitions"].as_array().unwrap().len(), 5);
        assert_eq!(d["configs"]["cleanup.policy"], "delete");
        assert!(d["configs"].get("retention.ms").is_none(), "{d}");
        let text = weir(&bs, &["topics", "describe", "tools-a"]).1;
        assert!(
            text.contains("HIGH-WATERMARK") && text.contains("cleanup.policy"),
            "{text}"
        );

        let (code, _, err) = weir(&bs, &["topics", "delete", "tools-a"]);
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = weir(&bs, &["topics", "describe", "tools-a"]);
        assert_eq!(code, 1);
        assert!(err.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{err}");
        // No broker there: exit 3.
        let (code, _, _) = weir("127.0.0.1:1", &["topics", "list"]);
        assert_eq!(code, 3);
    })
    .await
    .unwrap();
}

fn group_consumer(bs: &str, group: &str) -> BaseConsumer {
    client_config(bs)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap()
}

/// Consumes `n` records; returns their (partition, offset).
fn take(c: &BaseConsumer, n: usize) -> Vec<(i32, i64)> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            got.push((m.partition(), m.offset()));
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_reset_with_weir_groups_resumes_where_it_was_put() {
    let b = TestBroker::start().await;
    let bs = b.bootstrap();
    create_topic(&bs, "tools-g", 2, &[]).await;
    let p = producer(&bs, &[]);
    for i in 0..20 {
        let k = format!("k{i}");
        p.send(
            FutureRecord::to("tools-g")
                .key(&k)
                .payload(&k)
                .partition(i % 2),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    let bs2 = bs.clone();
    tokio::task::spawn_blocking(move || {
        let bs = bs2;
        let c = group_consumer(&bs, "tools-grp");
        c.subscribe(&["tools-g"]).unwrap();
        assert_eq!(take(&c, 20).len(), 20);
        c.commit_consumer_state(CommitMode::Sync).unwrap();

        // While the consumer is in the group: listed, described, and the
        // reset refused.
        let list = weir_json(&bs, &["groups", "list"]);
        assert!(
            list.as_array()
                .unwrap()
                .iter()
                .any(|g| g["group"] == "tools-grp" && g["group_type"] == "classic"),
            "{list}"
        );
        let d = weir_json(&bs, &["groups", "describe", "tools-grp"]);
        assert_eq!(d["state"], "Stable", "{d}");
        assert_eq!(d["members"].as_array().unwrap().len(), 1);
        let assigned = &d["members"][0]["assignment"]["tools-g"];
        assert_eq!(assigned.as_array().unwrap().len(), 2, "{d}");
        for o in d["offsets"].as_array().unwrap() {
            assert_eq!(o["committed"], 10);
            assert_eq!(o["lag"], 0);
        }
        let (code, _, err) = weir(
            &bs,
            &[
                "groups",
                "reset-offsets",
                "tools-grp",
                "--topic",
                "tools-g",
                "--to-earliest",
            ],
        );
        assert_eq!(code, 1);
        assert!(err.contains("member"), "{err}");
        drop(c);

        // Empty now (the consumer left): a dry run changes nothing...
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let d = weir_json(&bs, &["groups", "describe", "tools-grp"]);
            if d["members"].as_array().unwrap().is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "{d}");
            std::thread::sleep(Duration::from_millis(200));
        }
        let plan = weir_json(
            &bs,
            &[
                "groups",
                "reset-offsets",
                "tools-grp",
                "--topic",
                "tools-g",
                "--shift-by",
                "-3",
                "--dry-run",
            ],
        );
        assert_eq!(plan["committed"], false);
        assert!(
            plan["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["new"] == 7),
            "{plan}"
        );
        let d = weir_json(&bs, &["groups", "describe", "tools-grp"]);
        assert!(d["offsets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["committed"] == 10));
        // ...the real one moves it, clamped to the log.
        let done = weir_json(
            &bs,
            &[
                "groups",
                "reset-offsets",
                "tools-grp",
                "--topic",
                "tools-g",
                "--to-offset",
                "6",
            ],
        );
        assert_eq!(done["committed"], true);
        let d = weir_json(&bs, &["groups", "describe", "tools-grp"]);
        for o in d["offsets"].as_array().unwrap() {
            assert_eq!(
                (o["committed"].as_i64(), o["lag"].as_i64()),
                (Some(6), Some(4)),
                "{d}"
            );
        }
        // A consumer of the group resumes at 6 on both partitions.
        let c = group_consumer(&bs, "tools-grp");
        c.subscribe(&["tools-g"]).unwrap();
        let mut got = take(&c, 8);
        got.sort();
        let expect: Vec<(i32, i64)> = (0..2).flat_map(|p| (6..10).map(move |o| (p, o))).collect();
        assert_eq!(got, expect);
        drop(c);

        // --to-datetime far in the future: the end; --to-earliest: 0.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (code, _, err) = weir(
                &bs,
                &[
                    "groups",
                    "reset-offsets",
                    "tools-grp",
                    "--topic",
                    "tools-g",
                    "--to-datetime",
                    "2100-01-01T00:00:00Z",
                ],
            );
            if code == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{err}");
            std::thread::sleep(Duration::from_millis(200));
        }
        let d = weir_json(&bs, &["groups", "describe", "tools-grp"]);
        assert!(
            d["offsets"]
                .as_array()
                .unwrap()
                .iter()
                .all(|o| o["committed"] == 10),
            "{d}"
        );
        let (code, out, err) = weir(
            &bs,
            &[
                "groups",
                "reset-offsets",
                "tools-grp",
                "--topic",
                "tools-g",
                "--to-earliest",
            ],
        );
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("PREVIOUS") && out.contains("committed"),
            "{out}"
        );

        // Delete, then it is gone.
        let (code, _, err) = weir(&bs, &["groups", "delete", "tools-grp"]);
        assert_eq!(code, 0, "{err}");
        let list = weir_json(&bs, &["groups", "list"]);
        assert!(
            !list
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["group"] == "tools-grp"),
            "{list}"
        );
        // Exactly one destination.
        let (code, _, _) = weir(&bs, &["groups", "reset-offsets", "g", "--topic", "t"]);
        assert_eq!(code, 2);
    })
    .await
    .unwrap();
}

#[test]
fn shell_completions_cover_the_tools() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        for word in [
            "topics",
            "reset-offsets",
            "to-datetime",
            "controller-quorum-voters",
        ] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
}
