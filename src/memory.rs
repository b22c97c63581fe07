//! Gives freed heap memory back to the operating system after connections
//! close.
//!
//! Each open connection holds about 10 KB of heap (its task, the state of
//! its request loop, a 4 KiB read buffer). When a burst of them closes,
//! glibc's malloc keeps the freed chunks for reuse: they sit between live
//! allocations in its arenas, where neither `free` nor `MALLOC_ARENA_MAX`
//! returns them, so resident memory stays at the burst's peak (about 10 MB
//! per 1,000 connections). A second burst reuses them, so nothing grows: it
//! is not a leak, but a broker that once served 10,000 connections would
//! show over 100 MB resident for good. `malloc_trim(0)` hands every free
//! page back.
//!
//! A background task checks every [`CHECK_EVERY`] how many connections have
//! closed since the last trim and trims when at least [`TRIM_AFTER_CLOSES`]
//! have. Measurements: `benches/idle_connections.py`,
//! docs/performance.md#idle-connections. Other allocators than glibc's (a
//! musl build) have no `malloc_trim`; there the task does nothing.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::broker::Broker;

/// How often the closed-connection count is looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);
/// Closed connections that make a trim worth its cost (a trim walks every
/// malloc arena, a few milliseconds for a heap of 150 MB).
pub const TRIM_AFTER_CLOSES: u64 = 256;

/// Connections closed since the broker started.
fn closed(broker: &Broker) -> u64 {
    let total = broker.metrics.connections_total.load(Ordering::Relaxed);
    let open = u64::try_from(broker.metrics.connections.load(Ordering::Relaxed)).unwrap_or(0);
    total.saturating_sub(open)
}

/// Whether a trim is due: enough connections closed since the last one.
pub fn trim_due(closed_now: u64, closed_at_last_trim: u64) -> bool {
    closed_now.saturating_sub(closed_at_last_trim) >= TRIM_AFTER_CLOSES
}

/// Trims after bursts of closed connections until `shutdown`.
pub async fn trim_loop(broker: Arc<Broker>, shutdown: CancellationToken) {
    if !trim_supported() {
        return;
    }
    let mut last = closed(&broker);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let now = closed(&broker);
        if !trim_due(now, last) {
            continue;
        }
        last = now;
        let _ = tokio::task::spawn_blocking(move || {
            let before = resident_bytes();
            let started = Instant::now();
            release_free_memory();
            tracing::debug!(
                closed_connections = now,
                resident_before = before,
                resident_after = resident_bytes(),
                elapsed_us = started.elapsed().as_micros() as u64,
                "returned free heap memory to the system"
            );
        })
        .await;
    }
}

/// Resident memory of this process, from `/proc/self/statm`.
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_supported() -> bool {
    true
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_supported() -> bool {
    false
}

/// Hands the free pages of every malloc arena back to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() {
    // SAFETY: malloc_trim takes no pointers and only releases memory that
    // malloc holds free; glibc documents it as thread-safe (it locks each
    // arena while it walks it).
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Hands free heap memory back to the system (nothing to do here).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_follows_a_burst_of_closes_only() {
        assert!(!trim_due(0, 0));
        assert!(!trim_due(TRIM_AFTER_CLOSES - 1, 0));
        assert!(trim_due(TRIM_AFTER_CLOSES, 0));
        assert!(!trim_due(TRIM_AFTER_CLOSES + 10, 20));
        // A counter read that went backwards never trims.
        assert!(!trim_due(5, 10));
    }

    #[test]
    fn trimming_is_safe_to_call_any_time() {
        let held: Vec<Vec<u8>> = (0..1000).map(|i| vec![1u8; 1000 + i]).collect();
        release_free_memory();
        assert!(held.iter().all(|v| v[0] == 1));
        drop(held);
        release_free_memory();
        assert!(resident_bytes() > 0);
    }
}
