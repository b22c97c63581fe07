//! One integration-test binary, so librdkafka is linked once.
#![allow(clippy::unwrap_used, dead_code)]

mod admin;
mod admin_http;
mod backup;
mod bad_input;
mod cluster;
mod cluster_admin;
mod cluster_groups;
mod cluster_security;
mod cluster_txns;
mod common;
mod compaction;
mod consumer_groups;
mod crash;

mod faults;
mod groups;
mod internal_topics;
mod layers;
mod memory;
mod nemesis;
mod produce_fetch;
mod retry;
mod security;
mod soak;
mod storage;
mod tools;
mod transactions;
