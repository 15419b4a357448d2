//! The broker's keys: reconciling the keys it was given with the ones the store has published,
//! rotation, and the JWKS a bank fetches.
//!
//! Every key change is one commit: the new key's public half, the retirement of the key it
//! replaces, and the audit entry naming both by thumbprint. The store, not this process's
//! memory, says which keys verify, so every broker on one store, the command-line tool and a
//! restarted broker publish the same JWKS.

use time::OffsetDateTime;

use super::Broker;
use crate::audit::{Actor, AuditEvent, AuditRecord};
use crate::checkpoint::NoteSigner;
use crate::error::Error;
use crate::keyring;
use crate::keys::{Jwk, Jwks, RETIRED_KEY_GRACE, SigningKey};
use crate::store::{KeyUse, StateRead, Store, StoreError};
use crate::token::MAX_TOKEN_LIFETIME;

/// The JWKS of the token keys `state` publishes at `now`: the active key, and retired keys whose
/// last tokens may still be presented. What [`Broker::jwks`] serves, and what the command-line
/// tool trusts (never every key ever published).
///
/// # Errors
/// [`StoreError`].
pub fn published_jwks<S: StateRead + ?Sized>(
    state: &S,
    now: OffsetDateTime,
) -> Result<Jwks, StoreError> {
    Ok(Jwks {
        keys: state
            .published_keys()?
            .iter()
            .filter(|key| key.key_use == KeyUse::Token && key.verifies_at(now))
            .map(|key| Jwk::from_public_key(&key.public_key))
            .collect(),
    })
}

impl<S: Store> Broker<S> {
    /// Makes sure the store publishes the broker's token and checkpoint keys as the active keys
    /// of their uses, recording a change where they are new.
    pub(super) fn reconcile_keys(&self, checkpoint_key: &SigningKey) -> Result<(), Error> {
        let token_key = self.token_key();
        // After a restart with another token key, the previous one may have signed a token just
        // before: it verifies for the longest lifetime any configuration allows, plus the grace.
        self.activate(
            KeyUse::Token,
            &token_key,
            MAX_TOKEN_LIFETIME + RETIRED_KEY_GRACE,
            None,
        )?;
        self.activate(
            KeyUse::Checkpoint,
            checkpoint_key,
            time::Duration::ZERO,
            None,
        )?;
        Ok(())
    }

    /// Makes `key` the checkpoint key from now on, endorsed in the log itself: the rotation's
    /// entry carries a note signed by the old key *and* the new one
    /// ([`crate::key_history::rotation_statement`]), so a verifier that trusts the old key learns
    /// the new one from the log ([`crate::key_history::KeyHistory`]). Checkpoints signed before
    /// stay valid for their sizes; every later one is signed with the new key.
    ///
    /// # Errors
    /// [`Error::Store`] if the rotation cannot be recorded (then nothing changes);
    /// [`Error::KeyRetired`] for a key that was replaced before; [`Error::SameKeyForTwoUses`]
    /// for the token key.
    pub fn rotate_checkpoint_key(&self, key: SigningKey) -> Result<(), Error> {
        if key.kid() == self.token_key().kid() {
            return Err(Error::SameKeyForTwoUses);
        }
        let mut current = self
            .checkpoints
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let signer = NoteSigner::new(self.settings.id.as_str(), key.to_pkcs8_der())?;
        let rotation = crate::key_history::endorse(&current.signer, &signer)?;
        self.activate(
            KeyUse::Checkpoint,
            &key,
            time::Duration::ZERO,
            Some(rotation),
        )?;
        *current = super::Checkpointer {
            signer,
            kid: key.kid().to_owned(),
        };
        Ok(())
    }

    /// Publishes `key` as the active key of `key_use` unless it already is; the key it replaces
    /// is retired now (token keys keep verifying for `overlap`). One commit, audited.
    fn activate(
        &self,
        key_use: KeyUse,
        key: &SigningKey,
        overlap: time::Duration,
        rotation: Option<String>,
    ) -> Result<(), Error> {
        // The verifier key of the key being activated (not of the one signing now).
        let verifier_key = match key_use {
            KeyUse::Checkpoint => {
                NoteSigner::new(self.settings.id.as_str(), key.to_pkcs8_der())?.verifier_key()
            }
            _ => String::new(),
        };
        self.retrying(|| {
            let now = self.now();
            let event = |retiring: Option<String>| match key_use {
                KeyUse::Token => AuditEvent::SigningKeyActivated {
                    key_id: key.kid().to_owned(),
                    public_key: Some(key.public_key()),
                    retired_key_id: retiring,
                },
                _ => AuditEvent::CheckpointKeyActivated {
                    key_id: key.kid().to_owned(),
                    verifier_key: verifier_key.clone(),
                    retired_key_id: retiring,
                    rotation: rotation.clone(),
                },
            };
            let actor = Actor::Broker(self.settings.id.clone());
            keyring::activate(&self.store, key_use, key, overlap, now, |retiring| {
                AuditRecord::new(now, actor, event(retiring))
            })
            .map_err(Error::from)
        })
    }

    /// [`Error::KeyRetired`] unless the store publishes `kid` as the active key of `key_use`: a
    /// broker whose key another broker on the same store has replaced stops signing with it.
    pub(super) fn ensure_active(&self, key_use: KeyUse, kid: &str) -> Result<(), Error> {
        if keyring::is_active(&self.store, key_use, kid)? {
            Ok(())
        } else {
            Err(Error::KeyRetired {
                key_use,
                kid: kid.to_owned(),
            })
        }
    }

    /// The JWKS the bank fetches: the signing key, and retired keys whose last tokens may still
    /// be presented, as the store publishes them.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn jwks(&self) -> Result<Jwks, Error> {
        Ok(published_jwks(&self.store, self.now())?)
    }

    /// Makes `key` the token signing key from now on. The previous key stops signing at once and
    /// stays in the JWKS until every token it may have signed has expired (the configured token
    /// lifetime plus [`RETIRED_KEY_GRACE`]). The change is one audited commit.
    ///
    /// # Errors
    /// [`Error::Store`] if the rotation cannot be recorded (then nothing changes);
    /// [`Error::KeyRetired`] for a key that was replaced before.
    pub fn rotate_signing_key(&self, key: SigningKey) -> Result<(), Error> {
        let mut current = self
            .token_key
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Under the write lock: no token is signed with the old key after its retirement time.
        self.activate(
            KeyUse::Token,
            &key,
            self.settings.token_lifetime + RETIRED_KEY_GRACE,
            None,
        )?;
        *current = key;
        Ok(())
    }
}
