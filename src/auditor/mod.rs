//! The audit log as an auditor sees it: verifying a stored log ([`verify_log`]), signing
//! checkpoints that are never inconsistent ([`checkpoint_log`]), proving an entry's inclusion
//! ([`prove`], [`Receipt`]), and reading a subject's or a consent's history.
//!
//! Everything here reads through [`LogRead`](crate::LogRead) (only signing a checkpoint needs a
//! [`Store`](crate::Store), to record it). It sits above the store layer and below the broker:
//! the pure pieces it builds on are the audit records, [`merkle`](crate::merkle) and
//! [`checkpoint`](crate::checkpoint).

mod history;
mod receipt;
mod signing;
mod verify;

pub use history::{consent_history, history_of_any, subject_history};
pub use receipt::{ProveError, Receipt, ReceiptError, decode_hashes, encode_hashes, prove};
pub use signing::{SigningError, checkpoint_log};
pub use verify::{LogError, LogReport, verify_log};

use crate::merkle::{Hash, MerkleError, NodeSource};
use crate::store::LogRead;

/// How many entries are read from the store at a time.
const CHUNK: u64 = 4096;

/// The Merkle nodes a log holds, as a [`NodeSource`].
#[derive(Debug, Clone, Copy)]
pub struct StoreNodes<'a, S: ?Sized>(pub &'a S);

impl<S: LogRead + ?Sized> NodeSource for StoreNodes<'_, S> {
    fn node(&self, level: u32, index: u64) -> Result<Hash, MerkleError> {
        self.0
            .merkle_node(level, index)
            .map_err(|e| MerkleError::Source(e.to_string()))?
            .ok_or(MerkleError::MissingNode { level, index })
    }
}
