//! DPoP proofs (RFC 9449), as a thief with a copied token or a copied proof would try them:
//! another request, another token, another key, an old proof, a hand-made proof with a private
//! key, no signature, or key material pointed at elsewhere. Each is refused with its own reason.

use consent_broker::dpop::{
    CheckedProof, DEFAULT_PROOF_WINDOW, DpopError, DpopSigner, HttpRequest, MAX_PROOF_LEN,
    check_proof, normalise_htu, token_hash,
};
use consent_broker::time::Duration;
use consent_broker::*;
use serde_json::{Value, json};

use crate::support::*;
use crate::targets;

const URL: &str = "https://bank.example/v1/balance";
const GET: HttpRequest<'static> = HttpRequest {
    method: "GET",
    url: URL,
};
const TOKEN: &str = "header.payload.signature";

fn signer(seed: u8) -> DpopSigner {
    DpopSigner::new(SigningKey::from_seed(&[seed; 32]).unwrap()).unwrap()
}

fn proof(signer: &DpopSigner, request: &HttpRequest<'_>, token: &str) -> String {
    signer
        .proof(request, token, START, &SeededRandom::new(5))
        .unwrap()
}

/// The `jti` claim of `proof`, read without checking it.
fn jti(proof: &str) -> String {
    let claims = proof.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims).unwrap(),
    )
    .unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

fn check(proof: &str, jkt: &str) -> Result<CheckedProof, DpopError> {
    check_proof(proof, &GET, TOKEN, jkt, DEFAULT_PROOF_WINDOW, START)
}

/// A hand-made proof: `header` and `claims` signed with the key of seed `seed` (32 copies).
fn crafted(header: &Value, claims: &Value, seed: u8) -> String {
    targets::sign_jws(&header.to_string(), &claims.to_string(), seed)
}

fn public_jwk(seed: u8) -> Value {
    json!({
        "kty": "OKP", "crv": "Ed25519",
        "x": signer(seed).public_key().to_base64url(),
    })
}

fn good_claims() -> Value {
    json!({
        "jti": "proof-id-0123456789", "htm": "GET", "htu": URL,
        "iat": START.unix_timestamp(), "ath": token_hash(TOKEN),
    })
}

#[test]
fn a_proof_made_for_the_request_and_token_is_accepted_once_per_jti() {
    let platform = signer(7);
    let made = proof(&platform, &GET, TOKEN);
    let checked = check(&made, platform.thumbprint()).unwrap();
    assert_eq!(checked.iat, START.unix_timestamp());
    assert!(checked.jti.len() >= 16);
    // Two proofs never share a jti (the gate remembers them), even with the same random bytes;
    // a proof made later sorts later (the gate's table takes them at its edge), made at the same
    // time by the same signer or a second later by another.
    let other = platform
        .proof(&GET, TOKEN, START, &SeededRandom::new(5))
        .unwrap();
    let other_jti = check(&other, platform.thumbprint()).unwrap().jti;
    assert!(other_jti > checked.jti, "{other_jti} {}", checked.jti);
    let second = signer(8);
    let later = second
        .proof(
            &GET,
            TOKEN,
            START + Duration::seconds(1),
            &SeededRandom::new(5),
        )
        .unwrap();
    let later_jti = check(&later, second.thumbprint()).unwrap().jti;
    assert!(later_jti > other_jti, "{later_jti} {other_jti}");
    // Each origin has its own count within the second: the signer's first proof for another
    // bank sorts before its second one for this bank (nothing in it counts this bank's).
    let elsewhere = HttpRequest {
        method: "GET",
        url: "https://other-bank.example/v1/balance",
    };
    let first_elsewhere = platform
        .proof(&elsewhere, TOKEN, START, &SeededRandom::new(5))
        .unwrap();
    let first_elsewhere = jti(&first_elsewhere);
    assert!(first_elsewhere < other_jti, "{first_elsewhere} {other_jti}");
    assert_eq!(platform.thumbprint(), platform.public_key().thumbprint());
}

#[test]
fn a_proof_for_another_request_token_or_key_is_refused() {
    let platform = signer(7);
    let jkt = platform.thumbprint();
    let post = HttpRequest {
        method: "POST",
        url: URL,
    };
    assert_eq!(
        check(&proof(&platform, &post, TOKEN), jkt),
        Err(DpopError::MethodMismatch)
    );
    let lower = HttpRequest {
        method: "get",
        url: URL,
    };
    assert_eq!(
        check(&proof(&platform, &lower, TOKEN), jkt),
        Err(DpopError::MethodMismatch),
        "the method is compared exactly"
    );
    for url in [
        "https://bank.example/v1/transactions",
        "https://bank.example/v1/balance/",
        "http://bank.example/v1/balance",
        "https://evil.example/v1/balance",
        "https://bank.example:8443/v1/balance",
    ] {
        let elsewhere = HttpRequest { method: "GET", url };
        assert_eq!(
            check(&proof(&platform, &elsewhere, TOKEN), jkt),
            Err(DpopError::UrlMismatch),
            "{url}"
        );
    }
    assert_eq!(
        check(&proof(&platform, &GET, "another.access.token"), jkt),
        Err(DpopError::TokenHashMismatch)
    );
    // A thief with the token but another key: the token names the platform's key.
    let thief = signer(8);
    assert_eq!(
        check(&proof(&thief, &GET, TOKEN), jkt),
        Err(DpopError::KeyMismatch)
    );
}

#[test]
fn the_url_is_compared_without_query_fragment_case_or_default_port() {
    let platform = signer(7);
    for url in [
        "https://bank.example/v1/balance?account=1",
        "HTTPS://Bank.Example/v1/balance#x",
        "https://bank.example:443/v1/balance",
    ] {
        let same = HttpRequest { method: "GET", url };
        check(&proof(&platform, &same, TOKEN), platform.thumbprint())
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
    assert_eq!(
        normalise_htu("https://Bank.example:443"),
        Some("https://bank.example/".into())
    );
    assert_eq!(
        normalise_htu("http://bank.example:80/a?b#c"),
        Some("http://bank.example/a".into())
    );
    // The port is a number: leading zeros and the default port written oddly compare equal.
    assert_eq!(
        normalise_htu("https://bank.example:0443/a"),
        Some("https://bank.example/a".into())
    );
    assert_eq!(
        normalise_htu("https://bank.example:8443/a"),
        Some("https://bank.example:8443/a".into())
    );
    assert_eq!(
        normalise_htu("https://[::1]:443/a"),
        Some("https://[::1]/a".into())
    );
    for invalid in [
        // Found by the fuzzer: a doubled default port once lost one `:443` per pass.
        "HTTPS://B]nk.Exa:443:443/v1",
        "https://bank.example:443:443/",
        "https://bank.example:/",
        "https://bank.example:65536/",
        "https://bank.example:44a/",
        "https://[::1/",
        "https://[]/",
        "https://[::1]x/",
        "https://:443/",
        "",
        "bank.example/v1",
        "ftp://bank.example/",
        "https:///v1",
        "https://user@bank.example/",
        "https://bank example/",
    ] {
        assert_eq!(normalise_htu(invalid), None, "{invalid}");
    }
    let bad_request = HttpRequest {
        method: "GET",
        url: "/v1/balance",
    };
    assert_eq!(
        check_proof(
            &proof(&platform, &GET, TOKEN),
            &bad_request,
            TOKEN,
            platform.thumbprint(),
            DEFAULT_PROOF_WINDOW,
            START
        ),
        Err(DpopError::InvalidRequestUrl)
    );
}

#[test]
fn a_proof_is_good_only_within_its_window() {
    let platform = signer(7);
    let jkt = platform.thumbprint();
    let made = proof(&platform, &GET, TOKEN);
    let at = |now| check_proof(&made, &GET, TOKEN, jkt, DEFAULT_PROOF_WINDOW, now);
    at(START + DEFAULT_PROOF_WINDOW).unwrap();
    assert_eq!(
        at(START + DEFAULT_PROOF_WINDOW + Duration::seconds(1)),
        Err(DpopError::TooOld)
    );
    at(START - MAX_LEEWAY).unwrap();
    assert_eq!(
        at(START - MAX_LEEWAY - Duration::seconds(1)),
        Err(DpopError::IssuedInFuture)
    );
    // A window wider than the maximum is clamped to it.
    assert_eq!(
        check_proof(
            &made,
            &GET,
            TOKEN,
            jkt,
            Duration::days(1),
            START + Duration::minutes(6)
        ),
        Err(DpopError::TooOld)
    );
}

#[test]
fn hand_made_proofs_are_refused_for_what_they_get_wrong() {
    let jkt = signer(7).public_key().thumbprint();
    let header = json!({ "typ": "dpop+jwt", "alg": "EdDSA", "jwk": public_jwk(7) });
    check(&crafted(&header, &good_claims(), 7), &jkt).unwrap();
    let with = |member: &str, value: Value| {
        let mut header = header.clone();
        header[member] = value;
        crafted(&header, &good_claims(), 7)
    };
    let mut private = public_jwk(7);
    private["d"] = json!(b64([7; 32]));
    for (proof, expected) in [
        (with("typ", json!("JWT")), DpopError::WrongType),
        (with("alg", json!("none")), DpopError::AlgorithmNone),
        (with("alg", json!("HS256")), DpopError::UnsupportedAlgorithm),
        (with("crit", json!(["exp"])), DpopError::CriticalHeader),
        (
            with("jku", json!("https://evil.example/jwks")),
            DpopError::ForbiddenHeader("jku".into()),
        ),
        (
            with("kid", json!(jkt.clone())),
            DpopError::ForbiddenHeader("kid".into()),
        ),
        (with("jwk", private), DpopError::PrivateKey),
        (with("jwk", json!("x")), DpopError::BadKey),
        (
            with(
                "jwk",
                json!({ "kty": "EC", "crv": "P-256", "x": "AA", "y": "AA" }),
            ),
            DpopError::BadKey,
        ),
        (
            with(
                "jwk",
                json!({ "kty": "OKP", "crv": "Ed25519", "x": "AAAA" }),
            ),
            DpopError::BadKey,
        ),
        // Signed by another key than the one in its header.
        (crafted(&header, &good_claims(), 9), DpopError::BadSignature),
    ] {
        assert_eq!(check(&proof, &jkt), Err(expected));
    }
    let claim = |claim: &str, problem| DpopError::Claim {
        claim: claim.to_owned(),
        problem,
    };
    for (name, value, expected) in [
        ("jti", json!("short"), claim("jti", ClaimProblem::Invalid)),
        // Long enough, but with a control character (a NUL, which PostgreSQL's text refuses:
        // the ledger would fail, not the proof) or a line break.
        (
            "jti",
            json!("proof-id-0123456789\u{0}"),
            claim("jti", ClaimProblem::Invalid),
        ),
        (
            "jti",
            json!("proof-id-\n0123456789"),
            claim("jti", ClaimProblem::Invalid),
        ),
        ("htm", json!(1), claim("htm", ClaimProblem::WrongType)),
        ("iat", json!(1.5), claim("iat", ClaimProblem::WrongType)),
        ("ath", Value::Null, claim("ath", ClaimProblem::WrongType)),
    ] {
        let mut claims = good_claims();
        claims[name] = value;
        assert_eq!(check(&crafted(&header, &claims, 7), &jkt), Err(expected));
    }
    let mut no_ath = good_claims();
    no_ath.as_object_mut().unwrap().remove("ath");
    assert_eq!(
        check(&crafted(&header, &no_ath, 7), &jkt),
        Err(claim("ath", ClaimProblem::Missing))
    );
}

#[test]
fn malformed_proofs_get_typed_errors() {
    let jkt = signer(7).public_key().thumbprint();
    assert_eq!(check("", &jkt), Err(DpopError::Missing));
    assert_eq!(
        check("a.b", &jkt),
        Err(DpopError::SegmentCount { segments: 2 })
    );
    assert_eq!(
        check("a.b.c.d", &jkt),
        Err(DpopError::SegmentCount { segments: 4 })
    );
    assert_eq!(
        check("a+b.c.d", &jkt),
        Err(DpopError::Base64(TokenPart::Header))
    );
    let long = "a".repeat(MAX_PROOF_LEN + 1);
    assert_eq!(
        check(&long, &jkt),
        Err(DpopError::TooLarge {
            len: MAX_PROOF_LEN + 1
        })
    );
    // A valid proof with one payload byte changed no longer verifies.
    let made = proof(&signer(7), &GET, TOKEN);
    let mut parts: Vec<String> = made.split('.').map(str::to_owned).collect();
    let mut claims: Value = serde_json::from_slice(&unb64(&parts[1])).unwrap();
    claims["htm"] = json!("GET ");
    parts[1] = b64(claims.to_string().as_bytes());
    assert_eq!(check(&parts.join("."), &jkt), Err(DpopError::BadSignature));
    // Good claims wrapped in serde_json's private raw-value member, signed by the proof's key:
    // a build whose serde_json has `raw_value` on would unwrap them, one without would not.
    // Refused as malformed in every build.
    let header = json!({ "typ": "dpop+jwt", "alg": "EdDSA", "jwk": public_jwk(7) });
    let wrapped = json!({ "$serde_json::private::RawValue": good_claims().to_string() });
    assert_eq!(
        check(&crafted(&header, &wrapped, 7), &jkt),
        Err(DpopError::Json(TokenPart::Payload))
    );
    // The same for a header.
    let wrapped = json!({ "$serde_json::private::RawValue": header.to_string() });
    assert_eq!(
        check(&crafted(&wrapped, &good_claims(), 7), &jkt),
        Err(DpopError::Json(TokenPart::Header))
    );
}
