//! The bank monitors the platform's log: every token its gate served must appear in the
//! broker's published log (its `token_issued` entry, by `jti`) under a checkpoint the bank's
//! witness policy accepts, within a maximum merge delay of being served; and every attestation a
//! served token rested on must appear as an approval there. A platform that issues tokens from a
//! store it does not publish (a shadow broker with the same keys, a forked or rolled-back log)
//! is found out by what is missing.
//!
//! The monitor reads the published tiles (C2SP tlog-tiles) and only what is new since its last
//! pass (see [`crate::tiles::TiledLog`]), never the platform's database. What to do when
//! something is missing is the bank's policy; the documented response is to suspend the
//! platform (stop serving its tokens) and raise it with the platform and the supervisor, with the
//! journal entries and the checkpoint as evidence.

use std::collections::{HashMap, HashSet};

use time::{Duration, OffsetDateTime};

use super::Bank;
use crate::audit::{AuditEntry, AuditEvent};
use crate::checkpoint::NoteVerifier;
use crate::cosignature::{WitnessPolicy, WitnessedError, verify_witnessed};
use crate::store::{LedgerRead, LogRead, Store, StoreError};
use crate::tiles::{CHECKPOINT_FILE, TileError, TileSource, TiledLog};

/// How long a served token may take to appear in the platform's published log, by default.
pub const DEFAULT_MAX_MERGE_DELAY: Duration = Duration::hours(1);

/// A token the gate served that the platform's log does not show (in time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingToken {
    /// The token's `jti`.
    pub token_id: String,
    /// The attestation it rested on.
    pub attestation: String,
    /// When the gate served it.
    pub served_at: OffsetDateTime,
    /// The bank journal's entry of the access.
    pub journal_seq: u64,
}

/// What one pass found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorReport {
    /// The size of the platform's log, as its witnessed checkpoint says.
    pub log_size: u64,
    /// The witnesses that cosigned that checkpoint.
    pub witnessed_by: Vec<String>,
    /// Served tokens not in the log after the maximum merge delay.
    pub missing_tokens: Vec<MissingToken>,
    /// Attestations served tokens rested on that the log shows no approval for.
    pub missing_approvals: Vec<String>,
    /// Served tokens still within the merge delay and not yet in the log.
    pub pending: usize,
}

impl MonitorReport {
    /// Whether the platform's log accounts for everything the bank served.
    pub fn is_clean(&self) -> bool {
        self.missing_tokens.is_empty() && self.missing_approvals.is_empty()
    }
}

/// Why a pass could not be made: the platform's published log cannot be trusted or read. Itself
/// an alarm when it persists (a log that is not witnessed, or not consistent with what the bank
/// saw before).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MonitorError {
    /// The checkpoint is missing or not witnessed as the policy requires.
    #[error("the platform's checkpoint: {0}")]
    Checkpoint(#[from] WitnessedError),
    /// The tiles do not match the checkpoint, or the log went backwards.
    #[error("the platform's tiles: {0}")]
    Tiles(#[from] TileError),
    /// The bank's own journal could not be read.
    #[error("the bank's journal: {0}")]
    Journal(#[from] StoreError),
}

/// The bank's monitor of one platform's log.
#[derive(Debug)]
pub struct LogMonitor {
    origin: String,
    log_key: NoteVerifier,
    policy: WitnessPolicy,
    max_merge_delay: Duration,
    log: TiledLog,
    issued: HashSet<String>,
    approvals: HashSet<String>,
    journal_position: u64,
    pending: HashMap<String, MissingToken>,
    missing_approvals: HashSet<String>,
}

impl LogMonitor {
    /// Monitors the log of `origin`, signed by `log_key`, trusting checkpoints `policy` accepts.
    pub fn new(origin: &str, log_key: NoteVerifier, policy: WitnessPolicy) -> Self {
        Self {
            origin: origin.to_owned(),
            log_key,
            policy,
            max_merge_delay: DEFAULT_MAX_MERGE_DELAY,
            log: TiledLog::new(),
            issued: HashSet::new(),
            approvals: HashSet::new(),
            journal_position: 0,
            pending: HashMap::new(),
            missing_approvals: HashSet::new(),
        }
    }

    /// With another maximum merge delay.
    #[must_use]
    pub fn max_merge_delay(mut self, delay: Duration) -> Self {
        self.max_merge_delay = delay;
        self
    }

    /// One pass: reads the platform's newly published entries and the bank's newly journalled
    /// accesses, and reports what the log does not account for. A token reported missing is
    /// reported once; an attestation without an approval in the log, every pass.
    ///
    /// # Errors
    /// [`MonitorError`]: nothing is learnt from a log that does not verify.
    pub fn check<S: Store + LedgerRead>(
        &mut self,
        bank: &Bank<S>,
        source: &impl TileSource,
        now: OffsetDateTime,
    ) -> Result<MonitorReport, MonitorError> {
        let note = source
            .read(CHECKPOINT_FILE)?
            .ok_or_else(|| TileError::Missing {
                path: CHECKPOINT_FILE.to_owned(),
            })?;
        let note = String::from_utf8(note).map_err(|_| TileError::Malformed {
            path: CHECKPOINT_FILE.to_owned(),
        })?;
        let witnessed = verify_witnessed(&note, &self.log_key, Some(&self.origin), &self.policy)?;
        for entry in self.log.update_to(source, witnessed.checkpoint.clone())? {
            // An entry this build cannot parse names nothing the monitor looks for.
            let Ok(entry) = AuditEntry::from_bytes(&entry.bytes) else {
                continue;
            };
            match entry.event {
                AuditEvent::TokenIssued { token_id, .. } => {
                    self.issued.insert(token_id);
                }
                AuditEvent::ConsentApproved { attestation_id, .. }
                | AuditEvent::ConsentReauthorised { attestation_id, .. } => {
                    self.approvals.insert(attestation_id);
                }
                _ => {}
            }
        }
        let journal = bank.journal();
        let len = journal.audit_len()?;
        let mut position = self.journal_position;
        while position < len {
            let end = position.saturating_add(4096).min(len);
            for entry in journal.audit_entries(position..end)? {
                if let AuditEvent::AccessServed {
                    token_id,
                    attestation,
                    ..
                } = entry.event
                {
                    self.pending.insert(
                        token_id.clone(),
                        MissingToken {
                            token_id,
                            attestation,
                            served_at: entry.at,
                            journal_seq: entry.seq,
                        },
                    );
                }
            }
            position = end;
        }
        self.journal_position = len;

        let mut missing_tokens = Vec::new();
        let mut still_pending = HashMap::new();
        for (token_id, served) in self.pending.drain() {
            if self.issued.contains(&token_id) {
                if !self.approvals.contains(&served.attestation) {
                    self.missing_approvals.insert(served.attestation.clone());
                }
            } else if now - served.served_at > self.max_merge_delay {
                missing_tokens.push(served);
            } else {
                still_pending.insert(token_id, served);
            }
        }
        self.pending = still_pending;
        // An approval that appears later clears its alarm.
        self.missing_approvals
            .retain(|attestation| !self.approvals.contains(attestation));
        missing_tokens.sort_by_key(|m| m.journal_seq);
        let mut missing_approvals: Vec<String> = self.missing_approvals.iter().cloned().collect();
        missing_approvals.sort();
        Ok(MonitorReport {
            log_size: witnessed.checkpoint.size,
            witnessed_by: witnessed
                .cosigned_by
                .into_iter()
                .map(|(name, _)| name)
                .collect(),
            missing_tokens,
            missing_approvals,
            pending: self.pending.len(),
        })
    }
}
