//! Helpers shared by the durable stores' tests, and a race every grouping store must survive:
//! eight callers on one broker competing for one consent's daily slots.
#![cfg(any(feature = "sqlite", feature = "postgres"))]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread;

use consent_broker::*;
use time::Date;

use crate::support::*;

pub(crate) fn unattended(access: AccessRequest) -> AccessRequest {
    AccessRequest {
        presence: Presence::Unattended,
        ..access
    }
}

/// Unattended `AccessPermitted` entries per consent and UTC day.
pub(crate) fn unattended_permits(entries: &[AuditEntry]) -> BTreeMap<(ConsentId, Date), u64> {
    let mut per_day = BTreeMap::new();
    for entry in entries {
        if entry.kind() == AuditKind::AccessPermitted
            && entry.event.presence() == Some(Presence::Unattended)
        {
            let consent = entry.consent().expect("a permit names its consent").clone();
            *per_day.entry((consent, entry.at.date())).or_insert(0) += 1;
        }
    }
    per_day
}

/// The whole log, checked to be one gap-free sequence.
pub(crate) fn gap_free_log(store: &impl LogRead) -> Vec<AuditEntry> {
    let len = store.audit_len().unwrap();
    let entries = store.audit_entries(0..len).expect("every entry parses");
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (0..len).collect::<Vec<_>>(), "the log is gap-free");
    entries
}

/// The whole log, checked to be gap-free and to verify (every Merkle node stored matches).
pub(crate) fn checked_log(store: &impl LogRead) -> Vec<AuditEntry> {
    let entries = gap_free_log(store);
    verify_log(store, None).expect("the log verifies");
    entries
}

/// How many of `entries` are access decisions.
pub(crate) fn decisions(entries: &[AuditEntry]) -> usize {
    entries
        .iter()
        .filter(|e| {
            matches!(
                e.kind(),
                AuditKind::AccessPermitted | AuditKind::AccessDenied
            )
        })
        .count()
}

/// Every usage counter equals the unattended permits the log holds for it.
pub(crate) fn usage_agrees(store: &(impl StateRead + LogRead), entries: &[AuditEntry]) {
    for ((consent, day), permits) in unattended_permits(entries) {
        assert_eq!(
            u64::from(store.usage(&consent, day).unwrap().unattended_today),
            permits,
            "usage of {consent} on {day}"
        );
    }
}

const CALLERS: usize = 8;
const EACH: usize = 25;

/// Eight callers on one broker make 25 unattended decisions each on one consent, whose holder
/// allows four a day, beside a present one each time: their commits are sent in batches, and
/// within a batch a commit whose usage precondition an earlier one broke is refused alone and
/// decided again. Exactly four unattended permits land, every decision is in the log once, the
/// counter agrees, and fewer transactions than commits were written.
pub(crate) fn race_for_one_consents_slots<S: Store + Clone>(
    store: S,
    commit_stats: impl Fn() -> CommitStats,
) {
    let fx = Fixture::sharing(store.clone(), |builder| builder);
    let granted = fx.granted().id().clone();
    let before = store.audit_len().unwrap();
    let stats_before = commit_stats();
    let outcomes: Vec<(usize, usize)> = thread::scope(|scope| {
        let handles: Vec<_> = (0..CALLERS)
            .map(|_| {
                let (fx, granted) = (&fx, &granted);
                scope.spawn(move || {
                    let (mut permits, mut decisions) = (0, 0);
                    for _ in 0..EACH {
                        for access in [unattended(fx.access(granted)), fx.access(granted)] {
                            let outcome = fx
                                .broker
                                .authorise_access(&access)
                                .unwrap_or_else(|e| panic!("a racing decision failed: {e:?}"));
                            decisions += 1;
                            if access.presence == Presence::Unattended
                                && outcome.decision() == Decision::Permit
                            {
                                permits += 1;
                            }
                        }
                    }
                    (permits, decisions)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let permits: usize = outcomes.iter().map(|o| o.0).sum();
    let decisions: usize = outcomes.iter().map(|o| o.1).sum();
    assert_eq!(
        permits,
        usize::try_from(DEFAULT_UNATTENDED_DAILY_LIMIT).unwrap(),
        "exactly the day's unattended slots were granted"
    );
    let entries = checked_log(&store);
    let new = entries.get(usize::try_from(before).unwrap()..).unwrap();
    assert_eq!(
        self::decisions(new),
        decisions,
        "each decision is in the log once"
    );
    usage_agrees(&store, &entries);
    let stats = commit_stats();
    let (commits, transactions) = (
        stats.commits - stats_before.commits,
        stats.transactions - stats_before.transactions,
    );
    eprintln!(
        "{commits} commits in {transactions} transactions, largest batch {}",
        stats.largest_batch
    );
    assert!(commits >= u64::try_from(decisions).unwrap());
    assert!(
        transactions < commits,
        "concurrent commits were grouped: {commits} commits in {transactions} transactions"
    );
}

/// The same race on SQLite: commits grouped in one transaction, each in its own savepoint.
#[cfg(feature = "sqlite")]
#[test]
fn callers_racing_for_one_consents_slots_land_in_turn_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("race.sqlite")).unwrap());
    race_for_one_consents_slots(Arc::clone(&store), || store.commit_stats());
}
