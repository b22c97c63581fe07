//! The tools of the `weir` binary, outside the broker library.

pub mod admin;
pub mod args;
pub mod bench;
pub mod client;
pub mod groups;
pub mod topics;
pub mod users;
