//! How a store's commits were grouped into transactions ([`CommitStats`]).

use std::sync::atomic::{AtomicU64, Ordering};

/// How a store's commits have been grouped since it was opened: what an operator watches to see
/// group commit at work (commits per transaction grow with the number of concurrent callers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CommitStats {
    /// Commits submitted (refused ones included).
    pub commits: u64,
    /// Transactions written for them (each one flush to disk).
    pub transactions: u64,
    /// The most commits one transaction carried.
    pub largest_batch: u64,
    /// Batches that went back to the savepoint around them because one of their commits was
    /// refused after it had begun writing (a duplicate met by an insert): the commits before it
    /// applied again, each one after it in a savepoint of its own. At most once a batch; each is
    /// still one transaction. Always 0 on PostgreSQL, whose server-side function checks a
    /// commit's ids before it writes.
    pub batches_redone: u64,
}

/// Counters behind [`CommitStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    commits: AtomicU64,
    transactions: AtomicU64,
    largest_batch: AtomicU64,
    batches_redone: AtomicU64,
}

impl Counters {
    /// Counts one transaction of `size` commits.
    pub(crate) fn batch(&self, size: usize) {
        let size = size as u64;
        self.commits.fetch_add(size, Ordering::Relaxed);
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.largest_batch.fetch_max(size, Ordering::Relaxed);
    }

    /// Counts a batch applied again, each commit in a savepoint.
    pub(crate) fn redone(&self) {
        self.batches_redone.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub(crate) fn stats(&self) -> CommitStats {
        CommitStats {
            commits: self.commits.load(Ordering::Relaxed),
            transactions: self.transactions.load(Ordering::Relaxed),
            largest_batch: self.largest_batch.load(Ordering::Relaxed),
            batches_redone: self.batches_redone.load(Ordering::Relaxed),
        }
    }
}
