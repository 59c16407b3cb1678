//! What a loaded resource file holds in memory (BENCHMARKS.md, "Scale"), for the scale
//! benches' file at N = 10, 1,000 and 10,000: the bytes and blocks that the validated
//! configuration and its route index keep, per entry, and the most the load held at once.
//! Counted by dhat, which sees every allocation; the process's RSS is more (the allocator's
//! pages, the code, the runtime), see benches/load/scale.
//!
//! Run with `cargo bench --bench heap`. With `HEAP_PROFILE=1` it also writes
//! `dhat-heap.json`, every allocation site of the 10,000-entry load, for dhat's viewer
//! (`dh_view.html`; sort by "At t-end" for what the configuration keeps).

mod common;

use isogate::config::{self, MissingKeys};
use isogate::proxy::route;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// The sizes measured.
const SIZES: [usize; 3] = [10, 1_000, 10_000];

fn main() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let profile = std::env::var_os("HEAP_PROFILE").is_some();
    println!("| N | held KiB | blocks | bytes per entry | load peak KiB |");
    println!("|--:|--:|--:|--:|--:|");
    for n in SIZES {
        let text = common::scale_file(n);
        let profiler = match profile && n == 10_000 {
            true => dhat::Profiler::new_heap(),
            false => dhat::Profiler::builder().testing().build(),
        };
        let before = dhat::HeapStats::get();
        let config = config::parse(&text, dir.path(), MissingKeys::Generate)
            .unwrap_or_else(|problems| panic!("the scale file is invalid: {problems:?}"));
        let index = route::Index::new(&config.routes);
        let after = dhat::HeapStats::get();
        let held = after.curr_bytes - before.curr_bytes;
        println!(
            "| {n} | {} | {} | {} | {} |",
            held / 1024,
            after.curr_blocks - before.curr_blocks,
            held / n,
            (after.max_bytes - before.curr_bytes) / 1024,
        );
        // What is still allocated when the profiler stops is what the profile's "t-end" shows.
        drop(profiler);
        drop((index, config));
    }
}
