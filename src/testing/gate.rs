//! The bank's side in a test: a real [`Bank`] next to a [`TestBroker`], and the platform's moves
//! (a token, a DPoP proof) to present at its gate.

use std::collections::HashMap;
use std::sync::Arc;

use super::{SeededRandom, TestBroker};
use crate::attestation::ApprovalStatement;
use crate::bank::{Bank, BankKeys, GateRequest, GateSettings};
use crate::broker::{AccessToken, TokenOutcome};
use crate::clock::Clock;
use crate::consent::{Consent, ConsentRequest};
use crate::data::{
    AlertsGrant, Balance, BalanceGrant, DataError, DataHolder, FraudAlert, Money, Transaction,
    TransactionsGrant,
};
use crate::dpop::HttpRequest;
use crate::error::Error;
use crate::hpke::DeviceSecretKey;
use crate::ids::{AccountId, SubjectId};
use crate::keys::SigningKey;
use crate::policy::AccessRequest;
use crate::random::RandomSource;
use crate::store::{LedgerRead, MemoryStore, Store};

/// The URL the test bank's API answers on.
pub const BALANCE_URL: &str = "https://bank.example/v1/balance";

/// The bank's own account system in a test: which customer owns which account, and a balance
/// for each. Every account of the kit's subject is `alice`'s.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    owners: HashMap<AccountId, SubjectId>,
}

impl Accounts {
    /// No account at all.
    pub fn new() -> Self {
        Self::default()
    }

    /// `account` belongs to `owner`.
    pub fn with(mut self, account: AccountId, owner: SubjectId) -> Self {
        self.owners.insert(account, owner);
        self
    }
}

impl DataHolder for Accounts {
    type Error = std::convert::Infallible;

    fn account_owner(&self, account: &AccountId) -> Result<Option<SubjectId>, Self::Error> {
        Ok(self.owners.get(account).cloned())
    }

    fn balance(&self, grant: BalanceGrant<'_>) -> Result<Balance, DataError<Self::Error>> {
        Ok(Balance {
            account: grant.account().clone(),
            available: Money {
                minor_units: 4_200,
                currency: "EUR".into(),
            },
            as_of: super::START,
        })
    }

    fn pending_alerts(
        &self,
        grant: AlertsGrant<'_>,
    ) -> Result<Vec<FraudAlert>, DataError<Self::Error>> {
        Ok(vec![FraudAlert {
            account: grant.account().clone(),
            reference: "FA-1".into(),
            message: "A card payment abroad".into(),
            raised_at: super::START,
        }])
    }

    fn transactions(
        &self,
        grant: TransactionsGrant<'_>,
    ) -> Result<Vec<Transaction>, DataError<Self::Error>> {
        let _ = grant;
        Ok(Vec::new())
    }
}

/// A real [`Bank`] beside a [`TestBroker`]: on a ledger of its own, on the kit's clock, signing
/// with the kit bank's attestation key (so the broker accepts its attestations), with the kit
/// bank's policy set, the broker's token keys trusted and a first revocation feed applied. Its
/// account system gives `alice` both of her accounts. One per [`TestBroker`]: two would sign
/// attestations with the same seeded ids, and the broker refuses the second as a replay.
pub struct TestBank<L = MemoryStore> {
    /// The bank.
    pub bank: Bank<L>,
    /// Its account system.
    pub accounts: Accounts,
    /// The subject's phone: its key is registered at the bank, and every approval
    /// [`TestBank::approve`] makes names it, so responses are sealed to it.
    pub device: DeviceSecretKey,
    /// The bank's customer id of the kit's subject: the platform knows the subject only by the
    /// pairwise identifier the bank linked it to (the kit's `subject`), never by this.
    pub customer: SubjectId,
    random: SeededRandom,
}

impl<L> std::fmt::Debug for TestBank<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestBank").finish_non_exhaustive()
    }
}

impl TestBank<MemoryStore> {
    /// On a fresh memory ledger.
    ///
    /// # Panics
    /// If the bank cannot be built or set up.
    pub fn beside<S: Store>(kit: &TestBroker<S>) -> Self {
        Self::on(kit, MemoryStore::new())
    }
}

impl<L: Store + LedgerRead> TestBank<L> {
    /// On `ledger`.
    ///
    /// # Panics
    /// If the bank cannot be built or set up.
    pub fn on<S: Store>(kit: &TestBroker<S>, ledger: L) -> Self {
        Self::with_settings(kit, ledger, GateSettings::default())
    }

    /// On `ledger`, the gate configured with `settings`.
    ///
    /// # Panics
    /// If the bank cannot be built or set up.
    pub fn with_settings<S: Store>(kit: &TestBroker<S>, ledger: L, settings: GateSettings) -> Self {
        let bank = Self::another_gate(kit, ledger, settings);
        bank.set_policy(kit.bank.policy().clone())
            .expect("the kit's policy is valid");
        let customer =
            SubjectId::new(format!("customer-of-{}", kit.subject)).expect("a valid customer id");
        bank.link_subject_as(&customer, &kit.platform, &kit.subject)
            .expect("the kit's subject links");
        let accounts = Accounts::new()
            .with(kit.current.clone(), customer.clone())
            .with(kit.savings.clone(), customer.clone());
        let device = DeviceSecretKey::derive(b"the test subject's phone");
        bank.register_device(&customer, device.public_key())
            .expect("the device key registers");
        let test_bank = Self {
            bank,
            accounts,
            device,
            customer,
            random: SeededRandom::new(7),
        };
        test_bank.sync(kit).expect("the first feed applies");
        test_bank
    }

    /// Another process of the same bank: a gate with the bank's keys, on the kit's clock and on
    /// `ledger` (a handle to the ledger a [`TestBank`] set up, or a new one), with settings of its
    /// own. It trusts the broker's keys; it writes nothing to the ledger until it is used.
    ///
    /// # Panics
    /// If the bank cannot be built.
    pub fn another_gate<S: Store>(
        kit: &TestBroker<S>,
        ledger: L,
        settings: GateSettings,
    ) -> Bank<L> {
        Self::another_gate_on(kit, ledger, settings, kit.clock.clone())
    }

    /// [`TestBank::another_gate`] on a clock of its own (a process on another host, whose clock
    /// may differ from the kit's).
    ///
    /// # Panics
    /// If the bank cannot be built or the broker's keys are refused.
    pub fn another_gate_on<S: Store>(
        kit: &TestBroker<S>,
        ledger: L,
        settings: GateSettings,
        clock: Arc<dyn Clock>,
    ) -> Bank<L> {
        let keys = BankKeys::new(
            kit.bank.attestation_key(),
            SigningKey::from_seed(&[4; 32]).expect("a fixed seed is a key"),
        );
        let bank = Bank::builder(kit.bank.id().clone(), ledger, keys, kit.broker.id().clone())
            .clock(clock)
            .random(Arc::new(SeededRandom::new(6)))
            .gate(settings)
            .build()
            .expect("the test bank builds");
        bank.trust_broker_keys(&kit.broker.jwks().expect("the broker publishes its keys"))
            .expect("the broker's keys are valid");
        bank
    }

    /// Applies the broker's revocation feed from where the bank's ledger left off.
    ///
    /// # Errors
    /// As [`Bank::apply_revocation_feed`].
    ///
    /// # Panics
    /// If the broker cannot produce the feed.
    pub fn sync<S: Store>(&self, kit: &TestBroker<S>) -> Result<(), crate::BankError> {
        let after = self
            .bank
            .ledger()
            .feed_state()?
            .map_or(0, |state| state.position);
        let feed = kit
            .broker
            .revocation_feed(self.bank.id(), after)
            .expect("the broker produces its feed");
        self.bank.apply_revocation_feed(&feed).map(drop)
    }

    /// The subject approves at the bank everything `request` asked for: the bank records the
    /// approval in its ledger, signs it, and the broker activates the grant.
    ///
    /// # Errors
    /// As [`crate::Broker::approve`].
    ///
    /// # Panics
    /// If the bank refuses to attest (the approval is outside its policy).
    pub fn approve<S: Store>(
        &self,
        kit: &TestBroker<S>,
        request: &ConsentRequest,
        narrow: impl FnOnce(&mut ApprovalStatement),
    ) -> Result<Consent, Error> {
        let mut statement = self.statement(kit, request);
        narrow(&mut statement);
        let signed = self.bank.attest(&statement).expect("the bank attests");
        kit.broker.approve(request.id(), &signed)
    }

    /// What the subject approves for `request` at the bank: everything asked, responses sealed to
    /// [`TestBank::device`].
    pub fn statement<S: Store>(
        &self,
        kit: &TestBroker<S>,
        request: &ConsentRequest,
    ) -> ApprovalStatement {
        let mut statement = kit.bank.full_statement(request, kit.broker.now());
        statement.devices = vec![self.device.public_key().thumbprint()];
        // The bank approves for its customer; the attestation names the pairwise identifier.
        statement.subject = self.customer.clone();
        statement
    }

    /// [`TestBroker::request`], approved in full at the bank: a live grant the bank's ledger
    /// knows.
    ///
    /// # Panics
    /// If the broker or the bank refuses.
    pub fn granted<S: Store>(&self, kit: &TestBroker<S>) -> Consent {
        self.approve(kit, &kit.request(), |_| {})
            .expect("the broker activates the grant")
    }

    /// A request at the bank's API with `token` and a fresh proof for it, made now with the
    /// platform's key.
    ///
    /// # Panics
    /// If the proof cannot be signed.
    pub fn present<'a, S: Store>(
        &self,
        kit: &TestBroker<S>,
        token: &'a str,
        proof: &'a mut String,
    ) -> GateRequest<'a> {
        *proof = kit
            .sender
            .proof(&GET_BALANCE, token, kit.broker.now(), &self.random)
            .expect("the platform's key signs");
        GateRequest {
            token,
            proof: proof.as_str(),
            http: GET_BALANCE,
        }
    }

    /// A device key's thumbprint as the bank's journal names it in entries about the customer's
    /// relationship with `platform` (its pseudonym under the customer's key for that platform).
    ///
    /// # Panics
    /// If the customer has no key at the bank.
    pub fn journalled_device(&self, platform: &crate::ids::PlatformId, thumbprint: &str) -> String {
        use crate::store::StateRead;
        self.bank
            .ledger()
            .subject_key(&self.customer)
            .expect("the ledger answers")
            .expect("the customer has a key")
            .for_platform(platform)
            .device(thumbprint)
            .as_str()
            .to_owned()
    }

    /// Draws from the kit bank's random source (for ids a test makes).
    pub fn random(&self) -> &dyn RandomSource {
        &self.random
    }
}

/// `GET` [`BALANCE_URL`].
pub const GET_BALANCE: HttpRequest<'static> = HttpRequest {
    method: "GET",
    url: BALANCE_URL,
};

impl<S: Store> TestBroker<S> {
    /// The platform's token for `access`, decided and issued by the broker.
    ///
    /// # Panics
    /// If the broker fails or denies the access.
    pub fn token(&self, access: &AccessRequest) -> AccessToken {
        match self.broker.authorise_with_token(access) {
            Ok(TokenOutcome::Issued(token)) => token,
            other => panic!("expected a token, got {other:?}"),
        }
    }
}
