//! A checked call does not grow a heap block in place of sizing it: glibc's `realloc` takes the
//! lock of the arena the block came from (its `malloc` and `free` mostly do not, through the
//! thread's cache), so two threads deciding at once queued on that lock, with a futex sleep and
//! wake-up each time, whenever their blocks had come from one arena. This binary has a counting
//! global allocator of its own, and one test, so that nothing else runs while it counts.

#![expect(clippy::unwrap_used, reason = "tests fail by panicking")]

use consent_broker::testing::TestBroker;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Decisions counted.
const DECISIONS: usize = 2_000;

#[test]
fn a_decision_on_the_memory_store_reallocates_nothing_of_its_own() {
    let kit = TestBroker::memory();
    let access = kit.access(kit.granted().id());
    // Warm: the views, the pseudonyms and the log's first chunks.
    for _ in 0..100 {
        kit.broker.authorise_access(&access).unwrap();
    }
    let region = Region::new(GLOBAL);
    for _ in 0..DECISIONS {
        kit.broker.authorise_access(&access).unwrap();
    }
    let change = region.change();
    // What is left is the log's own storage growing (amortised doubling of its vectors: 42
    // over this run when written); before the entry's buffer and the plan's lists were sized,
    // every decision grew two blocks (4,042 here).
    assert!(
        change.reallocations * 20 <= DECISIONS,
        "{} reallocations in {DECISIONS} decisions ({} allocations)",
        change.reallocations,
        change.allocations
    );
    assert!(
        change.allocations >= DECISIONS,
        "the region counted the decisions"
    );
}
