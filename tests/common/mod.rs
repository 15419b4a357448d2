//! Shared fixture for the integration tests: a broker on a manual clock with sequential ids, a
//! registered bank (with its attestation signer) and a registered platform.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use consent_broker::*;
use ring::rand::SystemRandom;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

pub const START: OffsetDateTime = datetime!(2026-11-21 09:00 UTC);

pub struct Fixture<S: Store = MemoryStore> {
    pub broker: Broker<S>,
    pub clock: Arc<ManualClock>,
    pub bank: HolderId,
    pub bank_signer: AttestationSigner,
    pub platform: PlatformId,
    pub alice: SubjectId,
    pub current: AccountId,
    pub savings: AccountId,
    pub rng: SystemRandom,
}

pub fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}

impl Fixture<MemoryStore> {
    pub fn new() -> Self {
        Self::with_store(MemoryStore::new())
    }
}

impl<S: Store> Fixture<S> {
    /// Registers the bank (default policy) and the platform (all purposes).
    pub fn with_store(store: S) -> Self {
        Self::with_policy(store, HolderPolicy::default())
    }

    pub fn with_policy(store: S, policy: HolderPolicy) -> Self {
        Self::configured(store, policy, |builder| builder)
    }

    /// The fixture with a broker configured further by `configure` (keys, clock, lifetimes).
    pub fn with_builder(
        store: S,
        configure: impl FnOnce(BrokerBuilder<S>) -> BrokerBuilder<S>,
    ) -> Self {
        Self::configured(store, HolderPolicy::default(), configure)
    }

    fn configured(
        store: S,
        policy: HolderPolicy,
        configure: impl FnOnce(BrokerBuilder<S>) -> BrokerBuilder<S>,
    ) -> Self {
        let clock = Arc::new(ManualClock::new(START));
        let builder = Broker::builder(id("broker"), store)
            .clock(clock.clone())
            .ids(Arc::new(SequentialIds::new()));
        let broker = configure(builder).build().unwrap();
        let rng = SystemRandom::new();
        let bank: HolderId = id("bank");
        let bank_signer =
            AttestationSigner::new(bank.clone(), SigningKey::generate(&rng).unwrap()).unwrap();
        broker
            .register_holder(HolderRegistration {
                id: bank.clone(),
                policy,
                attestation_keys: vec![bank_signer.public_key()],
            })
            .unwrap();
        let platform: PlatformId = id("chat");
        broker
            .register_platform(PlatformProfile {
                id: platform.clone(),
                registered_purposes: PurposeSet::from(Purpose::ALL),
            })
            .unwrap();
        Self {
            broker,
            clock,
            bank,
            bank_signer,
            platform,
            alice: id("alice"),
            current: id("acc-current"),
            savings: id("acc-savings"),
            rng,
        }
    }

    /// Balance + alerts, both purposes, both accounts, 90 days.
    pub fn draft(&self) -> ConsentRequestDraft {
        ConsentRequestDraft {
            subject: self.alice.clone(),
            platform: self.platform.clone(),
            holder: self.bank.clone(),
            scopes: vec![Scope::Balance.into(), Scope::Alerts.into()],
            purposes: vec![
                Purpose::CustomerService.into(),
                Purpose::FraudProtection.into(),
            ],
            accounts: AccountSelection::Listed(AccountSet::from([
                self.current.clone(),
                self.savings.clone(),
            ])),
            duration: Duration::days(90),
        }
    }

    pub fn request(&self) -> ConsentRequest {
        self.broker.request_consent(self.draft()).unwrap()
    }

    /// The statement approving everything requested (listed accounts), for 90 days from now.
    pub fn full_statement(&self, request: &ConsentRequest) -> ApprovalStatement {
        let accounts = match &request.accounts {
            AccountSelection::Listed(accounts) => accounts.clone(),
            AccountSelection::SubjectChooses => AccountSet::from([self.current.clone()]),
        };
        ApprovalStatement {
            consent: request.id.clone(),
            subject: request.subject.clone(),
            scopes: request.scopes,
            purposes: request.purposes,
            accounts,
            consent_expires_at: self.broker.now() + request.duration,
        }
    }

    pub fn attest(&self, statement: &ApprovalStatement) -> String {
        self.bank_signer
            .sign(statement, self.broker.id(), self.broker.now(), &self.rng)
            .unwrap()
    }

    /// Requests and approves everything: a live grant.
    pub fn granted(&self) -> ConsentRequest {
        let request = self.request();
        let token = self.attest(&self.full_statement(&request));
        self.broker.approve(&request.id, &token).unwrap();
        request
    }

    pub fn access(&self, consent: &ConsentId) -> AccessRequest {
        AccessRequest {
            consent: consent.clone(),
            platform: self.platform.clone(),
            scope: Scope::Balance.into(),
            purpose: Purpose::CustomerService.into(),
            account: self.current.clone(),
            presence: Presence::SubjectPresent,
        }
    }

    pub fn decide(&self, access: &AccessRequest) -> Decision {
        self.broker.authorise_access(access).unwrap().decision()
    }

    pub fn audit(&self) -> Vec<AuditEntry> {
        self.broker.audit_log().unwrap()
    }

    pub fn last_audit(&self) -> AuditEntry {
        self.audit().pop().unwrap()
    }

    pub fn audit_len(&self) -> u64 {
        self.broker.store().audit_len().unwrap()
    }
}
