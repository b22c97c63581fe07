//! An arbitrary pending-retry store file through replay, delivery, done marks and replay again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weir::fuzzing::pending_store(data);
});
