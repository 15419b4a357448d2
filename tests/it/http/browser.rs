//! The subject's dashboard and the chat view in a real headless Chromium, over WebDriver.
//!
//! Needs Debian's `chromium` and `chromium-driver`: `scripts/with-chromium` installs them if
//! missing, starts chromedriver and exports `WEBDRIVER_URL`:
//!
//! ```text
//! scripts/with-chromium cargo test --test it -- --ignored browser
//! ```
//!
//! With `CONSENT_BROKER_SCREENSHOTS=<dir>`, the pages' screenshots are written there (the ones
//! in `docs/screenshots/` were made so).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use consent_broker::checkpoint::NoteVerifier;
use consent_broker::http::ClientError;
use consent_broker::http::broker::BrokerEndpoints;
use consent_broker::http::dashboard::{ChatSettings, Dashboard};
use consent_broker::*;
use fantoccini::{Client, ClientBuilder, Locator, key::Key};
use serde_json::json;

use super::{Server, World};

const HOW: &str = "needs Chromium and chromedriver: run `scripts/with-chromium cargo test --test it -- --ignored browser` (the script installs Debian's chromium and chromium-driver if missing)";

/// A headless Chromium session; with JavaScript off when `javascript` is false.
async fn browser(javascript: bool) -> Client {
    let url = std::env::var("WEBDRIVER_URL").unwrap_or_else(|_| panic!("{HOW}"));
    let binary = std::env::var("CHROMIUM_BINARY").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let mut options = json!({
        "binary": binary,
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,900"],
    });
    if !javascript {
        options["prefs"] = json!({"profile.managed_default_content_settings.javascript": 2});
    }
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".into(), json!("chrome"));
    capabilities.insert("goog:chromeOptions".into(), options);
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("no WebDriver session at {url} ({e}); {HOW}"))
}

async fn screenshot(client: &Client, name: &str) {
    if let Ok(dir) = std::env::var("CONSENT_BROKER_SCREENSHOTS") {
        let png = client.screenshot().await.unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    }
}

/// Signs in through the test server's stand-in for the platform's login (`/login`), which sets
/// the session cookie as a real login would.
async fn sign_in(client: &Client, origin: &str) {
    client.goto(&format!("{origin}/login")).await.unwrap();
}

/// The element, once the page shows it (a click that submits a form returns before the next
/// page may be read).
async fn find(client: &Client, locator: Locator<'_>) -> fantoccini::elements::Element {
    client
        .wait()
        .at_most(std::time::Duration::from_secs(20))
        .for_element(locator)
        .await
        .unwrap_or_else(|e| panic!("not on the page: {locator:?}: {e}"))
}

/// Clicks the element once the page shows it.
async fn click(client: &Client, locator: Locator<'_>) {
    find(client, locator).await.click().await.unwrap();
}

async fn text_of(client: &Client, css: &str) -> String {
    find(client, Locator::Css(css)).await.text().await.unwrap()
}

/// The platform's server: the broker's endpoints, the dashboard, and the chat view, which
/// calls the world's bank with the world's client and keeps what it relays in `relay`.
async fn platform(world: &World, relay: &std::path::Path) -> Server {
    let dashboard = Dashboard::new(Arc::clone(&world.broker), world.sessions.clone(), &[3; 32])
        .chat(ChatSettings {
            platform: world.platform.clone(),
            bank_data_url: world.data_url(),
            client: world.client.clone(),
            relay_file: Some(relay.to_owned()),
        });
    let sessions = world.sessions.clone();
    let subject = world.subject.clone();
    let login = axum::Router::new().route(
        "/login",
        axum::routing::get(move || async move {
            (
                [(
                    axum::http::header::SET_COOKIE,
                    sessions.set_cookie(&subject),
                )],
                axum::response::Redirect::to("/dashboard"),
            )
        }),
    );
    let router = BrokerEndpoints::new(Arc::clone(&world.broker))
        .router()
        .merge(dashboard.router())
        .merge(login);
    Server::start(router).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and chromedriver: run `scripts/with-chromium cargo test --test it -- --ignored browser`"]
async fn browser_dashboard_without_javascript_lists_shows_history_verifies_receipts_and_revokes() {
    let world = World::new().await;
    let dir = tempfile::tempdir().unwrap();
    let server = platform(&world, &dir.path().join("relay.jsonl")).await;
    let origin = server.origin();
    // Some use first, so the list has counts and the history has entries.
    let before = world.token();
    world
        .client
        .fetch(&world.data_url(), &before)
        .await
        .unwrap();
    let pending = world.token();
    let client = browser(false).await;
    sign_in(&client, &origin).await;

    // The list: who receives what, from which accounts, why, until when, how often used.
    // JavaScript is off in this session: the chat page shows its <noscript> note.
    client.goto(&format!("{origin}/chat")).await.unwrap();
    assert!(
        text_of(&client, "main")
            .await
            .contains("Opening answers needs JavaScript"),
        "JavaScript is off"
    );
    client.goto(&format!("{origin}/dashboard")).await.unwrap();
    let row = text_of(&client, "tbody tr").await;
    for expected in [
        world.platform.as_str(),
        "balance",
        "acc-current",
        "2 times",
        "Active",
    ] {
        assert!(row.contains(expected), "{expected} missing from {row:?}");
    }
    assert_eq!(
        find(&client, Locator::Css("html"))
            .await
            .attr("lang")
            .await
            .unwrap(),
        Some("en".into())
    );
    assert_eq!(client.find_all(Locator::Css("h1")).await.unwrap().len(), 1);
    assert!(
        !client
            .find_all(Locator::Css("th[scope=col]"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !client
            .find_all(Locator::Css("caption"))
            .await
            .unwrap()
            .is_empty()
    );
    screenshot(&client, "dashboard-list").await;

    // From the keyboard: the first Tab lands on the skip link; Tabs reach "Details"; Enter opens it.
    let body = find(&client, Locator::Css("body")).await;
    body.send_keys(&char::from(Key::Tab).to_string())
        .await
        .unwrap();
    let first = client.active_element().await.unwrap().text().await.unwrap();
    assert_eq!(first, "Skip to content");
    let mut reached = false;
    for _ in 0..10 {
        let active = client.active_element().await.unwrap();
        if active.text().await.unwrap() == "Details" {
            active
                .send_keys(&char::from(Key::Enter).to_string())
                .await
                .unwrap();
            reached = true;
            break;
        }
        active
            .send_keys(&char::from(Key::Tab).to_string())
            .await
            .unwrap();
    }
    assert!(reached, "the Details link is reachable with Tab");
    text_of(&client, "a[aria-label^='Receipt of entry']").await;
    let url = client.current_url().await.unwrap();
    assert!(url.path().ends_with(world.consent.as_str()), "{url}");

    // The history, each entry with a receipt.
    let history = client.find_all(Locator::Css("tbody tr")).await.unwrap();
    assert!(
        history.len() >= 6,
        "request, approval, 2 permits and 2 tokens: {}",
        history.len()
    );
    screenshot(&client, "dashboard-consent").await;
    click(&client, Locator::Css("a[aria-label^='Receipt of entry']")).await;
    let verdict = find(&client, Locator::Css("#verdict")).await;
    assert_eq!(
        verdict.attr("class").await.unwrap(),
        Some("verified".into())
    );
    screenshot(&client, "dashboard-receipt").await;
    // The receipt the page offers verifies here too, against the log's key alone.
    let json_url = find(&client, Locator::Css("a[download]"))
        .await
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let cookie = format!("cb_session={}", world.sessions.issue(&world.subject));
    let receipt: Receipt = serde_json::from_slice(
        &super::raw_client()
            .get(format!("{origin}{json_url}"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    let key = NoteVerifier::from_vkey(&world.broker.checkpoint_verifier_key()).unwrap();
    let entry = receipt.verify(&key).unwrap();
    assert_eq!(entry.seq, receipt.index);

    // Stop sharing: one confirmed action.
    client
        .goto(&format!("{origin}/dashboard/consents/{}", world.consent))
        .await
        .unwrap();
    click(&client, Locator::LinkText("Stop sharing…")).await;
    assert_eq!(text_of(&client, "h1").await, "Stop sharing?");
    screenshot(&client, "dashboard-revoke").await;
    assert_eq!(
        world.broker.consent(&world.consent).unwrap().status,
        ConsentStatus::Authorised,
        "nothing is revoked before the confirmation"
    );
    click(&client, Locator::Css("button.danger")).await;
    assert!(text_of(&client, "#notice").await.contains("Stopped"));
    assert!(text_of(&client, "main").await.contains("Stopped by you"));
    // The bank's next feed carries it, and the bank refuses the platform's next call.
    world.sync();
    match world.client.fetch(&world.data_url(), &pending).await {
        Err(ClientError::Refused { refusal, .. }) => {
            assert_eq!(refusal, GateRefusal::RevokedAtPlatform);
        }
        other => panic!("the bank served after the revocation: {other:?}"),
    }
    client.close().await.unwrap();
    server.stop().await;
    world.bank_server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and chromedriver: run `scripts/with-chromium cargo test --test it -- --ignored browser`"]
async fn browser_chat_opens_the_sealed_balance_in_the_page_and_the_platform_keeps_only_ciphertext()
{
    let world = World::new().await;
    let dir = tempfile::tempdir().unwrap();
    let relay = dir.path().join("relay.jsonl");
    let server = platform(&world, &relay).await;
    let origin = server.origin();
    let client = browser(true).await;
    sign_in(&client, &origin).await;
    // The device's key, in this browser only (as the person's phone keeps it).
    client.goto(&format!("{origin}/chat")).await.unwrap();
    let jwk = json!({
        "d": URL_SAFE_NO_PAD.encode(world.device.to_bytes()),
        "x": URL_SAFE_NO_PAD.encode(world.device.public_key().as_bytes()),
    });
    // Kept as a non-extractable key in the page's IndexedDB, as the chat's own script keeps it.
    let stored = client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             import('/chat/chat.mjs')
               .then((chat) => chat.storeDeviceKey(arguments[0]))
               .then(() => done('stored'), (e) => done(String(e)));",
            vec![jwk],
        )
        .await
        .unwrap();
    assert_eq!(stored, json!("stored"));
    // The key cannot be read back out of the browser's store.
    let exported = client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const open = indexedDB.open('consent-broker', 1);
             open.onsuccess = () => {
               const get = open.result.transaction('device').objectStore('device').get('key');
               get.onsuccess = () => crypto.subtle.exportKey('jwk', get.result.privateKey)
                 .then(() => done('exported'), (e) => done(e.name));
             };",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(exported, json!("InvalidAccessError"));
    // The person asks; the platform's server fetches from the bank and relays.
    click(&client, Locator::Css("#ask-balance")).await;
    // The page before the click set `data-chat-ready` too ("no-key": the key was stored after
    // it loaded): wait for the answer's page, which alone lists a message, then for its script.
    client
        .wait()
        .for_element(Locator::Css("#message-0"))
        .await
        .unwrap();
    client
        .wait()
        .for_element(Locator::Css("body[data-chat-ready]"))
        .await
        .unwrap();
    assert_eq!(
        find(&client, Locator::Css("body"))
            .await
            .attr("data-chat-ready")
            .await
            .unwrap(),
        Some("true".into())
    );
    let shown = text_of(&client, "#message-0").await;
    assert!(shown.contains("acc-current: 42.00 EUR"), "{shown}");
    let opened: serde_json::Value = serde_json::from_str(
        &find(&client, Locator::Css("#message-0"))
            .await
            .attr("data-opened")
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    screenshot(&client, "chat").await;
    // What the page opened is what the bank sent: open the relayed bytes with the device key.
    let relayed = std::fs::read(&relay).unwrap();
    let line = relayed.split(|b| *b == b'\n').next().unwrap();
    let sealed: SealedResponse = serde_json::from_slice(line).unwrap();
    let sent = open_response(&sealed, &world.device).unwrap();
    assert_eq!(opened, serde_json::to_value(&sent).unwrap());
    let AccountData::Balance(balance) = sent else {
        panic!("a balance")
    };
    assert_eq!(balance.available.minor_units, 4_200);
    // The platform's server kept only ciphertext: no trace of the balance in its bytes.
    let text = String::from_utf8_lossy(&relayed);
    for trace in ["minor_units", "available", "4200", "\"EUR\""] {
        assert!(!text.contains(trace), "{trace} in the platform's relay");
    }
    client.close().await.unwrap();
    server.stop().await;
    world.bank_server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and chromedriver: run `scripts/with-chromium cargo test --test it -- --ignored browser`"]
async fn browser_bank_dashboard_shows_the_approval_and_its_withdrawal_stops_the_gate_at_once() {
    let world = World::new().await;
    let token = world.token();
    world.client.fetch(&world.data_url(), &token).await.unwrap();
    let pending = world.token();
    // The bank's own site: its login stand-in sets the bank's session cookie.
    let sessions = world.sessions.clone();
    let customer = world.customer.clone();
    let login = axum::Router::new().route(
        "/login",
        axum::routing::get(move || async move {
            (
                [(
                    axum::http::header::SET_COOKIE,
                    sessions.set_cookie(&customer),
                )],
                axum::response::Redirect::to("/dashboard"),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let router = consent_broker::http::bank::BankEndpoints::new(
        Arc::clone(&world.bank),
        Arc::clone(&world.accounts),
        &origin,
        world.sessions.clone(),
    )
    .router()
    .unwrap()
    .merge(login);
    let server = Server::on(listener, router);
    let client = browser(false).await;
    client.goto(&format!("{origin}/login")).await.unwrap();
    let row = text_of(&client, "tbody tr").await;
    for expected in [
        world.platform.as_str(),
        "balance",
        "acc-current",
        "once",
        "Active",
    ] {
        assert!(row.contains(expected), "{expected} missing from {row:?}");
    }
    screenshot(&client, "bank-dashboard").await;
    // The approval's history in the bank's journal, each entry with a receipt that verifies
    // against the journal's key.
    click(&client, Locator::LinkText("History")).await;
    let history = text_of(&client, "tbody").await;
    assert!(
        history.contains("Your balance was served, for"),
        "{history}"
    );
    click(&client, Locator::Css("a[aria-label^='Receipt of entry']")).await;
    let verdict = find(&client, Locator::Css("#verdict")).await;
    assert_eq!(
        verdict.attr("class").await.unwrap(),
        Some("verified".into())
    );
    assert!(text_of(&client, "main").await.contains("the bank's own"));
    client.goto(&format!("{origin}/dashboard")).await.unwrap();
    click(&client, Locator::LinkText("Stop sharing…")).await;
    assert_eq!(text_of(&client, "h1").await, "Stop sharing?");
    click(&client, Locator::Css("button.danger")).await;
    assert!(
        text_of(&client, "tbody tr")
            .await
            .contains("Stopped by you")
    );
    // At the bank, the gate refuses from this moment: no feed to wait for.
    match world.client.fetch(&world.data_url(), &pending).await {
        Err(ClientError::Refused { refusal, .. }) => {
            assert_eq!(
                refusal,
                GateRefusal::RevokedAtBank {
                    by: Revoker::Subject
                }
            );
        }
        other => panic!("the bank served after the withdrawal: {other:?}"),
    }
    client.close().await.unwrap();
    server.stop().await;
    world.bank_server.stop().await;
}
