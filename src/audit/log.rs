//! The audit log as an auditor sees it: verifying a stored log against its Merkle tree and a
//! signed checkpoint, proving an entry's inclusion (receipts), and reading a subject's history.
//!
//! Verification recomputes the tree from the stored entry bytes, never from re-encoded entries,
//! and never trusts the store's own hashes: they are only compared with the recomputation, to
//! point at the first entry that no longer hashes to what was appended. A checkpoint that the
//! auditor kept (signed by the broker's checkpoint key) is what catches a consistent rewrite,
//! a truncation or a forged tail.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::AuditEntry;
use super::checkpoint::{self, Checkpoint, CheckpointError, NoteSigner, NoteVerifier};
use super::merkle::{self, Hash, MerkleError, NodeSource, ProofError};
use crate::error::Error;
use crate::ids::{ConsentId, SubjectId};
use crate::store::{Change, Commit, Store, StoreError, StoredCheckpoint};

/// How many entries are read from the store at a time while verifying.
const CHUNK: u64 = 4096;

/// The Merkle nodes a store holds, as a [`NodeSource`].
#[derive(Debug, Clone, Copy)]
pub struct StoreNodes<'a, S: ?Sized>(pub &'a S);

impl<S: Store + ?Sized> NodeSource for StoreNodes<'_, S> {
    fn node(&self, level: u32, index: u64) -> Result<Hash, MerkleError> {
        self.0
            .merkle_node(level, index)
            .map_err(|e| MerkleError::Source(e.to_string()))?
            .ok_or(MerkleError::MissingNode { level, index })
    }
}

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
pub fn verify_log<S: Store + ?Sized>(
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
            while stored_leaves.next_if(|(index, _)| *index < next).is_some() {}
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
fn compare_inner_nodes<S: Store + ?Sized>(
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
    for level in 1..64u32 {
        let count = size >> level;
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

/// Signs a checkpoint of the whole log in `store` with `signer` (C2SP `tlog-checkpoint` in a
/// `signed-note`, origin line `origin`), after proving that the log is consistent with the last
/// checkpoint recorded in the store: two inconsistent checkpoints are never signed. Records it.
///
/// # Errors
/// [`Error::CheckpointInconsistent`]; [`Error::Merkle`]; [`Error::Store`]; [`Error::Checkpoint`].
pub fn checkpoint_log<S: Store + ?Sized>(
    store: &S,
    origin: &str,
    signer: &NoteSigner,
) -> Result<StoredCheckpoint, Error> {
    let nodes = StoreNodes(store);
    // The recorded checkpoint is read before the log's size: the log only grows, so the size read
    // after it is at least the checkpoint's. Read the other way round, a larger checkpoint
    // recorded in between (by another thread or broker) would look like a truncated log.
    let previous = store.latest_checkpoint()?;
    let size = store.audit_len()?;
    let root = merkle::root(size, &nodes)?;
    if let Some(previous) = &previous {
        let inconsistent = Error::CheckpointInconsistent {
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
    let commit = Commit {
        changes: vec![Change::RecordCheckpoint(signed.clone())],
        ..Commit::default()
    };
    match store.commit(commit) {
        // A larger checkpoint recorded meanwhile by another broker on the same store was checked
        // against the same append-only history; this one stays valid for its size.
        Ok(_) | Err(StoreError::Conflict) => Ok(signed),
        Err(error) => Err(error.into()),
    }
}

/// Proof that an entry is in the log: the entry, its inclusion proof, and the signed checkpoint
/// the proof leads to. A subject keeps it to show later what was decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The entry's position.
    pub index: u64,
    /// The entry's bytes (UTF-8 JSON), exactly as hashed.
    pub entry: String,
    /// The tree size the proof is for (the checkpoint's size).
    pub tree_size: u64,
    /// The inclusion proof, standard base64 hashes.
    pub proof: Vec<String>,
    /// The signed checkpoint (C2SP signed note).
    pub checkpoint: String,
}

/// Why a receipt does not prove its entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The checkpoint is not valid for the given key.
    #[error("the receipt's checkpoint is not valid: {0}")]
    Checkpoint(CheckpointError),
    /// The checkpoint covers another tree size than the proof.
    #[error("the receipt's proof is for size {proof} but its checkpoint covers {checkpoint}")]
    SizeMismatch {
        /// Size in the proof.
        proof: u64,
        /// Size in the checkpoint.
        checkpoint: u64,
    },
    /// A proof hash is not base64 of 32 bytes.
    #[error("the receipt's proof is malformed")]
    MalformedProof,
    /// The inclusion proof does not lead to the checkpoint's root.
    #[error("the entry is not proven by the checkpoint: {0}")]
    Proof(ProofError),
    /// The entry's bytes are not an audit entry at the receipt's index.
    #[error("the receipt's entry is malformed or misplaced")]
    MalformedEntry,
}

impl Receipt {
    /// Checks the receipt against the broker's checkpoint key and returns the proven entry.
    ///
    /// # Errors
    /// [`ReceiptError`].
    pub fn verify(&self, verifier: &NoteVerifier) -> Result<AuditEntry, ReceiptError> {
        let checkpoint = checkpoint::verify_checkpoint(&self.checkpoint, verifier, None)
            .map_err(ReceiptError::Checkpoint)?;
        if checkpoint.size != self.tree_size {
            return Err(ReceiptError::SizeMismatch {
                proof: self.tree_size,
                checkpoint: checkpoint.size,
            });
        }
        let proof = decode_hashes(&self.proof).ok_or(ReceiptError::MalformedProof)?;
        let leaf = merkle::leaf_hash(self.entry.as_bytes());
        merkle::verify_inclusion(self.index, self.tree_size, &leaf, &proof, &checkpoint.root)
            .map_err(ReceiptError::Proof)?;
        let entry = AuditEntry::from_bytes(self.entry.as_bytes())
            .map_err(|_| ReceiptError::MalformedEntry)?;
        if entry.seq != self.index {
            return Err(ReceiptError::MalformedEntry);
        }
        Ok(entry)
    }
}

/// Standard base64 of each hash.
pub fn encode_hashes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(|h| STANDARD.encode(h)).collect()
}

/// Decodes standard base64 hashes; `None` if any is not 32 bytes of base64.
pub fn decode_hashes(encoded: &[String]) -> Option<Vec<Hash>> {
    encoded
        .iter()
        .map(|h| {
            STANDARD
                .decode(h)
                .ok()
                .and_then(|bytes| Hash::try_from(bytes.as_slice()).ok())
        })
        .collect()
}

/// Every entry about a subject: those naming the subject, and those naming one of the subject's
/// consents (an access refused for a prohibited purpose names only the consent), in order.
///
/// # Errors
/// [`StoreError`].
pub fn subject_history<S: Store + ?Sized>(
    store: &S,
    subject: &SubjectId,
) -> Result<Vec<AuditEntry>, StoreError> {
    // An entry that names only a consent id counts if it is about one of the subject's
    // consents, from the moment that consent was requested (an earlier denial may name an id
    // that did not exist yet).
    let consents: Vec<(ConsentId, time::OffsetDateTime)> = store
        .consents_of_subject(subject)?
        .iter()
        .map(|c| (c.id().clone(), c.request.requested_at))
        .collect();
    entries_where(store, |entry| {
        entry.record.subject.as_ref() == Some(subject)
            || entry.record.consent.as_ref().is_some_and(|id| {
                consents
                    .iter()
                    .any(|(c, since)| c == id && entry.record.at >= *since)
            })
    })
}

/// Every entry about a consent, in order.
///
/// # Errors
/// [`StoreError`].
pub fn consent_history<S: Store + ?Sized>(
    store: &S,
    consent: &ConsentId,
) -> Result<Vec<AuditEntry>, StoreError> {
    entries_where(store, |entry| {
        entry.record.consent.as_ref() == Some(consent)
    })
}

fn entries_where<S: Store + ?Sized>(
    store: &S,
    keep: impl Fn(&AuditEntry) -> bool,
) -> Result<Vec<AuditEntry>, StoreError> {
    let size = store.audit_len()?;
    let mut found = Vec::new();
    let mut next = 0u64;
    while next < size {
        let end = next.saturating_add(CHUNK).min(size);
        let chunk = store.audit_entries(next..end)?;
        // Read what the store holds, not what it claims: a tampered length must not turn a
        // history into billions of empty reads.
        if chunk.is_empty() {
            return Err(StoreError::Corrupt(format!(
                "the audit log claims {size} entries but holds none from {next}"
            )));
        }
        found.extend(chunk.into_iter().filter(|e| keep(e)));
        next = end;
    }
    Ok(found)
}
