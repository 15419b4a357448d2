//! Verifying a stored log against its Merkle tree and a signed checkpoint.
//!
//! Verification recomputes the tree from the stored entry bytes, never from re-encoded entries,
//! and never trusts the store's own hashes: they are only compared with the recomputation, to
//! point at the first entry that no longer hashes to what was appended. A checkpoint that the
//! auditor kept (signed by the broker's checkpoint key) is what catches a consistent rewrite, a
//! truncation or a forged tail. Reads only: [`LogRead`] is all it takes.
//!
//! Every stored node is compared, except those of the levels a store derives from its leaves
//! ([`LogRead::derived_levels`], at most [`MAX_SKIPPED_LEVELS`]), which cannot disagree with the
//! leaves checked here. So an entry rewritten together with its leaf hash, and nothing above it,
//! is caught by the first stored node above that leaf: on SQLite, which derives levels 1 to 3,
//! the level-4 node over its sixteen entries, which exists once those sixteen are all logged. In
//! the log's last `size % 16` entries such an edit is caught by a checkpoint the auditor kept,
//! as any rewrite of entries appended after the last checkpoint is caught by the next one.

use crate::checkpoint::{self, Checkpoint, CheckpointError, NoteVerifier};
use crate::merkle::{self, Hash, MerkleError, NodeSource};
use crate::store::{LogRead, StoreError};

use super::CHUNK;

/// The most levels above the leaves that [`verify_log`] leaves uncompared because a store says
/// it derives them (the SQLite store's three): a store that claims more has the rest compared.
pub const MAX_SKIPPED_LEVELS: u32 = 3;

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogReport {
    /// Entries verified.
    pub size: u64,
    /// The root recomputed over all of them.
    pub root: Hash,
    /// The checkpoint the log was checked against, if one was given.
    pub checkpoint: Option<Checkpoint>,
}

/// Why a log failed verification. Where an entry is to blame, [`LogError::first_bad_index`]
/// names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The store could not be read.
    #[error("the log could not be read: {0}")]
    Store(#[from] StoreError),
    /// A sequence number is missing: an entry was deleted.
    #[error("entry {index} is missing")]
    MissingEntry {
        /// The first missing position.
        index: u64,
    },
    /// The entry's bytes no longer hash to the leaf appended at its position: it was altered,
    /// swapped or replaced.
    #[error("entry {index} does not match what was appended (altered, swapped or replaced)")]
    AlteredEntry {
        /// Its position.
        index: u64,
    },
    /// An entry with no Merkle leaf: appended behind the broker's back.
    #[error("entry {index} was never appended through the log (no Merkle leaf)")]
    ForgedEntry {
        /// Its position.
        index: u64,
    },
    /// Every entry matches its stored leaf, but the stored inner nodes do not: the tree itself
    /// was tampered with.
    #[error("the stored Merkle tree disagrees with the entries at size {size}")]
    TreeMismatch {
        /// The size compared.
        size: u64,
    },
    /// The checkpoint's signature, format or origin is not valid.
    #[error("the checkpoint is not valid: {0}")]
    Checkpoint(CheckpointError),
    /// The log is shorter than a checkpoint signed for it: it was truncated.
    #[error("the log has {log_size} entries but a checkpoint covers {checkpoint_size}: truncated")]
    Truncated {
        /// Entries in the log.
        log_size: u64,
        /// Entries the checkpoint covers.
        checkpoint_size: u64,
    },
    /// The first `checkpoint_size` entries do not hash to the checkpoint's root: history was
    /// rewritten (consistently with the stored tree, so no single entry can be named).
    #[error("the first {checkpoint_size} entries do not match the signed checkpoint: rewritten")]
    CheckpointMismatch {
        /// Entries the checkpoint covers.
        checkpoint_size: u64,
    },
}

impl LogError {
    /// The position of the first bad entry, where one can be named.
    pub fn first_bad_index(&self) -> Option<u64> {
        match self {
            Self::MissingEntry { index }
            | Self::AlteredEntry { index }
            | Self::ForgedEntry { index } => Some(*index),
            Self::Truncated { log_size, .. } => Some(*log_size),
            _ => None,
        }
    }
}

/// Verifies the whole stored log, and, given a signed checkpoint and the verifier key the
/// auditor trusts, that the log is consistent with it (its prefix hashes to the checkpoint's
/// root).
///
/// # Errors
/// [`LogError`], naming the first bad entry where one can be named.
pub fn verify_log<S: LogRead + ?Sized>(
    store: &S,
    checkpoint: Option<(&str, &NoteVerifier)>,
) -> Result<LogReport, LogError> {
    let checkpoint = match checkpoint {
        // Our notes are signed by a key named after the log's origin.
        Some((note, verifier)) => Some(
            checkpoint::verify_checkpoint(note, verifier, Some(verifier.name()))
                .map_err(LogError::Checkpoint)?,
        ),
        None => None,
    };
    let size = store.audit_len()?;
    // Recompute every node from the stored bytes (about 64 bytes of memory per entry), then
    // compare each with the store's: the first entry whose leaf differs is named, and a
    // tampered inner node is caught even where no root or proof would pass through it.
    // Reserved for at most a million entries up front: the length is the store's claim, and a
    // tampered store may claim any length; beyond that the vector grows as entries are read.
    let mut leaves: Vec<Hash> = Vec::with_capacity(usize::try_from(size.min(1 << 20)).unwrap_or(0));
    let mut next = 0u64;
    while next < size {
        let end = next.saturating_add(CHUNK).min(size);
        let chunk = store.audit_bytes(next..end)?;
        if chunk.is_empty() {
            return Err(LogError::MissingEntry { index: next });
        }
        let mut stored_leaves = store.merkle_nodes(0, next..end)?.into_iter().peekable();
        for entry in chunk {
            if entry.seq != next {
                return Err(LogError::MissingEntry { index: next });
            }
            let leaf = merkle::leaf_hash(&entry.bytes);
            // Rows come in index order from `next` on: one below `next` is a leaf stored twice.
            if stored_leaves.next_if(|(index, _)| *index < next).is_some() {
                return Err(LogError::TreeMismatch { size });
            }
            match stored_leaves.next_if(|(index, _)| *index == next) {
                Some((_, stored)) if stored == leaf => {}
                Some(_) => return Err(LogError::AlteredEntry { index: next }),
                None => return Err(LogError::ForgedEntry { index: next }),
            }
            leaves.push(leaf);
            next += 1;
        }
    }
    if let Some(checkpoint) = checkpoint.as_ref().filter(|c| c.size > size) {
        return Err(LogError::Truncated {
            log_size: size,
            checkpoint_size: checkpoint.size,
        });
    }
    let recomputed = Levels::build(leaves);
    compare_inner_nodes(store, &recomputed, size)?;
    let root = merkle::root(size, &recomputed).map_err(|_| LogError::TreeMismatch { size })?;
    if let Some(checkpoint) = &checkpoint {
        let prefix_root = merkle::root(checkpoint.size, &recomputed)
            .map_err(|_| LogError::TreeMismatch { size })?;
        if prefix_root != checkpoint.root {
            return Err(LogError::CheckpointMismatch {
                checkpoint_size: checkpoint.size,
            });
        }
    }
    Ok(LogReport {
        size,
        root,
        checkpoint,
    })
}

/// Every complete subtree's hash, level by level, computed bottom-up from the leaves: each level
/// is one pass over the one below (no per-leaf bookkeeping), about 64 bytes per entry in all.
struct Levels(Vec<Vec<Hash>>);

impl Levels {
    fn build(leaves: Vec<Hash>) -> Self {
        let mut levels = vec![leaves];
        while let Some(below) = levels.last().filter(|level| level.len() > 1) {
            // Pairs (0,1), (2,3), …; an odd last node has no complete parent yet.
            let lefts = below.iter().step_by(2);
            let rights = below.iter().skip(1).step_by(2);
            let above: Vec<Hash> = lefts
                .zip(rights)
                .map(|(l, r)| merkle::node_hash(l, r))
                .collect();
            levels.push(above);
        }
        Self(levels)
    }
}

impl NodeSource for Levels {
    fn node(&self, level: u32, index: u64) -> Result<Hash, MerkleError> {
        usize::try_from(level)
            .ok()
            .and_then(|level| self.0.get(level))
            .and_then(|nodes| nodes.get(usize::try_from(index).ok()?))
            .copied()
            .ok_or(MerkleError::MissingNode { level, index })
    }
}

/// Every stored inner node must equal the recomputed one, and no node may be stored for a
/// subtree that is not complete (nor a leaf past the end).
fn compare_inner_nodes<S: LogRead + ?Sized>(
    store: &S,
    recomputed: &Levels,
    size: u64,
) -> Result<(), LogError> {
    let mismatch = LogError::TreeMismatch { size };
    if !store
        .merkle_nodes(0, size..size.saturating_add(1))?
        .is_empty()
    {
        return Err(mismatch);
    }
    // Levels the store derives from the leaves (checked above) cannot disagree with them. At
    // most the levels the SQLite store derives are skipped, whatever a store claims: nodes a
    // store says it derives above them are compared as it answers them.
    let derived = store.derived_levels().min(MAX_SKIPPED_LEVELS);
    for level in 1..64u32 {
        let count = size >> level;
        if level <= derived {
            continue;
        }
        let mut start = 0u64;
        // Read one index past the complete subtrees: a node there must not exist.
        let limit = count.saturating_add(1);
        while start < limit {
            let end = start.saturating_add(CHUNK).min(limit);
            let stored = store.merkle_nodes(level, start..end)?;
            for (index, hash) in &stored {
                if *index >= count || recomputed.node(level, *index).ok() != Some(*hash) {
                    return Err(mismatch);
                }
            }
            if stored.len() as u64 != end.min(count).saturating_sub(start) {
                return Err(mismatch);
            }
            start = end;
        }
        if count == 0 {
            break;
        }
    }
    Ok(())
}
