//! A monitor's state as bytes the bank keeps between runs ([`LogMonitor::save`],
//! [`LogMonitor::restore`]), and as a file each save appends to ([`LogMonitor::save_to`],
//! [`LogMonitor::restore_from`]).
//!
//! The bytes are JSON (one object on one line, its first field `format`; times are integers,
//! nanoseconds since 1970, beyond the 2^53 a JSON number read as a double keeps exactly;
//! `consent-broker/log-monitor/3`). They hold what a pass needs to go on: the signed note of the checkpoint verified last and the roots of its
//! tree's complete subtrees (O(log n) hashes, from which the next checkpoint is checked by
//! reading only the entries after it), how much of the bank's journal was read and the root of
//! its tree over that much, the monitor's tables (attestations signed, approvals logged, tokens
//! issued and served, accesses pending, approvals missing; the platform's stops of the bank's
//! consents the feeds have not come to, and the consents the feeds carried whose stop the log
//! has not shown yet), and what the last pass reported (and, for a monitor made with `pinned_to` that has not read the log through yet, the
//! checkpoint it is held to). They name consents, attestations and tokens by id, and no subject
//! or account: keep them where the journal is kept. Restoring checks the checkpoint's signature
//! with the monitor's key and origin (not its cosignatures: the witness policy may have changed
//! since it was accepted), that the tree gives the checkpoint's root, and the bounds on what the
//! tables hold; the next pass then checks the journal's tree at the position read.
//!
//! A file saved to by [`LogMonitor::save_to`] holds that object, then records of changes, each
//! on a line of its own after a newline (`consent-broker/log-monitor-changes/2`): the SHA-256 of
//! the line before it, what each pass since that line added, judged and forgot (in the pass's
//! order: what it forgot depends on when), and where the monitor then stood (the checkpoint, the
//! tree, the journal's position and root, the approvals missing, the watch over the stops, the
//! report), each checked on
//! restoring as the whole state's are. A last line cut short (a save that never returned: a
//! crash while it appended), and whatever follows a zero byte in the last line (what a power
//! loss may leave of an append), are left out; any other line that is not a record following
//! the one before it is refused.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use ring::digest;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::revocations::{SavedWatch, Watch};
use super::{LONGEST_KEPT, LogMonitor, MAX_APPROVALS, MissingToken, MonitorError, TokenTerms};
use crate::auditor::{decode_hashes, encode_hashes};
use crate::checkpoint::{Checkpoint, verify_checkpoint};
use crate::ids::ConsentId;
use crate::merkle::{EMPTY_ROOT, TreeBuilder};
use crate::policy::Presence;
use crate::tiles::TiledLog;
use crate::vocab::{Purpose, Scope};

/// The format's name and version: the saved state's first field.
const FORMAT: &str = "consent-broker/log-monitor/3";

/// The format of a record of changes appended to a saved state's file.
const CHANGES_FORMAT: &str = "consent-broker/log-monitor-changes/2";

/// The formats before these (a state without the watch over the platform's stops): not
/// restored (what the feeds delivered before the save is not in them), but
/// [`LogMonitor::pinned_to`] takes their checkpoint and report.
const OLDER_FORMATS: [(&str, &str); 1] = [(
    "consent-broker/log-monitor/2",
    "consent-broker/log-monitor-changes/1",
)];

/// How many bytes of records a file may hold after its whole state, at the least: past this and
/// past the whole state's own length, [`LogMonitor::save_to`] writes the whole state again. So
/// the file stays under about twice the state, and the state is written whole once for about
/// as many bytes appended.
const COMPACT_PAST: u64 = 1 << 20;

/// How many more changes than it holds a monitor records before it stops (and its next save
/// writes the whole state): a monitor saved to a file once and then only in bytes.
pub(super) const RECORDED_SLACK: usize = 4096;

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
    /// The file could not be read ([`LogMonitor::restore_from`]): `NotFound` when there is none
    /// (a bank that never saved one makes its monitor anew), `InvalidInput` when it is not a
    /// regular file.
    #[error("the saved state's file could not be read: {0}")]
    Unreadable(std::io::ErrorKind),
}

/// The whole state: its tables' text (`S`) and consents (`C`) owned as read, borrowed from the
/// monitor as saved (nothing copied: a save costs the bytes it writes, not a copy of the state).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State<S = String, C = ConsentId> {
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
    signed: Vec<Attested<S, C>>,
    approvals: Vec<Attested<S, C>>,
    consents: Vec<C>,
    issued: Vec<Issued<S, C>>,
    served: Vec<Served<S>>,
    pending: Vec<Pending<S, C>>,
    missing_approvals: Vec<Missing>,
    /// What the last pass reported missing, reported again by the restored monitor's next pass.
    reported: Vec<Pending>,
    /// The stops the log shows for the bank's consents, against what its feeds delivered.
    revocations: SavedWatch,
}

/// Where the monitor stands: what a record of changes carries whole, as the saved state does.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Progress {
    checkpoint: Option<String>,
    pin: Option<String>,
    peaks: Vec<String>,
    journal_position: u64,
    journal_root: String,
    missing_approvals: Vec<Missing>,
    reported: Vec<Pending>,
    revocations: SavedWatch,
}

/// A record of changes, appended to a saved state's file: the passes since the record before
/// it (`passes`: a slice to write, a list read), then where the monitor stood.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangesRecord<P> {
    format: String,
    origin: String,
    /// The SHA-256 (standard base64) of the line before this one, as written.
    after: String,
    passes: P,
    progress: Progress,
}

/// What a record of changes is first read for: the line it follows, and when each of its
/// passes forgot (the rest is skipped).
#[derive(Deserialize)]
struct Link {
    format: String,
    origin: String,
    after: String,
    passes: Vec<Forgot>,
}

/// When a pass forgot.
#[derive(Deserialize)]
struct Forgot {
    #[serde(with = "time::serde::timestamp::nanoseconds::option")]
    forgot_before: Option<OffsetDateTime>,
}

/// What one pass changed, in the order it changed it: added (attestations signed, ids served,
/// accesses pending, tokens read from the log, approvals, consents), judged (pending accesses
/// found logged or reported missing), then forgot (what was read or served before a time).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PassChanges {
    signed: Vec<Attested>,
    served: Vec<Served>,
    pending: Vec<Pending>,
    issued: Vec<Issued>,
    approvals: Vec<Attested>,
    consents: Vec<ConsentId>,
    judged: Vec<String>,
    #[serde(with = "time::serde::timestamp::nanoseconds::option")]
    forgot_before: Option<OffsetDateTime>,
}

impl PassChanges {
    fn is_empty(&self) -> bool {
        self.signed.is_empty()
            && self.served.is_empty()
            && self.pending.is_empty()
            && self.issued.is_empty()
            && self.approvals.is_empty()
            && self.consents.is_empty()
            && self.judged.is_empty()
            && self.forgot_before.is_none()
    }
}

/// The changes of the passes since the last save to a file, for the next save to append.
#[derive(Debug, Default)]
pub(super) struct Recorded {
    /// The passes before the one under way.
    passes: Vec<PassChanges>,
    /// The pass under way.
    current: PassChanges,
    /// Where each access the pass under way made pending is in its list: one judged in the
    /// same pass (most are: logged by then) is taken out of it instead of recorded twice.
    pending_at: HashMap<String, usize>,
    items: usize,
}

impl Recorded {
    /// A pass begins: what it changes is recorded apart from the passes before it.
    pub(super) fn begin_pass(&mut self) {
        if !self.current.is_empty() {
            self.passes.push(std::mem::take(&mut self.current));
        }
        self.pending_at.clear();
    }

    /// The pass under way, counting one more change.
    const fn pass(&mut self) -> &mut PassChanges {
        self.items += 1;
        &mut self.current
    }

    /// The passes that changed something, in order.
    fn changed(&self) -> Vec<&PassChanges> {
        let current = Some(&self.current).filter(|pass| !pass.is_empty());
        self.passes.iter().chain(current).collect()
    }

    /// How many changes are recorded.
    pub(super) fn items(&self) -> usize {
        self.items
    }

    pub(super) fn signed(
        &mut self,
        attestation: &str,
        (consent, digest): &(ConsentId, Option<String>),
    ) {
        self.pass()
            .signed
            .push(attested(attestation, consent, digest));
    }

    /// An access served under a token id not served before: the id, and the access pending.
    pub(super) fn served(&mut self, access: &MissingToken) {
        let pass = self.pass();
        pass.served.push(Served {
            token_id: access.token_id.clone(),
            token_digest: access.terms.token_digest.clone(),
            served_at: access.served_at,
        });
        pass.pending.push(Pending::from(access));
        let at = pass.pending.len() - 1;
        self.pending_at.insert(access.token_id.clone(), at);
    }

    pub(super) fn issued(&mut self, token_id: &str, terms: &TokenTerms, read_at: OffsetDateTime) {
        self.pass().issued.push(Issued {
            token_id: token_id.to_owned(),
            terms: terms.into(),
            read_at,
        });
    }

    pub(super) fn approval(
        &mut self,
        attestation: &str,
        consent: &ConsentId,
        digest: &Option<String>,
    ) {
        self.pass()
            .approvals
            .push(attested(attestation, consent, digest));
    }

    pub(super) fn consent(&mut self, consent: &ConsentId) {
        self.pass().consents.push(consent.clone());
    }

    /// A pending access judged: logged, or reported missing.
    pub(super) fn judged(&mut self, token_id: String) {
        let Some(at) = self.pending_at.remove(&token_id) else {
            self.pass().judged.push(token_id);
            return;
        };
        let pending = &mut self.current.pending;
        if at < pending.len() {
            pending.swap_remove(at);
            if let Some(moved) = pending.get(at) {
                self.pending_at.insert(moved.token_id.clone(), at);
            }
        }
    }

    /// The pass forgot what was read or served before `cut` (not counted: a pass does once).
    pub(super) const fn forgot_before(&mut self, cut: OffsetDateTime) {
        self.current.forgot_before = Some(cut);
    }
}

/// The file a monitor saves to, as it last wrote or read it.
#[derive(Debug)]
pub(super) struct StateFile {
    path: PathBuf,
    /// Its device and inode (on Unix): a file put in its place is not appended to.
    identity: Option<(u64, u64)>,
    /// Its length.
    len: u64,
    /// The SHA-256 of its last line, and that line's length: read back before each append, so
    /// that a file written over in place (an older copy of the same length) is not appended to.
    last: [u8; 32],
    last_len: u64,
    /// The length of its first line, the whole state.
    base_len: u64,
}

/// The lock on the file beside a state's file ([`lock_path`]), held while the monitor saves to
/// that file: one monitor saves to a file at a time.
#[derive(Debug)]
pub(super) struct StateLock {
    path: PathBuf,
    held: std::fs::File,
}

/// The lock file beside a state's file: its name and `.lock`.
fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl StateFile {
    /// Whether `file`, opened at this one's path, is still it: the same file (on Unix), the same
    /// length, and its last line the one written or read last.
    fn is(&self, file: &mut std::fs::File) -> std::io::Result<bool> {
        let found = file.metadata()?;
        if !found.is_file()
            || found.len() != self.len
            || crate::files::identity(&found) != self.identity
        {
            return Ok(false);
        }
        let last = crate::files::sha256_of(file, self.len - self.last_len, self.last_len)?;
        Ok(last == self.last)
    }
}

/// A saved state's lines, as [`records`] found them.
struct Records<'a> {
    /// The whole state.
    base: &'a [u8],
    /// The records of changes after it, each following the one before.
    changes: Vec<&'a [u8]>,
    /// How many bytes they take, from the start (a last line cut short left out).
    len: u64,
    /// The SHA-256 of the last, and its length.
    last: [u8; 32],
    last_len: u64,
    /// When each of their passes forgot, in order.
    forgot: Vec<Option<OffsetDateTime>>,
}

fn attested(attestation: &str, consent: &ConsentId, digest: &Option<String>) -> Attested {
    Attested {
        attestation: attestation.to_owned(),
        consent: consent.clone(),
        digest: digest.clone(),
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    hash
}

/// Where reading line `line` failed (not what: the error's text may quote the bytes).
fn malformed(line: usize, error: &serde_json::Error) -> SavedStateError {
    SavedStateError::Malformed {
        line,
        column: error.column(),
    }
}

/// Splits `saved` into the whole state and the records of changes after it, each checked to
/// follow the line before it (its format, `origin` and the hash of that line), each as it is
/// read. A last line cut short (JSON that ends early) is left out, and so is what follows a
/// zero byte in the last line (what a power loss may leave of an append).
fn records<'a>(
    saved: &'a [u8],
    origin: &str,
    changes_format: &str,
) -> Result<Records<'a>, SavedStateError> {
    // No line holds a zero byte (JSON escapes it). A zero byte with no newline after it is the
    // last append's, written in part (a power loss can leave a block of it, its newline too,
    // as zeros): the file is read up to it.
    let written = saved
        .iter()
        .position(|byte| *byte == 0)
        .filter(|zero| !saved.get(*zero..).unwrap_or_default().contains(&b'\n'))
        .and_then(|zero| saved.get(..zero))
        .unwrap_or(saved);
    let mut lines = written.split(|byte| *byte == b'\n').peekable();
    let base = lines.next().unwrap_or_default();
    let mut before = base;
    let mut len = base.len() as u64;
    let mut changes = Vec::new();
    let mut forgot = Vec::new();
    while let Some(line) = lines.next() {
        let link: Link = match serde_json::from_slice(line) {
            Ok(link) => link,
            // A last line cut short: the append of a save that never returned.
            Err(error) if error.is_eof() && lines.peek().is_none() => break,
            Err(error) => return Err(malformed(changes.len() + 2, &error)),
        };
        if link.format != changes_format {
            return Err(SavedStateError::Format);
        }
        if link.origin != origin {
            return Err(SavedStateError::OtherLog);
        }
        if link.after != encode_hashes(&[sha256(before)]).concat() {
            return Err(SavedStateError::Inconsistent(
                "a record of changes that does not follow the line before it",
            ));
        }
        forgot.extend(link.passes.into_iter().map(|pass| pass.forgot_before));
        changes.push(line);
        before = line;
        len += 1 + line.len() as u64;
    }
    Ok(Records {
        base,
        changes,
        len,
        last: sha256(before),
        last_len: before.len() as u64,
        forgot,
    })
}

/// What [`LogMonitor::pinned_to`] reads of a saved state (the rest is not parsed), of this
/// format or an older one.
#[derive(Deserialize)]
struct Held {
    format: String,
    origin: String,
    checkpoint: Option<String>,
    pin: Option<String>,
    reported: Vec<Pending>,
}

/// What [`LogMonitor::pinned_to`] reads of a saved state's format (the rest is skipped).
#[derive(Deserialize)]
struct Head {
    format: String,
}

/// What [`LogMonitor::pinned_to`] reads of the last record of changes, of this format or an
/// older one (the rest is skipped).
#[derive(Deserialize)]
struct HeldRecord {
    progress: HeldProgress,
}

/// Where a record of changes left the monitor, as [`LogMonitor::pinned_to`] reads it.
#[derive(Deserialize)]
struct HeldProgress {
    checkpoint: Option<String>,
    pin: Option<String>,
    reported: Vec<Pending>,
}

// The tables' rows below are generic as `State` is: text `S` and consents `C`, owned (`String`,
// `ConsentId`) as read and recorded, borrowed (`&str`, `&ConsentId`) as `save` writes them.

/// An attestation, the consent it approved and its digest (signed by the bank, or logged).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Attested<S = String, C = ConsentId> {
    attestation: S,
    consent: C,
    digest: Option<S>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Terms<S = String, C = ConsentId> {
    consent: C,
    scope: Scope,
    purpose: Purpose,
    presence: Presence,
    token_digest: Option<S>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Issued<S = String, C = ConsentId> {
    token_id: S,
    terms: Terms<S, C>,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    read_at: OffsetDateTime,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Served<S = String> {
    token_id: S,
    token_digest: Option<S>,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    served_at: OffsetDateTime,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pending<S = String, C = ConsentId> {
    token_id: S,
    attestation: S,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    served_at: OffsetDateTime,
    journal_seq: u64,
    terms: Terms<S, C>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Missing {
    attestation: String,
    consent: ConsentId,
}

impl From<&MissingToken> for Pending {
    fn from(access: &MissingToken) -> Self {
        let Pending {
            token_id,
            attestation,
            served_at,
            journal_seq,
            terms,
        } = pending_of(access);
        Self {
            token_id: token_id.to_owned(),
            attestation: attestation.to_owned(),
            served_at,
            journal_seq,
            terms: terms.owned(),
        }
    }
}

/// A pending access as saved, borrowed from the monitor.
fn pending_of(access: &MissingToken) -> Pending<&str, &ConsentId> {
    Pending {
        token_id: &access.token_id,
        attestation: &access.attestation,
        served_at: access.served_at,
        journal_seq: access.journal_seq,
        terms: terms_of(&access.terms),
    }
}

/// A token's terms as saved, borrowed from the monitor.
fn terms_of(terms: &TokenTerms) -> Terms<&str, &ConsentId> {
    Terms {
        consent: &terms.consent,
        scope: terms.scope,
        purpose: terms.purpose,
        presence: terms.presence,
        token_digest: terms.token_digest.as_deref(),
    }
}

impl Terms<&str, &ConsentId> {
    fn owned(self) -> Terms {
        Terms {
            consent: self.consent.clone(),
            scope: self.scope,
            purpose: self.purpose,
            presence: self.presence,
            token_digest: self.token_digest.map(str::to_owned),
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
        terms_of(terms).owned()
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
    /// The monitor's whole state, to keep with the bank's own data and give to
    /// [`LogMonitor::restore`] when the bank restarts ([`LogMonitor::save_to`] keeps it in a
    /// file, appending what changed). Save after each pass: the state holds what that pass reported missing, and a monitor restored
    /// from it reports that again at its next pass, so an alarm the bank had no time to act on
    /// before a restart is not lost (one it did act on comes twice; each names its journal
    /// entry). A monitor restored from an older save reads again what came after it, and
    /// reports again what it reported since. The bytes name consents, attestations and tokens
    /// by id (this bank's served tokens, and the tokens the platform's log shows issued for
    /// this bank's consents), and no subject or account.
    ///
    /// The bytes hold about 376 bytes for each token the monitor may still have to match
    /// (those of the 17.5 minutes before the oldest access still pending: the last 17.5 minutes
    /// while the platform's log keeps up, more while it lags), so they cost what the tokens
    /// alive cost, not what the pass read. [`LogMonitor::save_to`] writes them whole only now
    /// and then (docs/SCALING.md, "A bank monitor's saved state").
    pub fn save(&self) -> Vec<u8> {
        let progress = self.progress();
        let state: State<&str, &ConsentId> = State {
            format: FORMAT.to_owned(),
            origin: self.origin.clone(),
            checkpoint: progress.checkpoint,
            pin: progress.pin,
            peaks: progress.peaks,
            journal_position: progress.journal_position,
            journal_root: progress.journal_root,
            signed: sorted(
                self.signed
                    .iter()
                    .map(|(attestation, (consent, digest))| Attested {
                        attestation: attestation.as_str(),
                        consent,
                        digest: digest.as_deref(),
                    })
                    .collect(),
                |a| (a.attestation, a.consent.as_str()),
            ),
            // Each attestation's approvals in the order they were logged (the first 16 count).
            approvals: sorted(self.approvals.iter().collect(), |(attestation, _)| {
                (attestation.as_str(), "")
            })
            .into_iter()
            .flat_map(|(attestation, logged)| {
                logged.iter().map(move |(consent, digest)| Attested {
                    attestation: attestation.as_str(),
                    consent,
                    digest: digest.as_deref(),
                })
            })
            .collect(),
            consents: sorted(self.consents.iter().collect(), |consent| {
                (consent.as_str(), "")
            }),
            issued: sorted(
                self.issued
                    .iter()
                    .flat_map(|(token_id, issued)| {
                        issued.iter().map(move |(terms, read_at)| Issued {
                            token_id: token_id.as_str(),
                            terms: terms_of(terms),
                            read_at: *read_at,
                        })
                    })
                    .collect(),
                |issued| (issued.token_id, ""),
            ),
            served: sorted(
                self.served
                    .iter()
                    .map(|(token_id, (token_digest, served_at))| Served {
                        token_id: token_id.as_str(),
                        token_digest: token_digest.as_deref(),
                        served_at: *served_at,
                    })
                    .collect(),
                |served| (served.token_id, ""),
            ),
            pending: sorted(self.pending.values().map(pending_of).collect(), |pending| {
                (pending.token_id, "")
            }),
            missing_approvals: progress.missing_approvals,
            reported: progress.reported,
            revocations: progress.revocations,
        };
        // Room for about what the rows take (at most some 250 bytes each), so that the bytes
        // are not copied as they grow; what is left over is given back.
        let rows = [
            self.signed.len(),
            self.approvals.values().map(Vec::len).sum(),
            self.consents.len(),
            self.issued.values().map(Vec::len).sum(),
            self.served.len(),
            self.pending.len(),
        ];
        let mut bytes = Vec::with_capacity(rows.iter().fold(4096_usize, |len, rows| {
            len.saturating_add(rows.saturating_mul(256))
        }));
        // Every field serialises (strings, numbers, and times as integers): this cannot fail.
        if serde_json::to_writer(&mut bytes, &state).is_err() {
            return Vec::new();
        }
        bytes.shrink_to_fit();
        bytes
    }

    /// Where the monitor stands (what each record of changes carries whole).
    fn progress(&self) -> Progress {
        Progress {
            checkpoint: self.note.clone(),
            pin: self.pin.clone(),
            peaks: encode_hashes(self.log.tree().peaks()),
            journal_position: self.journal_position,
            journal_root: encode_hashes(&[self.journal_root]).concat(),
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
            revocations: self.revocations.saved(),
        }
    }

    /// Saves the monitor's state to the file at `path` durably: once this returns, the state
    /// survives a crash or a power loss. Save after each pass, and restore with
    /// [`LogMonitor::restore_from`] when the bank restarts.
    ///
    /// The first save of this monitor to `path` (or of one restored from another file) writes
    /// the whole state ([`LogMonitor::save`]) whole or not at all: to a new file beside it
    /// (readable by its owner alone, on Unix: the state names tokens, attestations and
    /// consents), flushed, renamed over it, and the rename flushed with its directory (on
    /// Unix). Each later save appends to that file a record of what the passes since changed
    /// (added, judged, forgot) and where the monitor now stands, and flushes it: a pass's
    /// save costs what the pass read, not every token the monitor holds. When the records
    /// outgrow the whole state (and 1 MiB), or the file at `path` is no longer the one this
    /// monitor wrote or read (another file put there, or of another length, or whose last line,
    /// read back before each append, is not the one written: an older copy written over it),
    /// the whole state is written again.
    ///
    /// One monitor saves to a file at a time: a save takes a lock on a file beside it (its name
    /// and `.lock`, readable by its owner alone; it stays there), held until the monitor is
    /// dropped or saves to another file, and a second monitor's save to the same file, in this
    /// process or another, is refused while the first holds it. A failed save keeps the lock.
    /// Restoring takes no lock (a copy restored to look at it runs beside the monitor); its
    /// first save does. The lock follows the name: a link to the state file is another file
    /// (and the first whole write replaces the link with a file).
    ///
    /// A save cut short by a crash or a power loss (its record written in part, or partly as
    /// zeros) leaves the file with the state of the save before it:
    /// [`LogMonitor::restore_from`] leaves the part out. A last record the disk damaged so that
    /// it ends early or holds a zero byte is taken the same way: the save before it is
    /// restored, and with it the checkpoint verified before (a log forked after that one and
    /// shown to the restored monitor goes unseen until the next whole write's restore).
    ///
    /// # Errors
    /// The file system's: `NotFound` or `AlreadyExists` for a directory that cannot be made,
    /// `InvalidInput` when the lock file's name is a link, `Unsupported` where the platform has
    /// no file locks; [`std::io::ErrorKind::TimedOut`] when another monitor holds the file's
    /// lock (the next save tries again). After a failure past the lock, the next save writes the
    /// whole state. The file holds the last state saved, or this one when the failure came after
    /// it was written (its flush failed, or the file could not be looked at after the rename).
    pub fn save_to(&mut self, path: &Path) -> std::io::Result<()> {
        self.hold_lock(path)?;
        if let Some(record) = self.changes_for(path) {
            let Some(file) = self.file.as_mut() else {
                return self.save_whole(path);
            };
            let mut line = Vec::with_capacity(record.len() + 1);
            line.push(b'\n');
            line.extend_from_slice(&record);
            match crate::files::append_durably(path, &line, |found| file.is(found)) {
                Ok(true) => {
                    file.len += line.len() as u64;
                    file.last = sha256(&record);
                    file.last_len = record.len() as u64;
                    self.recorded = Some(Recorded::default());
                    return Ok(());
                }
                // Not the file this monitor wrote: written whole.
                Ok(false) => {}
                Err(error) => {
                    self.file = None;
                    return Err(error);
                }
            }
        }
        self.save_whole(path)
    }

    /// The record of changes a save to `path` would append, if it appends one: the monitor
    /// saved to `path` last, recorded every change since, and the file's records stay within
    /// bounds with it.
    fn changes_for(&self, path: &Path) -> Option<Vec<u8>> {
        let (file, recorded) = (self.file.as_ref()?, self.recorded.as_ref()?);
        if file.path != path {
            return None;
        }
        let passes = recorded.changed();
        let record = ChangesRecord {
            format: CHANGES_FORMAT.to_owned(),
            origin: self.origin.clone(),
            after: encode_hashes(&[file.last]).concat(),
            passes,
            progress: self.progress(),
        };
        // Strings, numbers and times as integers: this cannot fail.
        let record = serde_json::to_vec(&record).ok()?;
        let records = (file.len - file.base_len).saturating_add(1 + record.len() as u64);
        (records <= file.base_len.max(COMPACT_PAST)).then_some(record)
    }

    /// Holds the lock of the state file at `path` (its directories made first): kept if held
    /// already (under this name or another: the same lock file, on Unix), else taken at once
    /// or not at all, and only then the one held for another file let go.
    ///
    /// # Errors
    /// [`std::io::ErrorKind::TimedOut`] when another monitor (in this process or another) holds
    /// it; the file system's. The lock held before is still held.
    fn hold_lock(&mut self, path: &Path) -> std::io::Result<()> {
        let lock_path = lock_path(path);
        if let Some(held) = &mut self.lock {
            let same = held.path == path || {
                let named = std::fs::symlink_metadata(&lock_path).ok();
                let held = held.held.metadata().ok();
                let identity = |found: Option<std::fs::Metadata>| {
                    found.as_ref().and_then(crate::files::identity)
                };
                identity(named).is_some_and(|named| Some(named) == identity(held))
            };
            if same {
                held.path = path.to_owned();
                return Ok(());
            }
        }
        if let Some(parent) = path.parent() {
            crate::files::make_dirs(parent)?;
        }
        let held = crate::files::lock_file(&lock_path, std::time::Duration::ZERO)?;
        self.lock = Some(StateLock {
            path: path.to_owned(),
            held,
        });
        Ok(())
    }

    /// Writes the whole state to `path` ([`LogMonitor::save_to`]), and records the changes
    /// from now on for the next save to append.
    fn save_whole(&mut self, path: &Path) -> std::io::Result<()> {
        self.file = None;
        let whole = self.save();
        crate::files::write_durably(path, &whole)?;
        let written = std::fs::metadata(path)?;
        self.file = Some(StateFile {
            path: path.to_owned(),
            identity: crate::files::identity(&written),
            len: whole.len() as u64,
            last: sha256(&whole),
            last_len: whole.len() as u64,
            base_len: whole.len() as u64,
        });
        self.recorded = Some(Recorded::default());
        Ok(())
    }

    /// A monitor as this one was made (origin, log key, witness policy, merge delay, checkpoint
    /// age) restored ([`LogMonitor::restore`]) from the file at `path` that
    /// [`LogMonitor::save_to`] wrote, the whole state and the records of changes after it; its
    /// next save to `path` appends to that file. A last record cut short (a save that never
    /// returned) is left out: the monitor stands where the save before it left it, and its next
    /// save writes the whole state. Only a regular file is read, whole, into memory (a state
    /// parsed takes several times its bytes). This monitor is left as it is, to go on with when
    /// there is no file:
    ///
    /// ```no_run
    /// # use consent_broker::{LogMonitor, MonitorError, SavedStateError};
    /// # fn restart(made: LogMonitor, path: &std::path::Path) -> Result<LogMonitor, MonitorError> {
    /// let monitor = match made.restore_from(path) {
    ///     Ok(restored) => restored,
    ///     // Never saved: the first pass reads the whole log and journal.
    ///     Err(MonitorError::Saved(SavedStateError::Unreadable(std::io::ErrorKind::NotFound))) => {
    ///         made
    ///     }
    ///     Err(error) => return Err(error),
    /// };
    /// # Ok(monitor)
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`MonitorError::Saved`]: the file could not be read ([`SavedStateError::Unreadable`],
    /// `NotFound` when there is none, `InvalidInput` when it is not a regular file), or as
    /// [`LogMonitor::restore`].
    pub fn restore_from(&self, path: &Path) -> Result<Self, MonitorError> {
        let unreadable = |error: std::io::Error| SavedStateError::Unreadable(error.kind());
        let not_a_file = SavedStateError::Unreadable(std::io::ErrorKind::InvalidInput);
        // Not a FIFO (opening one waits for a writer), a device or a directory given by
        // mistake: looked at before it is opened, and again once open (what was opened).
        if !std::fs::metadata(path).map_err(unreadable)?.is_file() {
            return Err(not_a_file.into());
        }
        let mut file = std::fs::File::open(path).map_err(unreadable)?;
        let found = file.metadata().map_err(unreadable)?;
        if !found.is_file() {
            return Err(not_a_file.into());
        }
        let mut saved = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut saved).map_err(unreadable)?;
        let (mut monitor, read) = self.anew().restored_from_lines(&saved)?;
        monitor.file = Some(StateFile {
            path: path.to_owned(),
            identity: crate::files::identity(&found),
            len: read.len,
            last: read.last,
            last_len: read.last_len,
            base_len: read.base.len() as u64,
        });
        monitor.recorded = Some(Recorded::default());
        Ok(monitor)
    }

    /// This monitor (its origin, log key, witness policy and merge delay) with the state
    /// [`LogMonitor::save`] gave (or the contents of a file [`LogMonitor::save_to`] wrote: the
    /// whole state and the records of changes after it), from where that save left off: its next pass reads only the
    /// log's entries after the checkpoint verified last, refuses a log smaller than it or not
    /// consistent with it (a rollback or a fork shown to the restarted bank), and reads the
    /// bank's journal from where it stopped, after checking that the journal's tree over what
    /// was read is the one read ([`MonitorError::JournalDiffers`] otherwise). The saved
    /// checkpoint's log signature and origin are checked again, not its cosignatures: it was
    /// accepted under the policy of its day, and the witnesses may have changed since.
    ///
    /// # Errors
    /// [`MonitorError::Saved`]: bytes that are not a saved state of this version (a state saved
    /// by a version of this crate before the watch over the platform's stops is
    /// [`SavedStateError::Format`]: give it to [`LogMonitor::pinned_to`]), another log's
    /// state, a checkpoint that does not verify, or parts that do not agree. Nothing of it is
    /// used then.
    pub fn restore(self, saved: &[u8]) -> Result<Self, MonitorError> {
        Ok(self.restored_from_lines(saved)?.0)
    }

    /// This monitor made anew with the whole state of `saved`'s first line and the records of
    /// changes after it, each applied in turn; with the lines read.
    ///
    /// What the passes forgot is applied once, not pass by pass (each a walk over every token
    /// held): what a pass added is kept only if it is no older than the latest time that pass
    /// or any after it forgot before, and what the whole state held, than the latest of all.
    fn restored_from_lines(self, saved: &[u8]) -> Result<(Self, Records<'_>), SavedStateError> {
        let read = records(saved, &self.origin, CHANGES_FORMAT)?;
        let state: State = self.parse(read.base, false, |state: &State| {
            (&state.format, &state.origin)
        })?;
        let mut monitor = self.anew().restored(state)?;
        // The latest time each pass, or one after it, forgot before.
        let mut keep_from = read.forgot.clone();
        let mut latest = None;
        for forgot in keep_from.iter_mut().rev() {
            latest = latest.max(*forgot);
            *forgot = latest;
        }
        if let Some(cut) = latest {
            monitor.forget_before(cut);
        }
        let mut keep_from = keep_from.into_iter();
        for (index, line) in read.changes.iter().enumerate() {
            let record: ChangesRecord<Vec<PassChanges>> =
                serde_json::from_slice(line).map_err(|error| malformed(index + 2, &error))?;
            for pass in record.passes {
                monitor.replay(pass, keep_from.next().flatten())?;
            }
            monitor.stand_at(record.progress)?;
        }
        if monitor
            .pending
            .keys()
            .any(|token_id| !monitor.served.contains_key(token_id))
        {
            return Err(SavedStateError::Inconsistent(
                "a pending access whose token was not served",
            ));
        }
        Ok((monitor, read))
    }

    /// This monitor made anew (it reads the whole log and the bank's journal again) but held to
    /// the checkpoint of the state [`LogMonitor::save`] gave: its passes refuse a log smaller
    /// than that checkpoint or whose entries up to its size are not the ones it covered, as a
    /// restored monitor's would. For a state that cannot be restored whole, when its log part
    /// still holds: the bank's journal differs from the one it was read from (the ledger was
    /// restored from an older copy, [`MonitorError::JournalDiffers`]), or its tables do not
    /// agree; or a state an older version of this crate saved (`consent-broker/log-monitor/2`,
    /// without what the bank's feeds delivered, which only the journal read again from its
    /// start gives). Of the state, only the format, the origin, the checkpoint (or the one it
    /// was itself held to) and what its last pass reported are read; the next pass reports that
    /// again, as it was (its journal entries are the old journal's).
    ///
    /// # Errors
    /// [`MonitorError::Saved`]: bytes that are not a saved state of this version or the one
    /// before, another log's
    /// state, a checkpoint that does not verify, or a report with an id longer than is kept.
    pub fn pinned_to(self, saved: &[u8]) -> Result<Self, MonitorError> {
        // The records of changes after a state of an older format are of its day's format.
        let base = saved
            .split(|byte| *byte == b'\n')
            .next()
            .unwrap_or_default();
        let changes_format = serde_json::from_slice::<Head>(base)
            .ok()
            .and_then(|head| {
                OLDER_FORMATS
                    .iter()
                    .find(|(format, _)| *format == head.format)
            })
            .map_or(CHANGES_FORMAT, |(_, changes)| changes);
        let read = records(saved, &self.origin, changes_format)?;
        let held = self.parse(read.base, true, |held: &Held| (&held.format, &held.origin))?;
        // Where the last record of changes left the monitor, if there is one.
        let (checkpoint, pin, reported) = match read.changes.last() {
            None => (held.checkpoint, held.pin, held.reported),
            Some(line) => {
                let record: HeldRecord = serde_json::from_slice(line)
                    .map_err(|error| malformed(read.changes.len() + 1, &error))?;
                let progress = record.progress;
                (progress.checkpoint, progress.pin, progress.reported)
            }
        };
        let mut monitor = self.anew();
        if let Some(note) = checkpoint.or(pin) {
            monitor.pin_to(note)?;
        }
        monitor.repeat_report(reported, None)?;
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
    /// (or an older one's, when `older` is taken) and this monitor's.
    fn parse<T: DeserializeOwned>(
        &self,
        saved: &[u8],
        older: bool,
        header: impl Fn(&T) -> (&String, &String),
    ) -> Result<T, SavedStateError> {
        let state: T = serde_json::from_slice(saved).map_err(|error| {
            // Another format's state (an older version's lacks fields) is said to be one.
            match serde_json::from_slice::<Head>(saved) {
                Ok(head) if head.format != FORMAT => SavedStateError::Format,
                _ => malformed(1, &error),
            }
        })?;
        let (format, origin) = header(&state);
        let an_older = older && OLDER_FORMATS.iter().any(|(older, _)| format == older);
        if format != FORMAT && !an_older {
            return Err(SavedStateError::Format);
        }
        if *origin != self.origin {
            return Err(SavedStateError::OtherLog);
        }
        Ok(state)
    }

    /// A monitor made anew (nothing read) with `state`'s contents, each checked.
    fn restored(mut self, state: State) -> Result<Self, SavedStateError> {
        let State {
            format: _,
            origin: _,
            checkpoint,
            pin,
            peaks,
            journal_position,
            journal_root,
            signed,
            approvals,
            consents,
            issued,
            served,
            pending,
            missing_approvals,
            reported,
            revocations,
        } = state;
        self.replay(
            PassChanges {
                signed,
                served,
                pending,
                issued,
                approvals,
                consents,
                judged: Vec::new(),
                forgot_before: None,
            },
            None,
        )?;
        self.stand_at(Progress {
            checkpoint,
            pin,
            peaks,
            journal_position,
            journal_root,
            missing_approvals,
            reported,
            revocations,
        })?;
        Ok(self)
    }

    /// Applies what a pass changed (or a whole state's tables, as added to nothing), each
    /// change checked against what the monitor holds and keeps, but for what it forgot: ids
    /// served and tokens read before `keep_from` (what this pass or a later one forgot) are
    /// left out.
    fn replay(
        &mut self,
        pass: PassChanges,
        keep_from: Option<OffsetDateTime>,
    ) -> Result<(), SavedStateError> {
        let kept_at = |at: OffsetDateTime| keep_from.is_none_or(|cut| at >= cut);
        use SavedStateError::Inconsistent;
        for signed in pass.signed {
            self.signed_consents.insert(signed.consent.clone());
            let value = (signed.consent, signed.digest);
            insert_once(
                &mut self.signed,
                signed.attestation,
                value,
                "an attestation signed twice",
            )?;
        }
        for served in pass.served.into_iter().filter(|s| kept_at(s.served_at)) {
            let value = (served.token_digest, served.served_at);
            insert_once(
                &mut self.served,
                served.token_id,
                value,
                "a token id served twice",
            )?;
        }
        for pending in pass.pending {
            // One whose id a later pass forgot was judged before that pass (checked once all
            // are applied).
            if !self.served.contains_key(&pending.token_id) && kept_at(pending.served_at) {
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
        for issued in pass.issued {
            if !kept(&issued.token_id) || !issued.terms.token_digest.as_deref().is_none_or(kept) {
                return Err(Inconsistent("a token id or digest longer than is kept"));
            }
            if kept_at(issued.read_at) {
                self.issued
                    .entry(issued.token_id)
                    .or_default()
                    .push((issued.terms.into(), issued.read_at));
            }
        }
        for approval in pass.approvals {
            let logged = self.approvals.entry(approval.attestation).or_default();
            let value = (approval.consent, approval.digest);
            if logged.len() >= MAX_APPROVALS || logged.contains(&value) {
                return Err(Inconsistent(
                    "more approvals of an attestation than are kept, or one twice",
                ));
            }
            logged.push(value);
        }
        for consent in pass.consents {
            if !self.consents.insert(consent) {
                return Err(Inconsistent("a consent twice"));
            }
        }
        for token_id in pass.judged {
            if self.pending.remove(&token_id).is_none() {
                return Err(Inconsistent("an access judged that was not pending"));
            }
        }
        Ok(())
    }

    /// Where the monitor stands, each part checked (and, after a record of changes, checked
    /// not to go back: a log or journal read less far than before is a damaged file).
    fn stand_at(&mut self, progress: Progress) -> Result<(), SavedStateError> {
        use SavedStateError::Inconsistent;
        let peaks =
            decode_hashes(&progress.peaks).ok_or(Inconsistent("a tree hash is not 32 bytes"))?;
        let verified_before = self.note.as_ref().map(|_| self.log.size());
        self.log = match &progress.checkpoint {
            Some(note) => {
                let checkpoint = self.verified(note)?;
                if verified_before.is_some_and(|size| checkpoint.size < size) {
                    return Err(Inconsistent("a log smaller than the line before read"));
                }
                let tree = TreeBuilder::from_peaks(checkpoint.size, peaks)
                    .ok_or(Inconsistent("the tree is not of the checkpoint's size"))?;
                TiledLog::resume(checkpoint, tree)
                    .ok_or(Inconsistent("the tree does not give the checkpoint's root"))?
            }
            None if verified_before.is_some() => {
                return Err(Inconsistent("no checkpoint after a line that had one"));
            }
            None if peaks.is_empty() => TiledLog::new(),
            None => return Err(Inconsistent("a tree without a checkpoint")),
        };
        self.note = progress.checkpoint;
        self.pin = None;
        if let Some(pin) = progress.pin {
            if self.note.is_some() {
                return Err(Inconsistent("a pin beside a checkpoint read through"));
            }
            self.pin_to(pin)?;
        }
        if progress.journal_position < self.journal_position {
            return Err(Inconsistent(
                "a journal read less far than the line before read",
            ));
        }
        self.journal_position = progress.journal_position;
        self.journal_root = decode_hashes(&[progress.journal_root])
            .and_then(|hashes| hashes.first().copied())
            .ok_or(Inconsistent("the journal's root is not 32 bytes"))?;
        if self.journal_position == 0 && self.journal_root != EMPTY_ROOT {
            return Err(Inconsistent("the journal's root is not its position's"));
        }
        self.missing_approvals = progress
            .missing_approvals
            .into_iter()
            .map(|missing| (missing.attestation, missing.consent))
            .collect();
        self.revocations = Watch::restored(progress.revocations, self.log.size())?;
        self.repeat_report(progress.reported, Some(self.journal_position))
    }
}

#[cfg(test)]
mod tests {
    use time::Duration;

    use super::*;
    use crate::checkpoint::NoteVerifier;
    use crate::cosignature::WitnessPolicy;

    fn monitor(recorded: usize) -> LogMonitor {
        let key = NoteVerifier::from_public_key("log.example", &[7; 32]).unwrap();
        let mut monitor =
            LogMonitor::accepting_weak_policy("log.example", key, WitnessPolicy::none());
        monitor.recorded = Some(Recorded {
            items: recorded,
            ..Recorded::default()
        });
        monitor
    }

    /// A monitor saved to a file once and then only in bytes stops recording once its record
    /// holds more changes than the monitor holds items (and the slack): memory follows what it
    /// holds. Its next save to the file then writes the whole state.
    #[test]
    fn a_recording_past_what_the_monitor_holds_is_dropped() {
        let now = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        let mut within = monitor(RECORDED_SLACK);
        within.forget_the_expired(now);
        assert!(within.recorded.is_some());
        let mut past = monitor(RECORDED_SLACK + 1);
        past.forget_the_expired(now);
        assert!(past.recorded.is_none());

        // Saved to a file, then past the slack: the next save writes the whole state.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("monitor.state");
        past.save_to(&path).unwrap();
        past.forget_the_expired(now);
        past.save_to(&path).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap().split(|b| *b == b'\n').count(),
            2,
            "appended to"
        );
        if let Some(recorded) = &mut past.recorded {
            recorded.items = RECORDED_SLACK + 1;
        }
        past.forget_the_expired(now);
        assert!(past.recorded.is_none());
        past.save_to(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), past.save(), "written whole");
        past.forget_the_expired(now);
        past.save_to(&path).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap().split(|b| *b == b'\n').count(),
            2,
            "then appended to"
        );
    }
}
