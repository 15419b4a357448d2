//! Across the wire, over loopback in one run:
//!
//! - `http/gated_*`: requests through the bank's [`GateLayer`] (token and proof checked, the
//!   bank's ledger read, the access journalled, the balance sealed to the device), with
//!   `CONCURRENCY` requests in flight, each with its own token and proof (made outside the
//!   timed part); on a memory ledger and on SQLite (one fsync per journalled access);
//! - `http/ungated`: the same handler without the gate: the same balance sealed to the same
//!   device, the same headers sent, no check and no journal;
//! - `http/dashboard_10k`: the dashboard's list page for a subject with 10,000 consents; its p95
//!   over 200 requests is printed after the group.
//!
//! Run: `cargo bench --bench http`. The time per request with `CONCURRENCY` in flight is one
//! over the throughput (requests per second = 1 / time).
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented entry point"
)]
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a benchmark fails by panicking"
)]

use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use axum::routing::get;
use consent_broker::dpop::HttpRequest;
use consent_broker::http::bank::BankEndpoints;
use consent_broker::http::dashboard::{Dashboard, SessionCookies};
use consent_broker::testing::{SeededRandom, TestBank, TestBroker};
use consent_broker::*;
use criterion::{Criterion, criterion_group, criterion_main};

mod support;

/// Requests in flight at once.
const CONCURRENCY: usize = 4;

struct Served {
    url: String,
    _task: tokio::task::JoinHandle<()>,
}

async fn serve(router: axum::Router) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    Served { url, _task: task }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(consent_broker::http::tls_config(&Default::default()).unwrap())
        .pool_max_idle_per_host(CONCURRENCY * 2)
        .build()
        .unwrap()
}

/// Sends every `(token, proof)` to `url` with `CONCURRENCY` in flight; all must be 200.
async fn blast(
    http: &reqwest::Client,
    url: &str,
    credentials: Vec<(String, String)>,
) -> StdDuration {
    let queue = Arc::new(std::sync::Mutex::new(credentials));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let queue = Arc::clone(&queue);
        let http = http.clone();
        let url = url.to_owned();
        workers.spawn(async move {
            loop {
                let next = queue.lock().unwrap().pop();
                let Some((token, proof)) = next else { break };
                let response = http
                    .get(&url)
                    .header("authorization", format!("DPoP {token}"))
                    .header("dpop", proof)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                response.bytes().await.unwrap();
            }
        });
    }
    while workers.join_next().await.is_some() {}
    started.elapsed()
}

/// A bank beside a broker with one live grant, its API served; what a platform needs to call it.
struct Bench {
    kit: TestBroker,
    device: hpke::DevicePublicKey,
    holder: HolderId,
    access: AccessRequest,
    served: Served,
}

impl Bench {
    async fn new<L: Store + LedgerRead + Send + Sync + 'static>(ledger: L) -> Self {
        let kit = TestBroker::memory();
        let test_bank = TestBank::with_settings(&kit, ledger, support::open_gate());
        let consent = test_bank.granted(&kit);
        let access = kit.access(consent.id());
        let TestBank {
            bank,
            accounts,
            device,
            ..
        } = test_bank;
        let holder = bank.id().clone();
        // The bank's API as an embedder serves it; the accounts are the kit's.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let router = BankEndpoints::new(
            Arc::new(bank),
            Arc::new(accounts),
            &origin,
            Arc::new(SessionCookies::new(&[1; 32])),
        )
        .router()
        .unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self {
            kit,
            device: device.public_key(),
            holder,
            access,
            served: Served {
                url: format!("{origin}/v1/data"),
                _task: task,
            },
        }
    }

    /// `n` fresh tokens, each with a fresh proof for the data URL.
    fn credentials(&self, n: u64) -> Vec<(String, String)> {
        let random = SeededRandom::new(n);
        (0..n)
            .map(|_| {
                let token = self.kit.token(&self.access).token;
                let proof = self
                    .kit
                    .sender
                    .proof(
                        &HttpRequest {
                            method: "GET",
                            url: &self.served.url,
                        },
                        &token,
                        self.kit.broker.now(),
                        &random,
                    )
                    .unwrap();
                (token, proof)
            })
            .collect()
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let http = client();
    let memory = runtime.block_on(Bench::new(MemoryStore::new()));
    let dir = tempfile::tempdir().unwrap();
    let sqlite = runtime.block_on(Bench::new(
        SqliteStore::open(dir.path().join("bank.sqlite")).unwrap(),
    ));

    // The same handler without the gate: the same balance, sealed to the same device.
    let device = memory.device;
    let account = memory.access.account.clone();
    let holder = memory.holder.clone();
    let consent = memory.access.consent.clone();
    let ungated = runtime.block_on(serve(axum::Router::new().route(
        "/v1/data",
        get(move || {
            let account = account.clone();
            let holder = holder.clone();
            let consent = consent.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    let data = AccountData::Balance(Balance {
                        account: account.clone(),
                        available: Money {
                            minor_units: 4_200,
                            currency: "EUR".into(),
                        },
                        as_of: consent_broker::testing::START,
                    });
                    let context = ResponseContext {
                        holder,
                        consent,
                        token_id: "t".into(),
                        scope: Scope::Balance,
                        account,
                        sequence: 1,
                    };
                    let sealed =
                        seal_response(&data, &context, &[device], &SystemRandom::new()).unwrap();
                    serde_json::to_vec(&Response::Sealed(sealed)).unwrap()
                })
                .await
                .unwrap()
            }
        }),
    )));
    let ungated_url = format!("{}/v1/data", ungated.url);
    let fixed = memory.credentials(1).pop().unwrap();

    let mut group = c.benchmark_group("http");
    group.sample_size(20);
    group.measurement_time(StdDuration::from_secs(6));
    group.bench_function("ungated", |b| {
        b.iter_custom(|iters| {
            let credentials = vec![fixed.clone(); usize::try_from(iters).unwrap()];
            runtime.block_on(blast(&http, &ungated_url, credentials))
        })
    });
    group.bench_function("gated_memory", |b| {
        b.iter_custom(|iters| {
            let credentials = memory.credentials(iters);
            runtime.block_on(blast(&http, &memory.served.url, credentials))
        })
    });
    group.bench_function("gated_sqlite", |b| {
        b.iter_custom(|iters| {
            let credentials = sqlite.credentials(iters);
            runtime.block_on(blast(&http, &sqlite.served.url, credentials))
        })
    });
    group.finish();

    dashboard(c, &runtime, &http);
}

/// The dashboard's list for a subject with 10,000 consents (each approved at the bank).
fn dashboard(c: &mut Criterion, runtime: &tokio::runtime::Runtime, http: &reqwest::Client) {
    let kit = TestBroker::memory();
    for _ in 0..10_000 {
        kit.bank
            .approve(&kit.broker, &kit.request(), |_| {})
            .unwrap();
    }
    let subject = kit.subject.clone();
    let sessions = Arc::new(SessionCookies::new(&[2; 32]).insecure_for_loopback());
    let cookie = format!("cb_session={}", sessions.issue(&subject));
    let broker = Arc::new(kit.broker);
    let served = runtime.block_on(serve(
        Dashboard::new(Arc::clone(&broker), sessions, &[3; 32]).router(),
    ));
    let url = format!("{}/dashboard", served.url);
    let get = || async {
        let response = http
            .get(&url)
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap()
    };
    let page = runtime.block_on(get());
    assert!(String::from_utf8_lossy(&page).contains("10000 in all"));
    let mut group = c.benchmark_group("http");
    group.sample_size(20);
    group.bench_function("dashboard_10k", |b| b.iter(|| runtime.block_on(get())));
    group.finish();
    let mut times: Vec<StdDuration> = (0..200)
        .map(|_| {
            let started = Instant::now();
            runtime.block_on(get());
            started.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "http/dashboard_10k over 200 requests: p50 {:?}, p95 {:?}, max {:?}",
        times[100], times[189], times[199]
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
