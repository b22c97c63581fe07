//! Arbitrary bytes through weir's real request path: a client's byte stream through a whole connection (framing, byte budget, decode, handlers, encode, vectored writes).
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use weir::fuzzing::Harness;

thread_local! {
    static HARNESS: RefCell<Option<Harness>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    HARNESS.with(|h| {
        h.borrow_mut().get_or_insert_with(Harness::new).connection(data);
    });
});
