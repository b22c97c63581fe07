//! cargo-fuzz targets for weir. The checks live in the broker crate
//! (`weir::fuzzing`, behind its `fuzzing` feature), so that `cargo test`
//! replays the committed corpus and regressions through the same code.
