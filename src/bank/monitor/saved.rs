//! A monitor's state as bytes the bank keeps between runs ([`LogMonitor::save`],
//! [`LogMonitor::restore`]).
//!
//! The bytes are JSON (one object, its first field `format`; times are integers, nanoseconds
//! since 1970, beyond the 2^53 a JSON number read as a double keeps exactly). They hold what a
//! pass needs to go on: the signed note of the checkpoint verified last and the roots of its
//! tree's complete subtrees (O(log n) hashes, from which the next checkpoint is checked by
//! reading only the entries after it), how much of the bank's journal was read and the root of
//! its tree over that much, the monitor's tables (attestations signed, approvals logged, tokens
//! issued and served, accesses pending, approvals missing), and what the last pass reported
//! missing (and, for a monitor made with `pinned_to` that has not read the log through yet, the
//! checkpoint it is held to). They name consents, attestations and tokens by id, and no subject
//! or account: keep them where the journal is kept. Restoring checks the checkpoint's signature
//! with the monitor's key and origin (not its cosignatures: the witness policy may have changed
//! since it was accepted), that the tree gives the checkpoint's root, and the bounds on what the
//! tables hold; the next pass then checks the journal's tree at the position read.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{LONGEST_KEPT, LogMonitor, MAX_APPROVALS, MissingToken, MonitorError, TokenTerms};
use crate::auditor::{decode_hashes, encode_hashes};
use crate::checkpoint::{Checkpoint, verify_checkpoint};
use crate::ids::ConsentId;
use crate::merkle::{EMPTY_ROOT, TreeBuilder};
use crate::policy::Presence;
use crate::tiles::TiledLog;
use crate::vocab::{Purpose, Scope};

/// The format's name and version: the saved state's first field.
const FORMAT: &str = "consent-broker/log-monitor/2";

/// Why a saved state was not restored ([`LogMonitor::restore`]). Nothing of it is used then:
/// restore the right state, or make the monitor anew (it then reads the whole log and journal
/// again).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SavedStateError {
    /// Not JSON of this format: cut short, a field missing, unknown or of the wrong type.
    #[error("not a saved monitor state (line {line}, column {column})")]
    Malformed {
        /// The line where reading it failed.
        line: usize,
        /// The column there.
        column: usize,
    },
    /// Another format, or another version of this one.
    #[error("another format or version than {FORMAT}")]
    Format,
    /// The state of another log: its origin is not this monitor's.
    #[error("the state of another log than this monitor's")]
    OtherLog,
    /// Its checkpoint does not verify under this monitor's log key and origin: another log's
    /// (under another key), or damaged.
    #[error("its checkpoint does not verify under this monitor's log key")]
    Checkpoint,
    /// Its parts do not agree with each other or with what a monitor keeps (named here): a
    /// damaged or edited state.
    #[error("its parts do not agree: {0}")]
    Inconsistent(&'static str),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    format: String,
    origin: String,
    /// The signed note of the checkpoint verified last, with its cosignatures.
    checkpoint: Option<String>,
    /// The signed note of a checkpoint the log is held to and has not been read through yet
    /// (a monitor made with `pinned_to`, before its first pass that read the log).
    pin: Option<String>,
    /// The roots of the complete subtrees of that checkpoint's tree (standard base64).
    peaks: Vec<String>,
    journal_position: u64,
    /// The root of the journal's tree over its first `journal_position` entries.
    journal_root: String,
    signed: Vec<Attested>,
    approvals: Vec<Attested>,
    consents: Vec<ConsentId>,
    issued: Vec<Issued>,
    served: Vec<Served>,
    pending: Vec<Pending>,
    missing_approvals: Vec<Missing>,
    /// What the last pass reported missing, reported again by the restored monitor's next pass.
    reported: Vec<Pending>,
}

/// What [`LogMonitor::pinned_to`] reads of a saved state (the rest is not parsed).
#[derive(Deserialize)]
struct Held {
    format: String,
    origin: String,
    checkpoint: Option<String>,
    pin: Option<String>,
    reported: Vec<Pending>,
}

/// An attestation, the consent it approved and its digest (signed by the bank, or logged).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Attested {
    attestation: String,
    consent: ConsentId,
    digest: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Terms {
    consent: ConsentId,
    scope: Scope,
    purpose: Purpose,
    presence: Presence,
    token_digest: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Issued {
    token_id: String,
    terms: Terms,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    read_at: OffsetDateTime,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Served {
    token_id: String,
    token_digest: Option<String>,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    served_at: OffsetDateTime,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pending {
    token_id: String,
    attestation: String,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    served_at: OffsetDateTime,
    journal_seq: u64,
    terms: Terms,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Missing {
    attestation: String,
    consent: ConsentId,
}

impl From<&MissingToken> for Pending {
    fn from(access: &MissingToken) -> Self {
        Self {
            token_id: access.token_id.clone(),
            attestation: access.attestation.clone(),
            served_at: access.served_at,
            journal_seq: access.journal_seq,
            terms: (&access.terms).into(),
        }
    }
}

impl From<Pending> for MissingToken {
    fn from(access: Pending) -> Self {
        Self {
            token_id: access.token_id,
            attestation: access.attestation,
            served_at: access.served_at,
            journal_seq: access.journal_seq,
            terms: access.terms.into(),
        }
    }
}

impl From<&TokenTerms> for Terms {
    fn from(terms: &TokenTerms) -> Self {
        Self {
            consent: terms.consent.clone(),
            scope: terms.scope,
            purpose: terms.purpose,
            presence: terms.presence,
            token_digest: terms.token_digest.clone(),
        }
    }
}

impl From<Terms> for TokenTerms {
    fn from(terms: Terms) -> Self {
        Self {
            consent: terms.consent,
            scope: terms.scope,
            purpose: terms.purpose,
            presence: terms.presence,
            token_digest: terms.token_digest,
        }
    }
}

/// `items` in a stable order (the maps' own is random), so that the same state saves to the
/// same bytes.
fn sorted<T>(mut items: Vec<T>, key: impl Fn(&T) -> (&str, &str)) -> Vec<T> {
    items.sort_by(|a, b| key(a).cmp(&key(b)));
    items
}

/// Whether a token id or digest is one the monitor keeps.
fn kept(text: &str) -> bool {
    text.len() <= LONGEST_KEPT
}

/// Inserts `value` under `key`, refusing a key that is there already.
fn insert_once<V>(
    map: &mut HashMap<String, V>,
    key: String,
    value: V,
    what: &'static str,
) -> Result<(), SavedStateError> {
    match map.entry(key) {
        Entry::Occupied(_) => Err(SavedStateError::Inconsistent(what)),
        Entry::Vacant(slot) => {
            slot.insert(value);
            Ok(())
        }
    }
}

impl LogMonitor {
    /// The monitor's state, to keep with the bank's own data and give to
    /// [`LogMonitor::restore`] when the bank restarts. Save after each pass (durably, replacing
    /// the last save): the state holds what that pass reported missing, and a monitor restored
    /// from it reports that again at its next pass, so an alarm the bank had no time to act on
    /// before a restart is not lost (one it did act on comes twice; each names its journal
    /// entry). A monitor restored from an older save reads again what came after it, and
    /// reports again what it reported since. The bytes name consents, attestations and tokens
    /// by id (this bank's served tokens, and the tokens the platform's log shows issued for
    /// this bank's consents), and no subject or account.
    ///
    /// The whole state is written each time: about 376 bytes for each token the monitor may
    /// still have to match (those of the 17.5 minutes before the oldest access still pending:
    /// the last 17.5 minutes while the platform's log keeps up, more while it lags), so a save
    /// costs what the tokens alive cost, not what the pass read. A bank serving thousands of
    /// tokens a second saves every few minutes instead of after each pass, and pays for it only
    /// at a restart, by reading again what came after the save and reporting again what it
    /// reported since (docs/SCALING.md, "A bank monitor's saved state").
    pub fn save(&self) -> Vec<u8> {
        let attested =
            |(attestation, consent, digest): (&String, &ConsentId, &Option<String>)| Attested {
                attestation: attestation.clone(),
                consent: consent.clone(),
                digest: digest.clone(),
            };
        let state = State {
            format: FORMAT.to_owned(),
            origin: self.origin.clone(),
            checkpoint: self.note.clone(),
            pin: self.pin.clone(),
            peaks: encode_hashes(self.log.tree().peaks()),
            journal_position: self.journal_position,
            journal_root: encode_hashes(&[self.journal_root]).concat(),
            signed: sorted(
                self.signed
                    .iter()
                    .map(|(attestation, (consent, digest))| {
                        attested((attestation, consent, digest))
                    })
                    .collect(),
                |a| (&a.attestation, a.consent.as_str()),
            ),
            // Each attestation's approvals in the order they were logged (the first 16 count).
            approvals: sorted(
                self.approvals
                    .iter()
                    .map(|(attestation, logged)| {
                        (
                            attestation,
                            logged
                                .iter()
                                .map(|(consent, digest)| attested((attestation, consent, digest)))
                                .collect::<Vec<_>>(),
                        )
                    })
                    .collect(),
                |(attestation, _)| (attestation.as_str(), ""),
            )
            .into_iter()
            .flat_map(|(_, logged)| logged)
            .collect(),
            consents: {
                let mut consents: Vec<ConsentId> = self.consents.iter().cloned().collect();
                consents.sort_by(|a, b| a.as_str().cmp(b.as_str()));
                consents
            },
            issued: sorted(
                self.issued
                    .iter()
                    .flat_map(|(token_id, issued)| {
                        issued.iter().map(move |(terms, read_at)| Issued {
                            token_id: token_id.clone(),
                            terms: terms.into(),
                            read_at: *read_at,
                        })
                    })
                    .collect(),
                |issued| (&issued.token_id, ""),
            ),
            served: sorted(
                self.served
                    .iter()
                    .map(|(token_id, (token_digest, served_at))| Served {
                        token_id: token_id.clone(),
                        token_digest: token_digest.clone(),
                        served_at: *served_at,
                    })
                    .collect(),
                |served| (&served.token_id, ""),
            ),
            pending: sorted(
                self.pending.values().map(Pending::from).collect(),
                |pending| (&pending.token_id, ""),
            ),
            missing_approvals: sorted(
                self.missing_approvals
                    .iter()
                    .map(|(attestation, consent)| Missing {
                        attestation: attestation.clone(),
                        consent: consent.clone(),
                    })
                    .collect(),
                |missing| (&missing.attestation, missing.consent.as_str()),
            ),
            reported: self.reported.iter().map(Pending::from).collect(),
        };
        // Every field serialises (strings, numbers, and times as integers): this cannot fail.
        serde_json::to_vec(&state).unwrap_or_default()
    }

    /// The monitor's state ([`LogMonitor::save`]) written to `path` whole or not at all: to a
    /// new file beside it (readable by its owner alone, on Unix: the state names tokens,
    /// attestations and consents), flushed, renamed over it, and the rename flushed with its
    /// directory (on Unix), so that once this returns the state survives a crash or a power
    /// loss. Read it back with `std::fs::read` and give the bytes to [`LogMonitor::restore`].
    ///
    /// # Errors
    /// The file system's (the last state saved is then still in place).
    pub fn save_to(&self, path: &std::path::Path) -> std::io::Result<()> {
        crate::files::write_durably(path, &self.save())
    }

    /// This monitor (its origin, log key, witness policy and merge delay) with the state
    /// [`LogMonitor::save`] gave, from where that save left off: its next pass reads only the
    /// log's entries after the checkpoint verified last, refuses a log smaller than it or not
    /// consistent with it (a rollback or a fork shown to the restarted bank), and reads the
    /// bank's journal from where it stopped, after checking that the journal's tree over what
    /// was read is the one read ([`MonitorError::JournalDiffers`] otherwise). The saved
    /// checkpoint's log signature and origin are checked again, not its cosignatures: it was
    /// accepted under the policy of its day, and the witnesses may have changed since.
    ///
    /// # Errors
    /// [`MonitorError::Saved`]: bytes that are not a saved state of this version, another log's
    /// state, a checkpoint that does not verify, or parts that do not agree. Nothing of it is
    /// used then.
    pub fn restore(self, saved: &[u8]) -> Result<Self, MonitorError> {
        let state = self.parse(saved, |state: &State| (&state.format, &state.origin))?;
        Ok(self.anew().restored(state)?)
    }

    /// This monitor made anew (it reads the whole log and the bank's journal again) but held to
    /// the checkpoint of the state [`LogMonitor::save`] gave: its passes refuse a log smaller
    /// than that checkpoint or whose entries up to its size are not the ones it covered, as a
    /// restored monitor's would. For a state that cannot be restored whole, when its log part
    /// still holds: the bank's journal differs from the one it was read from (the ledger was
    /// restored from an older copy, [`MonitorError::JournalDiffers`]), or its tables do not
    /// agree. Of the state, only the format, the origin, the checkpoint (or the one it was
    /// itself held to) and what its last pass reported are read; the next pass reports that
    /// again, as it was (its journal entries are the old journal's).
    ///
    /// # Errors
    /// [`MonitorError::Saved`]: bytes that are not a saved state of this version, another log's
    /// state, a checkpoint that does not verify, or a report with an id longer than is kept.
    pub fn pinned_to(self, saved: &[u8]) -> Result<Self, MonitorError> {
        let held = self.parse(saved, |held: &Held| (&held.format, &held.origin))?;
        let mut monitor = self.anew();
        if let Some(note) = held.checkpoint.or(held.pin) {
            monitor.pin_to(note)?;
        }
        monitor.repeat_report(held.reported, None)?;
        Ok(monitor)
    }

    /// `reported`, to be reported again at the next pass (each below `position` in the journal,
    /// when given, and none twice).
    fn repeat_report(
        &mut self,
        reported: Vec<Pending>,
        position: Option<u64>,
    ) -> Result<(), SavedStateError> {
        let mut seqs = HashSet::new();
        for access in &reported {
            if !kept(&access.token_id) {
                return Err(SavedStateError::Inconsistent(
                    "a token id or digest longer than is kept",
                ));
            }
            if position.is_some_and(|position| access.journal_seq >= position)
                || !seqs.insert(access.journal_seq)
            {
                return Err(SavedStateError::Inconsistent(
                    "a report of an access not read, or twice",
                ));
            }
        }
        self.reported = reported.into_iter().map(MissingToken::from).collect();
        self.repeat.clone_from(&self.reported);
        Ok(())
    }

    /// The checkpoint of a saved `note`, verified under this monitor's log key and origin.
    fn verified(&self, note: &str) -> Result<Checkpoint, SavedStateError> {
        verify_checkpoint(note, &self.log_key, Some(&self.origin))
            .map_err(|_| SavedStateError::Checkpoint)
    }

    /// Holds the log to the checkpoint of `note`, once it verifies.
    fn pin_to(&mut self, note: String) -> Result<(), SavedStateError> {
        self.log = TiledLog::pinned(self.verified(&note)?);
        self.pin = Some(note);
        Ok(())
    }

    /// The saved state's JSON as `T`, whose `header` (format and origin) must be this format's
    /// and this monitor's.
    fn parse<T: DeserializeOwned>(
        &self,
        saved: &[u8],
        header: impl Fn(&T) -> (&String, &String),
    ) -> Result<T, SavedStateError> {
        let state: T = serde_json::from_slice(saved).map_err(|error| {
            // Where, not what: the error's text may quote the bytes.
            SavedStateError::Malformed {
                line: error.line(),
                column: error.column(),
            }
        })?;
        let (format, origin) = header(&state);
        if format != FORMAT {
            return Err(SavedStateError::Format);
        }
        if *origin != self.origin {
            return Err(SavedStateError::OtherLog);
        }
        Ok(state)
    }

    /// A monitor made anew (nothing read) with `state`'s contents, each checked.
    fn restored(mut self, state: State) -> Result<Self, SavedStateError> {
        use SavedStateError::Inconsistent;
        let peaks =
            decode_hashes(&state.peaks).ok_or(Inconsistent("a tree hash is not 32 bytes"))?;
        self.log = match &state.checkpoint {
            Some(note) => {
                let checkpoint = self.verified(note)?;
                let tree = TreeBuilder::from_peaks(checkpoint.size, peaks)
                    .ok_or(Inconsistent("the tree is not of the checkpoint's size"))?;
                TiledLog::resume(checkpoint, tree)
                    .ok_or(Inconsistent("the tree does not give the checkpoint's root"))?
            }
            None if peaks.is_empty() => TiledLog::new(),
            None => return Err(Inconsistent("a tree without a checkpoint")),
        };
        self.note = state.checkpoint;
        if let Some(pin) = state.pin {
            if self.note.is_some() {
                return Err(Inconsistent("a pin beside a checkpoint read through"));
            }
            self.pin_to(pin)?;
        }
        self.journal_position = state.journal_position;
        self.journal_root = decode_hashes(&[state.journal_root])
            .and_then(|hashes| hashes.first().copied())
            .ok_or(Inconsistent("the journal's root is not 32 bytes"))?;
        if self.journal_position == 0 && self.journal_root != EMPTY_ROOT {
            return Err(Inconsistent("the journal's root is not its position's"));
        }

        for signed in state.signed {
            let value = (signed.consent, signed.digest);
            insert_once(
                &mut self.signed,
                signed.attestation,
                value,
                "an attestation signed twice",
            )?;
        }
        for approval in state.approvals {
            let logged = self.approvals.entry(approval.attestation).or_default();
            let value = (approval.consent, approval.digest);
            if logged.len() >= MAX_APPROVALS || logged.contains(&value) {
                return Err(Inconsistent(
                    "more approvals of an attestation than are kept, or one twice",
                ));
            }
            logged.push(value);
        }
        self.consents = state.consents.into_iter().collect();
        for issued in state.issued {
            if !kept(&issued.token_id) || !issued.terms.token_digest.as_deref().is_none_or(kept) {
                return Err(Inconsistent("a token id or digest longer than is kept"));
            }
            self.issued
                .entry(issued.token_id)
                .or_default()
                .push((issued.terms.into(), issued.read_at));
        }
        for served in state.served {
            let value = (served.token_digest, served.served_at);
            insert_once(
                &mut self.served,
                served.token_id,
                value,
                "a token id served twice",
            )?;
        }
        for pending in state.pending {
            if !self.served.contains_key(&pending.token_id) {
                return Err(Inconsistent("a pending access whose token was not served"));
            }
            let token_id = pending.token_id.clone();
            insert_once(
                &mut self.pending,
                token_id,
                pending.into(),
                "an access pending twice",
            )?;
        }
        self.missing_approvals = state
            .missing_approvals
            .into_iter()
            .map(|missing| (missing.attestation, missing.consent))
            .collect();
        self.repeat_report(state.reported, Some(self.journal_position))?;
        Ok(self)
    }
}
