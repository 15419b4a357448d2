//! Every span and event the HTTP layer and the core emit while a whole story runs over HTTP,
//! recorded at the finest level: none carries a subject, customer, account, token, device key or
//! balance.

use std::io::Write;
use std::sync::{Arc, Mutex};

use consent_broker::http::broker::BrokerEndpoints;
use consent_broker::http::dashboard::Dashboard;
use consent_broker::*;
use tracing_subscriber::fmt::format::FmtSpan;

use super::{Server, World};

#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<u8>>>);

impl Write for Recorded {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_span_or_event_names_anyone() {
    let recorded = Recorded::default();
    let writer = recorded.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(FmtSpan::FULL)
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    // Global: the servers' tasks run on the runtime's threads. Other tests of this binary may
    // write here too; they use other ids, and nothing of theirs may name anyone either.
    tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");

    let world = World::new().await;
    let dir = tempfile::tempdir().unwrap();
    let platform = Server::start(
        BrokerEndpoints::new(Arc::clone(&world.broker))
            .router()
            .merge(
                Dashboard::new(Arc::clone(&world.broker), world.sessions.clone(), &[5; 32])
                    .chat(consent_broker::http::dashboard::ChatSettings {
                        platform: world.platform.clone(),
                        bank_data_url: world.data_url(),
                        client: world.client.clone(),
                        relay_file: Some(dir.path().join("relay")),
                    })
                    .router(),
            ),
    )
    .await;
    let http = super::raw_client();
    // Served, refused (replayed), refused (no proof), the dashboard, a receipt, the feed.
    let token = world.token();
    let served = world.client.fetch(&world.data_url(), &token).await.unwrap();
    let _ = world.client.fetch(&world.data_url(), &token).await;
    let _ = http
        .get(world.data_url())
        .header("authorization", format!("DPoP {}", world.token()))
        .send()
        .await
        .unwrap();
    let cookie = world.cookie(&world.subject);
    let entry = world.broker.consent_history(&world.consent).unwrap()[0].seq;
    for path in [
        "/dashboard".to_owned(),
        format!("/dashboard/consents/{}", world.consent),
        format!("/dashboard/consents/{}/receipts/{entry}", world.consent),
        format!("/revocations/{}?after=0", world.bank.id()),
        "/.well-known/jwks.json".to_owned(),
    ] {
        let status = http
            .get(format!("{}{path}", platform.origin()))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "{path}: {status}");
    }
    platform.stop().await;
    world.bank_server.stop().await;

    let text = String::from_utf8(recorded.0.lock().unwrap().clone()).unwrap();
    // Recorded at all: the request spans by route template, the gate's outcomes.
    assert!(text.contains("route=/v1/data"), "{text}");
    assert!(text.contains("outcome=\"served\""), "{text}");
    assert!(text.contains("reason=\"token_replayed\""), "{text}");
    assert!(text.contains("route=/dashboard/consents/{id}"), "{text}");
    // And the core's calls on each side, as spans of their own.
    for span in [
        "broker.authorise_with_token",
        "broker.consents_of",
        "broker.revocation_feed",
        "bank.check",
        "bank.deliver",
    ] {
        assert!(text.contains(span), "no {span} span");
    }
    let Response::Sealed(sealed) = served else {
        panic!("sealed")
    };
    let thumbprint = world.device.public_key().thumbprint();
    let forbidden = [
        world.customer.as_str(),
        world.subject.as_str(),
        world.current.as_str(),
        "acc-savings",
        token.as_str(),
        thumbprint.as_str(),
        // The balance, as any serialisation of it would show it.
        "minor_units",
        "available",
        sealed.envelopes[0].ciphertext.as_str(),
    ];
    for secret in forbidden {
        let line = text.lines().find(|l| l.contains(secret));
        assert!(line.is_none(), "{secret} in the traces: {line:?}");
    }
}
