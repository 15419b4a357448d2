//! Commits as a whole: preconditions, all or nothing, concurrency, reopening, the broker.

use super::*;

/// Every precondition, failing and holding.
pub fn preconditions<H: Harness>() {
    let h = fresh::<H>();
    let s = h.store();
    let c: ConsentId = id("cns_1");
    let (retired, active) = (
        published(KeyUse::Token, 1, NOW),
        published(KeyUse::Token, 2, NOW),
    );
    s.commit(commit(
        vec![
            Change::InsertConsent {
                consent: consent("cns_1", "alice"),
            },
            Change::InsertHolder {
                holder: holder("bank", 1),
            },
            Change::ActivateKey {
                key: retired.clone(),
            },
            Change::RetireKey {
                key_use: KeyUse::Token,
                kid: retired.kid.clone(),
                retired_at: NOW,
                verifies_until: Some(NOW + Duration::minutes(10)),
            },
            Change::ActivateKey {
                key: active.clone(),
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
        Precondition::key_active(KeyUse::Token, &retired.kid),
        Precondition::key_active(KeyUse::Checkpoint, &active.kid),
        Precondition::key_active(KeyUse::Token, "no-such-key"),
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
        Precondition::key_active(KeyUse::Token, &active.kid),
    ])
    .unwrap();
    assert_eq!(s.usage(&c, DAY).unwrap().unattended_today, 1);
    assert_eq!(s.audit_len().unwrap(), len + 1);
}

/// A failure part-way through a commit (its last change fails) leaves no trace at all.
pub fn atomicity<H: Harness>() {
    let h = fresh::<H>();
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
    let h = fresh::<H>();
    let s = h.store();
    let c = insert_consent(s, "cns_1", "alice");
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
    let h = fresh::<H>();
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
    s.record_checkpoint(&SignedCheckpoint::new(checkpoint.clone()))
        .unwrap();
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
    let h = fresh::<H>();
    let t = crate::testing::TestBroker::on(h.store());
    let request = t.request();
    let consent = t.bank.approve_all(&t.broker, &request).unwrap();
    // The grant keeps the pseudonyms its decisions write, made under the subject's stored key,
    // and the store gives them back exactly.
    let stored = h.store().consent(consent.id()).unwrap().unwrap();
    assert_eq!(stored, consent);
    let subject = &consent.request.subject;
    let key = h.store().subject_key(subject).unwrap().unwrap();
    let grant = stored.grant().unwrap();
    assert_eq!(
        grant.pseudonyms,
        Some(key.grant_pseudonyms(subject, &grant.accounts))
    );
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
