//! Keys recorded with their life in a store: activating a key (and retiring the one it replaces)
//! in one audited commit, and checking that a key is still the active one. The broker keeps its
//! token and checkpoint keys this way, a bank its attestation and journal keys: a key never
//! changes without the log saying so, and a retired key never comes back.

use time::{Duration, OffsetDateTime};

use crate::audit::AuditRecord;
use crate::clock::saturating_add;
use crate::keys::SigningKey;
use crate::store::{
    Change, Commit, KeyUse, PublishedKey, RecordKind, StateRead, Store, StoreError,
};

/// Why a key could not be made active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyringError {
    /// The store failed (a conflict included: the caller retries).
    Store(StoreError),
    /// The key was active once and replaced: a retired key never signs again.
    Retired { key_use: KeyUse, kid: String },
    /// The key is published for another use.
    SameKeyForTwoUses,
}

impl From<StoreError> for KeyringError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

/// Makes `key` the active key of `key_use` in `store`, unless it already is: one commit that
/// publishes it, retires the key it replaces (which, for `overlap`, keeps verifying what it
/// signed) and appends the record `record` makes from the replaced key's id.
pub(crate) fn activate<S: Store + ?Sized>(
    store: &S,
    key_use: KeyUse,
    key: &SigningKey,
    overlap: Duration,
    now: OffsetDateTime,
    record: impl FnOnce(Option<String>) -> AuditRecord,
) -> Result<(), KeyringError> {
    let published = store.published_keys()?;
    if published
        .iter()
        .any(|p| p.key_use != key_use && p.kid == key.kid())
    {
        return Err(KeyringError::SameKeyForTwoUses);
    }
    let mine: Vec<_> = published.iter().filter(|p| p.key_use == key_use).collect();
    if let Some(known) = mine.iter().find(|p| p.kid == key.kid()) {
        if known.is_active() {
            return Ok(());
        }
        return Err(KeyringError::Retired {
            key_use,
            kid: key.kid().to_owned(),
        });
    }
    let retiring = mine.iter().find(|p| p.is_active()).map(|p| p.kid.clone());
    let mut commit = Commit::new(record(retiring.clone()));
    if let Some(kid) = retiring {
        commit = commit.change(Change::RetireKey {
            key_use,
            kid,
            retired_at: now,
            verifies_until: (key_use == KeyUse::Token).then(|| saturating_add(now, overlap)),
        });
    }
    commit = commit.change(Change::ActivateKey {
        key: PublishedKey {
            key_use,
            kid: key.kid().to_owned(),
            public_key: key.public_key(),
            activated_at: now,
            retired_at: None,
            verifies_until: None,
        },
    });
    match store.commit(commit) {
        Ok(_) => Ok(()),
        // Another process published this key between our read and our commit: a conflict, so
        // that the caller reads again (and finds it active, or retired).
        Err(StoreError::Duplicate {
            kind: RecordKind::Key,
            id,
        }) if id == key.kid() => Err(StoreError::Conflict.into()),
        Err(error) => Err(error.into()),
    }
}

/// Whether `store` publishes `kid` as the active key of `key_use`.
pub(crate) fn is_active<S: StateRead + ?Sized>(
    store: &S,
    key_use: KeyUse,
    kid: &str,
) -> Result<bool, StoreError> {
    Ok(store
        .published_keys()?
        .iter()
        .any(|key| key.key_use == key_use && key.kid == kid && key.is_active()))
}
