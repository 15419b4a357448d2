//! The broker's public endpoints, the bank's witness and revocation endpoints, and the metrics,
//! all over loopback HTTP, each checked by the party that does not trust the other.

use std::sync::Arc;

use consent_broker::checkpoint::NoteVerifier;
use consent_broker::cosignature::{CosignatureSigner, CosignatureVerifier, WitnessPolicy};
use consent_broker::http::bank::BankEndpoints;
use consent_broker::http::{BrokerClient, ClientError, HttpTiles, HttpWitness};
use consent_broker::tiles::verify_tiles;
use consent_broker::witness::{Cosigning, Witness, WitnessClient};
use consent_broker::*;

use super::{Server, World, quick, serve_broker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bank_takes_keys_and_feed_from_the_brokers_endpoints_and_checks_them_itself() {
    let world = World::new().await;
    let (_, server) = serve_broker(&world.broker).await;
    let client = BrokerClient::new(&server.origin(), quick()).unwrap();
    // The JWKS at the well-known path is the broker's, and the bank can trust it.
    let jwks = client.jwks().await.unwrap();
    assert_eq!(jwks, world.broker.jwks().unwrap());
    world.bank.trust_broker_keys(&jwks).unwrap();
    // A revocation on the platform reaches the bank through the signed feed, from its cursor.
    let token = world.token();
    world
        .broker
        .revoke(
            &world.consent,
            Revoker::Subject,
            RevocationReason::SubjectWithdrew,
        )
        .unwrap();
    let after = world
        .bank
        .ledger()
        .feed_state()
        .unwrap()
        .map_or(0, |f| f.position);
    let feed = client
        .revocation_feed(world.bank.id(), after)
        .await
        .unwrap();
    world.bank.apply_revocation_feed(&feed).unwrap();
    match world.client.fetch(&world.data_url(), &token).await {
        Err(ClientError::Refused { refusal, .. }) => {
            assert_eq!(refusal, GateRefusal::RevokedAtPlatform);
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
    // A feed altered on the way is refused by the bank (the broker's signature).
    let mut forged = client.revocation_feed(world.bank.id(), 0).await.unwrap();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert!(world.bank.apply_revocation_feed(&forged).is_err());
    // An unknown holder's feed, a malformed one: typed 4xx.
    let raw = super::raw_client();
    let status = raw
        .get(format!("{}/revocations/%20bad%20/", server.origin()))
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_client_error(), "{status}");
    server.stop().await;
    world.bank_server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_across_the_network_cosigns_and_anyone_verifies_the_tiles_over_http() {
    let world = World::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (endpoints, server) = serve_broker(&world.broker).await;
    // Before any checkpoint: nothing to serve.
    let client = BrokerClient::new(&server.origin(), quick()).unwrap();
    assert!(matches!(client.checkpoint().await, Err(ClientError::Problem(p)) if p.status == 404));
    // The bank runs a witness, served by its endpoints.
    let log_key = NoteVerifier::from_vkey(&world.broker.checkpoint_verifier_key()).unwrap();
    let witness_key = SigningKey::from_seed(&[21; 32]).unwrap();
    let signer =
        CosignatureSigner::new("bank.example/witness", witness_key.to_pkcs8_der()).unwrap();
    let cosignature_verifier = signer.verifier().clone();
    let witness_vkey = cosignature_verifier.to_vkey();
    let witness = Witness::open(
        dir.path().join("witness.sqlite"),
        signer,
        world.clock.clone(),
    )
    .unwrap()
    .follow(world.broker.log_origin(), log_key.clone());
    let witness_server = Server::start(
        BankEndpoints::new(
            Arc::clone(&world.bank),
            Arc::clone(&world.accounts),
            "http://127.0.0.1",
            world.sessions.clone(),
        )
        .witness(Arc::new(witness))
        .router()
        .unwrap(),
    )
    .await;
    let witness_url = witness_server.origin();
    let (monitor_log_key, monitor_witness) = (log_key.clone(), cosignature_verifier.clone());
    // The platform publishes: sign, have the witness cosign over HTTP, serve.
    let publisher = endpoints.clone();
    let cosigned = tokio::task::spawn_blocking(move || {
        let remote = HttpWitness::new(&witness_url, &quick()).unwrap();
        let mut cosigning = Cosigning::new(vec![(
            &remote as &dyn WitnessClient,
            cosignature_verifier.clone(),
        )]);
        let first = publisher.publish(&mut cosigning).unwrap();
        // A second, larger checkpoint: the witness checks consistency with the first.
        first
    })
    .await
    .unwrap();
    assert!(cosigned.alarms.is_empty(), "{:?}", cosigned.alarms);
    assert_eq!(
        cosigned.cosigned_by,
        vec!["bank.example/witness".to_owned()]
    );
    let served = client.checkpoint().await.unwrap();
    assert_eq!(served, cosigned.note);
    // Anyone reads the tiles over HTTP and checks every one against the checkpoint.
    let base = server.origin();
    let report = tokio::task::spawn_blocking(move || {
        let tiles = HttpTiles::new(&base, &quick()).unwrap();
        verify_tiles(&tiles, &log_key, None)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        report.checkpoint.size,
        world.broker.store().audit_len().unwrap()
    );
    // The bank's monitor follows the same log over HTTP, trusting its witness, and counts its
    // pass in the bank's metrics.
    let (bank, base, origin) = (
        Arc::clone(&world.bank),
        server.origin(),
        world.broker.log_origin().to_owned(),
    );
    let metrics = consent_broker::http::Metrics::new();
    let counted = metrics.clone();
    let pass = tokio::task::spawn_blocking(move || {
        let tiles = HttpTiles::new(&base, &quick()).unwrap();
        let policy = WitnessPolicy {
            witnesses: vec![monitor_witness],
            quorum: 1,
        };
        let mut monitor = LogMonitor::new(&origin, monitor_log_key, policy).unwrap();
        let pass = monitor.check(&bank, &tiles, bank.now());
        counted.record_monitor(pass.as_ref());
        pass
    })
    .await
    .unwrap()
    .unwrap();
    assert!(pass.is_clean(), "{pass:?}");
    assert_eq!(pass.log_size, report.checkpoint.size);
    assert_eq!(
        pass.cosigned_at,
        Some(world.clock.now().replace_nanosecond(0).unwrap())
    );
    assert_eq!(
        metrics.counter("consent_broker_monitor_passes_total", "outcome=\"clean\""),
        1
    );
    // Beyond the published checkpoint, and malformed paths: 404.
    let raw = super::raw_client();
    for path in [
        "tile/0/001",
        "tile/entries/005",
        "tile/9/000",
        "tile/0/x001/000",
        "tile/0/0",
    ] {
        let status = raw
            .get(format!("{}/{path}", server.origin()))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, reqwest::StatusCode::NOT_FOUND, "{path}");
    }
    // A request that starts from a size the witness did not cosign last: 409, and (C2SP
    // tlog-witness) a `text/x.tlog.size` body with the size it did cosign.
    let stale = format!("old 1\n\n{}", cosigned.note);
    let response = raw
        .post(format!("{}/add-checkpoint", witness_server.origin()))
        .body(stale)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::CONFLICT);
    assert_eq!(response.headers()["content-type"], "text/x.tlog.size");
    let size: u64 = response.text().await.unwrap().trim().parse().unwrap();
    assert_eq!(size, report.checkpoint.size);
    // The log grows, and a publisher that knows nothing of the witness (a restart: a new
    // `Cosigning`) learns its size from that 409 and gets the new checkpoint cosigned.
    let token = world.token();
    world.client.fetch(&world.data_url(), &token).await.unwrap();
    let publisher = endpoints.clone();
    let witness_url = witness_server.origin();
    let verifier = CosignatureVerifier::from_vkey(&witness_vkey).unwrap();
    let again = tokio::task::spawn_blocking(move || {
        let remote = HttpWitness::new(&witness_url, &quick()).unwrap();
        let mut cosigning = Cosigning::new(vec![(&remote as &dyn WitnessClient, verifier)]);
        publisher.publish(&mut cosigning).unwrap()
    })
    .await
    .unwrap();
    assert!(again.alarms.is_empty(), "{:?}", again.alarms);
    assert_eq!(again.cosigned_by, vec!["bank.example/witness".to_owned()]);
    assert_ne!(again.note, cosigned.note);
    server.stop().await;
    witness_server.stop().await;
    world.bank_server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customers_withdrawal_at_the_bank_reaches_the_broker_as_a_signed_instruction() {
    let world = World::new().await;
    let (_, broker_server) = serve_broker(&world.broker).await;
    let bank_api = Server::start(
        BankEndpoints::new(
            Arc::clone(&world.bank),
            Arc::clone(&world.accounts),
            "http://127.0.0.1",
            world.sessions.clone(),
        )
        .deliver_to(BrokerClient::new(&broker_server.origin(), quick()).unwrap())
        .router()
        .unwrap(),
    )
    .await;
    let raw = super::raw_client();
    let body = format!("{{\"consent\":\"{}\"}}", world.consent);
    // Someone else signed in cannot withdraw Alice's approval.
    let stranger = raw
        .post(format!("{}/v1/revocations", bank_api.origin()))
        .header("cookie", world.cookie(&SubjectId::new("mallory").unwrap()))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert!(stranger.status().is_client_error(), "{}", stranger.status());
    assert_eq!(
        world.broker.consent(&world.consent).unwrap().status,
        ConsentStatus::Authorised
    );
    let response = raw
        .post(format!("{}/v1/revocations", bank_api.origin()))
        .header("cookie", world.cookie(&world.customer))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let answer: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(answer["delivered"], true);
    // The broker applied the bank's signed instruction.
    assert!(matches!(
        world.broker.consent(&world.consent).unwrap().status,
        ConsentStatus::Revoked {
            by: Revoker::Holder,
            ..
        } | ConsentStatus::Revoked {
            by: Revoker::Subject,
            ..
        }
    ));
    // The same instruction again is refused (applied before), with a typed 4xx.
    let again = raw
        .post(format!("{}/instructions", broker_server.origin()))
        .body(answer["instruction"].as_str().unwrap().to_owned())
        .send()
        .await
        .unwrap();
    assert!(again.status().is_client_error(), "{}", again.status());
    bank_api.stop().await;
    broker_server.stop().await;
    world.bank_server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_count_gate_outcomes_by_reason_and_name_no_one() {
    let world = World::new().await;
    let token = world.token();
    world.client.fetch(&world.data_url(), &token).await.unwrap();
    let _ = world.client.fetch(&world.data_url(), &token).await;
    let text = super::raw_client()
        .get(format!("{}/metrics", world.bank_server.origin()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("consent_broker_gate_decisions_total{outcome=\"served\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("consent_broker_gate_refusals_total{reason=\"token_replayed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("consent_broker_http_request_duration_seconds_bucket{route=\"/v1/data\"")
    );
    for secret in [
        world.customer.as_str(),
        world.subject.as_str(),
        world.current.as_str(),
        world.consent.as_str(),
    ] {
        assert!(!text.contains(secret), "{secret} in the metrics");
    }
    world.bank_server.stop().await;
}

/// A server that answers the n-th request with `answer(n)`, counting them.
async fn scripted(
    answer: impl Fn(usize) -> (u16, &'static str) + Send + Sync + 'static,
    delay: std::time::Duration,
) -> (Server, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let answer = Arc::new(answer);
    let router = axum::Router::new().fallback(move || {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        let answer = Arc::clone(&answer);
        async move {
            tokio::time::sleep(delay).await;
            let (status, body) = answer(n);
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
                body,
            )
        }
    });
    (Server::start(router).await, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_retry_only_what_cannot_have_been_acted_on() {
    use std::sync::atomic::Ordering;
    let unavailable =
        r#"{"type":"urn:consent-broker:problem:unavailable","title":"x","status":503}"#;
    let refused = r#"{"type":"urn:consent-broker:problem:gate/revocation_feed_stale","title":"x","status":503,"refusal":{"refusal":"revocation_feed_stale","detail":{}}}"#;
    let settings = consent_broker::http::ClientSettings {
        attempts: 3,
        backoff: std::time::Duration::from_millis(5),
        timeout: std::time::Duration::from_millis(300),
        ..quick()
    };
    // 503 unavailable twice (nothing was done), then the answer: three calls, and it arrives.
    let (server, calls) = scripted(
        move |n| {
            if n < 2 {
                (503, unavailable)
            } else {
                (200, "{\"keys\":[]}")
            }
        },
        std::time::Duration::ZERO,
    )
    .await;
    let client = BrokerClient::new(&server.origin(), settings.clone()).unwrap();
    assert!(client.jwks().await.is_ok());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    server.stop().await;
    // A refusal, even a 503 one, is journalled at the bank: one call, no retry.
    let (server, calls) = scripted(move |_| (503, refused), std::time::Duration::ZERO).await;
    let client = BrokerClient::new(&server.origin(), settings.clone()).unwrap();
    assert!(matches!(
        client.send_instruction("x.y.z").await,
        Err(ClientError::Refused { status: 503, .. })
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    server.stop().await;
    // No answer in time: a read is tried again; an instruction (it may have been applied) is not.
    let (server, calls) =
        scripted(move |_| (200, "{}"), std::time::Duration::from_millis(600)).await;
    let client = BrokerClient::new(&server.origin(), settings.clone()).unwrap();
    assert!(matches!(
        client.send_instruction("x.y.z").await,
        Err(ClientError::Timeout)
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(matches!(
        client.checkpoint().await,
        Err(ClientError::Timeout)
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 1 + 3);
    server.stop().await;
    // Nobody listening: every attempt made, then a connection error.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = BrokerClient::new(&format!("http://127.0.0.1:{port}"), settings).unwrap();
    assert!(matches!(
        client.checkpoint().await,
        Err(ClientError::Connect(_))
    ));
}

/// A log whose entries are large (256 of 8 KiB: a bundle of 2 MiB, past the client's default
/// 1 MiB answer) read over HTTP from a plain file server: every file the layout allows is read
/// whole, so the log verifies; a file larger than the layout allows for its path is refused
/// unread past that size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiles_over_http_are_read_up_to_what_the_layout_allows_and_no_further() {
    use consent_broker::checkpoint::NoteSigner;
    use consent_broker::tiles::TileError;
    let mut log = crate::targets::LogStore::default();
    for n in 0..256u32 {
        let mut entry = vec![b'x'; 8 * 1024];
        entry[..4].copy_from_slice(&n.to_be_bytes());
        log.append(&entry);
    }
    let signer = NoteSigner::new(
        "large.example/log",
        SigningKey::from_seed(&[43; 32]).unwrap().to_pkcs8_der(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    crate::monitor::publish_signed(&log, "large.example/log", &signer, dir.path());
    let bundle = dir.path().join("tile/entries/000");
    assert!(std::fs::metadata(&bundle).unwrap().len() > 1 << 20);
    let root_dir = dir.path().to_owned();
    let router = axum::Router::new().route(
        "/{*path}",
        axum::routing::get(
            move |axum::extract::Path(path): axum::extract::Path<String>| {
                let file = root_dir.join(path);
                async move {
                    match std::fs::read(file) {
                        Ok(bytes) => (axum::http::StatusCode::OK, bytes),
                        Err(_) => (axum::http::StatusCode::NOT_FOUND, Vec::new()),
                    }
                }
            },
        ),
    );
    let server = Server::start(router).await;
    let verifier = NoteVerifier::from_vkey(&signer.verifier_key()).unwrap();
    let base = server.origin();
    let read = {
        let (base, verifier) = (base.clone(), verifier.clone());
        tokio::task::spawn_blocking(move || {
            verify_tiles(&HttpTiles::new(&base, &quick()).unwrap(), &verifier, None)
        })
        .await
        .unwrap()
    };
    assert_eq!(read.unwrap().checkpoint.size, 256);
    // A hash tile one byte past a full one (256 hashes of 32 bytes).
    std::fs::write(dir.path().join("tile/0/000"), vec![0u8; 256 * 32 + 1]).unwrap();
    let refused = tokio::task::spawn_blocking(move || {
        verify_tiles(&HttpTiles::new(&base, &quick()).unwrap(), &verifier, None)
    })
    .await
    .unwrap();
    assert!(
        matches!(&refused, Err(TileError::Io(message)) if message.contains("too large")),
        "{refused:?}"
    );
}
