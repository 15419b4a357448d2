//! A witness (C2SP `tlog-witness`) and the log's side of asking witnesses to cosign.
//!
//! A witness keeps, per log (its origin), the last checkpoint it cosigned, in its own SQLite
//! file. It cosigns a new checkpoint only with the log's valid signature and a consistency proof
//! from that last one, and answers with the protocol's status codes: a rolled-back store (a
//! smaller tree, or one that does not extend what was cosigned) or a fork (another tree of the
//! same size) is refused, and the refusal is the alarm. The bank, a regulator or a consumer group
//! can each run one; [`Cosigning`] is the log's side, which sends each witness the checkpoint
//! with the proof it needs and collects the cosignatures.
//!
//! The request is the `add-checkpoint` body: `old <size>`, up to 63 consistency proof hashes in
//! base64 (one per line), a blank line, then the signed checkpoint. Over HTTP it is
//! `POST <prefix>/add-checkpoint` (the networking work); here it is a call.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::auditor::StoreNodes;
use crate::checkpoint::{NoteVerifier, SIG_PREFIX};
use crate::cosignature::{CosignatureVerifier, WitnessPolicy, add_cosignatures, verify_witnessed};
use crate::merkle::{self, Hash};
use crate::store::{LogRead, StoredCheckpoint};

#[cfg(feature = "sqlite")]
mod durable;
#[cfg(feature = "sqlite")]
pub use durable::Witness;

/// The most consistency proof lines a request may carry.
pub const MAX_PROOF_LINES: usize = 63;
/// The largest request accepted, in bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// An `add-checkpoint` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The size of the checkpoint the witness cosigned last, as the log believes (0 for none).
    pub old_size: u64,
    /// The consistency proof from that size to the checkpoint's.
    pub proof: Vec<Hash>,
    /// The signed checkpoint.
    pub note: String,
}

/// Why a witness did not cosign, with the protocol's HTTP status ([`WitnessError::status`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessError {
    /// 404: the witness does not follow a log of this origin.
    #[error("unknown log")]
    UnknownOrigin,
    /// 403: no signature by the log's trusted key verifies.
    #[error("the checkpoint is not signed by the log's key")]
    Forbidden,
    /// 400: a malformed request, or an old size above the checkpoint's.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 409: the old size is not the size the witness cosigned last (`size`).
    #[error("the witness last cosigned size {size}")]
    Conflict {
        /// The size of the checkpoint the witness cosigned last.
        size: u64,
    },
    /// 422: the checkpoint is not consistent with what the witness cosigned (a bad proof, a
    /// different root at the same size, a proof where none belongs).
    #[error("not consistent with the last cosigned checkpoint: {0}")]
    Inconsistent(String),
    /// 500: the witness's own state could not be read or written (nothing was cosigned).
    #[error("the witness's state failed: {0}")]
    State(String),
    /// 502: the witness could not be reached, or answered something that is not `tlog-witness`
    /// (a client across the network reports this; a witness never does).
    #[error("the witness could not be reached: {0}")]
    Unreachable(String),
}

impl WitnessError {
    /// The HTTP status of the refusal (C2SP `tlog-witness`).
    pub fn status(&self) -> u16 {
        match self {
            Self::UnknownOrigin => 404,
            Self::Forbidden => 403,
            Self::BadRequest(_) => 400,
            Self::Conflict { .. } => 409,
            Self::Inconsistent(_) => 422,
            Self::State(_) => 500,
            Self::Unreachable(_) => 502,
        }
    }
}

pub(crate) fn bad(why: &str) -> WitnessError {
    WitnessError::BadRequest(why.to_owned())
}

impl AddCheckpoint {
    /// Parses a request body.
    ///
    /// # Errors
    /// [`WitnessError::BadRequest`].
    pub fn parse(body: &str) -> Result<Self, WitnessError> {
        if body.len() > MAX_REQUEST_BYTES {
            return Err(bad("too large"));
        }
        let (head, note) = body
            .split_once("\n\n")
            .ok_or_else(|| bad("no blank line"))?;
        let mut lines = head.split('\n');
        let old = lines
            .next()
            .and_then(|line| line.strip_prefix("old "))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .filter(|n| *n == "0" || !n.starts_with('0'))
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| bad("no old size line"))?;
        let proof = lines
            .map(|line| {
                BASE64
                    .decode(line)
                    .ok()
                    .and_then(|bytes| Hash::try_from(bytes).ok())
                    .ok_or_else(|| bad("a proof line is not a base64 hash"))
            })
            .collect::<Result<Vec<Hash>, _>>()?;
        if proof.len() > MAX_PROOF_LINES {
            return Err(bad("too many proof lines"));
        }
        Ok(Self {
            old_size: old,
            proof,
            note: note.to_owned(),
        })
    }

    /// The request body.
    pub fn to_body(&self) -> String {
        let mut body = format!("old {}\n", self.old_size);
        for hash in &self.proof {
            body.push_str(&BASE64.encode(hash));
            body.push('\n');
        }
        body.push('\n');
        body.push_str(&self.note);
        body
    }
}

/// Where a log sends `add-checkpoint` requests: a [`Witness`] in this process, or one across
/// the network.
pub trait WitnessClient {
    /// Sends a request body; the cosignature line(s), or the witness's refusal.
    ///
    /// # Errors
    /// [`WitnessError`].
    fn add_checkpoint(&self, body: &str) -> Result<String, WitnessError>;
}

/// Why a witness did not cosign a checkpoint the log asked it to: an alarm for the operator (and
/// for anyone who reads the published checkpoint without enough cosignatures).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CosigningAlarm {
    /// The witness cosigned a larger tree than this checkpoint: the log was rolled back.
    #[error("{witness} cosigned size {witnessed}, above this checkpoint's {size}: a rollback")]
    Rollback {
        /// The witness.
        witness: String,
        /// The size it cosigned.
        witnessed: u64,
        /// This checkpoint's size.
        size: u64,
    },
    /// The witness's last cosigned tree is not a prefix of this one: the log was rewritten or
    /// forked.
    #[error("{witness} refuses: {reason}")]
    Inconsistent {
        /// The witness.
        witness: String,
        /// Its reason.
        reason: String,
    },
    /// Anything else: the witness refused or failed, or answered with a line that does not
    /// verify.
    #[error("{witness}: {reason}")]
    Failed {
        /// The witness.
        witness: String,
        /// What happened.
        reason: String,
    },
}

/// The log's side: the witnesses it asks, and the size each cosigned last (learned from the
/// witness when unknown).
pub struct Cosigning<'a> {
    witnesses: Vec<(&'a dyn WitnessClient, CosignatureVerifier)>,
    last: HashMap<String, u64>,
}

impl std::fmt::Debug for Cosigning<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cosigning")
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

/// A checkpoint with the cosignatures it got, and the alarms of the witnesses that refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosigned {
    /// The signed note with every cosignature line appended.
    pub note: String,
    /// The witnesses that cosigned.
    pub cosigned_by: Vec<String>,
    /// The witnesses that did not, and why.
    pub alarms: Vec<CosigningAlarm>,
}

impl<'a> Cosigning<'a> {
    /// Asks these witnesses, each with the key its cosignatures must verify under.
    pub fn new(witnesses: Vec<(&'a dyn WitnessClient, CosignatureVerifier)>) -> Self {
        Self {
            witnesses,
            last: HashMap::new(),
        }
    }

    /// Sends `checkpoint` to every witness with a consistency proof from the size it cosigned
    /// last (asking once more with the size a 409 names), and returns the note with the
    /// cosignatures that verified, and an alarm per witness that refused.
    ///
    /// # Errors
    /// None for a refusal (that is an alarm); the store's error when a proof cannot be made.
    pub fn cosign(
        &mut self,
        store: &impl LogRead,
        checkpoint: &StoredCheckpoint,
        log: &NoteVerifier,
    ) -> Result<Cosigned, merkle::MerkleError> {
        let mut cosigned = Cosigned {
            note: checkpoint.note.clone(),
            cosigned_by: Vec::new(),
            alarms: Vec::new(),
        };
        for (client, verifier) in &self.witnesses {
            let name = verifier.name().to_owned();
            let mut old = self.last.get(&name).copied().unwrap_or(0);
            let mut outcome = None;
            for _ in 0..2 {
                if old > checkpoint.size {
                    outcome = Some(Err(CosigningAlarm::Rollback {
                        witness: name.clone(),
                        witnessed: old,
                        size: checkpoint.size,
                    }));
                    break;
                }
                let proof = if old == 0 || old == checkpoint.size {
                    Vec::new()
                } else {
                    merkle::consistency_proof(old, checkpoint.size, &StoreNodes(store))?
                };
                let request = AddCheckpoint {
                    old_size: old,
                    proof,
                    note: checkpoint.note.clone(),
                };
                match client.add_checkpoint(&request.to_body()) {
                    Ok(lines) => {
                        outcome = Some(accept(&checkpoint.note, &lines, log, verifier));
                        break;
                    }
                    Err(WitnessError::Conflict { size }) if size != old => old = size,
                    Err(WitnessError::Inconsistent(reason)) => {
                        outcome = Some(Err(CosigningAlarm::Inconsistent {
                            witness: name.clone(),
                            reason,
                        }));
                        break;
                    }
                    Err(error) => {
                        outcome = Some(Err(CosigningAlarm::Failed {
                            witness: name.clone(),
                            reason: error.to_string(),
                        }));
                        break;
                    }
                }
            }
            match outcome {
                Some(Ok(lines)) => {
                    cosigned.note = add_cosignatures(&cosigned.note, &lines);
                    cosigned.cosigned_by.push(name.clone());
                    self.last.insert(name, checkpoint.size);
                }
                Some(Err(alarm)) => cosigned.alarms.push(alarm),
                None => cosigned.alarms.push(CosigningAlarm::Failed {
                    witness: name,
                    reason: "the witness kept naming another size".into(),
                }),
            }
        }
        Ok(cosigned)
    }
}

/// The witness's answer, kept only if it verifies as its cosignature of this checkpoint.
fn accept(
    note: &str,
    lines: &str,
    log: &NoteVerifier,
    verifier: &CosignatureVerifier,
) -> Result<String, CosigningAlarm> {
    // One line of the witness's own that verifies, and nothing else it sent (a line in another
    // witness's name, junk that would push the note past its limits for every reader).
    let prefix = format!("{SIG_PREFIX}{} ", verifier.name());
    let policy = WitnessPolicy {
        witnesses: vec![verifier.clone()],
        quorum: 1,
    };
    // Candidates are checked cheaply (name, length, key id) before any signature is.
    let own_key = |line: &&str| {
        line.strip_prefix(&prefix)
            .filter(|b64| b64.len() <= 128)
            .and_then(|b64| BASE64.decode(b64).ok())
            .is_some_and(|blob| blob.get(..4) == Some(&verifier.key_id()[..]))
    };
    lines
        .get(..lines.len().min(crate::checkpoint::MAX_NOTE_BYTES))
        .unwrap_or_default()
        .lines()
        .filter(own_key)
        .take(4)
        .map(|line| format!("{line}\n"))
        .find(|own| verify_witnessed(&add_cosignatures(note, own), log, None, &policy).is_ok())
        .ok_or_else(|| CosigningAlarm::Failed {
            witness: verifier.name().to_owned(),
            reason: "no cosignature of its own that verifies".to_owned(),
        })
        .map_err(|error| CosigningAlarm::Failed {
            witness: verifier.name().to_owned(),
            reason: error.to_string(),
        })
}
