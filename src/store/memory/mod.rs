//! The in-memory store: for tests and for embedding where durability is not needed.
//!
//! One `RwLock` guards the state and one `Mutex` the audit log. A commit that changes state
//! holds the state's write lock until its entries are appended; a commit that only records (a
//! decision with nothing to count) checks its preconditions under the state's read lock and
//! appends while still holding it, so decisions run side by side and meet only at the append,
//! and no state change can fall between a decision's check and its entry. A commit that fails
//! part-way is rolled back from an undo log before the lock is released. Entries are encoded
//! and their leaves hashed before any lock is taken; only their sequence numbers are placed under
//! the log's lock. The log's Merkle tree has a `Mutex` of its own: its inner nodes are computed
//! after the append, outside both locks, or by a reader of nodes before it reads (see `Tree`).

mod keys;
mod ledger;
mod packed;

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use time::{Date, OffsetDateTime};

use super::{
    AccessView, AttestationRecord, Change, Commit, CommitReceipt, DeviceKeyRecord, FeedState,
    GateQuery, GateView, HolderRecord, LedgerRead, LogRead, PolicyRecord, Precondition,
    PublishedKey, RecordKind, SeenKind, SignedCheckpoint, StateRead, Store, StoreError,
    StoredCheckpoint, StoredEntry, SubjectLink,
};
use crate::audit::PreparedEntry;
use crate::consent::Consent;
use crate::ids::{ConsentId, HolderId, PlatformId, SubjectId};
use crate::merkle::{self, Hash, MemoryNodes, MerkleError, NodeSource};
use crate::policy::{PlatformProfile, Usage};
use crate::privacy::{SubjectKey, SubjectKeyRecord};
use keys::SubjectKeys;
use ledger::{LedgerState, LedgerUndo};
use packed::{Consents, Packed};

/// A [`Store`] that keeps everything in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: RwLock<Inner>,
    /// Taken after `inner` when both are held, never before.
    log: Mutex<Log>,
    /// The Merkle tree of the log's entries, brought up to date from the log's pending leaf
    /// hashes (see [`Tree`]). Taken before `log` when both are held, never after.
    tree: Mutex<Tree>,
    /// The log's length as of its last append (a hint: entries are encoded and hashed at it
    /// before the lock is taken).
    log_len: AtomicU64,
    /// Set once the tree cannot take the log's leaves (unreachable, or a thread panicked while
    /// integrating): from then on appends are refused, since their entries could never be proven.
    tree_broken: AtomicBool,
}

/// The audit log.
#[derive(Debug, Default)]
struct Log {
    /// Entry bytes, by sequence number (in chunks: an append never moves the log).
    audit: merkle::Chunked<Vec<u8>>,
    /// The leaf hashes of the entries appended since the tree was last brought up to date, in
    /// order: the tree holds the first `audit.len() - pending.len()` leaves.
    pending: Vec<Hash>,
    checkpoints: Vec<StoredCheckpoint>,
}

/// The log's Merkle tree, kept apart from the log: an append under the log's lock only queues
/// its leaf hashes, and the inner nodes (about one SHA-256 of 65 bytes a leaf) are computed
/// afterwards, outside that lock, by whichever appender finds the tree free once enough leaves
/// are waiting, or by a reader of nodes before it reads. Two threads deciding at once then no
/// longer queue on the log's lock while the other hashes. Every read of a node brings the tree
/// up to the log's length first, so readers see the same tree as before.
#[derive(Debug, Default)]
struct Tree {
    nodes: MemoryNodes,
    /// An empty buffer with room, swapped with the log's pending leaves when taking them, so
    /// that neither side reallocates in steady state.
    spare: Vec<Hash>,
}

/// Leaves waiting before an appender brings the tree up to date: enough that one thread hashes
/// a run of them while the tree's lines stay in its cache, few enough that a reader catching up
/// hashes at most about this many more than were appended since.
const INTEGRATE_AT: usize = 64;

/// Entries placed at the sequence numbers from `first` on, with their leaf hashes: made before
/// the log's lock is taken, at the length the log had then, and used under it if no other commit
/// appended meanwhile (else made again there).
struct Placed {
    first: u64,
    entries: Vec<(Vec<u8>, Hash)>,
}

impl Placed {
    fn at(first: u64, prepared: &[PreparedEntry]) -> Self {
        let entries = (first..)
            .zip(prepared)
            .map(|(seq, entry)| {
                // Allocated at its exact length: an entry is kept for good.
                let bytes = entry.bytes(seq);
                let leaf = merkle::leaf_hash(&bytes);
                (bytes, leaf)
            })
            .collect();
        Self { first, entries }
    }
}

impl Log {
    /// Appends the entries at the log's end; the receipt.
    fn append(
        &mut self,
        placed: Placed,
        prepared: &[PreparedEntry],
    ) -> Result<CommitReceipt, StoreError> {
        let first = self.audit.len() as u64;
        let placed = if placed.first == first {
            placed
        } else {
            Placed::at(first, prepared)
        };
        for (bytes, leaf) in placed.entries {
            self.pending.push(leaf);
            self.audit.push(bytes);
        }
        Ok(CommitReceipt {
            audit_seqs: first..self.audit.len() as u64,
        })
    }
}

#[derive(Debug, Default)]
struct Inner {
    holders: HashMap<HolderId, HolderRecord>,
    platforms: HashMap<PlatformId, PlatformProfile>,
    /// Packed records, indexed by id and by subject.
    consents: Consents,
    usage: HashMap<(ConsentId, Date), Usage>,
    attestations: HashSet<String>,
    keys: Vec<PublishedKey>,
    /// A bank's ledger (empty in a broker's store).
    ledger: LedgerState,
    /// Subjects' keys, apart from the log.
    subject_keys: SubjectKeys,
}

/// What an erasure or a retention pass removed, to put back if the commit fails.
struct Removed {
    key: Option<SubjectKeyRecord>,
    /// The records the consent table held, put back as they were.
    consents: Vec<Packed>,
    usage: Vec<((ConsentId, Date), Usage)>,
    attestations: Vec<String>,
}

/// How to take back one applied change.
enum Undo {
    Holder(HolderId, Option<HolderRecord>),
    Platform(PlatformId),
    ConsentInserted(ConsentId),
    ConsentUpdated(Packed),
    Usage((ConsentId, Date), Option<Usage>),
    Attestation(String),
    KeyActivated,
    KeyRetired(usize),
    Ledger(LedgerUndo),
    Several(Vec<Undo>),
    SubjectKey(SubjectId),
    Removed(Box<Removed>),
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> Result<RwLockReadGuard<'_, Inner>, StoreError> {
        self.inner.read().map_err(|_| poisoned())
    }

    fn write(&self) -> Result<RwLockWriteGuard<'_, Inner>, StoreError> {
        self.inner.write().map_err(|_| poisoned())
    }

    fn log(&self) -> Result<MutexGuard<'_, Log>, StoreError> {
        // Held for a few hundred nanoseconds at a time: spin a little before sleeping, which
        // costs a system call each way.
        for _ in 0..256 {
            match self.log.try_lock() {
                Ok(log) => return Ok(log),
                Err(std::sync::TryLockError::Poisoned(_)) => return Err(poisoned()),
                Err(std::sync::TryLockError::WouldBlock) => std::hint::spin_loop(),
            }
        }
        self.log.lock().map_err(|_| poisoned())
    }

    /// Appends prepared entries, placed and hashed before the lock at the length last seen:
    /// the receipt, and how many leaves now wait for the tree (for [`Self::after_append`], which
    /// the caller runs once it has released the state's lock). Refused, before anything is
    /// appended, once the tree is broken: an entry that could never be proven is not recorded.
    fn append(&self, prepared: &[PreparedEntry]) -> Result<(CommitReceipt, usize), StoreError> {
        if self.tree_broken.load(Ordering::Acquire) {
            return Err(tree_broken());
        }
        let placed = Placed::at(self.log_len.load(Ordering::Relaxed), prepared);
        let (receipt, waiting) = {
            let mut log = self.log()?;
            let receipt = log.append(placed, prepared)?;
            (receipt, log.pending.len())
        };
        self.log_len
            .store(receipt.audit_seqs.end, Ordering::Relaxed);
        Ok((receipt, waiting))
    }

    /// With enough leaves waiting and the tree free, brings the tree up to date. Busy means
    /// another thread is integrating: it or a later append takes these. The commit has landed
    /// whatever happens here; a tree that cannot take its leaves refuses the next appends.
    fn after_append(&self, waiting: usize) {
        if waiting < INTEGRATE_AT {
            return;
        }
        match self.tree.try_lock() {
            Ok(mut tree) => self.integrate(&mut tree),
            Err(std::sync::TryLockError::Poisoned(_)) => {
                self.tree_broken.store(true, Ordering::Release);
            }
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
    }

    /// The tree, brought up to the log's length as of this call.
    fn tree(&self) -> Result<MutexGuard<'_, Tree>, StoreError> {
        let Ok(mut tree) = self.tree.lock() else {
            // A thread panicked while integrating: the leaves it held are gone.
            self.tree_broken.store(true, Ordering::Release);
            return Err(tree_broken());
        };
        self.integrate(&mut tree);
        if self.tree_broken.load(Ordering::Acquire) {
            return Err(tree_broken());
        }
        Ok(tree)
    }

    /// Takes the log's pending leaves (briefly holding its lock) and adds them to the tree,
    /// computing the nodes they complete outside the log's lock.
    ///
    /// A tree that failed to take a leaf (unreachable for an in-memory tree that only grows)
    /// takes no more, and its readers get the error rather than a tree that diverged.
    fn integrate(&self, tree: &mut Tree) {
        if self.tree_broken.load(Ordering::Acquire) {
            return;
        }
        let mut leaves = std::mem::take(&mut tree.spare);
        match self.log() {
            Ok(mut log) => std::mem::swap(&mut log.pending, &mut leaves),
            Err(_) => {
                self.tree_broken.store(true, Ordering::Release);
                return;
            }
        }
        for leaf in leaves.drain(..) {
            if tree.nodes.push(leaf).is_err() {
                self.tree_broken.store(true, Ordering::Release);
                return;
            }
        }
        if leaves.capacity() < INTEGRATE_AT {
            leaves.reserve(2 * INTEGRATE_AT);
        }
        tree.spare = leaves;
    }
}

fn poisoned() -> StoreError {
    StoreError::Unavailable("memory store lock poisoned by a panicking writer".into())
}

fn tree_broken() -> StoreError {
    StoreError::Corrupt("the memory store's Merkle tree cannot take the log's entries".into())
}

impl Inner {
    fn check(&self, precondition: &Precondition) -> bool {
        match precondition {
            Precondition::ConsentVersion {
                consent, version, ..
            } => self.consents.version(consent) == Some(*version),
            Precondition::HolderVersion {
                holder, version, ..
            } => self.holders.get(holder).map(|h| h.version) == Some(*version),
            Precondition::UsageIs {
                consent,
                day,
                usage,
                ..
            } => {
                self.usage
                    .get(&(consent.clone(), *day))
                    .copied()
                    .unwrap_or_default()
                    == *usage
            }
            Precondition::KeyActive { key_use, kid, .. } => self
                .keys
                .iter()
                .any(|key| key.key_use == *key_use && key.kid == *kid && key.retired_at.is_none()),
            Precondition::SubjectKeyIs { subject, key, .. } => self
                .subject_keys
                .key(subject)
                .is_some_and(|stored| stored == &**key),
            Precondition::AttestationVersion { .. }
            | Precondition::ServedIs { .. }
            | Precondition::ServedBelow { .. }
            | Precondition::BankPolicyVersion { .. }
            | Precondition::LiveAttestations { .. }
            | Precondition::LiveDeviceKeys { .. }
            | Precondition::NotRevokedAtPlatform { .. } => {
                self.ledger.check(precondition).unwrap_or(false)
            }
        }
    }

    fn apply(&mut self, change: Change) -> Result<Undo, StoreError> {
        match change {
            Change::InsertHolder { holder, .. } => {
                if self.holders.contains_key(&holder.id) {
                    return Err(duplicate(RecordKind::Holder, holder.id.as_str()));
                }
                let id = holder.id.clone();
                self.holders.insert(id.clone(), holder);
                Ok(Undo::Holder(id, None))
            }
            Change::UpdateHolder { holder, .. } => {
                let Some(stored) = self.holders.get(&holder.id) else {
                    return Err(missing(RecordKind::Holder, holder.id.as_str()));
                };
                if stored.version.checked_add(1) != Some(holder.version) {
                    return Err(StoreError::Conflict);
                }
                let id = holder.id.clone();
                let old = self.holders.insert(id.clone(), holder);
                Ok(Undo::Holder(id, old))
            }
            Change::InsertPlatform { platform, .. } => {
                if self.platforms.contains_key(&platform.id) {
                    return Err(duplicate(RecordKind::Platform, platform.id.as_str()));
                }
                let id = platform.id.clone();
                self.platforms.insert(id.clone(), platform);
                Ok(Undo::Platform(id))
            }
            Change::InsertConsent { consent, .. } => {
                if !self.consents.insert(&consent)? {
                    return Err(duplicate(RecordKind::Consent, consent.id().as_str()));
                }
                Ok(Undo::ConsentInserted(consent.id().clone()))
            }
            Change::UpdateConsent { consent, .. } => {
                let Some(stored) = self.consents.version(consent.id()) else {
                    return Err(missing(RecordKind::Consent, consent.id().as_str()));
                };
                if stored.checked_add(1) != Some(consent.version) {
                    return Err(StoreError::Conflict);
                }
                let old = self
                    .consents
                    .replace(&consent)?
                    .ok_or_else(|| missing(RecordKind::Consent, consent.id().as_str()))?;
                Ok(Undo::ConsentUpdated(old))
            }
            Change::CountUnattendedAccess { consent, day, .. } => {
                let key = (consent, day);
                let old = self.usage.get(&key).copied();
                let mut usage = old.unwrap_or_default();
                usage.unattended_today = usage.unattended_today.saturating_add(1);
                self.usage.insert(key.clone(), usage);
                Ok(Undo::Usage(key, old))
            }
            Change::UseAttestation { attestation_id, .. } => {
                if !self.attestations.insert(attestation_id.clone()) {
                    return Err(duplicate(RecordKind::Attestation, &attestation_id));
                }
                Ok(Undo::Attestation(attestation_id))
            }
            Change::ActivateKey { key, .. } => {
                if self
                    .keys
                    .iter()
                    .any(|k| k.key_use == key.key_use && k.kid == key.kid)
                {
                    return Err(duplicate(RecordKind::Key, &key.kid));
                }
                // One active key per use: another broker activated one first.
                if self
                    .keys
                    .iter()
                    .any(|k| k.key_use == key.key_use && k.is_active())
                {
                    return Err(StoreError::Conflict);
                }
                self.keys.push(key);
                Ok(Undo::KeyActivated)
            }
            Change::RetireKey {
                key_use,
                kid,
                retired_at,
                verifies_until,
                ..
            } => {
                let Some(position) = self
                    .keys
                    .iter()
                    .position(|k| k.key_use == key_use && k.kid == kid && k.is_active())
                else {
                    return Err(missing(RecordKind::Key, &kid));
                };
                if let Some(key) = self.keys.get_mut(position) {
                    key.retired_at = Some(retired_at);
                    key.verifies_until = verifies_until;
                }
                Ok(Undo::KeyRetired(position))
            }
            Change::InsertSubjectKey { record, .. } => {
                // Another writer made the subject's key first: re-read it and decide again.
                let subject = record.subject.clone();
                if !self.subject_keys.insert(record)? {
                    return Err(StoreError::Conflict);
                }
                Ok(Undo::SubjectKey(subject))
            }
            Change::EraseSubject {
                subject,
                consents,
                attestations,
                used_attestations,
                ..
            } => {
                let mut held = self.consents.ids_of_subject(&subject);
                let mut listed = consents.clone();
                held.sort();
                listed.sort();
                if held != listed {
                    return Err(StoreError::Conflict);
                }
                let ledger = self.ledger.apply(&Change::EraseSubject {
                    subject: subject.clone(),
                    consents: Vec::new(),
                    attestations,
                    used_attestations: Vec::new(),
                })?;
                let mut removed = match self.remove_consents(&consents, &used_attestations) {
                    Ok(removed) => removed,
                    Err(error) => {
                        if let Some(ledger) = ledger {
                            self.ledger.undo(ledger);
                        }
                        return Err(error);
                    }
                };
                removed.key = self.subject_keys.remove(&subject);
                let mut undo = vec![Undo::Removed(Box::new(removed))];
                if let Some(ledger) = ledger {
                    undo.push(Undo::Ledger(ledger));
                }
                Ok(Undo::Several(undo))
            }
            Change::ForgetConsents {
                consents,
                used_attestations,
                ..
            } => {
                if let Some(absent) = consents.iter().find(|id| !self.consents.contains(id)) {
                    return Err(missing(RecordKind::Consent, absent.as_str()));
                }
                let removed = self.remove_consents(&consents, &used_attestations)?;
                Ok(Undo::Removed(Box::new(removed)))
            }
            change @ (Change::RecordAttestation { .. }
            | Change::UpdateAttestation { .. }
            | Change::AppendBankPolicy { .. }
            | Change::CountServed { .. }
            | Change::RememberSeen { .. }
            | Change::PruneSeen { .. }
            | Change::RecordPlatformRevocation { .. }
            | Change::SetFeedState { .. }
            | Change::RegisterDeviceKey { .. }
            | Change::RevokeDeviceKey { .. }
            | Change::LinkSubject { .. }
            | Change::ForgetAttestations { .. }) => Ok(Undo::Ledger(
                self.ledger.apply(&change)?.unwrap_or(LedgerUndo::Nothing),
            )),
        }
    }

    fn undo(&mut self, undo: Undo) {
        match undo {
            Undo::Holder(id, Some(old)) => {
                self.holders.insert(id, old);
            }
            Undo::Holder(id, None) => {
                self.holders.remove(&id);
            }
            Undo::Platform(id) => {
                self.platforms.remove(&id);
            }
            Undo::ConsentInserted(id) => {
                undone(self.consents.remove(&id).map(drop));
            }
            Undo::ConsentUpdated(old) => {
                undone(self.consents.restore(old));
            }
            Undo::Usage(key, Some(old)) => {
                self.usage.insert(key, old);
            }
            Undo::Usage(key, None) => {
                self.usage.remove(&key);
            }
            Undo::Attestation(id) => {
                self.attestations.remove(&id);
            }
            Undo::KeyActivated => {
                self.keys.pop();
            }
            Undo::KeyRetired(position) => {
                if let Some(key) = self.keys.get_mut(position) {
                    key.retired_at = None;
                    key.verifies_until = None;
                }
            }
            Undo::Ledger(undo) => self.ledger.undo(undo),
            Undo::SubjectKey(subject) => {
                self.subject_keys.remove(&subject);
            }
            Undo::Removed(removed) => {
                let removed = *removed;
                if let Some(key) = removed.key {
                    undone(self.subject_keys.insert(key).map(drop));
                }
                for consent in removed.consents {
                    undone(self.consents.put_back(consent));
                }
                self.usage.extend(removed.usage);
                self.attestations.extend(removed.attestations);
            }
            Undo::Several(undos) => {
                for undo in undos.into_iter().rev() {
                    self.undo(undo);
                }
            }
        }
    }

    /// Removes consents with their usage, and used-attestation ids; what to put back.
    fn remove_consents(
        &mut self,
        consents: &[ConsentId],
        used: &[String],
    ) -> Result<Removed, StoreError> {
        let gone: HashSet<&ConsentId> = consents.iter().collect();
        let usage_keys: Vec<(ConsentId, Date)> = self
            .usage
            .keys()
            .filter(|(consent, _)| gone.contains(consent))
            .cloned()
            .collect();
        let mut removed = Vec::with_capacity(consents.len());
        for id in consents {
            match self.consents.remove(id) {
                Ok(Some(record)) => removed.push(record),
                Ok(None) => {}
                Err(error) => {
                    // Put back what this call took before failing: the caller's undo log does not
                    // know of it yet.
                    for record in removed {
                        undone(self.consents.put_back(record));
                    }
                    return Err(error);
                }
            }
        }
        Ok(Removed {
            key: None,
            consents: removed,
            usage: usage_keys
                .into_iter()
                .filter_map(|key| {
                    let usage = self.usage.remove(&key)?;
                    Some((key, usage))
                })
                .collect(),
            attestations: used
                .iter()
                .filter(|id| self.attestations.remove(*id))
                .cloned()
                .collect(),
        })
    }
}

/// An undo of the consent table, which fails only if the table was already damaged (a bug):
/// then the store answers `Corrupt` on the records concerned, and a debug build stops here.
fn undone(result: Result<(), StoreError>) {
    debug_assert!(
        result.is_ok(),
        "undoing a consent change failed: {result:?}"
    );
}

fn duplicate(kind: RecordKind, id: &str) -> StoreError {
    StoreError::Duplicate {
        kind,
        id: id.to_owned(),
    }
}

fn missing(kind: RecordKind, id: &str) -> StoreError {
    StoreError::Missing {
        kind,
        id: id.to_owned(),
    }
}

impl StateRead for MemoryStore {
    fn holder(&self, id: &HolderId) -> Result<Option<HolderRecord>, StoreError> {
        Ok(self.read()?.holders.get(id).cloned())
    }

    fn platform(&self, id: &PlatformId) -> Result<Option<PlatformProfile>, StoreError> {
        Ok(self.read()?.platforms.get(id).cloned())
    }

    fn consent(&self, id: &ConsentId) -> Result<Option<Consent>, StoreError> {
        self.read()?.consents.get(id)
    }

    fn consents_of_subject(&self, subject: &SubjectId) -> Result<Vec<Consent>, StoreError> {
        self.read()?.consents.of_subject(subject)
    }

    fn usage(&self, consent: &ConsentId, day: Date) -> Result<Usage, StoreError> {
        Ok(self
            .read()?
            .usage
            .get(&(consent.clone(), day))
            .copied()
            .unwrap_or_default())
    }

    fn attestation_used(&self, attestation_id: &str) -> Result<bool, StoreError> {
        Ok(self.read()?.attestations.contains(attestation_id))
    }

    fn published_keys(&self) -> Result<Vec<PublishedKey>, StoreError> {
        Ok(self.read()?.keys.clone())
    }

    fn subject_key(&self, subject: &SubjectId) -> Result<Option<SubjectKey>, StoreError> {
        Ok(self.read()?.subject_keys.key(subject).cloned())
    }

    fn access_view(
        &self,
        consent: &ConsentId,
        platform: &PlatformId,
        day: Date,
    ) -> Result<AccessView, StoreError> {
        // One read lock for the whole view.
        let inner = self.read()?;
        let platform = inner.platforms.get(platform).map(|found| PlatformProfile {
            id: platform.clone(),
            registered_purposes: found.registered_purposes,
        });
        // Every id in the view has text of its own (the consent's and the platform's are the
        // caller's copies): a clone of one the store holds would write its count, a line every
        // deciding core would then write, on the clone and again on the drop.
        let Some(found) = inner.consents.get(consent)? else {
            return Ok(AccessView {
                platform,
                ..AccessView::default()
            });
        };
        let request = &found.request;
        // A grant that keeps its pseudonyms: the key is not needed to decide on it.
        let subject_key_unread = found
            .grant()
            .is_some_and(|grant| grant.pseudonyms.is_some());
        let subject_key = match subject_key_unread {
            true => None,
            false => inner.subject_keys.key(request.subject()).cloned(),
        };
        Ok(AccessView {
            holder: inner
                .holders
                .get(&request.holder)
                .map(HolderRecord::unshared),
            usage: inner
                .usage
                .get(&(consent.clone(), day))
                .copied()
                .unwrap_or_default(),
            subject_key,
            subject_key_unread,
            platform,
            consent: Some(found),
        })
    }

    fn consents_ended_before(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Consent>, StoreError> {
        self.read()?
            .consents
            .ended_before(before, usize::try_from(limit).unwrap_or(usize::MAX))
    }
}

impl LedgerRead for MemoryStore {
    fn attestation_record(&self, id: &str) -> Result<Option<AttestationRecord>, StoreError> {
        Ok(self.read()?.ledger.attestation(id))
    }

    fn attestations_of_subject(
        &self,
        subject: &SubjectId,
    ) -> Result<Vec<AttestationRecord>, StoreError> {
        Ok(self.read()?.ledger.of_subject(subject))
    }

    fn attestations_of_consent(
        &self,
        consent: &ConsentId,
    ) -> Result<Vec<AttestationRecord>, StoreError> {
        Ok(self.read()?.ledger.of_consent(consent))
    }

    fn platform_revocation(
        &self,
        consent: &ConsentId,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        Ok(self.read()?.ledger.platform_revocation(consent))
    }

    fn bank_policies(&self) -> Result<Vec<PolicyRecord>, StoreError> {
        Ok(self.read()?.ledger.policies())
    }

    fn seen(&self, kind: SeenKind, id: &str, at: OffsetDateTime) -> Result<bool, StoreError> {
        Ok(self.read()?.ledger.seen(kind, id, at))
    }

    fn feed_state(&self) -> Result<Option<FeedState>, StoreError> {
        Ok(self.read()?.ledger.feed())
    }

    fn device_keys(&self, subject: &SubjectId) -> Result<Vec<DeviceKeyRecord>, StoreError> {
        Ok(self.read()?.ledger.devices_of(subject))
    }

    fn subject_link(&self, pairwise: &SubjectId) -> Result<Option<SubjectLink>, StoreError> {
        Ok(self.read()?.ledger.link(pairwise))
    }

    fn link_of(
        &self,
        customer: &SubjectId,
        platform: &PlatformId,
    ) -> Result<Option<SubjectLink>, StoreError> {
        Ok(self.read()?.ledger.link_of(customer, platform))
    }

    fn attestations_ended_before(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<AttestationRecord>, StoreError> {
        Ok(self.read()?.ledger.ended_before(before, limit))
    }

    fn links_of_customer(&self, customer: &SubjectId) -> Result<Vec<SubjectLink>, StoreError> {
        Ok(self.read()?.ledger.links_of_customer(customer))
    }

    fn gate_view(&self, query: &GateQuery<'_>) -> Result<GateView, StoreError> {
        let state = self.read()?;
        let mut view = state.ledger.gate_view(query);
        if let Some(attestation) = &view.attestation {
            view.subject_key = state.subject_keys.key(&attestation.subject).cloned();
            view.device_keys = state.ledger.devices_of(&attestation.subject);
        }
        Ok(view)
    }
}

impl LogRead for MemoryStore {
    fn audit_len(&self) -> Result<u64, StoreError> {
        Ok(self.log()?.audit.len() as u64)
    }

    fn audit_bytes(&self, range: Range<u64>) -> Result<Vec<StoredEntry>, StoreError> {
        let log = self.log()?;
        let end = range.end.min(log.audit.len() as u64);
        Ok((range.start..end)
            .filter_map(|seq| {
                let bytes = log.audit.get(usize::try_from(seq).ok()?)?;
                Some(StoredEntry {
                    seq,
                    bytes: bytes.clone(),
                })
            })
            .collect())
    }

    fn merkle_node(&self, level: u32, index: u64) -> Result<Option<Hash>, StoreError> {
        match self.tree()?.nodes.node(level, index) {
            Ok(hash) => Ok(Some(hash)),
            Err(MerkleError::MissingNode { .. }) => Ok(None),
            Err(other) => Err(StoreError::Corrupt(other.to_string())),
        }
    }

    fn merkle_nodes(&self, level: u32, range: Range<u64>) -> Result<Vec<(u64, Hash)>, StoreError> {
        // One lock for the whole range: verifiers read every node.
        let tree = self.tree()?;
        let count = tree.nodes.size().checked_shr(level).unwrap_or(0);
        let range = range.start..range.end.min(count);
        Ok(range
            .filter_map(|index| Some((index, tree.nodes.node(level, index).ok()?)))
            .collect())
    }

    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        Ok(self.log()?.checkpoints.last().cloned())
    }
}

impl Store for MemoryStore {
    fn commit(&self, commit: Commit) -> Result<CommitReceipt, StoreError> {
        let parts = commit.into_parts();
        // Encoding is most of a commit's work and needs no lock: only the sequence numbers are
        // placed under it.
        let prepared = parts
            .records
            .iter()
            .map(|record| record.prepare())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| StoreError::Unavailable(format!("encoding: {error}")))?;
        if parts.changes.is_empty() {
            // Only records: checked under the read lock, held until the entries are appended.
            let (receipt, waiting) = {
                let inner = self.read()?;
                if !parts.preconditions.iter().all(|p| inner.check(p)) {
                    return Err(StoreError::Conflict);
                }
                self.append(&prepared)?
            };
            self.after_append(waiting);
            return Ok(receipt);
        }
        let mut inner = self.write()?;
        if !parts.preconditions.iter().all(|p| inner.check(p)) {
            return Err(StoreError::Conflict);
        }
        let mut undo_log = Vec::with_capacity(parts.changes.len());
        let rollback = |inner: &mut Inner, undo_log: Vec<Undo>| {
            for undo in undo_log.into_iter().rev() {
                inner.undo(undo);
            }
        };
        for change in parts.changes {
            match inner.apply(change) {
                Ok(undo) => undo_log.push(undo),
                Err(error) => {
                    rollback(&mut inner, undo_log);
                    return Err(error);
                }
            }
        }
        match self.append(&prepared) {
            Ok((receipt, waiting)) => {
                drop(inner);
                self.after_append(waiting);
                Ok(receipt)
            }
            Err(error) => {
                rollback(&mut inner, undo_log);
                Err(error)
            }
        }
    }

    fn record_checkpoint(&self, checkpoint: &SignedCheckpoint) -> Result<(), StoreError> {
        let checkpoint = checkpoint.checkpoint();
        let mut log = self.log()?;
        match log.checkpoints.last() {
            Some(last) if last.size > checkpoint.size => Err(StoreError::Conflict),
            Some(last) if last.size == checkpoint.size => Ok(()),
            _ => {
                log.checkpoints.push(checkpoint.clone());
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, AuditEvent, AuditRecord};
    use crate::auditor::verify_log;
    use crate::policy::Presence;
    use crate::vocab::{ProhibitedUse, Purpose, RequestedPurpose, RequestedScope};

    fn record(n: i64) -> AuditRecord {
        AuditRecord::new(
            OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(n),
            Actor::Platform("chat".parse().unwrap()),
            AuditEvent::AccessDenied {
                consent: format!("cns_{n}").parse().unwrap(),
                subject: None,
                scope: RequestedScope::Prohibited(ProhibitedUse::Ads),
                purpose: RequestedPurpose::Permitted(Purpose::FraudProtection),
                account: None,
                presence: Presence::Unattended,
                reasons: vec![],
            },
        )
    }

    /// An append whose placement was made at a length the log no longer has (another commit
    /// appended meanwhile, or the hint is off either way) is placed again at the log's real end:
    /// every entry carries its own sequence number and the tree stays the tree of the entries.
    #[test]
    fn an_append_placed_at_a_stale_length_lands_at_the_end() {
        let store = MemoryStore::new();
        for (n, hint) in [(0, 0), (1, 0), (2, 0), (3, 1), (4, 9), (5, 5)] {
            store.log_len.store(hint, Ordering::Relaxed);
            let prepared = [
                record(n).prepare().unwrap(),
                record(n + 100).prepare().unwrap(),
            ];
            let receipt = appended(&store, &prepared);
            let first = 2 * n as u64;
            assert_eq!(receipt.audit_seqs, first..first + 2);
            assert_eq!(store.log_len.load(Ordering::Relaxed), first + 2);
            let stored = store.audit_bytes(first..first + 2).unwrap();
            for (entry, (seq, prepared)) in stored.iter().zip((first..).zip(&prepared)) {
                assert_eq!(entry.bytes, prepared.bytes(seq));
            }
        }
        // The entries hash to the tree the store keeps (its nodes, not a tree made afresh).
        let report = verify_log(&store, None).unwrap();
        assert_eq!(report.size, 12);
        let kept = merkle::root(12, &store.tree().unwrap().nodes).unwrap();
        assert_eq!(kept, report.root);
    }

    /// Appends as a commit does: the entries, then the tree's turn.
    fn appended(store: &MemoryStore, prepared: &[PreparedEntry]) -> CommitReceipt {
        let (receipt, waiting) = store.append(prepared).unwrap();
        store.after_append(waiting);
        receipt
    }

    /// The tree of `entries`, made afresh.
    fn tree_of(entries: &[StoredEntry]) -> MemoryNodes {
        let mut tree = MemoryNodes::new();
        for entry in entries {
            tree.push(merkle::leaf_hash(&entry.bytes)).unwrap();
        }
        tree
    }

    /// The leaves waiting for the tree and the leaves it holds, without bringing it up to date.
    fn waiting_and_integrated(store: &MemoryStore) -> (usize, u64) {
        let tree = store.tree.lock().unwrap().nodes.size();
        (store.log().unwrap().pending.len(), tree)
    }

    /// Appends queue their leaves; the append that leaves `INTEGRATE_AT` of them waiting brings
    /// the tree up to date itself (no reader needed), and a reader of nodes always finds the
    /// tree of every entry appended before it asked, whatever is still waiting.
    #[test]
    fn appends_queue_leaves_and_the_tree_catches_up_before_any_read() {
        let store = MemoryStore::new();
        let one = |n: i64| appended(&store, &[record(n).prepare().unwrap()]);
        for n in 0..INTEGRATE_AT - 1 {
            one(n as i64);
        }
        assert_eq!(waiting_and_integrated(&store), (INTEGRATE_AT - 1, 0));
        one(1_000);
        assert_eq!(waiting_and_integrated(&store), (0, INTEGRATE_AT as u64));
        // Three more wait; a read of the newest leaf takes them in first.
        for n in 0..3 {
            one(2_000 + n);
        }
        assert_eq!(waiting_and_integrated(&store).0, 3);
        let size = INTEGRATE_AT as u64 + 3;
        let newest = store.audit_bytes(size - 1..size).unwrap();
        let leaf = merkle::leaf_hash(&newest[0].bytes);
        assert_eq!(store.merkle_node(0, size - 1).unwrap(), Some(leaf));
        assert_eq!(waiting_and_integrated(&store), (0, size));
        let report = verify_log(&store, None).unwrap();
        assert_eq!(report.size, size);
        assert_eq!(
            merkle::root(size, &store.tree().unwrap().nodes).unwrap(),
            report.root
        );
    }

    /// Threads appending at once (batches of one to three entries) while others read nodes and
    /// verify the whole log: every read finds a tree that agrees with the entries, and the
    /// final tree is the tree of all of them, in the log's order.
    #[test]
    fn concurrent_appends_and_reads_keep_one_tree_of_the_entries() {
        /// Counts a writer as finished when it ends, panicking or not.
        struct Finished<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Finished<'_> {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let store = MemoryStore::new();
        let done = std::sync::atomic::AtomicBool::new(false);
        let finished = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for t in 0..4_i64 {
                let (store, finished) = (&store, &finished);
                scope.spawn(move || {
                    let _finished = Finished(finished);
                    for n in 0..150_i64 {
                        let batch: Vec<_> = (0..1 + (n + t) % 3)
                            .map(|k| record(t * 1_000_000 + n * 10 + k).prepare().unwrap())
                            .collect();
                        appended(store, &batch);
                    }
                });
            }
            let (store, done) = (&store, &done);
            scope.spawn(move || {
                let mut checked = 0;
                while !done.load(Ordering::Relaxed) || checked == 0 {
                    // (`verify_log` wants a log at rest: it refuses nodes past the length it
                    // read, which concurrent appends add.) Every node of the first `size`
                    // entries must be there, and be the node of those entries.
                    let size = store.audit_len().unwrap();
                    let fresh = tree_of(&store.audit_bytes(0..size).unwrap());
                    for level in 0..u64::BITS - size.leading_zeros() {
                        let count = size >> level;
                        let stored = store.merkle_nodes(level, 0..count).unwrap();
                        let expected: Vec<(u64, Hash)> = (0..count)
                            .map(|index| (index, fresh.node(level, index).unwrap()))
                            .collect();
                        assert_eq!(stored, expected, "level {level} of {size} entries");
                    }
                    checked += 1;
                }
            });
            // Ends the reader once the writers are done, or one of them failed (the scope then
            // reports its panic).
            let finished = &finished;
            scope.spawn(move || {
                while finished.load(Ordering::Relaxed) < 4 {
                    std::thread::yield_now();
                }
                done.store(true, Ordering::Relaxed);
            });
        });
        let size = store.audit_len().unwrap();
        // Each thread: 50 batches each of one, two and three entries.
        assert_eq!(size, 4 * 300);
        let report = verify_log(&store, None).unwrap();
        assert_eq!(report.size, size);
        let fresh = tree_of(&store.audit_bytes(0..size).unwrap());
        assert_eq!(merkle::root(size, &fresh).unwrap(), report.root);
        let tree = store.tree().unwrap();
        for level in 0..12 {
            for index in 0..size >> level {
                assert_eq!(
                    tree.nodes.node(level, index).unwrap(),
                    fresh.node(level, index).unwrap(),
                    "node ({level}, {index})"
                );
            }
        }
    }

    /// The view of the checked call shares no id with the store or with another view: each
    /// clone or drop of a shared id writes its count, a cache line every deciding core would
    /// then write. The platform's id is the caller's own copy; the consent's, as before, too.
    #[test]
    fn a_view_shares_no_id_with_the_store_or_another_view() {
        let kit = crate::testing::TestBroker::memory();
        let consent = kit.granted();
        let access = kit.access(consent.id());
        let day = kit.broker.now().date();
        let store = kit.broker.store();
        let view =
            |platform: &PlatformId| store.access_view(&access.consent, platform, day).unwrap();
        let (first, second) = (view(&access.platform), view(&access.platform));
        let text = |id: &str| id.as_ptr();
        let consent_of = |view: &AccessView| view.consent.clone().unwrap().request().clone();
        let (a, b) = (consent_of(&first), consent_of(&second));
        for (one, other, what) in [
            (a.subject().as_str(), b.subject().as_str(), "subject"),
            (
                a.platform().as_str(),
                b.platform().as_str(),
                "consent's platform",
            ),
            (a.holder().as_str(), b.holder().as_str(), "consent's holder"),
            (
                first.holder.as_ref().unwrap().id().as_str(),
                second.holder.as_ref().unwrap().id().as_str(),
                "holder record",
            ),
        ] {
            assert_eq!(one, other);
            assert_ne!(text(one), text(other), "the {what}'s id is shared");
        }
        let profile = first.platform.as_ref().unwrap();
        assert_eq!(text(profile.id.as_str()), text(access.platform.as_str()));
        let found = first.consent.as_ref().unwrap();
        assert_eq!(text(found.id().as_str()), text(access.consent.as_str()));
        // A caller's own copy of the platform's id, as parsed from its own request.
        let own: PlatformId = access.platform.as_str().parse().unwrap();
        let third = view(&own);
        assert_eq!(
            text(third.platform.unwrap().id.as_str()),
            text(own.as_str())
        );
    }

    /// A tree that lost leaves (here: a thread panicked holding it) fails closed: readers of
    /// nodes get `Corrupt`, and no entry is appended after that, since it could never be proven.
    /// An append that finds the tree so while bringing it up to date refuses the next one too.
    #[test]
    fn a_broken_tree_refuses_further_appends() {
        let poison = |store: &MemoryStore| {
            std::thread::scope(|scope| {
                let held = scope.spawn(|| {
                    let _tree = store.tree.lock().unwrap();
                    panic!("a panic while integrating");
                });
                assert!(held.join().is_err());
            });
        };
        let store = MemoryStore::new();
        appended(&store, &[record(1).prepare().unwrap()]);
        poison(&store);
        assert!(matches!(
            store.merkle_node(0, 0),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            store.append(&[record(2).prepare().unwrap()]),
            Err(StoreError::Corrupt(_))
        ));
        assert_eq!(store.audit_len().unwrap(), 1);

        // With no reader: the append that would integrate finds the tree poisoned.
        let store = MemoryStore::new();
        poison(&store);
        for n in 0..INTEGRATE_AT {
            appended(&store, &[record(n as i64).prepare().unwrap()]);
        }
        assert!(matches!(
            store.append(&[record(1_000).prepare().unwrap()]),
            Err(StoreError::Corrupt(_))
        ));
        assert_eq!(store.audit_len().unwrap(), INTEGRATE_AT as u64);
    }
}
