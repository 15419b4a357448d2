//! A bank's ledger: attestations, policy history, served counts, presented ids, the feed.

use super::privacy::key_record;
use super::*;
use crate::hpke::DeviceSecretKey;
use crate::store::{
    AttestationRecord, BankRevocation, DeviceKeyRecord, FeedState, GateQuery, GateView, LedgerRead,
    PolicyRecord, SeenKind, ServedCounts,
};

pub(super) fn attestation(id: &str, consent: &str, subject: &str) -> AttestationRecord {
    AttestationRecord {
        id: id.to_owned(),
        consent: super::id(consent),
        subject: super::id(subject),
        platform: super::id("chat"),
        broker: super::id("broker"),
        scopes: ScopeSet::from([Scope::Balance]),
        purposes: PurposeSet::from([Purpose::CustomerService]),
        accounts: AccountSet::from([super::id("acc-1")]),
        unattended_daily_limit: 4,
        signed_at: NOW,
        expires_at: NOW + Duration::days(90),
        revoked: None,
        superseded_by: None,
        devices: vec!["device-1".into()],
        plaintext: crate::PlaintextUses::new(),
        pairwise: None,
        version: 1,
    }
}

fn policy(version: u64) -> PolicyRecord {
    PolicyRecord {
        version,
        policy: HolderPolicy {
            unattended_daily_limit: u32::try_from(version).unwrap(),
            ..HolderPolicy::default()
        },
        effective_at: NOW + Duration::minutes(i64::try_from(version).unwrap()),
    }
}

/// The gate's view of an access under `attestation` and `consent` on `day`, with proof `p-1` and
/// token `t-1`, each signed for a minute past `NOW`.
fn view<S: LedgerRead + ?Sized>(s: &S, attestation: &str, consent: &str, day: Date) -> GateView {
    s.gate_view(&GateQuery {
        attestation,
        consent: &id(consent),
        day,
        proof_id: "p-1",
        proof_at: NOW + Duration::minutes(1),
        token_id: "t-1",
        token_at: NOW + Duration::minutes(1),
    })
    .unwrap()
}

fn only(change: Change) -> Commit {
    commit(vec![change], vec![])
}

/// Attestations: insert, duplicate, versioned update, lookups by subject and consent in order.
pub fn ledger_attestations<H: Harness>()
where
    H::Store: LedgerRead,
{
    let h = fresh::<H>();
    let s = h.store();
    let first = attestation("att-1", "cns_1", "alice");
    let bobs = attestation("att-2", "cns_2", "bob");
    let renewed = attestation("att-3", "cns_1", "alice");
    for record in [&first, &bobs, &renewed] {
        s.commit(only(Change::RecordAttestation {
            record: record.clone(),
        }))
        .unwrap();
    }
    assert_eq!(s.attestation_record("att-1").unwrap(), Some(first.clone()));
    assert_eq!(s.attestation_record("att-9").unwrap(), None);
    assert_eq!(
        s.commit(only(Change::RecordAttestation {
            record: first.clone()
        })),
        Err(StoreError::Duplicate {
            kind: RecordKind::AttestationRecord,
            id: "att-1".into(),
        })
    );
    assert_eq!(
        s.attestations_of_subject(&id("alice")).unwrap(),
        [first.clone(), renewed.clone()]
    );
    assert_eq!(
        s.attestations_of_consent(&id("cns_1")).unwrap(),
        [first.clone(), renewed.clone()]
    );
    assert_eq!(s.attestations_of_consent(&id("cns_2")).unwrap(), [bobs]);
    let revoked = AttestationRecord {
        revoked: Some(BankRevocation {
            by: Revoker::Subject,
            reason: RevocationReason::SubjectWithdrew,
            at: NOW + Duration::days(1),
        }),
        version: 2,
        ..first.clone()
    };
    let stale =
        commit(vec![], vec![record(0)]).precondition(Precondition::attestation_version("att-1", 2));
    assert_eq!(s.commit(stale), Err(StoreError::Conflict));
    s.commit(
        only(Change::UpdateAttestation {
            record: revoked.clone(),
        })
        .precondition(Precondition::attestation_version("att-1", 1)),
    )
    .unwrap();
    assert_eq!(
        s.attestation_record("att-1").unwrap(),
        Some(revoked.clone())
    );
    // The same version again, or a record that is not there.
    assert_eq!(
        s.commit(only(Change::UpdateAttestation { record: revoked })),
        Err(StoreError::Conflict)
    );
    assert_eq!(
        s.commit(only(Change::UpdateAttestation {
            record: AttestationRecord {
                version: 2,
                ..attestation("att-9", "cns_9", "carol")
            }
        })),
        Err(StoreError::Missing {
            kind: RecordKind::AttestationRecord,
            id: "att-9".into(),
        })
    );
}

/// The policy history: versions in order, a version once, the latest as a precondition.
pub fn ledger_policies<H: Harness>()
where
    H::Store: LedgerRead,
{
    let h = fresh::<H>();
    let s = h.store();
    let guarded = |version| {
        commit(vec![], vec![record(0)]).precondition(Precondition::BankPolicyVersion { version })
    };
    s.commit(guarded(None)).unwrap();
    assert_eq!(s.commit(guarded(Some(1))), Err(StoreError::Conflict));
    for version in [1, 2] {
        s.commit(only(Change::AppendBankPolicy {
            record: policy(version),
        }))
        .unwrap();
    }
    assert_eq!(
        s.commit(only(Change::AppendBankPolicy { record: policy(2) })),
        Err(StoreError::Duplicate {
            kind: RecordKind::BankPolicy,
            id: "2".into(),
        })
    );
    assert_eq!(s.bank_policies().unwrap(), [policy(1), policy(2)]);
    s.commit(guarded(Some(2))).unwrap();
    assert_eq!(s.commit(guarded(Some(1))), Err(StoreError::Conflict));
    assert_eq!(s.commit(guarded(None)), Err(StoreError::Conflict));
    let current = view(s, "att-1", "cns_1", DAY);
    assert_eq!(current.policy, Some(policy(2)));
    // Versions appended out of order (the crate appends latest + 1; a store must not depend on
    // it): the highest is current, in the view and for the precondition, and the history is in
    // version order. A commit that fails after its append leaves the order as it was.
    s.commit(only(Change::AppendBankPolicy { record: policy(5) }))
        .unwrap();
    s.commit(only(Change::AppendBankPolicy { record: policy(4) }))
        .unwrap();
    assert_eq!(
        s.commit(commit(
            vec![
                Change::AppendBankPolicy { record: policy(3) },
                Change::AppendBankPolicy { record: policy(4) },
            ],
            vec![]
        )),
        Err(StoreError::Duplicate {
            kind: RecordKind::BankPolicy,
            id: "4".into(),
        })
    );
    assert_eq!(
        s.bank_policies().unwrap(),
        [policy(1), policy(2), policy(4), policy(5)]
    );
    assert_eq!(s.commit(guarded(Some(4))), Err(StoreError::Conflict));
    s.commit(guarded(Some(5))).unwrap();
    assert_eq!(view(s, "att-1", "cns_1", DAY).policy, Some(policy(5)));
}

/// Served counts per attestation and UTC day, by presence, and their precondition.
pub fn ledger_served_counts<H: Harness>()
where
    H::Store: LedgerRead,
{
    let h = fresh::<H>();
    let s = h.store();
    let count = |day, presence| {
        only(Change::CountServed {
            attestation: "att-1".into(),
            day,
            presence,
        })
    };
    let served = |day| view(s, "att-1", "cns_1", day).served;
    assert_eq!(served(DAY), ServedCounts::default());
    s.commit(count(DAY, Presence::Unattended)).unwrap();
    s.commit(count(DAY, Presence::Unattended)).unwrap();
    s.commit(count(DAY, Presence::SubjectPresent)).unwrap();
    s.commit(count(DAY.next_day().unwrap(), Presence::SubjectPresent))
        .unwrap();
    let expected = ServedCounts {
        unattended: 2,
        present: 1,
    };
    assert_eq!(served(DAY), expected);
    assert_eq!(
        served(DAY.next_day().unwrap()),
        ServedCounts {
            unattended: 0,
            present: 1
        }
    );
    assert_eq!(
        view(s, "att-2", "cns_1", DAY).served,
        ServedCounts::default()
    );
    let guarded = |counts| {
        count(DAY, Presence::Unattended).precondition(Precondition::served_is("att-1", DAY, counts))
    };
    assert_eq!(
        s.commit(guarded(ServedCounts::default())),
        Err(StoreError::Conflict)
    );
    assert_eq!(served(DAY), expected, "a failed commit counts nothing");
    s.commit(guarded(expected)).unwrap();
    assert_eq!(served(DAY).unattended, 3);
    // Below a limit: the count of that presence only, strictly below.
    let below = |presence, limit| {
        count(DAY, presence).precondition(Precondition::served_below("att-1", DAY, presence, limit))
    };
    assert_eq!(
        s.commit(below(Presence::Unattended, 3)),
        Err(StoreError::Conflict),
        "three unattended served: not below three"
    );
    assert_eq!(served(DAY).unattended, 3, "a failed commit counts nothing");
    s.commit(below(Presence::Unattended, 4)).unwrap();
    assert_eq!(served(DAY).unattended, 4);
    // One present access served: below two, not below one.
    assert_eq!(
        s.commit(below(Presence::SubjectPresent, 1)),
        Err(StoreError::Conflict)
    );
    s.commit(below(Presence::SubjectPresent, 2)).unwrap();
    assert_eq!(served(DAY).present, 2);
}

/// Presented ids: remembered by kind, signed time and id; a second presentation of the same is a
/// duplicate; pruning forgets, per kind, at most its limit of the ids signed before its cut, the
/// oldest first.
pub fn ledger_seen_ids<H: Harness>()
where
    H::Store: LedgerRead,
{
    let h = fresh::<H>();
    let s = h.store();
    let at = |minutes: i64| NOW + Duration::minutes(minutes);
    let remember = |kind, id: &str, minutes: i64| {
        only(Change::RememberSeen {
            kind,
            id: id.to_owned(),
            at: at(minutes),
        })
    };
    let seen = |kind, id: &str, minutes: i64| s.seen(kind, id, at(minutes)).unwrap();
    s.commit(remember(SeenKind::Proof, "p-1", 1)).unwrap();
    s.commit(remember(SeenKind::Proof, "p-2", 2)).unwrap();
    s.commit(remember(SeenKind::Proof, "p-3", 10)).unwrap();
    s.commit(remember(SeenKind::Token, "p-1", 1)).unwrap();
    assert_eq!(
        s.commit(remember(SeenKind::Proof, "p-1", 1)),
        Err(StoreError::Duplicate {
            kind: RecordKind::Presented(SeenKind::Proof),
            id: "p-1".into(),
        })
    );
    assert!(seen(SeenKind::Proof, "p-1", 1));
    assert!(!seen(SeenKind::Proof, "p-1", 3), "another signed time");
    assert!(!seen(SeenKind::Proof, "p-4", 1));
    // The same id signed for another time is another presentation (only the signer can make
    // it): remembered beside the first.
    s.commit(remember(SeenKind::Proof, "p-1", 5)).unwrap();
    assert!(seen(SeenKind::Proof, "p-1", 5) && seen(SeenKind::Proof, "p-1", 1));
    // The gate reads both at once: proof `p-1` at one minute seen, token `t-1` not.
    let both = view(s, "att-1", "cns_1", DAY);
    assert!(both.proof_seen && !both.token_seen);
    let prune = |kind, limit| {
        only(Change::PruneSeen {
            kind,
            before: at(5),
            limit,
        })
    };
    // Two proofs signed before the cut, two not: at most one goes, the oldest; tokens stay.
    s.commit(prune(SeenKind::Proof, 1)).unwrap();
    assert!(!seen(SeenKind::Proof, "p-1", 1));
    assert!(
        seen(SeenKind::Proof, "p-2", 2),
        "beyond the limit: kept for now"
    );
    assert!(seen(SeenKind::Token, "p-1", 1), "another kind: kept");
    s.commit(prune(SeenKind::Proof, 10)).unwrap();
    assert!(!seen(SeenKind::Proof, "p-2", 2));
    assert!(seen(SeenKind::Proof, "p-1", 5), "signed at the cut: kept");
    assert!(
        seen(SeenKind::Proof, "p-3", 10),
        "signed after the cut: kept"
    );
    assert!(seen(SeenKind::Token, "p-1", 1));
    // A cut past every proof forgets them all, and no token with them.
    s.commit(only(Change::PruneSeen {
        kind: SeenKind::Proof,
        before: at(60),
        limit: 10,
    }))
    .unwrap();
    assert!(!seen(SeenKind::Proof, "p-3", 10));
    assert!(seen(SeenKind::Token, "p-1", 1), "another kind: kept");
    s.commit(prune(SeenKind::Token, 10)).unwrap();
    assert!(!seen(SeenKind::Token, "p-1", 1));
    // Forgotten, an id can be remembered again.
    s.commit(remember(SeenKind::Proof, "p-1", 1)).unwrap();
    // Changes apply in order: an id a commit's own prune forgets, it may remember again.
    let len = s.audit_len().unwrap();
    s.commit(commit(
        vec![
            Change::PruneSeen {
                kind: SeenKind::Proof,
                before: at(5),
                limit: 10,
            },
            Change::RememberSeen {
                kind: SeenKind::Proof,
                id: "p-1".into(),
                at: at(1),
            },
        ],
        vec![],
    ))
    .unwrap();
    assert_eq!(s.audit_len().unwrap(), len + 1);
    assert!(seen(SeenKind::Proof, "p-1", 1));
    // One id remembered twice in one commit: the commit is a duplicate, and none of it stays.
    let twice = |id: &str| Change::RememberSeen {
        kind: SeenKind::Token,
        id: id.into(),
        at: at(30),
    };
    assert_eq!(
        s.commit(commit(vec![twice("t-7"), twice("t-7")], vec![])),
        Err(StoreError::Duplicate {
            kind: RecordKind::Presented(SeenKind::Token),
            id: "t-7".into(),
        })
    );
    assert!(!seen(SeenKind::Token, "t-7", 30));
    assert_eq!(s.audit_len().unwrap(), len + 1);
}

/// Platform-side revocations and the feed's state, in the gate's view; a ledger change rolled
/// back with the rest of a failed commit.
pub fn ledger_feed_and_view<H: Harness>()
where
    H::Store: LedgerRead,
{
    let h = fresh::<H>();
    let s = h.store();
    assert_eq!(view(s, "att-1", "cns_1", DAY), GateView::default());
    let first = NOW + Duration::hours(1);
    for at in [first, first + Duration::hours(1)] {
        s.commit(only(Change::RecordPlatformRevocation {
            consent: id("cns_1"),
            revoked_at: at,
        }))
        .unwrap();
    }
    for (position, root) in [(7, Some([7; 32])), (9, None), (11, Some([11; 32]))] {
        s.commit(only(Change::SetFeedState {
            state: FeedState {
                position,
                generated_at: NOW + Duration::minutes(i64::try_from(position).unwrap()),
                root,
            },
        }))
        .unwrap();
        // The state as written, root and all (or none), for the gate and for the feed.
        let state = s.feed_state().unwrap().unwrap();
        assert_eq!((state.position, state.root), (position, root));
    }
    let kept = attestation("att-1", "cns_1", "alice");
    s.commit(only(Change::RecordAttestation {
        record: kept.clone(),
    }))
    .unwrap();
    let current = view(s, "att-1", "cns_1", DAY);
    assert_eq!(current.attestation, Some(kept));
    assert_eq!(
        current.platform_revoked_at,
        Some(first),
        "the first record stays"
    );
    assert_eq!(
        current.feed,
        Some(FeedState {
            position: 11,
            generated_at: NOW + Duration::minutes(11),
            root: Some([11; 32]),
        })
    );
    assert_eq!(view(s, "att-1", "cns_2", DAY).platform_revoked_at, None);
    // The same time read alone (the subject's view).
    assert_eq!(s.platform_revocation(&id("cns_1")).unwrap(), Some(first));
    assert_eq!(s.platform_revocation(&id("cns_2")).unwrap(), None);
    // All or nothing: the attestation, the count and the id go with the duplicate that fails.
    let len = s.audit_len().unwrap();
    let failing = commit(
        vec![
            Change::RecordAttestation {
                record: attestation("att-2", "cns_2", "bob"),
            },
            Change::CountServed {
                attestation: "att-2".into(),
                day: DAY,
                presence: Presence::Unattended,
            },
            Change::RememberSeen {
                kind: SeenKind::Proof,
                id: "p-9".into(),
                at: NOW,
            },
            Change::RecordAttestation {
                record: attestation("att-1", "cns_1", "alice"),
            },
        ],
        vec![record(1)],
    );
    assert!(matches!(
        s.commit(failing),
        Err(StoreError::Duplicate { .. })
    ));
    assert_eq!(s.attestation_record("att-2").unwrap(), None);
    assert_eq!(
        view(s, "att-2", "cns_2", DAY).served,
        ServedCounts::default()
    );
    assert!(!s.seen(SeenKind::Proof, "p-9", NOW).unwrap());
    assert_eq!(s.audit_len().unwrap(), len);
}

pub(super) fn device(subject: &str, seed: &[u8], at: OffsetDateTime) -> DeviceKeyRecord {
    DeviceKeyRecord {
        subject: id(subject),
        key: DeviceSecretKey::derive(seed).public_key(),
        registered_at: at,
        revoked_at: None,
    }
}

/// Device keys: registered once (by key, across subjects), listed per subject in order,
/// revoked once and only by their subject; the live keys as a precondition; a registration
/// rolled back with the rest of a failed commit.
pub fn ledger_device_keys<H: Harness>()
where
    H::Store: LedgerRead,
{
    let h = fresh::<H>();
    let s = h.store();
    assert_eq!(s.device_keys(&id("alice")).unwrap(), []);
    let phone = device("alice", b"phone", NOW);
    let tablet = device("alice", b"tablet", NOW + Duration::minutes(1));
    let bobs = device("bob", b"bob's phone", NOW);
    for record in [&phone, &bobs, &tablet] {
        s.commit(only(Change::RegisterDeviceKey {
            record: record.clone(),
        }))
        .unwrap();
    }
    assert_eq!(
        s.device_keys(&id("alice")).unwrap(),
        [phone.clone(), tablet.clone()]
    );
    assert_eq!(
        s.device_keys(&id("bob")).unwrap(),
        std::slice::from_ref(&bobs)
    );
    // The gate's view carries the keys of the attestation's subject, and its subject key once
    // it has one: Alice's, never Bob's.
    s.commit(only(Change::RecordAttestation {
        record: attestation("att-1", "cns_1", "alice"),
    }))
    .unwrap();
    let alices = view(s, "att-1", "cns_1", DAY);
    assert_eq!(alices.device_keys, [phone.clone(), tablet.clone()]);
    assert_eq!(alices.subject_key, None);
    let key = key_record("alice", 1);
    s.commit(only(Change::InsertSubjectKey {
        record: key_record("bob", 2),
    }))
    .unwrap();
    assert_eq!(view(s, "att-1", "cns_1", DAY).subject_key, None);
    s.commit(only(Change::InsertSubjectKey {
        record: key.clone(),
    }))
    .unwrap();
    assert_eq!(view(s, "att-1", "cns_1", DAY).subject_key, Some(key.key));
    assert_eq!(view(s, "att-9", "cns_1", DAY), GateView::default());
    // One key, one registration: not again, and not for another subject.
    for again in [
        phone.clone(),
        DeviceKeyRecord {
            subject: id("mallory"),
            ..phone.clone()
        },
    ] {
        assert_eq!(
            s.commit(only(Change::RegisterDeviceKey { record: again })),
            Err(StoreError::Duplicate {
                kind: RecordKind::DeviceKey,
                id: phone.key.thumbprint(),
            })
        );
    }
    assert_eq!(s.device_keys(&id("mallory")).unwrap(), []);
    let live = |keys: &[&DeviceKeyRecord]| Precondition::LiveDeviceKeys {
        subject: id("alice"),
        thumbprints: keys.iter().map(|k| k.key.thumbprint()).collect(),
    };
    let probe = |precondition| commit(vec![], vec![record(0)]).precondition(precondition);
    assert_eq!(
        s.commit(probe(live(&[&tablet, &phone]))),
        Err(StoreError::Conflict),
        "in the order registered"
    );
    s.commit(probe(live(&[&phone, &tablet]))).unwrap();
    // Bob cannot revoke Alice's phone; Alice can, once.
    let revoke = |subject: &str, key: &DeviceKeyRecord| {
        only(Change::RevokeDeviceKey {
            subject: id(subject),
            thumbprint: key.key.thumbprint(),
            at: NOW + Duration::hours(1),
        })
    };
    let missing = Err(StoreError::Missing {
        kind: RecordKind::DeviceKey,
        id: phone.key.thumbprint(),
    });
    assert_eq!(s.commit(revoke("bob", &phone)), missing);
    s.commit(revoke("alice", &phone)).unwrap();
    assert_eq!(s.commit(revoke("alice", &phone)), missing);
    let revoked = DeviceKeyRecord {
        revoked_at: Some(NOW + Duration::hours(1)),
        ..phone.clone()
    };
    assert_eq!(
        s.device_keys(&id("alice")).unwrap(),
        [revoked.clone(), tablet.clone()]
    );
    assert_eq!(
        view(s, "att-1", "cns_1", DAY).device_keys,
        [revoked, tablet.clone()],
        "the view shows a revoked key as revoked"
    );
    assert_eq!(
        s.commit(probe(live(&[&phone, &tablet]))),
        Err(StoreError::Conflict),
        "a revoked key is not live"
    );
    s.commit(probe(live(&[&tablet]))).unwrap();
    assert_eq!(
        s.commit(probe(Precondition::LiveDeviceKeys {
            subject: id("carol"),
            thumbprints: Vec::new(),
        }))
        .map(|_| ()),
        Ok(())
    );
    // All or nothing: a registration and a revocation go with the duplicate that fails.
    let len = s.audit_len().unwrap();
    let failing = commit(
        vec![
            Change::RegisterDeviceKey {
                record: device("alice", b"laptop", NOW),
            },
            Change::RevokeDeviceKey {
                subject: id("alice"),
                thumbprint: tablet.key.thumbprint(),
                at: NOW,
            },
            Change::RegisterDeviceKey {
                record: bobs.clone(),
            },
        ],
        vec![record(1)],
    );
    assert!(matches!(
        s.commit(failing),
        Err(StoreError::Duplicate {
            kind: RecordKind::DeviceKey,
            ..
        })
    ));
    assert_eq!(s.audit_len().unwrap(), len);
    assert_eq!(
        s.device_keys(&id("alice")).unwrap().last(),
        Some(&tablet),
        "nothing of the failed commit stays"
    );
    assert_eq!(s.device_keys(&id("alice")).unwrap().len(), 2);
}
