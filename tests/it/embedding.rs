//! What embedding needs: start-up registration that runs on every start, the subject's live
//! consent for a question, the broker's clock, errors that say whether to retry, denials a
//! person can read, a bank endpoint that serves one scope, calls from async code, and the test
//! kit's assertions failing with the entries involved.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use consent_broker::time::Duration;
use consent_broker::*;

use crate::support::*;

#[test]
fn start_up_registration_runs_on_every_start_and_writes_nothing_the_second_time() {
    let fx = Fixture::new();
    let len = fx.audit_len();
    assert_eq!(
        fx.kit.bank.register(&fx.broker).unwrap(),
        Registered::Unchanged
    );
    assert_eq!(
        fx.broker
            .register_platform(PlatformProfile {
                id: fx.platform.clone(),
                registered_purposes: PurposeSet::from(Purpose::ALL),
            })
            .unwrap(),
        Registered::Unchanged
    );
    assert_eq!(fx.audit_len(), len);
    let other = SimulatedBank::new(id("second-bank"), 7);
    assert_eq!(other.register(&fx.broker).unwrap(), Registered::New);
    assert_eq!(fx.audit_len(), len + 1);
}

#[test]
fn the_subjects_live_consent_for_a_question_is_found() {
    let fx = Fixture::new();
    let none = fx
        .broker
        .live_consent(&fx.alice, &fx.platform, Scope::Balance, &fx.current)
        .unwrap();
    assert_eq!(none, None);
    let first = fx.granted();
    // A second grant, an hour later, for the current account only: it expires last, so it is
    // the one found where both cover the question.
    fx.clock.advance(Duration::hours(1));
    let second = fx.request();
    fx.kit
        .bank
        .approve(&fx.broker, &second, |statement| {
            statement.accounts = AccountSet::from([fx.current.clone()]);
        })
        .unwrap();
    let found = |scope, account: &AccountId| {
        fx.broker
            .live_consent(&fx.alice, &fx.platform, scope, account)
            .unwrap()
            .map(|view| view.consent.id().clone())
    };
    assert_eq!(found(Scope::Balance, &fx.savings), Some(first.id().clone()));
    assert_eq!(
        found(Scope::Balance, &fx.current),
        Some(second.id().clone())
    );
    assert_eq!(found(Scope::Transactions, &fx.current), None);
    // Once the first is revoked, nothing covers the savings account.
    fx.revoke(
        first.id(),
        Revoker::Subject,
        RevocationReason::SubjectWithdrew,
    )
    .unwrap();
    assert_eq!(
        found(Scope::Balance, &fx.current),
        Some(second.id().clone())
    );
    assert_eq!(found(Scope::Balance, &fx.savings), None);
    assert_eq!(
        fx.broker
            .live_consent(
                &fx.alice,
                &id("another-platform"),
                Scope::Balance,
                &fx.current
            )
            .unwrap(),
        None
    );
    fx.clock.advance(Duration::days(90));
    assert_eq!(found(Scope::Balance, &fx.current), None, "expired");
}

#[test]
fn the_brokers_clock_is_the_one_the_embedding_gave_it() {
    let fx = Fixture::new();
    assert_eq!(fx.broker.clock().now(), START);
    fx.clock.advance(Duration::minutes(3));
    assert_eq!(fx.broker.clock().now(), START + Duration::minutes(3));
    assert_eq!(fx.broker.now(), fx.broker.clock().now());
}

#[test]
fn errors_say_whether_trying_again_can_help() {
    let retry = [
        Error::Store(StoreError::Conflict),
        Error::Store(StoreError::Busy("locked".into())),
        Error::Store(StoreError::Unavailable("connection lost".into())),
        Error::Contention { attempts: 16 },
        Error::PermitStale(id("cns_1")),
        Error::PermitLapsed(id("cns_1")),
        Error::Id(IdError::RandomnessUnavailable),
    ];
    for error in &retry {
        assert!(error.is_retryable(), "{error:?}");
    }
    let final_ = [
        Error::Store(StoreError::Full("disk".into())),
        Error::Store(StoreError::Corrupt("page".into())),
        Error::Store(StoreError::Duplicate {
            kind: RecordKind::Holder,
            id: "bank".into(),
        }),
        Error::UnknownConsent(id("cns_1")),
        Error::Attestation(AttestationError::BadSignature),
        Error::Request(RequestError::NoScopes),
        Error::SameKeyForTwoUses,
        Error::RegistrationMismatch {
            kind: RecordKind::Platform,
            id: "chat".into(),
            field: RegistrationField::Purposes,
        },
    ];
    for error in &final_ {
        assert!(!error.is_retryable(), "{error:?}");
    }
}

#[test]
fn every_deny_reason_reads_as_a_sentence_naming_no_person() {
    let account: AccountId = id("acc-current");
    let reasons = [
        DenyReason::ProhibitedPurpose {
            prohibited: ProhibitedUse::Ads,
        },
        DenyReason::ProhibitedScope {
            prohibited: ProhibitedUse::DataSale,
        },
        DenyReason::UnknownConsent,
        DenyReason::WrongPlatform,
        DenyReason::PurposeNotRegistered {
            purpose: Purpose::FraudProtection,
        },
        DenyReason::NotAuthorised,
        DenyReason::Rejected,
        DenyReason::Revoked {
            by: Revoker::Holder,
        },
        DenyReason::Expired { at: START },
        DenyReason::ScopeNotGranted {
            scope: Scope::Alerts,
        },
        DenyReason::PurposeNotGranted {
            purpose: Purpose::CustomerService,
        },
        DenyReason::AccountNotGranted {
            account: account.clone(),
        },
        DenyReason::HolderForbidsScope {
            scope: Scope::Transactions,
        },
        DenyReason::FrequencyExceeded { limit: 4 },
    ];
    let sentences: Vec<String> = reasons.iter().map(ToString::to_string).collect();
    for (reason, sentence) in reasons.iter().zip(&sentences) {
        assert!(sentence.len() > 10, "{reason:?}: {sentence:?}");
        assert!(
            !sentence.contains('{') && !sentence.contains('_'),
            "{sentence:?}"
        );
    }
    let mut distinct = sentences.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), sentences.len(), "{sentences:#?}");
    assert_eq!(sentences[0], "use for advertising is never allowed");
    // A sentence is shown to people and written to logs: the account's id is in the audit
    // entry, not here.
    for sentence in &sentences {
        assert!(!sentence.contains(account.as_str()), "{sentence:?}");
    }
}

/// Error messages end up in the embedder's logs; the audit format is where account ids go.
#[test]
fn no_error_message_names_an_account() {
    let account: AccountId = id("acc-7781-secret");
    let messages = [
        AttestationError::AccountNotRequested(account.clone()).to_string(),
        TokenError::AccountNotGranted.to_string(),
        Error::Attestation(AttestationError::AccountNotRequested(account.clone())).to_string(),
        DenyReason::AccountNotGranted {
            account: account.clone(),
        }
        .to_string(),
    ];
    for message in &messages {
        assert!(!message.contains(account.as_str()), "{message:?}");
        assert!(message.contains("account"), "{message:?}");
    }
}

/// A bank that serves balances and nothing else: no arm for alerts or transactions anywhere.
struct BalancesOnly;

impl DataHolder for BalancesOnly {
    type Error = std::convert::Infallible;

    fn account_owner(&self, _: &AccountId) -> Result<Option<SubjectId>, Self::Error> {
        Ok(Some(id("alice")))
    }

    fn balance(&self, grant: BalanceGrant<'_>) -> Result<Balance, DataError<Self::Error>> {
        Ok(Balance {
            account: grant.account().clone(),
            available: Money {
                minor_units: 4_200,
                currency: "EUR".into(),
            },
            as_of: START,
        })
    }
}

#[test]
fn a_bank_serves_one_scope_without_handling_the_others() {
    let fx = Fixture::new();
    let consent = fx.granted();
    let permit = |scope: Scope, purpose: Purpose| {
        let access = AccessRequest {
            scope: scope.into(),
            purpose: purpose.into(),
            ..fx.access(consent.id())
        };
        match fx.broker.authorise_access(&access).unwrap() {
            AccessOutcome::Permitted(permit) => fx.broker.verified_access(permit).unwrap(),
            AccessOutcome::Denied(denial) => panic!("{denial:?}"),
        }
    };
    let balance = permit(Scope::Balance, Purpose::CustomerService);
    assert_eq!(
        serve_balance(&BalancesOnly, &balance)
            .unwrap()
            .available
            .minor_units,
        4_200
    );
    let alerts = permit(Scope::Alerts, Purpose::FraudProtection);
    assert_eq!(
        serve_balance(&BalancesOnly, &alerts),
        Err(DataError::WrongScope {
            granted: Scope::Alerts,
            asked: Scope::Balance
        })
    );
    assert_eq!(
        serve_alerts(&BalancesOnly, &alerts),
        Err(DataError::NotOffered(Scope::Alerts))
    );
    assert_eq!(
        serve(&BalancesOnly, &alerts),
        Err(DataError::NotOffered(Scope::Alerts))
    );
}

#[test]
fn the_broker_works_from_async_code_on_blocking_threads() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("async.sqlite")).unwrap());
    let fx = Arc::new(Fixture::sharing(store, |builder| builder));
    let consent = fx.granted();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let permits = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (fx, access) = (Arc::clone(&fx), fx.access(consent.id()));
            tasks.spawn(async move {
                tokio::task::spawn_blocking(move || fx.broker.authorise_access(&access))
                    .await
                    .unwrap()
            });
        }
        let mut permits = 0;
        while let Some(outcome) = tasks.join_next().await {
            if outcome.unwrap().unwrap().decision().is_permit() {
                permits += 1;
            }
        }
        permits
    });
    assert_eq!(permits, 16);
    let log = fx.audit();
    assert_eq!(
        log.iter()
            .filter(|e| e.kind() == AuditKind::AccessPermitted)
            .count(),
        16
    );
    verify_log(&fx.shared_store(), None).unwrap();
}

#[test]
fn the_kits_assertions_fail_naming_the_entries_involved() {
    let fx = Fixture::new();
    let consent = fx.granted();
    let permitted = fx
        .broker
        .authorise_access(&fx.access(consent.id()))
        .unwrap();
    let wrong = catch_unwind(AssertUnwindSafe(|| {
        fx.broker
            .assert_denied(permitted.audit_seq(), &[DenyReason::UnknownConsent])
    }))
    .unwrap_err();
    let message = wrong.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("access_permitted"), "{message}");
    assert!(
        message.contains(&format!("{:>5}:", permitted.audit_seq())),
        "{message}"
    );
    fx.broker.assert_permitted(permitted.audit_seq());
    let history = catch_unwind(AssertUnwindSafe(|| {
        fx.broker
            .assert_history(&fx.alice, &[AuditKind::ConsentRequested])
    }))
    .unwrap_err();
    let message = history
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("consent_approved"), "{message}");
}

/// The platform edits its own log behind the broker's back to make an ad access look permitted:
/// the kit's assertion reads the stored bytes and catches it, and so does verification.
#[test]
fn a_log_edited_to_show_a_permitted_ad_fails_the_kits_assertion() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edited.sqlite");
    let fx = Fixture::sharing(Arc::new(SqliteStore::open(&path).unwrap()), |b| b);
    let consent = fx.granted();
    let permitted = fx
        .broker
        .authorise_access(&fx.access(consent.id()))
        .unwrap();
    fx.broker.assert_never_permitted_prohibited_use();
    let checkpoint = fx.broker.checkpoint().unwrap();

    let connection = rusqlite::Connection::open(&path).unwrap();
    connection
        .execute_batch("DROP TRIGGER audit_no_update")
        .unwrap();
    connection
        .execute(
            "UPDATE audit SET entry = replace(entry, 'customer_service', 'ads') WHERE seq = ?1",
            [i64::try_from(permitted.audit_seq()).unwrap()],
        )
        .unwrap();
    drop(connection);
    let caught = catch_unwind(AssertUnwindSafe(|| {
        fx.broker.assert_never_permitted_prohibited_use()
    }))
    .unwrap_err();
    let message = caught.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("\"purpose\":\"ads\""), "{message}");
    let unverified = catch_unwind(AssertUnwindSafe(|| {
        fx.broker
            .assert_log_verifies(&checkpoint.note, &fx.broker.checkpoint_verifier_key())
    }))
    .unwrap_err();
    let message = unverified
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains(&format!("entry {}", permitted.audit_seq())),
        "{message}"
    );
}
