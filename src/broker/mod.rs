//! The broker: the platform's side, tying the pure core to a store, a clock, keys and a random
//! source.
//!
//! Every call reads what it needs from the [`Store`], decides with the pure core, and commits the
//! state change together with its audit records in one atomic [`Commit`]; only after that commit
//! succeeds does it answer. If the commit fails, the call returns an [`Error`], never a
//! [`Permit`]. Commits carry the versions they were decided on, so a decision taken on state that
//! changed meanwhile (a revocation, a policy change, another access using the last unattended
//! slot) is re-decided, never committed.
//!
//! One file per concern: [`builder`] (settings and keys), [`registration`] (holders and
//! platforms), [`lifecycle`] (requests, approvals, revocations, lookups), [`access`] (the checked
//! call as read → plan → commit, with the pure planning in [`plan`]), [`tokens`], [`keys`]
//! (rotation and the published JWKS) and [`log`] (checkpoints, receipts, histories).

mod access;
mod builder;
mod feed;
mod instructions;
mod keys;
mod lifecycle;
mod log;
mod plan;
mod privacy;
mod registration;
mod tokens;
mod views;

pub use access::{AccessOutcome, Denial, Permit};
pub use builder::{BrokerBuilder, BrokerKeys, NeedsKeys};
pub use keys::published_jwks;
pub use lifecycle::ConsentView;
#[cfg(feature = "testing")]
pub(crate) use privacy::redact_reasons;
pub use privacy::{DEFAULT_RETENTION, Erasure, MAX_RETENTION_BATCH, Retention};
pub use registration::{HolderRegistration, Registered};
pub use tokens::{AccessToken, TokenOutcome};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use time::{Duration, OffsetDateTime};

use crate::checkpoint::NoteSigner;
use crate::clock::{self, Clock};
use crate::consent::Consent;
use crate::error::Error;
use crate::ids::{BrokerId, ConsentId, HolderId, IdGenerator};
use crate::keys::SigningKey;
use crate::random::RandomSource;
use crate::store::{Commit, CommitReceipt, HolderRecord, ReadOnly, RecordKind, Store, StoreError};

/// How many times a call re-reads and re-decides when a concurrent writer changed its inputs.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 16;

/// How long a [`Permit`] can be turned into a token after its decision, by default.
pub const DEFAULT_PERMIT_LIFETIME: Duration = Duration::seconds(60);

/// What a builder collects and a broker keeps, apart from its store and keys.
struct Settings {
    id: BrokerId,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    random: Arc<dyn RandomSource>,
    approval_window: Duration,
    max_attempts: u32,
    token_lifetime: Duration,
    permit_lifetime: Duration,
    /// Whether access views are kept between decisions (`None`: as the store says).
    access_view_cache: Option<bool>,
    /// Per platform, the thumbprint of the key its tokens are bound to (RFC 9449 `cnf.jkt`).
    sender_keys: std::collections::HashMap<crate::ids::PlatformId, String>,
}

/// Numbers broker instances within the process (see [`Permit`]'s binding to its broker).
static INSTANCES: AtomicU64 = AtomicU64::new(1);

/// A number no other broker in this process has.
fn next_instance() -> u64 {
    INSTANCES.fetch_add(1, Ordering::Relaxed)
}

/// The consent broker.
pub struct Broker<S> {
    settings: Settings,
    store: S,
    /// This broker among the process's brokers: its permits carry it.
    instance: u64,
    /// The key that signs tokens now; replaced by a rotation (retired keys live in the store).
    token_key: RwLock<SigningKey>,
    /// The checkpoint key; replaced by a rotation that the old key endorses.
    checkpoints: RwLock<Checkpointer>,
    /// Pseudonyms computed for the checked call, per subject and key.
    pseudonyms: crate::privacy::PseudonymCache,
    /// Access views kept between decisions (see [`BrokerBuilder::access_view_cache`]).
    views: views::ViewCache,
    /// The platform-side revocations found in the log so far, by holder: a feed scans only what
    /// was appended since the last one.
    feeds: std::sync::Mutex<feed::FeedIndex>,
    /// The tokens' ids, ordered per bank and platform within a second: a bank's table of
    /// presented ids takes them at its edge.
    token_ids: crate::random::OrderedIds,
}

/// The key that signs checkpoints now.
struct Checkpointer {
    signer: NoteSigner,
    /// Its RFC 7638 thumbprint, as published in the store.
    kid: String,
}

impl<S> std::fmt::Debug for Broker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("id", &self.settings.id)
            .finish_non_exhaustive()
    }
}

impl<S: Store> Broker<S> {
    /// The broker's id (the `aud` of attestations, the `iss` of tokens, the log's origin).
    pub fn id(&self) -> &BrokerId {
        &self.settings.id
    }

    /// The store, read-only: the log and the state can be read through it, nothing written.
    pub fn store(&self) -> ReadOnly<'_, S> {
        ReadOnly::new(&self.store)
    }

    /// The broker's clock, for code that must agree with the broker on what time it is (the bank
    /// signing attestations in a test, a platform showing expiries).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.settings.clock
    }

    /// The current time, from the injected clock, in UTC whatever offset the clock returns.
    pub fn now(&self) -> OffsetDateTime {
        clock::utc(self.settings.clock.now())
    }

    /// Re-runs `attempt` while a concurrent writer invalidates what it read.
    fn retrying<T>(&self, mut attempt: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
        for tried in 1..=self.settings.max_attempts {
            crate::store::back_off(tried);
            match attempt() {
                Err(Error::Store(StoreError::Conflict)) => continue,
                other => return other,
            }
        }
        Err(Error::Contention {
            attempts: self.settings.max_attempts,
        })
    }

    /// Commits `commit` (its records first among what the log says).
    fn commit(&self, commit: Commit) -> Result<CommitReceipt, Error> {
        Ok(self.store.commit(commit)?)
    }

    /// Records a refusal's commit (its record, and a subject key made for it) and returns
    /// `error`; if the commit fails, returns that.
    fn refuse_with(&self, commit: Commit, error: Error) -> Error {
        match self.store.commit(commit) {
            Ok(_) => error,
            Err(store) => Error::Store(store),
        }
    }

    fn load(&self, consent: &ConsentId) -> Result<Consent, Error> {
        self.store
            .consent(consent)?
            .ok_or_else(|| Error::UnknownConsent(consent.clone()))
    }

    fn load_holder(&self, holder: &HolderId) -> Result<HolderRecord, Error> {
        self.store.holder(holder)?.ok_or_else(|| {
            StoreError::Missing {
                kind: RecordKind::Holder,
                id: holder.to_string(),
            }
            .into()
        })
    }

    fn token_key(&self) -> RwLockReadGuard<'_, SigningKey> {
        // No code path panics while holding the lock, so a poisoned lock still guards a key.
        self.token_key
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
