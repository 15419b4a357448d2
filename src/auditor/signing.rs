//! Signing checkpoints of a stored log, never two that are inconsistent.

use crate::checkpoint::{self, Checkpoint, CheckpointError, NoteError, NoteSigner};
use crate::merkle::{self, MerkleError};
use crate::store::{SignedCheckpoint, Store, StoreError, StoredCheckpoint};

use super::StoreNodes;

/// Why a checkpoint was not signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigningError {
    /// The log is not consistent with the last checkpoint recorded: history was rewritten or
    /// truncated behind the signer's back, and it refuses to sign another.
    #[error(
        "the audit log is inconsistent with the checkpoint of size {previous_size}; refusing to sign"
    )]
    Inconsistent {
        /// The size of the last checkpoint recorded.
        previous_size: u64,
    },
    /// The log's Merkle tree could not be read.
    #[error("the audit log's Merkle tree is unusable: {0}")]
    Merkle(#[from] MerkleError),
    /// The store failed.
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    /// The note could not be signed.
    #[error("signed note: {0}")]
    Note(#[from] NoteError),
    /// The checkpoint could not be made.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
}

/// Signs a checkpoint of the whole log in `store` with `signer` (C2SP `tlog-checkpoint` in a
/// `signed-note`, origin line `origin`), after proving that the log is consistent with the last
/// checkpoint recorded in the store: two inconsistent checkpoints are never signed. Records it.
///
/// # Errors
/// [`SigningError`].
pub fn checkpoint_log<S: Store + ?Sized>(
    store: &S,
    origin: &str,
    signer: &NoteSigner,
) -> Result<StoredCheckpoint, SigningError> {
    let nodes = StoreNodes(store);
    // The recorded checkpoint is read before the log's size: the log only grows, so the size read
    // after it is at least the checkpoint's. Read the other way round, a larger checkpoint
    // recorded in between (by another thread or broker) would look like a truncated log.
    let previous = store.latest_checkpoint()?;
    let size = store.audit_len()?;
    let root = merkle::root(size, &nodes)?;
    if let Some(previous) = &previous {
        let inconsistent = SigningError::Inconsistent {
            previous_size: previous.size,
        };
        if previous.size > size {
            return Err(inconsistent);
        }
        if previous.size == size && previous.root != root {
            return Err(inconsistent);
        }
        if previous.size > 0 && previous.size < size {
            let proof = merkle::consistency_proof(previous.size, size, &nodes)?;
            merkle::verify_consistency(previous.size, size, &previous.root, &root, &proof)
                .map_err(|_| inconsistent)?;
        }
    }
    let body = Checkpoint {
        origin: origin.to_owned(),
        size,
        root,
        extensions: Vec::new(),
    };
    let note = checkpoint::sign_checkpoint(&body, signer)?;
    let signed = StoredCheckpoint { size, root, note };
    // Always a fresh signature by `signer`; the store records one checkpoint per size (the
    // first), which is all the consistency check above needs.
    if previous.is_some_and(|previous| previous.size == size) {
        return Ok(signed);
    }
    match store.record_checkpoint(&SignedCheckpoint::new(signed.clone())) {
        // A larger checkpoint recorded meanwhile by another broker on the same store was checked
        // against the same append-only history; this one stays valid for its size.
        Ok(_) | Err(StoreError::Conflict) => Ok(signed),
        Err(error) => Err(error.into()),
    }
}
