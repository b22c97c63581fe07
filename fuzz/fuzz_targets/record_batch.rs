//! A produce payload through batch validation, the record decoder (all codecs), append and read-back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weir::fuzzing::record_batch(data);
});
