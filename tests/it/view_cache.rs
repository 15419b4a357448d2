//! Access views kept between decisions (`BrokerBuilder::access_view_cache`): a broker decides a
//! consent asked about again from what it read last time, and its commit is the only call to the
//! store. These tests are the dishonest or merely concurrent world around such a broker: another
//! broker on the same store revokes, erases, changes the holder's policy, spends the day's slots.
//! None of it may be missed: no permit rests on a kept view alone.
#![cfg(any(feature = "sqlite", feature = "postgres"))]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use consent_broker::testing::FaultStore;
use consent_broker::*;

use crate::racing::{checked_log, unattended, unattended_permits, usage_agrees};
use crate::support::*;

type Faulty = Arc<FaultStore<MemoryStore>>;

/// A fixture whose broker keeps views, over a store that reports its reads, and a second broker
/// on the same store that does not.
fn two_brokers() -> (Fixture<Faulty>, Faulty, Broker<Faulty>) {
    two_brokers_keeping(false)
}

/// As [`two_brokers`], the second keeping views if `keep`.
fn two_brokers_keeping(keep: bool) -> (Fixture<Faulty>, Faulty, Broker<Faulty>) {
    let store: Faulty = Arc::new(FaultStore::new(MemoryStore::new(), 7));
    let fx = Fixture::sharing(Arc::clone(&store), |builder| {
        builder.access_view_cache(true)
    });
    let other = Broker::builder(fx.broker.id().clone(), Arc::clone(&store))
        .clock(fx.clock.clone())
        .keys(keys())
        .access_view_cache(keep)
        .build()
        .unwrap();
    (fx, store, other)
}

/// Whether the next decision reads the consent from the store.
fn reads_consent(store: &Faulty) -> Arc<AtomicBool> {
    let read = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&read);
    store.before_next_read("consent", move || flag.store(true, Ordering::SeqCst));
    read
}

fn permits(fx: &Fixture<Faulty>) -> usize {
    fx.audit()
        .iter()
        .filter(|e| e.kind() == AuditKind::AccessPermitted)
        .count()
}

#[test]
fn a_consent_asked_about_again_is_decided_without_reading_it() {
    let (fx, store, _) = two_brokers();
    let granted = fx.granted().id().clone();
    let access = fx.access(&granted);
    assert_eq!(fx.decide(&access), Decision::Permit);
    let read = reads_consent(&store);
    assert_eq!(fx.decide(&access), Decision::Permit);
    assert!(!read.load(Ordering::SeqCst), "the kept view was used");
    // A broker without the cache reads every time (the hook above is still waiting for a read).
    let plain = Broker::builder(fx.broker.id().clone(), Arc::clone(&store))
        .clock(fx.clock.clone())
        .keys(keys())
        .build()
        .unwrap();
    plain.authorise_access(&access).unwrap();
    assert!(read.load(Ordering::SeqCst), "off by default in memory");
}

#[test]
fn a_revocation_elsewhere_is_never_missed() {
    let (fx, store, other) = two_brokers();
    let granted = fx.granted().id().clone();
    let access = fx.access(&granted);
    assert_eq!(fx.decide(&access), Decision::Permit);
    other
        .revoke(
            &granted,
            Revoker::Subject,
            RevocationReason::SubjectWithdrew,
        )
        .unwrap();
    let read = reads_consent(&store);
    let outcome = fx.broker.authorise_access(&access).unwrap();
    let AccessOutcome::Denied(denial) = outcome else {
        panic!("a revoked consent was permitted from a kept view");
    };
    assert!(
        denial
            .reasons
            .iter()
            .any(|r| matches!(r, DenyReason::Revoked { .. })),
        "{:?}",
        denial.reasons
    );
    assert!(
        read.load(Ordering::SeqCst),
        "decided again from a fresh read"
    );
    assert_eq!(
        permits(&fx),
        1,
        "one permit in the log, before the revocation"
    );
    assert_eq!(fx.last_audit().kind(), AuditKind::AccessDenied);
    // The next decision reads afresh too: the stale view was dropped.
    let read = reads_consent(&store);
    assert_ne!(fx.decide(&access), Decision::Permit);
    assert!(read.load(Ordering::SeqCst));
}

#[test]
fn a_holder_policy_change_is_never_missed() {
    let (fx, _, _) = two_brokers();
    let granted = fx.granted().id().clone();
    let access = fx.access(&granted);
    assert_eq!(fx.decide(&access), Decision::Permit);
    fx.set_policy(HolderPolicy {
        enabled_scopes: ScopeSet::from([Scope::Alerts]),
        ..HolderPolicy::default()
    })
    .unwrap();
    assert_ne!(fx.decide(&access), Decision::Permit);
    assert_eq!(permits(&fx), 1);
}

#[test]
fn an_erasure_elsewhere_is_never_missed() {
    let (fx, _, other) = two_brokers();
    let granted = fx.granted().id().clone();
    let access = fx.access(&granted);
    assert_eq!(fx.decide(&access), Decision::Permit);
    other.erase_subject(&fx.alice).unwrap().unwrap();
    assert_ne!(fx.decide(&access), Decision::Permit);
    assert_eq!(permits(&fx), 1);
}

#[test]
fn two_caching_brokers_share_the_days_slots_exactly() {
    let (fx, store, other) = two_brokers_keeping(true);
    let granted = fx.granted().id().clone();
    let access = unattended(fx.access(&granted));
    let mut permitted = 0;
    for round in 0..12 {
        let broker = if round % 3 == 0 { &other } else { &fx.broker };
        let outcome = broker.authorise_access(&access).unwrap();
        if outcome.decision() == Decision::Permit {
            permitted += 1;
        }
    }
    assert_eq!(permitted, DEFAULT_UNATTENDED_DAILY_LIMIT);
    let entries = checked_log(&*store);
    assert_eq!(
        unattended_permits(&entries).values().sum::<u64>(),
        u64::from(DEFAULT_UNATTENDED_DAILY_LIMIT)
    );
    usage_agrees(&*store, &entries);
}

#[test]
fn a_kept_view_lasts_a_minute_and_one_day() {
    let (fx, store, _) = two_brokers();
    let granted = fx.granted().id().clone();
    let access = fx.access(&granted);
    assert_eq!(fx.decide(&access), Decision::Permit);
    fx.clock.advance(time::Duration::seconds(61));
    let read = reads_consent(&store);
    assert_eq!(fx.decide(&access), Decision::Permit);
    assert!(
        read.load(Ordering::SeqCst),
        "older than a minute: read again"
    );
}

#[test]
fn the_sql_stores_keep_views_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("views.sqlite")).unwrap();
    assert!(store.keep_access_views());
    assert!(!MemoryStore::new().keep_access_views());
    assert!(Arc::new(store).keep_access_views(), "through a pointer too");
}

#[test]
fn a_denial_is_never_recorded_from_a_kept_view() {
    let (fx, _, _) = two_brokers();
    let granted = fx.granted().id().clone();
    let access = fx.access(&granted);
    let alerts_only = HolderPolicy {
        enabled_scopes: ScopeSet::from([Scope::Alerts]),
        ..HolderPolicy::default()
    };
    fx.set_policy(alerts_only).unwrap();
    assert_ne!(fx.decide(&access), Decision::Permit);
    // The kept view now says "balance is not enabled"; the bank enables it again. A denial
    // checks the consent's version, not the holder's: decided from the kept view, it would be
    // recorded.
    fx.set_policy(HolderPolicy::default()).unwrap();
    assert_eq!(fx.decide(&access), Decision::Permit);
}

#[test]
fn an_unattended_permit_keeps_the_kept_count_in_step() {
    let (fx, store, _) = two_brokers();
    let granted = fx.granted().id().clone();
    let access = unattended(fx.access(&granted));
    assert_eq!(fx.decide(&access), Decision::Permit);
    let read = reads_consent(&store);
    assert_eq!(fx.decide(&access), Decision::Permit);
    assert!(
        !read.load(Ordering::SeqCst),
        "the kept count followed the permit: no refused commit, no fresh read"
    );
    let entries = checked_log(&*store);
    usage_agrees(&*store, &entries);
}
