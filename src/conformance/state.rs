//! The state a store keeps: holders, platforms, consents, usage, used attestations, keys.

use super::*;

/// Holders and platforms: insert, read back, duplicates, versioned updates, missing ones.
pub fn holders_and_platforms<H: Harness>() {
    let h = fresh::<H>();
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
    let h = fresh::<H>();
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
    let h = fresh::<H>();
    let s = h.store();
    let c = insert_consent(s, "cns_1", "alice");
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
    let h = fresh::<H>();
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
    // The active key itself, published again: a duplicate (not another broker's activation).
    assert_eq!(
        s.commit(commit(
            vec![Change::ActivateKey { key: first.clone() }],
            vec![]
        )),
        Err(StoreError::Duplicate {
            kind: RecordKind::Key,
            id: first.kid.clone()
        })
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
