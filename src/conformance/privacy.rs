//! Subjects' keys, erasure, retention and pairwise links: what the privacy of the log rests on.

use time::Duration;

use super::{Harness, NOW, commit, consent, fresh, id, next_version, record};
use crate::consent::{Consent, ConsentState};
use crate::ids::{ConsentId, SubjectId};
use crate::privacy::{SubjectKey, SubjectKeyRecord};
use crate::store::{
    AttestationRecord, Change, LedgerRead, LogRead, Precondition, RecordKind, StateRead, Store,
    StoreError, SubjectLink,
};
use crate::testing::SeededRandom;

pub(super) fn key_record(subject: &str, seed: u64) -> SubjectKeyRecord {
    SubjectKeyRecord {
        subject: id(subject),
        key: SubjectKey::generate(&SeededRandom::new(seed)).unwrap(),
        created_at: NOW,
    }
}

fn erase(subject: &str, consents: &[&str], attestations: &[&str], used: &[&str]) -> Change {
    Change::EraseSubject {
        subject: id(subject),
        consents: consents.iter().map(|c| id(c)).collect(),
        attestations: attestations.iter().map(|a| (*a).to_owned()).collect(),
        used_attestations: used.iter().map(|a| (*a).to_owned()).collect(),
    }
}

/// What a store holds about `subject` at the broker: its key, its consents, their usage today.
fn held<S: StateRead + ?Sized>(s: &S, subject: &str, consents: &[&str]) -> (bool, usize, u32) {
    let key = s.subject_key(&id(subject)).unwrap().is_some();
    let rows = s.consents_of_subject(&id(subject)).unwrap().len();
    let used: u32 = consents
        .iter()
        .map(|c| s.usage(&id(c), super::DAY).unwrap().unattended_today)
        .sum();
    (key, rows, used)
}

/// A commit whose pseudonyms were made with a subject's key lands only while that very key is
/// stored: under another key, under none, or after the subject's erasure, it is a conflict and
/// writes nothing.
pub fn subject_key_preconditions<H: Harness>() {
    let h = fresh::<H>();
    let s = h.store();
    let (alice, other) = (key_record("alice", 1), key_record("alice", 2));
    s.commit(commit(
        vec![Change::InsertSubjectKey {
            record: alice.clone(),
        }],
        vec![],
    ))
    .unwrap();
    let guarded = |subject: &str, key: &SubjectKey| {
        commit(vec![], vec![record(0)]).precondition(Precondition::SubjectKeyIs {
            subject: id(subject),
            key: Box::new(key.clone()),
        })
    };
    let len = s.audit_len().unwrap();
    for (subject, key) in [("alice", &other.key), ("bob", &alice.key)] {
        assert_eq!(
            s.commit(guarded(subject, key)),
            Err(StoreError::Conflict),
            "{subject}"
        );
        assert_eq!(s.audit_len().unwrap(), len);
    }
    s.commit(guarded("alice", &alice.key)).unwrap();
    assert_eq!(s.audit_len().unwrap(), len + 1);
    s.commit(commit(vec![erase("alice", &[], &[], &[])], vec![]))
        .unwrap();
    let len = s.audit_len().unwrap();
    assert_eq!(
        s.commit(guarded("alice", &alice.key)),
        Err(StoreError::Conflict)
    );
    assert_eq!(s.audit_len().unwrap(), len);
}

/// Subjects' keys (one per subject: a second is a conflict), and erasure: the key, the
/// subject's consents with their usage and the used-attestation ids listed, all at once, only
/// when the consents listed are exactly the subject's, and nothing of anyone else's.
pub fn subject_keys_and_erasure<H: Harness>() {
    let h = fresh::<H>();
    let s = h.store();
    let alice = key_record("alice", 1);
    assert_eq!(s.subject_key(&id("alice")).unwrap(), None);
    s.commit(commit(
        vec![
            Change::InsertSubjectKey {
                record: alice.clone(),
            },
            Change::InsertSubjectKey {
                record: key_record("bob", 2),
            },
        ],
        vec![],
    ))
    .unwrap();
    assert_eq!(
        s.subject_key(&id("alice")).unwrap(),
        Some(alice.key.clone())
    );
    // Another writer made the key first: a conflict, and the first key stays.
    assert_eq!(
        s.commit(commit(
            vec![Change::InsertSubjectKey {
                record: key_record("alice", 3),
            }],
            vec![],
        )),
        Err(StoreError::Conflict)
    );
    assert_eq!(
        s.subject_key(&id("alice")).unwrap(),
        Some(alice.key.clone())
    );

    for (name, subject) in [("cns_1", "alice"), ("cns_2", "alice"), ("cns_3", "bob")] {
        super::insert_consent(s, name, subject);
    }
    s.commit(commit(
        vec![
            Change::CountUnattendedAccess {
                consent: id("cns_1"),
                day: super::DAY,
            },
            Change::CountUnattendedAccess {
                consent: id("cns_3"),
                day: super::DAY,
            },
            Change::UseAttestation {
                attestation_id: "att-a".into(),
            },
            Change::UseAttestation {
                attestation_id: "att-b".into(),
            },
        ],
        vec![],
    ))
    .unwrap();
    let len = s.audit_len().unwrap();

    // A list that is not exactly the subject's consents (one missing: recorded since it was
    // read; one too many: another's) erases nothing.
    for wrong in [&["cns_1"][..], &["cns_1", "cns_2", "cns_3"], &[]] {
        assert_eq!(
            s.commit(commit(
                vec![erase("alice", wrong, &[], &["att-a"])],
                vec![record(0)]
            )),
            Err(StoreError::Conflict),
            "{wrong:?}"
        );
    }
    assert_eq!(held(s, "alice", &["cns_1", "cns_2"]), (true, 2, 1));
    assert_eq!(s.audit_len().unwrap(), len);

    // A failure later in the same commit erases nothing either.
    assert!(
        s.commit(commit(
            vec![
                erase("alice", &["cns_2", "cns_1"], &[], &["att-a"]),
                Change::UpdateConsent {
                    consent: consent("cns_404", "x"),
                },
            ],
            vec![record(0)],
        ))
        .is_err()
    );
    assert_eq!(held(s, "alice", &["cns_1", "cns_2"]), (true, 2, 1));
    assert!(s.attestation_used("att-a").unwrap());
    assert_eq!(s.consent(&id("cns_1")).unwrap().map(|c| c.version), Some(1));

    s.commit(commit(
        vec![erase("alice", &["cns_2", "cns_1"], &[], &["att-a"])],
        vec![record(0)],
    ))
    .unwrap();
    assert_eq!(held(s, "alice", &["cns_1", "cns_2"]), (false, 0, 0));
    assert_eq!(s.consent(&id("cns_1")).unwrap(), None);
    assert!(!s.attestation_used("att-a").unwrap());
    assert_eq!(s.audit_len().unwrap(), len + 1);
    // Bob is untouched.
    assert_eq!(held(s, "bob", &["cns_3"]), (true, 1, 1));
    assert!(s.attestation_used("att-b").unwrap());
    // Erased, the subject can come back with a new key and a new consent.
    s.commit(commit(
        vec![Change::InsertSubjectKey {
            record: key_record("alice", 4),
        }],
        vec![],
    ))
    .unwrap();
    super::insert_consent(s, "cns_4", "alice");
    assert_eq!(held(s, "alice", &["cns_4"]), (true, 1, 0));
}

/// A consent of `subject` that ended (revoked) at `at`.
fn ended(name: &str, subject: &str, at: time::OffsetDateTime) -> Consent {
    Consent {
        version: 2,
        state: ConsentState::Rejected { at },
        ..consent(name, subject)
    }
}

/// Retention: consents that ended before a time, oldest end first and at most a limit, and
/// deleting them with their usage; a consent that does not exist deletes nothing.
pub fn retention<H: Harness>() {
    let h = fresh::<H>();
    let s = h.store();
    // cns_1 ends (its approval window) at NOW + 10 min; the others end when rejected.
    super::insert_consent(s, "cns_1", "alice");
    for (name, minutes) in [("cns_2", 30), ("cns_3", 5), ("cns_4", 60)] {
        super::insert_consent(s, name, "bob");
        s.commit(commit(
            vec![Change::UpdateConsent {
                consent: ended(name, "bob", NOW + Duration::minutes(minutes)),
            }],
            vec![],
        ))
        .unwrap();
    }
    let ids = |consents: Vec<Consent>| -> Vec<ConsentId> {
        consents.iter().map(|c| c.id().clone()).collect()
    };
    let before = |minutes: i64, limit: u32| {
        ids(s
            .consents_ended_before(NOW + Duration::minutes(minutes), limit)
            .unwrap())
    };
    assert_eq!(before(5, 10), Vec::<ConsentId>::new(), "strictly before");
    assert_eq!(before(31, 10), [id("cns_3"), id("cns_1"), id("cns_2")]);
    assert_eq!(before(120, 2), [id("cns_3"), id("cns_1")]);
    // An update moves the end: cns_1 rejected later.
    s.commit(commit(
        vec![Change::UpdateConsent {
            consent: Consent {
                state: ConsentState::Rejected {
                    at: NOW + Duration::minutes(90),
                },
                ..next_version(&s.consent(&id("cns_1")).unwrap().unwrap())
            },
        }],
        vec![],
    ))
    .unwrap();
    assert_eq!(before(31, 10), [id("cns_3"), id("cns_2")]);

    s.commit(commit(
        vec![Change::CountUnattendedAccess {
            consent: id("cns_3"),
            day: super::DAY,
        }],
        vec![],
    ))
    .unwrap();
    let forget = |consents: &[&str]| Change::ForgetConsents {
        consents: consents.iter().map(|c| id(c)).collect(),
        used_attestations: vec![],
    };
    assert_eq!(
        s.commit(commit(vec![forget(&["cns_3", "cns_404"])], vec![record(0)])),
        Err(StoreError::Missing {
            kind: RecordKind::Consent,
            id: "cns_404".into()
        })
    );
    assert!(s.consent(&id("cns_3")).unwrap().is_some());
    s.commit(commit(vec![forget(&["cns_3", "cns_2"])], vec![record(0)]))
        .unwrap();
    assert_eq!(s.consent(&id("cns_3")).unwrap(), None);
    assert_eq!(
        s.usage(&id("cns_3"), super::DAY).unwrap().unattended_today,
        0
    );
    assert_eq!(
        ids(s.consents_of_subject(&id("bob")).unwrap()),
        [id("cns_4")]
    );
    assert_eq!(before(120, 10), [id("cns_4"), id("cns_1")]);
}

/// A bank's side: pairwise links (one per customer and platform, each identifier once),
/// approvals that ended, retention of approvals, and erasure of a customer (approvals with their
/// served counts, device keys, links, the key), only when the approvals listed are exactly the
/// customer's.
pub fn ledger_links_and_erasure<H: Harness>()
where
    H::Store: LedgerRead,
{
    let h = fresh::<H>();
    let s = h.store();
    let link = |pairwise: &str, customer: &str, platform: &str| SubjectLink {
        pairwise: id(pairwise),
        customer: id(customer),
        platform: id(platform),
        linked_at: NOW,
    };
    let alice_chat = link("sub_1", "alice", "chat");
    s.commit(commit(
        vec![
            Change::LinkSubject {
                link: alice_chat.clone(),
            },
            Change::LinkSubject {
                link: link("sub_2", "alice", "mail"),
            },
            Change::LinkSubject {
                link: link("sub_3", "bob", "chat"),
            },
        ],
        vec![],
    ))
    .unwrap();
    for taken in [
        link("sub_1", "carol", "chat"),
        link("sub_9", "alice", "chat"),
    ] {
        assert!(matches!(
            s.commit(commit(vec![Change::LinkSubject { link: taken }], vec![])),
            Err(StoreError::Duplicate {
                kind: RecordKind::SubjectLink,
                ..
            })
        ));
    }
    assert_eq!(
        s.subject_link(&id("sub_1")).unwrap(),
        Some(alice_chat.clone())
    );
    assert_eq!(
        s.link_of(&id("alice"), &id("chat")).unwrap(),
        Some(alice_chat)
    );
    assert_eq!(s.link_of(&id("carol"), &id("chat")).unwrap(), None);

    let approval = |name: &str, subject: &str, ends: i64| AttestationRecord {
        expires_at: NOW + Duration::minutes(ends),
        ..super::ledger::attestation(name, "cns_1", subject)
    };
    s.commit(commit(
        vec![
            Change::InsertSubjectKey {
                record: key_record("alice", 1),
            },
            Change::RecordAttestation {
                record: approval("att-1", "alice", 30),
            },
            Change::RecordAttestation {
                record: approval("att-2", "alice", 10),
            },
            Change::RecordAttestation {
                record: approval("att-3", "bob", 20),
            },
            Change::CountServed {
                attestation: "att-1".into(),
                day: super::DAY,
                presence: crate::Presence::Unattended,
            },
            Change::RegisterDeviceKey {
                record: super::ledger::device("alice", b"phone", NOW),
            },
        ],
        vec![],
    ))
    .unwrap();
    let ended = |minutes: i64| -> Vec<String> {
        s.attestations_ended_before(NOW + Duration::minutes(minutes), 10)
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect()
    };
    assert_eq!(ended(25), ["att-2", "att-3"]);

    assert_eq!(
        s.commit(commit(
            vec![erase("alice", &[], &["att-1"], &[])],
            vec![record(0)]
        )),
        Err(StoreError::Conflict)
    );
    s.commit(commit(
        vec![erase("alice", &[], &["att-2", "att-1"], &[])],
        vec![record(0)],
    ))
    .unwrap();
    let alice: SubjectId = id("alice");
    assert_eq!(s.attestations_of_subject(&alice).unwrap(), []);
    assert_eq!(s.attestation_record("att-1").unwrap(), None);
    assert_eq!(s.device_keys(&alice).unwrap(), []);
    assert_eq!(s.link_of(&alice, &id("chat")).unwrap(), None);
    assert_eq!(s.link_of(&alice, &id("mail")).unwrap(), None);
    assert_eq!(s.subject_key(&alice).unwrap(), None);
    assert_eq!(
        s.gate_view(&crate::store::GateQuery {
            attestation: "att-1",
            consent: &id("cns_1"),
            day: super::DAY,
            proof_id: "p",
            proof_at: super::NOW,
            token_id: "t",
            token_at: super::NOW,
        })
        .unwrap()
        .served,
        Default::default()
    );
    // Bob is untouched; retention deletes his ended approval.
    assert_eq!(ended(25), ["att-3"]);
    assert!(s.link_of(&id("bob"), &id("chat")).unwrap().is_some());
    assert!(matches!(
        s.commit(commit(
            vec![Change::ForgetAttestations {
                ids: vec!["att-3".into(), "att-404".into()]
            }],
            vec![record(0)]
        )),
        Err(StoreError::Missing { .. })
    ));
    assert!(s.attestation_record("att-3").unwrap().is_some());
    s.commit(commit(
        vec![Change::ForgetAttestations {
            ids: vec!["att-3".into()],
        }],
        vec![record(0)],
    ))
    .unwrap();
    assert_eq!(s.attestation_record("att-3").unwrap(), None);
    assert_eq!(ended(25), Vec::<String>::new());
}
