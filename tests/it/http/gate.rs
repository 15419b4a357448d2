//! The holder gate through HTTP: each refusal with its status, problem type and
//! `WWW-Authenticate` challenge; hostile input gets a typed 4xx, never a 5xx or a hang.

use std::time::Duration as StdDuration;

use consent_broker::dpop::{DpopSigner, HttpRequest};
use consent_broker::http::{ClientError, PROBLEM_BASE, ProblemDetails};
use consent_broker::time::Duration;
use consent_broker::*;
use reqwest::StatusCode;

use super::World;

/// A raw answer: status, headers of interest, the problem document if one came.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    challenge: Option<String>,
    retry_after: Option<String>,
    problem: Option<ProblemDetails>,
}

async fn answer(response: reqwest::Response) -> Answer {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let status = response.status();
    let challenge = header("www-authenticate");
    let retry_after = header("retry-after");
    let is_problem = header("content-type").as_deref() == Some("application/problem+json");
    let bytes = response.bytes().await.unwrap();
    Answer {
        status,
        challenge,
        retry_after,
        problem: is_problem.then(|| serde_json::from_slice(&bytes).unwrap()),
    }
}

fn raw() -> reqwest::Client {
    super::raw_client()
}

fn proof_for(world: &World, signer: &DpopSigner, url: &str, token: &str) -> String {
    signer
        .proof(
            &HttpRequest { method: "GET", url },
            token,
            world.broker.now(),
            &SystemRandom::new(),
        )
        .unwrap()
}

/// `token` at the data endpoint with a fresh proof of the platform's key, as raw HTTP.
async fn present(world: &World, token: &str) -> Answer {
    let proof = proof_for(world, &platform_signer(), &world.data_url(), token);
    answer(
        raw()
            .get(world.data_url())
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// The platform's signer (the same key the world's client holds).
fn platform_signer() -> DpopSigner {
    consent_broker::testing::TestBroker::memory().sender
}

/// Asserts a refusal's status, problem type and challenge error (`None`: no challenge).
fn assert_refused(answer: &Answer, status: u16, code: &str, challenge: Option<&str>) {
    assert_eq!(answer.status.as_u16(), status, "{answer:?}");
    let problem = answer.problem.as_ref().expect("a problem document");
    assert_eq!(problem.kind, format!("{PROBLEM_BASE}{code}"), "{answer:?}");
    assert_eq!(problem.status, status);
    match challenge {
        Some(error) => {
            let header = answer
                .challenge
                .as_deref()
                .expect("a WWW-Authenticate challenge");
            assert!(header.starts_with("DPoP algs=\"EdDSA\""), "{header}");
            assert!(header.contains(&format!("error=\"{error}\"")), "{header}");
        }
        None => assert_eq!(answer.challenge, None, "{answer:?}"),
    }
}

/// The typed refusal a client gets, with its status.
fn refusal(result: Result<Response, ClientError>) -> (u16, GateRefusal, Option<u64>) {
    match result {
        Err(ClientError::Refused {
            status,
            refusal,
            journal_seq,
        }) => (status, refusal, journal_seq),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_access_goes_through_the_gate_sealed_to_the_device_and_journalled_first() {
    let world = World::new().await;
    let token = world.token();
    let served = world.client.fetch(&world.data_url(), &token).await.unwrap();
    let Response::Sealed(sealed) = served else {
        panic!("the bank sealed it")
    };
    let AccountData::Balance(balance) = open_response(&sealed, &world.device).unwrap() else {
        panic!("a balance")
    };
    assert_eq!(balance.account, world.current);
    assert_eq!(balance.available.minor_units, 4_200);
    assert_eq!(world.journalled(AuditKind::AccessServed), 1);
    // The response's context names the journal entry that recorded it.
    let entries = world
        .bank
        .journal()
        .audit_entries(sealed.context.sequence..sealed.context.sequence + 1)
        .unwrap();
    assert_eq!(entries[0].event.kind(), AuditKind::AccessServed);
    world.bank_server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_usable_credentials_are_challenged_and_never_reach_the_gate() {
    let world = World::new().await;
    let url = world.data_url();
    let token = world.token();
    // No Authorization: the bare challenge (RFC 6750 §3.1: no error code).
    let none = answer(raw().get(&url).send().await.unwrap()).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        none.problem.unwrap().kind,
        format!("{PROBLEM_BASE}gate/unauthenticated")
    );
    assert_eq!(none.challenge.as_deref(), Some("DPoP algs=\"EdDSA\""));
    // The DPoP-bound token as a bearer token (RFC 9449 §7.2).
    let bearer = raw()
        .get(&url)
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_refused(
        &answer(bearer).await,
        401,
        "gate/wrong_scheme",
        Some("invalid_token"),
    );
    // Two Authorization headers.
    let twice = raw()
        .get(&url)
        .header("authorization", format!("DPoP {token}"))
        .header("authorization", format!("DPoP {token}"))
        .send()
        .await
        .unwrap();
    assert_refused(
        &answer(twice).await,
        400,
        "gate/invalid_request",
        Some("invalid_request"),
    );
    // Two DPoP headers.
    let signer = platform_signer();
    let proof = proof_for(&world, &signer, &url, &token);
    let two_proofs = raw()
        .get(&url)
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", &proof)
        .header("dpop", &proof)
        .send()
        .await
        .unwrap();
    assert_refused(
        &answer(two_proofs).await,
        401,
        "gate/proof",
        Some("invalid_dpop_proof"),
    );
    // A token whose signature does not verify: refused, and not journalled (anyone can send
    // one).
    let mut forged = token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let proof = proof_for(&world, &signer, &url, &forged);
    let bad = raw()
        .get(&url)
        .header("authorization", format!("DPoP {forged}"))
        .header("dpop", proof)
        .send()
        .await
        .unwrap();
    let bad = answer(bad).await;
    assert_refused(&bad, 401, "gate/token", Some("invalid_token"));
    let problem = bad.problem.unwrap();
    assert!(
        matches!(problem.refusal, Some(GateRefusal::Token(_))),
        "{problem:?}"
    );
    assert_eq!(problem.journal_seq, None);
    assert_eq!(world.journalled(AuditKind::AccessRefusedAtGate), 0);
    assert_eq!(world.journalled(AuditKind::AccessServed), 0);
    world.bank_server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_refusals_are_invalid_dpop_proof_and_journalled() {
    let world = World::new().await;
    let url = world.data_url();
    let signer = platform_signer();
    // No proof at all.
    let token = world.token();
    let missing = raw()
        .get(&url)
        .header("authorization", format!("DPoP {token}"))
        .send()
        .await
        .unwrap();
    let missing = answer(missing).await;
    assert_refused(&missing, 401, "gate/proof", Some("invalid_dpop_proof"));
    let problem = missing.problem.unwrap();
    assert_eq!(
        problem.refusal,
        Some(GateRefusal::Proof(dpop::DpopError::Missing))
    );
    assert!(
        problem.journal_seq.is_some(),
        "a verified token's refusal is journalled"
    );
    // A proof for another URL.
    let elsewhere = proof_for(&world, &signer, "http://127.0.0.1:1/v1/data", &token);
    let wrong = raw()
        .get(&url)
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", elsewhere)
        .send()
        .await
        .unwrap();
    assert_refused(
        &answer(wrong).await,
        401,
        "gate/proof",
        Some("invalid_dpop_proof"),
    );
    // A proof for this URL but another method.
    let post = signer
        .proof(
            &HttpRequest {
                method: "POST",
                url: &url,
            },
            &token,
            world.broker.now(),
            &SystemRandom::new(),
        )
        .unwrap();
    let wrong_method = raw()
        .get(&url)
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", post)
        .send()
        .await
        .unwrap();
    assert_refused(
        &answer(wrong_method).await,
        401,
        "gate/proof",
        Some("invalid_dpop_proof"),
    );
    // Garbage in the DPoP header.
    let garbage = raw()
        .get(&url)
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", "eyJ.not.a-proof")
        .send()
        .await
        .unwrap();
    assert_refused(
        &answer(garbage).await,
        401,
        "gate/proof",
        Some("invalid_dpop_proof"),
    );
    // A proof used twice: the first request is served, the replay refused.
    let proof = proof_for(&world, &signer, &url, &token);
    let send = || {
        raw()
            .get(&url)
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof.clone())
            .send()
    };
    assert_eq!(send().await.unwrap().status(), StatusCode::OK);
    let replayed = answer(send().await.unwrap()).await;
    assert_refused(&replayed, 401, "gate/proof", Some("invalid_dpop_proof"));
    assert_eq!(
        replayed.problem.unwrap().refusal,
        Some(GateRefusal::Proof(dpop::DpopError::Replayed))
    );
    assert_eq!(world.journalled(AuditKind::AccessRefusedAtGate), 5);
    world.bank_server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_or_revoked_token_is_invalid_token_with_the_typed_reason() {
    let world = World::new().await;
    let url = world.data_url();
    let token = world.token();
    world.client.fetch(&url, &token).await.unwrap();
    // The same token again, with a fresh proof: taken once.
    let (status, reason, seq) = refusal(world.client.fetch(&url, &token).await);
    assert_eq!((status, reason), (401, GateRefusal::TokenReplayed));
    assert!(seq.is_some());
    // Revoked on the platform: the bank refuses once its feed says so.
    let token = world.token();
    world
        .broker
        .revoke(
            &world.consent,
            Revoker::Subject,
            RevocationReason::SubjectWithdrew,
        )
        .unwrap();
    world.sync();
    let (status, reason, _) = refusal(world.client.fetch(&url, &token).await);
    assert_eq!((status, reason), (401, GateRefusal::RevokedAtPlatform));
    world.bank_server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_at_the_bank_is_invalid_token_at_once() {
    let world = World::new().await;
    let token = world.token();
    world
        .bank
        .revoke(
            &world.customer,
            &world.consent,
            Revoker::Subject,
            RevocationReason::SubjectWithdrew,
        )
        .unwrap();
    let raw_answer = present(&world, &token).await;
    assert_refused(
        &raw_answer,
        401,
        "gate/revoked_at_bank",
        Some("invalid_token"),
    );
    assert_eq!(
        raw_answer.problem.unwrap().refusal,
        Some(GateRefusal::RevokedAtBank {
            by: Revoker::Subject
        })
    );
    world.bank_server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_banks_policy_and_the_account_owner_are_insufficient_scope() {
    // The bank stops sharing balances.
    let world = World::new().await;
    let token = world.token();
    let mut policy = world.bank.policy().unwrap().unwrap().policy;
    policy.enabled_scopes = ScopeSet::from([Scope::Alerts]);
    policy.plaintext = PlaintextUses::new();
    world.bank.set_policy(policy).unwrap();
    let refused = present(&world, &token).await;
    assert_refused(
        &refused,
        403,
        "gate/policy_forbids_scope",
        Some("insufficient_scope"),
    );
    world.bank_server.stop().await;

    // The bank's account system says the account is someone else's.
    let world = World::build(MemoryStore::new(), GateSettings::default(), |accounts| {
        accounts.with(
            AccountId::new("acc-current").unwrap(),
            SubjectId::new("someone-else").unwrap(),
        )
    })
    .await;
    assert_eq!(world.access.account.as_str(), "acc-current");
    let token = world.token();
    let (status, reason, _) = refusal(world.client.fetch(&world.data_url(), &token).await);
    assert_eq!((status, reason), (403, GateRefusal::AccountNotSubjects));
    world.bank_server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_device_left_to_seal_to_is_forbidden_without_a_challenge() {
    let world = World::new().await;
    let token = world.token();
    world
        .bank
        .revoke_device(&world.customer, &world.device.public_key().thumbprint())
        .unwrap();
    let refused = present(&world, &token).await;
    assert_refused(&refused, 403, "gate/no_device_to_seal_to", None);
    world.bank_server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_up_limits_are_429_until_midnight_and_a_stale_feed_is_503() {
    let settings = GateSettings {
        present_daily_ceiling: 2,
        ..GateSettings::default()
    };
    let world = World::build(MemoryStore::new(), settings, |a| a).await;
    for _ in 0..2 {
        let token = world.token();
        world.client.fetch(&world.data_url(), &token).await.unwrap();
    }
    let token = world.token();
    let limited = present(&world, &token).await;
    assert_refused(&limited, 429, "gate/present_ceiling_reached", None);
    // The kit's clock stands at 09:00 UTC: 15 hours to midnight.
    assert_eq!(limited.retry_after.as_deref(), Some("54000"));

    // Six minutes without a feed: the bank cannot know the platform did not revoke.
    world.clock.advance(Duration::minutes(6));
    let token = world.token();
    let (status, reason, _) = refusal(world.client.fetch(&world.data_url(), &token).await);
    assert_eq!(status, 503);
    assert!(
        matches!(reason, GateRefusal::RevocationFeedStale { .. }),
        "{reason:?}"
    );
    world.bank_server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_gets_a_typed_4xx_never_a_5xx_or_a_hang() {
    let world = World::new().await;
    let url = world.data_url();
    let origin = world.bank_server.origin();
    let client = raw();
    // A huge Authorization header: refused by the gate's bound.
    let huge = "A".repeat(200 * 1024);
    let response = client
        .get(&url)
        .header("authorization", format!("DPoP {huge}"))
        .send()
        .await
        .unwrap();
    assert_refused(
        &answer(response).await,
        401,
        "gate/token",
        Some("invalid_token"),
    );
    // Headers beyond what the server reads at all: 431 from the HTTP layer.
    let mut request = client.get(&url);
    for i in 0..150 {
        request = request.header(format!("x-junk-{i}"), "x".repeat(64));
    }
    let status = request.send().await.unwrap().status();
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // Not visible ASCII.
    let response = client
        .get(&url)
        .header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(b"DPoP \xff\xfe").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_refused(
        &answer(response).await,
        400,
        "gate/invalid_request",
        Some("invalid_request"),
    );
    // The approval endpoint: signed in, but a wrong content type, a body too large, bad JSON.
    let cookie = world.cookie(&world.customer);
    let approvals = format!("{origin}/v1/approvals");
    let wrong_type = client
        .post(&approvals)
        .header("cookie", &cookie)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer(wrong_type).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let too_large = post_json(&client, &approvals, &cookie, vec![b' '; 200 * 1024]).await;
    assert_413(answer(too_large.unwrap()).await);
    let bad_json = "{\"consent\": 12, \"secret\": \"alice@example.com\"";
    let bad_json = answer(
        post_json(&client, &approvals, &cookie, bad_json)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(bad_json.status, StatusCode::BAD_REQUEST);
    let detail = bad_json.problem.unwrap().detail.unwrap_or_default();
    assert!(!detail.contains("alice@example.com"), "{detail}");
    // Not signed in.
    let anonymous = client
        .post(&approvals)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    // A forged session cookie.
    let forged = client
        .post(&approvals)
        .header("cookie", "cb_session=YWxpY2U.9999999999.AAAA")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    // The wrong method on the data endpoint.
    let post = client.post(&url).send().await.unwrap();
    assert_eq!(post.headers()["allow"], "GET,HEAD");
    let post = answer(post).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        post.problem.unwrap().kind,
        format!("{PROBLEM_BASE}http/405")
    );
    // No such path: a problem too.
    let nowhere = answer(
        client
            .get(format!("{origin}/v2/../etc"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(nowhere.status, StatusCode::NOT_FOUND);
    assert!(nowhere.problem.is_some());

    // Many mutated credentials: every answer a 4xx, within the client's timeout.
    let token = world.token();
    let signer = platform_signer();
    let proof = proof_for(&world, &signer, &url, &token);
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..300 {
        let mutate = |text: &str, r: u64| -> String {
            let mut bytes = text.as_bytes().to_vec();
            match r % 5 {
                0 => {
                    let i = (r as usize / 5) % bytes.len();
                    bytes[i] = b"A.-_x"[(r as usize / 7) % 5];
                }
                1 => bytes.truncate((r as usize / 5) % bytes.len()),
                2 => bytes.extend_from_slice(b".extra"),
                3 => bytes.reverse(),
                _ => {}
            }
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let t = mutate(&token, next());
        let p = mutate(&proof, next());
        let scheme = ["DPoP", "dpop", "Bearer", "DPoP  ", ""][(next() % 5) as usize];
        let response = tokio::time::timeout(
            StdDuration::from_secs(10),
            client
                .get(&url)
                .header("authorization", format!("{scheme} {t}"))
                .header("dpop", p)
                .send(),
        )
        .await
        .expect("an answer, not a hang")
        .unwrap_or_else(|e| panic!("round {round}: no answer: {e:?}"));
        let status = response.status();
        if !(status.is_client_error() || status == StatusCode::OK) {
            let body = response.text().await.unwrap_or_default();
            panic!("round {round}: {status} {body}");
        }
    }
    world.bank_server.stop().await;
}

/// A signed-in customer's JSON `body` posted to `url`.
async fn post_json(
    client: &reqwest::Client,
    url: &str,
    cookie: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(url)
        .header("cookie", cookie)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
}

/// The 413 problem for a body beyond the limit.
fn assert_413(too_large: Answer) {
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        too_large.problem.unwrap().kind,
        format!("{PROBLEM_BASE}http/413")
    );
}

/// Sends `head` (and `body`) on a new connection and reads the answer's status line, within
/// five seconds.
async fn raw_exchange(origin: &str, head: String, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = origin.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(StdDuration::from_secs(5), async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "an answer, not a wait for the body");
    let text = String::from_utf8_lossy(&answer).into_owned();
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_too_large_gets_its_413_not_a_broken_connection() {
    // A server that answers before reading a body and closes the connection leaves the body's
    // rest unread in its socket; the kernel then resets the connection, and the client, still
    // sending, loses the answer. Before the server drained such bodies, this loop saw a broken
    // connection in about one request of forty.
    let world = World::new().await;
    let origin = world.bank_server.origin();
    let client = raw();
    let cookie = world.cookie(&world.customer);
    let approvals = format!("{origin}/v1/approvals");
    for size in [64 * 1024 + 1, 200 * 1024, 1024 * 1024] {
        for attempt in 0..100 {
            let response = post_json(&client, &approvals, &cookie, vec![b' '; size])
                .await
                .unwrap_or_else(|e| panic!("{size} bytes, attempt {attempt}: {e:?}"));
            assert_413(answer(response).await);
        }
    }
    // Exactly the limit is read and handed on (and refused for what it says, not its size).
    let at_limit = post_json(&client, &approvals, &cookie, vec![b' '; 64 * 1024]).await;
    assert_eq!(
        answer(at_limit.unwrap()).await.status,
        StatusCode::BAD_REQUEST
    );
    let host = origin.trim_start_matches("http://").to_owned();
    // Chunked, with no length declared: read to its end, then refused.
    let chunk = vec![b' '; 50 * 1024];
    let mut chunked = Vec::new();
    for _ in 0..3 {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(&chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = format!(
        "POST /v1/approvals HTTP/1.1\r\nhost: {host}\r\ncookie: {cookie}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    let status = raw_exchange(&origin, head, &chunked).await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    // Declared beyond what is ever drained, and nothing sent: refused at once.
    let head = format!(
        "POST /v1/approvals HTTP/1.1\r\nhost: {host}\r\ncookie: {cookie}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        1024 * 1024 + 1
    );
    let status = raw_exchange(&origin, head, b"").await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    // Declared too large and waiting for `100 Continue`: refused without it.
    let head = format!(
        "POST /v1/approvals HTTP/1.1\r\nhost: {host}\r\ncookie: {cookie}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\
         expect: 100-continue\r\n\r\n",
        64 * 1024 + 1
    );
    let status = raw_exchange(&origin, head, b"").await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    // Within the limit, waiting for `100 Continue`: told to go on.
    let head = format!(
        "POST /v1/approvals HTTP/1.1\r\nhost: {host}\r\ncookie: {cookie}\r\n\
         content-type: application/json\r\ncontent-length: 2\r\n\
         expect: 100-continue\r\n\r\n"
    );
    let status = raw_exchange(&origin, head, b"").await;
    assert!(status.starts_with("HTTP/1.1 100"), "{status}");
    world.bank_server.stop().await;
}

/// What the subject approved for the world's consent, as the bank would state it again.
fn statement_again(world: &World) -> ApprovalStatement {
    let view = world.broker.consent(&world.consent).unwrap();
    let grant = view.consent.grant().unwrap();
    ApprovalStatement {
        consent: world.consent.clone(),
        subject: world.customer.clone(),
        platform: world.platform.clone(),
        scopes: grant.scopes(),
        purposes: grant.purposes(),
        accounts: grant.accounts().clone(),
        consent_expires_at: grant.expires_at(),
        unattended_daily_limit: grant.unattended_daily_limit(),
        devices: vec![world.device.public_key().thumbprint()],
        plaintext: PlaintextUses::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_approval_is_invalid_token() {
    // The subject approves again at the bank: a token minted under the earlier approval names
    // an attestation that a later one replaced.
    let world = World::new().await;
    let token = world.token();
    world.bank.attest(&statement_again(&world)).unwrap();
    let (status, reason, seq) = refusal(world.client.fetch(&world.data_url(), &token).await);
    assert_eq!((status, reason), (401, GateRefusal::Superseded));
    assert!(seq.is_some());
    world.bank_server.stop().await;

    // (An expired approval cannot be reached this way: the broker ends each token when its
    // grant ends. The gate model, `tests/it/gate_model.rs`, reaches it with tokens it mints.)
}
