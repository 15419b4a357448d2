//! Fail closed, commit atomically, stay exact under concurrency.
//!
//! A store that cannot record a decision must never let a permit out; a commit that fails part
//! way leaves no trace; many threads on one broker never exceed a limit or outrun a revocation.

mod common;

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use common::*;
use consent_broker::audit::AuditEntry;
use consent_broker::store::{
    Change, Commit, CommitReceipt, HolderRecord, PublishedKey, StoredCheckpoint, StoredEntry,
};
use consent_broker::*;
use time::Date;

/// A store whose commits fail while `failing` is set; reads always work.
#[derive(Default)]
struct FailingStore {
    inner: MemoryStore,
    failing: AtomicBool,
}

impl FailingStore {
    fn fail(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
    }
}

impl Store for FailingStore {
    fn holder(&self, id: &HolderId) -> Result<Option<HolderRecord>, StoreError> {
        self.inner.holder(id)
    }
    fn platform(&self, id: &PlatformId) -> Result<Option<PlatformProfile>, StoreError> {
        self.inner.platform(id)
    }
    fn consent(&self, id: &ConsentId) -> Result<Option<Consent>, StoreError> {
        self.inner.consent(id)
    }
    fn consents_of_subject(&self, subject: &SubjectId) -> Result<Vec<Consent>, StoreError> {
        self.inner.consents_of_subject(subject)
    }
    fn usage(&self, consent: &ConsentId, day: Date) -> Result<Usage, StoreError> {
        self.inner.usage(consent, day)
    }
    fn attestation_used(&self, attestation_id: &str) -> Result<bool, StoreError> {
        self.inner.attestation_used(attestation_id)
    }
    fn audit_len(&self) -> Result<u64, StoreError> {
        self.inner.audit_len()
    }
    fn audit_bytes(&self, range: Range<u64>) -> Result<Vec<StoredEntry>, StoreError> {
        self.inner.audit_bytes(range)
    }
    fn merkle_node(&self, level: u32, index: u64) -> Result<Option<[u8; 32]>, StoreError> {
        self.inner.merkle_node(level, index)
    }
    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.inner.latest_checkpoint()
    }
    fn signing_keys(&self) -> Result<Vec<PublishedKey>, StoreError> {
        self.inner.signing_keys()
    }
    fn commit(&self, commit: Commit) -> Result<CommitReceipt, StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected: disk full".into()));
        }
        self.inner.commit(commit)
    }
}

fn unavailable() -> Error {
    Error::Store(StoreError::Unavailable("injected: disk full".into()))
}

#[test]
fn when_the_decision_cannot_be_recorded_nothing_is_permitted() {
    let fx = Fixture::with_store(Arc::new(FailingStore::default()));
    let request = fx.granted();
    let poll = AccessRequest {
        presence: Presence::Unattended,
        ..fx.access(&request.id)
    };
    let day = fx.broker.now().date();
    let len = fx.audit_len();

    fx.broker.store().fail(true);
    // A would-be permit, a would-be denial and a prohibited use: all errors, none recorded.
    assert_eq!(fx.broker.authorise_access(&poll), Err(unavailable()));
    let denied = AccessRequest {
        account: fx.savings.clone(),
        scope: Scope::Transactions.into(),
        ..poll.clone()
    };
    assert_eq!(fx.broker.authorise_access(&denied), Err(unavailable()));
    let ads = AccessRequest {
        purpose: "ads".parse().unwrap(),
        ..poll.clone()
    };
    assert_eq!(fx.broker.authorise_access(&ads), Err(unavailable()));
    assert_eq!(fx.audit_len(), len);
    assert_eq!(
        fx.broker.store().usage(&request.id, day).unwrap(),
        Usage::default()
    );

    // When the store recovers, decisions are recorded again, and the failed ones consumed nothing.
    fx.broker.store().fail(false);
    for _ in 0..4 {
        assert_eq!(fx.decide(&poll), Decision::Permit);
    }
    assert!(!fx.decide(&poll).is_permit());
    assert_eq!(fx.audit_len(), len + 5);
}

#[test]
fn state_changes_are_not_applied_without_their_audit_entry() {
    let fx = Fixture::with_store(Arc::new(FailingStore::default()));
    let len = fx.audit_len();
    fx.broker.store().fail(true);
    assert_eq!(fx.broker.request_consent(fx.draft()), Err(unavailable()));
    assert!(fx.broker.consents_of(&fx.alice).unwrap().is_empty());
    fx.broker.store().fail(false);

    let request = fx.request();
    let token = fx.attest(&fx.full_statement(&request));
    let before = fx.broker.consent(&request.id).unwrap();
    fx.broker.store().fail(true);
    assert_eq!(fx.broker.approve(&request.id, &token), Err(unavailable()));
    assert_eq!(fx.broker.consent(&request.id).unwrap(), before);
    // A refusal that cannot be audited is reported as the store failure, not swallowed.
    assert_eq!(fx.broker.approve(&request.id, "forged"), Err(unavailable()));
    fx.broker.store().fail(false);
    // The attestation was not consumed by the failed commit: it still works.
    fx.broker.approve(&request.id, &token).unwrap();

    fx.broker.store().fail(true);
    assert_eq!(
        fx.broker.revoke(
            &request.id,
            Revoker::Subject,
            RevocationReason::SubjectWithdrew
        ),
        Err(unavailable())
    );
    assert_eq!(
        fx.broker.consent(&request.id).unwrap().status,
        ConsentStatus::Authorised
    );
    fx.broker.store().fail(false);
    assert_eq!(fx.audit_len(), len + 2);
}

#[test]
fn a_commit_that_fails_part_way_leaves_no_trace() {
    let fx = Fixture::new();
    let request = fx.granted();
    let store = fx.broker.store();
    let consent = store.consent(&request.id).unwrap().unwrap();
    let len = store.audit_len().unwrap();
    let day = fx.broker.now().date();
    // Valid changes first, then one that conflicts (a duplicate holder).
    let holder = store.holder(&fx.bank).unwrap().unwrap();
    let mut revoked = consent
        .revoke(Revoker::Subject, RevocationReason::SubjectWithdrew, START)
        .unwrap();
    revoked.version = consent.version + 1;
    let commit = Commit {
        preconditions: vec![],
        changes: vec![
            Change::UpdateConsent(revoked),
            Change::CountUnattendedAccess {
                consent: request.id.clone(),
                day,
            },
            Change::UseAttestation("fresh-jti".into()),
            Change::InsertHolder(holder),
        ],
        audit: vec![AuditRecord::new(
            START,
            AuditKind::ConsentRevoked,
            Actor::Subject(fx.alice.clone()),
        )],
    };
    assert!(matches!(
        store.commit(commit),
        Err(StoreError::Duplicate { .. })
    ));
    assert_eq!(store.consent(&request.id).unwrap().unwrap(), consent);
    assert_eq!(store.usage(&request.id, day).unwrap(), Usage::default());
    assert!(!store.attestation_used("fresh-jti").unwrap());
    assert_eq!(store.audit_len().unwrap(), len);
}

#[test]
fn concurrent_unattended_accesses_never_exceed_the_daily_limit() {
    let fx = Arc::new(Fixture::new());
    let request = fx.granted();
    let poll = AccessRequest {
        presence: Presence::Unattended,
        ..fx.access(&request.id)
    };
    let permits: usize = (0..8)
        .map(|_| {
            let fx = Arc::clone(&fx);
            let poll = poll.clone();
            thread::spawn(move || (0..10).filter(|_| fx.decide(&poll).is_permit()).count())
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|handle| handle.join().unwrap())
        .sum();
    assert_eq!(permits, 4);
    let day = fx.broker.now().date();
    assert_eq!(
        fx.broker
            .store()
            .usage(&request.id, day)
            .unwrap()
            .unattended_today,
        4
    );
    let log = fx.audit();
    let seqs: Vec<u64> = log.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (0..log.len() as u64).collect::<Vec<_>>(), "gap-free");
    let access_entries: Vec<&AuditEntry> = log
        .iter()
        .filter(|e| {
            matches!(
                e.record.kind,
                AuditKind::AccessPermitted | AuditKind::AccessDenied
            )
        })
        .collect();
    assert_eq!(
        access_entries.len(),
        80,
        "every decision audited exactly once"
    );
    assert_eq!(
        access_entries
            .iter()
            .filter(|e| e.record.kind == AuditKind::AccessPermitted)
            .count(),
        4
    );
}

#[test]
fn no_permit_is_recorded_after_a_revocation_returns() {
    for _round in 0..20 {
        let fx = Arc::new(Fixture::new());
        let request = fx.granted();
        let access = fx.access(&request.id);
        let revoked = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let (fx, access, revoked) = (Arc::clone(&fx), access.clone(), Arc::clone(&revoked));
                thread::spawn(move || {
                    let mut late_permits = 0;
                    for _ in 0..200 {
                        let was_revoked = revoked.load(Ordering::SeqCst);
                        if fx.decide(&access).is_permit() && was_revoked {
                            late_permits += 1;
                        }
                    }
                    late_permits
                })
            })
            .collect();
        thread::yield_now();
        fx.broker
            .revoke(
                &request.id,
                Revoker::Subject,
                RevocationReason::SubjectWithdrew,
            )
            .unwrap();
        revoked.store(true, Ordering::SeqCst);
        let late: i32 = workers.into_iter().map(|w| w.join().unwrap()).sum();
        assert_eq!(late, 0, "a permit was granted after revoke returned");
        let log = fx.audit();
        let revoked_at = log
            .iter()
            .find(|e| e.record.kind == AuditKind::ConsentRevoked)
            .map(|e| e.seq)
            .unwrap();
        assert!(
            log.iter()
                .filter(|e| e.record.kind == AuditKind::AccessPermitted)
                .all(|e| e.seq < revoked_at),
            "a permit entry follows the revocation entry"
        );
    }
}
