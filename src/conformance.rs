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
    StateRead, Store, StoreError, StoredCheckpoint,
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
            subject: Some(id("alice")),
            scope: RequestedScope::Prohibited(ProhibitedUse::Ads),
            purpose: RequestedPurpose::Permitted(Purpose::FraudProtection),
            account: id("acc-1"),
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

/// The tests. Each makes a fresh store with `H::new()`.
pub mod suite {
    use super::*;

    /// Holders and platforms: insert, read back, duplicates, versioned updates, missing ones.
    pub fn holders_and_platforms<H: Harness>() {
        let h = H::new();
        let s = h.store();
        assert_eq!(s.holder(&id("bank")).unwrap(), None);
        s.commit(commit(
            vec![Change::InsertHolder {
                holder: holder("bank", 1),
            }],
            vec![],
        ))
        .unwrap();
        assert_eq!(s.holder(&id("bank")).unwrap(), Some(holder("bank", 1)));
        assert_eq!(
            s.commit(commit(
                vec![Change::InsertHolder {
                    holder: holder("bank", 1)
                }],
                vec![]
            )),
            Err(StoreError::Duplicate {
                kind: RecordKind::Holder,
                id: "bank".into()
            })
        );
        let mut changed = holder("bank", 2);
        changed.policy.unattended_daily_limit = 9;
        s.commit(commit(
            vec![Change::UpdateHolder {
                holder: changed.clone(),
            }],
            vec![],
        ))
        .unwrap();
        assert_eq!(s.holder(&id("bank")).unwrap(), Some(changed.clone()));
        // A stale update (version not one more than stored) is a conflict; nothing changes.
        assert_eq!(
            s.commit(commit(
                vec![Change::UpdateHolder {
                    holder: holder("bank", 2)
                }],
                vec![]
            )),
            Err(StoreError::Conflict)
        );
        assert_eq!(s.holder(&id("bank")).unwrap(), Some(changed));
        assert_eq!(
            s.commit(commit(
                vec![Change::UpdateHolder {
                    holder: holder("nobody", 2)
                }],
                vec![]
            )),
            Err(StoreError::Missing {
                kind: RecordKind::Holder,
                id: "nobody".into()
            })
        );

        s.commit(commit(
            vec![Change::InsertPlatform {
                platform: platform("chat"),
            }],
            vec![],
        ))
        .unwrap();
        assert_eq!(s.platform(&id("chat")).unwrap(), Some(platform("chat")));
        assert_eq!(s.platform(&id("other")).unwrap(), None);
        assert_eq!(
            s.commit(commit(
                vec![Change::InsertPlatform {
                    platform: platform("chat")
                }],
                vec![]
            )),
            Err(StoreError::Duplicate {
                kind: RecordKind::Platform,
                id: "chat".into()
            })
        );
    }

    /// Consents: insert, read by id and by subject (oldest first), versioned updates.
    pub fn consents<H: Harness>() {
        let h = H::new();
        let s = h.store();
        let first = consent("cns_1", "alice");
        let second = consent("cns_2", "alice");
        let bobs = consent("cns_3", "bob");
        s.commit(commit(
            vec![
                Change::InsertConsent {
                    consent: first.clone(),
                },
                Change::InsertConsent {
                    consent: second.clone(),
                },
                Change::InsertConsent {
                    consent: bobs.clone(),
                },
            ],
            vec![],
        ))
        .unwrap();
        assert_eq!(s.consent(&id("cns_1")).unwrap(), Some(first.clone()));
        assert_eq!(s.consent(&id("cns_9")).unwrap(), None);
        assert_eq!(
            s.consents_of_subject(&id("alice")).unwrap(),
            vec![first.clone(), second]
        );
        assert_eq!(s.consents_of_subject(&id("bob")).unwrap(), vec![bobs]);
        assert_eq!(s.consents_of_subject(&id("carol")).unwrap(), vec![]);
        assert_eq!(
            s.commit(commit(
                vec![Change::InsertConsent {
                    consent: first.clone()
                }],
                vec![]
            )),
            Err(StoreError::Duplicate {
                kind: RecordKind::Consent,
                id: "cns_1".into()
            })
        );

        let updated = next_version(&first);
        s.commit(commit(
            vec![Change::UpdateConsent {
                consent: updated.clone(),
            }],
            vec![],
        ))
        .unwrap();
        assert_eq!(s.consent(&id("cns_1")).unwrap(), Some(updated.clone()));
        // The same version again is stale.
        assert_eq!(
            s.commit(commit(
                vec![Change::UpdateConsent {
                    consent: updated.clone()
                }],
                vec![]
            )),
            Err(StoreError::Conflict)
        );
        assert_eq!(
            s.commit(commit(
                vec![Change::UpdateConsent {
                    consent: consent("cns_404", "x")
                }],
                vec![]
            )),
            Err(StoreError::Missing {
                kind: RecordKind::Consent,
                id: "cns_404".into()
            })
        );
        assert_eq!(s.consents_of_subject(&id("alice")).unwrap()[0], updated);
    }

    /// Usage counters per consent and UTC day, and used attestations.
    pub fn usage_and_attestations<H: Harness>() {
        let h = H::new();
        let s = h.store();
        let c: ConsentId = id("cns_1");
        s.commit(commit(
            vec![Change::InsertConsent {
                consent: consent("cns_1", "alice"),
            }],
            vec![],
        ))
        .unwrap();
        assert_eq!(s.usage(&c, DAY).unwrap(), Usage::default());
        let count = |day| Change::CountUnattendedAccess {
            consent: c.clone(),
            day,
        };
        for _ in 0..3 {
            s.commit(commit(vec![count(DAY)], vec![])).unwrap();
        }
        let next_day = DAY.next_day().unwrap();
        s.commit(commit(vec![count(next_day)], vec![])).unwrap();
        assert_eq!(s.usage(&c, DAY).unwrap().unattended_today, 3);
        assert_eq!(s.usage(&c, next_day).unwrap().unattended_today, 1);
        assert_eq!(s.usage(&id("cns_2"), DAY).unwrap().unattended_today, 0);

        let used = |jti: &str| Change::UseAttestation {
            attestation_id: jti.into(),
        };
        assert!(!s.attestation_used("jti-1").unwrap());
        s.commit(commit(vec![used("jti-1")], vec![])).unwrap();
        assert!(s.attestation_used("jti-1").unwrap());
        assert_eq!(
            s.commit(commit(vec![used("jti-1")], vec![])),
            Err(StoreError::Duplicate {
                kind: RecordKind::Attestation,
                id: "jti-1".into()
            })
        );
    }

    /// Published keys: one active key per use, retirement with its times, no key twice.
    pub fn published_keys<H: Harness>() {
        let h = H::new();
        let s = h.store();
        let first = published(KeyUse::Token, 1, NOW);
        let checkpoint = published(KeyUse::Checkpoint, 3, NOW);
        s.commit(commit(
            vec![
                Change::ActivateKey { key: first.clone() },
                Change::ActivateKey {
                    key: checkpoint.clone(),
                },
            ],
            vec![],
        ))
        .unwrap();
        let later = NOW + Duration::hours(1);
        let second = published(KeyUse::Token, 2, later);
        // A second active token key: refused, the first must be retired in the same commit.
        assert_eq!(
            s.commit(commit(
                vec![Change::ActivateKey {
                    key: second.clone()
                }],
                vec![]
            )),
            Err(StoreError::Conflict)
        );
        let until = later + Duration::minutes(15);
        let retire = |kid: &str| Change::RetireKey {
            key_use: KeyUse::Token,
            kid: kid.to_owned(),
            retired_at: later,
            verifies_until: Some(until),
        };
        s.commit(commit(
            vec![
                retire(&first.kid),
                Change::ActivateKey {
                    key: second.clone(),
                },
            ],
            vec![],
        ))
        .unwrap();
        let retired = PublishedKey {
            retired_at: Some(later),
            verifies_until: Some(until),
            ..first.clone()
        };
        assert_eq!(
            s.published_keys().unwrap(),
            vec![retired, checkpoint.clone(), second.clone()]
        );
        // Retiring a key that is not the active one, or activating one seen before: refused,
        // and nothing changes.
        let before = s.published_keys().unwrap();
        assert_eq!(
            s.commit(commit(vec![retire(&first.kid)], vec![])),
            Err(StoreError::Missing {
                kind: RecordKind::Key,
                id: first.kid.clone()
            })
        );
        assert_eq!(
            s.commit(commit(
                vec![
                    retire(&second.kid),
                    Change::ActivateKey { key: first.clone() }
                ],
                vec![]
            )),
            Err(StoreError::Duplicate {
                kind: RecordKind::Key,
                id: first.kid.clone()
            })
        );
        assert_eq!(s.published_keys().unwrap(), before);
    }

    /// The audit log: consecutive sequence numbers per commit, exact bytes, clamped reads, and
    /// the Merkle nodes of complete subtrees.
    pub fn audit_log<H: Harness>() {
        let h = H::new();
        let s = h.store();
        assert_eq!(s.audit_len().unwrap(), 0);
        assert_eq!(s.audit_entries(0..10).unwrap(), vec![]);
        let receipt = s
            .commit(commit(vec![], vec![record(0), record(1)]))
            .unwrap();
        assert_eq!(receipt.audit_seqs, 0..2);
        let receipt = s.commit(commit(vec![], vec![record(2)])).unwrap();
        assert_eq!(receipt.audit_seqs, 2..3);
        let bytes: Vec<Vec<u8>> = (0..3).map(|n| record(n).entry_bytes(n).unwrap()).collect();
        let stored = s.audit_bytes(0..3).unwrap();
        assert_eq!(
            stored.iter().map(|e| e.bytes.clone()).collect::<Vec<_>>(),
            bytes,
            "entries are kept as the exact bytes written"
        );
        let expected: Vec<AuditEntry> = bytes
            .iter()
            .map(|b| AuditEntry::from_bytes(b).unwrap())
            .collect();
        assert_eq!(s.audit_entries(0..3).unwrap(), expected);
        assert_eq!(s.audit_entries(1..2).unwrap(), expected[1..2].to_vec());
        assert_eq!(s.audit_entries(2..100).unwrap(), expected[2..].to_vec());
        assert_eq!(s.audit_entries(5..9).unwrap(), vec![]);
        assert_eq!(s.audit_entries(0..u64::MAX).unwrap(), expected);
        // Merkle nodes in bulk: 3 leaves, 1 complete pair, nothing above; huge ranges and levels
        // return at once.
        let leaves = s.merkle_nodes(0, 0..u64::MAX).unwrap();
        assert_eq!(
            leaves,
            (0u64..)
                .zip(&bytes)
                .map(|(i, b)| (i, merkle::leaf_hash(b)))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            s.merkle_nodes(1, 0..u64::MAX).unwrap(),
            vec![(0, merkle::node_hash(&leaves[0].1, &leaves[1].1))]
        );
        assert_eq!(s.merkle_nodes(2, 0..u64::MAX).unwrap(), vec![]);
        assert_eq!(s.merkle_nodes(200, 0..u64::MAX).unwrap(), vec![]);
        assert_eq!(Some(leaves[1].1), s.merkle_node(0, 1).unwrap());
        assert_eq!(s.merkle_node(0, 3).unwrap(), None);
        #[allow(
            clippy::reversed_empty_ranges,
            reason = "a reversed range must read nothing"
        )]
        let reversed = s.audit_entries(2..1).unwrap();
        assert_eq!(reversed, vec![]);
    }

    /// Checkpoints: the latest is returned; one per size (the first); never a smaller one.
    pub fn checkpoints<H: Harness>() {
        let h = H::new();
        let s = h.store();
        assert_eq!(s.latest_checkpoint().unwrap(), None);
        let checkpoint = |size, note: &str| StoredCheckpoint {
            size,
            root: [size as u8; 32],
            note: note.into(),
        };
        s.record_checkpoint(&checkpoint(2, "two")).unwrap();
        s.record_checkpoint(&checkpoint(5, "five")).unwrap();
        assert_eq!(s.latest_checkpoint().unwrap(), Some(checkpoint(5, "five")));
        s.record_checkpoint(&checkpoint(5, "five again")).unwrap();
        assert_eq!(s.latest_checkpoint().unwrap(), Some(checkpoint(5, "five")));
        assert_eq!(
            s.record_checkpoint(&checkpoint(4, "four")),
            Err(StoreError::Conflict)
        );
        assert_eq!(s.latest_checkpoint().unwrap(), Some(checkpoint(5, "five")));
    }

    /// Every precondition, failing and holding.
    pub fn preconditions<H: Harness>() {
        let h = H::new();
        let s = h.store();
        let c: ConsentId = id("cns_1");
        s.commit(commit(
            vec![
                Change::InsertConsent {
                    consent: consent("cns_1", "alice"),
                },
                Change::InsertHolder {
                    holder: holder("bank", 1),
                },
            ],
            vec![],
        ))
        .unwrap();
        let counted = |preconditions: Vec<Precondition>| {
            let mut commit = commit(
                vec![Change::CountUnattendedAccess {
                    consent: c.clone(),
                    day: DAY,
                }],
                vec![record(0)],
            );
            for precondition in preconditions {
                commit = commit.precondition(precondition);
            }
            s.commit(commit)
        };
        let len = s.audit_len().unwrap();
        for failing in [
            Precondition::consent_version(&c, 2),
            Precondition::consent_version(&id("cns_9"), 1),
            Precondition::holder_version(&id("bank"), 7),
            Precondition::holder_version(&id("nobody"), 1),
            Precondition::usage_is(
                &c,
                DAY,
                Usage {
                    unattended_today: 1,
                },
            ),
        ] {
            assert_eq!(
                counted(vec![failing.clone()]),
                Err(StoreError::Conflict),
                "{failing:?}"
            );
            assert_eq!(s.usage(&c, DAY).unwrap().unattended_today, 0);
            assert_eq!(s.audit_len().unwrap(), len);
        }
        counted(vec![
            Precondition::consent_version(&c, 1),
            Precondition::holder_version(&id("bank"), 1),
            Precondition::usage_is(&c, DAY, Usage::default()),
        ])
        .unwrap();
        assert_eq!(s.usage(&c, DAY).unwrap().unattended_today, 1);
        assert_eq!(s.audit_len().unwrap(), len + 1);
    }

    /// A failure part-way through a commit (its last change fails) leaves no trace at all.
    pub fn atomicity<H: Harness>() {
        let h = H::new();
        let s = h.store();
        let c: ConsentId = id("cns_1");
        let original = consent("cns_1", "alice");
        let first_key = published(KeyUse::Token, 1, NOW);
        s.commit(commit(
            vec![
                Change::InsertConsent {
                    consent: original.clone(),
                },
                Change::InsertHolder {
                    holder: holder("bank", 1),
                },
                Change::ActivateKey {
                    key: first_key.clone(),
                },
            ],
            vec![record(0)],
        ))
        .unwrap();
        let used = |jti: &str| Change::UseAttestation {
            attestation_id: jti.into(),
        };
        s.commit(commit(vec![used("used")], vec![])).unwrap();
        let failing_last = [
            Change::InsertHolder {
                holder: holder("bank", 1),
            },
            used("used"),
            Change::UpdateConsent {
                consent: consent("cns_missing", "x"),
            },
        ];
        let keys = s.published_keys().unwrap();
        let len = s.audit_len().unwrap();
        for last in failing_last {
            let result = s.commit(commit(
                vec![
                    Change::UpdateConsent {
                        consent: next_version(&original),
                    },
                    Change::CountUnattendedAccess {
                        consent: c.clone(),
                        day: DAY,
                    },
                    used("fresh"),
                    Change::InsertPlatform {
                        platform: platform("chat"),
                    },
                    Change::InsertConsent {
                        consent: consent("cns_2", "alice"),
                    },
                    Change::RetireKey {
                        key_use: KeyUse::Token,
                        kid: first_key.kid.clone(),
                        retired_at: NOW,
                        verifies_until: Some(NOW),
                    },
                    Change::ActivateKey {
                        key: published(KeyUse::Token, 2, NOW),
                    },
                    last.clone(),
                ],
                vec![record(1), record(2)],
            ));
            assert!(result.is_err(), "{last:?}");
            assert_eq!(s.consent(&c).unwrap(), Some(original.clone()));
            assert_eq!(s.consent(&id("cns_2")).unwrap(), None);
            assert_eq!(
                s.consents_of_subject(&id("alice")).unwrap(),
                vec![original.clone()]
            );
            assert_eq!(s.usage(&c, DAY).unwrap(), Usage::default());
            assert!(!s.attestation_used("fresh").unwrap());
            assert_eq!(s.platform(&id("chat")).unwrap(), None);
            assert_eq!(s.published_keys().unwrap(), keys);
            assert_eq!(s.audit_len().unwrap(), len);
        }
        // The store is still fully usable afterwards, and the sequence continues without a gap.
        let receipt = s.commit(commit(vec![], vec![record(1)])).unwrap();
        assert_eq!(receipt.audit_seqs, len..len + 1);
    }

    /// Many threads: no lost update, exact counts, a gap-free audit sequence.
    pub fn concurrency<H: Harness>() {
        const THREADS: u64 = 4;
        const OPS: u64 = 40;
        let h = H::new();
        let s = h.store();
        let c: ConsentId = id("cns_1");
        s.commit(commit(
            vec![Change::InsertConsent {
                consent: consent("cns_1", "alice"),
            }],
            vec![],
        ))
        .unwrap();
        let before = s.audit_len().unwrap();
        let conflicts = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                let (s, c, conflicts) = (s, &c, &conflicts);
                scope.spawn(move || {
                    for op in 0..OPS {
                        // Optimistic read-check-write, retried on conflict, like the broker.
                        loop {
                            let usage = s.usage(c, DAY).unwrap();
                            let stored = s.consent(c).unwrap().unwrap();
                            let attempt = commit(
                                vec![
                                    Change::CountUnattendedAccess {
                                        consent: c.clone(),
                                        day: DAY,
                                    },
                                    Change::UpdateConsent {
                                        consent: next_version(&stored),
                                    },
                                ],
                                vec![denial(thread * OPS + op)],
                            )
                            .precondition(Precondition::usage_is(c, DAY, usage));
                            match s.commit(attempt) {
                                Ok(_) => break,
                                Err(StoreError::Conflict) => {
                                    conflicts.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(other) => panic!("unexpected store error: {other}"),
                            }
                        }
                    }
                });
            }
        });
        let total = THREADS * OPS;
        assert_eq!(u64::from(s.usage(&c, DAY).unwrap().unattended_today), total);
        assert_eq!(
            s.consent(&c).unwrap().unwrap().version,
            1 + total,
            "no lost update"
        );
        assert_eq!(s.audit_len().unwrap(), before + total);
        let entries = s.audit_entries(before..before + total).unwrap();
        let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (before..before + total).collect::<Vec<_>>());
        // Each record was appended exactly once.
        let mut tags: Vec<String> = entries
            .iter()
            .map(|e| e.consent().unwrap().to_string())
            .collect();
        tags.sort();
        tags.dedup();
        assert_eq!(tags.len() as u64, total);
    }

    /// Everything committed is there after closing and reopening.
    pub fn reopening<H: Harness>() {
        let h = H::new();
        let s = h.store();
        let c: ConsentId = id("cns_1");
        let key = published(KeyUse::Checkpoint, 3, NOW);
        let updated = next_version(&consent("cns_1", "alice"));
        s.commit(commit(
            vec![
                Change::InsertHolder {
                    holder: holder("bank", 1),
                },
                Change::InsertPlatform {
                    platform: platform("chat"),
                },
                Change::InsertConsent {
                    consent: consent("cns_1", "alice"),
                },
                Change::UpdateConsent {
                    consent: updated.clone(),
                },
                Change::CountUnattendedAccess {
                    consent: c.clone(),
                    day: DAY,
                },
                Change::UseAttestation {
                    attestation_id: "jti".into(),
                },
                Change::ActivateKey { key: key.clone() },
            ],
            vec![record(0), record(1)],
        ))
        .unwrap();
        let checkpoint = StoredCheckpoint {
            size: 2,
            root: [9; 32],
            note: "note".into(),
        };
        s.record_checkpoint(&checkpoint).unwrap();
        let before = s.audit_bytes(0..2).unwrap();
        let h = h.reopen();
        let s = h.store();
        assert_eq!(s.holder(&id("bank")).unwrap(), Some(holder("bank", 1)));
        assert_eq!(s.platform(&id("chat")).unwrap(), Some(platform("chat")));
        assert_eq!(s.consent(&c).unwrap(), Some(updated.clone()));
        assert_eq!(s.consents_of_subject(&id("alice")).unwrap(), vec![updated]);
        assert_eq!(s.usage(&c, DAY).unwrap().unattended_today, 1);
        assert!(s.attestation_used("jti").unwrap());
        assert_eq!(s.published_keys().unwrap(), vec![key]);
        assert_eq!(s.latest_checkpoint().unwrap(), Some(checkpoint));
        assert_eq!(s.audit_bytes(0..2).unwrap(), before);
        // And the sequence continues where it stopped.
        assert_eq!(
            s.commit(commit(vec![], vec![record(2)]))
                .unwrap()
                .audit_seqs,
            2..3
        );
    }

    /// The broker end to end on this store: the story's decisions come out the same.
    pub fn broker_story<H: Harness>() {
        let h = H::new();
        let t = crate::testing::TestBroker::on(h.store());
        let request = t.request();
        let consent = t.bank.approve_all(&t.broker, &request).unwrap();
        // A second approval with a fresh attestation: refused, and audited.
        assert!(matches!(
            t.bank.approve_all(&t.broker, &request),
            Err(crate::Error::Consent(
                crate::ConsentError::AlreadyDecided { .. }
            ))
        ));
        let access = crate::AccessRequest {
            presence: Presence::Unattended,
            ..t.access(consent.id())
        };
        let decisions: Vec<bool> = (0..5).map(|_| t.decide(&access).is_permit()).collect();
        assert_eq!(decisions, vec![true, true, true, true, false]);
        assert_eq!(
            h.store()
                .usage(consent.id(), NOW.date())
                .unwrap()
                .unattended_today,
            4
        );
        t.broker
            .revoke(
                consent.id(),
                Revoker::Subject,
                RevocationReason::SubjectWithdrew,
            )
            .unwrap();
        assert_eq!(
            t.decide(&access),
            Decision::Deny {
                reasons: vec![
                    DenyReason::Revoked {
                        by: Revoker::Subject
                    },
                    DenyReason::FrequencyExceeded { limit: 4 },
                ]
            }
        );
        let kinds: Vec<AuditKind> = t
            .broker
            .audit_log()
            .unwrap()
            .iter()
            .map(AuditEntry::kind)
            .collect();
        assert_eq!(
            kinds,
            [
                [
                    AuditKind::SigningKeyActivated,
                    AuditKind::CheckpointKeyActivated,
                    AuditKind::HolderRegistered,
                    AuditKind::PlatformRegistered,
                    AuditKind::ConsentRequested,
                    AuditKind::ConsentApproved,
                    AuditKind::ApprovalRefused,
                ]
                .as_slice(),
                &[AuditKind::AccessPermitted; 4],
                &[
                    AuditKind::AccessDenied,
                    AuditKind::ConsentRevoked,
                    AuditKind::AccessDenied
                ],
            ]
            .concat()
        );
        assert_eq!(h.store().published_keys().unwrap().len(), 2);
        let checkpoint = t.broker.checkpoint().unwrap();
        assert_eq!(checkpoint.size, kinds.len() as u64);
        crate::auditor::verify_log(&h.store(), None).unwrap();
    }
}

/// `store_conformance_tests!(name, Harness[, durable][; attribute])`: the suite for one store,
/// as a module `name` with one `#[test]` per property. `durable` adds the reopening test; the
/// attribute, if given, goes on every test (for example `ignore = "needs a server"`).
#[macro_export]
macro_rules! store_conformance_tests {
    (@module $name:ident, $harness:ty, [$($durable:ident)?], $attrs:tt) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::store_conformance_tests!(@tests $harness, $attrs, holders_and_platforms,
                consents, usage_and_attestations, published_keys, audit_log, checkpoints,
                preconditions, atomicity, concurrency, broker_story);
            $($crate::store_conformance_tests!(@$durable $harness, $attrs);)?
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
    (@durable $harness:ty, [$($attr:meta)?]) => {
        #[test]
        $(#[$attr])?
        fn reopening() {
            $crate::conformance::suite::reopening::<$harness>();
        }
    };
    ($name:ident, $harness:ty $(, $durable:ident)? $(; $attr:meta)?) => {
        $crate::store_conformance_tests!(@module $name, $harness, [$($durable)?], [$($attr)?]);
    };
}
