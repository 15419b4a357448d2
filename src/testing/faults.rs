//! A store that fails, on purpose, at every point a real one can.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;

use time::{Date, OffsetDateTime};

use crate::audit::AuditKind;
use crate::consent::Consent;
use crate::error::Error;
use crate::ids::{ConsentId, HolderId, PlatformId, SubjectId};
use crate::merkle::{Hash, MerkleError};
use crate::policy::{HolderPolicy, PlatformProfile, Usage};
use crate::store::{
    AttestationRecord, Change, Commit, CommitReceipt, DeviceKeyRecord, FeedState, GateQuery,
    GateView, HolderRecord, LedgerRead, LogRead, PolicyRecord, PublishedKey, RecordKind, SeenKind,
    SignedCheckpoint, StateRead, Store, StoreError, StoredCheckpoint, StoredEntry, SubjectLink,
};

/// Where a fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// A commit fails before the write: the inner store never sees it.
    Before,
    /// A commit fails during the write: the inner store gets it with one more change that must
    /// fail (an update of a holder that does not exist) after every real change was applied, so
    /// it has to roll all of them back, audit records included.
    During,
    /// A commit fails after the write: the inner store commits, then the caller gets an error.
    /// The outcome is recorded but the caller cannot know it (the ambiguous case).
    After,
    /// A read fails.
    Read,
}

/// How often random faults strike, in parts per thousand of commits (reads for `read`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultRates {
    /// Commits failed before the write.
    pub before: u64,
    /// Commits failed during the write.
    pub during: u64,
    /// Commits failed after the write.
    pub after: u64,
    /// Reads failed.
    pub read: u64,
}

impl Default for FaultRates {
    /// 6 % of commits at each point, 1.5 % of reads.
    fn default() -> Self {
        Self {
            before: 60,
            during: 60,
            after: 60,
            read: 15,
        }
    }
}

/// One injected fault, as the store saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    /// Where it struck.
    pub fault: Fault,
    /// The kinds of the audit records the failed commit carried (empty for reads).
    pub kinds: Vec<AuditKind>,
    /// Where they landed: after-write faults only (the inner commit succeeded).
    pub seqs: Range<u64>,
}

/// Run once, before a read.
type Hook = Box<dyn FnOnce() + Send>;

struct State {
    /// Hooks run once, at the start of the next read of the named method.
    hooks: Vec<(&'static str, Hook)>,
    /// Hooks run once, when the next read of the named method has its answer from the inner
    /// store (before the caller gets it).
    after: Vec<(&'static str, Hook)>,
    rng: u64,
    random: bool,
    rates: FaultRates,
    script: Vec<(AuditKind, Fault)>,
    injected: Vec<Injected>,
    totals: BTreeMap<Fault, u64>,
    /// Reads of log entries leave out the last entry asked for.
    short_reads: bool,
    /// `access_view` goes to the inner store's own.
    whole_views: bool,
}

impl State {
    /// xorshift64*: tiny and seeded.
    fn per_mille(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % 1000
    }
}

/// The holder the during-write fault tries to update: it never exists.
const NO_SUCH_HOLDER: &str = "fault-injection-no-such-holder";

/// A [`Store`] wrapper that forwards to `inner`, except where it injects a [`Fault`]: at random
/// (seeded, at [`FaultRates`]) once [`FaultStore::random_faults`] is on, and on script
/// ([`FaultStore::script`]). Injected errors are `StoreError::Unavailable("injected …")`. It can
/// also run a hook just before a read ([`FaultStore::before_next_read`]) or just after one
/// ([`FaultStore::after_next_read`]), to make an interleaving with another thread or process
/// deterministic. Over a bank's ledger it is a [`LedgerRead`] too.
pub struct FaultStore<S> {
    inner: S,
    state: Mutex<State>,
}

impl<S> std::fmt::Debug for FaultStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultStore").finish_non_exhaustive()
    }
}

impl<S: Store> FaultStore<S> {
    /// Wraps `inner`; random faults are off until turned on.
    pub fn new(inner: S, seed: u64) -> Self {
        Self {
            inner,
            state: Mutex::new(State {
                hooks: Vec::new(),
                after: Vec::new(),
                rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
                random: false,
                rates: FaultRates::default(),
                script: Vec::new(),
                injected: Vec::new(),
                totals: BTreeMap::new(),
                short_reads: false,
                whole_views: false,
            }),
        }
    }

    /// The store behind the faults.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Turns random faults on or off.
    pub fn random_faults(&self, on: bool) {
        self.state().random = on;
    }

    /// Sets the rates of random faults.
    pub fn rates(&self, rates: FaultRates) {
        self.state().rates = rates;
    }

    /// Fails the next commit that carries a `kind` record with `fault` (not `Read`).
    pub fn script(&self, kind: AuditKind, fault: Fault) {
        self.state().script.push((kind, fault));
    }

    /// Runs `hook` once, just before the next call of the read method named `method` (for
    /// example `"latest_checkpoint"`) goes to the inner store.
    pub fn before_next_read(&self, method: &'static str, hook: impl FnOnce() + Send + 'static) {
        self.state().hooks.push((method, Box::new(hook)));
    }

    /// Runs `hook` once, just after the next call of the read method named `method` has its
    /// answer from the inner store and before its caller gets it: a write that lands between a
    /// read and the commit that relies on it (for example `"gate_view"`).
    pub fn after_next_read(&self, method: &'static str, hook: impl FnOnce() + Send + 'static) {
        self.state().after.push((method, Box::new(hook)));
    }

    /// While on, every read of two or more log entries returns all but the last one asked for,
    /// without an error (as a replica behind or a faulty store might): what a reader of the log
    /// must notice rather than take as the whole stretch.
    pub fn short_reads(&self, on: bool) {
        self.state().short_reads = on;
    }

    /// While on, `access_view` goes to the inner store's own (one read, with its shortcuts:
    /// the in-memory store leaves the subject's key unread for a grant that keeps its
    /// pseudonyms), and the read hook named `"access_view"` runs just after it, before the
    /// decision made from the view commits. Off (the default), the view is read part by part,
    /// each part through this store's own read and its hooks.
    pub fn whole_views(&self, on: bool) {
        self.state().whole_views = on;
    }

    /// The faults injected since the last call.
    pub fn take_injected(&self) -> Vec<Injected> {
        std::mem::take(&mut self.state().injected)
    }

    /// How many faults of each kind were injected in all.
    pub fn totals(&self) -> BTreeMap<Fault, u64> {
        self.state().totals.clone()
    }

    /// Whether `error` is one this store injected (passed on as it is, or, from the Merkle
    /// tree's reader, as the unreadable node it made).
    pub fn is_injected(error: &Error) -> bool {
        match error {
            Error::Store(StoreError::Unavailable(message)) => message.starts_with("injected"),
            Error::Merkle(MerkleError::Source(message)) => message.contains("injected"),
            _ => false,
        }
    }

    fn note(&self, fault: Fault, kinds: Vec<AuditKind>, seqs: Range<u64>) {
        let mut state = self.state();
        *state.totals.entry(fault).or_default() += 1;
        state.injected.push(Injected { fault, kinds, seqs });
    }

    fn read(&self, what: &'static str) -> Result<(), StoreError> {
        let (fail, hook) = {
            let mut state = self.state();
            let rate = state.rates.read;
            let hook = state
                .hooks
                .iter()
                .position(|(method, _)| *method == what)
                .map(|at| state.hooks.remove(at).1);
            (state.random && state.per_mille() < rate, hook)
        };
        // Outside the lock: the hook may use this store.
        if let Some(hook) = hook {
            hook();
        }
        if fail {
            self.note(Fault::Read, Vec::new(), 0..0);
            return Err(injected(&format!("read ({what})")));
        }
        Ok(())
    }

    /// A read of the inner store's named `what`, with its faults and both kinds of hooks.
    fn reading<T>(
        &self,
        what: &'static str,
        read: impl FnOnce(&S) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.read(what)?;
        let answer = read(&self.inner)?;
        self.read_done(what);
        Ok(answer)
    }

    /// Runs the hook waiting for the end of a read of `what`, if any (outside the lock).
    fn read_done(&self, what: &'static str) {
        let hook = {
            let mut state = self.state();
            let at = state.after.iter().position(|(method, _)| *method == what);
            at.map(|at| state.after.remove(at).1)
        };
        if let Some(hook) = hook {
            hook();
        }
    }

    fn commit_fault(&self, kinds: &[AuditKind]) -> Option<Fault> {
        let mut state = self.state();
        if let Some(at) = state
            .script
            .iter()
            .position(|(kind, _)| kinds.contains(kind))
        {
            return Some(state.script.remove(at).1);
        }
        if !state.random {
            return None;
        }
        let rates = state.rates;
        let roll = state.per_mille();
        if roll < rates.before {
            Some(Fault::Before)
        } else if roll < rates.before + rates.during {
            Some(Fault::During)
        } else if roll < rates.before + rates.during + rates.after {
            Some(Fault::After)
        } else {
            None
        }
    }
}

fn injected(what: &str) -> StoreError {
    StoreError::Unavailable(format!("injected {what} fault"))
}

impl<S: Store> StateRead for FaultStore<S> {
    fn keep_access_views(&self) -> bool {
        self.inner.keep_access_views()
    }
    fn access_view(
        &self,
        consent: &ConsentId,
        platform: &PlatformId,
        day: Date,
    ) -> Result<crate::store::AccessView, StoreError> {
        if !self.state().whole_views {
            return crate::store::access_view_by_parts(self, consent, platform, day);
        }
        let view = self.inner.access_view(consent, platform, day)?;
        self.read("access_view")?;
        Ok(view)
    }
    fn holder(&self, id: &HolderId) -> Result<Option<HolderRecord>, StoreError> {
        self.reading("holder", |inner| inner.holder(id))
    }
    fn platform(&self, id: &PlatformId) -> Result<Option<PlatformProfile>, StoreError> {
        self.reading("platform", |inner| inner.platform(id))
    }
    fn consent(&self, id: &ConsentId) -> Result<Option<Consent>, StoreError> {
        self.reading("consent", |inner| inner.consent(id))
    }
    fn consents_of_subject(&self, subject: &SubjectId) -> Result<Vec<Consent>, StoreError> {
        self.reading("consents_of_subject", |inner| {
            inner.consents_of_subject(subject)
        })
    }
    fn usage(&self, consent: &ConsentId, day: Date) -> Result<Usage, StoreError> {
        self.reading("usage", |inner| inner.usage(consent, day))
    }
    fn attestation_used(&self, attestation_id: &str) -> Result<bool, StoreError> {
        self.reading("attestation_used", |inner| {
            inner.attestation_used(attestation_id)
        })
    }
    fn published_keys(&self) -> Result<Vec<PublishedKey>, StoreError> {
        self.reading("published_keys", |inner| inner.published_keys())
    }
    fn subject_key(
        &self,
        subject: &crate::ids::SubjectId,
    ) -> Result<Option<crate::privacy::SubjectKey>, StoreError> {
        self.reading("subject_key", |inner| inner.subject_key(subject))
    }
    fn consents_ended_before(
        &self,
        before: time::OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<crate::consent::Consent>, StoreError> {
        self.reading("consents_ended_before", |inner| {
            inner.consents_ended_before(before, limit)
        })
    }
}

/// A bank's ledger through the faults: every read as the store's own (hooks, random read
/// faults), and with the hooks of [`FaultStore::after_next_read`].
impl<S: Store + LedgerRead> LedgerRead for FaultStore<S> {
    fn attestation_record(&self, id: &str) -> Result<Option<AttestationRecord>, StoreError> {
        self.reading("attestation_record", |inner| inner.attestation_record(id))
    }

    fn attestations_of_subject(
        &self,
        subject: &SubjectId,
    ) -> Result<Vec<AttestationRecord>, StoreError> {
        self.reading("attestations_of_subject", |inner| {
            inner.attestations_of_subject(subject)
        })
    }

    fn attestations_of_consent(
        &self,
        consent: &ConsentId,
    ) -> Result<Vec<AttestationRecord>, StoreError> {
        self.reading("attestations_of_consent", |inner| {
            inner.attestations_of_consent(consent)
        })
    }

    fn platform_revocation(
        &self,
        consent: &ConsentId,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        self.reading("platform_revocation", |inner| {
            inner.platform_revocation(consent)
        })
    }

    fn bank_policies(&self) -> Result<Vec<PolicyRecord>, StoreError> {
        self.reading("bank_policies", |inner| inner.bank_policies())
    }

    fn seen(&self, kind: SeenKind, id: &str, at: OffsetDateTime) -> Result<bool, StoreError> {
        self.reading("seen", |inner| inner.seen(kind, id, at))
    }

    fn feed_state(&self) -> Result<Option<FeedState>, StoreError> {
        self.reading("feed_state", |inner| inner.feed_state())
    }

    fn device_keys(&self, subject: &SubjectId) -> Result<Vec<DeviceKeyRecord>, StoreError> {
        self.reading("device_keys", |inner| inner.device_keys(subject))
    }

    fn subject_link(&self, pairwise: &SubjectId) -> Result<Option<SubjectLink>, StoreError> {
        self.reading("subject_link", |inner| inner.subject_link(pairwise))
    }

    fn link_of(
        &self,
        customer: &SubjectId,
        platform: &PlatformId,
    ) -> Result<Option<SubjectLink>, StoreError> {
        self.reading("link_of", |inner| inner.link_of(customer, platform))
    }

    fn attestations_ended_before(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<AttestationRecord>, StoreError> {
        self.reading("attestations_ended_before", |inner| {
            inner.attestations_ended_before(before, limit)
        })
    }

    fn links_of_customer(&self, customer: &SubjectId) -> Result<Vec<SubjectLink>, StoreError> {
        self.reading("links_of_customer", |inner| {
            inner.links_of_customer(customer)
        })
    }

    fn gate_view(&self, query: &GateQuery<'_>) -> Result<GateView, StoreError> {
        self.reading("gate_view", |inner| inner.gate_view(query))
    }
}

impl<S: Store> LogRead for FaultStore<S> {
    fn audit_len(&self) -> Result<u64, StoreError> {
        self.reading("audit_len", |inner| inner.audit_len())
    }
    fn audit_bytes(&self, range: Range<u64>) -> Result<Vec<StoredEntry>, StoreError> {
        self.read("audit_bytes")?;
        let mut entries = self.inner.audit_bytes(range)?;
        if self.state().short_reads && entries.len() >= 2 {
            entries.pop();
        }
        self.read_done("audit_bytes");
        Ok(entries)
    }
    fn merkle_node(&self, level: u32, index: u64) -> Result<Option<Hash>, StoreError> {
        self.reading("merkle_node", |inner| inner.merkle_node(level, index))
    }
    fn merkle_nodes(&self, level: u32, range: Range<u64>) -> Result<Vec<(u64, Hash)>, StoreError> {
        self.reading("merkle_nodes", |inner| inner.merkle_nodes(level, range))
    }
    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.reading("latest_checkpoint", |inner| inner.latest_checkpoint())
    }
    fn derived_levels(&self) -> u32 {
        self.inner.derived_levels()
    }
}

impl<S: Store> Store for FaultStore<S> {
    fn commit(&self, commit: Commit) -> Result<CommitReceipt, StoreError> {
        let kinds: Vec<AuditKind> = commit.records().iter().map(|r| r.event().kind()).collect();
        match self.commit_fault(&kinds) {
            None | Some(Fault::Read) => self.inner.commit(commit),
            Some(Fault::Before) => {
                self.note(Fault::Before, kinds, 0..0);
                Err(injected("before-write"))
            }
            Some(Fault::During) => {
                // Every real change is applied first; the last one fails, and the inner store
                // must take all of them back, with the audit records.
                let doomed = commit.change(Change::UpdateHolder {
                    holder: HolderRecord {
                        id: NO_SUCH_HOLDER.parse().expect("a valid holder id"),
                        policy: HolderPolicy::default(),
                        attestation_keys: Vec::new(),
                        retired_attestation_keys: Vec::new(),
                        version: 2,
                    },
                });
                match self.inner.commit(doomed) {
                    Err(StoreError::Missing {
                        kind: RecordKind::Holder,
                        id,
                    }) if id == NO_SUCH_HOLDER => {
                        self.note(Fault::During, kinds, 0..0);
                        Err(injected("during-write"))
                    }
                    Ok(receipt) => panic!(
                        "the inner store applied an update of a holder that does not exist \
                         ({receipt:?})"
                    ),
                    // A real outcome came first (a conflict): nothing was injected.
                    Err(other) => Err(other),
                }
            }
            Some(Fault::After) => {
                let receipt = self.inner.commit(commit)?;
                self.note(Fault::After, kinds, receipt.audit_seqs);
                Err(injected("after-write"))
            }
        }
    }

    fn record_checkpoint(&self, checkpoint: &SignedCheckpoint) -> Result<(), StoreError> {
        if self.commit_fault(&[]) == Some(Fault::Before) {
            self.note(Fault::Before, Vec::new(), 0..0);
            return Err(injected("before-write"));
        }
        self.inner.record_checkpoint(checkpoint)
    }
    fn purge(&self) -> Result<bool, StoreError> {
        self.inner.purge()
    }
}
