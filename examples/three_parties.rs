//! The story across three processes on loopback ports: the platform (broker, dashboard, chat),
//! the bank (its gate, approvals, revocations) and a witness, each a separate process with its
//! own SQLite database and keys, talking only HTTP. This process plays the person (and, at the
//! end, an auditor): it signs in at the bank and at the platform, approves, asks for a balance in
//! the chat, opens the sealed answer with a device key only it holds, revokes on the dashboard,
//! and checks the published log over HTTP.
//!
//! Run: `cargo run --example three_parties --features http`. Each step prints what crossed the
//! wire; the three servers' `/metrics` are printed at the end. `RUST_LOG`-style tracing output is
//! not installed here (embedders install their own `tracing` subscriber).
#![expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "an example: a failure is a bug to see, not an answer"
)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use consent_broker::checkpoint::NoteVerifier;
use consent_broker::cosignature::{CosignatureSigner, CosignatureVerifier, WitnessPolicy};
use consent_broker::dpop::DpopSigner;
use consent_broker::http::bank::{ApprovalForm, BankEndpoints, sync_feed, witness_router};
use consent_broker::http::broker::BrokerEndpoints;
use consent_broker::http::dashboard::{ChatSettings, Dashboard, SessionCookies};
use consent_broker::http::{
    BankClient, BrokerClient, ClientSettings, HttpTiles, HttpWitness, Metrics, SubjectAuthenticator,
};
use consent_broker::tiles::verify_tiles;
use consent_broker::time::Duration;
use consent_broker::witness::{Cosigning, Witness, WitnessClient};
use consent_broker::*;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const PLATFORM: &str = "chat";
const BANK: &str = "first-bank";
const BROKER: &str = "broker.chat.example";
const WITNESS: &str = "witness.example";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match args.get(1).map(String::as_str) {
        Some("platform") => runtime.block_on(platform(&args[2], &args[3], &args[4], &args[5])),
        Some("bank") => runtime.block_on(bank(&args[2], &args[3], &args[4], &args[5], &args[6])),
        Some("witness") => runtime.block_on(witness(&args[2], &args[3], &args[4], &args[5])),
        _ => runtime.block_on(person()),
    }
}

fn secret(seed: u8) -> [u8; 32] {
    let mut secret = [seed; 32];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut secret).expect("randomness");
    secret
}

fn settings() -> ClientSettings {
    ClientSettings {
        timeout: StdDuration::from_secs(5),
        ..ClientSettings::default()
    }
}

/// A demo login: the party's real login would authenticate the person; this one takes the id.
fn demo_login(sessions: Arc<SessionCookies>) -> axum::Router {
    axum::Router::new().route(
        "/demo/login/{who}",
        axum::routing::post(
            move |axum::extract::Path(who): axum::extract::Path<String>| async move {
                match SubjectId::new(who) {
                    Ok(who) => (
                        axum::http::StatusCode::NO_CONTENT,
                        [(axum::http::header::SET_COOKIE, sessions.set_cookie(&who))],
                    )
                        .into_response(),
                    Err(_) => axum::http::StatusCode::BAD_REQUEST.into_response(),
                }
            },
        ),
    )
}

use axum::response::IntoResponse;

async fn serve(port: &str, router: axum::Router) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    axum::serve(listener, router).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The platform's process

async fn platform(dir: &str, port: &str, bank: &str, witness: &str) -> Result<()> {
    let dir = PathBuf::from(dir);
    let rng = SystemRandom::new();
    let store = SqliteStore::open(dir.join("platform.sqlite"))?;
    let dpop = DpopSigner::new(
        KeyFile::new(dir.join("dpop-key.der"))
            .load_or_create(&rng)?
            .0,
    )?;
    let chat = PlatformId::new(PLATFORM)?;
    let broker = Arc::new(
        Broker::builder(BrokerId::new(BROKER)?, store)
            .keys(BrokerKeys::load_or_create(&dir, &rng)?)
            .sender_key(chat.clone(), &dpop.public_key())
            .build()?,
    );
    // The bank's attestation key, registered out of band (as a contract between them would).
    let bank_key = std::fs::read_to_string(dir.join("../bank-attestation.pub"))?;
    let bank_key = Ed25519PublicKey::from_bytes(&URL_SAFE_NO_PAD.decode(bank_key.trim())?)?;
    let _ = broker.register_holder(HolderRegistration {
        id: HolderId::new(BANK)?,
        policy: HolderPolicy::default(),
        attestation_keys: vec![bank_key],
    });
    let _ = broker.register_platform(PlatformProfile {
        id: chat.clone(),
        registered_purposes: PurposeSet::from(Purpose::ALL),
    });
    std::fs::write(dir.join("log.vkey"), broker.checkpoint_verifier_key())?;
    std::fs::write(dir.join("log.origin"), broker.log_origin())?;

    let metrics = Metrics::new();
    let sessions = Arc::new(SessionCookies::new(&secret(1)).insecure_for_loopback());
    let client = BankClient::new(dpop, Arc::new(SystemRandom::new()), settings())?;
    let dashboard = Dashboard::new(Arc::clone(&broker), sessions.clone(), &secret(2))
        .chat(ChatSettings {
            platform: chat.clone(),
            bank_data_url: format!("{bank}/v1/data"),
            client,
            relay_file: Some(dir.join("relayed.jsonl")),
        })
        .metrics(metrics.clone());
    let endpoints = BrokerEndpoints::new(Arc::clone(&broker)).metrics(metrics.clone());
    // The platform's own app asks for consent (here: for whoever is signed in).
    let asker = Arc::clone(&broker);
    let auth = sessions.clone();
    let request = axum::Router::new().route(
        "/demo/request",
        axum::routing::post(move |headers: axum::http::HeaderMap| async move {
            let Some(subject) = auth.authenticate(&headers) else {
                return axum::http::StatusCode::UNAUTHORIZED.into_response();
            };
            let draft = ConsentRequestDraft {
                subject,
                platform: PlatformId::new(PLATFORM).expect("a valid id"),
                holder: HolderId::new(BANK).expect("a valid id"),
                scopes: vec![Scope::Balance.into(), Scope::Alerts.into()],
                purposes: vec![Purpose::CustomerService.into()],
                accounts: AccountSelection::Listed(AccountSet::from([AccountId::new(
                    "acc-current",
                )
                .expect("a valid id")])),
                duration: Duration::days(90),
            };
            let asker = Arc::clone(&asker);
            match tokio::task::spawn_blocking(move || asker.request_consent(draft)).await {
                Ok(Ok(request)) => request.id().to_string().into_response(),
                _ => axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response(),
            }
        }),
    );
    // Checkpoints, cosigned by the witness across the network, every 0.7 s.
    let publisher = endpoints.clone();
    let witness_url = witness.to_owned();
    let witness_key = dir.join("../witness.vkey");
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(StdDuration::from_millis(700)).await;
            let publisher = publisher.clone();
            let url = witness_url.clone();
            let key = witness_key.clone();
            let _ = tokio::task::spawn_blocking(move || -> Result<()> {
                let Ok(vkey) = std::fs::read_to_string(&key) else {
                    return Ok(());
                };
                let verifier = CosignatureVerifier::from_vkey(vkey.trim())?;
                let remote = HttpWitness::new(&url, &settings())?;
                let mut cosigning = Cosigning::new(vec![(&remote as &dyn WitnessClient, verifier)]);
                publisher.publish(&mut cosigning)?;
                Ok(())
            })
            .await;
        }
    });
    let router = endpoints
        .router()
        .merge(dashboard.router())
        .merge(demo_login(sessions))
        .merge(request);
    serve(port, router).await
}

// ---------------------------------------------------------------------------------------------
// The bank's process

/// The bank's account system: Alice's current account.
struct Accounts;

impl DataHolder for Accounts {
    type Error = std::convert::Infallible;

    fn account_owner(
        &self,
        account: &AccountId,
    ) -> std::result::Result<Option<SubjectId>, Self::Error> {
        Ok((account.as_str() == "acc-current")
            .then(|| SubjectId::new("alice@first-bank").expect("a valid id")))
    }

    fn balance(
        &self,
        grant: BalanceGrant<'_>,
    ) -> std::result::Result<Balance, DataError<Self::Error>> {
        Ok(Balance {
            account: grant.account().clone(),
            available: Money {
                minor_units: 123_456,
                currency: "EUR".into(),
            },
            as_of: time::OffsetDateTime::now_utc(),
        })
    }

    fn pending_alerts(
        &self,
        _: AlertsGrant<'_>,
    ) -> std::result::Result<Vec<FraudAlert>, DataError<Self::Error>> {
        Ok(Vec::new())
    }

    fn transactions(
        &self,
        _: TransactionsGrant<'_>,
    ) -> std::result::Result<Vec<Transaction>, DataError<Self::Error>> {
        Ok(Vec::new())
    }
}

async fn bank(dir: &str, port: &str, platform: &str, origin: &str, log_vkey: &str) -> Result<()> {
    let dir = PathBuf::from(dir);
    let ledger = SqliteStore::open(dir.join("bank.sqlite"))?;
    let keys = BankKeys::load_or_create(&dir, &SystemRandom::new())?;
    let bank = Arc::new(
        Bank::builder(HolderId::new(BANK)?, ledger, keys, BrokerId::new(BROKER)?).build()?,
    );
    bank.set_policy(HolderPolicy::default())?;
    let broker = BrokerClient::new(platform, settings())?;
    // The broker's token keys, from its well-known path.
    bank.trust_broker_keys(&broker.jwks().await?)?;
    sync_feed(&bank, &broker).await?;
    // The platform's revocations, from the signed feed, every half second.
    let follower = Arc::clone(&bank);
    let feed = broker.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(StdDuration::from_millis(500)).await;
            let _ = sync_feed(&follower, &feed).await;
        }
    });
    // The bank's monitor of the platform's published log, over HTTP, every second, trusting the
    // witness; its state kept beside the ledger, and its passes counted in the bank's metrics.
    let metrics = Metrics::new();
    // The witness writes its key beside the parties' directories; read until it is whole.
    let mut witness_key = None;
    for _ in 0..100 {
        let text = wait_for_file(&dir.join("../witness.vkey")).await?;
        if let Ok(key) = CosignatureVerifier::from_vkey(text.trim()) {
            witness_key = Some(key);
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    let policy = WitnessPolicy {
        witnesses: vec![witness_key.ok_or("the witness's key never appeared whole")?],
        quorum: 1,
    };
    let monitor = LogMonitor::new(origin, NoteVerifier::from_vkey(log_vkey)?, policy)?;
    let (watched, counted) = (Arc::clone(&bank), metrics.clone());
    let (published, state) = (platform.to_owned(), dir.join("monitor.json"));
    std::thread::spawn(move || {
        if let Err(error) = watch(&watched, monitor, &published, &state, &counted) {
            eprintln!("the bank's monitor stopped: {error}");
        }
    });
    let sessions = Arc::new(SessionCookies::new(&secret(3)).insecure_for_loopback());
    // The bank's own app: the customer links the chat app and registers a device.
    let auth = sessions.clone();
    let linker = Arc::clone(&bank);
    let app = axum::Router::new().route(
        "/demo/link",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: String| async move {
                let Some(customer) = auth.authenticate(&headers) else {
                    return axum::http::StatusCode::UNAUTHORIZED.into_response();
                };
                let Ok(device) = URL_SAFE_NO_PAD.decode(body.trim()) else {
                    return axum::http::StatusCode::BAD_REQUEST.into_response();
                };
                let linker = Arc::clone(&linker);
                let linked = tokio::task::spawn_blocking(move || -> Result<String> {
                    let key = hpke::DevicePublicKey::from_bytes(&device)?;
                    linker.register_device(&customer, key)?;
                    Ok(linker
                        .link_subject(&customer, &PlatformId::new(PLATFORM)?)?
                        .to_string())
                })
                .await;
                match linked {
                    Ok(Ok(pairwise)) => pairwise.into_response(),
                    _ => axum::http::StatusCode::UNPROCESSABLE_ENTITY.into_response(),
                }
            },
        ),
    );
    let router = BankEndpoints::new(
        Arc::clone(&bank),
        Arc::new(Accounts),
        &format!("http://127.0.0.1:{port}"),
        sessions.clone(),
    )
    .deliver_to(broker)
    .metrics(metrics)
    .router()?
    .merge(demo_login(sessions))
    .merge(app);
    serve(port, router).await
}

/// The bank's monitor, on a thread of its own (its HTTP client blocks): restored from its saved
/// state if there is one, a pass a second, the state saved durably after each (what the pass
/// changed, appended to the file).
fn watch(
    bank: &Bank<SqliteStore>,
    monitor: LogMonitor,
    platform: &str,
    state: &Path,
    metrics: &Metrics,
) -> Result<()> {
    let mut monitor = match monitor.restore_from(state) {
        Ok(restored) => restored,
        Err(MonitorError::Saved(SavedStateError::Unreadable(std::io::ErrorKind::NotFound))) => {
            monitor
        }
        Err(error) => return Err(error.into()),
    };
    let tiles = HttpTiles::new(platform, &settings())?;
    loop {
        std::thread::sleep(StdDuration::from_secs(1));
        let pass = monitor.check(bank, &tiles, bank.now());
        metrics.record_monitor(pass.as_ref());
        // A state not saved is saved at the next pass; the alarms are in the metrics already.
        if pass.is_ok()
            && let Err(error) = monitor.save_to(state)
        {
            eprintln!("the bank's monitor state was not saved: {error}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The witness's process

async fn witness(dir: &str, port: &str, origin: &str, vkey: &str) -> Result<()> {
    let dir = PathBuf::from(dir);
    let (key, _) = KeyFile::new(dir.join("witness-key.der")).load_or_create(&SystemRandom::new())?;
    let signer = CosignatureSigner::new(WITNESS, key.to_pkcs8_der())?;
    std::fs::write(dir.join("../witness.vkey"), signer.verifier().to_vkey())?;
    let witness = Witness::open(dir.join("witness.sqlite"), signer, Arc::new(SystemClock))?
        .follow(origin, NoteVerifier::from_vkey(vkey)?);
    serve(port, witness_router(Arc::new(witness), Metrics::new())).await
}

// ---------------------------------------------------------------------------------------------
// The person (and the auditor), and the three processes

/// The children, killed when this is dropped.
struct Parties(Vec<Child>);

impl Drop for Parties {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn spawn(parties: &mut Parties, args: &[&str]) -> Result<()> {
    parties
        .0
        .push(Command::new(std::env::current_exe()?).args(args).spawn()?);
    Ok(())
}

async fn wait_for(http: &reqwest::Client, origin: &str) -> Result<()> {
    for _ in 0..100 {
        if http.get(format!("{origin}/metrics")).send().await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    Err(format!("{origin} did not start").into())
}

async fn wait_for_file(path: &Path) -> Result<String> {
    for _ in 0..100 {
        if let Ok(text) = std::fs::read_to_string(path) {
            return Ok(text);
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    Err(format!("{} never appeared", path.display()).into())
}

/// The session cookie a demo login sets.
async fn login(http: &reqwest::Client, origin: &str, who: &str) -> Result<String> {
    let response = http
        .post(format!("{origin}/demo/login/{who}"))
        .send()
        .await?;
    let cookie = response
        .headers()
        .get("set-cookie")
        .ok_or("no session cookie")?
        .to_str()?;
    Ok(cookie.split(';').next().unwrap_or_default().to_owned())
}

/// The form token of a page.
fn csrf(page: &str) -> Result<String> {
    let start = page.find("name=\"csrf\" value=\"").ok_or("no form token")? + 19;
    let end = page[start..].find('"').ok_or("no form token")?;
    Ok(page[start..start + end].to_owned())
}

/// The text of an HTML fragment, crudely (for printing).
fn text(html: &str) -> String {
    let mut out = String::new();
    let mut tag = false;
    for c in html.chars() {
        match c {
            '<' => tag = true,
            '>' => {
                tag = false;
                out.push(' ');
            }
            c if !tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

async fn person() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (platform_dir, bank_dir, witness_dir) = (
        dir.path().join("platform"),
        dir.path().join("bank"),
        dir.path().join("witness"),
    );
    for d in [&platform_dir, &bank_dir, &witness_dir] {
        std::fs::create_dir_all(d)?;
    }
    // The bank's keys exist before anyone starts: its attestation key is registered with the
    // broker out of band.
    let keys = BankKeys::load_or_create(&bank_dir, &SystemRandom::new())?;
    std::fs::write(
        dir.path().join("bank-attestation.pub"),
        URL_SAFE_NO_PAD.encode(keys.attestation().public_key().as_bytes()),
    )?;
    let (p, b, w) = (free_port()?, free_port()?, free_port()?);
    let (platform_url, bank_url, witness_url) = (
        format!("http://127.0.0.1:{p}"),
        format!("http://127.0.0.1:{b}"),
        format!("http://127.0.0.1:{w}"),
    );
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(consent_broker::http::tls_config(&settings())?)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut parties = Parties(Vec::new());
    println!("1. Three processes on loopback: the platform, the bank, a witness");
    spawn(
        &mut parties,
        &[
            "platform",
            path(&platform_dir),
            &p.to_string(),
            &bank_url,
            &witness_url,
        ],
    )?;
    wait_for(&http, &platform_url).await?;
    let vkey = wait_for_file(&platform_dir.join("log.vkey")).await?;
    let origin = wait_for_file(&platform_dir.join("log.origin")).await?;
    spawn(
        &mut parties,
        &[
            "witness",
            path(&witness_dir),
            &w.to_string(),
            &origin,
            &vkey,
        ],
    )?;
    spawn(
        &mut parties,
        &[
            "bank",
            path(&bank_dir),
            &b.to_string(),
            &platform_url,
            &origin,
            &vkey,
        ],
    )?;
    wait_for(&http, &witness_url).await?;
    wait_for(&http, &bank_url).await?;
    println!("   platform {platform_url}, bank {bank_url}, witness {witness_url}");

    println!("\n2. Alice signs in at her bank, links the chat app and registers her phone's key");
    let phone = hpke::DeviceSecretKey::generate(&SystemRandom::new())?;
    let bank_cookie = login(&http, &bank_url, "alice@first-bank").await?;
    let pairwise = http
        .post(format!("{bank_url}/demo/link"))
        .header("cookie", &bank_cookie)
        .body(URL_SAFE_NO_PAD.encode(phone.public_key().as_bytes()))
        .send()
        .await?
        .text()
        .await?;
    println!("   the bank gives the chat app a pairwise id for her: {pairwise}");

    println!(
        "\n3. The chat app asks for consent; Alice approves at the bank; the broker activates it"
    );
    let platform_cookie = login(&http, &platform_url, &pairwise).await?;
    let consent = http
        .post(format!("{platform_url}/demo/request"))
        .header("cookie", &platform_cookie)
        .send()
        .await?
        .text()
        .await?;
    let form = ApprovalForm {
        consent: ConsentId::new(consent.clone())?,
        platform: PlatformId::new(PLATFORM)?,
        // She approves less than was asked: her balance, not alerts.
        scopes: ScopeSet::from([Scope::Balance]),
        purposes: PurposeSet::from([Purpose::CustomerService]),
        accounts: AccountSet::from([AccountId::new("acc-current")?]),
        consent_expires_at: time::OffsetDateTime::now_utc() + Duration::days(30),
        unattended_daily_limit: 0,
        devices: vec![phone.public_key().thumbprint()],
        plaintext: PlaintextUses::new(),
    };
    let approved = http
        .post(format!("{bank_url}/v1/approvals"))
        .header("cookie", &bank_cookie)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&form)?)
        .send()
        .await?;
    let attestation: serde_json::Value = serde_json::from_slice(&approved.bytes().await?)?;
    let attestation = attestation["attestation"]
        .as_str()
        .ok_or("no attestation")?;
    let delivered = http
        .post(format!("{platform_url}/consents/{consent}/approval"))
        .body(attestation.to_owned())
        .send()
        .await?;
    println!(
        "   consent {consent}: the bank signed an attestation of {} bytes; the broker answered {}",
        attestation.len(),
        delivered.status()
    );

    println!(
        "\n4. In the chat, Alice asks for her balance; the platform relays what it cannot read"
    );
    let page = http
        .get(format!("{platform_url}/chat"))
        .header("cookie", &platform_cookie)
        .send()
        .await?
        .text()
        .await?;
    let asked = http
        .post(format!("{platform_url}/chat/ask"))
        .header("cookie", &platform_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}", csrf(&page)?))
        .send()
        .await?;
    println!(
        "   the platform's server: {}",
        asked
            .headers()
            .get("location")
            .map_or("?", |l| l.to_str().unwrap_or("?"))
    );
    let relayed: Vec<SealedResponse> = serde_json::from_slice(
        &http
            .get(format!("{platform_url}/chat/messages"))
            .header("cookie", &platform_cookie)
            .send()
            .await?
            .bytes()
            .await?,
    )?;
    let sealed = relayed.first().ok_or("nothing relayed")?;
    let AccountData::Balance(balance) = open_response(sealed, &phone)? else {
        return Err("not a balance".into());
    };
    let kept = std::fs::read(platform_dir.join("relayed.jsonl"))?;
    println!(
        "   her phone opens it: {} {:.2}; the platform kept {} bytes, none of them the figure ({})",
        balance.available.currency,
        f64::from(u32::try_from(balance.available.minor_units)?) / 100.0,
        kept.len(),
        !String::from_utf8_lossy(&kept).contains("123456")
    );

    println!("\n5. On the dashboard she sees the consent and stops it");
    let list = http
        .get(format!("{platform_url}/dashboard"))
        .header("cookie", &platform_cookie)
        .send()
        .await?
        .text()
        .await?;
    let row = list
        .split("<tbody>")
        .nth(1)
        .and_then(|t| t.split("</tr>").next())
        .unwrap_or("");
    println!("   {}", text(row));
    let confirm = http
        .get(format!(
            "{platform_url}/dashboard/consents/{consent}/revoke"
        ))
        .header("cookie", &platform_cookie)
        .send()
        .await?
        .text()
        .await?;
    let revoked = http
        .post(format!(
            "{platform_url}/dashboard/consents/{consent}/revoke"
        ))
        .header("cookie", &platform_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}", csrf(&confirm)?))
        .send()
        .await?;
    println!("   confirmed: {}", revoked.status());
    // The bank reads the platform's signed feed every half second.
    tokio::time::sleep(StdDuration::from_millis(1200)).await;
    let again = http
        .post(format!("{platform_url}/chat/ask"))
        .header("cookie", &platform_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}", csrf(&page)?))
        .send()
        .await?;
    println!(
        "   asking again: {}",
        again
            .headers()
            .get("location")
            .map_or("?", |l| l.to_str().unwrap_or("?"))
    );

    println!(
        "\n6. An auditor reads the published log over HTTP and checks it against the log's key"
    );
    tokio::time::sleep(StdDuration::from_millis(1500)).await;
    let base = platform_url.clone();
    let key = NoteVerifier::from_vkey(&vkey)?;
    let report =
        tokio::task::spawn_blocking(move || -> Result<consent_broker::tiles::TilesReport> {
            Ok(verify_tiles(
                &HttpTiles::new(&base, &settings())?,
                &key,
                None,
            )?)
        })
        .await??;
    let note = BrokerClient::new(&platform_url, settings())?
        .checkpoint()
        .await?;
    println!(
        "   {} entries, {} tiles verified; cosigned by the witness: {}",
        report.checkpoint.size,
        report.tiles,
        note.contains(&format!("— {WITNESS}"))
    );

    println!(
        "\n7. What each server counted (GET /metrics; no names, no ids); the bank's monitor reads \
         the platform's published log every second"
    );
    for (name, url) in [("platform", &platform_url), ("bank", &bank_url)] {
        let metrics = http
            .get(format!("{url}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        for line in metrics.lines().filter(|l| {
            [
                "consent_broker_gate",
                "consent_broker_decisions",
                "consent_broker_monitor",
            ]
            .iter()
            .any(|family| l.starts_with(family))
        }) {
            println!("   {name}: {line}");
        }
    }
    drop(parties);
    Ok(())
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}
