//! The bank's side, in its own trust domain: a ledger of what it attested, its own policy, its own
//! counts, its own journal, and a gate that decides every access from those records.
//!
//! The platform embeds the broker and owns its store, keys and clock, so the bank never takes the
//! broker's word for anything it can check itself. A [`Bank`] keeps, in a store of its own
//! (memory, SQLite or PostgreSQL, the same layer and conformance suite as the broker's):
//! - every attestation it signs, recorded in its ledger *before* the attestation leaves the bank
//!   ([`Bank::attest`]);
//! - its policy and that policy's history ([`Bank::set_policy`]);
//! - revocations made at the bank, by the subject there or by the bank ([`Bank::revoke`]);
//! - the platform's revocations, learned from the broker's feed ([`Bank::apply_revocation_feed`]);
//! - its own count of the accesses it served per approval and UTC day, and the ids of the DPoP
//!   proofs and tokens it has seen;
//! - its journal: every served and refused access, every attestation, revocation and policy
//!   change, in the same tamper-evident log format as the broker's, checkpointed under the bank's
//!   origin and key ([`Bank::checkpoint`]).
//!
//! The gate ([`Bank::check`]) admits a token only within what the ledger allows; what the
//! broker says can only narrow that. Changes the broker must know of (policy, keys, revocations)
//! come back from these calls as signed instructions for
//! [`Broker::apply_holder_instruction`](crate::Broker::apply_holder_instruction).

mod approvals;
mod devices;
mod gate;
mod monitor;
mod privacy;

pub use devices::MAX_LIVE_DEVICES;
pub use gate::{
    Admission, CLOCK_SKEW_ALLOWANCE, GateError, GateRequest, GateSettings, Prechecked, Served,
};
pub use monitor::{
    DEFAULT_MAX_CHECKPOINT_AGE, DEFAULT_MAX_MERGE_DELAY, FeedMismatch, LogMonitor, MissingToken,
    MonitorError, MonitorReport, SavedStateError, TokenAfterRevocation, TokenTerms,
    UndeliveredRevocation,
};
pub use privacy::{BankErasure, MAX_BANK_RETENTION_BATCH, PAIRWISE_PREFIX};

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use time::{Duration, OffsetDateTime};

use crate::attestation::{AttestationError, AttestationSigner};
use crate::audit::{Actor, AuditEntry, AuditEvent, AuditRecord};
use crate::auditor::{self, SigningError};
use crate::checkpoint::NoteSigner;
use crate::clock::{self, Clock, SystemClock};
use crate::crypto::{self, ProviderError};
use crate::feed::{self, FeedError};
use crate::ids::{BrokerId, ConsentId, HolderId, SubjectId};
use crate::instruction::{Instruction, InstructionError};
use crate::keyring::{self, KeyringError};
use crate::keys::{Ed25519PublicKey, Jwks, KeyError, KeyFile, KeyFileError, SigningKey};
use crate::policy::{HolderPolicy, PolicyError};
use crate::random::RandomSource;
use crate::store::{
    AttestationRecord, Change, Commit, FeedState, KeyUse, LedgerRead, LogRead, PolicyRecord,
    Precondition, StateRead, Store, StoreError, StoredCheckpoint,
};

/// How many times a call re-reads and re-decides when another writer changed its inputs.
const MAX_ATTEMPTS: u32 = 16;

/// The bank's two keys: one signs its attestations and instructions (the broker knows it by
/// registration), the other its journal's checkpoints (auditors keep its verifier key).
pub struct BankKeys {
    attestation: SigningKey,
    journal: SigningKey,
}

impl std::fmt::Debug for BankKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BankKeys")
            .field("attestation", &self.attestation.kid())
            .field("journal", &self.journal.kid())
            .finish()
    }
}

impl BankKeys {
    /// Keys the caller loaded.
    pub fn new(attestation: SigningKey, journal: SigningKey) -> Self {
        Self {
            attestation,
            journal,
        }
    }

    /// The keys kept in `directory` as `attestation-key.der` and `journal-key.der` (PKCS#8), each
    /// created with mode `0600` on first use and read on every later start.
    ///
    /// # Errors
    /// [`KeyFileError`].
    pub fn load_or_create(
        directory: &Path,
        random: &dyn RandomSource,
    ) -> Result<Self, KeyFileError> {
        let (attestation, _) =
            KeyFile::new(directory.join("attestation-key.der")).load_or_create(random)?;
        let (journal, _) =
            KeyFile::new(directory.join("journal-key.der")).load_or_create(random)?;
        Ok(Self::new(attestation, journal))
    }

    /// Two fresh keys: **for tests and examples only**.
    ///
    /// # Errors
    /// [`KeyError::RandomnessUnavailable`].
    pub fn ephemeral(random: &dyn RandomSource) -> Result<Self, KeyError> {
        Ok(Self::new(
            SigningKey::generate(random)?,
            SigningKey::generate(random)?,
        ))
    }

    /// The key that signs attestations and instructions.
    pub fn attestation(&self) -> &SigningKey {
        &self.attestation
    }
}

/// Why a bank call failed. After any error, nothing of the call was recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BankError {
    /// The ledger failed.
    #[error("the bank's ledger could not record the operation: {0}")]
    Store(#[from] StoreError),
    /// A key is invalid or no randomness was available.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The JWT crypto provider cannot be used.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// An attestation could not be signed.
    #[error("the attestation could not be signed: {0}")]
    Attestation(#[from] AttestationError),
    /// An instruction could not be signed.
    #[error("the instruction could not be signed: {0}")]
    Instruction(#[from] InstructionError),
    /// The policy cannot be applied.
    #[error(transparent)]
    InvalidPolicy(#[from] PolicyError),
    /// The bank has no policy yet: it attests nothing until it has one.
    #[error("the bank has no policy yet")]
    NoPolicy,
    /// The approval asks for more than the bank's policy allows.
    #[error("the approval goes beyond the bank's policy: {0}")]
    OutsidePolicy(String),
    /// The consent id was approved at the bank by another subject or for another platform: an
    /// approval cannot replace theirs.
    #[error("consent {0} was approved by someone else or for another platform")]
    ConsentOfAnother(ConsentId),
    /// A device key named (by an approval, or to be revoked) is not registered at the bank for
    /// the subject, or was revoked.
    ///
    /// The message leaves the key's thumbprint out (it identifies the subject's device); the
    /// field holds it.
    #[error("a device key named is not a live key of the subject's at the bank")]
    UnknownDevice(String),
    /// The device key is registered at the bank already (for this subject or another). Device
    /// keys are random: a key registered for another customer was relayed to someone who
    /// registered it first. Have the device make a new key and bring it to the bank by a path
    /// the relay does not carry (the bank's app scanning it), and look into the other
    /// registration.
    #[error("this device key is registered at the bank already")]
    DeviceKeyInUse,
    /// The subject has [`MAX_LIVE_DEVICES`](crate::MAX_LIVE_DEVICES) device keys that are not revoked: one must be
    /// revoked before another is registered.
    #[error("the subject has {limit} live device keys, the most the bank keeps")]
    TooManyDevices {
        /// The limit, [`MAX_LIVE_DEVICES`](crate::MAX_LIVE_DEVICES).
        limit: usize,
    },
    /// The approval names no device key, and some use (scope and purpose) it approves is not
    /// one the subject agreed to receive unsealed: its responses could never be delivered.
    #[error("the approval names no device to seal responses to")]
    NoDevice,
    /// No live attestation of this consent is in the ledger.
    #[error("the bank has no live approval of consent {0}")]
    NothingToRevoke(ConsentId),
    /// A revocation at the bank is by the subject or by the bank.
    #[error("a revocation at the bank is by the subject or by the bank")]
    NotTheBanksRevocation,
    /// A feed from the broker was refused.
    #[error("revocation feed refused: {0}")]
    Feed(#[from] FeedError),
    /// The journal could not be checkpointed.
    #[error("the journal could not be checkpointed: {0}")]
    Checkpoint(#[from] SigningError),
    /// A key given to the bank was replaced before: a retired key never signs again.
    #[error("the {key_use} key {kid} was retired and cannot sign again")]
    KeyRetired {
        /// Its use.
        key_use: KeyUse,
        /// Its thumbprint.
        kid: String,
    },
    /// The same key was given for attestations and for the journal.
    #[error("one key cannot sign both attestations and the journal")]
    SameKeyForTwoUses,
    /// Other writers kept changing what the call read.
    #[error("gave up after {0} attempts under concurrent updates")]
    Contention(u32),
    /// The customer never linked this platform ([`Bank::link_subject`]): the platform cannot
    /// know them, so it cannot have asked for their consent.
    #[error("the customer has not linked this platform")]
    NotLinked,
    /// A retention period must not be negative: it would delete live approvals.
    #[error("a retention period must not be negative")]
    InvalidRetention,
    /// The pairwise identifier asked for is taken, is the customer id itself, or the customer
    /// has another one for the platform.
    #[error("that pairwise identifier cannot be given to this customer")]
    LinkTaken,
}

impl From<KeyringError> for BankError {
    fn from(error: KeyringError) -> Self {
        match error {
            KeyringError::Store(error) => Self::Store(error),
            KeyringError::Retired { key_use, kid } => Self::KeyRetired { key_use, kid },
            KeyringError::SameKeyForTwoUses => Self::SameKeyForTwoUses,
        }
    }
}

impl BankError {
    /// Whether the same call, made again later, can succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Store(error) => error.is_retryable(),
            Self::Contention(_) => true,
            Self::Key(KeyError::RandomnessUnavailable) => true,
            _ => false,
        }
    }
}

/// What a subject can see at the bank: every approval it gave there, the stops it made on the
/// platform's side that reached the bank, and everything the bank's journal records about it
/// (accesses served and refused included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectView {
    /// The subject's approvals, oldest first, with their revocations at the bank.
    pub approvals: Vec<AttestationRecord>,
    /// The consents of those approvals stopped on the platform's side (in chat), as the
    /// broker's revocation feed told the bank, in the order of the approvals: from then on the
    /// bank's gate serves nothing under them. A stop made at the bank (which the feed carries
    /// back too, logged after it) is the approval's own revocation, not one of these; a stop
    /// made in chat before the bank revoked the approval is.
    pub platform_stops: Vec<PlatformStop>,
    /// The journal's entries about the subject, in order.
    pub journal: Vec<AuditEntry>,
}

/// A consent stopped on the platform's side, as the broker's revocation feed told the bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformStop {
    /// The consent.
    pub consent: ConsentId,
    /// When the platform logged the stop (the feed's time for it).
    pub at: OffsetDateTime,
}

/// The broker's token keys the bank trusts, by `kid`.
#[derive(Debug, Default)]
struct BrokerTrust {
    keys: HashMap<String, Ed25519PublicKey>,
}

/// A bank: its ledger, its keys, its clock, and the gate in front of its data.
pub struct Bank<S> {
    id: HolderId,
    ledger: S,
    clock: Arc<dyn Clock>,
    random: Arc<dyn RandomSource>,
    signer: RwLock<AttestationSigner>,
    journal: NoteSigner,
    broker: BrokerId,
    trust: RwLock<BrokerTrust>,
    gate: GateSettings,
    /// The checks verifying signatures now, at most `gate.verifying_at_once`.
    verifying: crate::limit::Limiter,
    /// Checks this gate has committed or tried to (one in [`gate::PRUNE_EVERY`] prunes).
    checks: std::sync::atomic::AtomicU64,
}

impl<S> std::fmt::Debug for Bank<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bank")
            .field("id", &self.id)
            .field("broker", &self.broker)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Bank`]; see [`Bank::builder`].
pub struct BankBuilder<S> {
    id: HolderId,
    ledger: S,
    keys: BankKeys,
    broker: BrokerId,
    clock: Arc<dyn Clock>,
    random: Arc<dyn RandomSource>,
    gate: GateSettings,
}

impl<S> std::fmt::Debug for BankBuilder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BankBuilder")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<S: Store + LedgerRead> Bank<S> {
    /// Starts building the bank `id` over its own `ledger`, with its `keys`, for the broker
    /// `broker` (the `aud` of its attestations, the `iss` of the tokens it admits). The system
    /// clock and CSPRNG, and the default [`GateSettings`], unless changed.
    pub fn builder(id: HolderId, ledger: S, keys: BankKeys, broker: BrokerId) -> BankBuilder<S> {
        BankBuilder {
            id,
            ledger,
            keys,
            broker,
            clock: Arc::new(SystemClock),
            random: Arc::new(ring::rand::SystemRandom::new()),
            gate: GateSettings::default(),
        }
    }
}

impl<S: Store + LedgerRead> BankBuilder<S> {
    /// Uses `clock` (a test's manual clock, say).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Draws attestation and instruction ids from `random`.
    pub fn random(mut self, random: Arc<dyn RandomSource>) -> Self {
        self.random = random;
        self
    }

    /// The gate's settings.
    pub fn gate(mut self, settings: GateSettings) -> Self {
        self.gate = settings;
        self
    }

    /// Builds the bank: its keys are recorded in its ledger where they are new (the journal says
    /// when a key changed), a retired key is refused.
    ///
    /// # Errors
    /// [`BankError::KeyRetired`]; [`BankError::SameKeyForTwoUses`]; [`BankError::Store`];
    /// [`BankError::Provider`]; [`BankError::Key`].
    pub fn build(self) -> Result<Bank<S>, BankError> {
        crypto::install()?;
        let BankKeys {
            attestation,
            journal,
        } = self.keys;
        if attestation.kid() == journal.kid() {
            return Err(BankError::SameKeyForTwoUses);
        }
        let note = NoteSigner::new(self.id.as_str(), journal.to_pkcs8_der())
            .map_err(|_| KeyError::InvalidPkcs8)?;
        let gate = self.gate.clamped();
        let bank = Bank {
            signer: RwLock::new(AttestationSigner::new(
                self.id.clone(),
                SigningKey::from_pkcs8_der(attestation.to_pkcs8_der())?,
            )?),
            id: self.id,
            ledger: self.ledger,
            clock: self.clock,
            random: self.random,
            journal: note,
            broker: self.broker,
            trust: RwLock::new(BrokerTrust::default()),
            verifying: crate::limit::Limiter::new(gate.verifying_at_once),
            gate,
            checks: std::sync::atomic::AtomicU64::new(0),
        };
        bank.activate(KeyUse::Attestation, &attestation)?;
        bank.activate(KeyUse::Checkpoint, &journal)?;
        Ok(bank)
    }
}

impl<S: Store + LedgerRead> Bank<S> {
    /// The bank's id (the `iss` of its attestations, the `aud` of the tokens it admits, its
    /// journal's origin).
    pub fn id(&self) -> &HolderId {
        &self.id
    }

    /// The current time on the bank's clock, in UTC.
    pub fn now(&self) -> OffsetDateTime {
        clock::utc(self.clock.now())
    }

    /// The ledger, read-only.
    pub fn ledger(&self) -> &(impl LedgerRead + StateRead) {
        &self.ledger
    }

    /// The ledger's log (the bank's journal), read-only.
    pub fn journal(&self) -> &impl LogRead {
        &self.ledger
    }

    /// The public key that signs the bank's attestations and instructions: what the broker
    /// registers for the bank.
    pub fn attestation_key(&self) -> Ed25519PublicKey {
        self.signer().public_key()
    }

    /// The verifier key of the journal's checkpoints (C2SP `signed-note` vkey), for auditors.
    pub fn journal_verifier_key(&self) -> String {
        self.journal.verifier_key()
    }

    /// Trusts the broker's token keys in `jwks` (its published JWKS), replacing the ones
    /// trusted before. Tokens and revocation feeds are checked against them.
    ///
    /// # Errors
    /// [`KeyError`] for a key that is not a valid Ed25519 JWK with its thumbprint as `kid`; the
    /// keys trusted before are then kept.
    pub fn trust_broker_keys(&self, jwks: &Jwks) -> Result<(), KeyError> {
        let keys = jwks.by_kid()?;
        self.trust
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys = keys;
        Ok(())
    }

    fn broker_key(&self, kid: &str) -> Option<Ed25519PublicKey> {
        self.trust
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys
            .get(kid)
            .copied()
    }

    fn signer(&self) -> std::sync::RwLockReadGuard<'_, AttestationSigner> {
        self.signer
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record(&self, actor: Actor, event: AuditEvent) -> AuditRecord {
        AuditRecord::new(self.now(), actor, event)
    }

    fn me(&self) -> Actor {
        Actor::Holder(self.id.clone())
    }

    fn retrying<T>(
        &self,
        mut attempt: impl FnMut() -> Result<T, BankError>,
    ) -> Result<T, BankError> {
        for tried in 1..=MAX_ATTEMPTS {
            crate::store::back_off(tried);
            match attempt() {
                Err(BankError::Store(StoreError::Conflict)) => continue,
                other => return other,
            }
        }
        Err(BankError::Contention(MAX_ATTEMPTS))
    }

    fn activate(&self, key_use: KeyUse, key: &SigningKey) -> Result<(), BankError> {
        self.retrying(|| {
            let now = self.now();
            let event = |retiring: Option<String>| match key_use {
                KeyUse::Attestation => AuditEvent::AttestationKeyActivated {
                    key_id: key.kid().to_owned(),
                    public_key: key.public_key(),
                    retired_key_id: retiring,
                },
                _ => AuditEvent::CheckpointKeyActivated {
                    key_id: key.kid().to_owned(),
                    verifier_key: self.journal.verifier_key(),
                    retired_key_id: retiring,
                    rotation: None,
                },
            };
            let actor = self.me();
            keyring::activate(
                &self.ledger,
                key_use,
                key,
                Duration::ZERO,
                now,
                |retiring| AuditRecord::new(now, actor, event(retiring)),
            )
            .map_err(BankError::from)
        })
    }

    /// Sets the bank's policy (the first, or a change), records it in the ledger and the journal,
    /// and returns the signed instruction that tells the broker.
    ///
    /// # Errors
    /// [`BankError::InvalidPolicy`]; [`BankError::Store`]; [`BankError::Instruction`].
    pub fn set_policy(&self, policy: HolderPolicy) -> Result<String, BankError> {
        policy.validate()?;
        self.retrying(|| {
            let latest = self.ledger.bank_policies()?.pop();
            let version = latest.as_ref().map_or(1, |p| p.version.saturating_add(1));
            let record = PolicyRecord {
                version,
                policy: policy.clone(),
                effective_at: self.now(),
            };
            let entry = self.record(
                self.me(),
                AuditEvent::BankPolicySet {
                    version,
                    policy: policy.clone(),
                },
            );
            let instruction = self.sign_instruction(&Instruction::SetPolicy {
                policy: policy.clone(),
            })?;
            self.ledger.commit(
                Commit::new(entry)
                    .precondition(Precondition::BankPolicyVersion {
                        version: latest.map(|p| p.version),
                    })
                    .change(Change::AppendBankPolicy { record }),
            )?;
            Ok(instruction)
        })
    }

    /// The bank's current policy, if it set one.
    ///
    /// # Errors
    /// [`BankError::Store`].
    pub fn policy(&self) -> Result<Option<PolicyRecord>, BankError> {
        Ok(self.ledger.bank_policies()?.pop())
    }

    fn sign_instruction(&self, instruction: &Instruction) -> Result<String, BankError> {
        Ok(self.signer().sign_instruction(
            instruction,
            &self.broker,
            self.now(),
            self.random.as_ref(),
        )?)
    }

    /// Rotates the key that signs the bank's attestations: records the new key (and the old
    /// one's retirement) in the ledger and the journal, and returns the instruction that tells
    /// the broker, signed by the old key, which the broker knows. Attestations signed before stay
    /// verifiable with the old key.
    ///
    /// # Errors
    /// [`BankError::KeyRetired`]; [`BankError::SameKeyForTwoUses`]; [`BankError::Store`];
    /// [`BankError::Instruction`].
    pub fn rotate_attestation_key(&self, key: SigningKey) -> Result<String, BankError> {
        let instruction = self.sign_instruction(&Instruction::SetKeys {
            keys: vec![key.public_key()],
        })?;
        let mut signer = self
            .signer
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.activate(KeyUse::Attestation, &key)?;
        *signer = AttestationSigner::new(self.id.clone(), key)?;
        Ok(instruction)
    }

    /// Applies a feed of platform-side revocations from the broker (see [`crate::feed`]): it
    /// must be signed by a broker key the bank trusts, be for this bank, start where the last
    /// feed ended and be newer than it. The revocations and the feed's position and time are
    /// recorded in the ledger and the journal.
    ///
    /// # Errors
    /// [`BankError::Feed`]; [`BankError::Store`].
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "bank.apply_revocation_feed", level = "debug", skip_all)
    )]
    pub fn apply_revocation_feed(&self, signed: &str) -> Result<FeedState, BankError> {
        self.retrying(|| {
            let now = self.now();
            let contents = feed::check_feed(
                signed,
                |kid| self.broker_key(kid),
                &self.broker,
                &self.id,
                now,
            )?;
            let held = self.ledger.feed_state()?;
            let (expected, last) = held.map_or((0, None), |f| (f.position, Some(f.generated_at)));
            if contents.after != expected {
                return Err(FeedError::Gap {
                    expected,
                    after: contents.after,
                }
                .into());
            }
            let root = extended_root(held, &contents)?;
            // A feed dated ahead of the bank's clock (within the leeway) counts as made now: its
            // freshness is never stretched past what the bank's own clock has seen.
            let made_at = OffsetDateTime::from_unix_timestamp(contents.iat)
                .map_err(|_| FeedError::Malformed("iat out of range".into()))?
                .min(now);
            // An older feed would make the bank's view look fresher than it is. (The same second
            // is not older: a later feed from the same second covers more of the log, since it
            // starts where the last one ended.)
            if last.is_some_and(|last| made_at < last) {
                return Err(FeedError::Rollback.into());
            }
            // A page (more revocations are due) moves the position but not the freshness: the
            // bank knows the platform's revocations only up to the page's end, so its view is as
            // fresh as the last complete feed, or (none yet) not fresh at all.
            let generated_at = if contents.complete {
                made_at
            } else {
                last.unwrap_or(OffsetDateTime::UNIX_EPOCH)
            };
            let state = FeedState {
                position: contents.position,
                generated_at,
                root,
            };
            let entry = self.record(
                self.me(),
                AuditEvent::RevocationFeedApplied {
                    position: contents.position,
                    generated_at,
                    revoked: contents.revoked.iter().map(|r| r.consent.clone()).collect(),
                },
            );
            let mut commit = Commit::new(entry).change(Change::SetFeedState { state });
            for revocation in &contents.revoked {
                let at = OffsetDateTime::from_unix_timestamp(revocation.at)
                    .map_err(|_| FeedError::Malformed("revocation time out of range".into()))?;
                commit = commit.change(Change::RecordPlatformRevocation {
                    consent: revocation.consent.clone(),
                    revoked_at: at,
                });
            }
            self.ledger.commit(commit)?;
            Ok(state)
        })
    }

    /// Follows the broker's revocation feed again from the start of its log: for a bank whose
    /// feeds are refused as [`FeedError::Inconsistent`] because the platform's log no longer
    /// extends the one it followed (a store restored from an older copy and grown again, a
    /// fork). The position goes back to 0, the root held is dropped, and the view is stale
    /// (the gate refuses) until a complete feed has brought the bank to the log's end again;
    /// every revocation in the broker's log comes again, in pages, and the ones recorded
    /// before stay as they were. Journalled as a `revocation_feed_applied` entry at position 0
    /// that carries no revocation. The platform cannot make this happen: it is the bank's
    /// call, once it has seen why (its monitor's report of the platform's log says whether the
    /// witnessed log still extends what the bank followed).
    ///
    /// # Errors
    /// [`BankError::Store`].
    pub fn follow_revocation_feed_anew(&self) -> Result<FeedState, BankError> {
        self.retrying(|| {
            let state = FeedState {
                position: 0,
                generated_at: OffsetDateTime::UNIX_EPOCH,
                root: None,
            };
            let entry = self.record(
                self.me(),
                AuditEvent::RevocationFeedApplied {
                    position: state.position,
                    generated_at: state.generated_at,
                    revoked: Vec::new(),
                },
            );
            self.ledger
                .commit(Commit::new(entry).change(Change::SetFeedState { state }))?;
            Ok(state)
        })
    }

    /// What the subject sees at the bank: every approval it gave, the stops it made in chat that
    /// reached the bank, and every journal entry about it (each access served or refused under
    /// its approvals, with the reason of a refusal and what the platform claimed about its
    /// presence).
    ///
    /// # Errors
    /// [`BankError::Store`].
    pub fn subject_view(&self, subject: &SubjectId) -> Result<SubjectView, BankError> {
        let pseudonyms = self.pseudonyms_of(subject)?;
        let journal = if pseudonyms.is_empty() {
            Vec::new()
        } else {
            auditor::history_of_any(&self.ledger, &pseudonyms)?
        };
        let approvals = self.ledger.attestations_of_subject(subject)?;
        let mut platform_stops: Vec<PlatformStop> = Vec::new();
        for record in &approvals {
            if platform_stops
                .iter()
                .any(|stop| stop.consent == record.consent)
            {
                continue;
            }
            let Some(at) = self.ledger.platform_revocation(&record.consent)? else {
                continue;
            };
            // A stop logged after the bank's own (within the clocks' allowance) is the broker's
            // echo of it, which the feed carries back; one before it was made in chat.
            let at_the_bank = approvals
                .iter()
                .filter(|other| other.consent == record.consent)
                .filter_map(|other| other.revoked.as_ref().map(|revoked| revoked.at))
                .max();
            let echo = at_the_bank
                .is_some_and(|bank| at >= bank.checked_sub(CLOCK_SKEW_ALLOWANCE).unwrap_or(bank));
            if !echo {
                platform_stops.push(PlatformStop {
                    consent: record.consent.clone(),
                    at,
                });
            }
        }
        Ok(SubjectView {
            approvals,
            platform_stops,
            journal,
        })
    }

    /// Signs a checkpoint of the journal under the bank's origin and key, after proving the
    /// journal consistent with the last checkpoint recorded.
    ///
    /// # Errors
    /// [`BankError::Checkpoint`].
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "bank.checkpoint", level = "debug", skip_all)
    )]
    pub fn checkpoint(&self) -> Result<StoredCheckpoint, BankError> {
        Ok(auditor::checkpoint_log(
            &self.ledger,
            self.id.as_str(),
            &self.journal,
        )?)
    }
}

/// The root of the log `feed` describes, once it is shown to extend the log the bank's last
/// feed described (`held`): by the feed's consistency proof from the root the bank holds. A
/// bank that holds none takes the feed's root as it is: at the log's start (any log extends
/// the empty one), or where its state was written before feeds named roots. A feed that names
/// no root (from a broker before roots) is taken only by such a bank, which then holds none
/// still.
fn extended_root(
    held: Option<FeedState>,
    feed: &feed::RevocationFeed,
) -> Result<Option<crate::merkle::Hash>, FeedError> {
    let before_roots = held.is_some_and(|held| held.root.is_none() && held.position > 0);
    let Some((root, proof)) = feed.tree()? else {
        return if before_roots {
            Ok(None)
        } else {
            Err(FeedError::Inconsistent)
        };
    };
    match held.and_then(|held| held.root) {
        Some(held_root) if feed.after > 0 => {
            crate::merkle::verify_consistency(feed.after, feed.position, &held_root, &root, &proof)
                .map_err(|_| FeedError::Inconsistent)?
        }
        // From the empty log: no proof is due.
        _ if feed.after == 0 && !proof.is_empty() => {
            return Err(FeedError::Malformed(
                "a consistency proof from the empty log".into(),
            ));
        }
        // From the log's start, or from a position held without a root: taken as it is.
        _ => {}
    }
    Ok(Some(root))
}
