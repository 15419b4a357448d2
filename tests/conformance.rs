//! The store conformance suite: one set of tests, written once, that every [`Store`] passes.
//!
//! Adding a store means implementing [`Harness`] for it and adding one `conformance!` line at
//! the bottom; durable stores add `durable` to also run the reopening test.

use std::sync::atomic::{AtomicU64, Ordering};

use consent_broker::store::{Change, Commit, HolderRecord, Precondition, PublishedKey, RecordKind};
use consent_broker::*;
use time::macros::{date, datetime};
use time::{Date, Duration, OffsetDateTime};

const NOW: OffsetDateTime = datetime!(2026-11-21 09:00 UTC);
const DAY: Date = date!(2026 - 11 - 21);

/// A store under test, and how to make and reopen one.
trait Harness: Sized {
    type S: Store;
    fn new() -> Self;
    fn store(&self) -> &Self::S;
    /// Closes and reopens the same data (durable stores only: the `durable` suite calls it).
    fn reopen(self) -> Self;
}

struct MemoryHarness(MemoryStore);

impl Harness for MemoryHarness {
    type S = MemoryStore;
    fn new() -> Self {
        Self(MemoryStore::new())
    }
    fn store(&self) -> &MemoryStore {
        &self.0
    }
    fn reopen(self) -> Self {
        unreachable!("the memory store is not durable; its suite does not include reopening")
    }
}

struct SqliteHarness {
    store: SqliteStore,
    dir: tempfile::TempDir,
}

impl Harness for SqliteHarness {
    type S = SqliteStore;
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("conformance.sqlite")).unwrap();
        Self { store, dir }
    }
    fn store(&self) -> &SqliteStore {
        &self.store
    }
    fn reopen(self) -> Self {
        let path = self.store.path().to_path_buf();
        drop(self.store);
        Self {
            store: SqliteStore::open(path).unwrap(),
            dir: self.dir,
        }
    }
}

/// A fresh schema on the server named by `DATABASE_URL` (`scripts/with-postgres` starts one).
#[cfg(feature = "postgres")]
struct PostgresHarness {
    store: PostgresStore,
    schema: String,
}

#[cfg(feature = "postgres")]
impl PostgresHarness {
    fn url() -> String {
        std::env::var("DATABASE_URL").expect(
            "the PostgreSQL conformance tests need DATABASE_URL: run them with \
             `scripts/with-postgres cargo test --features postgres -- --include-ignored`",
        )
    }

    fn open(schema: &str) -> PostgresStore {
        let options = consent_broker::store::postgres::PostgresOptions {
            schema: Some(schema.to_owned()),
            ..Default::default()
        };
        PostgresStore::open_with(&Self::url(), options).unwrap()
    }
}

#[cfg(feature = "postgres")]
impl Harness for PostgresHarness {
    type S = PostgresStore;
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let schema = format!(
            "conformance_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        Self {
            store: Self::open(&schema),
            schema,
        }
    }
    fn store(&self) -> &PostgresStore {
        &self.store
    }
    fn reopen(self) -> Self {
        let schema = self.schema.clone();
        drop(self.store);
        Self {
            store: Self::open(&schema),
            schema,
        }
    }
}

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

/// A record with every field set, so that a round trip through the store is checked fully.
fn record(n: u64) -> AuditRecord {
    AuditRecord {
        consent: Some(id(&format!("cns_{n}"))),
        subject: Some(id("alice")),
        scope: Some(RequestedScope::Prohibited(ProhibitedUse::Ads)),
        purpose: Some(RequestedPurpose::Permitted(Purpose::FraudProtection)),
        account: Some(id("acc-1")),
        presence: Some(Presence::Unattended),
        reasons: vec![
            DenyReason::Expired { at: NOW },
            DenyReason::AccountNotGranted {
                account: id("acc-2"),
            },
        ],
        refusal: Some(Refusal::Attestation(AttestationError::Malformed(
            "x".into(),
        ))),
        revocation: Some(Revocation {
            by: Revoker::Holder,
            reason: RevocationReason::AccountClosed,
        }),
        attestation_id: Some(format!("att-{n}")),
        token_id: Some(format!("tok-{n}")),
        key_id: Some("kid".into()),
        ..AuditRecord::new(
            NOW + Duration::seconds(n as i64),
            AuditKind::AccessDenied,
            Actor::Platform(id("chat")),
        )
    }
}

fn commit(changes: Vec<Change>, audit: Vec<AuditRecord>) -> Commit {
    Commit {
        preconditions: vec![],
        changes,
        audit,
    }
}

fn audit_len<H: Harness>(h: &H) -> u64 {
    h.store().audit_len().unwrap()
}

mod suite {
    use super::*;

    pub fn holders_and_platforms<H: Harness>() {
        let h = H::new();
        let s = h.store();
        assert_eq!(s.holder(&id("bank")).unwrap(), None);
        s.commit(commit(
            vec![Change::InsertHolder(holder("bank", 1))],
            vec![],
        ))
        .unwrap();
        assert_eq!(s.holder(&id("bank")).unwrap(), Some(holder("bank", 1)));
        assert_eq!(
            s.commit(commit(
                vec![Change::InsertHolder(holder("bank", 1))],
                vec![]
            )),
            Err(StoreError::Duplicate {
                kind: RecordKind::Holder,
                id: "bank".into()
            })
        );
        let mut changed = holder("bank", 2);
        changed.policy.unattended_daily_limit = 9;
        s.commit(commit(vec![Change::UpdateHolder(changed.clone())], vec![]))
            .unwrap();
        assert_eq!(s.holder(&id("bank")).unwrap(), Some(changed.clone()));
        // A stale update (version not one more than stored) is a conflict; nothing changes.
        assert_eq!(
            s.commit(commit(
                vec![Change::UpdateHolder(holder("bank", 2))],
                vec![]
            )),
            Err(StoreError::Conflict)
        );
        assert_eq!(s.holder(&id("bank")).unwrap(), Some(changed));
        assert_eq!(
            s.commit(commit(
                vec![Change::UpdateHolder(holder("nobody", 2))],
                vec![]
            )),
            Err(StoreError::Missing {
                kind: RecordKind::Holder,
                id: "nobody".into()
            })
        );

        s.commit(commit(
            vec![Change::InsertPlatform(platform("chat"))],
            vec![],
        ))
        .unwrap();
        assert_eq!(s.platform(&id("chat")).unwrap(), Some(platform("chat")));
        assert_eq!(s.platform(&id("other")).unwrap(), None);
        assert_eq!(
            s.commit(commit(
                vec![Change::InsertPlatform(platform("chat"))],
                vec![]
            )),
            Err(StoreError::Duplicate {
                kind: RecordKind::Platform,
                id: "chat".into()
            })
        );
    }

    pub fn consents<H: Harness>() {
        let h = H::new();
        let s = h.store();
        let first = consent("cns_1", "alice");
        let second = consent("cns_2", "alice");
        let bobs = consent("cns_3", "bob");
        s.commit(commit(
            vec![
                Change::InsertConsent(first.clone()),
                Change::InsertConsent(second.clone()),
                Change::InsertConsent(bobs.clone()),
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
            s.commit(commit(vec![Change::InsertConsent(first.clone())], vec![])),
            Err(StoreError::Duplicate {
                kind: RecordKind::Consent,
                id: "cns_1".into()
            })
        );

        let updated = next_version(&first);
        s.commit(commit(vec![Change::UpdateConsent(updated.clone())], vec![]))
            .unwrap();
        assert_eq!(s.consent(&id("cns_1")).unwrap(), Some(updated.clone()));
        // The same version again is stale.
        assert_eq!(
            s.commit(commit(vec![Change::UpdateConsent(updated.clone())], vec![])),
            Err(StoreError::Conflict)
        );
        assert_eq!(
            s.commit(commit(
                vec![Change::UpdateConsent(consent("cns_404", "x"))],
                vec![]
            )),
            Err(StoreError::Missing {
                kind: RecordKind::Consent,
                id: "cns_404".into()
            })
        );
        assert_eq!(s.consents_of_subject(&id("alice")).unwrap()[0], updated);
    }

    pub fn usage_attestations_and_keys<H: Harness>() {
        let h = H::new();
        let s = h.store();
        let c: ConsentId = id("cns_1");
        s.commit(commit(
            vec![Change::InsertConsent(consent("cns_1", "alice"))],
            vec![],
        ))
        .unwrap();
        assert_eq!(s.usage(&c, DAY).unwrap(), Usage::default());
        for _ in 0..3 {
            s.commit(commit(
                vec![Change::CountUnattendedAccess {
                    consent: c.clone(),
                    day: DAY,
                }],
                vec![],
            ))
            .unwrap();
        }
        let next_day = DAY.next_day().unwrap();
        s.commit(commit(
            vec![Change::CountUnattendedAccess {
                consent: c.clone(),
                day: next_day,
            }],
            vec![],
        ))
        .unwrap();
        assert_eq!(s.usage(&c, DAY).unwrap().unattended_today, 3);
        assert_eq!(s.usage(&c, next_day).unwrap().unattended_today, 1);
        assert_eq!(s.usage(&id("cns_2"), DAY).unwrap().unattended_today, 0);

        assert!(!s.attestation_used("jti-1").unwrap());
        s.commit(commit(vec![Change::UseAttestation("jti-1".into())], vec![]))
            .unwrap();
        assert!(s.attestation_used("jti-1").unwrap());
        assert_eq!(
            s.commit(commit(vec![Change::UseAttestation("jti-1".into())], vec![])),
            Err(StoreError::Duplicate {
                kind: RecordKind::Attestation,
                id: "jti-1".into()
            })
        );

        let key = |n: u8, at: OffsetDateTime| {
            let public_key = Ed25519PublicKey::from_bytes(&[n; 32]).unwrap();
            PublishedKey {
                kid: public_key.thumbprint(),
                public_key,
                activated_at: at,
            }
        };
        let keys = vec![key(1, NOW), key(2, NOW + Duration::hours(1))];
        for k in &keys {
            s.commit(commit(vec![Change::PublishSigningKey(k.clone())], vec![]))
                .unwrap();
        }
        assert_eq!(s.signing_keys().unwrap(), keys);
        assert_eq!(
            s.commit(commit(
                vec![Change::PublishSigningKey(keys[0].clone())],
                vec![]
            )),
            Err(StoreError::Duplicate {
                kind: RecordKind::SigningKey,
                id: keys[0].kid.clone()
            })
        );
    }

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
        let receipt = s.commit(commit(vec![], vec![])).unwrap();
        assert_eq!(receipt.audit_seqs, 3..3);
        let all = s.audit_entries(0..3).unwrap();
        let expected: Vec<AuditEntry> = (0..3)
            .map(|n| AuditEntry {
                seq: n,
                record: record(n),
            })
            .collect();
        assert_eq!(all, expected, "records round-trip exactly");
        assert_eq!(s.audit_entries(1..2).unwrap(), expected[1..2].to_vec());
        assert_eq!(s.audit_entries(2..100).unwrap(), expected[2..].to_vec());
        assert_eq!(s.audit_entries(5..9).unwrap(), vec![]);
        assert_eq!(s.audit_entries(0..u64::MAX).unwrap(), expected);
        // Merkle nodes in bulk: 3 leaves, 1 complete pair, nothing above; huge ranges and
        // levels return at once.
        assert_eq!(s.merkle_nodes(0, 0..u64::MAX).unwrap().len(), 3);
        assert_eq!(s.merkle_nodes(1, 0..u64::MAX).unwrap().len(), 1);
        assert_eq!(s.merkle_nodes(2, 0..u64::MAX).unwrap(), vec![]);
        assert_eq!(s.merkle_nodes(200, 0..u64::MAX).unwrap(), vec![]);
        let leaves = s.merkle_nodes(0, 1..3).unwrap();
        assert_eq!(
            leaves.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(Some(leaves[0].1), s.merkle_node(0, 1).unwrap());
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = s.audit_entries(2..1).unwrap();
        assert_eq!(reversed, vec![]);
    }

    pub fn preconditions<H: Harness>() {
        let h = H::new();
        let s = h.store();
        let c: ConsentId = id("cns_1");
        s.commit(commit(
            vec![
                Change::InsertConsent(consent("cns_1", "alice")),
                Change::InsertHolder(holder("bank", 1)),
            ],
            vec![],
        ))
        .unwrap();
        let counted = |preconditions: Vec<Precondition>| {
            s.commit(Commit {
                preconditions,
                changes: vec![Change::CountUnattendedAccess {
                    consent: c.clone(),
                    day: DAY,
                }],
                audit: vec![record(0)],
            })
        };
        let len = s.audit_len().unwrap();
        for failing in [
            Precondition::ConsentVersion {
                consent: c.clone(),
                version: 2,
            },
            Precondition::ConsentVersion {
                consent: id("cns_9"),
                version: 1,
            },
            Precondition::HolderVersion {
                holder: id("bank"),
                version: 7,
            },
            Precondition::HolderVersion {
                holder: id("nobody"),
                version: 1,
            },
            Precondition::UsageIs {
                consent: c.clone(),
                day: DAY,
                usage: Usage {
                    unattended_today: 1,
                },
            },
        ] {
            assert_eq!(
                counted(vec![failing.clone()]),
                Err(StoreError::Conflict),
                "{failing:?}"
            );
            assert_eq!(s.usage(&c, DAY).unwrap().unattended_today, 0);
            assert_eq!(s.audit_len().unwrap(), len);
        }
        let holding = vec![
            Precondition::ConsentVersion {
                consent: c.clone(),
                version: 1,
            },
            Precondition::HolderVersion {
                holder: id("bank"),
                version: 1,
            },
            Precondition::UsageIs {
                consent: c.clone(),
                day: DAY,
                usage: Usage::default(),
            },
        ];
        counted(holding).unwrap();
        assert_eq!(s.usage(&c, DAY).unwrap().unattended_today, 1);
        assert_eq!(s.audit_len().unwrap(), len + 1);
    }

    /// A failure part-way through a commit (its last change fails) leaves no trace at all.
    pub fn atomicity<H: Harness>() {
        let h = H::new();
        let s = h.store();
        let c: ConsentId = id("cns_1");
        let original = consent("cns_1", "alice");
        s.commit(commit(
            vec![
                Change::InsertConsent(original.clone()),
                Change::InsertHolder(holder("bank", 1)),
            ],
            vec![record(0)],
        ))
        .unwrap();
        let failing_last = [
            Change::InsertHolder(holder("bank", 1)),
            Change::UseAttestation("used".into()),
            Change::UpdateConsent(consent("cns_missing", "x")),
        ];
        s.commit(commit(vec![Change::UseAttestation("used".into())], vec![]))
            .unwrap();
        let len = s.audit_len().unwrap();
        for last in failing_last {
            let result = s.commit(commit(
                vec![
                    Change::UpdateConsent(next_version(&original)),
                    Change::CountUnattendedAccess {
                        consent: c.clone(),
                        day: DAY,
                    },
                    Change::UseAttestation("fresh".into()),
                    Change::InsertPlatform(platform("chat")),
                    Change::InsertConsent(consent("cns_2", "alice")),
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
            assert_eq!(s.audit_len().unwrap(), len);
        }
        // The store is still fully usable afterwards, and the sequence continues without a gap.
        let receipt = s.commit(commit(vec![], vec![record(1)])).unwrap();
        assert_eq!(receipt.audit_seqs, len..len + 1);
    }

    /// Many threads: no lost update, exact counts, a gap-free audit sequence.
    pub fn concurrency<H: Harness>()
    where
        H::S: Sync,
    {
        const THREADS: u64 = 4;
        const OPS: u64 = 40;
        let h = H::new();
        let s = h.store();
        let c: ConsentId = id("cns_1");
        s.commit(commit(
            vec![Change::InsertConsent(consent("cns_1", "alice"))],
            vec![],
        ))
        .unwrap();
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
                            let result = s.commit(Commit {
                                preconditions: vec![Precondition::UsageIs {
                                    consent: c.clone(),
                                    day: DAY,
                                    usage,
                                }],
                                changes: vec![
                                    Change::CountUnattendedAccess {
                                        consent: c.clone(),
                                        day: DAY,
                                    },
                                    Change::UpdateConsent(next_version(&stored)),
                                ],
                                audit: vec![record(thread * OPS + op)],
                            });
                            match result {
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
        assert_eq!(s.usage(&c, DAY).unwrap().unattended_today as u64, total);
        assert_eq!(
            s.consent(&c).unwrap().unwrap().version,
            1 + total,
            "no lost update"
        );
        assert_eq!(s.audit_len().unwrap(), total);
        let seqs: Vec<u64> = s
            .audit_entries(0..total)
            .unwrap()
            .into_iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, (0..total).collect::<Vec<_>>());
        // Each record was appended exactly once.
        let mut tags: Vec<String> = s
            .audit_entries(0..total)
            .unwrap()
            .into_iter()
            .map(|e| e.record.attestation_id.unwrap())
            .collect();
        tags.sort();
        tags.dedup();
        assert_eq!(tags.len() as u64, total);
        eprintln!("{} conflicts retried", conflicts.load(Ordering::Relaxed));
    }

    /// Everything committed is there after closing and reopening.
    pub fn reopening<H: Harness>() {
        let h = H::new();
        let s = h.store();
        let c: ConsentId = id("cns_1");
        let key = {
            let public_key = Ed25519PublicKey::from_bytes(&[3; 32]).unwrap();
            PublishedKey {
                kid: public_key.thumbprint(),
                public_key,
                activated_at: NOW,
            }
        };
        let updated = next_version(&consent("cns_1", "alice"));
        s.commit(commit(
            vec![
                Change::InsertHolder(holder("bank", 1)),
                Change::InsertPlatform(platform("chat")),
                Change::InsertConsent(consent("cns_1", "alice")),
                Change::UpdateConsent(updated.clone()),
                Change::CountUnattendedAccess {
                    consent: c.clone(),
                    day: DAY,
                },
                Change::UseAttestation("jti".into()),
                Change::PublishSigningKey(key.clone()),
            ],
            vec![record(0), record(1)],
        ))
        .unwrap();
        let before = audit_len(&h);
        let h = h.reopen();
        let s = h.store();
        assert_eq!(s.holder(&id("bank")).unwrap(), Some(holder("bank", 1)));
        assert_eq!(s.platform(&id("chat")).unwrap(), Some(platform("chat")));
        assert_eq!(s.consent(&c).unwrap(), Some(updated.clone()));
        assert_eq!(s.consents_of_subject(&id("alice")).unwrap(), vec![updated]);
        assert_eq!(s.usage(&c, DAY).unwrap().unattended_today, 1);
        assert!(s.attestation_used("jti").unwrap());
        assert_eq!(s.signing_keys().unwrap(), vec![key]);
        assert_eq!(s.audit_len().unwrap(), before);
        assert_eq!(
            s.audit_entries(0..2).unwrap(),
            vec![
                AuditEntry {
                    seq: 0,
                    record: record(0)
                },
                AuditEntry {
                    seq: 1,
                    record: record(1)
                }
            ]
        );
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
        let s = h.store();
        let clock = std::sync::Arc::new(ManualClock::new(NOW));
        let broker = Broker::builder(id("broker"), s)
            .clock(clock)
            .build()
            .unwrap();
        let rng = ring::rand::SystemRandom::new();
        let signer =
            AttestationSigner::new(id("bank"), SigningKey::generate(&rng).unwrap()).unwrap();
        broker
            .register_holder(HolderRegistration {
                id: id("bank"),
                policy: HolderPolicy::default(),
                attestation_keys: vec![signer.public_key()],
            })
            .unwrap();
        broker
            .register_platform(PlatformProfile {
                id: id("chat"),
                registered_purposes: PurposeSet::from(Purpose::ALL),
            })
            .unwrap();
        let request = broker
            .request_consent(ConsentRequestDraft {
                subject: id("alice"),
                platform: id("chat"),
                holder: id("bank"),
                scopes: vec![Scope::Balance.into()],
                purposes: vec![Purpose::CustomerService.into()],
                accounts: AccountSelection::Listed(AccountSet::from([id("acc-1")])),
                duration: Duration::days(30),
            })
            .unwrap();
        let statement = ApprovalStatement {
            consent: request.id.clone(),
            subject: id("alice"),
            scopes: request.scopes,
            purposes: request.purposes,
            accounts: AccountSet::from([id("acc-1")]),
            consent_expires_at: NOW + Duration::days(30),
        };
        let token = signer.sign(&statement, broker.id(), NOW, &rng).unwrap();
        broker.approve(&request.id, &token).unwrap();
        assert_eq!(
            broker.approve(&request.id, &token).map(|_| ()),
            Err(Error::Consent(ConsentError::AlreadyDecided {
                consent: request.id.clone(),
                status: ConsentStatus::Authorised,
            }))
        );
        let access = AccessRequest {
            consent: request.id.clone(),
            platform: id("chat"),
            scope: Scope::Balance.into(),
            purpose: Purpose::CustomerService.into(),
            account: id("acc-1"),
            presence: Presence::Unattended,
        };
        let decisions: Vec<bool> = (0..5)
            .map(|_| {
                broker
                    .authorise_access(&access)
                    .unwrap()
                    .decision()
                    .is_permit()
            })
            .collect();
        assert_eq!(decisions, vec![true, true, true, true, false]);
        assert_eq!(
            s.usage(&request.id, NOW.date()).unwrap().unattended_today,
            4
        );
        broker
            .revoke(
                &request.id,
                Revoker::Subject,
                RevocationReason::SubjectWithdrew,
            )
            .unwrap();
        assert_eq!(
            broker.authorise_access(&access).unwrap().decision(),
            Decision::Deny {
                reasons: vec![
                    DenyReason::Revoked {
                        by: Revoker::Subject
                    },
                    DenyReason::FrequencyExceeded { limit: 4 },
                ]
            }
        );
        let kinds: Vec<AuditKind> = broker
            .audit_log()
            .unwrap()
            .into_iter()
            .map(|e| e.record.kind)
            .collect();
        assert_eq!(kinds.len(), 13);
        assert_eq!(kinds[0], AuditKind::SigningKeyActivated);
        assert_eq!(s.signing_keys().unwrap().len(), 1);
    }
}

/// `conformance!(module, Harness, [durable?], attribute)`: the suite for one store. The
/// attribute goes on every test (`cfg(all())` for none; `ignore = "…"` for a store that needs a
/// server).
macro_rules! conformance {
    ($name:ident, $harness:ty, [$($durable:ident)?], $attr:meta) => {
        mod $name {
            use super::*;
            conformance!(@tests $harness, $attr, holders_and_platforms, consents,
                usage_attestations_and_keys, audit_log, preconditions, atomicity, concurrency,
                broker_story);
            $(conformance!(@$durable $harness, $attr);)?
        }
    };
    (@tests $harness:ty, $attr:meta, $($test:ident),+) => {
        $(
            #[test]
            #[$attr]
            fn $test() {
                suite::$test::<$harness>();
            }
        )+
    };
    (@durable $harness:ty, $attr:meta) => {
        #[test]
        #[$attr]
        fn reopening() {
            suite::reopening::<$harness>();
        }
    };
}

conformance!(memory, MemoryHarness, [], cfg(all()));
conformance!(sqlite, SqliteHarness, [durable], cfg(all()));
// Needs a server: `scripts/with-postgres cargo test --features postgres -- --include-ignored`
// (`.ci/run` does this). Without the feature, the placeholder below reports them as not run.
#[cfg(feature = "postgres")]
conformance!(
    postgres,
    PostgresHarness,
    [durable],
    ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"
);

#[cfg(not(feature = "postgres"))]
#[test]
#[ignore = "the PostgreSQL conformance suite did not run: it needs `--features postgres` and a \
            server (scripts/with-postgres); .ci/run runs it"]
fn postgres_conformance_did_not_run() {}
