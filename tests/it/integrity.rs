//! Fail closed, commit atomically, stay exact under concurrency.
//!
//! A store that cannot record a decision must never let a permit out; a commit that fails part
//! way leaves no trace; many threads on one broker never exceed a limit or outrun a revocation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use crate::support::*;
use consent_broker::*;

/// A store whose commits fail (before the write) while `failing(true)`; reads always work.
fn failing_store() -> Arc<FaultStore<MemoryStore>> {
    let store = Arc::new(FaultStore::new(MemoryStore::new(), 1));
    store.rates(FaultRates {
        before: 1000,
        during: 0,
        after: 0,
        read: 0,
    });
    store
}

fn unavailable() -> Error {
    Error::Store(StoreError::Unavailable(
        "injected before-write fault".into(),
    ))
}

#[test]
fn when_the_decision_cannot_be_recorded_nothing_is_permitted() {
    let store = failing_store();
    let fx = Fixture::with_store(Arc::clone(&store));
    let request = fx.granted();
    let poll = AccessRequest {
        presence: Presence::Unattended,
        ..fx.access(request.id())
    };
    let day = fx.broker.now().date();
    let len = fx.audit_len();

    store.random_faults(true);
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
        fx.broker.store().usage(request.id(), day).unwrap(),
        Usage::default()
    );

    // When the store recovers, decisions are recorded again, and the failed ones consumed nothing.
    store.random_faults(false);
    for _ in 0..4 {
        assert_eq!(fx.decide(&poll), Decision::Permit);
    }
    assert!(!fx.decide(&poll).is_permit());
    assert_eq!(fx.audit_len(), len + 5);
}

#[test]
fn state_changes_are_not_applied_without_their_audit_entry() {
    let store = failing_store();
    let fx = Fixture::with_store(Arc::clone(&store));
    let len = fx.audit_len();
    store.random_faults(true);
    assert_eq!(fx.broker.request_consent(fx.draft()), Err(unavailable()));
    assert!(fx.broker.consents_of(&fx.alice).unwrap().is_empty());
    store.random_faults(false);

    let request = fx.request();
    let token = fx.attest(&fx.full_statement(&request));
    let before = fx.broker.consent(request.id()).unwrap();
    store.random_faults(true);
    assert_eq!(fx.broker.approve(request.id(), &token), Err(unavailable()));
    assert_eq!(fx.broker.consent(request.id()).unwrap(), before);
    // A refusal that cannot be audited is reported as the store failure, not swallowed: the
    // bank's attestation of this request approving a scope it did not ask for, refused and
    // logged as the holder's.
    let mut wider = fx.full_statement(&request);
    wider.scopes = ScopeSet::from([Scope::Transactions]);
    let wider = fx.attest(&wider);
    assert_eq!(fx.broker.approve(request.id(), &wider), Err(unavailable()));
    // What is not the holder's is refused and not logged: nothing to fail.
    assert!(matches!(
        fx.broker.approve(request.id(), "forged"),
        Err(Error::Attestation(AttestationError::Malformed(_)))
    ));
    store.random_faults(false);
    // The attestation was not consumed by the failed commit: it still works.
    fx.broker.approve(request.id(), &token).unwrap();

    store.random_faults(true);
    assert_eq!(
        fx.revoke(
            request.id(),
            Revoker::Subject,
            RevocationReason::SubjectWithdrew
        ),
        Err(unavailable())
    );
    assert_eq!(
        fx.broker.consent(request.id()).unwrap().status,
        ConsentStatus::Authorised
    );
    store.random_faults(false);
    // The request and the approval: nothing of what failed.
    assert_eq!(fx.audit_len(), len + 2);
}

// A commit that fails part way (its last change) leaves no trace: the conformance suite's
// `atomicity` checks it on every store, with every kind of change.

#[test]
fn concurrent_unattended_accesses_never_exceed_the_daily_limit() {
    let fx = Arc::new(Fixture::new());
    let request = fx.granted();
    let poll = AccessRequest {
        presence: Presence::Unattended,
        ..fx.access(request.id())
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
            .usage(request.id(), day)
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
                e.kind(),
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
            .filter(|e| e.kind() == AuditKind::AccessPermitted)
            .count(),
        4
    );
}

#[test]
fn no_permit_is_recorded_after_a_revocation_returns() {
    for _round in 0..20 {
        let fx = Arc::new(Fixture::new());
        let request = fx.granted();
        let access = fx.access(request.id());
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
        fx.revoke(
            request.id(),
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
            .find(|e| e.kind() == AuditKind::ConsentRevoked)
            .map(|e| e.seq)
            .unwrap();
        assert!(
            log.iter()
                .filter(|e| e.kind() == AuditKind::AccessPermitted)
                .all(|e| e.seq < revoked_at),
            "a permit entry follows the revocation entry"
        );
    }
}
