//! Tokens from the bank's point of view: what is issued and audited, that it verifies offline,
//! that revocation reaches the verifier at once, that rotated keys overlap and then drop out,
//! and that data is served only under a verified access, for its scope and account.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::support::*;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use consent_broker::*;
use serde_json::{Value, json};
use time::Duration;

type SharedFixture = Fixture<Arc<MemoryStore>>;

fn fixture() -> SharedFixture {
    Fixture::sharing(Arc::new(MemoryStore::new()), |builder| builder)
}

fn verifier(fx: &SharedFixture) -> TokenVerifier<StoreStatus<Arc<MemoryStore>>> {
    TokenVerifier::new(
        fx.bank.clone(),
        fx.broker.id().clone(),
        &fx.broker.jwks().unwrap(),
        fx.clock.clone(),
        StoreStatus(fx.shared_store()),
    )
    .unwrap()
}

fn issue(fx: &SharedFixture, access: &AccessRequest) -> AccessToken {
    match fx.broker.authorise_with_token(access).unwrap() {
        TokenOutcome::Issued(token) => token,
        TokenOutcome::Denied(denial) => panic!("denied: {:?}", denial.reasons),
    }
}

fn segment(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[test]
fn a_permit_becomes_a_bound_short_lived_token_and_the_issuing_is_audited() {
    let fx = fixture();
    let request = fx.granted();
    let access = fx.access(request.id());
    let token = issue(&fx, &access);

    let header = segment(&token.token, 0);
    let signing_kid = fx.broker.jwks().unwrap().keys[0].kid.clone();
    assert_eq!(
        header,
        json!({ "typ": "at+jwt", "alg": "EdDSA", "kid": signing_kid })
    );
    assert_eq!(token.key_id, signing_kid);
    let now = START.unix_timestamp();
    let claims = segment(&token.token, 1);
    let consent = fx.broker.consent(request.id()).unwrap().consent;
    let attestation = consent.grant().unwrap().attestation_id();
    assert!(!attestation.is_empty());
    assert_eq!(
        claims,
        json!({
            "iss": "broker", "aud": "bank", "sub": "alice", "client_id": "chat",
            "cid": request.id().as_str(), "att": attestation, "scope": "balance",
            "purpose": "customer_service", "acct": "acc-current", "presence": "subject_present",
            "cnf": { "jkt": fx.sender.thumbprint() },
            "iat": now, "nbf": now, "exp": now + 300, "jti": token.token_id,
        })
    );
    // 28 characters of the base64url alphabet (168 bits: the time of issuing, then 112 random),
    // never the same twice, and a token issued later, even at the same time, sorts later.
    assert_eq!(URL_SAFE_NO_PAD.decode(&token.token_id).unwrap().len(), 21);
    assert_eq!(token.token_id.len(), 28);
    let later = issue(&fx, &access).token_id;
    assert!(later > token.token_id, "{later} {}", token.token_id);
    assert_eq!(token.expires_at, START + Duration::minutes(5));

    let log = fx.audit();
    let issued: Vec<&AuditEntry> = log
        .iter()
        .filter(|e| e.kind() == AuditKind::TokenIssued)
        .collect();
    assert_eq!(issued.len(), 2);
    let entry = issued[0];
    assert_eq!(entry.event.token_id(), Some(token.token_id.as_str()));
    assert_eq!(entry.consent(), Some(request.id()));
    assert_eq!(entry.subject(), Some(&fx.pseudonym(&fx.alice)));
    assert_eq!(entry.actor, Actor::Platform(fx.platform.clone()));
    assert_eq!(
        entry.event.scope(),
        Some(RequestedScope::Data(Scope::Balance))
    );
    // The permit entry comes right before its token entry.
    assert_eq!(
        log[entry.seq as usize - 1].kind(),
        AuditKind::AccessPermitted
    );
    // The token is a credential: Debug does not print it.
    assert!(!format!("{token:?}").contains(&token.token));
}

#[test]
fn the_bank_verifies_offline_and_gets_exactly_the_permitted_access() {
    let fx = fixture();
    let request = fx.granted();
    let token = issue(&fx, &fx.access(request.id()));
    let access = verifier(&fx).verify(&token.token).unwrap();
    assert_eq!(access.consent(), request.id());
    assert_eq!(access.subject(), &fx.alice);
    assert_eq!(access.platform(), &fx.platform);
    assert_eq!(access.holder(), &fx.bank);
    assert_eq!(
        (access.scope(), access.purpose()),
        (Scope::Balance, Purpose::CustomerService)
    );
    assert_eq!(access.account(), &fx.current);
    assert_eq!(access.token_id(), Some(token.token_id.as_str()));
}

#[test]
fn a_revocation_reaches_the_verifier_at_once() {
    let fx = fixture();
    let request = fx.granted();
    let token = issue(&fx, &fx.access(request.id()));
    let bank = verifier(&fx);
    assert!(bank.verify(&token.token).is_ok());
    fx.revoke(
        request.id(),
        Revoker::Subject,
        RevocationReason::SubjectWithdrew,
    )
    .unwrap();
    assert_eq!(
        bank.verify(&token.token),
        Err(TokenError::ConsentNotLive(ConsentStatus::Revoked {
            by: Revoker::Subject,
            reason: RevocationReason::SubjectWithdrew,
        }))
    );
    // A permit decided before the revocation cannot become a token after it.
    let fx = fixture();
    let request = fx.granted();
    let AccessOutcome::Permitted(permit) = fx
        .broker
        .authorise_access(&fx.access(request.id()))
        .unwrap()
    else {
        panic!("expected a permit");
    };
    fx.revoke(
        request.id(),
        Revoker::Holder,
        RevocationReason::SuspectedMisuse,
    )
    .unwrap();
    let before = fx.audit_len();
    assert_eq!(
        fx.broker.issue_token(permit),
        Err(Error::PermitStale(request.id().clone()))
    );
    assert_eq!(fx.audit_len(), before, "no token, no token entry");
}

#[test]
fn expiring_a_token_does_not_touch_the_consent() {
    let fx = fixture();
    let request = fx.granted();
    let token = issue(&fx, &fx.access(request.id()));
    let bank = verifier(&fx).with_leeway(Duration::ZERO);
    let version = fx.broker.consent(request.id()).unwrap().consent.version();
    fx.clock.advance(Duration::minutes(5));
    assert_eq!(
        bank.verify(&token.token),
        Err(TokenError::Expired {
            exp: (START + Duration::minutes(5)).unix_timestamp()
        })
    );
    let view = fx.broker.consent(request.id()).unwrap();
    assert_eq!(
        (view.status, view.consent.version()),
        (ConsentStatus::Authorised, version)
    );
    // A fresh token for the same consent verifies.
    let fresh = issue(&fx, &fx.access(request.id()));
    assert!(bank.verify(&fresh.token).is_ok());
}

#[test]
fn tokens_never_outlive_their_grant() {
    let fx = fixture();
    let request = fx.granted();
    let grant_expiry = START + Duration::days(90);
    fx.clock.set(grant_expiry - Duration::minutes(2));
    let token = issue(&fx, &fx.access(request.id()));
    assert_eq!(token.expires_at, grant_expiry);
    assert_eq!(
        segment(&token.token, 1)["exp"],
        json!(grant_expiry.unix_timestamp())
    );
}

#[test]
fn rotated_keys_overlap_until_their_last_token_expires_then_drop_out() {
    let fx = fixture();
    let request = fx.granted();
    let old_token = issue(&fx, &fx.access(request.id()));
    let old_kid = old_token.key_id.clone();

    fx.clock.advance(Duration::minutes(1));
    let new_key = SigningKey::generate(&fx.rng).unwrap();
    let new_kid = new_key.kid().to_owned();
    fx.broker.rotate_signing_key(new_key).unwrap();
    let rotation = fx.last_audit();
    assert_eq!(rotation.kind(), AuditKind::SigningKeyActivated);
    assert!(
        matches!(&rotation.event, AuditEvent::SigningKeyActivated { key_id, .. } if key_id == &new_kid),
        "{rotation:?}"
    );

    // The new key signs from the moment it is activated; both keys are published.
    let new_token = issue(&fx, &fx.access(request.id()));
    assert_eq!(new_token.key_id, new_kid);
    let published: BTreeSet<String> = fx
        .broker
        .jwks()
        .unwrap()
        .keys
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(
        published,
        BTreeSet::from([old_kid.clone(), new_kid.clone()])
    );
    let bank = verifier(&fx);
    assert!(
        bank.verify(&old_token.token).is_ok(),
        "old key verifies during the overlap"
    );
    assert!(bank.verify(&new_token.token).is_ok());

    // The old key stopped signing at the rotation (START + 1 min): every token it signed expires
    // by then + 5 min (the token lifetime). It is published through the 30 s leeway after that,
    // then drops out of the JWKS.
    fx.clock
        .set(START + Duration::minutes(6) + Duration::seconds(29));
    assert_eq!(fx.broker.jwks().unwrap().keys.len(), 2);
    fx.clock
        .set(START + Duration::minutes(6) + Duration::seconds(30));
    let published: Vec<String> = fx
        .broker
        .jwks()
        .unwrap()
        .keys
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(published, vec![new_kid.clone()]);
    // A bank that refetches the JWKS no longer knows the old key; one that did not refetch
    // refuses the old token anyway, because every token the old key signed has expired.
    let refreshed = verifier(&fx);
    assert_eq!(
        refreshed.verify(&old_token.token),
        Err(TokenError::UnknownKey)
    );
    assert!(matches!(
        bank.verify(&old_token.token),
        Err(TokenError::Expired { .. })
    ));
    let fresh = issue(&fx, &fx.access(request.id()));
    assert_eq!(fresh.key_id, new_kid);
    assert!(refreshed.verify(&fresh.token).is_ok());
}

/// The overlap is decided from the rotation's time and recorded in the store, so it does not
/// depend on what this process remembers: a key retired without having signed stays published
/// for the same window (it might have signed in another process on the same store).
#[test]
fn a_retired_key_is_published_for_one_token_lifetime_after_its_retirement() {
    let fx = fixture();
    let first = fx.broker.jwks().unwrap().keys[0].kid.clone();
    let second = SigningKey::generate(&fx.rng).unwrap();
    let second_kid = second.kid().to_owned();
    fx.broker.rotate_signing_key(second).unwrap();
    let published = |fx: &SharedFixture| -> BTreeSet<String> {
        fx.broker
            .jwks()
            .unwrap()
            .keys
            .into_iter()
            .map(|k| k.kid)
            .collect()
    };
    assert_eq!(
        published(&fx),
        BTreeSet::from([first.clone(), second_kid.clone()])
    );
    let retired = fx
        .shared_store()
        .published_keys()
        .unwrap()
        .into_iter()
        .find(|k| k.kid == first)
        .unwrap();
    assert_eq!(retired.retired_at, Some(START));
    assert_eq!(
        retired.verifies_until,
        Some(START + Duration::minutes(5) + Duration::seconds(30))
    );
    fx.clock
        .set(START + Duration::minutes(5) + Duration::seconds(30));
    assert_eq!(published(&fx), BTreeSet::from([second_kid]));
    // A retired key never signs again: rotating back to it is refused, and recorded nowhere.
    let len = fx.audit_len();
    assert_eq!(
        fx.broker
            .rotate_signing_key(SigningKey::from_pkcs8_der(keys().token().to_pkcs8_der()).unwrap()),
        Err(Error::KeyRetired {
            key_use: KeyUse::Token,
            kid: first,
        })
    );
    assert_eq!(fx.audit_len(), len);
}

#[test]
fn keys_export_and_load_as_pkcs8_and_the_jwks_is_standard() {
    let fx = fixture();
    let key = SigningKey::generate(&fx.rng).unwrap();
    let reloaded = SigningKey::from_pkcs8_der(key.to_pkcs8_der()).unwrap();
    assert_eq!(reloaded.public_key(), key.public_key());
    assert_eq!(reloaded.kid(), key.kid());
    let jwks = Jwks {
        keys: vec![Jwk::from_public_key(&key.public_key())],
    };
    let json: Value = serde_json::from_str(&jwks.to_json()).unwrap();
    assert_eq!(
        json,
        json!({ "keys": [{
            "kty": "OKP", "crv": "Ed25519", "x": key.public_key().to_base64url(),
            "kid": key.kid(), "use": "sig", "alg": "EdDSA",
        }]})
    );
    assert_eq!(Jwks::from_json(&jwks.to_json()).unwrap(), jwks);
    // A JWK whose kid is not its thumbprint, or of another type, is refused.
    let mut wrong_kid = jwks.clone();
    wrong_kid.keys[0].kid = "k1".into();
    assert_eq!(
        Jwks::from_json(&wrong_kid.to_json()),
        Err(KeyError::KidMismatch { kid: "k1".into() })
    );
    let mut rsa = jwks.clone();
    rsa.keys[0].kty = "RSA".into();
    assert!(matches!(
        Jwks::from_json(&rsa.to_json()),
        Err(KeyError::UnsupportedJwk { .. })
    ));
    assert!(matches!(
        Jwks::from_json("{\"keys\": 3}"),
        Err(KeyError::MalformedJwks(_))
    ));
    assert!(!format!("{key:?}").contains(&URL_SAFE_NO_PAD.encode(key.to_pkcs8_der())));
}

#[test]
fn a_permit_overtaken_by_a_state_change_yields_no_token() {
    let fx = fixture();
    let request = fx.granted();
    let AccessOutcome::Permitted(permit) = fx
        .broker
        .authorise_access(&fx.access(request.id()))
        .unwrap()
    else {
        panic!("expected a permit");
    };
    // Another writer bumps the consent (a re-authorisation) between permit and token, well
    // within the permit's lifetime.
    fx.clock.advance(Duration::seconds(30));
    let statement = fx.full_statement(&request);
    fx.broker
        .reauthorise(request.id(), &fx.attest(&statement))
        .unwrap();
    assert_eq!(
        fx.broker.issue_token(permit),
        Err(Error::PermitStale(request.id().clone()))
    );
    // The combined call re-decides and succeeds.
    assert!(matches!(
        fx.broker
            .authorise_with_token(&fx.access(request.id()))
            .unwrap(),
        TokenOutcome::Issued(_)
    ));
    assert!(matches!(
        fx.broker.authorise_with_token(&AccessRequest {
            scope: Scope::Transactions.into(),
            ..fx.access(request.id())
        }),
        Ok(TokenOutcome::Denied(_))
    ));
}

#[test]
fn the_holder_can_audit_every_verification() {
    let fx = fixture();
    let request = fx.granted();
    let token = issue(&fx, &fx.access(request.id()));
    let log = Arc::new(MemoryVerificationLog::new());
    let bank = verifier(&fx).with_audit(log.clone());
    bank.verify(&token.token).unwrap();
    assert_eq!(
        bank.verify("not.a.token"),
        Err(TokenError::Base64(TokenPart::Header))
    );
    fx.revoke(
        request.id(),
        Revoker::Subject,
        RevocationReason::SubjectWithdrew,
    )
    .unwrap();
    assert!(bank.verify(&token.token).is_err());
    let records = log.records();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].refusal, None);
    assert_eq!(records[0].jti.as_deref(), Some(token.token_id.as_str()));
    assert_eq!(records[0].consent.as_ref(), Some(request.id()));
    assert_eq!(
        (records[1].jti.as_ref(), records[1].refusal.is_some()),
        (None, true)
    );
    assert!(matches!(
        records[2].refusal,
        Some(TokenError::ConsentNotLive(_))
    ));
    assert_eq!(records[2].jti.as_deref(), Some(token.token_id.as_str()));
}

/// A bank with a balance and an alert per account, and transactions it may or may not share.
struct Bank {
    balances: HashMap<AccountId, i64>,
    leaky: bool,
}

impl DataHolder for Bank {
    type Error = String;

    fn account_owner(&self, account: &AccountId) -> Result<Option<SubjectId>, String> {
        Ok(self.balances.contains_key(account).then(|| id("alice")))
    }

    fn balance(&self, grant: BalanceGrant<'_>) -> Result<Balance, DataError<String>> {
        // A leaky bank answers with another account's data; `serve` must refuse it.
        let account = if self.leaky {
            id("acc-savings")
        } else {
            grant.account().clone()
        };
        Ok(Balance {
            available: Money {
                minor_units: self.balances[&account],
                currency: "EUR".into(),
            },
            account,
            as_of: START,
        })
    }

    fn pending_alerts(&self, grant: AlertsGrant<'_>) -> Result<Vec<FraudAlert>, DataError<String>> {
        Ok(vec![FraudAlert {
            account: grant.account().clone(),
            reference: "FA-1".into(),
            message: "new device".into(),
            raised_at: START,
        }])
    }

    fn transactions(
        &self,
        grant: TransactionsGrant<'_>,
    ) -> Result<Vec<Transaction>, DataError<String>> {
        if !self.leaky {
            return Err(DataError::NotOffered(Scope::Transactions));
        }
        Ok(vec![Transaction {
            account: grant.account().clone(),
            amount: Money {
                minor_units: -500,
                currency: "EUR".into(),
            },
            description: "coffee".into(),
            booked_at: START,
        }])
    }
}

#[test]
fn data_is_served_only_for_the_verified_scope_and_account() {
    let fx = fixture();
    let request = fx.granted();
    let bank = verifier(&fx);
    let data = Bank {
        balances: HashMap::from([(fx.current.clone(), 100), (fx.savings.clone(), 999)]),
        leaky: false,
    };
    let balance = bank
        .verify(&issue(&fx, &fx.access(request.id())).token)
        .unwrap();
    assert!(balance.alerts_grant().is_none() && balance.transactions_grant().is_none());
    assert_eq!(
        serve(&data, &balance),
        Ok(AccountData::Balance(Balance {
            account: fx.current.clone(),
            available: Money {
                minor_units: 100,
                currency: "EUR".into()
            },
            as_of: START,
        }))
    );
    let alerts_request = AccessRequest {
        scope: Scope::Alerts.into(),
        purpose: Purpose::FraudProtection.into(),
        account: fx.savings.clone(),
        ..fx.access(request.id())
    };
    let alerts = bank.verify(&issue(&fx, &alerts_request).token).unwrap();
    let Ok(AccountData::Alerts(served)) = serve(&data, &alerts) else {
        panic!("alerts")
    };
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].account, fx.savings);

    // A holder that answers with another account's data is refused, nothing passed on.
    let leaky = Bank {
        leaky: true,
        ..data
    };
    assert_eq!(serve(&leaky, &balance), Err(DataError::OtherAccount));
}

#[test]
fn a_broker_permit_is_also_a_verified_access_for_a_bank_that_embeds_the_broker() {
    let fx = fixture();
    let request = fx.granted();
    let AccessOutcome::Permitted(permit) = fx
        .broker
        .authorise_access(&fx.access(request.id()))
        .unwrap()
    else {
        panic!("expected a permit");
    };
    let access = fx.broker.verified_access(permit).unwrap();
    assert_eq!(access.token_id(), None);
    let data = Bank {
        balances: HashMap::from([(fx.current.clone(), 7)]),
        leaky: false,
    };
    assert!(
        matches!(serve(&data, &access), Ok(AccountData::Balance(b)) if b.available.minor_units == 7)
    );
}

#[test]
fn transactions_are_served_only_where_offered() {
    let open = HolderPolicy {
        enabled_scopes: ScopeSet::from(Scope::ALL),
        ..HolderPolicy::default()
    };
    let fx = Fixture::sharing_with_policy(Arc::new(MemoryStore::new()), open);
    let request = fx
        .broker
        .request_consent(ConsentRequestDraft {
            scopes: vec![Scope::Transactions.into()],
            ..fx.draft()
        })
        .unwrap();
    fx.broker
        .approve(request.id(), &fx.attest(&fx.full_statement(&request)))
        .unwrap();
    let access = AccessRequest {
        scope: Scope::Transactions.into(),
        ..fx.access(request.id())
    };
    let verified = verifier(&fx).verify(&issue(&fx, &access).token).unwrap();
    let closed = Bank {
        balances: HashMap::new(),
        leaky: false,
    };
    assert_eq!(
        serve(&closed, &verified),
        Err(DataError::NotOffered(Scope::Transactions))
    );
    let sharing = Bank {
        balances: HashMap::new(),
        leaky: true,
    };
    assert!(matches!(serve(&sharing, &verified), Ok(AccountData::Transactions(t)) if t.len() == 1));
}

/// An audit sink that fails while `down` is set.
#[derive(Default)]
struct FlakyAudit {
    down: std::sync::atomic::AtomicBool,
    log: MemoryVerificationLog,
}

impl consent_broker::VerificationAudit for FlakyAudit {
    fn record(&self, record: consent_broker::VerificationRecord) -> Result<(), String> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("audit disk full".into());
        }
        self.log.record(record)
    }
}

#[test]
fn a_token_refused_for_want_of_an_audit_record_is_not_burnt_by_replay_detection() {
    let fx = fixture();
    let request = fx.granted();
    let token = issue(&fx, &fx.access(request.id()));
    let audit = Arc::new(FlakyAudit::default());
    let bank = verifier(&fx)
        .with_replay_detection()
        .with_audit(audit.clone());
    audit.down.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        bank.verify(&token.token),
        Err(TokenError::AuditUnavailable("audit disk full".into()))
    );
    audit.down.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(bank.verify(&token.token).is_ok(), "first recorded use");
    assert_eq!(bank.verify(&token.token), Err(TokenError::Replayed));
    let refusals: Vec<Option<TokenError>> =
        audit.log.records().into_iter().map(|r| r.refusal).collect();
    assert_eq!(refusals, vec![None, Some(TokenError::Replayed)]);
}

#[test]
fn token_ids_count_per_bank_within_the_second_and_sort_in_issuing_order() {
    use consent_broker::testing::{SimulatedBank, TestBroker};
    let kit = TestBroker::memory();
    let other = SimulatedBank::new(id("other-bank"), 77);
    other.register(&kit.broker).unwrap();
    let consent_a = kit.granted();
    let request_b = kit
        .broker
        .request_consent(ConsentRequestDraft {
            holder: other.id().clone(),
            ..kit.draft()
        })
        .unwrap();
    let consent_b = other.approve_all(&kit.broker, &request_b).unwrap();
    let token = |consent: &Consent| kit.token(&kit.access(consent.id())).token_id;
    // All in one second of the kit's clock: bank A's ids count 0, 1, 2 and bank B's 0, 1.
    let a: Vec<String> = (0..3).map(|_| token(&consent_a)).collect();
    let b: Vec<String> = (0..2).map(|_| token(&consent_b)).collect();
    assert!(a.windows(2).all(|w| w[0] < w[1]), "{a:?}");
    assert!(b[0] < b[1]);
    // Bank B's count is its own: its first id sorts below bank A's second (count 1), though
    // issued after every one of A's (a shared count would put it above all of them).
    assert!(b[0] < a[1], "{b:?} {a:?}");
    // The next second's ids sort after this one's, whichever bank they are for.
    kit.clock.advance(Duration::seconds(1));
    let next = token(&consent_b);
    assert!(next > a[2] && next > b[1]);
}
