//! Across the wire: each party's endpoints served on loopback with axum, called with the
//! crate's clients and with raw requests.

mod browser;
mod dashboard;
mod gate;
mod load;
mod minted;
mod public;
mod traces;

use std::net::SocketAddr;
use std::sync::Arc;

use consent_broker::http::bank::BankEndpoints;
use consent_broker::http::broker::BrokerEndpoints;
use consent_broker::http::dashboard::SessionCookies;
use consent_broker::http::{BankClient, ClientSettings};
use consent_broker::testing::{Accounts, TestBank, TestBroker};
use consent_broker::*;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The session secret of the test servers' logins.
pub const SESSION_SECRET: [u8; 32] = [9; 32];

/// A server on a loopback port, stopped gracefully on [`Server::stop`].
pub struct Server {
    pub addr: SocketAddr,
    stop: std::sync::Mutex<Option<oneshot::Sender<()>>>,
    task: tokio::sync::Mutex<Option<JoinHandle<std::io::Result<()>>>>,
}

impl Server {
    /// Serves `router` on a fresh loopback port.
    pub async fn start(router: axum::Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::on(listener, router)
    }

    /// Serves `router` on `listener`.
    pub fn on(listener: tokio::net::TcpListener, router: axum::Router) -> Self {
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Self {
            addr,
            stop: std::sync::Mutex::new(Some(stop)),
            task: tokio::sync::Mutex::new(Some(task)),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets requests in flight finish, and waits.
    pub async fn stop(&self) {
        if let Some(stop) = self.stop.lock().unwrap().take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.lock().await.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// A broker and a bank with a live grant between them, each side's parts shared (`Arc`) as
/// servers hold them, and the bank's API served on loopback.
pub struct World<L = MemoryStore> {
    pub broker: Arc<Broker<MemoryStore>>,
    pub bank: Arc<Bank<L>>,
    pub accounts: Arc<Accounts>,
    pub clock: Arc<ManualClock>,
    pub device: hpke::DeviceSecretKey,
    pub customer: SubjectId,
    pub subject: SubjectId,
    pub platform: PlatformId,
    pub current: AccountId,
    pub consent: ConsentId,
    /// Every consent granted (the first is `consent`).
    pub consents: Vec<ConsentId>,
    /// The platform's question: the balance of the current account, the subject present.
    pub access: AccessRequest,
    pub client: BankClient,
    pub sessions: Arc<SessionCookies>,
    pub bank_server: Server,
}

/// Settings for a quick test client: short timeouts, few retries.
pub fn quick() -> ClientSettings {
    ClientSettings {
        timeout: std::time::Duration::from_secs(5),
        attempts: 2,
        backoff: std::time::Duration::from_millis(10),
        ..ClientSettings::default()
    }
}

impl World<MemoryStore> {
    /// On memory stores.
    pub async fn new() -> Self {
        Self::build(MemoryStore::new(), GateSettings::default(), |a| a).await
    }
}

impl<L: Store + LedgerRead + Send + Sync + 'static> World<L> {
    /// The bank on `ledger` with `settings`; its account system as `accounts` makes it from the
    /// kit's.
    pub async fn build(
        ledger: L,
        settings: GateSettings,
        accounts: impl FnOnce(Accounts) -> Accounts,
    ) -> Self {
        Self::build_with(ledger, settings, accounts, 1).await
    }

    /// As [`World::build`], with `grants` consents granted (each its own approval at the bank).
    pub async fn build_with(
        ledger: L,
        settings: GateSettings,
        accounts: impl FnOnce(Accounts) -> Accounts,
        grants: usize,
    ) -> Self {
        Self::build_approving(ledger, settings, accounts, grants, |_| {}).await
    }

    /// As [`World::build_with`], the first approval narrowed by `narrow` at the bank.
    pub async fn build_approving(
        ledger: L,
        settings: GateSettings,
        accounts: impl FnOnce(Accounts) -> Accounts,
        grants: usize,
        narrow: impl FnOnce(&mut ApprovalStatement),
    ) -> Self {
        let kit = TestBroker::memory();
        let test_bank = TestBank::with_settings(&kit, ledger, settings);
        let consent = test_bank
            .approve(&kit, &kit.request(), narrow)
            .expect("the broker activates the grant");
        let mut consents = vec![consent.id().clone()];
        for _ in 1..grants {
            consents.push(test_bank.granted(&kit).id().clone());
        }
        let access = kit.access(consent.id());
        let TestBroker {
            broker,
            clock,
            platform,
            subject,
            current,
            sender,
            ..
        } = kit;
        let TestBank {
            bank,
            accounts: kit_accounts,
            device,
            customer,
            ..
        } = test_bank;
        let bank = Arc::new(bank);
        let accounts = Arc::new(accounts(kit_accounts));
        let sessions = Arc::new(
            SessionCookies::new(&SESSION_SECRET)
                .insecure_for_loopback()
                .with_clock(clock.clone()),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let router = BankEndpoints::new(
            Arc::clone(&bank),
            Arc::clone(&accounts),
            &origin,
            sessions.clone(),
        )
        .router()
        .unwrap();
        let bank_server = Server::on(listener, router);
        let client = BankClient::new(sender, Arc::new(SystemRandom::new()), quick())
            .unwrap()
            .with_clock(clock.clone());
        Self {
            broker: Arc::new(broker),
            bank,
            accounts,
            clock,
            device,
            customer,
            subject,
            platform,
            current,
            consent: consent.id().clone(),
            consents,
            access,
            client,
            sessions,
            bank_server,
        }
    }

    /// The bank's data endpoint.
    pub fn data_url(&self) -> String {
        format!("{}/v1/data", self.bank_server.origin())
    }

    /// A token for `access`, issued by the broker.
    pub fn token_for(&self, access: &AccessRequest) -> String {
        match self.broker.authorise_with_token(access).unwrap() {
            TokenOutcome::Issued(token) => token.token,
            TokenOutcome::Denied(denial) => panic!("denied: {:?}", denial.reasons),
        }
    }

    /// A token for the world's question.
    pub fn token(&self) -> String {
        self.token_for(&self.access)
    }

    /// The bank applies the broker's revocation feed.
    pub fn sync(&self) {
        let after = self
            .bank
            .ledger()
            .feed_state()
            .unwrap()
            .map_or(0, |f| f.position);
        let feed = self.broker.revocation_feed(self.bank.id(), after).unwrap();
        self.bank.apply_revocation_feed(&feed).unwrap();
    }

    /// A `Cookie` header signing `subject` in.
    pub fn cookie(&self, subject: &SubjectId) -> String {
        format!("cb_session={}", self.sessions.issue(subject))
    }

    /// The bank's journal entries of `kind`.
    pub fn journalled(&self, kind: AuditKind) -> usize {
        let size = self.bank.journal().audit_len().unwrap();
        self.bank
            .journal()
            .audit_entries(0..size)
            .unwrap()
            .iter()
            .filter(|e| e.event.kind() == kind)
            .count()
    }
}

/// The broker's endpoints for a world's broker, served.
pub async fn serve_broker(
    broker: &Arc<Broker<MemoryStore>>,
) -> (BrokerEndpoints<MemoryStore>, Server) {
    let endpoints = BrokerEndpoints::new(Arc::clone(broker));
    let server = Server::start(endpoints.clone().router()).await;
    (endpoints, server)
}

/// A plain client for raw requests (TLS on the crate's ring configuration).
pub fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(consent_broker::http::tls_config(&quick()).unwrap())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
}
