//! A broker for tests in one line.

use std::sync::Arc;

use time::OffsetDateTime;
use time::macros::datetime;

use super::{SeededRandom, SimulatedBank};
use crate::broker::{Broker, BrokerBuilder, BrokerKeys};
use crate::clock::ManualClock;
use crate::consent::{AccountSelection, Consent, ConsentRequest, ConsentRequestDraft};
use crate::dpop::DpopSigner;
use crate::ids::{AccountId, ConsentId, PlatformId, SequentialIds, SubjectId};
use crate::keys::SigningKey;
use crate::policy::{AccessRequest, Decision, HolderPolicy, PlatformProfile, Presence};
use crate::random::RandomSource;
use crate::sets::{AccountSet, PurposeSet};
use crate::store::{MemoryStore, Store};
use crate::vocab::{Purpose, Scope};

/// When every [`TestBroker`]'s clock starts.
pub const START: OffsetDateTime = datetime!(2026-11-21 09:00 UTC);

/// A broker ready for a test: a manual clock at [`START`], consent ids `cns_1`, `cns_2`, …, token
/// ids and keys from a seeded source, a [`SimulatedBank`] `bank` (registered, default policy) and
/// a platform `chat` registered for every purpose, whose tokens are bound to its DPoP key
/// [`TestBroker::sender`]. The subject is `alice`, with the accounts `acc-current` and
/// `acc-savings`.
pub struct TestBroker<S = MemoryStore> {
    /// The broker under test.
    pub broker: Broker<S>,
    /// Its clock: move it with `advance` and `set`.
    pub clock: Arc<ManualClock>,
    /// The bank.
    pub bank: SimulatedBank,
    /// The platform.
    pub platform: PlatformId,
    /// The subject.
    pub subject: SubjectId,
    /// The subject's current account.
    pub current: AccountId,
    /// The subject's savings account.
    pub savings: AccountId,
    /// The platform's DPoP key: the broker binds the platform's tokens to it, and a test makes
    /// the proofs a bank's gate asks for with it.
    pub sender: DpopSigner,
}

impl<S> std::fmt::Debug for TestBroker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestBroker").finish_non_exhaustive()
    }
}

fn id<T: std::str::FromStr>(text: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    text.parse().expect("the fixture's ids are valid")
}

impl TestBroker<MemoryStore> {
    /// On a fresh memory store.
    pub fn memory() -> Self {
        Self::on(MemoryStore::new())
    }
}

#[cfg(feature = "sqlite")]
impl TestBroker<crate::store::SqliteStore> {
    /// On a SQLite database at `path` (created if missing).
    ///
    /// # Panics
    /// If the database cannot be opened.
    pub fn sqlite(path: impl AsRef<std::path::Path>) -> Self {
        Self::on(crate::store::SqliteStore::open(path).expect("the test database opens"))
    }
}

impl<S: Store> TestBroker<S> {
    /// On `store`, with the defaults above.
    pub fn on(store: S) -> Self {
        Self::configured(store, HolderPolicy::default(), |builder| builder)
    }

    /// On `store`, the bank with `policy`.
    pub fn with_policy(store: S, policy: HolderPolicy) -> Self {
        Self::configured(store, policy, |builder| builder)
    }

    /// On `store`, the broker configured further by `configure` (lifetimes, another clock, other
    /// keys…) after the fixture's settings.
    ///
    /// # Panics
    /// If the store publishes keys other than the ones the broker would use (a store a real
    /// broker ran on: the kit's keys come from a public seed and must never replace real ones;
    /// nothing is written then), or if the broker cannot be built or the bank and platform cannot
    /// be registered.
    pub fn configured(
        store: S,
        policy: HolderPolicy,
        configure: impl FnOnce(BrokerBuilder<S, BrokerKeys>) -> BrokerBuilder<S, BrokerKeys>,
    ) -> Self {
        let clock = Arc::new(ManualClock::new(START));
        let random: Arc<dyn RandomSource> = Arc::new(SeededRandom::new(1));
        let keys = BrokerKeys::ephemeral(random.as_ref()).expect("a seeded source never fails");
        let platform: PlatformId = id("chat");
        let sender =
            DpopSigner::new(SigningKey::from_seed(&[3; 32]).expect("a fixed seed is a key"))
                .expect("the crypto provider installs");
        let builder = Broker::builder(id("broker"), store)
            .sender_key(platform.clone(), &sender.public_key())
            .clock(clock.clone())
            .ids(Arc::new(SequentialIds::new()))
            .random(random)
            .keys(keys);
        let builder = configure(builder);
        // The kit's keys come from a public seed: published on a real store, they would let
        // anyone sign its tokens and checkpoints.
        assert!(
            !builder.would_replace_keys().expect("the store answers"),
            "a TestBroker replaces no key a store already publishes: it runs only on a store \
             of its own (empty, or one the kit made)"
        );
        let broker = builder.build().expect("the test broker builds");
        let bank = SimulatedBank::new(id("bank"), 2).with_policy(policy);
        bank.register(&broker).expect("the bank registers");
        broker
            .register_platform(PlatformProfile {
                id: platform.clone(),
                registered_purposes: PurposeSet::from(Purpose::ALL),
            })
            .expect("the platform registers");
        let current: AccountId = id("acc-current");
        let bank = bank.choosing(AccountSet::from([current.clone()]));
        Self {
            broker,
            clock,
            bank,
            platform,
            subject: id("alice"),
            current,
            savings: id("acc-savings"),
            sender,
        }
    }

    /// The platform's request: balance and alerts, both purposes, both accounts, 90 days.
    pub fn draft(&self) -> ConsentRequestDraft {
        ConsentRequestDraft {
            subject: self.subject.clone(),
            platform: self.platform.clone(),
            holder: self.bank.id().clone(),
            scopes: vec![Scope::Balance.into(), Scope::Alerts.into()],
            purposes: vec![
                Purpose::CustomerService.into(),
                Purpose::FraudProtection.into(),
            ],
            accounts: AccountSelection::Listed(AccountSet::from([
                self.current.clone(),
                self.savings.clone(),
            ])),
            duration: time::Duration::days(90),
        }
    }

    /// [`TestBroker::draft`], requested.
    ///
    /// # Panics
    /// If the broker refuses it.
    pub fn request(&self) -> ConsentRequest {
        self.broker
            .request_consent(self.draft())
            .expect("the fixture's request is valid")
    }

    /// [`TestBroker::draft`], requested and approved in full at the bank: a live grant.
    ///
    /// # Panics
    /// If the broker refuses either step.
    pub fn granted(&self) -> Consent {
        let request = self.request();
        self.bank
            .approve_all(&self.broker, &request)
            .expect("the fixture's approval is valid")
    }

    /// An access under `consent`: the balance of the current account, for customer service,
    /// with the subject present.
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

    /// The subject withdraws `consent` in the chat: the broker revokes it and logs the stop.
    /// Returns the stop's position in the log.
    ///
    /// # Panics
    /// If the broker refuses, or its log cannot be read.
    pub fn withdrawn(&self, consent: &ConsentId) -> u64 {
        self.broker
            .revoke(
                consent,
                crate::consent::Revoker::Subject,
                crate::consent::RevocationReason::SubjectWithdrew,
            )
            .expect("the broker revokes the consent");
        let len = crate::store::LogRead::audit_len(&self.broker.store()).expect("the log is read");
        len.saturating_sub(1)
    }

    /// The platform writes `event` into its own log as it likes (it owns the broker's store),
    /// as the platform's act. Returns the entry's position.
    ///
    /// # Panics
    /// If the store refuses the entry, or its log cannot be read.
    pub fn logs_as_it_likes(&self, event: crate::audit::AuditEvent) -> u64 {
        let record = crate::audit::AuditRecord::new(
            self.broker.now(),
            crate::audit::Actor::Platform(self.platform.clone()),
            event,
        );
        self.broker
            .store()
            .inner()
            .commit(crate::store::Commit::new(record))
            .expect("the store takes the entry");
        let len = crate::store::LogRead::audit_len(&self.broker.store()).expect("the log is read");
        len.saturating_sub(1)
    }

    /// The recorded decision on `access`.
    ///
    /// # Panics
    /// If the decision could not be recorded.
    pub fn decide(&self, access: &AccessRequest) -> Decision {
        self.broker
            .authorise_access(access)
            .expect("the decision is recorded")
            .decision()
    }
}
