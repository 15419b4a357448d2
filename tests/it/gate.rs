//! The bank's gate against a fully dishonest platform: it edits its own SQLite file, signs
//! approvals itself, asks for other customers' accounts, keeps using grants the bank revoked or
//! scopes the bank stopped sharing, labels background polls as the customer being present, lets
//! its tokens be copied, replays proofs, and stops sending its revocations. Each attack is
//! refused with its exact reason, journalled at the bank, and nothing is served.

use std::path::PathBuf;

use consent_broker::dpop::{DpopError, HttpRequest};
use consent_broker::feed::FeedError;
use consent_broker::testing::{Accounts, GET_BALANCE, TestBank};
use consent_broker::time::Duration;
use consent_broker::*;
use serde_json::{Value, json};

use crate::support::*;

/// A platform whose broker keeps its state in a SQLite file it can edit, and a bank beside it.
struct World {
    kit: TestBroker<SqliteStore>,
    bank: TestBank,
    db: PathBuf,
    _dir: tempfile::TempDir,
}

fn world() -> World {
    world_with(GateSettings::default())
}

fn world_with(settings: GateSettings) -> World {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("platform.sqlite");
    // The platform's broker reads its database on every decision, so that what the platform
    // writes into its rows reaches the tokens at once (a broker keeping views would act on the
    // edits within a minute: the gate must refuse them either way).
    let kit = TestBroker::configured(
        SqliteStore::open(&db).unwrap(),
        HolderPolicy::default(),
        |builder| builder.access_view_cache(false),
    );
    let bank = TestBank::with_settings(&kit, MemoryStore::new(), settings);
    World {
        kit,
        bank,
        db,
        _dir: dir,
    }
}

impl World {
    fn served_count(&self) -> usize {
        self.journal_kinds()
            .iter()
            .filter(|kind| **kind == AuditKind::AccessServed)
            .count()
    }

    fn journal_kinds(&self) -> Vec<AuditKind> {
        self.bank
            .bank
            .journal()
            .audit_entries(0..u64::MAX)
            .unwrap()
            .iter()
            .map(AuditEntry::kind)
            .collect()
    }

    fn last_journal_entry(&self) -> AuditEntry {
        let journal = self.bank.bank.journal();
        let len = journal.audit_len().unwrap();
        journal.audit_entries(len - 1..len).unwrap().pop().unwrap()
    }

    /// Presents `token` with a fresh proof for `GET /v1/balance`.
    fn present(&self, token: &str) -> Result<VerifiedAccess, GateError<std::convert::Infallible>> {
        let mut proof = String::new();
        let request = self.bank.present(&self.kit, token, &mut proof);
        self.bank
            .bank
            .check(&request, &self.bank.accounts)
            .map(Admission::into_access)
    }

    fn check(
        &self,
        request: &GateRequest<'_>,
    ) -> Result<VerifiedAccess, GateError<std::convert::Infallible>> {
        self.bank
            .bank
            .check(request, &self.bank.accounts)
            .map(Admission::into_access)
    }

    /// Asserts the gate serves `request` once and refuses it again as a replay of its proof;
    /// the count of accesses served after the first.
    fn served_once(&self, request: &GateRequest<'_>) -> usize {
        self.check(request).unwrap();
        let served = self.served_count();
        self.assert_refused(
            self.check(request),
            GateRefusal::Proof(DpopError::Replayed),
            served,
        );
        served
    }

    /// Asserts the gate refused `outcome` with `expected`, journalled it with that reason, and
    /// served nothing.
    fn assert_refused(
        &self,
        outcome: Result<VerifiedAccess, GateError<std::convert::Infallible>>,
        expected: GateRefusal,
        served_before: usize,
    ) {
        match outcome {
            Err(GateError::Refused {
                refusal,
                journal_seq,
            }) => {
                assert_eq!(refusal, expected);
                let entry = self.last_journal_entry();
                assert_eq!(Some(entry.seq), journal_seq);
                match entry.event {
                    AuditEvent::AccessRefusedAtGate { refusal, .. } => {
                        assert_eq!(refusal, expected)
                    }
                    other => panic!("the refusal is not journalled: {other:?}"),
                }
            }
            other => panic!("expected a refusal ({expected:?}), got {other:?}"),
        }
        assert_eq!(self.served_count(), served_before, "nothing was served");
    }

    /// Rewrites the stored JSON of `consent` in the platform's own database, as a platform that
    /// edits its database would.
    fn tamper(&self, consent: &ConsentId, edit: impl FnOnce(&mut Value)) {
        edit_stored_consent(&self.db, consent, edit);
    }
}

#[test]
fn an_honest_access_is_journalled_before_it_is_served_and_the_subject_sees_it() {
    let w = world();
    let consent = w.bank.granted(&w.kit);
    let token = w.kit.token(&w.kit.access(consent.id()));
    let access = w.present(&token.token).unwrap();
    assert_eq!(access.account(), &w.kit.current);
    assert_eq!(w.served_count(), 1);
    match w.last_journal_entry().event {
        AuditEvent::AccessServed {
            token_id,
            presence,
            token_digest,
            ..
        } => {
            assert_eq!(token_id, token.token_id);
            assert_eq!(presence, Presence::SubjectPresent);
            // The commitment the broker's `token_issued` entry carries for the same bytes.
            assert_eq!(
                token_digest,
                Some(consent_broker::privacy::commitment(token.token.as_bytes()))
            );
        }
        other => panic!("not journalled as served: {other:?}"),
    }
    let data = consent_broker::serve(&w.bank.accounts, &access).unwrap();
    assert!(matches!(data, AccountData::Balance(_)));
    let view = w.bank.bank.subject_view(&w.bank.customer).unwrap();
    assert_eq!(view.approvals.len(), 1);
    let kinds: Vec<_> = view.journal.iter().map(AuditEntry::kind).collect();
    assert_eq!(
        kinds,
        [
            AuditKind::SubjectLinked,
            AuditKind::DeviceKeyRegistered,
            AuditKind::AttestationSigned,
            AuditKind::AccessServed
        ]
    );
}

#[test]
fn consent_rows_written_into_the_platforms_database_are_not_the_banks_word() {
    let w = world();
    let consent = w.bank.granted(&w.kit);
    let served = w.served_count();
    // The platform widens the stored grant: transactions, a savings account the subject never
    // approved, ten more years; its broker then permits and issues what the edited row says.
    let bob_account: AccountId = id("acc-bob-1");
    w.tamper(consent.id(), |record| {
        let grant = &mut record["state"]["grant"];
        grant["scopes"] = json!(["balance", "alerts", "transactions"]);
        grant["accounts"] = json!(["acc-current", "acc-savings", "acc-bob-1"]);
        grant["expires_at"] = json!(START.unix_timestamp() + 10 * 365 * 86_400);
    });
    // The platform's broker believes its own database; nothing in it stops the tokens.
    let policy = HolderPolicy {
        enabled_scopes: ScopeSet::from(Scope::ALL),
        ..HolderPolicy::default()
    };
    w.kit
        .bank
        .instruct(&w.kit.broker, &Instruction::SetPolicy { policy })
        .unwrap();
    let widened = |scope: Scope, account: &AccountId| {
        w.kit.token(&AccessRequest {
            scope: scope.into(),
            account: account.clone(),
            ..w.kit.access(consent.id())
        })
    };
    // Transactions: the subject never approved them at the bank.
    let token = widened(Scope::Transactions, &w.kit.current);
    w.assert_refused(
        w.present(&token.token),
        GateRefusal::ScopeNotAttested(Scope::Transactions),
        served,
    );
    // Another customer's account, written into alice's grant.
    let token = widened(Scope::Balance, &bob_account);
    w.assert_refused(
        w.present(&token.token),
        GateRefusal::AccountNotAttested,
        served,
    );
    // A whole consent row of the platform's own making: no attestation the bank ever signed.
    w.tamper(consent.id(), |record| {
        record["state"]["grant"]["attestation_id"] = json!("made-up-by-the-platform");
    });
    let token = widened(Scope::Balance, &w.kit.current);
    w.assert_refused(
        w.present(&token.token),
        GateRefusal::UnknownAttestation,
        served,
    );
}

#[test]
fn an_approval_the_platform_signed_itself_names_nothing_in_the_banks_ledger() {
    let w = world();
    // The platform registers "bank" at a broker of its own with a key it made, approves a
    // consent with its own attestation, and has that broker issue a token (with the real
    // broker's keys, which it also holds).
    let request = w.kit.request();
    let forger = SimulatedBank::new(id("bank"), 99);
    let statement = forger.full_statement(&request, w.kit.broker.now());
    let forged = forger.attest(&w.kit.broker, &statement).unwrap();
    // The real broker refuses it (the key is not the bank's) ...
    assert!(matches!(
        w.kit.broker.approve(request.id(), &forged),
        Err(Error::Attestation(AttestationError::UnknownKey { .. }))
    ));
    // ... so the platform writes the approval straight into its database instead.
    let served = w.served_count();
    w.tamper(request.id(), |record| {
        record["state"] = json!({
            "state": "authorised",
            "grant": {
                "scopes": ["balance", "alerts"],
                "purposes": ["customer_service", "fraud_protection"],
                "accounts": ["acc-current", "acc-savings"],
                "authorised_at": START.unix_timestamp(),
                "expires_at": START.unix_timestamp() + 86_400,
                "attestation_id": "forged-attestation",
                "unattended_daily_limit": 4,
            }
        });
    });
    let token = w.kit.token(&w.kit.access(request.id()));
    w.assert_refused(
        w.present(&token.token),
        GateRefusal::UnknownAttestation,
        served,
    );
}

#[test]
fn the_banks_own_revocation_and_policy_bind_at_once_whatever_the_platform_says() {
    let w = world();
    let consent = w.bank.granted(&w.kit);
    let second = w.bank.granted(&w.kit);
    w.present(&w.kit.token(&w.kit.access(consent.id())).token)
        .unwrap();
    let served = w.served_count();
    // The subject withdraws at the bank; the platform never applies the instruction, and its
    // broker keeps issuing tokens.
    let _unapplied = w
        .bank
        .bank
        .revoke(
            &w.bank.customer,
            consent.id(),
            Revoker::Subject,
            RevocationReason::SubjectWithdrew,
        )
        .unwrap();
    let token = w.kit.token(&w.kit.access(consent.id()));
    w.assert_refused(
        w.present(&token.token),
        GateRefusal::RevokedAtBank {
            by: Revoker::Subject,
        },
        served,
    );
    // The bank stops sharing balances; a permit decided before, and the platform's broker which
    // never hears of it, still make balance tokens.
    let permit = match w
        .kit
        .broker
        .authorise_access(&w.kit.access(second.id()))
        .unwrap()
    {
        AccessOutcome::Permitted(permit) => permit,
        other => panic!("{other:?}"),
    };
    let _unapplied = w
        .bank
        .bank
        .set_policy(HolderPolicy {
            enabled_scopes: ScopeSet::from([Scope::Alerts]),
            ..HolderPolicy::default()
        })
        .unwrap();
    let stale = w.kit.broker.issue_token(permit).unwrap();
    w.assert_refused(
        w.present(&stale.token),
        GateRefusal::PolicyForbidsScope(Scope::Balance),
        served,
    );
}

#[test]
fn an_account_the_bank_says_is_not_the_subjects_is_refused() {
    let w = world();
    let consent = w.bank.granted(&w.kit);
    let served = w.served_count();
    // The account changed hands at the bank after the approval.
    let accounts = Accounts::new().with(w.kit.current.clone(), id("bob"));
    let token = w.kit.token(&w.kit.access(consent.id()));
    let mut proof = String::new();
    let request = w.bank.present(&w.kit, &token.token, &mut proof);
    let outcome = w
        .bank
        .bank
        .check(&request, &accounts)
        .map(Admission::into_access);
    w.assert_refused(outcome, GateRefusal::AccountNotSubjects, served);
}

#[test]
fn presence_labels_buy_no_more_than_the_bank_allows() {
    let w = world_with(GateSettings {
        present_daily_ceiling: 3,
        ..GateSettings::default()
    });
    // The subject agreed to two background checks a day.
    let request = w.kit.request();
    w.bank
        .approve(&w.kit, &request, |statement| {
            statement.unattended_daily_limit = 2
        })
        .unwrap();
    let access = |presence| AccessRequest {
        presence,
        ..w.kit.access(request.id())
    };
    for _ in 0..2 {
        w.present(&w.kit.token(&access(Presence::Unattended)).token)
            .unwrap();
    }
    // The platform resets its own count in its database; its broker then permits more.
    let connection = rusqlite::Connection::open(&w.db).unwrap();
    connection.execute("DELETE FROM usage", []).unwrap();
    let served = w.served_count();
    w.assert_refused(
        w.present(&w.kit.token(&access(Presence::Unattended)).token),
        GateRefusal::UnattendedLimitReached { limit: 2 },
        served,
    );
    // So it labels its polls "subject present": the bank's ceiling bounds that too.
    for _ in 0..3 {
        w.present(&w.kit.token(&access(Presence::SubjectPresent)).token)
            .unwrap();
    }
    let served = w.served_count();
    w.assert_refused(
        w.present(&w.kit.token(&access(Presence::SubjectPresent)).token),
        GateRefusal::PresentCeilingReached { ceiling: 3 },
        served,
    );
    // Both labels are in the subject's view at the bank.
    let view = w.bank.bank.subject_view(&w.bank.customer).unwrap();
    let labels: Vec<Presence> = view
        .journal
        .iter()
        .filter_map(|entry| match &entry.event {
            AuditEvent::AccessServed { presence, .. } => Some(*presence),
            _ => None,
        })
        .collect();
    assert_eq!(
        labels,
        [
            Presence::Unattended,
            Presence::Unattended,
            Presence::SubjectPresent,
            Presence::SubjectPresent,
            Presence::SubjectPresent
        ]
    );
    // None approved at all: unattended access is refused outright.
    let none = w.kit.request();
    w.bank
        .approve(&w.kit, &none, |statement| {
            statement.unattended_daily_limit = 0
        })
        .unwrap();
    // (the broker refuses it as well; a platform that edited its own row gets the token anyway)
    w.tamper(none.id(), |record| {
        record["state"]["grant"]["unattended_daily_limit"] = json!(4);
    });
    let served = w.served_count();
    let token = w.kit.token(&AccessRequest {
        presence: Presence::Unattended,
        ..w.kit.access(none.id())
    });
    w.assert_refused(
        w.present(&token.token),
        GateRefusal::UnattendedNotApproved,
        served,
    );
}

#[test]
fn a_copied_token_or_a_replayed_proof_is_worthless() {
    let w = world();
    let consent = w.bank.granted(&w.kit);
    let token = w.kit.token(&w.kit.access(consent.id()));
    let served = w.served_count();
    // A thief with the token but not the platform's key.
    let thief =
        consent_broker::dpop::DpopSigner::new(SigningKey::from_seed(&[8; 32]).unwrap()).unwrap();
    let stolen_proof = thief
        .proof(
            &GET_BALANCE,
            &token.token,
            w.kit.broker.now(),
            &SystemRandom::new(),
        )
        .unwrap();
    let stolen = GateRequest {
        token: &token.token,
        proof: &stolen_proof,
        http: GET_BALANCE,
    };
    w.assert_refused(
        w.check(&stolen),
        GateRefusal::Proof(DpopError::KeyMismatch),
        served,
    );
    let no_proof = GateRequest {
        proof: "",
        ..stolen
    };
    w.assert_refused(
        w.check(&no_proof),
        GateRefusal::Proof(DpopError::Missing),
        served,
    );
    // The platform's own proof, for another request.
    for http in [
        HttpRequest {
            method: "GET",
            url: "https://bank.example/v1/transactions",
        },
        HttpRequest {
            method: "POST",
            url: GET_BALANCE.url,
        },
    ] {
        let proof = w
            .kit
            .sender
            .proof(
                &http,
                &token.token,
                w.kit.broker.now(),
                &SystemRandom::new(),
            )
            .unwrap();
        let request = GateRequest {
            token: &token.token,
            proof: &proof,
            http: GET_BALANCE,
        };
        let expected = if http.method == "GET" {
            DpopError::UrlMismatch
        } else {
            DpopError::MethodMismatch
        };
        w.assert_refused(w.check(&request), GateRefusal::Proof(expected), served);
    }
    // The real request, once; the same request again is a replay of its proof.
    let mut proof = String::new();
    let request = w.bank.present(&w.kit, &token.token, &mut proof);
    let served = w.served_once(&request);
    // A fresh proof does not make the used token new again.
    w.assert_refused(w.present(&token.token), GateRefusal::TokenReplayed, served);
}

/// Proofs from clients other than this crate's, whose ids are not ordered: each is taken once,
/// wherever its id falls beside the ordered ones of the same second, and its replay refused. The
/// ledger's order is for speed only; nothing refuses or forgets an id by its place.
#[test]
fn proof_ids_of_any_form_are_taken_once_each_beside_ordered_ones() {
    let w = world();
    let consent = w.bank.granted(&w.kit);
    let now = w.kit.broker.now().unix_timestamp();
    // A proof made by hand with the platform's key (the kit's sender is seed 3) and `jti`.
    let proof_with = |token: &str, jti: &str| {
        let header = json!({
            "typ": "dpop+jwt", "alg": "EdDSA",
            "jwk": { "kty": "OKP", "crv": "Ed25519", "x": w.kit.sender.public_key().to_base64url() },
        });
        let claims = json!({
            "jti": jti, "htm": "GET", "htu": GET_BALANCE.url, "iat": now,
            "ath": consent_broker::dpop::token_hash(token),
        });
        crate::targets::sign_jws(&header.to_string(), &claims.to_string(), 3)
    };
    // Sorting after every ordered id of this second, before all of them, and a UUID.
    let ids = [
        "zzzzzzzzzzzzzzzzzzzzzz",
        "----------------",
        "0b5e3a52-3c1f-4a8e-9d0e-6f1b2c3d4e5f",
    ];
    for jti in ids {
        let ordered = w.kit.token(&w.kit.access(consent.id()));
        w.present(&ordered.token).unwrap();
        let token = w.kit.token(&w.kit.access(consent.id()));
        let proof = proof_with(&token.token, jti);
        let request = GateRequest {
            token: &token.token,
            proof: &proof,
            http: GET_BALANCE,
        };
        let served = w.served_once(&request);
        // The same id in a proof for another token is the same proof id presented again.
        let other = w.kit.token(&w.kit.access(consent.id()));
        let again = proof_with(&other.token, jti);
        w.assert_refused(
            w.check(&GateRequest {
                token: &other.token,
                proof: &again,
                http: GET_BALANCE,
            }),
            GateRefusal::Proof(DpopError::Replayed),
            served,
        );
    }
}

/// `gate` (one of `bank`'s processes) checks `token` for the kit's request, with a fresh proof
/// from the kit's platform.
fn check_at<S: Store, L: Store + LedgerRead>(
    kit: &TestBroker<S>,
    bank: &TestBank<L>,
    gate: &Bank<L>,
    token: &str,
) -> Result<Admission, GateError<<Accounts as DataHolder>::Error>> {
    let mut proof = String::new();
    let request = bank.present(kit, token, &mut proof);
    gate.check(&request, &bank.accounts)
}

/// Two processes of one bank on one ledger, with different proof windows: the narrower gate's
/// prune never forgets a proof the wider gate still takes, so a replay to the wider gate is
/// refused.
#[test]
fn a_gate_with_a_narrower_window_never_forgets_a_proof_another_still_takes() {
    let kit = TestBroker::memory();
    let ledger = std::sync::Arc::new(MemoryStore::new());
    // Tokens may be presented again (only proofs are single use), so that only the proof's
    // memory stands between a replay and the data.
    let wide = TestBank::with_settings(
        &kit,
        ledger.clone(),
        GateSettings {
            proof_window: Duration::minutes(5),
            single_use_tokens: false,
            ..GateSettings::default()
        },
    );
    let narrow = TestBank::another_gate(
        &kit,
        ledger,
        GateSettings {
            proof_window: Duration::seconds(60),
            leeway: Duration::ZERO,
            single_use_tokens: false,
            ..GateSettings::default()
        },
    );
    let consent = wide.granted(&kit);
    let token = kit.token(&kit.access(consent.id()));
    let mut proof = String::new();
    let request = wide.present(&kit, &token.token, &mut proof);
    wide.bank.check(&request, &wide.accounts).unwrap();
    // Two minutes on (past the narrow window, within the wide one), the narrow gate serves
    // other accesses, enough that its commits prune (one check in eight does).
    kit.clock.advance(Duration::minutes(2));
    for _ in 0..8 {
        check_at(&kit, &wide, &narrow, &token.token).unwrap();
    }
    match wide.bank.check(&request, &wide.accounts) {
        Err(GateError::Refused { refusal, .. }) => {
            assert_eq!(refusal, GateRefusal::Proof(DpopError::Replayed))
        }
        other => panic!("a replayed proof was not refused: {other:?}"),
    }
}

/// Two processes of one bank on one ledger, one's clock three seconds ahead of the other's (as
/// two hosts' clocks may be). A token served by the gate whose clock is behind, at the edge of
/// its leeway, is still remembered after the gate ahead has pruned (it already counts the token
/// as expired): presented again to the first gate, it is refused as a replay, not served twice.
#[test]
fn a_gate_whose_clock_is_ahead_never_forgets_a_token_another_still_takes() {
    let kit = TestBroker::memory();
    let ledger = std::sync::Arc::new(MemoryStore::new());
    let behind = TestBank::with_settings(
        &kit,
        ledger.clone(),
        GateSettings {
            leeway: MAX_LEEWAY,
            ..GateSettings::default()
        },
    );
    let consent = behind.granted(&kit);
    let token = kit.token(&kit.access(consent.id()));
    check_at(&kit, &behind, &behind.bank, &token.token).unwrap();
    // To 28 s past the token's `exp`: within the leeway of the gate behind.
    let exp = token.expires_at;
    kit.clock.set(exp + Duration::seconds(28));
    let ahead_clock = std::sync::Arc::new(ManualClock::new(kit.clock.now() + Duration::seconds(3)));
    let ahead = TestBank::another_gate_on(&kit, ledger, GateSettings::default(), ahead_clock);
    behind.sync(&kit).unwrap();
    // The gate ahead serves other tokens, enough that its commits prune (one check in eight).
    for _ in 0..8 {
        let other = kit.token(&kit.access(consent.id()));
        check_at(&kit, &behind, &ahead, &other.token).unwrap();
    }
    match check_at(&kit, &behind, &behind.bank, &token.token) {
        Err(GateError::Refused { refusal, .. }) => {
            assert_eq!(refusal, GateRefusal::TokenReplayed)
        }
        other => panic!("a token served once was served again: {other:?}"),
    }
}

/// A gate on `ledger` through the faults (so that another process's write can land between the
/// gate's read and its commit), the kit beside it, a consent the bank approved and a token for
/// it.
#[allow(clippy::type_complexity, reason = "a test's tuple of what it set up")]
fn racing<L>(
    ledger: L,
) -> (
    TestBroker,
    std::sync::Arc<consent_broker::testing::FaultStore<L>>,
    TestBank<std::sync::Arc<consent_broker::testing::FaultStore<L>>>,
    Consent,
    AccessToken,
)
where
    L: Store + LedgerRead + Send + Sync + 'static,
{
    let kit = TestBroker::memory();
    let ledger = std::sync::Arc::new(consent_broker::testing::FaultStore::new(ledger, 1));
    let bank = TestBank::with_settings(&kit, ledger.clone(), GateSettings::default());
    let consent = bank.granted(&kit);
    let token = kit.token(&kit.access(consent.id()));
    (kit, ledger, bank, consent, token)
}

/// The platform's revocation reaches the bank's ledger (another process of the bank applies the
/// revocation feed) after a gate has read its view of an access, before it commits: the gate's
/// commit fails on it, and the gate decides again, refusing. The journal never shows data served
/// for a consent after the feed entry that revoked it.
#[test]
fn a_revocation_applied_between_the_gates_read_and_its_commit_is_not_served_past() {
    revocation_between_read_and_commit_on(MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    revocation_between_read_and_commit_on(
        SqliteStore::open(dir.path().join("bank.sqlite")).unwrap(),
    );
}

/// [`a_revocation_applied_between_the_gates_read_and_its_commit_is_not_served_past`] on a
/// ledger of the caller's.
pub(crate) fn revocation_between_read_and_commit_on<L>(ledger: L)
where
    L: Store + LedgerRead + Send + Sync + 'static,
{
    let (kit, ledger, bank, consent, token) = racing(ledger);
    kit.withdrawn(consent.id());
    let after = bank
        .bank
        .ledger()
        .feed_state()
        .unwrap()
        .map_or(0, |state| state.position);
    let feed = kit.broker.revocation_feed(bank.bank.id(), after).unwrap();
    let other = TestBank::another_gate(&kit, ledger.clone(), GateSettings::default());
    ledger.after_next_read("gate_view", move || {
        other.apply_revocation_feed(&feed).unwrap();
    });
    match check_at(&kit, &bank, &bank.bank, &token.token) {
        Err(GateError::Refused { refusal, .. }) => {
            assert_eq!(refusal, GateRefusal::RevokedAtPlatform)
        }
        other => panic!("served past the revocation: {other:?}"),
    }
    let journal = ledger
        .audit_entries(0..ledger.audit_len().unwrap())
        .unwrap();
    let kinds: Vec<AuditKind> = journal.iter().map(|e| e.kind()).collect();
    let applied = kinds
        .iter()
        .position(|k| *k == AuditKind::RevocationFeedApplied)
        .expect("the feed was applied");
    assert!(
        !kinds[applied..].contains(&AuditKind::AccessServed),
        "{kinds:?}"
    );
}

/// A proof whose `jti` is the token's own (the platform chooses both), presented while another
/// process of the bank serves the same token between this gate's read and its commit: the
/// commit finds the token's id already presented and the gate refuses the token as replayed,
/// not the proof (the ids are told apart by their kind, not by their text).
#[test]
fn a_token_taken_between_read_and_commit_is_refused_as_the_tokens_replay_whatever_the_proofs_id() {
    token_taken_between_read_and_commit_on(MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    token_taken_between_read_and_commit_on(
        SqliteStore::open(dir.path().join("bank.sqlite")).unwrap(),
    );
}

/// [`a_token_taken_between_read_and_commit_is_refused_as_the_tokens_replay_whatever_the_proofs_id`]
/// on a ledger of the caller's.
pub(crate) fn token_taken_between_read_and_commit_on<L>(ledger: L)
where
    L: Store + LedgerRead + Send + Sync + 'static,
{
    let (kit, ledger, bank, _, token) = racing(ledger);
    let payload = token.token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&unb64(payload)).unwrap();
    let token_jti = claims["jti"].as_str().unwrap().to_owned();
    // The platform's sender key (the kit's, seed 3) signs a proof carrying the token's `jti`.
    let proof = crate::targets::sign_jws(
        &json!({
            "typ": "dpop+jwt", "alg": "EdDSA",
            "jwk": {
                "kty": "OKP", "crv": "Ed25519",
                "x": kit.sender.public_key().to_base64url(),
            },
        })
        .to_string(),
        &json!({
            "jti": token_jti, "htm": GET_BALANCE.method, "htu": GET_BALANCE.url,
            "iat": kit.broker.now().unix_timestamp(),
            "ath": consent_broker::dpop::token_hash(&token.token),
        })
        .to_string(),
        3,
    );
    // Another process of the bank, serving the same token with the platform's usual proof.
    let other = TestBank::another_gate(&kit, ledger.clone(), GateSettings::default());
    let usual_proof = kit
        .sender
        .proof(
            &GET_BALANCE,
            &token.token,
            kit.broker.now(),
            &SeededRandom::new(77),
        )
        .unwrap();
    let (copy, accounts) = (token.token.clone(), bank.accounts.clone());
    let served = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let served_by_other = std::sync::Arc::clone(&served);
    ledger.after_next_read("gate_view", move || {
        let request = GateRequest {
            token: &copy,
            proof: &usual_proof,
            http: GET_BALANCE,
        };
        other.check(&request, &accounts).unwrap();
        served_by_other.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let request = GateRequest {
        token: &token.token,
        proof: &proof,
        http: GET_BALANCE,
    };
    match bank.bank.check(&request, &bank.accounts) {
        Err(GateError::Refused { refusal, .. }) => {
            assert_eq!(refusal, GateRefusal::TokenReplayed)
        }
        other => panic!("a token presented twice was not refused as replayed: {other:?}"),
    }
    assert!(served.load(std::sync::atomic::Ordering::SeqCst));
}

/// The ids a gate remembers are forgotten once no gate could take them: the ledger holds about
/// what the last few minutes presented, not everything ever presented.
#[test]
fn presented_ids_are_forgotten_once_no_gate_could_take_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bank.sqlite");
    let kit = TestBroker::memory();
    let bank = TestBank::on(&kit, SqliteStore::open(&path).unwrap());
    let consent = bank.granted(&kit);
    let rows = || -> i64 {
        rusqlite::Connection::open(&path)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM bank_presented", [], |row| row.get(0))
            .unwrap()
    };
    let serve = |n: usize| {
        for _ in 0..n {
            let token = kit.token(&kit.access(consent.id()));
            let mut proof = String::new();
            let request = bank.present(&kit, &token.token, &mut proof);
            bank.bank.check(&request, &bank.accounts).unwrap();
        }
    };
    serve(10);
    assert_eq!(rows(), 20, "a proof and a token a check");
    // Past the widest window, the leeway and the allowance for clock skew for the proofs (7.5
    // minutes), past their `exp`, the leeway and the allowance for the tokens (the same): the
    // next eight checks (one of them prunes) leave only their own ids.
    kit.clock.advance(Duration::minutes(8));
    bank.sync(&kit).unwrap();
    serve(8);
    assert_eq!(rows(), 16);
}

#[test]
fn a_token_bound_to_no_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A platform that gives its broker no sender key: its tokens carry no cnf.
    let kit = TestBroker::configured(
        SqliteStore::open(dir.path().join("p.sqlite")).unwrap(),
        HolderPolicy::default(),
        |builder| builder,
    );
    let bank = TestBank::beside(&kit);
    let consent = bank.granted(&kit);
    let token = kit.token(&kit.access(consent.id()));
    let claims: Value =
        serde_json::from_slice(&unb64(token.token.split('.').nth(1).unwrap())).unwrap();
    assert!(claims.get("cnf").is_some(), "the kit binds its tokens");
    // Strip the binding and re-sign as the broker would without a sender key: the platform
    // holds the broker's key, so it can.
    let mut unbound_claims = claims.clone();
    unbound_claims.as_object_mut().unwrap().remove("cnf");
    let header: Value =
        serde_json::from_slice(&unb64(token.token.split('.').next().unwrap())).unwrap();
    let resigned = sign_as_broker(&header, &unbound_claims);
    let mut proof = String::new();
    let request = bank.present(&kit, &resigned, &mut proof);
    match bank.bank.check(&request, &bank.accounts) {
        Err(GateError::Refused { refusal, .. }) => {
            assert_eq!(refusal, GateRefusal::NotSenderConstrained)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn revocations_on_the_platform_reach_the_gate_or_nothing_is_served() {
    let w = world();
    let consent = w.bank.granted(&w.kit);
    let kept = w.bank.granted(&w.kit);
    // The subject withdraws in the chat; the feed carries it to the bank.
    w.kit.withdrawn(consent.id());
    w.bank.sync(&w.kit).unwrap();
    // Consents not revoked are served as before.
    let served = w.served_count();
    let other = w.kit.token(&w.kit.access(kept.id()));
    w.present(&other.token).unwrap();
    let served_after = w.served_count();
    assert_eq!(served_after, served + 1);
    // The platform edits its database back to "authorised" and gets a token: the bank knows.
    w.tamper(consent.id(), |record| {
        let grant = record["state"]["grant"].clone();
        record["state"] = json!({ "state": "authorised", "grant": grant });
    });
    let token = w.kit.token(&w.kit.access(consent.id()));
    w.assert_refused(
        w.present(&token.token),
        GateRefusal::RevokedAtPlatform,
        served_after,
    );
    // The platform stops sending feeds: past the bound, nothing is served at all.
    w.kit
        .clock
        .advance(Duration::minutes(5) + Duration::seconds(1));
    let token = w.kit.token(&w.kit.access(kept.id()));
    let stale = w.present(&token.token);
    match &stale {
        Err(GateError::Refused {
            refusal:
                GateRefusal::RevocationFeedStale {
                    generated_at: Some(_),
                },
            ..
        }) => {}
        other => panic!("not refused as stale: {other:?}"),
    }
    assert_eq!(w.served_count(), served_after);
    // A fresh feed, and the same kind of token is served again.
    w.bank.sync(&w.kit).unwrap();
    let token = w.kit.token(&w.kit.access(kept.id()));
    w.present(&token.token).unwrap();
}

#[test]
fn feeds_cannot_be_skipped_replayed_or_forged() {
    let w = world();
    let consent = w.bank.granted(&w.kit);
    let position = w.bank.bank.ledger().feed_state().unwrap().unwrap().position;
    w.kit
        .broker
        .revoke(
            consent.id(),
            Revoker::Platform,
            RevocationReason::NoLongerNeeded,
        )
        .unwrap();
    // A feed that starts later than the bank has followed would skip the revocation.
    let len = w.kit.broker.store().audit_len().unwrap();
    let skipping = w.kit.broker.revocation_feed(w.bank.bank.id(), len).unwrap();
    assert_eq!(
        w.bank.bank.apply_revocation_feed(&skipping),
        Err(BankError::Feed(consent_broker::feed::FeedError::Gap {
            expected: position,
            after: len
        }))
    );
    let feed = w
        .kit
        .broker
        .revocation_feed(w.bank.bank.id(), position)
        .unwrap();
    w.kit.clock.advance(Duration::seconds(1));
    let newer = w
        .kit
        .broker
        .revocation_feed(w.bank.bank.id(), position)
        .unwrap();
    w.bank.bank.apply_revocation_feed(&newer).unwrap();
    // An older feed, replayed to look fresh, or a feed for the same stretch again.
    assert!(matches!(
        w.bank.bank.apply_revocation_feed(&feed),
        Err(BankError::Feed(_))
    ));
    // A feed signed by a key the bank does not trust.
    let mut parts: Vec<String> = newer.split('.').map(str::to_owned).collect();
    parts[2] = b64([0u8; 64]);
    assert!(matches!(
        w.bank.bank.apply_revocation_feed(&parts.join(".")),
        Err(BankError::Feed(_))
    ));
    // What was applied is in the ledger and the journal.
    assert_eq!(
        w.last_journal_entry().kind(),
        AuditKind::RevocationFeedApplied
    );
    let token = {
        w.tamper(consent.id(), |record| {
            let grant = record["state"]["grant"].clone();
            record["state"] = json!({ "state": "authorised", "grant": grant });
        });
        w.kit.token(&w.kit.access(consent.id()))
    };
    let served = w.served_count();
    w.assert_refused(
        w.present(&token.token),
        GateRefusal::RevokedAtPlatform,
        served,
    );
}

/// Two approvals of one consent at the bank at once (a double-submitted form, two workers): one
/// replaces the other, so one approval stays live and a withdrawal at the bank binds at once.
#[test]
fn approving_one_consent_twice_at_once_leaves_one_live_approval() {
    for round in 0..8 {
        let w = world();
        let request = w.kit.request();
        let statement = w.bank.statement(&w.kit, &request);
        let barrier = std::sync::Barrier::new(2);
        let signed: Vec<String> = std::thread::scope(|scope| {
            let both: Vec<_> = (0..2)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        w.bank.bank.attest(&statement).unwrap()
                    })
                })
                .collect();
            both.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let records = w
            .bank
            .bank
            .ledger()
            .attestations_of_consent(request.id())
            .unwrap();
        assert_eq!(records.len(), 2, "round {round}");
        let live: Vec<_> = records
            .iter()
            .filter(|a| a.superseded_by.is_none())
            .collect();
        assert_eq!(live.len(), 1, "round {round}: {records:?}");
        // The platform uses whichever attestation it likes; only the live one is served, and
        // the withdrawal at the bank binds it.
        w.kit.broker.approve(request.id(), &signed[0]).unwrap();
        w.bank
            .bank
            .revoke(
                &w.bank.customer,
                request.id(),
                Revoker::Subject,
                RevocationReason::SubjectWithdrew,
            )
            .unwrap();
        let served = w.served_count();
        let token = w.kit.token(&w.kit.access(request.id()));
        let outcome = w.present(&token.token);
        assert!(
            matches!(
                outcome,
                Err(GateError::Refused {
                    refusal: GateRefusal::RevokedAtBank { .. } | GateRefusal::Superseded,
                    ..
                })
            ),
            "round {round}: {outcome:?}"
        );
        assert_eq!(w.served_count(), served);
    }
}

/// Consent ids are the platform's: one approved by alice cannot be re-approved by bob (which
/// would replace hers), and a withdrawal at the bank is the subject's own.
#[test]
fn a_reused_consent_id_cannot_replace_or_revoke_another_subjects_approval() {
    let w = world();
    let consent = w.bank.granted(&w.kit);
    let bob: SubjectId = id("bob");
    w.bank.bank.link_subject(&bob, &w.kit.platform).unwrap();
    let mut bobs = w.bank.statement(&w.kit, consent.request());
    bobs.subject = bob.clone();
    assert_eq!(
        w.bank.bank.attest(&bobs),
        Err(BankError::ConsentOfAnother(consent.id().clone()))
    );
    assert_eq!(
        w.bank.bank.revoke(
            &bob,
            consent.id(),
            Revoker::Subject,
            RevocationReason::SubjectWithdrew
        ),
        Err(BankError::NothingToRevoke(consent.id().clone()))
    );
    // Alice's approval is untouched and serves.
    w.present(&w.kit.token(&w.kit.access(consent.id())).token)
        .unwrap();
}

/// A stop at the bank whose instruction never reached the broker (it is valid for five
/// minutes) is signed again, as the ledger recorded it; a live approval, or another subject's,
/// has none to sign.
#[test]
fn a_stop_at_the_bank_whose_instruction_was_lost_is_signed_again() {
    let w = world();
    let consent = w.bank.granted(&w.kit);
    let customer = w.bank.customer.clone();
    assert_eq!(
        w.bank.bank.revocation_instruction(&customer, consent.id()),
        Err(BankError::NothingToRevoke(consent.id().clone())),
        "live"
    );
    let lost = w
        .bank
        .bank
        .revoke(
            &customer,
            consent.id(),
            Revoker::Holder,
            RevocationReason::SuspectedMisuse,
        )
        .unwrap();
    let journal = w.bank.bank.journal().audit_len().unwrap();
    w.kit.clock.advance(Duration::minutes(6));
    assert!(matches!(
        w.kit.broker.apply_holder_instruction(&lost),
        Err(Error::Instruction(_))
    ));
    let again = w
        .bank
        .bank
        .revocation_instruction(&customer, consent.id())
        .unwrap();
    assert_eq!(w.bank.bank.journal().audit_len().unwrap(), journal);
    w.kit.broker.apply_holder_instruction(&again).unwrap();
    assert!(matches!(
        w.kit.broker.consent(consent.id()).unwrap().status,
        ConsentStatus::Revoked {
            by: Revoker::Holder,
            reason: RevocationReason::SuspectedMisuse,
            ..
        }
    ));
    assert_eq!(
        w.bank.bank.revocation_instruction(&id("bob"), consent.id()),
        Err(BankError::NothingToRevoke(consent.id().clone())),
        "another subject's"
    );
}

/// A stranger's garbage does not grow the bank's journal, and what it sent is not echoed
/// whole into the refusal.
#[test]
fn tokens_that_do_not_verify_are_refused_without_a_journal_entry() {
    let w = world();
    let len = w.bank.bank.journal().audit_len().unwrap();
    let header = json!({ "alg": "X".repeat(6_000), "typ": "at+jwt" });
    let token = format!("{}.e30.{}", b64(header.to_string()), b64([0u8; 64]));
    let outcome = w.check(&GateRequest {
        token: &token,
        proof: "",
        http: GET_BALANCE,
    });
    match outcome {
        Err(GateError::Refused {
            refusal: GateRefusal::Token(TokenError::UnsupportedAlgorithm(Some(alg))),
            journal_seq: None,
        }) => assert!(alg.chars().count() <= 33, "{} characters", alg.len()),
        other => panic!("{other:?}"),
    }
    for garbage in ["", "a.b.c", "not a token"] {
        let outcome = w.check(&GateRequest {
            token: garbage,
            proof: "",
            http: GET_BALANCE,
        });
        assert!(matches!(
            outcome,
            Err(GateError::Refused {
                journal_seq: None,
                ..
            })
        ));
    }
    assert_eq!(w.bank.bank.journal().audit_len().unwrap(), len);
}

/// A feed dated ahead of the bank's clock counts as made now; a feed naming positions no store
/// has is malformed.
#[test]
fn a_feed_cannot_stretch_its_freshness_or_name_impossible_positions() {
    let w = world();
    let state = w.bank.bank.ledger().feed_state().unwrap().unwrap();
    let header = feed_header();
    let now = w.kit.broker.now();
    // The log's root at the bank's position (no proof: the feed covers no more of it).
    let (root, _) = feed_tree(
        &StoreNodes(&w.kit.broker.store()),
        state.position,
        state.position,
    );
    let feed = |position: u64, iat: i64| {
        let contents = json!({
            "iss": "broker", "aud": "bank", "iat": iat, "after": state.position,
            "position": position, "revoked": [], "root": root,
        });
        sign_as_broker(&header, &contents)
    };
    let ahead = w
        .bank
        .bank
        .apply_revocation_feed(&feed(state.position, now.unix_timestamp() + 29))
        .unwrap();
    assert_eq!(ahead.generated_at, now);
    assert!(matches!(
        w.bank
            .bank
            .apply_revocation_feed(&feed(u64::MAX, now.unix_timestamp())),
        Err(BankError::Feed(consent_broker::feed::FeedError::Malformed(
            _
        )))
    ));
}

/// The header of a revocation feed signed with the test kit's broker token key.
fn feed_header() -> Value {
    let keys = BrokerKeys::ephemeral(&SeededRandom::new(1)).unwrap();
    json!({ "alg": "EdDSA", "typ": "revocation-feed+jwt", "kid": keys.token().kid() })
}

/// A platform's SQLite log the bank follows, copied, grown by one token, followed by the bank;
/// then the copy taking over (a replica behind, a restore from an older copy) with the
/// subject's stop of the consent logged on it, below the bank's feed position. Returns the
/// directories, the old primary, the bank, the consent, the broker on the copy and the bank's
/// feed position.
fn rolled_back() -> (
    [tempfile::TempDir; 2],
    consent_broker::testing::TestBroker<SqliteStore>,
    TestBank,
    Consent,
    consent_broker::testing::TestBroker<SqliteStore>,
    u64,
) {
    let (primary, replica) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let kit = consent_broker::testing::TestBroker::sqlite(primary.path().join("platform.sqlite"));
    let bank = TestBank::beside(&kit);
    let consent = bank.granted(&kit);
    copy_dir(primary.path(), replica.path());
    let behind = kit.broker.store().audit_len().unwrap();
    kit.token(&kit.access(consent.id()));
    bank.sync(&kit).unwrap();
    let followed = bank.bank.ledger().feed_state().unwrap().unwrap().position;
    assert!(followed > behind, "{followed} > {behind}");
    let failed_over =
        consent_broker::testing::TestBroker::sqlite(replica.path().join("platform.sqlite"));
    failed_over.clock.set(kit.broker.now());
    let stop = failed_over.withdrawn(consent.id());
    assert!(
        stop < followed,
        "the stop is logged below the bank's position"
    );
    (
        [primary, replica],
        kit,
        bank,
        consent,
        failed_over,
        followed,
    )
}

/// Once the log that took over grows past the bank's position again, its feeds would start
/// where the bank stopped and never carry the stop logged below it. Each feed names the log's
/// root at its end and proves it extends the root the bank holds: the grown log's does not,
/// so its feeds are refused and the bank's view goes stale (its gate refuses) until the bank
/// follows the feed anew, from the log's start, which brings the stop.
#[test]
fn a_log_rolled_back_and_grown_again_is_refused_until_the_bank_follows_it_anew() {
    let (_dirs, kit, bank, consent, failed_over, followed) = rolled_back();
    // Each access asked for is logged (denied: the consent is stopped there).
    while failed_over.broker.store().audit_len().unwrap() <= followed + 2 {
        failed_over.decide(&failed_over.access(consent.id()));
    }
    let held = bank.bank.ledger().feed_state().unwrap().unwrap();
    let feed = failed_over
        .broker
        .revocation_feed(bank.bank.id(), followed)
        .unwrap();
    assert_eq!(
        bank.bank.apply_revocation_feed(&feed),
        Err(BankError::Feed(FeedError::Inconsistent))
    );
    assert_eq!(bank.bank.ledger().feed_state().unwrap(), Some(held));
    // A feed naming no root, where the bank holds one, is refused too.
    let rootless = json!({
        "iss": "broker", "aud": "bank", "iat": kit.broker.now().unix_timestamp(),
        "after": followed, "position": failed_over.broker.store().audit_len().unwrap(),
        "revoked": [],
    });
    assert_eq!(
        bank.bank
            .apply_revocation_feed(&sign_as_broker(&feed_header(), &rootless)),
        Err(BankError::Feed(FeedError::Inconsistent))
    );

    // Past the staleness bound, a token of the old primary's (which never saw the stop) is
    // refused: no feed was taken.
    kit.clock.advance(Duration::minutes(6));
    failed_over.clock.set(kit.broker.now());
    let token = kit.token(&kit.access(consent.id()));
    let present = |token: &str| {
        let mut proof = String::new();
        let request = bank.present(&kit, token, &mut proof);
        bank.bank.check(&request, &bank.accounts).map(drop)
    };
    assert!(matches!(
        present(&token.token),
        Err(GateError::Refused {
            refusal: GateRefusal::RevocationFeedStale { .. },
            ..
        })
    ));

    // The bank follows the feed anew: stale until it has, then the stop has reached it.
    let anew = bank.bank.follow_revocation_feed_anew().unwrap();
    assert_eq!((anew.position, anew.root), (0, None));
    let journal = bank.bank.journal();
    let last =
        journal.audit_entries(journal.audit_len().unwrap() - 1..journal.audit_len().unwrap());
    assert!(matches!(
        &last.unwrap()[0].event,
        AuditEvent::RevocationFeedApplied { position: 0, revoked, .. } if revoked.is_empty()
    ));
    bank.sync(&failed_over).unwrap();
    assert!(matches!(
        present(&token.token),
        Err(GateError::Refused {
            refusal: GateRefusal::RevokedAtPlatform,
            ..
        })
    ));
}

/// A bank whose feed state was written before feeds named roots takes feeds that name none (a
/// broker before roots), then the first root a feed names as it is (it has nothing to hold it
/// to), and holds the next ones to it: a feed of another log after that is refused.
#[test]
fn a_bank_holding_no_root_takes_the_first_and_holds_the_rest_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bank.sqlite");
    let kit = TestBroker::memory();
    let bank = TestBank::on(&kit, SqliteStore::open(&path).unwrap());
    bank.sync(&kit).unwrap();
    // As a build before roots left it.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("UPDATE bank_feed SET root = NULL", [])
        .unwrap();
    let held = bank.bank.ledger().feed_state().unwrap().unwrap();
    assert_eq!(held.root, None);
    assert!(held.position > 0);
    let header = feed_header();
    kit.request();
    let len = kit.broker.store().audit_len().unwrap();
    let rootless = json!({
        "iss": "broker", "aud": "bank", "iat": kit.broker.now().unix_timestamp(),
        "after": held.position, "position": len, "revoked": [],
    });
    let taken = bank
        .bank
        .apply_revocation_feed(&sign_as_broker(&header, &rootless))
        .unwrap();
    assert_eq!((taken.position, taken.root), (len, None));
    kit.request();
    bank.sync(&kit).unwrap();
    let rooted = bank.bank.ledger().feed_state().unwrap().unwrap();
    let (root, _) = feed_tree(&StoreNodes(&kit.broker.store()), 0, rooted.position);
    assert_eq!(
        rooted.root.map(|r| encode_hashes(&[r]).concat()),
        Some(root)
    );
    // Another log, of the same keys, longer: its tree does not extend the one held.
    let other = TestBroker::memory();
    other.clock.advance(Duration::seconds(1));
    while other.broker.store().audit_len().unwrap() < rooted.position + 3 {
        other.request();
    }
    let end = other.broker.store().audit_len().unwrap();
    let forged = feed_as_broker(
        &StoreNodes(&other.broker.store()),
        rooted.position,
        end,
        kit.broker.now().unix_timestamp(),
        &[],
    );
    assert_eq!(
        bank.bank.apply_revocation_feed(&forged),
        Err(BankError::Feed(FeedError::Inconsistent))
    );
    // And a feed naming no root is no longer taken.
    let rootless = json!({
        "iss": "broker", "aud": "bank", "iat": kit.broker.now().unix_timestamp(),
        "after": rooted.position, "position": rooted.position, "revoked": [],
    });
    assert_eq!(
        bank.bank
            .apply_revocation_feed(&sign_as_broker(&header, &rootless)),
        Err(BankError::Feed(FeedError::Inconsistent))
    );
    assert_eq!(bank.bank.ledger().feed_state().unwrap(), Some(rooted));
}

/// The broker keeps an index of the revocations it has read from its log, so a feed reads only
/// what was appended since: every feed, at any cursor, between revocations, must list exactly
/// what the log itself says (read here from the log, entry by entry).
#[test]
fn feeds_from_the_index_are_exactly_what_the_log_says_at_every_cursor() {
    use base64::Engine as _;
    let w = world();
    let holder = w.bank.bank.id().clone();
    let consents: Vec<_> = (0..6).map(|_| w.bank.granted(&w.kit)).collect();
    let from_log = |after: u64, to: u64| -> Vec<(String, u64)> {
        let entries = w.kit.broker.store().audit_entries(0..to).unwrap();
        entries
            .iter()
            .filter(|e| e.seq >= after)
            .filter_map(|e| match &e.event {
                AuditEvent::ConsentRevoked {
                    consent,
                    holder: Some(named),
                    ..
                } if *named == holder => Some((consent.to_string(), e.seq)),
                _ => None,
            })
            .collect()
    };
    let from_feed = |after: u64| -> (Vec<(String, u64)>, u64) {
        let feed = w.kit.broker.revocation_feed(&holder, after).unwrap();
        let payload = feed.split('.').nth(1).unwrap();
        let body: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        let listed = body["revoked"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["consent"].as_str().unwrap().to_owned(),
                    r["seq"].as_u64().unwrap(),
                )
            })
            .collect();
        (listed, body["position"].as_u64().unwrap())
    };
    for (n, consent) in consents.iter().enumerate() {
        // Feeds at several cursors before and after each revocation.
        for after in [0, 3, n as u64 * 2] {
            let (listed, position) = from_feed(after);
            assert_eq!(listed, from_log(after, position), "after {after}");
        }
        w.kit.withdrawn(consent.id());
        let len = w.kit.broker.store().audit_len().unwrap();
        let (listed, position) = from_feed(0);
        assert_eq!(position, len);
        assert_eq!(listed.len(), n + 1);
        assert_eq!(listed, from_log(0, len));
        // A cursor past a revocation leaves it out.
        let last = listed.last().unwrap().1;
        assert_eq!(from_feed(last + 1).0, from_log(last + 1, len));
        assert!(from_feed(last + 1).0.iter().all(|(_, seq)| *seq > last));
    }
    // Another holder's feed lists none of them.
    let other = HolderId::new("other-bank").unwrap();
    let feed = w.kit.broker.revocation_feed(&other, 0).unwrap();
    assert!(!feed.is_empty());
}

/// A bank far behind gets the feed in pages; a page moves its position but not its freshness,
/// so the gate keeps refusing as stale until the last page is applied, and then refuses every
/// revocation the pages carried.
#[test]
fn a_bank_far_behind_catches_up_page_by_page_and_is_fresh_only_at_the_end() {
    let w = world_with(GateSettings {
        feed_staleness: Duration::minutes(1),
        ..GateSettings::default()
    });
    let holder = w.bank.bank.id().clone();
    let consents: Vec<_> = (0..5).map(|_| w.bank.granted(&w.kit)).collect();
    let kept = w.bank.granted(&w.kit);
    // Tokens the platform got while the consents were live, then the revocations.
    let tokens: Vec<String> = consents
        .iter()
        .map(|c| w.kit.token(&w.kit.access(c.id())).token)
        .collect();
    for consent in &consents {
        w.kit.withdrawn(consent.id());
    }
    // Past the staleness bound: the bank must catch up before it serves again.
    w.kit.clock.advance(Duration::minutes(2));
    let kept_token = w.kit.token(&w.kit.access(kept.id())).token;
    let refusal_of = |token: &str| {
        let mut proof = String::new();
        let request = w.bank.present(&w.kit, token, &mut proof);
        match w.bank.bank.precheck(&request, &w.bank.accounts) {
            Err(GateError::Refused { refusal, .. }) => Some(refusal),
            Ok(_) => None,
            Err(other) => panic!("{other:?}"),
        }
    };
    let stale = |token: &str| {
        matches!(
            refusal_of(token),
            Some(GateRefusal::RevocationFeedStale { .. })
        )
    };
    assert!(stale(&kept_token));
    let mut pages = 0;
    loop {
        let after = w.bank.bank.ledger().feed_state().unwrap().unwrap().position;
        let page = w
            .kit
            .broker
            .revocation_feed_page(&holder, after, 2)
            .unwrap();
        w.bank.bank.apply_revocation_feed(&page).unwrap();
        pages += 1;
        let position = w.bank.bank.ledger().feed_state().unwrap().unwrap().position;
        if position == w.kit.broker.store().audit_len().unwrap() {
            break;
        }
        assert!(position > after, "each page moves the position");
        // Not complete yet: still stale, whatever the page's date.
        assert!(stale(&kept_token), "fresh after page {pages}");
        assert!(pages < 10);
    }
    assert_eq!(pages, 3, "five revocations, two a page");
    assert_eq!(refusal_of(&kept_token), None, "fresh once complete");
    for token in &tokens {
        assert_eq!(refusal_of(token), Some(GateRefusal::RevokedAtPlatform));
    }
}

/// A read of the log that silently comes back short (a replica behind, a faulty store) must not
/// become a revocation left out of every feed to come: the broker refuses to make the feed (the
/// bank's view then goes stale, failing closed), and once reads are whole again the revocation
/// is there.
#[test]
fn a_short_read_of_the_log_makes_no_feed_rather_than_one_missing_a_revocation() {
    let store = std::sync::Arc::new(consent_broker::testing::FaultStore::new(
        MemoryStore::new(),
        5,
    ));
    let kit = consent_broker::testing::TestBroker::on(std::sync::Arc::clone(&store));
    let consent = kit.granted();
    kit.withdrawn(consent.id());
    let holder = kit.bank.id().clone();
    // The revocation is the log's last entry, the one a short read leaves out.
    store.short_reads(true);
    assert!(matches!(
        kit.broker.revocation_feed(&holder, 0),
        Err(Error::Store(StoreError::Corrupt(_)))
    ));
    store.short_reads(false);
    let feed = kit.broker.revocation_feed(&holder, 0).unwrap();
    let payload = feed.split('.').nth(1).unwrap();
    let body: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(body["revoked"][0]["consent"], consent.id().as_str());
    assert_eq!(body["complete"], true);
}

/// Eight threads of a bank's server check tokens of one approval at once (a platform fetching
/// the balances of several accounts under one consent in parallel) on a SQLite ledger, whose
/// commits are grouped: each check's count of the day's accesses is one row, so checks of the
/// same approval in one transaction conflict and all but one decide again. Every check must still
/// be served and journalled once: grouping may not turn concurrency into refusals.
#[test]
fn concurrent_checks_of_one_approval_on_sqlite_are_each_served_once() {
    let (served, refused) = concurrent_checks_of_one_approval(u32::MAX);
    assert_eq!(
        (served, refused),
        (THREADS * EACH, 0),
        "each check served once"
    );
}

/// The same, with a daily ceiling below the number of checks: the checks race for the last
/// slots, and exactly the ceiling's worth are served and journalled, the rest refused for the
/// ceiling. Fails if the commit checks the count against anything weaker than the ceiling.
#[test]
fn concurrent_checks_of_one_approval_never_pass_the_days_ceiling() {
    let (served, refused) = concurrent_checks_of_one_approval(57);
    assert_eq!((served, refused), (57, THREADS * EACH - 57));
}

pub(crate) const THREADS: usize = 8;
pub(crate) const EACH: usize = 25;

/// Eight threads check 25 tokens each of one approval on a SQLite ledger under a present-access
/// ceiling: how many accesses the journal records as served, and how many checks were refused
/// for the ceiling (any other outcome fails the test).
fn concurrent_checks_of_one_approval(ceiling: u32) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = SqliteStore::open(dir.path().join("bank.sqlite")).unwrap();
    concurrent_checks_of_one_approval_on(ledger, ceiling)
}

/// The same on any ledger (the PostgreSQL tests run it on theirs).
pub(crate) fn concurrent_checks_of_one_approval_on<L: Store + LedgerRead>(
    ledger: L,
    ceiling: u32,
) -> (usize, usize) {
    let kit = TestBroker::memory();
    let settings = GateSettings {
        present_daily_ceiling: ceiling,
        ..GateSettings::default()
    };
    let bank = TestBank::with_settings(&kit, ledger, settings);
    let consent = bank.granted(&kit);
    let access = kit.access(consent.id());
    let random = consent_broker::testing::SeededRandom::new(18);
    let prepared: Vec<Vec<(String, String)>> = (0..THREADS)
        .map(|_| {
            (0..EACH)
                .map(|_| {
                    let token = kit.token(&access).token;
                    let proof = kit
                        .sender
                        .proof(&GET_BALANCE, &token, kit.broker.now(), &random)
                        .unwrap();
                    (token, proof)
                })
                .collect()
        })
        .collect();
    let before = bank.bank.journal().audit_len().unwrap();
    let refused: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = prepared
            .iter()
            .map(|share| {
                let bank = &bank;
                scope.spawn(move || {
                    let mut refused = 0;
                    for (token, proof) in share {
                        let request = GateRequest {
                            token,
                            proof,
                            http: GET_BALANCE,
                        };
                        match bank.bank.check(&request, &bank.accounts) {
                            Ok(_) => {}
                            Err(GateError::Refused {
                                refusal: GateRefusal::PresentCeilingReached { .. },
                                ..
                            }) => refused += 1,
                            Err(error) => panic!("a concurrent check failed: {error:?}"),
                        }
                    }
                    refused
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let served = bank
        .bank
        .journal()
        .audit_entries(before..u64::MAX)
        .unwrap()
        .iter()
        .filter(|entry| entry.kind() == AuditKind::AccessServed)
        .count();
    (served, refused)
}

/// Runs `test` on a world whose gate verifies one signature at a time, in a thread of its own
/// with a deadline: a place to verify never given back fails the test instead of hanging it.
fn with_one_place_to_verify(test: impl FnOnce(&World, &AccessRequest) + Send + 'static) {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let w = world_with(GateSettings {
            verifying_at_once: 1,
            ..GateSettings::default()
        });
        let consent = w.bank.granted(&w.kit);
        test(&w, &w.kit.access(consent.id()));
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("a check never got a place to verify in (or failed: see its panic above)");
}

/// `jws` with one character of its signature changed: still 64 bytes, no longer the signature.
fn bad_signature(jws: &str) -> String {
    let (input, signature) = jws.rsplit_once('.').unwrap();
    let mut signature = signature.to_owned();
    let swapped = if signature.as_bytes()[10] == b'A' {
        "B"
    } else {
        "A"
    };
    signature.replace_range(10..11, swapped);
    format!("{input}.{signature}")
}

/// With one place to verify signatures in, a check refused before its token's signature (no
/// place taken) or from it on (inside the place) leaves the place free: the checks after it, in
/// this thread and then eight at once, are decided, not left waiting for a place nobody returns.
#[test]
fn a_check_refused_at_its_signatures_gives_its_place_to_verify_back() {
    with_one_place_to_verify(|w, access| {
        let token = w.kit.token(access).token;
        let refused = |request: GateRequest<'_>, expected: GateRefusal| match w.check(&request) {
            Err(GateError::Refused { refusal, .. }) => assert_eq!(refusal, expected),
            other => panic!("expected {expected:?}, got {other:?}"),
        };
        // The token: malformed (before any place), then a bad signature (inside one).
        let no_token = GateRequest {
            token: "a.b.c",
            proof: "",
            http: GET_BALANCE,
        };
        assert!(matches!(w.check(&no_token), Err(GateError::Refused { .. })));
        let forged = bad_signature(&token);
        refused(
            GateRequest {
                token: &forged,
                ..no_token
            },
            GateRefusal::Token(TokenError::BadSignature),
        );
        // The proof: another key's, then a bad signature (both in the token's place).
        let thief = consent_broker::dpop::DpopSigner::new(SigningKey::from_seed(&[8; 32]).unwrap())
            .unwrap();
        let stolen = thief
            .proof(
                &GET_BALANCE,
                &token,
                w.kit.broker.now(),
                &SystemRandom::new(),
            )
            .unwrap();
        let request = GateRequest {
            token: &token,
            proof: &stolen,
            http: GET_BALANCE,
        };
        refused(request, GateRefusal::Proof(DpopError::KeyMismatch));
        let mut proof = String::new();
        let honest = w.bank.present(&w.kit, &token, &mut proof);
        let spoiled = bad_signature(honest.proof);
        refused(
            GateRequest {
                proof: &spoiled,
                ..honest
            },
            GateRefusal::Proof(DpopError::BadSignature),
        );
        w.present(&token).unwrap();
        // Eight threads at once through the one place, each a fresh token.
        let served = w.served_count();
        let tokens: Vec<String> = (0..8).map(|_| w.kit.token(access).token).collect();
        std::thread::scope(|scope| {
            for token in &tokens {
                scope.spawn(move || w.present(token).unwrap());
            }
        });
        assert_eq!(w.served_count(), served + 8);
    });
}

/// The account system of [`the_place_to_verify_is_given_back_before_the_checks_that_follow`]:
/// every lookup waits for `meeting`'s other party.
struct Meeting<'a> {
    accounts: &'a Accounts,
    meeting: &'a std::sync::Barrier,
}

impl DataHolder for Meeting<'_> {
    type Error = std::convert::Infallible;

    fn account_owner(&self, account: &AccountId) -> Result<Option<SubjectId>, Self::Error> {
        self.meeting.wait();
        self.accounts.account_owner(account)
    }
}

/// With one place to verify signatures in, two checks meet in the bank's account system (step 7,
/// after the ledger's view): each must have given its place back before asking, or the other
/// could never verify its signatures and reach the meeting.
#[test]
fn the_place_to_verify_is_given_back_before_the_checks_that_follow() {
    with_one_place_to_verify(|w, access| {
        let tokens: Vec<String> = (0..2).map(|_| w.kit.token(access).token).collect();
        let meeting = std::sync::Barrier::new(2);
        let accounts = Meeting {
            accounts: &w.bank.accounts,
            meeting: &meeting,
        };
        std::thread::scope(|scope| {
            for token in &tokens {
                let accounts = &accounts;
                scope.spawn(move || {
                    let mut proof = String::new();
                    let request = w.bank.present(&w.kit, token, &mut proof);
                    w.bank.bank.check(&request, accounts).unwrap();
                });
            }
        });
    });
}

/// The platform fails over to a copy of its store a few entries behind (a restored backup, a
/// replica behind), honestly, and the subject then stops sharing in the chat: the new log holds
/// the stop below the position the bank has followed. The broker signs no feed from past its
/// log's end (it would say the stop was none), and the bank's view goes stale: past the
/// staleness bound, a token is refused, not served.
#[test]
fn no_feed_is_signed_from_past_a_rolled_back_logs_end() {
    let (_dirs, kit, bank, consent, failed_over, followed) = rolled_back();
    let len = failed_over.broker.store().audit_len().unwrap();
    assert_eq!(
        failed_over.broker.revocation_feed(bank.bank.id(), followed),
        Err(Error::FeedBeyondLog {
            after: followed,
            len
        })
    );
    // Past the staleness bound, a token the old primary (which never saw the stop) issues is
    // refused: the bank has had no feed since.
    kit.clock.advance(Duration::minutes(6));
    let token = kit.token(&kit.access(consent.id()));
    let mut proof = String::new();
    let request = bank.present(&kit, &token.token, &mut proof);
    assert!(matches!(
        bank.bank.check(&request, &bank.accounts),
        Err(GateError::Refused {
            refusal: GateRefusal::RevocationFeedStale { .. },
            ..
        })
    ));
}

/// A stop the subject makes in chat reaches the bank through the feed, and the subject's view at
/// the bank shows it (when the platform logged it), on each ledger; before the feed brings it,
/// nothing is shown.
#[test]
fn a_stop_made_in_chat_shows_in_the_subjects_view_at_the_bank() {
    fn shown<L: Store + LedgerRead>(kit: &TestBroker, bank: &TestBank<L>) {
        let consent = bank.granted(kit);
        let other = bank.granted(kit);
        kit.clock.advance(Duration::seconds(7));
        let seq = kit.withdrawn(consent.id());
        let logged_at = kit.broker.store().audit_entries(seq..seq + 1).unwrap()[0].at;
        let view = bank.bank.subject_view(&bank.customer).unwrap();
        assert_eq!(view.platform_stops, [], "not told yet");
        bank.sync(kit).unwrap();
        let view = bank.bank.subject_view(&bank.customer).unwrap();
        assert_eq!(view.approvals.len(), 2);
        assert_eq!(
            view.platform_stops,
            [PlatformStop {
                consent: consent.id().clone(),
                at: logged_at,
            }],
            "{} was not stopped",
            other.id()
        );
    }
    let kit = TestBroker::memory();
    shown(&kit, &TestBank::beside(&kit));
    let dir = tempfile::tempdir().unwrap();
    let kit = TestBroker::memory();
    shown(
        &kit,
        &TestBank::on(
            &kit,
            SqliteStore::open(dir.path().join("bank.sqlite")).unwrap(),
        ),
    );
}
