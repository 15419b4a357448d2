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
use crate::ids::ConsentId;
use crate::store::{LedgerRead, LogRead, Store, StoreError};
use crate::tiles::{TileError, TileSource, TiledLog, checkpoint_note};
use crate::vocab::{Purpose, Scope};

/// How long a served token may take to appear in the platform's published log, by default. A
/// token found in the log at a pass counts as logged, however late it appeared there: run the
/// monitor more often than the delay to bound lateness by it.
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
    /// What was served.
    pub terms: TokenTerms,
}

/// What a token was for: the log's `token_issued` entry must say the same as the bank's
/// `access_served` entry. Subject and account are pseudonyms under each side's own keys, so they
/// are compared through the token's commitment, which binds every claim of the signed token
/// (subject, account, presence, expiry and the rest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenTerms {
    /// The consent.
    pub consent: ConsentId,
    /// What data.
    pub scope: Scope,
    /// Why.
    pub purpose: Purpose,
    /// Whether the subject was said to be present.
    pub presence: crate::policy::Presence,
    /// The commitment to the signed token (SHA-256 of the compact JWS, base64url).
    pub token_digest: Option<String>,
}

/// What one pass found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorReport {
    /// The size of the platform's log, as its witnessed checkpoint says.
    pub log_size: u64,
    /// The witnesses that cosigned that checkpoint.
    pub witnessed_by: Vec<String>,
    /// Served tokens the log does not show issued for what was served (same token id, consent,
    /// scope, purpose, presence and token digest, which binds subject and account) after the
    /// maximum merge delay, and token ids served a second time.
    pub missing_tokens: Vec<MissingToken>,
    /// Attestations served tokens rested on that the log shows no approval of (for that
    /// consent, with the digest of the attestation the bank signed).
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
    /// The tokens the log shows issued, by `jti`: what each was issued for.
    issued: HashMap<String, Vec<TokenTerms>>,
    /// The approvals the log shows: attestation id → consent and the attestation's digest.
    approvals: HashMap<String, (ConsentId, Option<String>)>,
    /// The attestations the bank signed, by id: their digests, from the bank's journal.
    signed: HashMap<String, Option<String>>,
    /// Token ids the gate served, to notice one served twice.
    served: HashSet<String>,
    journal_position: u64,
    pending: HashMap<String, MissingToken>,
    missing_approvals: HashSet<String>,
}

impl LogMonitor {
    /// Whether the log shows the approval of `attestation` for `consent`, committing to the
    /// attestation the bank signed (when both sides recorded a digest: entries written before
    /// digests carry none).
    fn approval_logged(&self, attestation: &str, consent: &ConsentId) -> bool {
        match self.approvals.get(attestation) {
            Some((logged, digest)) if logged == consent => {
                match (digest, self.signed.get(attestation)) {
                    (Some(logged), Some(Some(signed))) => logged == signed,
                    _ => true,
                }
            }
            _ => false,
        }
    }

    /// Monitors the log of `origin`, signed by `log_key`, trusting checkpoints `policy` accepts.
    pub fn new(origin: &str, log_key: NoteVerifier, policy: WitnessPolicy) -> Self {
        Self {
            origin: origin.to_owned(),
            log_key,
            policy,
            max_merge_delay: DEFAULT_MAX_MERGE_DELAY,
            log: TiledLog::new(),
            issued: HashMap::new(),
            approvals: HashMap::new(),
            signed: HashMap::new(),
            served: HashSet::new(),
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
        let note = checkpoint_note(source)?;
        let witnessed = verify_witnessed(&note, &self.log_key, Some(&self.origin), &self.policy)?;
        for entry in self.log.update_to(source, witnessed.checkpoint.clone())? {
            // An entry this build cannot parse names nothing the monitor looks for.
            let Ok(entry) = AuditEntry::from_bytes(&entry.bytes) else {
                continue;
            };
            match entry.event {
                AuditEvent::TokenIssued {
                    consent,
                    scope,
                    purpose,
                    presence,
                    token_id,
                    token_digest,
                    ..
                } => {
                    self.issued.entry(token_id).or_default().push(TokenTerms {
                        consent,
                        scope,
                        purpose,
                        presence,
                        token_digest,
                    });
                }
                AuditEvent::ConsentApproved {
                    consent,
                    attestation_id,
                    attestation_digest,
                    ..
                }
                | AuditEvent::ConsentReauthorised {
                    consent,
                    attestation_id,
                    attestation_digest,
                    ..
                } => {
                    self.approvals
                        .insert(attestation_id, (consent, attestation_digest));
                }
                _ => {}
            }
        }
        let journal = bank.journal();
        let len = journal.audit_len()?;
        let mut reused = Vec::new();
        let mut position = self.journal_position;
        while position < len {
            let end = position.saturating_add(4096).min(len);
            for entry in journal.audit_entries(position..end)? {
                if let AuditEvent::AttestationSigned {
                    attestation,
                    attestation_digest,
                    ..
                } = &entry.event
                {
                    self.signed
                        .insert(attestation.clone(), attestation_digest.clone());
                }
                if let AuditEvent::AccessServed {
                    token_id,
                    attestation,
                    consent,
                    scope,
                    purpose,
                    presence,
                    token_digest,
                    ..
                } = entry.event
                {
                    let served = MissingToken {
                        token_id,
                        attestation,
                        served_at: entry.at,
                        journal_seq: entry.seq,
                        terms: TokenTerms {
                            consent,
                            scope,
                            purpose,
                            presence,
                            token_digest,
                        },
                    };
                    // A token id served twice (a shadow broker reusing an id once the gate has
                    // forgotten it): the second access is accounted for by nothing.
                    if self.served.insert(served.token_id.clone()) {
                        self.pending.insert(served.token_id.clone(), served);
                    } else {
                        reused.push(served);
                    }
                }
            }
            position = end;
        }
        self.journal_position = len;

        let mut missing_tokens = reused;
        let mut still_pending = HashMap::new();
        let pending = std::mem::take(&mut self.pending);
        for (token_id, served) in pending {
            // Logged only if the log shows this token id issued for exactly these terms.
            let logged = self
                .issued
                .get(&token_id)
                .is_some_and(|issued| issued.contains(&served.terms));
            if logged {
                if !self.approval_logged(&served.attestation, &served.terms.consent) {
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
        let missing = std::mem::take(&mut self.missing_approvals);
        self.missing_approvals = missing
            .into_iter()
            .filter(|attestation| {
                !self
                    .approvals
                    .get(attestation)
                    .is_some_and(|(consent, _)| self.approval_logged(attestation, consent))
            })
            .collect();
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
