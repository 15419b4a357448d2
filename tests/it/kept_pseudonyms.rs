//! The pseudonyms a grant keeps: made once when the grant is approved, under the subject's key,
//! and written by every decision on it instead of being made again. Tried as the people who
//! rely on them would: the subject, who finds their entries in the log by their key (so the
//! pseudonyms written must be exactly the key's), and a platform that edits its own database
//! (an edit makes a decision use the key again, or fail closed, never write a made-up name).

use std::sync::Arc;

use crate::support::*;
use consent_broker::testing::FaultStore;
use consent_broker::*;

/// A fixture on a SQLite file of its own (the directory, kept alive, and the file's path, for
/// editing it behind the broker's back).
fn on_sqlite() -> (tempfile::TempDir, std::path::PathBuf, Fixture<SqliteStore>) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broker.sqlite");
    let fx = Fixture::with_store(SqliteStore::open(&db).unwrap());
    (dir, db, fx)
}

/// A grant of two accounts of three requested (the first and a further one, which the
/// in-memory store keeps in different places).
fn two_of_three<S: Store>(fx: &Fixture<S>) -> (ConsentRequest, [AccountId; 3]) {
    let third: AccountId = "acc-third".parse().unwrap();
    let accounts = [fx.current.clone(), fx.savings.clone(), third.clone()];
    let draft = ConsentRequestDraft {
        accounts: AccountSelection::Listed(accounts.iter().cloned().collect()),
        ..fx.draft()
    };
    let request = fx.broker.request_consent(draft).unwrap();
    let mut statement = fx.full_statement(&request);
    statement.accounts = AccountSet::from([fx.current.clone(), third]);
    fx.broker
        .approve(request.id(), &fx.attest(&statement))
        .unwrap();
    (request, accounts)
}

/// `request`'s access (the fixture's) about `account`.
fn about<S: Store>(
    fx: &Fixture<S>,
    request: &ConsentRequest,
    account: &AccountId,
) -> AccessRequest {
    AccessRequest {
        account: account.clone(),
        ..fx.access(request.id())
    }
}

/// Decides `request`'s access about `account`: whether it was permitted.
fn permitted<S: Store>(fx: &Fixture<S>, request: &ConsentRequest, account: &AccountId) -> bool {
    let access = about(fx, request, account);
    fx.broker
        .authorise_access(&access)
        .unwrap()
        .decision()
        .is_permit()
}

/// The last entry names `subject` and `account` by what the subject's stored key makes.
fn names_what_the_key_makes<S: Store>(fx: &Fixture<S>, subject: &SubjectId, account: &AccountId) {
    let entry = fx.last_audit();
    assert_eq!(entry.subject(), Some(&fx.pseudonym(subject)));
    assert_eq!(
        entry.event.account(),
        Some(&fx.account_pseudonym(subject, account))
    );
}

/// Each granted account's permit, and the denial about the account not granted, name the
/// subject and the account by the pseudonyms the subject's stored key makes.
fn decisions_name_what_the_key_makes<S: Store>(fx: &Fixture<S>) {
    let (request, [current, savings, third]) = two_of_three(fx);
    let subject = request.subject().clone();
    for account in [&current, &third] {
        assert!(permitted(fx, &request, account));
        assert_eq!(fx.last_audit().kind(), AuditKind::AccessPermitted);
        names_what_the_key_makes(fx, &subject, account);
    }
    let access = about(fx, &request, &savings);
    let outcome = fx.broker.authorise_access(&access).unwrap();
    assert!(!outcome.decision().is_permit());
    let entry = fx.last_audit();
    assert_eq!(entry.kind(), AuditKind::AccessDenied);
    names_what_the_key_makes(fx, &subject, &savings);
    assert_eq!(
        entry.reasons(),
        fx.logged_reasons(&subject, outcome.decision().reasons())
    );
}

#[test]
fn decisions_on_the_memory_store_name_what_the_subjects_key_makes() {
    decisions_name_what_the_key_makes(&Fixture::new());
}

#[test]
fn decisions_on_sqlite_name_what_the_subjects_key_makes() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("broker.sqlite")).unwrap();
    decisions_name_what_the_key_makes(&Fixture::with_store(store));
}

/// A re-authorisation that grants other accounts keeps the pseudonyms of the new ones: an
/// account newly granted is named as the key makes it, and the one no longer granted is refused
/// and named as the key makes it too.
#[test]
fn a_reauthorisation_keeps_the_pseudonyms_of_the_accounts_it_grants() {
    let (_dir, db, fx) = on_sqlite();
    let (request, [current, savings, third]) = two_of_three(&fx);
    let subject = request.subject().clone();
    fx.clock.advance(time::Duration::days(1));
    let mut statement = fx.full_statement(&request);
    statement.accounts = AccountSet::from([savings.clone(), third.clone()]);
    let renewed = fx
        .broker
        .reauthorise(request.id(), &fx.attest(&statement))
        .unwrap();
    assert_eq!(
        renewed.grant().unwrap().accounts(),
        &AccountSet::from([savings.clone(), third.clone()])
    );
    for account in [&savings, &third] {
        assert!(permitted(&fx, &request, account));
        names_what_the_key_makes(&fx, &subject, account);
    }
    assert!(!permitted(&fx, &request, &current));
    names_what_the_key_makes(&fx, &subject, &current);
    // Kept, not made again: the stored grant holds the new accounts' pseudonyms.
    let mut kept = serde_json::Value::Null;
    edit_grant(&db, request.id(), |grant| {
        kept = grant["pseudonyms"].clone()
    });
    let made = |account: &AccountId| fx.account_pseudonym(&subject, account).to_string();
    assert_eq!(
        kept["accounts"],
        serde_json::json!([made(&savings), made(&third)])
    );
    assert_eq!(
        kept["subject"],
        serde_json::json!(fx.pseudonym(&subject).to_string())
    );
}

/// Rewrites the grant's stored JSON as a platform editing its own database would.
fn edit_grant(
    db: &std::path::Path,
    consent: &ConsentId,
    edit: impl FnOnce(&mut serde_json::Value),
) {
    edit_stored_consent(db, consent, |record| edit(&mut record["state"]["grant"]));
}

/// A grant stored before grants kept pseudonyms, or whose pseudonyms do not match its accounts:
/// its decisions make them from the key, and name exactly what the key makes.
#[test]
fn a_grant_without_usable_pseudonyms_is_decided_from_the_key() {
    let (_dir, db, fx) = on_sqlite();
    let (request, [current, ..]) = two_of_three(&fx);
    let subject = request.subject().clone();
    let edits: [fn(&mut serde_json::Value); 2] = [
        |grant| {
            grant.as_object_mut().unwrap().remove("pseudonyms").unwrap();
        },
        |grant| grant["pseudonyms"]["accounts"] = serde_json::json!([]),
    ];
    for edit in edits {
        edit_grant(&db, request.id(), edit);
        assert!(permitted(&fx, &request, &current));
        names_what_the_key_makes(&fx, &subject, &current);
    }
}

/// A grant that keeps its pseudonyms, whose subject's key row the platform deleted behind the
/// broker's back (SQLite edited): the decision makes a new key and names what that key makes,
/// not the pseudonyms of the key that is gone.
#[test]
fn a_grant_whose_key_was_deleted_is_decided_under_a_new_key() {
    let (_dir, db, fx) = on_sqlite();
    let (request, [current, ..]) = two_of_three(&fx);
    let subject = request.subject().clone();
    let before = fx.pseudonym(&subject);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "DELETE FROM subject_keys WHERE subject = ?1",
            [subject.as_str()],
        )
        .unwrap();
    assert!(permitted(&fx, &request, &current));
    assert_ne!(fx.pseudonym(&subject), before, "a new key");
    names_what_the_key_makes(&fx, &subject, &current);
}

/// A kept pseudonym that is not one (edited into any other text): the consent cannot be read,
/// the decision fails with a typed error naming nobody, and nothing is permitted or logged.
#[test]
fn a_mangled_kept_pseudonym_fails_closed() {
    let (_dir, db, fx) = on_sqlite();
    let (request, [current, ..]) = two_of_three(&fx);
    let access = about(&fx, &request, &current);
    let mangled = [
        "alice",
        "ps_short",
        // 22 characters, but the last carries bits a 16-byte pseudonym never has.
        "ps_AAAAAAAAAAAAAAAAAAAAAB",
        "ps_AAAAAAAAAAAAAAAAAAAAAA=",
    ];
    for text in mangled {
        edit_grant(&db, request.id(), |grant| {
            grant["pseudonyms"]["subject"] = serde_json::json!(text)
        });
        let logged = fx.audit_len();
        match fx.broker.authorise_access(&access) {
            Err(Error::Store(StoreError::Corrupt(message))) => {
                assert!(!message.contains("alice"), "{message}");
            }
            other => panic!("{text}: expected a corrupt-store error, got {other:?}"),
        }
        assert_eq!(fx.audit_len(), logged, "{text}: nothing was logged");
    }
}

/// A decision on the in-memory store, which leaves the subject's key unread for a grant that
/// keeps its pseudonyms, racing the subject's erasure (which lands between the decision's read
/// and its commit), for a permit and for a denial (the consent revoked first): the commit is
/// refused with the consent gone, the retry finds no consent, and nothing after the erasure
/// names the erased pseudonym or an account.
fn a_decision_racing_an_erasure(revoked: bool) {
    let store = Arc::new(FaultStore::new(MemoryStore::new(), 1));
    store.whole_views(true);
    let fx = Arc::new(Fixture::with_store(Arc::clone(&store)));
    let consent = fx.granted();
    let subject = consent.subject().clone();
    let erased = fx.pseudonym(&subject);
    let access = fx.access(consent.id());
    if revoked {
        fx.withdrawn(consent.id());
    }
    let before = fx.broker.authorise_access(&access).unwrap();
    assert_eq!(before.decision().is_permit(), !revoked);
    assert_eq!(fx.last_audit().subject(), Some(&erased));
    let racer = Arc::clone(&fx);
    let who = subject.clone();
    store.before_next_read("access_view", move || {
        racer.broker.erase_subject(&who).unwrap().unwrap();
    });
    let outcome = fx.broker.authorise_access(&access).unwrap();
    assert_eq!(
        outcome.decision().reasons(),
        [DenyReason::UnknownConsent],
        "decided again after the erasure, from no consent"
    );
    let log = fx.audit();
    let erased_at = log
        .iter()
        .position(|e| e.kind() == AuditKind::SubjectErased)
        .expect("the erasure is logged");
    assert_eq!(erased_at + 2, log.len(), "the erasure, then the denial");
    assert!(
        log[erased_at + 1..]
            .iter()
            .all(|e| e.subject() != Some(&erased) && e.event.account().is_none()),
        "an entry after the erasure names the erased subject or an account"
    );
}

#[test]
fn a_permit_racing_an_erasure_never_writes_under_the_erased_pseudonym() {
    a_decision_racing_an_erasure(false);
}

#[test]
fn a_denial_racing_an_erasure_never_writes_under_the_erased_pseudonym() {
    a_decision_racing_an_erasure(true);
}
