//! Property tests: arbitrary bytes through the request decoder, for every
//! API and version the registry serves, never panic and never allocate by
//! a peer's claim.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::{served, REGISTRY};
use crate::protocol::{self, Decoded, ProtocolError};

fn decode(frame: Bytes) -> Result<Decoded, ProtocolError> {
    protocol::decode(frame, served)
}

/// A request header (v1 shape, valid for every API) for `key`/`version`
/// followed by `body`.
fn frame(key: i16, version: i16, body: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(key);
    b.put_i16(version);
    b.put_i32(7);
    b.put_i16(4);
    b.put_slice(b"fuzz");
    b.put_slice(body);
    b.freeze()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_body_of_any_served_api_decodes_or_fails_cleanly(
        idx in 0..REGISTRY.rows().len(),
        v in 0i16..20,
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let api = REGISTRY.rows()[idx];
        let version = api.min + v % (api.max - api.min + 1);
        // Flexible header versions carry a tagged-field count after the
        // client id: 0 keeps the body's bytes the fuzzed part.
        let mut b = body.clone();
        b.insert(0, 0);
        let _ = decode(frame(api.key as i16, version, &b));
        let _ = decode(frame(api.key as i16, version, &body));
    }

    #[test]
    fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(Bytes::from(bytes));
    }

    #[test]
    fn huge_length_claims_do_not_allocate(idx in 0..REGISTRY.rows().len(), fill in any::<u8>()) {
        // Every 4-byte window set to a huge count: arrays claiming ~2^31
        // elements in a 64-byte frame must fail, not reserve gigabytes.
        let api = REGISTRY.rows()[idx];
        for at in 0..60 {
            let mut body = vec![fill; 64];
            body[at..at + 4].copy_from_slice(&0x7fff_fff0i32.to_be_bytes());
            let _ = decode(frame(api.key as i16, api.max, &body));
        }
    }
}

#[test]
fn api_versions_above_the_table_is_answered_not_decoded() {
    let d = decode(frame(18, 99, &[1, 2, 3])).unwrap();
    assert!(matches!(
        d,
        Decoded::ApiVersionsTooNew {
            correlation_id: 7,
            version: 99
        }
    ));
}
