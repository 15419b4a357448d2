//! The store conformance suite (feature `store-conformance`): every test this crate's stores
//! pass, for anyone writing a [`Store`] for another database.
//!
//! Implement [`Harness`] for your store (how to make a fresh one, and, for a durable store, how
//! to close and reopen it), then add one line to a test file:
//!
//! ```ignore
//! consent_broker::store_conformance_tests!(my_store, MyHarness, durable);
//! ```
//!
//! It expands to a module `my_store` with one `#[test]` per property below; leave out `durable`
//! for a store that keeps nothing across a reopen. An attribute for every test can follow (for
//! example `ignore = "needs a server"`). This crate runs the suite on the memory, SQLite and
//! PostgreSQL stores with exactly these lines.
//!
//! What is checked: inserts, versioned updates, duplicates and missing records for every kind of
//! state; usage counters; used attestations; published keys with activation and retirement (one
//! active key per use); the audit log's bytes, sequence numbers and Merkle nodes, with bulk reads
//! clamped to the log; every precondition; all-or-nothing commits (a failure in the last change
//! leaves no trace, audit records included); checkpoints (never smaller than the latest, one per
//! size); many threads committing at once with no lost update and a gap-free log; reopening; and
//! the broker's whole story on the store.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test suite fails by panicking"
)]

use std::sync::atomic::{AtomicU64, Ordering};

use time::macros::{date, datetime};
use time::{Date, Duration, OffsetDateTime};

use crate::audit::{Actor, AuditEntry, AuditEvent, AuditKind, AuditRecord, Refusal};
use crate::consent::{AccountSelection, Consent, ConsentRequest, ConsentState};
use crate::ids::ConsentId;
use crate::keys::Ed25519PublicKey;
use crate::merkle;
use crate::policy::{DenyReason, HolderPolicy, PlatformProfile, Presence, Usage};
use crate::sets::{AccountSet, PurposeSet, ScopeSet};
use crate::store::{
    Change, Commit, HolderRecord, KeyUse, LogRead, Precondition, PublishedKey, RecordKind,
    SignedCheckpoint, StateRead, Store, StoreError, StoredCheckpoint,
};
use crate::vocab::{ProhibitedUse, Purpose, RequestedPurpose, RequestedScope, Scope};
use crate::{AttestationError, Decision, RevocationReason, Revoker};

/// A store under test, and how to make and reopen one.
pub trait Harness: Sized {
    /// The store.
    type Store: Store;
    /// A fresh, empty store.
    fn new() -> Self;
    /// The store under test.
    fn store(&self) -> &Self::Store;
    /// Closes the store and opens the same data again. Only the `durable` suite calls it.
    fn reopen(self) -> Self;
}

/// A fresh store from `H`, checked to be empty before the suite writes its made-up records: a
/// harness pointed at a store with data in it (a real one) stops here, before any write.
fn fresh<H: Harness>() -> H {
    let h = H::new();
    let s = h.store();
    assert!(
        s.audit_len().unwrap() == 0
            && s.published_keys().unwrap().is_empty()
            && s.latest_checkpoint().unwrap().is_none(),
        "the conformance suite runs only on a fresh, empty store: Harness::new returned one \
         with a log, keys or checkpoints"
    );
    h
}

const NOW: OffsetDateTime = datetime!(2026-11-21 09:00 UTC);
const DAY: Date = date!(2026 - 11 - 21);

fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}

fn holder(name: &str, version: u64) -> HolderRecord {
    HolderRecord {
        id: id(name),
        policy: HolderPolicy::default(),
        attestation_keys: vec![Ed25519PublicKey::from_bytes(&[7; 32]).unwrap()],
        retired_attestation_keys: vec![Ed25519PublicKey::from_bytes(&[6; 32]).unwrap()],
        version,
    }
}

fn platform(name: &str) -> PlatformProfile {
    PlatformProfile {
        id: id(name),
        registered_purposes: PurposeSet::from([Purpose::CustomerService]),
    }
}

fn consent(name: &str, subject: &str) -> Consent {
    Consent::requested(ConsentRequest {
        id: id(name),
        subject: id(subject),
        platform: id("chat"),
        holder: id("bank"),
        scopes: ScopeSet::from([Scope::Balance]),
        purposes: PurposeSet::from([Purpose::CustomerService]),
        accounts: AccountSelection::Listed(AccountSet::from([id("acc-1")])),
        duration: Duration::days(30),
        requested_at: NOW,
        approval_deadline: NOW + Duration::minutes(10),
    })
}

/// The next version of a stored consent (its content changed to a rejection).
fn next_version(consent: &Consent) -> Consent {
    Consent {
        version: consent.version + 1,
        state: ConsentState::Rejected { at: NOW },
        ..consent.clone()
    }
}

/// A denial tagged by `n` (its consent id), with every optional member set.
fn denial(n: u64) -> AuditRecord {
    AuditRecord::new(
        NOW + Duration::seconds(n as i64),
        Actor::Platform(id("chat")),
        AuditEvent::AccessDenied {
            consent: id(&format!("cns_{n}")),
            subject: Some(id("ps_alice")),
            scope: RequestedScope::Prohibited(ProhibitedUse::Ads),
            purpose: RequestedPurpose::Permitted(Purpose::FraudProtection),
            account: Some(id("ps_acc-1")),
            presence: Presence::Unattended,
            reasons: vec![
                DenyReason::Expired { at: NOW },
                DenyReason::AccountNotGranted {
                    account: id("acc-2"),
                },
            ],
        },
    )
}

/// Records of several kinds, so that a round trip through the store is checked on each.
fn record(n: u64) -> AuditRecord {
    let at = NOW + Duration::seconds(n as i64);
    match n % 3 {
        0 => denial(n),
        1 => AuditRecord::new(
            at,
            Actor::Holder(id("bank")),
            AuditEvent::ApprovalRefused {
                consent: id(&format!("cns_{n}")),
                subject: id("alice"),
                refusal: Refusal::Attestation(AttestationError::Malformed("x \u{e9} \"q\"".into())),
            },
        ),
        _ => AuditRecord::new(
            at,
            Actor::Holder(id("bank")),
            AuditEvent::HolderRegistered {
                attestation_keys: vec!["kid".into()],
                policy: Some(HolderPolicy::default()),
            },
        ),
    }
}

fn commit(changes: Vec<Change>, records: Vec<AuditRecord>) -> Commit {
    let mut records = records.into_iter();
    let mut commit = Commit::new(records.next().unwrap_or_else(|| denial(0)));
    for record in records {
        commit.push_record(record);
    }
    for change in changes {
        commit = commit.change(change);
    }
    commit
}

/// Commits one consent `name` of `subject` with no other change and returns its id.
fn insert_consent<S: Store + ?Sized>(store: &S, name: &str, subject: &str) -> ConsentId {
    store
        .commit(commit(
            vec![Change::InsertConsent {
                consent: consent(name, subject),
            }],
            vec![],
        ))
        .unwrap();
    id(name)
}

fn published(key_use: KeyUse, n: u8, at: OffsetDateTime) -> PublishedKey {
    let public_key = Ed25519PublicKey::from_bytes(&[n; 32]).unwrap();
    PublishedKey {
        key_use,
        kid: public_key.thumbprint(),
        public_key,
        activated_at: at,
        retired_at: None,
        verifies_until: None,
    }
}

mod commits;
mod ledger;
mod log;
mod privacy;
mod state;

/// The tests. Each makes a fresh store with `H::new()` and checks that it is empty.
pub mod suite {
    pub use super::commits::{atomicity, broker_story, concurrency, preconditions, reopening};
    pub use super::ledger::{
        ledger_attestations, ledger_device_keys, ledger_feed_and_view, ledger_policies,
        ledger_seen_ids, ledger_served_counts,
    };
    pub use super::log::{audit_log, checkpoints, merkle_nodes_at_every_level};
    pub use super::privacy::{
        ledger_links_and_erasure, retention, subject_key_preconditions, subject_keys_and_erasure,
    };
    pub use super::state::{
        consents, holders_and_platforms, published_keys, usage_and_attestations,
    };
}

/// `store_conformance_tests!(name, Harness[, durable][, ledger][; attribute])`: the suite for
/// one store, as a module `name` with one `#[test]` per property. `durable` adds the reopening
/// test; `ledger` adds the tests of a bank's ledger (for a store that implements
/// [`LedgerRead`](crate::LedgerRead)); the attribute, if given, goes on every test (for example
/// `ignore = "needs a server"`).
#[macro_export]
macro_rules! store_conformance_tests {
    (@module $name:ident, $harness:ty, [$($flag:ident)*], $attrs:tt) => {
        mod $name {
            #[allow(
                unused_imports,
                reason = "the caller's harness may or may not need its module's names here"
            )]
            use super::*;
            $crate::store_conformance_tests!(@tests $harness, $attrs, holders_and_platforms,
                consents, usage_and_attestations, published_keys, audit_log, checkpoints,
                merkle_nodes_at_every_level, preconditions, atomicity, concurrency, broker_story,
                subject_keys_and_erasure, subject_key_preconditions, retention);
            $($crate::store_conformance_tests!(@$flag $harness, $attrs);)*
        }
    };
    (@tests $harness:ty, $attrs:tt, $($test:ident),+) => {
        $($crate::store_conformance_tests!(@test $harness, $attrs, $test);)+
    };
    (@test $harness:ty, [$($attr:meta)?], $test:ident) => {
        #[test]
        $(#[$attr])?
        fn $test() {
            $crate::conformance::suite::$test::<$harness>();
        }
    };
    (@durable $harness:ty, $attrs:tt) => {
        $crate::store_conformance_tests!(@tests $harness, $attrs, reopening);
    };
    (@ledger $harness:ty, $attrs:tt) => {
        $crate::store_conformance_tests!(@tests $harness, $attrs, ledger_attestations,
            ledger_policies, ledger_served_counts, ledger_seen_ids, ledger_feed_and_view,
            ledger_device_keys, ledger_links_and_erasure);
    };
    ($name:ident, $harness:ty $(, $flag:ident)* $(; $attr:meta)?) => {
        $crate::store_conformance_tests!(@module $name, $harness, [$($flag)*], [$($attr)?]);
    };
}
