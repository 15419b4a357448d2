//! A dishonest platform over HTTP: it holds the broker's token key, so it mints tokens with the
//! claims it likes (another scope, purpose or account, an approval that does not exist or is
//! someone else's, background polls its user never allowed) and presents them with valid
//! proofs of its key. The bank's gate refuses each from its own ledger, with the status, problem
//! type and challenge of the gate's table, and journals it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use consent_broker::http::ClientError;
use consent_broker::testing::SeededRandom;
use consent_broker::time::Duration;
use consent_broker::*;
use serde_json::{Value, json};

use super::World;

/// The kit's broker token key (the kit's keys come from a seeded source).
fn broker_key() -> SigningKey {
    SigningKey::from_pkcs8_der(
        BrokerKeys::ephemeral(&SeededRandom::new(1))
            .unwrap()
            .token()
            .to_pkcs8_der(),
    )
    .unwrap()
}

/// `token` with its claims edited by `edit`, signed again with the broker's key.
fn minted(token: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut parts = token.split('.');
    let header = parts.next().unwrap();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
    edit(&mut claims);
    claims["jti"] = json!(format!("minted-{}", rand::random::<u64>()));
    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let key = broker_key();
    let pair =
        ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(key.to_pkcs8_der()).unwrap();
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(pair.sign(input.as_bytes()))
    )
}

async fn refused(world: &World, token: &str) -> (u16, GateRefusal, Option<u64>) {
    refused_as(world, token, true).await
}

/// As [`refused`]; the client's attempt with a copy of the token under a new id (the broker's
/// signature made again) only when `again`.
async fn refused_as(world: &World, token: &str, again: bool) -> (u16, GateRefusal, Option<u64>) {
    // First as raw HTTP, to see the answer itself: a problem of the refusal's type, with the
    // challenge of the gate's table for 401 and 403.
    let url = world.data_url();
    let proof = consent_broker::testing::TestBroker::memory()
        .sender
        .proof(
            &consent_broker::dpop::HttpRequest {
                method: "GET",
                url: &url,
            },
            token,
            world.broker.now(),
            &SystemRandom::new(),
        )
        .unwrap();
    let response = super::raw_client()
        .get(&url)
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", proof)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let problem: consent_broker::http::ProblemDetails =
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    let refusal = problem.refusal.clone().expect("a typed refusal");
    let code = serde_json::to_value(&refusal).unwrap()["refusal"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(problem.code(), Some(format!("gate/{code}").as_str()));
    let expected = match status {
        401 if matches!(refusal, GateRefusal::Proof(_)) => Some("invalid_dpop_proof"),
        401 => Some("invalid_token"),
        403 if refusal != GateRefusal::NoDeviceToSealTo => Some("insufficient_scope"),
        _ => None,
    };
    match expected {
        Some(error) => assert!(
            challenge
                .as_deref()
                .is_some_and(|c| c.contains(&format!("error=\"{error}\""))),
            "{challenge:?} for {refusal:?}"
        ),
        None => assert_eq!(challenge, None, "{refusal:?}"),
    }
    // Then through the platform's client (a token is taken once, so a fresh copy of the
    // minted token: the same claims under a new id).
    if !again {
        return (status, refusal, problem.journal_seq);
    }
    let again = minted(token, |_| {});
    match world.client.fetch(&world.data_url(), &again).await {
        Err(ClientError::Refused {
            status,
            refusal,
            journal_seq,
        }) => (status, refusal, journal_seq),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// What the platform changes in the claims, and the refusal it gets: status and reason.
type Case = (&'static str, Box<dyn FnOnce(&mut Value)>, u16, GateRefusal);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_the_platform_mints_are_refused_from_the_banks_own_ledger_over_http() {
    // Alice approved her balance (not alerts, not transactions), for customer service only,
    // from her current account only, and no background polls.
    let world = World::build_approving(
        MemoryStore::new(),
        GateSettings::default(),
        |a| a,
        1,
        |s| {
            s.scopes = ScopeSet::from([Scope::Balance]);
            s.purposes = PurposeSet::from([Purpose::CustomerService]);
            s.accounts = AccountSet::from([AccountId::new("acc-current").unwrap()]);
            s.unattended_daily_limit = 0;
        },
    )
    .await;
    let honest = world.token();
    let unattended = serde_json::to_value(Presence::Unattended).unwrap();
    let cases: Vec<Case> = vec![
        (
            "a scope she did not approve",
            Box::new(|c| c["scope"] = json!("transactions")),
            403,
            GateRefusal::ScopeNotAttested(Scope::Transactions),
        ),
        (
            "a purpose she did not approve",
            Box::new(|c| c["purpose"] = json!("fraud_protection")),
            403,
            GateRefusal::PurposeNotAttested(Purpose::FraudProtection),
        ),
        (
            "an account she did not approve",
            Box::new(|c| c["acct"] = json!("acc-savings")),
            403,
            GateRefusal::AccountNotAttested,
        ),
        (
            "an approval the bank never signed",
            Box::new(|c| c["att"] = json!("att_made_up")),
            401,
            GateRefusal::UnknownAttestation,
        ),
        (
            "someone else as the subject",
            Box::new(|c| c["sub"] = json!("sub_someone_else")),
            401,
            GateRefusal::AttestationMismatch {
                claim: "sub".into(),
            },
        ),
        (
            "a background poll she never allowed",
            Box::new(move |c| c["presence"] = unattended),
            403,
            GateRefusal::UnattendedNotApproved,
        ),
        (
            "no sender key",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("cnf");
            }),
            401,
            GateRefusal::NotSenderConstrained,
        ),
    ];
    let mut journalled = 0;
    for (what, edit, status, expected) in cases {
        let token = minted(&honest, edit);
        let (got_status, refusal, seq) = refused(&world, &token).await;
        assert_eq!((got_status, &refusal), (status, &expected), "{what}");
        assert!(seq.is_some(), "{what}: journalled");
        // Once raw, once through the client.
        journalled += 2;
    }
    assert_eq!(world.journalled(AuditKind::AccessRefusedAtGate), journalled);
    assert_eq!(world.journalled(AuditKind::AccessServed), 0);
    // A token signed with a key that is not the broker's: refused, not journalled.
    let other = SigningKey::from_seed(&[99; 32]).unwrap();
    let mut parts = honest.split('.');
    let input = format!("{}.{}", parts.next().unwrap(), parts.next().unwrap());
    let pair =
        ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(other.to_pkcs8_der()).unwrap();
    let foreign = format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(pair.sign(input.as_bytes()))
    );
    let (status, refusal, seq) = refused_as(&world, &foreign, false).await;
    assert_eq!(status, 401);
    assert!(matches!(refusal, GateRefusal::Token(_)), "{refusal:?}");
    assert_eq!(seq, None);
    // The honest token still works: nothing above spent it.
    world
        .client
        .fetch(&world.data_url(), &honest)
        .await
        .unwrap();
    world.bank_server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minted_token_past_the_approvals_end_is_expired_and_background_polls_run_out() {
    // An approval ending in a day; the platform mints a token for the day after.
    let start = consent_broker::testing::START;
    let world = World::build_approving(
        MemoryStore::new(),
        GateSettings::default(),
        |a| a,
        1,
        |s| {
            s.consent_expires_at = start + Duration::days(1);
            s.unattended_daily_limit = 2;
        },
    )
    .await;
    let honest = world.token();
    world.clock.advance(Duration::days(2));
    world.sync();
    let now = world.broker.now().unix_timestamp();
    let late = minted(&honest, |c| {
        c["iat"] = json!(now);
        c["nbf"] = json!(now);
        c["exp"] = json!(now + 300);
    });
    let (status, refusal, _) = refused(&world, &late).await;
    assert_eq!(status, 401);
    assert!(
        matches!(refusal, GateRefusal::Expired { .. }),
        "{refusal:?}"
    );
    world.bank_server.stop().await;

    // Two background polls a day allowed: the third is refused with 429 until midnight.
    let world = World::build_approving(
        MemoryStore::new(),
        GateSettings::default(),
        |a| a,
        1,
        |s| {
            s.unattended_daily_limit = 2;
        },
    )
    .await;
    let mut poll = world.access.clone();
    poll.presence = Presence::Unattended;
    for _ in 0..2 {
        let token = world.token_for(&poll);
        world.client.fetch(&world.data_url(), &token).await.unwrap();
    }
    // The broker would deny a third itself; the platform mints one.
    let third = minted(&world.token(), |c| {
        c["presence"] = serde_json::to_value(Presence::Unattended).unwrap();
    });
    let (status, refusal, _) = refused(&world, &third).await;
    assert_eq!(
        (status, refusal),
        (429, GateRefusal::UnattendedLimitReached { limit: 2 })
    );
    world.bank_server.stop().await;
}
