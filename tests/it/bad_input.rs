//! Malformed, oversized, truncated and unknown requests over raw sockets: the
//! broker answers with an error or closes that connection, and keeps serving
//! everyone else.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, MetadataRequest, ProduceRequest, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::common::*;

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn frame<T: Encodable>(key: ApiKey, version: i16, correlation_id: i32, body: &T) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("raw-test")))
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}

fn read_response(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(body)
}

/// True when the peer closed the connection (EOF) rather than hanging.
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

/// A metadata round trip on a fresh connection still works.
fn still_serving(addr: SocketAddr) {
    let mut s = connect(addr);
    s.write_all(&frame(
        ApiKey::Metadata,
        12,
        7,
        &MetadataRequest::default().with_topics(None),
    ))
    .unwrap();
    let resp = read_response(&mut s).expect("metadata answered");
    let mut b = bytes::Bytes::from(resp);
    let h = ResponseHeader::decode(&mut b, ApiKey::Metadata.response_header_version(12)).unwrap();
    assert_eq!(h.correlation_id, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_oversized_unknown_and_truncated_frames_close_only_their_connection() {
    let b = TestBroker::start().await;
    let addr = b.kafka_addr();
    tokio::task::spawn_blocking(move || {
        // Garbage: a plausible size then random bytes.
        let mut s = connect(addr);
        s.write_all(&[
            0, 0, 0, 16, 0xff, 0xee, 0xdd, 0xcc, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ])
        .unwrap();
        assert!(closed(&mut s));
        still_serving(addr);

        // A 2 GiB length prefix: refused before any allocation.
        let mut s = connect(addr);
        s.write_all(&0x7fff_ffffi32.to_be_bytes()).unwrap();
        assert!(closed(&mut s));
        // A negative one.
        let mut s = connect(addr);
        s.write_all(&(-5i32).to_be_bytes()).unwrap();
        assert!(closed(&mut s));
        still_serving(addr);

        // An unknown api key.
        let mut s = connect(addr);
        s.write_all(&[0, 0, 0, 10, 0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0xff, 0xff])
            .unwrap();
        assert!(closed(&mut s));
        still_serving(addr);

        // A frame cut mid-way, then the client goes away.
        let mut s = connect(addr);
        let f = frame(ApiKey::Metadata, 12, 1, &MetadataRequest::default());
        s.write_all(&f[..f.len() / 2]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(closed(&mut s));
        still_serving(addr);

        // An array length claiming two billion elements in a tiny frame.
        let mut s = connect(addr);
        let mut body = frame(
            ApiKey::Metadata,
            4,
            9,
            &MetadataRequest::default().with_topics(Some(vec![])),
        );
        let n = body.len();
        body[n - 5..n - 1].copy_from_slice(&0x7fff_fff0i32.to_be_bytes());
        s.write_all(&body).unwrap();
        assert!(closed(&mut s));
        still_serving(addr);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_above_our_range_gets_the_v0_error_response() {
    let b = TestBroker::start().await;
    let addr = b.kafka_addr();
    tokio::task::spawn_blocking(move || {
        let mut s = connect(addr);
        // v9 ApiVersions: header v2, body unknown to us.
        let mut f = vec![0, 18, 0, 9, 0, 0, 0, 42, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0];
        let len = f.len() as i32;
        let mut out = len.to_be_bytes().to_vec();
        out.append(&mut f);
        s.write_all(&out).unwrap();
        let resp = read_response(&mut s).unwrap();
        let mut b = bytes::Bytes::from(resp);
        let h = ResponseHeader::decode(&mut b, 0).unwrap();
        assert_eq!(h.correlation_id, 42);
        let body = ApiVersionsResponse::decode(&mut b, 0).unwrap();
        assert_eq!(body.error_code, 35);
        assert!(body
            .api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::Produce as i16 && k.min_version == 3));
        // The connection stays usable for a lower version.
        s.write_all(&frame(
            ApiKey::ApiVersions,
            3,
            43,
            &kafka_protocol::messages::ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("raw"))
                .with_client_software_version(StrBytes::from_static_str("1.0")),
        ))
        .unwrap();
        let resp = read_response(&mut s).unwrap();
        let mut b = bytes::Bytes::from(resp);
        let _ = ResponseHeader::decode(&mut b, 0).unwrap();
        let body = ApiVersionsResponse::decode(&mut b, 3).unwrap();
        assert_eq!(body.error_code, 0);
        assert!(body
            .api_keys
            .iter()
            .all(|k| k.api_key != ApiKey::ConsumerGroupHeartbeat as i16));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_batch_gets_corrupt_message_and_pipelined_responses_keep_order() {
    let b = TestBroker::start().await;
    let addr = b.kafka_addr();
    tokio::task::spawn_blocking(move || {
        let mut s = connect(addr);
        let batch = {
            use kafka_protocol::records::*;
            let rec = Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: 0,
                sequence: -1,
                timestamp: 1,
                key: Some(bytes::Bytes::from_static(b"k")),
                value: Some(bytes::Bytes::from_static(b"v")),
                headers: Default::default(),
                delete_horizon: false,
            };
            let mut buf = BytesMut::new();
            RecordBatchEncoder::encode(
                &mut buf,
                [&rec],
                &RecordEncodeOptions {
                    version: 2,
                    compression: Compression::None,
                },
            )
            .unwrap();
            buf.to_vec()
        };
        let produce = |records: Vec<u8>| {
            ProduceRequest::default()
                .with_acks(1)
                .with_timeout_ms(1000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(kafka_protocol::messages::TopicName(
                        StrBytes::from_static_str("raw"),
                    ))
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(bytes::Bytes::from(records)))])])
        };
        let mut corrupt = batch.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0x55;
        // Pipeline three requests before reading anything.
        let mut all = Vec::new();
        all.extend(frame(ApiKey::Produce, 9, 100, &produce(batch.clone())));
        all.extend(frame(ApiKey::Produce, 9, 101, &produce(corrupt)));
        all.extend(frame(ApiKey::Produce, 9, 102, &produce(batch)));
        s.write_all(&all).unwrap();
        let mut codes = Vec::new();
        for want in 100..103 {
            let resp = read_response(&mut s).unwrap();
            let mut b = bytes::Bytes::from(resp);
            let h = ResponseHeader::decode(&mut b, 1).unwrap();
            assert_eq!(
                h.correlation_id, want,
                "responses come back in request order"
            );
            let r = kafka_protocol::messages::ProduceResponse::decode(&mut b, 9).unwrap();
            let p = &r.responses[0].partition_responses[0];
            codes.push((p.error_code, p.base_offset));
        }
        assert_eq!(codes, vec![(0, 0), (2, -1), (0, 1)]);
    })
    .await
    .unwrap();
}
