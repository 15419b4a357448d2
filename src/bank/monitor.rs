//! The bank monitors the platform's log: every token its gate served must appear in the
//! broker's published log (its `token_issued` entry, by `jti`) under a checkpoint the bank's
//! witness policy accepts, within a maximum merge delay of being served; and every attestation a
//! served token rested on must appear as an approval there. A platform that issues tokens from a
//! store it does not publish (a shadow broker with the same keys, a forked or rolled-back log)
//! is found out by what is missing. The other way round, every stop of this bank's consents the
//! log shows must have reached the bank through the broker's revocation feed: a platform that
//! logs a withdrawal and signs feeds that leave it out is found out too
//! ([`UndeliveredRevocation`]), as is one that goes on issuing tokens for a consent its log shows
//! stopped ([`TokenAfterRevocation`]).
//!
//! The monitor reads the published tiles (C2SP tlog-tiles) and only what is new since its last
//! pass (see [`crate::tiles::TiledLog`]), never the platform's database. What to do when
//! something is missing, or the log stands still ([`MonitorError::StaleCheckpoint`]), is the
//! bank's policy; the documented response is to suspend the platform and raise it with the
//! platform and the supervisor, with the journal entries and the checkpoint as evidence. The
//! bank suspends a platform with its own policy: [`Bank::set_policy`] with no scope enabled is
//! journalled, binds every gate on the ledger at once (each refusal journalled), and returns the
//! signed instruction that tells the broker; setting the policy again resumes.

mod revocations;
mod saved;

pub use revocations::{FeedMismatch, TokenAfterRevocation, UndeliveredRevocation};
pub use saved::SavedStateError;

use std::collections::{HashMap, HashSet};

use time::{Duration, OffsetDateTime};

use super::Bank;
use super::gate::CLOCK_SKEW_ALLOWANCE;
use crate::audit::{AuditEntry, AuditEvent};
use crate::checkpoint::NoteVerifier;
use crate::cosignature::{WitnessPolicy, WitnessedError, verify_witnessed};
use crate::ids::ConsentId;
use crate::merkle::{self, EMPTY_ROOT, Hash};
use crate::store::{LedgerRead, LogRead, Store, StoreError};
use crate::tiles::{TileError, TileSource, TiledLog, checkpoint_note};
use crate::token::{MAX_LEEWAY, MAX_TOKEN_LIFETIME};
use crate::vocab::{Purpose, Scope};

/// How long a served token may take to appear in the platform's published log, by default. A
/// token found in the log at a pass counts as logged, however late it appeared there: run the
/// monitor more often than the delay to bound lateness by it.
pub const DEFAULT_MAX_MERGE_DELAY: Duration = Duration::hours(1);

/// How old the platform's checkpoint may be, by default, counted from
/// [`MonitorReport::cosigned_at`] (the latest time by which a quorum of the policy's witnesses had
/// each cosigned it). A witness cosigns the same checkpoint again with its current time when the
/// log asks (C2SP `tlog-witness`), so a platform whose log is quiet keeps its checkpoint fresh by
/// publishing it on a timer well under this age (the merge delay, say); one that stops having its
/// checkpoint cosigned, or shows the bank a view cosigned long ago, is reported
/// ([`MonitorError::StaleCheckpoint`]). A recent cosignature says only that the log showed its
/// witnesses nothing newer: a platform that shows every witness an old size again is not caught
/// by this, but what the bank served since is, by the merge delay.
pub const DEFAULT_MAX_CHECKPOINT_AGE: Duration = Duration::days(1);

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
    /// The size of the platform's log as last verified (this pass's witnessed checkpoint, or an
    /// earlier pass's when this one's could not be read or trusted).
    pub log_size: u64,
    /// The witnesses that cosigned this pass's checkpoint (none when it was not trusted).
    pub witnessed_by: Vec<String>,
    /// The latest time by which a quorum (at least one) of the policy's witnesses had each
    /// cosigned this pass's checkpoint: the quorum-th latest of their cosignatures' timestamps,
    /// leaving out a timestamp later than the bank's clock allows ([`CLOCK_SKEW_ALLOWANCE`]; a
    /// witness whose clock runs further ahead counts for nothing). `None` when the checkpoint
    /// was not trusted, or when not enough cosignatures count.
    pub cosigned_at: Option<OffsetDateTime>,
    /// Why this pass could not read or trust the platform's log (missing, unwitnessed, rolled
    /// back, tiles that do not match), or why the log it read is stale
    /// ([`MonitorError::StaleCheckpoint`]: read, and `log_size` moved with it): an alarm in
    /// itself when it persists. The bank's journal
    /// was still read, and its served tokens judged against the log as last verified, so a log
    /// kept unreadable does not stop the merge delay from running out. A
    /// [`MonitorError::Journal`] or [`MonitorError::JournalDiffers`] here is the bank's own
    /// fault, met while the pass read the journal again after fetching the checkpoint (that read
    /// is anchored to the journal's tree as the first is): then nothing was judged (every access
    /// stays pending), so that no fault of the bank's is reported as the platform's.
    pub log_error: Option<MonitorError>,
    /// Served tokens the log does not show issued for what was served (same token id, consent,
    /// scope, purpose, presence and token digest, which binds subject and account) after the
    /// maximum merge delay, and token ids served again for another token. After
    /// [`LogMonitor::restore`] or [`LogMonitor::pinned_to`], the first pass also repeats what the
    /// last pass before the save reported, as it was (not judged again).
    pub missing_tokens: Vec<MissingToken>,
    /// Attestations served tokens rested on that the log shows no approval of (for that
    /// consent, with the digest of the attestation the bank signed).
    pub missing_approvals: Vec<String>,
    /// Served tokens still within the merge delay and not yet in the log.
    pub pending: usize,
    /// Stops of this bank's consents the log shows and the broker's revocation feed passed
    /// over (the bank's gate was never told of them): each reported once, as
    /// `missing_tokens` are, and again by a monitor restored from the state saved after the
    /// pass. See [`UndeliveredRevocation`].
    pub undelivered_revocations: Vec<UndeliveredRevocation>,
    /// Where the bank's revocation feeds and the witnessed log disagree about the log's length
    /// (see [`FeedMismatch`]).
    pub feed_mismatches: Vec<FeedMismatch>,
    /// Tokens the log shows issued for this bank's consents after it showed them stopped (see
    /// [`TokenAfterRevocation`]): each reported once, as `missing_tokens` are.
    pub tokens_after_revocation: Vec<TokenAfterRevocation>,
    /// Stops of this bank's consents the log shows that the bank's feeds have not come to yet
    /// (the feed lags the log: the gate refuses once it lags past its staleness bound).
    pub pending_revocations: usize,
}

impl MonitorReport {
    /// Whether the platform's log could be read and accounts for everything the bank served.
    pub fn is_clean(&self) -> bool {
        self.log_error.is_none()
            && self.missing_tokens.is_empty()
            && self.missing_approvals.is_empty()
            && self.undelivered_revocations.is_empty()
            && self.feed_mismatches.is_empty()
            && self.tokens_after_revocation.is_empty()
    }
}

/// Why a pass could not be made (the bank's own journal could not be read), why the platform's
/// log was not trusted in a pass ([`MonitorReport::log_error`]), or why a monitor was not made.
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
    /// The bank's journal does not hold the entries this monitor has read: it is shorter, or
    /// its tree over the first `position` entries is not the one read. A journal restored from
    /// an older copy, or a monitor restored from another bank's saved state.
    #[error("the bank's journal does not hold the {position} entries this monitor read")]
    JournalDiffers {
        /// How many of the journal's entries the monitor had read.
        position: u64,
    },
    /// A saved state could not be restored ([`LogMonitor::restore`]).
    #[error("the saved monitor state: {0}")]
    Saved(#[from] SavedStateError),
    /// The witness policy cannot stop the platform from showing the bank a log of its own (no
    /// witness, or quorums of its witnesses that need not overlap, or more than it lists):
    /// [`LogMonitor::new`] refuses it.
    #[error(
        "a quorum of {quorum} of {witnesses} witnesses cannot stop a split view: ask a majority"
    )]
    WeakPolicy {
        /// The policy's quorum.
        quorum: usize,
        /// How many witnesses it lists.
        witnesses: usize,
    },
    /// The checkpoint verified, but no quorum of the policy's witnesses cosigned it within the
    /// maximum age ([`LogMonitor::max_checkpoint_age`]): the platform stopped having its
    /// checkpoint cosigned, or shows the bank a checkpoint cosigned long ago. The log was still
    /// read (a checkpoint its witnesses cosigned can only show less than a fresher one, never a
    /// different history).
    #[error(
        "the platform's checkpoint was last cosigned by a quorum {}, more than {max_age} before \
         the pass",
        cosigned_at.map_or_else(
            || "at no time".to_owned(),
            |at| format!("at {} (POSIX seconds)", at.unix_timestamp())
        )
    )]
    StaleCheckpoint {
        /// When a quorum had cosigned it ([`MonitorReport::cosigned_at`]).
        cosigned_at: Option<OffsetDateTime>,
        /// The maximum age the monitor allows.
        max_age: Duration,
    },
}

/// How long after the monitor read a `token_issued` entry a token it names can still be served
/// (its lifetime, the gates' leeway and the allowance for their clocks): older entries are
/// dropped, so that the monitor's memory follows the tokens alive, not every token ever issued.
const ISSUED_KEPT: Duration = MAX_TOKEN_LIFETIME
    .saturating_add(MAX_LEEWAY)
    .saturating_add(CLOCK_SKEW_ALLOWANCE);

/// The most approvals of one attestation the monitor keeps: an honest log has a handful (an
/// approval, its reauthorisations); more, with other digests, are the platform's, and can only
/// make an alarm, not clear one.
const MAX_APPROVALS: usize = 16;

/// The longest token id or digest the monitor keeps from the log: a gate takes no longer `jti`,
/// and a digest is 43 characters; a longer one could match nothing served.
const LONGEST_KEPT: usize = 128;

/// The bank's monitor of one platform's log. Its state lives in memory between passes; save
/// it after a pass ([`LogMonitor::save`]) and restore it when the bank restarts
/// ([`LogMonitor::restore`]). A monitor made anew reads the whole log and journal again and
/// trusts the first checkpoint its policy accepts, however old; a restored one goes on from the
/// checkpoint it verified last, so a log shown rolled back or forked across the restart is
/// refused, and only what is new is read. Keep the witness policy a majority.
///
/// A checkpoint also has an age: the witnesses date their cosignatures, and a pass reports a
/// checkpoint no quorum cosigned within [`DEFAULT_MAX_CHECKPOINT_AGE`] (or the bank's
/// [`LogMonitor::max_checkpoint_age`]) as [`MonitorError::StaleCheckpoint`]. So a platform that
/// stops having its checkpoint cosigned, or shows a monitor made anew a view its witnesses
/// cosigned long ago, is seen even when the bank served nothing since (a platform that shows
/// its witnesses an old size again is not: see [`DEFAULT_MAX_CHECKPOINT_AGE`]).
#[derive(Debug)]
pub struct LogMonitor {
    origin: String,
    log_key: NoteVerifier,
    policy: WitnessPolicy,
    max_merge_delay: Duration,
    max_checkpoint_age: Option<Duration>,
    log: TiledLog,
    /// The signed note (with its cosignatures) of the checkpoint `log` verified last.
    note: Option<String>,
    /// The signed note of the checkpoint `log` is held to and has not read through yet
    /// ([`LogMonitor::pinned_to`]).
    pin: Option<String>,
    /// The tokens the log shows issued for this bank's consents, by `jti`: what each was issued
    /// for, and when the monitor read it.
    issued: HashMap<String, Vec<(TokenTerms, OffsetDateTime)>>,
    /// The approvals the log shows of attestations this bank signed: attestation id → consent
    /// and the attestation's digest.
    approvals: HashMap<String, Vec<(ConsentId, Option<String>)>>,
    /// The consents of those approvals: this bank's, whose tokens the monitor keeps.
    consents: HashSet<ConsentId>,
    /// The attestations the bank signed, by id: the consent each approved and its digest, from
    /// the bank's journal.
    signed: HashMap<String, (ConsentId, Option<String>)>,
    /// The consents of those attestations: a stop of one is this bank's from the moment the
    /// bank signed for it, whatever the log shows.
    signed_consents: HashSet<ConsentId>,
    /// Token ids the gate served, with the token's digest and when: the same id served again
    /// for another token is reported.
    served: HashMap<String, (Option<String>, OffsetDateTime)>,
    journal_position: u64,
    /// The root of the journal's first `journal_position` entries, as read.
    journal_root: Hash,
    pending: HashMap<String, MissingToken>,
    /// What the last pass reported missing: saved, so that a monitor restored from the state
    /// saved after a pass reports it again (an alarm the bank had no time to act on before a
    /// restart is not lost).
    reported: Vec<MissingToken>,
    /// What a restored monitor's next pass reports again.
    repeat: Vec<MissingToken>,
    /// Attestations (with the consent their served tokens named) whose approval the log does
    /// not show.
    missing_approvals: HashSet<(String, ConsentId)>,
    /// The stops the log shows for this bank's consents, against what the feeds delivered.
    revocations: revocations::Watch,
    /// What the passes changed since the last save to `file`, for the next save to append
    /// (kept only while the monitor saves to a file, and dropped when it outgrows what the
    /// monitor holds: the next save then writes the whole state).
    recorded: Option<saved::Recorded>,
    /// The file the monitor last saved to or was restored from ([`LogMonitor::save_to`],
    /// [`LogMonitor::restore_from`]).
    file: Option<saved::StateFile>,
    /// The lock of the state file the monitor saves to ([`LogMonitor::save_to`]).
    lock: Option<saved::StateLock>,
}

/// What one pass read from the log, kept only once the log verified.
#[derive(Default)]
struct FromLog {
    issued: Vec<(String, TokenTerms)>,
    approvals: Vec<(String, ConsentId, Option<String>)>,
    /// Every stop read, with its position and whether the entry names this bank as holder.
    revoked: Vec<(ConsentId, u64, bool)>,
    /// Tokens issued for consents of this bank's or stopped, with their positions.
    tokens: Vec<(ConsentId, String, u64)>,
    /// Consents ended by an erasure or by retention, with the entry's position, and whether it
    /// is an erasure.
    ended: Vec<(ConsentId, u64, bool)>,
}

impl LogMonitor {
    /// Whether the log shows the approval of `attestation` for `consent`, committing to the
    /// attestation the bank signed: when the bank recorded a digest, the log's entry must carry
    /// the same one (an entry without one commits to nothing). Only entries written before the
    /// bank recorded digests are taken without.
    fn approval_logged(&self, attestation: &str, consent: &ConsentId) -> bool {
        let Some(logged) = self.approvals.get(attestation) else {
            return false;
        };
        let signed = self
            .signed
            .get(attestation)
            .and_then(|(_, digest)| digest.as_ref());
        logged.iter().any(|(logged_consent, logged_digest)| {
            logged_consent == consent
                && signed.is_none_or(|signed| logged_digest.as_ref() == Some(signed))
        })
    }

    /// Monitors the log of `origin`, signed by `log_key`, trusting checkpoints `policy` accepts.
    ///
    /// # Errors
    /// [`MonitorError::WeakPolicy`] for a policy that cannot stop a split view: no witness
    /// required, a quorum larger than the witnesses listed, or one that is not a majority of
    /// them (two quorums that need not share a witness could each cosign a different log).
    /// [`LogMonitor::accepting_weak_policy`] takes such a policy when that is meant.
    pub fn new(
        origin: &str,
        log_key: NoteVerifier,
        policy: WitnessPolicy,
    ) -> Result<Self, MonitorError> {
        let (quorum, witnesses) = (policy.quorum, policy.witnesses.len());
        if quorum == 0 || quorum > witnesses || quorum.saturating_mul(2) <= witnesses {
            return Err(MonitorError::WeakPolicy { quorum, witnesses });
        }
        Ok(Self::accepting_weak_policy(origin, log_key, policy))
    }

    /// [`LogMonitor::new`] taking any policy, [`WitnessPolicy::none`] included: for a log that
    /// is not witnessed yet, knowing that the platform can then show the bank a log that no
    /// one else sees.
    pub fn accepting_weak_policy(
        origin: &str,
        log_key: NoteVerifier,
        policy: WitnessPolicy,
    ) -> Self {
        Self {
            origin: origin.to_owned(),
            log_key,
            max_checkpoint_age: (policy.quorum > 0).then_some(DEFAULT_MAX_CHECKPOINT_AGE),
            policy,
            max_merge_delay: DEFAULT_MAX_MERGE_DELAY,
            log: TiledLog::new(),
            note: None,
            pin: None,
            issued: HashMap::new(),
            approvals: HashMap::new(),
            consents: HashSet::new(),
            signed: HashMap::new(),
            signed_consents: HashSet::new(),
            served: HashMap::new(),
            journal_position: 0,
            journal_root: EMPTY_ROOT,
            pending: HashMap::new(),
            reported: Vec::new(),
            repeat: Vec::new(),
            missing_approvals: HashSet::new(),
            revocations: revocations::Watch::default(),
            recorded: None,
            file: None,
            lock: None,
        }
    }

    /// A monitor as this one was made (origin, log key, witness policy, merge delay, checkpoint
    /// age), with nothing read.
    fn anew(&self) -> Self {
        Self {
            max_merge_delay: self.max_merge_delay,
            max_checkpoint_age: self.max_checkpoint_age,
            ..Self::accepting_weak_policy(&self.origin, self.log_key.clone(), self.policy.clone())
        }
    }

    /// With another maximum merge delay.
    #[must_use]
    pub fn max_merge_delay(mut self, delay: Duration) -> Self {
        self.max_merge_delay = delay;
        self
    }

    /// With another maximum age for the platform's checkpoint (see
    /// [`DEFAULT_MAX_CHECKPOINT_AGE`], the default of a policy that requires witnesses), or none
    /// (`None`: the default of a policy that requires none, whose checkpoints carry no time).
    /// With an age set and a policy that requires no witness, only cosignatures of the
    /// witnesses it lists count, and a checkpoint that has none is reported stale at every
    /// pass.
    #[must_use]
    pub fn max_checkpoint_age(mut self, age: Option<Duration>) -> Self {
        self.max_checkpoint_age = age;
        self
    }

    /// The time the watch over the platform's stops keeps them by: when a quorum of the
    /// witnesses had cosigned the checkpoint read (their clocks, not the bank's: a pass whose
    /// clock steps forward forgets nothing early), or, under a policy that requires no
    /// witness, the pass's time. `None` when the policy requires witnesses and no quorum's
    /// time counts (a cosignature dated beyond the bank's clock): the watch's clock then
    /// stays where it is.
    fn watch_clock(
        &self,
        witnessed: &crate::cosignature::WitnessedCheckpoint,
        now: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        self.cosigned_at(&witnessed.cosigned_by, now)
            .or((self.policy.quorum == 0).then_some(now))
    }

    /// When a quorum (at least one) of the policy's witnesses had cosigned: the quorum-th latest
    /// of the cosignatures' timestamps, leaving out those later than `now` allows.
    fn cosigned_at(
        &self,
        cosigned_by: &[(String, u64)],
        now: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        let latest = now.checked_add(CLOCK_SKEW_ALLOWANCE).unwrap_or(now);
        let mut times: Vec<OffsetDateTime> = cosigned_by
            .iter()
            .filter_map(|(_, timestamp)| i64::try_from(*timestamp).ok())
            .filter_map(|seconds| OffsetDateTime::from_unix_timestamp(seconds).ok())
            .filter(|at| *at <= latest)
            .collect();
        times.sort_unstable_by(|a, b| b.cmp(a));
        times.get(self.policy.quorum.max(1) - 1).copied()
    }

    /// One pass: reads the bank's newly journalled accesses, then the platform's newly
    /// published entries, and reports what the log does not account for. A log that cannot be
    /// read or trusted is reported ([`MonitorReport::log_error`]), and the served tokens are
    /// judged against the log as last verified: past the merge delay, they are missing. A token
    /// reported missing is reported once (and once more by a monitor restored from the state
    /// saved after that pass: see [`LogMonitor::save`]); an attestation without an approval in
    /// the log, every pass.
    ///
    /// # Errors
    /// [`MonitorError::Journal`]: the bank's own journal could not be read at the start of the
    /// pass, or the entries read do not give its stored tree's root (`StoreError::Corrupt`: an
    /// entry edited after it was written); nothing of the pass is kept, and the next reads it
    /// again (a fault later in the pass is [`MonitorReport::log_error`]).
    /// [`MonitorError::JournalDiffers`]: the journal no longer holds what the monitor read of
    /// it.
    pub fn check<S: Store + LedgerRead>(
        &mut self,
        bank: &Bank<S>,
        source: &impl TileSource,
        now: OffsetDateTime,
    ) -> Result<MonitorReport, MonitorError> {
        if let Some(recorded) = &mut self.recorded {
            recorded.begin_pass();
        }
        let mut missing_tokens = self.read_journal(bank)?;
        missing_tokens.append(&mut self.repeat);
        // An access served after the journal was read is judged at the next pass, after the
        // attestation it rests on (journalled before it) and that attestation's digest.
        let read = self.read_log(bank, source, now);
        let log_read = read.is_ok();
        let (witnessed_by, cosigned_at, log_error) = match read {
            Ok(witnessed) => {
                let cosigned_at = self.cosigned_at(&witnessed.cosigned_by, now);
                let stale = self.max_checkpoint_age.and_then(|max_age| {
                    cosigned_at.is_none_or(|at| now - at > max_age).then_some(
                        MonitorError::StaleCheckpoint {
                            cosigned_at,
                            max_age,
                        },
                    )
                });
                let names = witnessed.cosigned_by.into_iter().map(|(name, _)| name);
                (names.collect(), cosigned_at, stale)
            }
            Err(error) => (Vec::new(), None, Some(error)),
        };
        // A fault of the bank's own journal: judge nothing against a log not read.
        let journal_fault = matches!(
            log_error,
            Some(MonitorError::Journal(_) | MonitorError::JournalDiffers { .. })
        );
        if !journal_fault {
            missing_tokens.extend(self.judge_pending(now));
        }
        // The stops are judged at every pass (what the journal's first read gave is the bank's
        // own, read whole); only what depends on the log having been read waits.
        let judged = self.revocations.judge(revocations::Verified {
            size: self.log.size(),
            cosigned_at,
            read: log_read && !journal_fault,
            now: (!journal_fault).then_some(now),
            merge_delay: self.max_merge_delay,
            stops_kept: self.max_merge_delay.saturating_add(ISSUED_KEPT),
        });
        // An approval that appears later (of the attestation, for the consent the served token
        // named, committing to what the bank signed) clears its alarm; one for another consent
        // does not.
        let missing = std::mem::take(&mut self.missing_approvals);
        self.missing_approvals = missing
            .into_iter()
            .filter(|(attestation, consent)| !self.approval_logged(attestation, consent))
            .collect();
        self.forget_the_expired(now);
        missing_tokens.sort_by_key(|m| m.journal_seq);
        self.reported.clone_from(&missing_tokens);
        let mut missing_approvals: Vec<String> = self
            .missing_approvals
            .iter()
            .map(|(attestation, _)| attestation.clone())
            .collect();
        missing_approvals.sort();
        missing_approvals.dedup();
        Ok(MonitorReport {
            log_size: self.log.size(),
            witnessed_by,
            cosigned_at,
            log_error,
            missing_tokens,
            missing_approvals,
            pending: self.pending.len(),
            undelivered_revocations: judged.undelivered,
            feed_mismatches: judged.mismatches,
            tokens_after_revocation: judged.tokens,
            pending_revocations: self.revocations.pending(),
        })
    }

    /// Judges each pending access against the log as verified: logged (its approval checked
    /// too), missing (past the merge delay: returned), or still pending.
    fn judge_pending(&mut self, now: OffsetDateTime) -> Vec<MissingToken> {
        let mut missing = Vec::new();
        let pending = std::mem::take(&mut self.pending);
        for (token_id, served) in pending {
            // Logged only if the log shows this token id issued for exactly these terms.
            let logged = self
                .issued
                .get(&token_id)
                .is_some_and(|issued| issued.iter().any(|(terms, _)| *terms == served.terms));
            if logged {
                if !self.approval_logged(&served.attestation, &served.terms.consent) {
                    self.missing_approvals
                        .insert((served.attestation.clone(), served.terms.consent.clone()));
                }
            } else if now - served.served_at <= self.max_merge_delay {
                self.pending.insert(token_id, served);
                continue;
            } else {
                missing.push(served);
            }
            if let Some(recorded) = &mut self.recorded {
                recorded.judged(token_id);
            }
        }
        missing
    }

    /// Reads the bank's journal from where the last pass stopped: the attestations it signed,
    /// and each served access, pending until the log shows it. Kept only if all of it was read.
    /// Returns the accesses whose token id was served before for another token.
    fn read_journal<S: Store + LedgerRead>(
        &mut self,
        bank: &Bank<S>,
    ) -> Result<Vec<MissingToken>, MonitorError> {
        let journal = bank.journal();
        let start = self.journal_position;
        let mut signed = Vec::new();
        let mut served = Vec::new();
        let mut feeds = Vec::new();
        let (len, root) = anchored_entries(journal, start, self.journal_root, |entry| {
            if let Some(attestation) = signed_in(&entry.event) {
                signed.push(attestation);
                return;
            }
            if let AuditEvent::RevocationFeedApplied {
                position,
                generated_at,
                revoked,
            } = entry.event
            {
                feeds.push((position, generated_at, entry.at, revoked));
                return;
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
                served.push(MissingToken {
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
                });
            }
        })?;
        self.journal_root = root;
        self.journal_position = len;
        self.keep_signed(signed);
        for (position, generated_at, applied_at, revoked) in feeds {
            self.revocations
                .fed(position, generated_at, applied_at, revoked);
        }
        let mut reused = Vec::new();
        for access in served {
            match self.served.get(&access.token_id) {
                // The same token presented again (a gate that takes tokens more than once): the
                // log's entry for it accounts for both.
                Some((Some(digest), _)) if access.terms.token_digest.as_ref() == Some(digest) => {}
                // A token id served before for another token (a shadow broker reusing an id
                // once the gate has forgotten it): the second access is accounted for by nothing.
                Some(_) => reused.push(access),
                None => {
                    self.served.insert(
                        access.token_id.clone(),
                        (access.terms.token_digest.clone(), access.served_at),
                    );
                    if let Some(recorded) = &mut self.recorded {
                        recorded.served(&access);
                    }
                    self.pending.insert(access.token_id.clone(), access);
                }
            }
        }
        Ok(reused)
    }

    /// Keeps the attestations the bank signed, each as the journal first recorded it (the bank
    /// signs an attestation once: a second entry with its id changes nothing).
    fn keep_signed(&mut self, signed: Vec<(String, (ConsentId, Option<String>))>) {
        for (attestation, record) in signed {
            if let std::collections::hash_map::Entry::Vacant(slot) = self.signed.entry(attestation)
            {
                if let Some(recorded) = &mut self.recorded {
                    recorded.signed(slot.key(), &record);
                }
                self.signed_consents.insert(record.0.clone());
                slot.insert(record);
            }
        }
    }

    /// Reads the platform's witnessed checkpoint and the entries after the size verified so far:
    /// the approvals of attestations this bank signed, and the tokens issued for their consents
    /// (the rest of the log is not this bank's). Kept only if the log verified.
    fn read_log<S: Store + LedgerRead>(
        &mut self,
        bank: &Bank<S>,
        source: &impl TileSource,
        now: OffsetDateTime,
    ) -> Result<crate::cosignature::WitnessedCheckpoint, MonitorError> {
        let note = checkpoint_note(source)?;
        let witnessed = verify_witnessed(&note, &self.log_key, Some(&self.origin), &self.policy)?;
        // The attestations the bank signed since the pass read its journal. The bank journals an
        // attestation before it hands it out, and the platform logged every approval this
        // checkpoint covers before signing it, so the journal read now shows every attestation
        // of this bank that the checkpoint's entries can name: no approval needs a look into
        // the ledger. (Accesses served since are left for the next pass.)
        // Anchored as the pass's own read: only what the journal's tree holds counts.
        let mut late = Vec::new();
        anchored_entries(
            bank.journal(),
            self.journal_position,
            self.journal_root,
            |entry| late.extend(signed_in(&entry.event)),
        )?;
        self.keep_signed(late);
        let mut read = FromLog::default();
        let mut new_consents: HashSet<ConsentId> = HashSet::new();
        let (signed, consents, holder) = (&self.signed, &self.consents, bank.id());
        let watch = &self.revocations;
        let mut stopped_here: HashSet<ConsentId> = HashSet::new();
        let signed_by_the_bank = |attestation: &str, consent: &ConsentId| {
            signed
                .get(attestation)
                .is_some_and(|(signed, _)| signed == consent)
        };
        self.log
            .update_each(source, witnessed.checkpoint.clone(), |position, bytes| {
                // An entry this build cannot parse names nothing the monitor looks for.
                let Ok(entry) = AuditEntry::from_bytes(bytes) else {
                    return;
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
                        let ours = consents.contains(&consent) || new_consents.contains(&consent);
                        let kept = token_id.len() <= LONGEST_KEPT
                            && token_digest
                                .as_ref()
                                .is_none_or(|d| d.len() <= LONGEST_KEPT);
                        // Held against the stops (a stop may be this bank's by its name alone).
                        let stopped = watch.is_stopped(&consent) || stopped_here.contains(&consent);
                        if (ours || stopped) && token_id.len() <= LONGEST_KEPT {
                            read.tokens
                                .push((consent.clone(), token_id.clone(), position));
                        }
                        if ours && kept {
                            read.issued.push((
                                token_id,
                                TokenTerms {
                                    consent,
                                    scope,
                                    purpose,
                                    presence,
                                    token_digest,
                                },
                            ));
                        }
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
                    } if signed_by_the_bank(&attestation_id, &consent) => {
                        new_consents.insert(consent.clone());
                        read.approvals
                            .push((attestation_id, consent, attestation_digest));
                    }
                    // A stop: this bank's consent's (one its feed must carry) when the entry names
                    // the bank as holder, or when an approval this bank signed names the consent,
                    // before or after the stop (sorted out once the pass has read them all).
                    AuditEvent::ConsentRevoked {
                        consent,
                        holder: named,
                        ..
                    } => {
                        stopped_here.insert(consent.clone());
                        read.revoked
                            .push((consent, position, named.as_ref() == Some(holder)));
                    }
                    // Consents whose state was deleted: no token may follow either (the feed
                    // does not carry these; an honest erasure stopped the live ones first).
                    AuditEvent::SubjectErased {
                        consents: ended, ..
                    } => {
                        // Sorted out once the pass has read them all, as stops are.
                        for consent in ended {
                            stopped_here.insert(consent.clone());
                            read.ended.push((consent, position, true));
                        }
                    }
                    AuditEvent::RetentionApplied {
                        consents: ended, ..
                    } => {
                        for consent in ended {
                            stopped_here.insert(consent.clone());
                            read.ended.push((consent, position, false));
                        }
                    }
                    _ => {}
                }
            })?;
        for (token_id, terms) in read.issued {
            if let Some(recorded) = &mut self.recorded {
                recorded.issued(&token_id, &terms, now);
            }
            self.issued.entry(token_id).or_default().push((terms, now));
        }
        for (attestation, consent, digest) in read.approvals {
            // Up to `MAX_APPROVALS`: more can only make an alarm, not clear one.
            let logged = self.approvals.entry(attestation.clone()).or_default();
            if logged.len() < MAX_APPROVALS && !logged.contains(&(consent.clone(), digest.clone()))
            {
                if let Some(recorded) = &mut self.recorded {
                    recorded.approval(&attestation, &consent, &digest);
                }
                logged.push((consent, digest));
            }
        }
        for consent in new_consents {
            if !self.consents.contains(&consent) {
                if let Some(recorded) = &mut self.recorded {
                    recorded.consent(&consent);
                }
                self.consents.insert(consent);
            }
        }
        // A consent this bank signed an attestation for, or of this bank's approvals in the log,
        // is this bank's whatever holder the entry names (the feed follows the name: a stop
        // logged under another holder's reaches no feed of this bank's), and whether the
        // approval came before the stop or after it. Stops kept unclaimed are claimed first, so
        // that this pass's stops of other consents push none of them out.
        let clock = match self.watch_clock(&witnessed, now) {
            Some(witnessed) => self.revocations.tick(witnessed),
            None => self.revocations.held_clock(now),
        };
        let (consents, signed_consents) = (&self.consents, &self.signed_consents);
        let ours =
            |consent: &ConsentId| consents.contains(consent) || signed_consents.contains(consent);
        self.revocations.claim(ours);
        for (consent, position, named) in read.revoked {
            if named || ours(&consent) {
                self.revocations.logged(consent, position, clock);
            } else {
                self.revocations.unclaimed(consent, position, clock, false);
            }
        }
        // An erasure of a consent not the bank's yet is kept as a stop is (an honest broker
        // never approves an erased consent); retention names the ended requests of every
        // holder, so a consent not the bank's there is let go.
        for (consent, position, erasure) in read.ended {
            if ours(&consent) {
                self.revocations.ended(consent, position, clock);
            } else if erasure {
                self.revocations.unclaimed(consent, position, clock, true);
            }
        }
        for (consent, token_id, position) in read.tokens {
            self.revocations.issued(&consent, &token_id, position);
        }
        self.note = Some(note);
        // Read through the pin (a smaller checkpoint, or another tree at its size, failed).
        self.pin = None;
        Ok(witnessed)
    }

    /// Drops the `token_issued` entries read longer ago than a token can live (before the
    /// oldest access still pending was served, at the latest) and the served ids as old: what
    /// no access served from now on can match.
    fn forget_the_expired(&mut self, now: OffsetDateTime) {
        let oldest_pending = self.pending.values().map(|m| m.served_at).min();
        // A time within `ISSUED_KEPT` of the earliest one kept (a saved state's, or a clock's)
        // cuts at that earliest time: nothing before it to forget, and no overflow.
        let cut = oldest_pending
            .map_or(now, |at| at.min(now))
            .checked_sub(ISSUED_KEPT)
            .unwrap_or_else(|| time::PrimitiveDateTime::MIN.assume_utc());
        self.forget_before(cut);
        if let Some(recorded) = &mut self.recorded {
            recorded.forgot_before(cut);
            // Saved whole next time, rather than kept past the size of what it records.
            let held = self.issued.len()
                + self.served.len()
                + self.pending.len()
                + self.signed.len()
                + self.approvals.len()
                + self.consents.len();
            if recorded.items() > held.saturating_add(saved::RECORDED_SLACK) {
                self.recorded = None;
            }
        }
    }

    /// Drops the `token_issued` entries read before `cut` and the ids served before it.
    fn forget_before(&mut self, cut: OffsetDateTime) {
        self.issued.retain(|_, issued| {
            issued.retain(|(_, read_at)| *read_at >= cut);
            !issued.is_empty()
        });
        self.served.retain(|_, (_, served_at)| *served_at >= cut);
    }
}

/// Reads the journal's entries from `start` to its length, giving each to `each`, anchored: the
/// stored tree over the first `start` entries must have the root `root` (what was read before;
/// else [`MonitorError::JournalDiffers`]), and those entries' bytes hashed onto it must give the
/// stored tree's root at the length read (else `StoreError::Corrupt`: an entry edited after its
/// leaf was written, or one added without it). Returns that length and root.
fn anchored_entries(
    journal: &impl LogRead,
    start: u64,
    root: Hash,
    mut each: impl FnMut(AuditEntry),
) -> Result<(u64, Hash), MonitorError> {
    let len = journal.audit_len()?;
    // The journal still holds what was read of it (a restored state's, too).
    if len < start {
        return Err(MonitorError::JournalDiffers { position: start });
    }
    let mut tree = journal_peaks(journal, start)?;
    if tree.root() != root {
        return Err(MonitorError::JournalDiffers { position: start });
    }
    if len == start {
        return Ok((len, root));
    }
    journal_entries(journal, start..len, |entry, bytes| {
        tree.push(merkle::leaf_hash(bytes));
        each(entry);
    })?;
    let stored = journal_peaks(journal, len)?.root();
    if tree.root() != stored {
        return Err(StoreError::Corrupt(format!(
            "the journal's entries {start} to {len} do not give its stored tree's root"
        ))
        .into());
    }
    Ok((len, stored))
}

/// The journal's stored tree over its first `size` entries, as the roots of its complete
/// subtrees (one node per set bit of `size`), to go on from with the entries after them.
///
/// # Errors
/// The journal's; [`StoreError::Corrupt`] when it holds no such node.
fn journal_peaks(journal: &impl LogRead, size: u64) -> Result<merkle::TreeBuilder, StoreError> {
    let mut peaks = Vec::new();
    let mut covered = 0u64;
    for level in (0..u64::BITS).rev() {
        let width = 1u64 << level;
        if size & width != 0 {
            let node = journal.merkle_node(level, covered >> level)?;
            peaks.push(node.ok_or_else(|| tree_missing(size))?);
            covered += width;
        }
    }
    merkle::TreeBuilder::from_peaks(size, peaks).ok_or_else(|| tree_missing(size))
}

/// A journal that holds `len` entries but not its tree's nodes over them.
fn tree_missing(len: u64) -> StoreError {
    StoreError::Corrupt(format!(
        "the journal holds {len} entries but not its tree's nodes over them"
    ))
}

/// The journal's entries in `range`, read a stretch at a time, each given to `each` with its
/// stored bytes.
fn journal_entries(
    journal: &impl LogRead,
    range: std::ops::Range<u64>,
    mut each: impl FnMut(AuditEntry, &[u8]),
) -> Result<(), StoreError> {
    let mut position = range.start;
    while position < range.end {
        let end = position.saturating_add(4096).min(range.end);
        let stored = journal.audit_bytes(position..end)?;
        // Every entry of the stretch, in order: a store that skips one (a replica behind, a
        // damaged table) is not read past it.
        let whole = stored.len() as u64 == end - position
            && stored
                .iter()
                .zip(position..)
                .all(|(entry, seq)| entry.seq == seq);
        if !whole {
            return Err(StoreError::Unavailable(format!(
                "the journal gave {} of its entries {position} to {end}",
                stored.len()
            )));
        }
        for entry in &stored {
            each(entry.parse()?, &entry.bytes);
        }
        position = end;
    }
    Ok(())
}

/// The attestation an `attestation_signed` entry records: its id, the consent it approved and
/// its digest.
fn signed_in(event: &AuditEvent) -> Option<(String, (ConsentId, Option<String>))> {
    match event {
        AuditEvent::AttestationSigned {
            attestation,
            consent,
            attestation_digest,
            ..
        } => Some((
            attestation.clone(),
            (consent.clone(), attestation_digest.clone()),
        )),
        _ => None,
    }
}
