//! Building a broker: its settings, and the keys it must be given.
//!
//! The builder is a typestate: [`BrokerBuilder::build`] exists only once keys were given with
//! [`BrokerBuilder::keys`], so a broker cannot start with keys it made up and an auditor's saved
//! verifier key cannot silently stop verifying after a restart:
//!
//! ```compile_fail,E0599
//! use consent_broker::{Broker, MemoryStore};
//! let broker = Broker::builder("broker".parse().unwrap(), MemoryStore::new()).build();
//! ```

use std::path::Path;
use std::sync::{Arc, RwLock};

use time::Duration;

use super::{Broker, DEFAULT_MAX_ATTEMPTS, DEFAULT_PERMIT_LIFETIME, Settings};
use crate::checkpoint::NoteSigner;
use crate::clock::{Clock, SystemClock};
use crate::consent::DEFAULT_APPROVAL_WINDOW;
use crate::crypto;
use crate::error::Error;
use crate::ids::{BrokerId, IdGenerator, PlatformId, RandomIds};
use crate::keys::{Ed25519PublicKey, KeyError, KeyFile, KeyFileError, SigningKey};
use crate::random::RandomSource;
use crate::store::Store;
use crate::token::{DEFAULT_TOKEN_LIFETIME, MAX_TOKEN_LIFETIME};

/// The broker's two keys: one signs access tokens, the other signs audit-log checkpoints.
///
/// Keep both across restarts ([`BrokerKeys::load_or_create`] keeps them in files): tokens are
/// verified by the bank against the published token key, and checkpoints by auditors against the
/// verifier key they saved. A broker started with other keys records the change in its log (the
/// old token key keeps verifying until its last token expired), so a key never changes silently.
pub struct BrokerKeys {
    token: SigningKey,
    checkpoint: SigningKey,
}

impl std::fmt::Debug for BrokerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerKeys")
            .field("token", &self.token.kid())
            .field("checkpoint", &self.checkpoint.kid())
            .finish()
    }
}

impl BrokerKeys {
    /// Keys the caller loaded (from a file, a KMS export, …).
    pub fn new(token: SigningKey, checkpoint: SigningKey) -> Self {
        Self { token, checkpoint }
    }

    /// The keys kept in `directory` as `token-key.der` and `checkpoint-key.der` (PKCS#8), each
    /// created with mode `0600` on first use and read on every later start.
    ///
    /// # Errors
    /// [`KeyFileError`] for a file that cannot be read or created, or is not a key.
    pub fn load_or_create(
        directory: &Path,
        random: &dyn RandomSource,
    ) -> Result<Self, KeyFileError> {
        let (token, _) = KeyFile::new(directory.join("token-key.der")).load_or_create(random)?;
        let (checkpoint, _) =
            KeyFile::new(directory.join("checkpoint-key.der")).load_or_create(random)?;
        Ok(Self { token, checkpoint })
    }

    /// Two fresh keys that live only as long as this value: **for tests and examples only**. A
    /// broker restarted with other ephemeral keys signs with new keys (recorded in its log as a
    /// key change); checkpoints and tokens signed before stay verifiable only with the old public
    /// keys, which the log and the store keep.
    ///
    /// # Errors
    /// [`KeyError::RandomnessUnavailable`].
    pub fn ephemeral(random: &dyn RandomSource) -> Result<Self, KeyError> {
        Ok(Self {
            token: SigningKey::generate(random)?,
            checkpoint: SigningKey::generate(random)?,
        })
    }

    /// The token signing key.
    pub fn token(&self) -> &SigningKey {
        &self.token
    }

    /// The checkpoint signing key.
    pub fn checkpoint(&self) -> &SigningKey {
        &self.checkpoint
    }
}

/// The state of a [`BrokerBuilder`] that was not yet given its keys.
#[derive(Debug, Clone, Copy)]
pub struct NeedsKeys;

/// Builds a [`Broker`]; see [`Broker::builder`]. `build` exists once keys were given.
pub struct BrokerBuilder<S, K = NeedsKeys> {
    settings: Settings,
    store: S,
    keys: K,
}

impl<S: Store> Broker<S> {
    /// Starts building a broker named `id` over `store`, with the system clock, random ids and
    /// the system CSPRNG. Give it its keys with [`BrokerBuilder::keys`], then `build`.
    pub fn builder(id: BrokerId, store: S) -> BrokerBuilder<S, NeedsKeys> {
        let random: Arc<dyn RandomSource> = Arc::new(ring::rand::SystemRandom::new());
        BrokerBuilder {
            settings: Settings {
                id,
                clock: Arc::new(SystemClock),
                ids: Arc::new(RandomIds::from_source(random.clone())),
                random,
                approval_window: DEFAULT_APPROVAL_WINDOW,
                max_attempts: DEFAULT_MAX_ATTEMPTS,
                token_lifetime: DEFAULT_TOKEN_LIFETIME,
                permit_lifetime: DEFAULT_PERMIT_LIFETIME,
                access_view_cache: None,
                sender_keys: Default::default(),
            },
            store,
            keys: NeedsKeys,
        }
    }
}

impl<S, K> BrokerBuilder<S, K> {
    /// The broker's keys (required).
    pub fn keys(self, keys: BrokerKeys) -> BrokerBuilder<S, BrokerKeys> {
        BrokerBuilder {
            settings: self.settings,
            store: self.store,
            keys,
        }
    }

    /// Uses `clock` instead of the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.settings.clock = clock;
        self
    }

    /// Uses `ids` instead of random consent ids.
    pub fn ids(mut self, ids: Arc<dyn IdGenerator>) -> Self {
        self.settings.ids = ids;
        self
    }

    /// Draws token ids (and nothing else the broker makes) from `random` instead of the system
    /// CSPRNG. Consent ids come from [`BrokerBuilder::ids`].
    pub fn random(mut self, random: Arc<dyn RandomSource>) -> Self {
        self.settings.random = random;
        self
    }

    /// How long a request stays open for approval (default 10 minutes). A window that is not
    /// positive closes every request at once.
    pub fn approval_window(mut self, window: Duration) -> Self {
        self.settings.approval_window = window;
        self
    }

    /// Whether the checked call keeps what it read about a consent for the next decision on it
    /// (default: as the store's [`StateRead::keep_access_views`](crate::StateRead::keep_access_views)
    /// says, which is on for SQLite and PostgreSQL and off in memory).
    ///
    /// A decision on a consent asked about again is then made from the view read last time (for
    /// at most a minute), and its commit is the only call to the store: one round trip to
    /// PostgreSQL instead of two. No permit rests on a kept view alone: its commit re-checks the
    /// consent's and the holder's versions, the subject's key and the day's unattended count,
    /// and if any changed, the decision is made again at once from a fresh read. A denial is
    /// always decided from a fresh read. A kept view holds the subject's key: an erasure through
    /// this broker drops every kept view; one through another broker is caught by the commit's
    /// check of the key (which drops the view), and a view leaves memory within two minutes of
    /// being read while the broker reads views (an idle broker drops them at its next read).
    /// Versions are what catch a change: a row edited behind the brokers' backs with its
    /// version unchanged reaches decisions within the minute (the bank's gate decides from its
    /// own records either way).
    pub fn access_view_cache(mut self, keep: bool) -> Self {
        self.settings.access_view_cache = Some(keep);
        self
    }

    /// How many times a call re-decides under concurrent updates (at least 1). A decision made
    /// from a kept access view whose commit is refused is made once more at once from a fresh
    /// read, within the same attempt.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.settings.max_attempts = attempts.max(1);
        self
    }

    /// Lifetime of access tokens: default 5 minutes, at most 15.
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.settings.token_lifetime = lifetime;
        self
    }

    /// Binds the tokens issued for `platform` to `key` (RFC 9449 DPoP): each token carries the
    /// key's thumbprint as `cnf.jkt`, and a bank's gate accepts it only with a proof signed by
    /// that key, so a copied token is worthless without the key. Tokens for a platform without a
    /// sender key carry no `cnf`, and a gate refuses them.
    pub fn sender_key(mut self, platform: PlatformId, key: &Ed25519PublicKey) -> Self {
        self.settings.sender_keys.insert(platform, key.thumbprint());
        self
    }

    /// How long after its decision a [`Permit`](super::Permit) can still become a token:
    /// default 60 seconds, between 1 second and 15 minutes.
    pub fn permit_lifetime(mut self, lifetime: Duration) -> Self {
        self.settings.permit_lifetime = lifetime;
        self
    }
}

impl<S: Store> BrokerBuilder<S, BrokerKeys> {
    /// Whether building would replace a key the store publishes as active: the test kit, whose
    /// keys come from a public seed, refuses to.
    #[cfg(feature = "testing")]
    pub(crate) fn would_replace_keys(&self) -> Result<bool, crate::store::StoreError> {
        use crate::store::KeyUse;
        Ok(self.store.published_keys()?.iter().any(|key| {
            let ours = match key.key_use {
                KeyUse::Token => Some(self.keys.token.kid()),
                KeyUse::Checkpoint => Some(self.keys.checkpoint.kid()),
                // A bank's ledger: never a test broker's store.
                KeyUse::Attestation => None,
            };
            key.is_active() && ours != Some(key.kid.as_str())
        }))
    }

    /// Installs the JWT crypto provider (if the host has not), reconciles the keys with the ones
    /// the store has published (recording an activation, and the retirement of the key it
    /// replaces, for each key that is new) and builds the broker.
    ///
    /// # Errors
    /// [`Error::Provider`] if the process-wide JWT crypto provider is unusable;
    /// [`Error::InvalidTokenLifetime`], [`Error::InvalidPermitLifetime`];
    /// [`Error::SameKeyForTwoUses`]; [`Error::KeyRetired`] for a key that was replaced before;
    /// [`Error::Store`] if a key change cannot be recorded (then the broker does not start).
    pub fn build(self) -> Result<Broker<S>, Error> {
        crypto::install()?;
        let settings = self.settings;
        let within =
            |lifetime: Duration| (Duration::SECOND..=MAX_TOKEN_LIFETIME).contains(&lifetime);
        if !within(settings.token_lifetime) {
            return Err(Error::InvalidTokenLifetime {
                seconds: settings.token_lifetime.whole_seconds(),
            });
        }
        if !within(settings.permit_lifetime) {
            return Err(Error::InvalidPermitLifetime {
                seconds: settings.permit_lifetime.whole_seconds(),
            });
        }
        let BrokerKeys { token, checkpoint } = self.keys;
        if token.kid() == checkpoint.kid() {
            return Err(Error::SameKeyForTwoUses);
        }
        let checkpoints = NoteSigner::new(settings.id.as_str(), checkpoint.to_pkcs8_der())?;
        let keep_views = settings
            .access_view_cache
            .unwrap_or_else(|| self.store.keep_access_views());
        let broker = Broker {
            settings,
            store: self.store,
            instance: super::next_instance(),
            token_key: RwLock::new(token),
            pseudonyms: crate::privacy::PseudonymCache::default(),
            views: super::views::ViewCache::new(keep_views),
            feeds: std::sync::Mutex::default(),
            token_ids: crate::random::OrderedIds::new(),
            checkpoints: RwLock::new(super::Checkpointer {
                signer: checkpoints,
                kid: checkpoint.kid().to_owned(),
            }),
        };
        broker.reconcile_keys(&checkpoint)?;
        Ok(broker)
    }
}
