//! Receipts: an entry, its inclusion proof and the signed checkpoint the proof leads to. Pure:
//! checking one needs only the broker's verifier key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::audit::AuditEntry;
use crate::checkpoint::{self, CheckpointError, NoteVerifier};
use crate::merkle::{self, Hash, ProofError};
use crate::store::{LogRead, RecordKind, StoreError, StoredCheckpoint};

use super::StoreNodes;

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

/// Why a receipt could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProveError {
    /// The store failed, or has no such entry (`Missing`).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The checkpoint does not cover the entry.
    #[error("the checkpoint of size {size} does not cover entry {index}")]
    NotCovered {
        /// The entry.
        index: u64,
        /// The checkpoint's size.
        size: u64,
    },
    /// The stored tree could not give the proof.
    #[error("the audit log's Merkle tree is unusable: {0}")]
    Merkle(#[from] crate::merkle::MerkleError),
    /// The entry's bytes are not UTF-8 (they were altered).
    #[error("entry {0} is not UTF-8")]
    NotUtf8(u64),
}

/// A receipt for entry `index` of `log`, proven against `checkpoint` (which must cover it).
///
/// # Errors
/// [`ProveError`].
pub fn prove<S: LogRead + ?Sized>(
    log: &S,
    index: u64,
    checkpoint: &StoredCheckpoint,
) -> Result<Receipt, ProveError> {
    if index >= checkpoint.size {
        return Err(ProveError::NotCovered {
            index,
            size: checkpoint.size,
        });
    }
    let stored = log
        .audit_bytes(index..index.saturating_add(1))?
        .pop()
        .ok_or_else(|| StoreError::Missing {
            kind: RecordKind::AuditEntry,
            id: index.to_string(),
        })?;
    let entry = String::from_utf8(stored.bytes).map_err(|_| ProveError::NotUtf8(index))?;
    let proof = merkle::inclusion_proof(index, checkpoint.size, &StoreNodes(log))?;
    Ok(Receipt {
        index,
        entry,
        tree_size: checkpoint.size,
        proof: encode_hashes(&proof),
        checkpoint: checkpoint.note.clone(),
    })
}
