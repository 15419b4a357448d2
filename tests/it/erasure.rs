//! Erasure by deleting a subject's key (crypto-shredding), tried as a person who asked to be
//! forgotten would check it: every byte the broker's database keeps on disk, searched for their
//! id and account ids as text, base64 and hex; the log still verifying against a checkpoint
//! signed before; another subject untouched.

use crate::platform_blind::{files, trace_of};
use crate::support::*;
use consent_broker::checkpoint::NoteVerifier;
use consent_broker::*;

/// The subject and accounts to forget: ids long enough that a match is never chance.
const SUBJECT: &str = "subject-7f3a9c-erase-me";
const ACCOUNTS: [&str; 2] = ["acct-4417-current-erase", "acct-9925-savings-erase"];

fn bytes_on_disk(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    files(dir, &dir.join("nothing-skipped"), &mut found);
    found
}

fn traces(dir: &std::path::Path, needle: &str) -> Vec<String> {
    bytes_on_disk(dir)
        .iter()
        .filter_map(|(path, bytes)| trace_of(bytes, needle).map(|how| format!("{path} ({how})")))
        .collect()
}

#[test]
fn after_erasure_no_byte_of_the_database_names_the_subject_and_the_log_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broker.sqlite");
    let fx = Fixture::with_store(SqliteStore::open(&db).unwrap());
    let subject: SubjectId = SUBJECT.parse().unwrap();
    let accounts: Vec<AccountId> = ACCOUNTS.iter().map(|a| a.parse().unwrap()).collect();

    // The subject's whole life at the broker: a request, an approval, permits, a denial naming
    // an account not granted, a token, a revocation, and a second consent still live.
    let draft = ConsentRequestDraft {
        subject: subject.clone(),
        accounts: AccountSelection::Listed(accounts.iter().cloned().collect()),
        ..fx.draft()
    };
    let first = fx.broker.request_consent(draft.clone()).unwrap();
    let mut checkpoints = vec![fx.broker.checkpoint().unwrap()];
    let mut statement = fx.full_statement(&first);
    statement.accounts = AccountSet::from([accounts[0].clone()]);
    fx.broker
        .approve(first.id(), &fx.attest(&statement))
        .unwrap();
    let access = AccessRequest {
        account: accounts[0].clone(),
        ..fx.access(first.id())
    };
    assert!(
        fx.broker
            .authorise_access(&access)
            .unwrap()
            .decision()
            .is_permit()
    );
    let other_account = AccessRequest {
        account: accounts[1].clone(),
        ..access.clone()
    };
    assert!(
        !fx.broker
            .authorise_access(&other_account)
            .unwrap()
            .decision()
            .is_permit()
    );
    fx.broker.authorise_with_token(&access).unwrap();
    fx.withdrawn(first.id());
    let second = fx.broker.request_consent(draft).unwrap();
    let mut statement = fx.full_statement(&second);
    statement.accounts = AccountSet::from([accounts[1].clone()]);
    fx.broker
        .approve(second.id(), &fx.attest(&statement))
        .unwrap();
    // Someone else, to be left alone.
    let bob = fx.granted();
    let bobs_history = fx.broker.subject_history(bob.subject()).unwrap();

    // Before: the database names the subject (its state rows do), so the search can find it.
    fx.broker.purge().unwrap();
    assert!(!traces(dir.path(), SUBJECT).is_empty());
    // Even before erasure, the log itself names neither the subject nor an account.
    let log: Vec<u8> = fx
        .broker
        .store()
        .audit_bytes(0..fx.audit_len())
        .unwrap()
        .into_iter()
        .flat_map(|e| e.bytes)
        .collect();
    for needle in std::iter::once(SUBJECT).chain(ACCOUNTS) {
        assert_eq!(trace_of(&log, needle), None, "the log names {needle}");
    }
    checkpoints.push(fx.broker.checkpoint().unwrap());
    let pseudonym = fx.pseudonym(&subject);

    let erasure = fx.broker.erase_subject(&subject).unwrap().unwrap();
    assert_eq!(erasure.pseudonym, pseudonym);
    assert_eq!(
        erasure.consents,
        vec![first.id().clone(), second.id().clone()]
    );
    assert_eq!(erasure.revoked, vec![second.id().clone()]);
    assert!(erasure.purged, "the write-ahead log was truncated");

    // After: no file of the database (main file, -wal, -shm) holds the subject's id or an
    // account id, in any form.
    for needle in std::iter::once(SUBJECT).chain(ACCOUNTS) {
        assert_eq!(traces(dir.path(), needle), Vec::<String>::new(), "{needle}");
    }
    // The log verifies byte for byte against every checkpoint signed before.
    let verifier = NoteVerifier::from_vkey(&fx.broker.checkpoint_verifier_key()).unwrap();
    for checkpoint in &checkpoints {
        verify_log(&fx.broker.store(), Some((&checkpoint.note, &verifier))).unwrap();
    }
    // Nothing links to the subject: no key, no consents, no history; the erasure itself is
    // logged under the pseudonym it had, after the revocation of the live consent.
    assert_eq!(fx.broker.pseudonym_of(&subject).unwrap(), None);
    assert!(fx.broker.consents_of(&subject).unwrap().is_empty());
    assert!(fx.broker.subject_history(&subject).unwrap().is_empty());
    let last = fx.audit();
    let [.., revoked, erased] = last.as_slice() else {
        panic!("no entries");
    };
    assert_eq!(revoked.kind(), AuditKind::ConsentRevoked);
    assert_eq!(revoked.consent(), Some(second.id()));
    assert_eq!(erased.kind(), AuditKind::SubjectErased);
    assert_eq!(erased.subject(), Some(&pseudonym));
    // The bank learns of the revocation from the feed, though the consent's row is gone.
    let feed = fx.broker.revocation_feed(&fx.bank, 0).unwrap();
    let claims = feed.split('.').nth(1).unwrap();
    let claims = String::from_utf8(unb64(claims)).unwrap();
    assert!(claims.contains(second.id().as_str()), "{claims}");
    // Bob is untouched.
    assert_eq!(
        fx.broker.subject_history(bob.subject()).unwrap(),
        bobs_history
    );
    assert_eq!(
        fx.broker.consent(bob.id()).unwrap().status,
        ConsentStatus::Authorised
    );
    // Erasing again finds nothing to erase and records nothing.
    let len = fx.audit_len();
    assert_eq!(fx.broker.erase_subject(&subject).unwrap(), None);
    assert_eq!(fx.audit_len(), len);
}

#[test]
fn retention_deletes_ended_grants_state_and_logs_which() {
    let fx = Fixture::new();
    let ended = fx.granted();
    fx.withdrawn(ended.id());
    let live = fx.granted();
    // A negative period would delete live consents: refused.
    assert_eq!(
        fx.broker.apply_retention(-time::Duration::days(1)),
        Err(Error::InvalidRetention)
    );
    // Not yet: the grant ended less than the retention period ago.
    assert_eq!(
        fx.broker
            .apply_retention(DEFAULT_RETENTION)
            .unwrap()
            .consents,
        Vec::<ConsentId>::new()
    );
    fx.clock
        .advance(DEFAULT_RETENTION + time::Duration::days(1));
    let retention = fx.broker.apply_retention(DEFAULT_RETENTION).unwrap();
    // The revoked consent goes; the live one (expiring later) stays if still live.
    assert!(retention.consents.contains(ended.id()));
    assert!(matches!(
        fx.broker.consent(ended.id()),
        Err(Error::UnknownConsent(_))
    ));
    let entry = fx.last_audit();
    assert_eq!(entry.kind(), AuditKind::RetentionApplied);
    assert_eq!(Some(entry.seq), retention.audit_seq);
    // The log keeps its pseudonymous entries about the deleted consent.
    assert!(!fx.broker.consent_history(ended.id()).unwrap().is_empty());
    // An access on it is now an unknown consent, refused and audited.
    let outcome = fx.broker.authorise_access(&fx.access(ended.id())).unwrap();
    assert_eq!(
        outcome.decision(),
        Decision::Deny {
            reasons: vec![DenyReason::UnknownConsent]
        }
    );
    let _ = live;
}

/// The bank's side, with the platform's: the customer's approval, device and an access served
/// (journalled, sealed), the broker's log published as tiles; then the customer asks both to
/// forget them. No byte of the bank's ledger files, the platform's database or the tiles holds
/// the customer id, the pairwise id or an account id; both logs verify against checkpoints
/// signed before; the bank's gate refuses the customer's old tokens.
#[test]
fn erasure_at_the_bank_and_the_platform_leaves_no_trace_in_either_database_or_the_tiles() {
    use consent_broker::testing::{TestBank, TestBroker};
    let dir = tempfile::tempdir().unwrap();
    let kit = TestBroker::sqlite(dir.path().join("platform.sqlite"));
    let bank = TestBank::on(
        &kit,
        SqliteStore::open(dir.path().join("bank.sqlite")).unwrap(),
    );
    let consent = bank.granted(&kit);
    let token = kit.token(&kit.access(consent.id()));
    bank.sync(&kit).unwrap();
    let mut proof = String::new();
    let request = bank.present(&kit, &token.token, &mut proof);
    let admission = bank.bank.check(&request, &bank.accounts).unwrap();
    let customer = bank.customer.clone();
    let pairwise = kit.subject.clone();
    let needles = [
        customer.to_string(),
        pairwise.to_string(),
        kit.current.to_string(),
        kit.savings.to_string(),
    ];
    // Published: the platform's log as tiles, under a checkpoint.
    let tiles = dir.path().join("tiles");
    let broker_checkpoint = kit.broker.checkpoint().unwrap();
    consent_broker::tiles::publish(&kit.broker.store(), &tiles, &broker_checkpoint).unwrap();
    let journal_checkpoint = bank.bank.checkpoint().unwrap();
    // Before erasure the state rows name them: the search can find them.
    kit.broker.purge().unwrap();
    bank.bank.purge().unwrap();
    assert!(!traces(dir.path(), customer.as_str()).is_empty());

    let at_bank = bank.bank.erase_customer(&customer).unwrap().unwrap();
    assert_eq!(at_bank.attestations.len(), 1);
    assert!(at_bank.purged);
    // The live approval was revoked in the same commit; the broker applies the bank's signed
    // instruction, so the platform's consent ends too, before the platform erases its side.
    assert_eq!(at_bank.instructions.len(), 1);
    kit.broker
        .apply_holder_instruction(&at_bank.instructions[0])
        .unwrap();
    // As an ordinary withdrawal: the instruction is logged in clear, and an erasure named in
    // two platforms' logs would tie the customer's pseudonyms there together.
    assert!(matches!(
        kit.broker.consent(consent.id()).unwrap().status,
        ConsentStatus::Revoked {
            by: Revoker::Subject,
            reason: RevocationReason::SubjectWithdrew,
            ..
        }
    ));
    let payload = at_bank.instructions[0].split('.').nth(1).unwrap();
    assert!(
        !String::from_utf8(unb64(payload))
            .unwrap()
            .contains("erasure")
    );
    let at_platform = kit.broker.erase_subject(&pairwise).unwrap().unwrap();
    assert!(at_platform.purged);
    assert!(at_platform.revoked.is_empty());
    // The tiles, published again after erasure, and every database file.
    let after = kit.broker.checkpoint().unwrap();
    consent_broker::tiles::publish(&kit.broker.store(), &tiles, &after).unwrap();
    for needle in &needles {
        assert_eq!(traces(dir.path(), needle), Vec::<String>::new(), "{needle}");
    }
    // Both logs verify against what was signed before.
    let verifier = NoteVerifier::from_vkey(&kit.broker.checkpoint_verifier_key()).unwrap();
    verify_log(
        &kit.broker.store(),
        Some((&broker_checkpoint.note, &verifier)),
    )
    .unwrap();
    let journal_verifier = NoteVerifier::from_vkey(&bank.bank.journal_verifier_key()).unwrap();
    verify_log(
        bank.bank.journal(),
        Some((&journal_checkpoint.note, &journal_verifier)),
    )
    .unwrap();
    // The customer's view at the bank is empty; the journal holds the erasure, by pseudonym.
    let view = bank.bank.subject_view(&customer).unwrap();
    assert!(view.approvals.is_empty() && view.journal.is_empty());
    assert_eq!(bank.bank.pseudonym_of(&customer).unwrap(), None);
    // A token issued before erasure (a copy the platform kept) is worthless at the gate: the
    // approval it rests on is gone (here the gate also remembers the token as used).
    let mut proof = String::new();
    let again = bank.present(&kit, &token.token, &mut proof);
    let refused = bank.bank.check(&again, &bank.accounts);
    assert!(
        matches!(
            refused,
            Err(GateError::Refused {
                refusal: GateRefusal::UnknownAttestation | GateRefusal::TokenReplayed,
                ..
            })
        ),
        "{refused:?}"
    );
    let _ = admission;
}

/// A consent request that read the subject's key just before an erasure deleted it: its commit
/// is refused (the key it used is gone), and the retry makes a new key. No consent row is left
/// without a key, and nothing is written under the erased pseudonym after the erasure.
#[test]
fn a_request_racing_an_erasure_never_writes_under_the_erased_pseudonym() {
    use consent_broker::testing::FaultStore;
    use std::sync::Arc;
    let store = Arc::new(FaultStore::new(MemoryStore::new(), 1));
    let fx = Arc::new(Fixture::with_store(Arc::clone(&store)));
    let first = fx.granted();
    let subject = first.subject().clone();
    let erased = fx.pseudonym(&subject);
    let racer = Arc::clone(&fx);
    let who = subject.clone();
    // Between the request's read of the key and its commit, the subject is erased.
    store.before_next_read("holder", move || {
        racer.broker.erase_subject(&who).unwrap().unwrap();
    });
    let second = fx.broker.request_consent(fx.draft()).unwrap();
    let now = fx.pseudonym(&subject);
    assert_ne!(now, erased, "a new key after the erasure");
    let log = fx.audit();
    let erased_at = log
        .iter()
        .position(|e| e.kind() == AuditKind::SubjectErased)
        .expect("the erasure is logged");
    assert!(
        log[erased_at + 1..]
            .iter()
            .all(|e| e.subject() != Some(&erased)),
        "an entry after the erasure names the erased pseudonym"
    );
    let requested = log.last().unwrap();
    assert_eq!(requested.consent(), Some(second.id()));
    assert_eq!(requested.subject(), Some(&now));
    // Every consent row of the subject has the subject's (new) key behind it.
    assert_eq!(fx.broker.consents_of(&subject).unwrap().len(), 1);
}

/// The bank's account system of the race below: asked who owns an account, it first lets the
/// customer's erasure land (as if it took that long to answer), then answers "nobody".
struct ErasingAccounts {
    bank: std::sync::Arc<consent_broker::testing::TestBank>,
    customer: SubjectId,
    /// Then the customer links the platform again (a new key, as a returning user).
    relink: Option<PlatformId>,
}

impl DataHolder for ErasingAccounts {
    type Error = std::convert::Infallible;

    fn account_owner(&self, _: &AccountId) -> Result<Option<SubjectId>, Self::Error> {
        self.bank
            .bank
            .erase_customer(&self.customer)
            .unwrap()
            .unwrap();
        if let Some(platform) = &self.relink {
            self.bank
                .bank
                .link_subject(&self.customer, platform)
                .unwrap();
        }
        Ok(None)
    }
}

/// The bank's gate refusing an access while the customer is being erased (the erasure lands
/// between the gate's read of the approval and its journal entry): the refusal makes no key
/// again, and the journal does not tie the erased approval to anyone.
#[test]
fn a_gate_refusal_racing_an_erasure_makes_no_key_again() {
    gate_refusal_racing_an_erasure(false);
}

/// The same, when the customer comes back (links the platform again, so has a new key) before
/// the refusal is journalled: the refusal must not tie the erased approval to the new key.
#[test]
fn a_gate_refusal_racing_an_erasure_and_a_return_names_nobody() {
    gate_refusal_racing_an_erasure(true);
}

fn gate_refusal_racing_an_erasure(relink: bool) {
    use consent_broker::testing::{TestBank, TestBroker};
    use std::sync::Arc;
    let kit = TestBroker::on(MemoryStore::new());
    let bank = Arc::new(TestBank::beside(&kit));
    let consent = bank.granted(&kit);
    let token = kit.token(&kit.access(consent.id()));
    bank.sync(&kit).unwrap();
    let customer = bank.customer.clone();
    let accounts = ErasingAccounts {
        bank: Arc::clone(&bank),
        customer: customer.clone(),
        relink: relink.then(|| kit.platform.clone()),
    };
    let mut proof = String::new();
    let request = bank.present(&kit, &token.token, &mut proof);
    let refused = bank.bank.check(&request, &accounts);
    assert!(
        matches!(
            refused,
            Err(GateError::Refused {
                refusal: GateRefusal::AccountNotSubjects,
                ..
            })
        ),
        "{refused:?}"
    );
    // Erased: no key. Returned: a key, but no entry of the customer's names the erased
    // approval, and the refusal names nobody.
    assert_eq!(bank.bank.pseudonym_of(&customer).unwrap().is_some(), relink);
    let view = bank.bank.subject_view(&customer).unwrap();
    assert!(
        view.journal
            .iter()
            .all(|e| e.kind() == AuditKind::SubjectLinked),
        "{:?}",
        view.journal
    );
    let journal = bank.bank.journal();
    let len = journal.audit_len().unwrap();
    let last = journal.audit_entries(len - 1..len).unwrap().pop().unwrap();
    assert_eq!(last.kind(), AuditKind::AccessRefusedAtGate);
    assert_eq!(last.subject(), None, "{last:?}");
    assert_eq!(last.event.account(), None, "{last:?}");
}

/// The bank's retention: an approval revoked at the bank is kept until the period has passed,
/// then its record and served counts go, in one journalled pass; a live approval stays; the
/// journal's entries about it remain; a negative period is refused.
#[test]
fn the_banks_retention_deletes_ended_approvals_only_after_the_period() {
    use consent_broker::testing::{TestBank, TestBroker};
    let kit = TestBroker::on(MemoryStore::new());
    let bank = TestBank::beside(&kit);
    let ended = bank.granted(&kit);
    bank.bank
        .revoke(
            &bank.customer,
            ended.id(),
            Revoker::Subject,
            RevocationReason::SubjectWithdrew,
        )
        .unwrap();
    let live = bank.approve(&kit, &kit.request(), |_| {}).unwrap();
    let approval = |consent: &ConsentId| {
        bank.bank
            .ledger()
            .attestations_of_consent(consent)
            .unwrap()
            .pop()
            .map(|a| a.id)
    };
    let ended_id = approval(ended.id()).unwrap();
    assert_eq!(
        bank.bank.apply_retention(-time::Duration::days(1)),
        Err(BankError::InvalidRetention)
    );
    assert_eq!(
        bank.bank.apply_retention(DEFAULT_RETENTION).unwrap(),
        Vec::<String>::new()
    );
    kit.clock
        .advance(DEFAULT_RETENTION + time::Duration::days(1));
    let journal_len = bank.bank.journal().audit_len().unwrap();
    assert_eq!(
        bank.bank.apply_retention(DEFAULT_RETENTION).unwrap(),
        vec![ended_id.clone()]
    );
    assert_eq!(approval(ended.id()), None);
    assert!(approval(live.id()).is_some(), "a live approval stays");
    let journal = bank.bank.journal();
    let entries = journal
        .audit_entries(journal_len..journal.audit_len().unwrap())
        .unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].kind(), AuditKind::RetentionApplied);
    assert!(
        journal
            .audit_entries(0..journal_len)
            .unwrap()
            .iter()
            .any(|e| e.kind() == AuditKind::AttestationSigned && e.consent() == Some(ended.id())),
        "the journal keeps its entries about the deleted approval"
    );
}

/// Adopting an identifier a platform already holds: refused when it is the customer's own id
/// (the platform would learn it), another customer's id (two people would be one subject at the
/// broker), or of the form the bank's random identifiers take; accepted once, idempotently.
#[test]
fn an_adopted_pairwise_identifier_never_exposes_or_merges_customers() {
    use consent_broker::testing::{TestBank, TestBroker};
    let kit = TestBroker::on(MemoryStore::new());
    let bank = TestBank::beside(&kit);
    let (alice, bob): (SubjectId, SubjectId) = (id("alice-at-bank"), id("bob-at-bank"));
    let chat = kit.platform.clone();
    bank.bank.link_subject(&bob, &chat).unwrap();
    for refused in [alice.clone(), bob.clone(), id("sub_AAAAAAAAAAAAAAAAAAAAAA")] {
        assert_eq!(
            bank.bank.link_subject_as(&alice, &chat, &refused),
            Err(BankError::LinkTaken),
            "{refused}"
        );
    }
    assert_eq!(
        bank.bank.pseudonym_of(&alice).unwrap(),
        None,
        "nothing recorded"
    );
    let adopted: SubjectId = id("chat-user-4711");
    bank.bank.link_subject_as(&alice, &chat, &adopted).unwrap();
    bank.bank.link_subject_as(&alice, &chat, &adopted).unwrap();
    assert_eq!(bank.bank.link_subject(&alice, &chat).unwrap(), adopted);
    // Another identifier for the same customer and platform, or the same one for bob: taken.
    assert_eq!(
        bank.bank.link_subject_as(&alice, &chat, &id("chat-user-9")),
        Err(BankError::LinkTaken)
    );
    assert_eq!(
        bank.bank
            .link_subject_as(&id("carol-at-bank"), &chat, &adopted),
        Err(BankError::LinkTaken)
    );
}
