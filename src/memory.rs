//! Memory given back after a load, when the allocator (mimalloc) purges with a delay: `serve`
//! runs with `MIMALLOC_PURGE_DELAY=10` unless it is set (see the binary's `purge_soon`).
//! mimalloc returns freed memory to the operating system only when a later free finds the delay
//! passed. Parsing a large resource file frees many times the file's size at
//! once, and an idle process may free nothing afterwards: measured with 10,000 entries and the
//! 1 s default, 208 MiB stayed resident. So a moment after each load, one large block is
//! allocated and freed, which lets the allocator purge what the load freed: 53 MiB (27 MiB
//! with the delay at 10 ms).

use std::time::Duration;

/// Longer than the allocator's purge delay.
const AFTER: Duration = Duration::from_millis(1_500);

/// How long an idle blocking thread of the main runtime (where a reload parses) is kept, well
/// under [`AFTER`]. What a thread's heap took stays resident until the thread ends: with tokio's
/// 10 s the parse's thread outlived the purge after it, and 10,000 entries read a median 42.9 MiB
/// after a few reloads, 37.0 MiB with this (BENCHMARKS.md, "Scale", "sixth").
pub const BLOCKING_KEEP_ALIVE: Duration = Duration::from_millis(200);

/// Large enough to be a block of its own, never written (so never resident).
const BLOCK: usize = 64 << 20;

/// How many times, `AFTER` apart. After a start one round gave the same 55 MiB as three; the
/// later rounds are for a reload, whose previous configuration is freed only when its last
/// request ends (not measured apart).
const ROUNDS: u32 = 3;

/// Schedules the purge, on the current tokio runtime.
pub(crate) fn release_after_load() {
    tokio::spawn(async {
        for _ in 0..ROUNDS {
            tokio::time::sleep(AFTER).await;
            let block: Vec<u8> = Vec::with_capacity(BLOCK);
            drop(std::hint::black_box(block));
        }
    });
}
