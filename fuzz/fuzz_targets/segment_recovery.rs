//! Partition directories made of arbitrary segment, index and recovery-point files, through recovery, reads, checkpoint, append and reopen.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weir::fuzzing::segment_recovery(data);
});
