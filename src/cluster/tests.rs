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
        cluster_id: None,
    };
    assert!(m.apply(&cmd).changed);
    assert!(!m.apply(&cmd).changed);
    assert_eq!(m.brokers.len(), 1);
}
