//! A holder's attestation is required and checked.
//!
//! Each story presents one attestation for a pending request (or a live grant) and checks the
//! exact refusal, the single audit entry it leaves when the holder signed what was posted (none
//! when anyone else did), and that the stored consent did not move.
//! Forgeries are built by hand (JWS compact serialization signed with `ring`), so that every
//! check in the verifier is reached by a token that passes all the checks before it.

use crate::support::*;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use consent_broker::*;
use ring::hmac;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

const TYP: &str = "consent-attestation+jwt";

#[derive(Debug, Clone, Copy)]
enum Call {
    Approve,
    Reauthorise,
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// A compact JWS over `header` and the raw `payload`, signed by `sign`.
fn jws_raw(header: &Value, payload: &str, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(payload));
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(signature))
}

fn jws(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    jws_raw(header, &claims.to_string(), sign)
}

fn parts(token: &str) -> [&str; 3] {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a compact JWS: {token}");
    [parts[0], parts[1], parts[2]]
}

fn header_of(token: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts(token)[0]).unwrap()).unwrap()
}

fn payload_text(token: &str) -> String {
    String::from_utf8(URL_SAFE_NO_PAD.decode(parts(token)[1]).unwrap()).unwrap()
}

fn claims_of(token: &str) -> Value {
    serde_json::from_str(&payload_text(token)).unwrap()
}

fn jti_of(token: &str) -> String {
    claims_of(token)["jti"].as_str().unwrap().to_owned()
}

/// `token` with its payload replaced and its original signature kept.
fn with_payload(token: &str, payload: &str) -> String {
    let [header, _, signature] = parts(token);
    format!("{header}.{}.{signature}", b64(payload))
}

/// The claims the library's signer would write for `statement`, at `iat`, valid `lifetime`.
fn claims(
    issuer: &HolderId,
    audience: &BrokerId,
    statement: &ApprovalStatement,
    iat: OffsetDateTime,
    lifetime: Duration,
    jti: &str,
) -> Value {
    json!({
        "iss": issuer,
        "aud": audience,
        "sub": statement.subject,
        "client_id": statement.platform,
        "cid": statement.consent,
        "scope": statement.scopes,
        "purpose": statement.purposes,
        "acct": statement.accounts,
        "consent_exp": statement.consent_expires_at.unix_timestamp(),
        "unattended_daily_limit": statement.unattended_daily_limit,
        "iat": iat.unix_timestamp(),
        "exp": (iat + lifetime).unix_timestamp(),
        "jti": jti,
    })
}

fn eddsa_header(kid: &str) -> Value {
    json!({ "alg": "EdDSA", "typ": TYP, "kid": kid })
}

/// A holder registered with a key whose private half the test holds, so that it can sign any
/// header and claims it likes, and also through the library's signer.
struct HandHolder {
    id: HolderId,
    pair: Ed25519KeyPair,
    kid: String,
    signer: AttestationSigner,
}

impl HandHolder {
    fn new(fx: &Fixture, name: &str) -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&fx.rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let id: HolderId = id(name);
        let signer = AttestationSigner::new(
            id.clone(),
            SigningKey::from_pkcs8_der(pkcs8.as_ref()).unwrap(),
        )
        .unwrap();
        assert_eq!(signer.public_key().as_bytes(), pair.public_key().as_ref());
        let kid = signer.public_key().thumbprint();
        Self {
            id,
            pair,
            kid,
            signer,
        }
    }

    fn register(self, fx: &Fixture) -> Self {
        fx.broker
            .register_holder(HolderRegistration {
                id: self.id.clone(),
                policy: HolderPolicy::default(),
                attestation_keys: vec![self.signer.public_key()],
            })
            .unwrap();
        self
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        jws(header, claims, |input| {
            self.pair.sign(input).as_ref().to_vec()
        })
    }

    /// Hand-built, and exactly what the library's signer would produce (but for the `jti`).
    fn attest(&self, fx: &Fixture, statement: &ApprovalStatement, jti: &str) -> String {
        let claims = claims(
            &self.id,
            fx.broker.id(),
            statement,
            fx.broker.now(),
            Duration::minutes(5),
            jti,
        );
        self.sign(&eddsa_header(&self.kid), &claims)
    }
}

/// A registered hand-built holder, a request at it, and the claims of a full, valid five-minute
/// attestation of that request with the given `jti`.
fn hand_holder_claims(fx: &Fixture, jti: &str) -> (HandHolder, ConsentRequest, Value) {
    let holder = HandHolder::new(fx, "hand-bank").register(fx);
    let request = request_at(fx, &holder.id);
    let claims = claims(
        &holder.id,
        fx.broker.id(),
        &fx.full_statement(&request),
        fx.broker.now(),
        Duration::minutes(5),
        jti,
    );
    (holder, request, claims)
}

fn request_at(fx: &Fixture, holder: &HolderId) -> ConsentRequest {
    fx.broker
        .request_consent(ConsentRequestDraft {
            holder: holder.clone(),
            ..fx.draft()
        })
        .unwrap()
}

/// Whether `token` is the holder's current attestation about `request`, the refusals the
/// broker logs: signed by the registered key its header's `kid` names (EdDSA, the attestation
/// `typ`), by the request's holder, for this broker, consent, subject and platform, within its
/// lifetime at the broker's clock. Checked here with `ring` and `serde_json`, apart from the
/// crate's own reading.
fn holders_current(fx: &Fixture, request: &ConsentRequest, token: &str) -> bool {
    let segments: Vec<&str> = token.split('.').collect();
    let [header_b64, payload_b64, signature_b64] = segments[..] else {
        return false;
    };
    let json = |segment: &str| {
        URL_SAFE_NO_PAD
            .decode(segment)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .unwrap_or(Value::Null)
    };
    let (header, claims) = (json(header_b64), json(payload_b64));
    let (Some("EdDSA"), Some(TYP), Some(kid)) = (
        header["alg"].as_str(),
        header["typ"].as_str(),
        header["kid"].as_str(),
    ) else {
        return false;
    };
    let Ok(signature) = URL_SAFE_NO_PAD.decode(signature_b64) else {
        return false;
    };
    let record = fx.broker.store().holder(request.holder()).unwrap().unwrap();
    let input = format!("{header_b64}.{payload_b64}");
    let signed = record
        .attestation_keys()
        .iter()
        .filter(|key| key.thumbprint() == kid)
        .any(|key| {
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key.as_bytes())
                .verify(input.as_bytes(), &signature)
                .is_ok()
        });
    let now = fx.broker.now().unix_timestamp();
    let leeway = ATTESTATION_LEEWAY.whole_seconds();
    let (Some(iat), Some(exp), Some(jti)) = (
        claims["iat"].as_i64(),
        claims["exp"].as_i64(),
        claims["jti"].as_str(),
    ) else {
        return false;
    };
    signed
        && claims["iss"] == request.holder().as_str()
        && claims["aud"] == fx.broker.id().as_str()
        && claims["cid"] == request.id().as_str()
        && claims["sub"] == request.subject().as_str()
        && claims["client_id"] == request.platform().as_str()
        && iat <= now + leeway
        && exp > iat
        && exp - iat <= MAX_ATTESTATION_LIFETIME.whole_seconds()
        && now < exp + leeway
        && (1..=128).contains(&jti.len())
}

/// Presents `token`, expects a refusal, and checks that the stored consent is unchanged and
/// that, when `token` is the holder's current attestation about `request`
/// ([`holders_current`]), exactly one audit entry records it
/// (the holder as actor, the consent and subject named, the refusal equal to the returned
/// error); when anyone else did, none (anyone may post one for a pending consent: it is not the
/// holder's word). Returns the error for the caller to pin down.
fn refused(fx: &Fixture, request: &ConsentRequest, call: Call, token: &str) -> Error {
    let before = fx.broker.consent(request.id()).unwrap();
    let seq = fx.audit_len();
    let result = match call {
        Call::Approve => fx.broker.approve(request.id(), token),
        Call::Reauthorise => fx.broker.reauthorise(request.id(), token),
    };
    let error = result.expect_err("the attestation must be refused");
    if !holders_current(fx, request, token) {
        assert_eq!(
            fx.audit_len(),
            seq,
            "not the holder's, yet logged: {error:?}"
        );
        assert_eq!(fx.broker.consent(request.id()).unwrap(), before);
        return error;
    }
    let refusal = match &error {
        Error::Attestation(error) => Refusal::Attestation(error.clone()),
        Error::Consent(error) => Refusal::Lifecycle(error.clone()),
        other => panic!("not an audited refusal: {other:?}"),
    };
    // The log names the subject, and an account a refusal names, by their pseudonyms.
    let refusal = match refusal {
        Refusal::Attestation(AttestationError::AccountNotRequested(account)) => {
            let pseudonym = fx.account_pseudonym(request.subject(), &account);
            Refusal::Attestation(AttestationError::AccountNotRequested(
                pseudonym.as_str().parse().unwrap(),
            ))
        }
        // A malformed attestation's text is the crate's own (no input in it), logged as is.
        other => other,
    };
    let (consent, subject) = (request.id().clone(), fx.pseudonym(request.subject()));
    let event = match call {
        Call::Approve => AuditEvent::ApprovalRefused {
            consent,
            subject,
            refusal,
        },
        Call::Reauthorise => AuditEvent::ReauthorisationRefused {
            consent,
            subject,
            refusal,
        },
    };
    let expected = AuditEntry {
        seq,
        at: fx.broker.now(),
        actor: Actor::Holder(request.holder().clone()),
        event,
    };
    assert_eq!(fx.audit()[seq as usize..], [expected]);
    assert_eq!(fx.broker.consent(request.id()).unwrap(), before);
    error
}

/// The approval entry at `seq` is `expected` with a sealed attestation that opens, with the
/// subject's key, to exactly `token`; and the entry holds neither the token nor the subject's id.
fn assert_sealed_approval(
    fx: &Fixture,
    request: &ConsentRequest,
    token: &str,
    seq: u64,
    expected: AuditEntry,
) {
    let mut found = fx.audit()[seq as usize..].to_vec();
    assert_eq!(found.len(), 1, "{found:?}");
    let entry = found.remove(0);
    let opened = fx
        .broker
        .open_attestation(request.subject(), &entry)
        .unwrap();
    assert_eq!(opened, token);
    let mut stripped = entry.clone();
    if let AuditEvent::ConsentApproved {
        sealed_attestation, ..
    }
    | AuditEvent::ConsentReauthorised {
        sealed_attestation, ..
    } = &mut stripped.event
    {
        assert!(sealed_attestation.take().is_some());
    }
    assert_eq!(stripped, expected);
    let bytes = String::from_utf8(entry.to_bytes().unwrap()).unwrap();
    assert!(!bytes.contains(token.split('.').nth(1).unwrap()), "{bytes}");
    assert!(
        !bytes.contains(&format!("\"{}\"", request.subject())),
        "{bytes}"
    );
}

fn refused_approval(fx: &Fixture, request: &ConsentRequest, token: &str) -> Error {
    let error = refused(fx, request, Call::Approve, token);
    assert_still_requested(fx, request);
    error
}

fn assert_still_requested(fx: &Fixture, request: &ConsentRequest) {
    let view = fx.broker.consent(request.id()).unwrap();
    assert_eq!(view.status, ConsentStatus::Requested);
    assert_eq!(view.consent.state(), &ConsentState::Requested);
    assert_eq!(view.consent.version(), 1);
    assert_eq!(view.consent.request(), request);
}

/// Approves `token` and checks the grant, the version and the single `ConsentApproved` entry.
fn approved(fx: &Fixture, request: &ConsentRequest, token: &str) -> Grant {
    let seq = fx.audit_len();
    let consent = fx.broker.approve(request.id(), token).unwrap();
    assert_eq!(consent.version(), 2);
    let ConsentState::Authorised { grant } = consent.state() else {
        panic!("not authorised: {consent:?}");
    };
    assert_eq!(grant.authorised_at(), fx.broker.now());
    let expected = AuditEntry {
        seq,
        at: fx.broker.now(),
        actor: Actor::Holder(request.holder().clone()),
        event: AuditEvent::ConsentApproved {
            consent: request.id().clone(),
            subject: fx.pseudonym(request.subject()),
            attestation_id: jti_of(token),
            attestation: None,
            attestation_digest: Some(consent_broker::privacy::commitment(token.as_bytes())),
            sealed_attestation: None,
        },
    };
    assert_sealed_approval(fx, request, token, seq, expected);
    let view = fx.broker.consent(request.id()).unwrap();
    assert_eq!(view.consent, consent);
    assert_eq!(view.status, ConsentStatus::Authorised);
    grant.clone()
}

/// The request can still be approved with a correct attestation.
fn approves_afterwards(fx: &Fixture, request: &ConsentRequest) {
    let statement = fx.full_statement(request);
    approved(fx, request, &fx.attest(&statement));
}

/// Refused as `Malformed` because the JOSE header could not be read.
fn is_malformed_header(error: &Error) -> bool {
    matches!(
        error,
        Error::Attestation(AttestationError::Malformed(detail)) if detail.starts_with("header: ")
    )
}

fn attestation(error: AttestationError) -> Error {
    Error::Attestation(error)
}

// ---------------------------------------------------------------------------------------------
// The happy path, as the reference for every refusal below

#[test]
fn a_full_approval_activates_the_grant_and_keeps_the_attestation_as_evidence() {
    let fx = Fixture::new();
    let request = fx.request();
    let statement = fx.full_statement(&request);
    let token = fx.attest(&statement);

    let header = header_of(&token);
    assert_eq!(
        header,
        json!({ "alg": "EdDSA", "typ": TYP, "kid": fx.bank_signer().public_key().thumbprint() })
    );
    let claims = claims_of(&token);
    assert_eq!(claims["iss"], "bank");
    assert_eq!(claims["aud"], "broker");
    assert_eq!(claims["cid"], request.id().as_str());
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );

    let grant = approved(&fx, &request, &token);
    assert_eq!(
        grant_parts(&grant),
        (
            ScopeSet::from([Scope::Balance, Scope::Alerts]),
            PurposeSet::from(Purpose::ALL),
            AccountSet::from([fx.current.clone(), fx.savings.clone()]),
            START,
            START + Duration::days(90),
        )
    );
}

#[test]
fn a_hand_built_attestation_signed_by_a_registered_key_is_accepted() {
    // The control for every hand-built forgery below: the construction itself is sound.
    let fx = Fixture::new();
    let holder = HandHolder::new(&fx, "hand-bank").register(&fx);
    let request = request_at(&fx, &holder.id);
    let token = holder.attest(&fx, &fx.full_statement(&request), "hand-jti-1");
    let grant = approved(&fx, &request, &token);
    assert_eq!(grant.expires_at(), START + Duration::days(90));
}

// ---------------------------------------------------------------------------------------------
// Not a token at all

#[test]
fn an_approval_without_attestation_is_refused_as_missing() {
    let fx = Fixture::new();
    let request = fx.request();
    assert_eq!(
        refused_approval(&fx, &request, ""),
        attestation(AttestationError::Missing)
    );
    approves_afterwards(&fx, &request);
}

#[test]
fn garbage_strings_are_refused_as_malformed() {
    let fx = Fixture::new();
    let request = fx.request();
    for garbage in [
        "garbage",
        "a.b.c",
        "..",
        ".",
        "yes, the subject approved",
        "eyJhbGciOiJFZERTQSJ9",
        "\u{0}\u{1}\u{2}",
        "🙂.🙂.🙂",
    ] {
        let error = refused_approval(&fx, &request, garbage);
        assert!(is_malformed_header(&error), "{garbage:?}: {error:?}");
    }
    approves_afterwards(&fx, &request);
}

#[test]
fn an_oversized_attestation_is_refused_before_parsing() {
    let fx = Fixture::new();
    let request = fx.request();
    let valid = fx.attest(&fx.full_statement(&request));
    // A valid token padded past the limit with a huge extra header part is not even parsed.
    let oversized = format!("{}{valid}", "A".repeat(16 * 1024 + 1 - valid.len()));
    assert_eq!(oversized.len(), 16 * 1024 + 1);
    assert_eq!(
        refused_approval(&fx, &request, &oversized),
        attestation(AttestationError::Malformed(
            "16385 bytes, more than the 16384 accepted".into()
        ))
    );
    approved(&fx, &request, &valid);
}

#[test]
fn an_unsigned_alg_none_token_is_refused() {
    let fx = Fixture::new();
    let request = fx.request();
    let valid = fx.attest(&fx.full_statement(&request));
    let header =
        json!({ "alg": "none", "typ": TYP, "kid": fx.bank_signer().public_key().thumbprint() });
    let unsigned = format!("{}.{}.", b64(header.to_string()), parts(&valid)[1]);
    let error = refused_approval(&fx, &request, &unsigned);
    assert!(is_malformed_header(&error), "{error:?}");
    approved(&fx, &request, &valid);
}

// ---------------------------------------------------------------------------------------------
// Forged or altered

#[test]
fn the_platform_forging_an_attestation_with_its_own_key_is_refused_as_unknown_key() {
    let fx = Fixture::new();
    let request = fx.request();
    let platform_signer =
        AttestationSigner::new(fx.bank.clone(), SigningKey::generate(&fx.rng).unwrap()).unwrap();
    let forged = platform_signer
        .sign(
            &fx.full_statement(&request),
            fx.broker.id(),
            fx.broker.now(),
            &fx.rng,
        )
        .unwrap();
    assert_eq!(
        refused_approval(&fx, &request, &forged),
        attestation(AttestationError::UnknownKey {
            holder: fx.bank.clone()
        })
    );
    approves_afterwards(&fx, &request);
}

#[test]
fn a_token_without_kid_is_refused_as_unknown_key() {
    let fx = Fixture::new();
    let (holder, request, claims) = hand_holder_claims(&fx, "no-kid");
    let token = holder.sign(&json!({ "alg": "EdDSA", "typ": TYP }), &claims);
    assert_eq!(
        refused_approval(&fx, &request, &token),
        attestation(AttestationError::UnknownKey {
            holder: holder.id.clone()
        })
    );
    let token = holder.sign(&eddsa_header(&holder.kid), &claims);
    approved(&fx, &request, &token);
}

#[test]
fn a_forgery_naming_the_bank_kid_but_signed_with_another_key_is_a_bad_signature() {
    let fx = Fixture::new();
    let request = fx.request();
    let other =
        Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&fx.rng).unwrap().as_ref())
            .unwrap();
    let claims = claims(
        &fx.bank,
        fx.broker.id(),
        &fx.full_statement(&request),
        fx.broker.now(),
        Duration::minutes(5),
        "forged-1",
    );
    let forged = jws(
        &eddsa_header(&fx.bank_signer().public_key().thumbprint()),
        &claims,
        |input| other.sign(input).as_ref().to_vec(),
    );
    assert_eq!(
        refused_approval(&fx, &request, &forged),
        attestation(AttestationError::BadSignature)
    );
    approves_afterwards(&fx, &request);
}

#[test]
fn a_valid_attestation_with_its_payload_altered_is_a_bad_signature() {
    let fx = Fixture::new();
    let request = fx.request();
    let statement = fx.full_statement(&request);
    let valid = fx.attest(&statement);
    let original = payload_text(&valid);

    // One byte: the consent expiry one second later.
    let consent_exp = statement.consent_expires_at.unix_timestamp();
    let one_byte = original.replacen(
        &format!("\"consent_exp\":{consent_exp}"),
        &format!("\"consent_exp\":{}", consent_exp + 1),
        1,
    );
    assert_eq!(one_byte.len(), original.len());
    assert_eq!(
        one_byte
            .bytes()
            .zip(original.bytes())
            .filter(|(a, b)| a != b)
            .count(),
        1
    );
    // Re-encoded claims: fewer scopes, another account.
    let mut narrowed = claims_of(&valid);
    narrowed["scope"] = json!(["alerts"]);
    let mut other_account = claims_of(&valid);
    other_account["acct"] = json!(["acc-someone-else"]);

    for payload in [one_byte, narrowed.to_string(), other_account.to_string()] {
        assert_eq!(
            refused_approval(&fx, &request, &with_payload(&valid, &payload)),
            attestation(AttestationError::BadSignature),
            "{payload}"
        );
    }
    // The untouched original still works (none of the refusals used up its jti).
    approved(&fx, &request, &valid);
}

#[test]
fn a_valid_attestation_with_its_signature_altered_is_a_bad_signature() {
    let fx = Fixture::new();
    let request = fx.request();
    let valid = fx.attest(&fx.full_statement(&request));
    let [header, payload, signature] = parts(&valid);
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
    bytes[0] ^= 0x01;
    let tampered = format!("{header}.{payload}.{}", b64(&bytes));
    assert_eq!(
        refused_approval(&fx, &request, &tampered),
        attestation(AttestationError::BadSignature)
    );
    approved(&fx, &request, &valid);
}

#[test]
fn hs256_signed_with_the_bank_public_key_as_secret_is_refused_as_wrong_algorithm() {
    // The classic key-confusion forgery: anyone has the public key.
    let fx = Fixture::new();
    let request = fx.request();
    let public = fx.bank_signer().public_key();
    let claims = claims(
        &fx.bank,
        fx.broker.id(),
        &fx.full_statement(&request),
        fx.broker.now(),
        Duration::minutes(5),
        "confused-1",
    );
    let header = json!({ "alg": "HS256", "typ": TYP, "kid": public.thumbprint() });
    for secret in [
        public.as_bytes().to_vec(),
        public.to_base64url().into_bytes(),
    ] {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        let forged = jws(&header, &claims, |input| {
            hmac::sign(&key, input).as_ref().to_vec()
        });
        assert_eq!(
            refused_approval(&fx, &request, &forged),
            attestation(AttestationError::WrongAlgorithm)
        );
    }
    approves_afterwards(&fx, &request);
}

#[test]
fn a_properly_signed_token_with_the_wrong_typ_is_refused() {
    let fx = Fixture::new();
    let (holder, request, claims) = hand_holder_claims(&fx, "typ-1");
    for header in [
        json!({ "alg": "EdDSA", "typ": "JWT", "kid": holder.kid }),
        json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": holder.kid }),
        json!({ "alg": "EdDSA", "kid": holder.kid }),
    ] {
        assert_eq!(
            refused_approval(&fx, &request, &holder.sign(&header, &claims)),
            attestation(AttestationError::WrongType),
            "{header}"
        );
    }
    approved(
        &fx,
        &request,
        &holder.sign(&eddsa_header(&holder.kid), &claims),
    );
}

// ---------------------------------------------------------------------------------------------
// Time

#[test]
fn an_attestation_expires_after_its_lifetime_plus_thirty_seconds_leeway() {
    let fx = Fixture::new();
    let early = fx.request();
    let late = fx.request();
    let early_token = fx.attest(&fx.full_statement(&early));
    let late_token = fx.attest(&fx.full_statement(&late));
    let exp = claims_of(&late_token)["exp"].as_i64().unwrap();
    assert_eq!(exp, (START + Duration::minutes(5)).unix_timestamp());

    // 29 s into the leeway: still accepted.
    fx.clock.advance(Duration::seconds(5 * 60 + 29));
    approved(&fx, &early, &early_token);
    // 30 s: expired, although the request's 10-minute approval window is still open.
    fx.clock.advance(Duration::seconds(1));
    assert_eq!(
        refused_approval(&fx, &late, &late_token),
        attestation(AttestationError::Expired { exp })
    );
    fx.clock.advance(Duration::seconds(30));
    assert_eq!(fx.broker.now(), START + Duration::minutes(6));
    assert_eq!(
        refused_approval(&fx, &late, &late_token),
        attestation(AttestationError::Expired { exp })
    );
    approves_afterwards(&fx, &late);
}

#[test]
fn an_attestation_issued_in_the_future_is_refused() {
    let fx = Fixture::new();
    let request = fx.request();
    let statement = fx.full_statement(&request);
    let sign_at = |at: OffsetDateTime| {
        fx.bank_signer()
            .sign(&statement, fx.broker.id(), at, &fx.rng)
            .unwrap()
    };
    assert_eq!(
        refused_approval(
            &fx,
            &request,
            &sign_at(fx.broker.now() + Duration::minutes(5))
        ),
        attestation(AttestationError::IssuedInFuture)
    );
    assert_eq!(
        refused_approval(
            &fx,
            &request,
            &sign_at(fx.broker.now() + Duration::seconds(31))
        ),
        attestation(AttestationError::IssuedInFuture)
    );
    // Within the 30 s leeway: the holder's clock may run a little ahead.
    approved(
        &fx,
        &request,
        &sign_at(fx.broker.now() + Duration::seconds(30)),
    );
}

#[test]
fn an_attestation_lifetime_must_be_positive_and_at_most_ten_minutes() {
    let fx = Fixture::new();
    let holder = HandHolder::new(&fx, "hand-bank").register(&fx);
    let request = request_at(&fx, &holder.id);
    let statement = fx.full_statement(&request);
    let header = eddsa_header(&holder.kid);
    for (lifetime, jti) in [
        (Duration::seconds(601), "life-601"),
        (Duration::days(365), "life-year"),
        (Duration::ZERO, "life-0"),
        (Duration::seconds(-60), "life-negative"),
    ] {
        let claims = claims(
            &holder.id,
            fx.broker.id(),
            &statement,
            fx.broker.now(),
            lifetime,
            jti,
        );
        assert_eq!(
            refused_approval(&fx, &request, &holder.sign(&header, &claims)),
            attestation(AttestationError::LifetimeInvalid),
            "{lifetime}"
        );
    }
    let claims = claims(
        &holder.id,
        fx.broker.id(),
        &statement,
        fx.broker.now(),
        Duration::minutes(10),
        "life-600",
    );
    approved(&fx, &request, &holder.sign(&header, &claims));
}

#[test]
fn an_approval_after_the_ten_minute_window_is_refused_as_a_lifecycle_error() {
    let fx = Fixture::new();
    let open = fx.request();
    let closed = fx.request();
    // One second before the deadline a fresh attestation is accepted.
    fx.clock
        .advance(Duration::minutes(10) - Duration::seconds(1));
    approves_afterwards(&fx, &open);
    fx.clock.advance(Duration::seconds(1));
    let token = fx.attest(&fx.full_statement(&closed));
    assert_eq!(
        refused(&fx, &closed, Call::Approve, &token),
        Error::Consent(ConsentError::ApprovalWindowClosed {
            consent: closed.id().clone(),
            deadline: START + Duration::minutes(10),
        })
    );
    let view = fx.broker.consent(closed.id()).unwrap();
    assert_eq!(view.consent.state(), &ConsentState::Requested);
    assert_eq!(view.consent.version(), 1);
    assert_eq!(view.status, ConsentStatus::Expired);
    // Later it stays closed.
    fx.clock.advance(Duration::minutes(1));
    let token = fx.attest(&fx.full_statement(&closed));
    assert_eq!(
        refused(&fx, &closed, Call::Approve, &token),
        Error::Consent(ConsentError::ApprovalWindowClosed {
            consent: closed.id().clone(),
            deadline: START + Duration::minutes(10),
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Replay

#[test]
fn an_attestation_is_used_once() {
    let fx = Fixture::new();
    let a = fx.request();
    let b = fx.request();
    let token_a = fx.attest(&fx.full_statement(&a));
    let token_b = fx.attest(&fx.full_statement(&b));
    approved(&fx, &a, &token_a);

    // Presented again for A: A is no longer waiting, so the lifecycle refuses first.
    assert_eq!(
        refused(&fx, &a, Call::Approve, &token_a),
        Error::Consent(ConsentError::AlreadyDecided {
            consent: a.id().clone(),
            status: ConsentStatus::Authorised,
        })
    );

    // Replay proper: B approved, then the same token offered as B's re-authorisation.
    let grant_b = approved(&fx, &b, &token_b);
    assert_eq!(
        refused(&fx, &b, Call::Reauthorise, &token_b),
        attestation(AttestationError::Replayed)
    );
    assert_eq!(
        refused(&fx, &a, Call::Reauthorise, &token_a),
        attestation(AttestationError::Replayed)
    );
    let view = fx.broker.consent(b.id()).unwrap();
    assert_eq!(view.consent.version(), 2);
    assert_eq!(
        view.consent.state(),
        &ConsentState::Authorised { grant: grant_b }
    );
}

#[test]
fn a_jti_already_used_is_a_replay_even_for_another_consent() {
    let fx = Fixture::new();
    let holder = HandHolder::new(&fx, "hand-bank").register(&fx);
    let first = request_at(&fx, &holder.id);
    let second = request_at(&fx, &holder.id);
    approved(
        &fx,
        &first,
        &holder.attest(&fx, &fx.full_statement(&first), "same-jti"),
    );
    let reused = holder.attest(&fx, &fx.full_statement(&second), "same-jti");
    assert_eq!(
        refused_approval(&fx, &second, &reused),
        attestation(AttestationError::Replayed)
    );
    approved(
        &fx,
        &second,
        &holder.attest(&fx, &fx.full_statement(&second), "fresh-jti"),
    );
}

#[test]
fn hand_built_claims_out_of_bounds_are_malformed() {
    let fx = Fixture::new();
    let holder = HandHolder::new(&fx, "hand-bank").register(&fx);
    let request = request_at(&fx, &holder.id);
    let header = eddsa_header(&holder.kid);
    let good = claims(
        &holder.id,
        fx.broker.id(),
        &fx.full_statement(&request),
        fx.broker.now(),
        Duration::minutes(5),
        "bounds",
    );
    for (jti, detail) in [
        ("", "jti must be 1 to 128 bytes"),
        (&*"j".repeat(129), "jti must be 1 to 128 bytes"),
    ] {
        let mut claims = good.clone();
        claims["jti"] = json!(jti);
        assert_eq!(
            refused_approval(&fx, &request, &holder.sign(&header, &claims)),
            attestation(AttestationError::Malformed(detail.into()))
        );
    }
    // An unknown claim, and a prohibited purpose smuggled into a signed statement.
    let mut extra = good.clone();
    extra["nbf"] = json!(0);
    let mut ads = good.clone();
    ads["purpose"] = json!(["customer_service", "ads"]);
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("cid");
    for claims in [extra, ads, missing] {
        let error = refused_approval(&fx, &request, &holder.sign(&header, &claims));
        assert!(
            matches!(error, Error::Attestation(AttestationError::Malformed(_))),
            "{claims}: {error:?}"
        );
    }
    let mut longest = good;
    longest["jti"] = json!("j".repeat(128));
    approved(&fx, &request, &holder.sign(&header, &longest));
}

// ---------------------------------------------------------------------------------------------
// Addressed to something else

#[test]
fn an_attestation_for_another_consent_is_refused() {
    let fx = Fixture::new();
    let a = fx.request();
    let b = fx.request();
    let token_for_a = fx.attest(&fx.full_statement(&a));
    assert_eq!(
        refused_approval(&fx, &b, &token_for_a),
        attestation(AttestationError::WrongConsent)
    );
    approves_afterwards(&fx, &b);
    approved(&fx, &a, &token_for_a);
}

/// The subject approved sharing with one platform; a platform that requested the same consent
/// id cannot use that approval for itself.
#[test]
fn an_attestation_approving_another_platform_is_refused() {
    let fx = Fixture::new();
    let request = fx.request();
    let statement = ApprovalStatement {
        platform: id("other-chat"),
        ..fx.full_statement(&request)
    };
    assert_eq!(
        refused_approval(&fx, &request, &fx.attest(&statement)),
        attestation(AttestationError::WrongPlatform)
    );
    approves_afterwards(&fx, &request);
}

/// What the subject agreed to about unattended access travels with the grant: none at all, and
/// unattended access is refused with its own reason; a lower limit than the bank's, and that
/// limit applies.
#[test]
fn the_attested_unattended_limit_binds_the_grant() {
    let fx = Fixture::new();
    for (agreed, permits) in [(0u32, 0u32), (2, 2)] {
        let request = fx.request();
        let statement = ApprovalStatement {
            unattended_daily_limit: agreed,
            ..fx.full_statement(&request)
        };
        let grant = approved(&fx, &request, &fx.attest(&statement));
        assert_eq!(grant.unattended_daily_limit(), agreed);
        let unattended = AccessRequest {
            presence: Presence::Unattended,
            ..fx.access(request.id())
        };
        for _ in 0..permits {
            assert!(
                fx.broker
                    .authorise_access(&unattended)
                    .unwrap()
                    .decision()
                    .is_permit()
            );
        }
        let expected = if agreed == 0 {
            DenyReason::UnattendedNotApproved
        } else {
            DenyReason::FrequencyExceeded { limit: agreed }
        };
        assert_eq!(
            fx.broker
                .authorise_access(&unattended)
                .unwrap()
                .decision()
                .reasons(),
            [expected]
        );
        // Present access is not limited by it.
        assert!(
            fx.broker
                .authorise_access(&fx.access(request.id()))
                .unwrap()
                .decision()
                .is_permit()
        );
    }
}

#[test]
fn an_attestation_naming_another_subject_is_refused() {
    let fx = Fixture::new();
    let request = fx.request();
    let statement = ApprovalStatement {
        subject: id("mallory"),
        ..fx.full_statement(&request)
    };
    assert_eq!(
        refused_approval(&fx, &request, &fx.attest(&statement)),
        attestation(AttestationError::WrongSubject)
    );
    approves_afterwards(&fx, &request);
}

#[test]
fn an_attestation_for_another_broker_is_refused() {
    let fx = Fixture::new();
    let request = fx.request();
    let other_broker: BrokerId = id("other-broker");
    let token = fx
        .bank_signer()
        .sign(
            &fx.full_statement(&request),
            &other_broker,
            fx.broker.now(),
            &fx.rng,
        )
        .unwrap();
    assert_eq!(
        refused_approval(&fx, &request, &token),
        attestation(AttestationError::WrongAudience)
    );
    approves_afterwards(&fx, &request);
}

#[test]
fn another_holder_signing_for_the_bank_request_is_an_unknown_key() {
    // Keys are looked up among the consent's holder's keys only, so another registered holder's
    // key is unknown here: the key check fails before `iss` is ever read.
    let fx = Fixture::new();
    let other = HandHolder::new(&fx, "other-bank").register(&fx);
    let request = fx.request();
    let token = other
        .signer
        .sign(
            &fx.full_statement(&request),
            fx.broker.id(),
            fx.broker.now(),
            &fx.rng,
        )
        .unwrap();
    assert_eq!(claims_of(&token)["iss"], "other-bank");
    assert_eq!(
        refused_approval(&fx, &request, &token),
        attestation(AttestationError::UnknownKey {
            holder: fx.bank.clone()
        })
    );
    approves_afterwards(&fx, &request);
}

#[test]
fn a_key_shared_by_two_holders_cannot_sign_as_one_for_the_other() {
    // A banking group registers one signing key for two of its banks. A statement issued as
    // bank B passes the key check for bank A's request, and is refused on `iss`.
    let fx = Fixture::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&fx.rng).unwrap();
    let signer_for = |holder: &HolderId| {
        AttestationSigner::new(
            holder.clone(),
            SigningKey::from_pkcs8_der(pkcs8.as_ref()).unwrap(),
        )
        .unwrap()
    };
    let bank_a: HolderId = id("group-bank-a");
    let bank_b: HolderId = id("group-bank-b");
    for holder in [&bank_a, &bank_b] {
        fx.broker
            .register_holder(HolderRegistration {
                id: holder.clone(),
                policy: HolderPolicy::default(),
                attestation_keys: vec![signer_for(holder).public_key()],
            })
            .unwrap();
    }
    let request = request_at(&fx, &bank_a);
    let statement = fx.full_statement(&request);
    let as_b = signer_for(&bank_b)
        .sign(&statement, fx.broker.id(), fx.broker.now(), &fx.rng)
        .unwrap();
    assert_eq!(
        refused_approval(&fx, &request, &as_b),
        attestation(AttestationError::WrongIssuer)
    );
    let as_a = signer_for(&bank_a)
        .sign(&statement, fx.broker.id(), fx.broker.now(), &fx.rng)
        .unwrap();
    approved(&fx, &request, &as_a);
}

// ---------------------------------------------------------------------------------------------
// More than was asked

#[test]
fn a_scope_that_was_not_requested_cannot_be_approved() {
    let fx = Fixture::new();
    let request = fx
        .broker
        .request_consent(ConsentRequestDraft {
            scopes: vec![Scope::Balance.into()],
            ..fx.draft()
        })
        .unwrap();
    let statement = ApprovalStatement {
        scopes: ScopeSet::from([Scope::Balance, Scope::Alerts]),
        ..fx.full_statement(&request)
    };
    assert_eq!(
        refused_approval(&fx, &request, &fx.attest(&statement)),
        attestation(AttestationError::ScopeNotRequested(Scope::Alerts))
    );
    let statement = ApprovalStatement {
        scopes: ScopeSet::from([Scope::Transactions]),
        ..fx.full_statement(&request)
    };
    assert_eq!(
        refused_approval(&fx, &request, &fx.attest(&statement)),
        attestation(AttestationError::ScopeNotRequested(Scope::Transactions))
    );
    approves_afterwards(&fx, &request);
}

#[test]
fn an_account_that_was_not_requested_cannot_be_approved() {
    let fx = Fixture::new();
    let request = fx
        .broker
        .request_consent(ConsentRequestDraft {
            accounts: AccountSelection::Listed(AccountSet::from([fx.current.clone()])),
            ..fx.draft()
        })
        .unwrap();
    let statement = ApprovalStatement {
        accounts: AccountSet::from([fx.current.clone(), fx.savings.clone()]),
        ..fx.full_statement(&request)
    };
    assert_eq!(
        refused_approval(&fx, &request, &fx.attest(&statement)),
        attestation(AttestationError::AccountNotRequested(fx.savings.clone()))
    );
    approves_afterwards(&fx, &request);
}

#[test]
fn a_purpose_that_was_not_requested_cannot_be_approved() {
    let fx = Fixture::new();
    let request = fx
        .broker
        .request_consent(ConsentRequestDraft {
            purposes: vec![Purpose::CustomerService.into()],
            ..fx.draft()
        })
        .unwrap();
    let statement = ApprovalStatement {
        purposes: PurposeSet::from(Purpose::ALL),
        ..fx.full_statement(&request)
    };
    assert_eq!(
        refused_approval(&fx, &request, &fx.attest(&statement)),
        attestation(AttestationError::PurposeNotRequested(
            Purpose::FraudProtection
        ))
    );
    approves_afterwards(&fx, &request);
}

#[test]
fn an_approval_of_nothing_is_refused() {
    let fx = Fixture::new();
    let request = fx.request();
    let full = fx.full_statement(&request);
    for statement in [
        ApprovalStatement {
            scopes: ScopeSet::new(),
            ..full.clone()
        },
        ApprovalStatement {
            purposes: PurposeSet::new(),
            ..full.clone()
        },
        ApprovalStatement {
            accounts: AccountSet::new(),
            ..full.clone()
        },
    ] {
        assert_eq!(
            refused_approval(&fx, &request, &fx.attest(&statement)),
            attestation(AttestationError::NothingApproved),
            "{statement:?}"
        );
    }
    approves_afterwards(&fx, &request);
}

#[test]
fn a_consent_expiry_beyond_the_requested_duration_or_not_in_the_future_is_refused() {
    let fx = Fixture::new();
    let request = fx.request();
    // The approval arrives two minutes after the request: the 90 days count from the approval.
    fx.clock.advance(Duration::minutes(2));
    let max = fx.broker.now() + Duration::days(90);
    for consent_expires_at in [
        max + Duration::seconds(1),
        fx.broker.now() + Duration::days(365),
        fx.broker.now(),
        fx.broker.now() - Duration::days(1),
    ] {
        let statement = ApprovalStatement {
            consent_expires_at,
            ..fx.full_statement(&request)
        };
        assert_eq!(
            refused_approval(&fx, &request, &fx.attest(&statement)),
            attestation(AttestationError::ConsentExpiryOutOfRange {
                consent_exp: consent_expires_at.unix_timestamp(),
                max: max.unix_timestamp(),
            })
        );
    }
    let statement = ApprovalStatement {
        consent_expires_at: max,
        ..fx.full_statement(&request)
    };
    let grant = approved(&fx, &request, &fx.attest(&statement));
    assert_eq!(grant.expires_at(), max);
}

#[test]
fn a_holder_that_lowers_its_maximum_after_the_request_caps_the_approval() {
    let fx = Fixture::new();
    let request = fx.request();
    fx.set_policy(HolderPolicy {
        max_consent_duration: Duration::days(30),
        ..HolderPolicy::default()
    })
    .unwrap();
    let statement = fx.full_statement(&request);
    assert_eq!(statement.consent_expires_at, START + Duration::days(90));
    assert_eq!(
        refused_approval(&fx, &request, &fx.attest(&statement)),
        attestation(AttestationError::ConsentExpiryOutOfRange {
            consent_exp: (START + Duration::days(90)).unix_timestamp(),
            max: (START + Duration::days(30)).unix_timestamp(),
        })
    );
    let statement = ApprovalStatement {
        consent_expires_at: START + Duration::days(30),
        ..statement
    };
    approved(&fx, &request, &fx.attest(&statement));
}

// ---------------------------------------------------------------------------------------------
// Less than was asked, and the subject's choice

#[test]
fn a_partial_approval_grants_exactly_the_subset() {
    let fx = Fixture::new();
    let request = fx.request();
    let statement = ApprovalStatement {
        scopes: ScopeSet::from([Scope::Alerts]),
        purposes: PurposeSet::from([Purpose::FraudProtection]),
        accounts: AccountSet::from([fx.savings.clone()]),
        consent_expires_at: START + Duration::days(7),
        ..fx.full_statement(&request)
    };
    let token = fx.attest(&statement);
    let grant = approved(&fx, &request, &token);
    assert_eq!(
        grant_parts(&grant),
        (
            ScopeSet::from([Scope::Alerts]),
            PurposeSet::from([Purpose::FraudProtection]),
            AccountSet::from([fx.savings.clone()]),
            START,
            START + Duration::days(7),
        )
    );
    // What was not approved is not permitted.
    let access = AccessRequest {
        scope: Scope::Balance.into(),
        purpose: Purpose::CustomerService.into(),
        account: fx.current.clone(),
        ..fx.access(request.id())
    };
    assert_eq!(
        fx.decide(&access),
        Decision::Deny {
            reasons: vec![
                DenyReason::ScopeNotGranted {
                    scope: Scope::Balance
                },
                DenyReason::PurposeNotGranted {
                    purpose: Purpose::CustomerService
                },
                DenyReason::AccountNotGranted {
                    account: fx.current.clone()
                },
            ]
        }
    );
    let access = AccessRequest {
        scope: Scope::Alerts.into(),
        purpose: Purpose::FraudProtection.into(),
        account: fx.savings.clone(),
        ..fx.access(request.id())
    };
    assert_eq!(fx.decide(&access), Decision::Permit);
}

#[test]
fn when_the_subject_chooses_the_bank_may_attest_any_account() {
    let fx = Fixture::new();
    let request = fx
        .broker
        .request_consent(ConsentRequestDraft {
            accounts: AccountSelection::SubjectChooses,
            ..fx.draft()
        })
        .unwrap();
    let chosen: AccountId = id("acc-joint-42");
    let statement = ApprovalStatement {
        accounts: AccountSet::from([chosen.clone(), fx.savings.clone()]),
        ..fx.full_statement(&request)
    };
    let grant = approved(&fx, &request, &fx.attest(&statement));
    assert_eq!(
        grant.accounts(),
        &AccountSet::from([chosen, fx.savings.clone()])
    );
}

// ---------------------------------------------------------------------------------------------
// Re-authorisation

fn reauthorised(fx: &Fixture, request: &ConsentRequest, token: &str, version: u64) -> Grant {
    let seq = fx.audit_len();
    let consent = fx.broker.reauthorise(request.id(), token).unwrap();
    assert_eq!(consent.version(), version);
    let ConsentState::Authorised { grant } = consent.state() else {
        panic!("not authorised: {consent:?}");
    };
    let expected = AuditEntry {
        seq,
        at: fx.broker.now(),
        actor: Actor::Holder(request.holder().clone()),
        event: AuditEvent::ConsentReauthorised {
            consent: request.id().clone(),
            subject: fx.pseudonym(request.subject()),
            attestation_id: jti_of(token),
            attestation: None,
            attestation_digest: Some(consent_broker::privacy::commitment(token.as_bytes())),
            sealed_attestation: None,
        },
    };
    assert_sealed_approval(fx, request, token, seq, expected);
    assert_eq!(fx.broker.consent(request.id()).unwrap().consent, consent);
    grant.clone()
}

#[test]
fn a_reauthorisation_extends_the_grant() {
    let fx = Fixture::new();
    let request = fx.request();
    let first = ApprovalStatement {
        consent_expires_at: START + Duration::days(30),
        ..fx.full_statement(&request)
    };
    approved(&fx, &request, &fx.attest(&first));

    fx.clock.advance(Duration::days(20));
    let renewed = fx.full_statement(&request);
    assert_eq!(renewed.consent_expires_at, START + Duration::days(110));
    let token = fx.attest(&renewed);
    let grant = reauthorised(&fx, &request, &token, 3);
    assert_eq!(
        grant_parts(&grant),
        (
            ScopeSet::from([Scope::Balance, Scope::Alerts]),
            PurposeSet::from(Purpose::ALL),
            AccountSet::from([fx.current.clone(), fx.savings.clone()]),
            START + Duration::days(20),
            START + Duration::days(110),
        )
    );
    // Past the first expiry, the grant still permits.
    fx.clock.advance(Duration::days(15));
    assert_eq!(fx.decide(&fx.access(request.id())), Decision::Permit);
}

#[test]
fn a_reauthorisation_that_does_not_extend_is_refused() {
    let fx = Fixture::new();
    let request = fx.request();
    let current_expiry = START + Duration::days(30);
    approved(
        &fx,
        &request,
        &fx.attest(&ApprovalStatement {
            consent_expires_at: current_expiry,
            ..fx.full_statement(&request)
        }),
    );
    fx.clock.advance(Duration::days(1));
    for consent_expires_at in [current_expiry, current_expiry - Duration::days(10)] {
        let token = fx.attest(&ApprovalStatement {
            consent_expires_at,
            ..fx.full_statement(&request)
        });
        assert_eq!(
            refused(&fx, &request, Call::Reauthorise, &token),
            Error::Consent(ConsentError::DoesNotExtend {
                consent: request.id().clone(),
                current_expiry,
            })
        );
    }
    let view = fx.broker.consent(request.id()).unwrap();
    assert_eq!(view.consent.version(), 2);
    assert_eq!(view.consent.grant().unwrap().expires_at(), current_expiry);

    let token = fx.attest(&ApprovalStatement {
        consent_expires_at: current_expiry + Duration::seconds(1),
        ..fx.full_statement(&request)
    });
    let grant = reauthorised(&fx, &request, &token, 3);
    assert_eq!(grant.expires_at(), current_expiry + Duration::seconds(1));
}

#[test]
fn a_revoked_consent_cannot_be_reauthorised() {
    let fx = Fixture::new();
    let request = fx.granted();
    fx.revoke(
        request.id(),
        Revoker::Subject,
        RevocationReason::SubjectWithdrew,
    )
    .unwrap();
    fx.clock.advance(Duration::minutes(1));
    let token = fx.attest(&fx.full_statement(&request));
    assert_eq!(
        refused(&fx, &request, Call::Reauthorise, &token),
        Error::Consent(ConsentError::NotLive {
            consent: request.id().clone(),
            status: ConsentStatus::Revoked {
                by: Revoker::Subject,
                reason: RevocationReason::SubjectWithdrew,
            },
        })
    );
    let view = fx.broker.consent(request.id()).unwrap();
    assert_eq!(view.consent.version(), 3);
    assert!(matches!(view.consent.state(), ConsentState::Revoked { .. }));
}

#[test]
fn a_request_never_approved_or_a_grant_that_expired_cannot_be_reauthorised() {
    let fx = Fixture::new();
    let pending = fx.request();
    let token = fx.attest(&fx.full_statement(&pending));
    assert_eq!(
        refused(&fx, &pending, Call::Reauthorise, &token),
        Error::Consent(ConsentError::NotLive {
            consent: pending.id().clone(),
            status: ConsentStatus::Requested,
        })
    );
    assert_still_requested(&fx, &pending);

    let short = fx.request();
    approved(
        &fx,
        &short,
        &fx.attest(&ApprovalStatement {
            consent_expires_at: START + Duration::days(1),
            ..fx.full_statement(&short)
        }),
    );
    fx.clock.advance(Duration::days(1));
    let token = fx.attest(&fx.full_statement(&short));
    assert_eq!(
        refused(&fx, &short, Call::Reauthorise, &token),
        Error::Consent(ConsentError::NotLive {
            consent: short.id().clone(),
            status: ConsentStatus::Expired,
        })
    );
}

/// What an attestation that cannot be read is refused with, logged and answered, holds nothing
/// of the input: not even where the parser's message would quote a value holding its own quote
/// (serde's backticks are never escaped, and a `"` in a value it quotes with `{:?}` is `\"`),
/// which a redaction of the quoted runs took for the run's end. Anyone may post an attestation
/// for a consent the published log shows pending: what is not the holder's is answered and not
/// logged; what the holder signed is logged, its claims' text left out all the same.
#[test]
fn an_unreadable_attestations_refusal_holds_nothing_of_its_input() {
    let fx = Fixture::new();
    let secret = "Alice Smith, IBAN DE89370400440532013000";
    let leaks = |texts: &[&str]| {
        for text in texts {
            for part in ["Alice", "DE89", "8937040044053201"] {
                assert!(!text.contains(part), "{part} in {text}");
            }
        }
    };
    // Anyone's: headers naming the secret, a header that is not JSON, a number where a string
    // belongs.
    let request = fx.request();
    let mut posted: Vec<String> = [
        json!({"alg": format!("x`{secret}`y"), "typ": "JWT"}),
        json!({"alg": "EdDSA", "jwk": format!("x\"{secret}\"y")}),
    ]
    .iter()
    .map(|header| format!("{}.{}.{}", b64(header.to_string()), b64("{}"), b64("sig")))
    .collect();
    posted.push(format!("{}.e30.c2ln", b64(format!("{{\"alg\":{secret}"))));
    posted.push(format!(
        "{}.e30.c2ln",
        b64(r#"{"alg":"EdDSA","kid":89370400440532013000}"#)
    ));
    for attestation in &posted {
        let before = fx.audit_len();
        let error = fx.broker.approve(request.id(), attestation).unwrap_err();
        let Error::Attestation(AttestationError::Malformed(message)) = &error else {
            panic!("not refused as malformed: {error:?}");
        };
        assert!(message.starts_with("header: "), "{message}");
        assert_eq!(fx.audit_len(), before, "not the holder's: not logged");
        let answered = consent_broker::privacy::unquoted(&error.to_string());
        leaks(&[&error.to_string(), &format!("{error:?}"), &answered]);
    }
    // The holder's own, with claims that name the secret where a scope or a number belongs:
    // logged, as the crate's words.
    let (holder, request, claims) = hand_holder_claims(&fx, "secret-1");
    for (claim, value) in [
        ("scope", json!([format!("x`{secret}`y")])),
        ("consent_exp", json!(format!("x\"{secret}\"y"))),
        // Beyond a u32: the parser would quote the number.
        (
            "unattended_daily_limit",
            json!(9_893_704_004_405_320_130_u64),
        ),
    ] {
        let mut claims = claims.clone();
        claims[claim] = value;
        let attestation = holder.sign(&eddsa_header(&holder.kid), &claims);
        let error = refused_approval(&fx, &request, &attestation);
        let Error::Attestation(AttestationError::Malformed(message)) = &error else {
            panic!("not refused as malformed: {error:?}");
        };
        assert!(message.starts_with("claims: "), "{message}");
        let logged = serde_json::to_string(fx.audit().last().unwrap()).unwrap();
        assert!(logged.contains(message.as_str()), "{logged}");
        let answered = consent_broker::privacy::unquoted(&error.to_string());
        leaks(&[
            &logged,
            &error.to_string(),
            &format!("{error:?}"),
            &answered,
        ]);
    }
}

/// What the holder's key signed for something else is not logged in the holder's name: an
/// instruction the log publishes, the attestation of another person's consent, a used one, and
/// the right one once expired. Each is refused, and the log does not grow; the holder's current
/// attestation about the consent, refused as it approves too much, is logged.
#[test]
fn what_the_holders_key_signed_for_something_else_is_not_logged_in_its_name() {
    let fx = Fixture::new();
    let pending = fx.request();
    let instruction = fx
        .bank_signer()
        .sign_instruction(
            &Instruction::SetPolicy {
                policy: HolderPolicy::default(),
            },
            fx.broker.id(),
            fx.broker.now(),
            &fx.rng,
        )
        .unwrap();
    let others = fx.request();
    let for_another = fx.attest(&fx.full_statement(&others));
    let granted = fx.granted();
    let used = fx.attest(&fx.full_statement(&granted));
    fx.broker.approve(granted.id(), &used).ok();
    let current = fx.attest(&fx.full_statement(&pending));
    let before = fx.audit_len();
    for (posted, times) in [(&instruction, 3), (&for_another, 3)] {
        for _ in 0..times {
            assert!(fx.broker.approve(pending.id(), posted).is_err());
        }
    }
    assert_eq!(
        fx.audit_len(),
        before,
        "nothing logged in the holder's name"
    );
    // The holder's current one about it, approving a scope not asked for: logged once.
    let mut wider = fx.full_statement(&pending);
    wider.scopes = ScopeSet::from([Scope::Transactions]);
    assert_eq!(
        refused_approval(&fx, &pending, &fx.attest(&wider)),
        Error::Attestation(AttestationError::ScopeNotRequested(Scope::Transactions))
    );
    assert_eq!(fx.audit_len(), before + 1);
    // The right attestation once expired (and the request's window with it): not logged.
    fx.clock
        .advance(MAX_ATTESTATION_LIFETIME + ATTESTATION_LEEWAY);
    assert!(fx.broker.approve(pending.id(), &current).is_err());
    assert_eq!(fx.audit_len(), before + 1);
}
