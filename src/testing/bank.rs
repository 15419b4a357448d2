//! A bank for tests: registers with the broker and attests a subject's approval.

use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use super::SeededRandom;
use crate::attestation::{ApprovalStatement, AttestationError, AttestationSigner};
use crate::broker::{Broker, HolderRegistration, Registered};
use crate::consent::{AccountSelection, Consent, ConsentRequest};
use crate::error::Error;
use crate::ids::HolderId;
use crate::instruction::Instruction;
use crate::keys::{Ed25519PublicKey, SigningKey};
use crate::policy::HolderPolicy;
use crate::random::RandomSource;
use crate::sets::{AccountSet, PlaintextUses};
use crate::store::Store;

/// A bank as a platform's test sees it: an attestation key (deterministic, from a seed), a
/// policy, and the one call that registers it and approves a subject's consent.
pub struct SimulatedBank {
    id: HolderId,
    signer: AttestationSigner,
    policy: HolderPolicy,
    random: Arc<dyn RandomSource>,
    /// The seed its key was drawn from.
    seed: u64,
    /// The accounts a subject picks when the request lets them choose.
    chosen_accounts: AccountSet,
}

impl std::fmt::Debug for SimulatedBank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedBank")
            .field("id", &self.id)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl SimulatedBank {
    /// A bank named `id` with the default policy and an attestation key drawn from `seed`.
    pub fn new(id: HolderId, seed: u64) -> Self {
        let random: Arc<dyn RandomSource> = Arc::new(SeededRandom::new(seed));
        let key = SigningKey::generate(random.as_ref()).expect("a seeded source never fails");
        let signer = AttestationSigner::new(id.clone(), key).expect("the crypto provider installs");
        Self {
            id,
            signer,
            policy: HolderPolicy::default(),
            random,
            seed,
            chosen_accounts: AccountSet::new(),
        }
    }

    /// Its attestation key itself, drawn again from its seed: for a [`Bank`](crate::Bank) that
    /// signs as this simulated bank does.
    pub(crate) fn attestation_key(&self) -> SigningKey {
        SigningKey::generate(&SeededRandom::new(self.seed)).expect("a seeded source never fails")
    }

    /// The same bank with `policy`.
    pub fn with_policy(mut self, policy: HolderPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The accounts a subject approves when a request lets them choose.
    pub fn choosing(mut self, accounts: AccountSet) -> Self {
        self.chosen_accounts = accounts;
        self
    }

    /// The bank's id.
    pub fn id(&self) -> &HolderId {
        &self.id
    }

    /// Its policy.
    pub fn policy(&self) -> &HolderPolicy {
        &self.policy
    }

    /// Its attestation signer, to sign statements a test builds itself.
    pub fn signer(&self) -> &AttestationSigner {
        &self.signer
    }

    /// The public key of its attestation signer.
    pub fn public_key(&self) -> Ed25519PublicKey {
        self.signer.public_key()
    }

    /// What the bank registers with the broker.
    pub fn registration(&self) -> HolderRegistration {
        HolderRegistration {
            id: self.id.clone(),
            policy: self.policy.clone(),
            attestation_keys: vec![self.public_key()],
        }
    }

    /// Registers the bank (a no-op if it is registered exactly so).
    ///
    /// # Errors
    /// As [`Broker::register_holder`].
    pub fn register<S: Store>(&self, broker: &Broker<S>) -> Result<Registered, Error> {
        broker.register_holder(self.registration())
    }

    /// The statement approving everything `request` asked for, until the request's full
    /// duration from `now` (listed accounts; for "subject chooses", the accounts given to
    /// [`SimulatedBank::choosing`]).
    pub fn full_statement(
        &self,
        request: &ConsentRequest,
        now: OffsetDateTime,
    ) -> ApprovalStatement {
        let accounts = match request.accounts() {
            AccountSelection::Listed(accounts) => accounts.clone(),
            AccountSelection::SubjectChooses => self.chosen_accounts.clone(),
        };
        ApprovalStatement {
            consent: request.id().clone(),
            subject: request.subject().clone(),
            platform: request.platform().clone(),
            scopes: request.scopes(),
            purposes: request.purposes(),
            accounts,
            consent_expires_at: now + request.duration(),
            unattended_daily_limit: self.policy.unattended_daily_limit,
            devices: Vec::new(),
            plaintext: PlaintextUses::new(),
        }
    }

    /// Signs `statement` for `broker`, at the broker's time.
    ///
    /// # Errors
    /// [`AttestationError::Signing`].
    pub fn attest<S: Store>(
        &self,
        broker: &Broker<S>,
        statement: &ApprovalStatement,
    ) -> Result<String, AttestationError> {
        self.signer
            .sign(statement, broker.id(), broker.now(), self.random.as_ref())
    }

    /// Signs `instruction` for `broker` at the broker's time and has the broker apply it: what a
    /// bank does to change its policy or keys, or to pass on a revocation made at the bank.
    ///
    /// # Errors
    /// As [`Broker::apply_holder_instruction`].
    pub fn instruct<S: Store>(
        &self,
        broker: &Broker<S>,
        instruction: &Instruction,
    ) -> Result<Instruction, Error> {
        let signed = self.signer.sign_instruction(
            instruction,
            broker.id(),
            broker.now(),
            self.random.as_ref(),
        )?;
        broker.apply_holder_instruction(&signed)
    }

    /// The subject approves everything `request` asked for, at the bank: registers the bank if
    /// needed, signs the attestation and hands it to the broker.
    ///
    /// # Errors
    /// As [`Broker::approve`] and [`Broker::register_holder`].
    pub fn approve_all<S: Store>(
        &self,
        broker: &Broker<S>,
        request: &ConsentRequest,
    ) -> Result<Consent, Error> {
        self.approve(broker, request, |_| {})
    }

    /// The subject approves what `narrow` leaves of everything `request` asked for (fewer
    /// scopes or accounts, a sooner expiry…); as [`SimulatedBank::approve_all`] otherwise.
    ///
    /// # Errors
    /// As [`SimulatedBank::approve_all`].
    pub fn approve<S: Store>(
        &self,
        broker: &Broker<S>,
        request: &ConsentRequest,
        narrow: impl FnOnce(&mut ApprovalStatement),
    ) -> Result<Consent, Error> {
        self.register(broker)?;
        let mut statement = self.full_statement(request, broker.now());
        narrow(&mut statement);
        let attestation = self.attest(broker, &statement)?;
        broker.approve(request.id(), &attestation)
    }

    /// A statement expiring `lasting` from now, for re-authorisations in tests.
    pub fn statement_lasting(
        &self,
        request: &ConsentRequest,
        now: OffsetDateTime,
        lasting: Duration,
    ) -> ApprovalStatement {
        ApprovalStatement {
            consent_expires_at: now + lasting,
            ..self.full_statement(request, now)
        }
    }
}
