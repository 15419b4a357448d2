//! Registering holders (banks) and platforms, and changing a holder's policy and keys.
//!
//! Registration is meant to run on every start of the embedding service: registering what is
//! already registered, identically, changes nothing and writes nothing ([`Registered::Unchanged`]);
//! registering something different under the same id is refused with
//! [`Error::RegistrationMismatch`], naming what differs, so a wrong key is noticed instead of
//! failing as a duplicate or being hidden. A holder's policy and keys change only by the holder's
//! own signed instruction ([`Broker::apply_holder_instruction`]).

use super::Broker;
use crate::audit::{Actor, AuditEvent, AuditRecord};
use crate::error::{Error, RegistrationField};
use crate::ids::HolderId;
use crate::keys::Ed25519PublicKey;
use crate::policy::{HolderPolicy, PlatformProfile};
use crate::store::{Change, Commit, HolderRecord, RecordKind, Store, StoreError};

/// A holder's registration: its policy and the keys that sign its attestations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderRegistration {
    /// The holder.
    pub id: HolderId,
    /// Its policy.
    pub policy: HolderPolicy,
    /// Public keys of its attestation signers (at least one).
    pub attestation_keys: Vec<Ed25519PublicKey>,
}

/// What a registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// Newly registered (one audit entry).
    New,
    /// Already registered exactly so: nothing was written.
    Unchanged,
}

pub(super) fn thumbprints(keys: &[Ed25519PublicKey]) -> Vec<String> {
    keys.iter().map(Ed25519PublicKey::thumbprint).collect()
}

fn same_keys(a: &[Ed25519PublicKey], b: &[Ed25519PublicKey]) -> bool {
    let mut a = thumbprints(a);
    let mut b = thumbprints(b);
    a.sort();
    b.sort();
    a == b
}

/// A duplicate insert means another broker registered the same id meanwhile: read again.
fn raced(error: Error, kind: RecordKind) -> Error {
    match error {
        Error::Store(StoreError::Duplicate { kind: k, .. }) if k == kind => {
            Error::Store(StoreError::Conflict)
        }
        other => other,
    }
}

impl<S: Store> Broker<S> {
    /// Registers a holder, or confirms that it is registered exactly so.
    ///
    /// # Errors
    /// [`Error::NoAttestationKeys`]; [`Error::InvalidPolicy`]; [`Error::RegistrationMismatch`]
    /// when the holder is registered with other keys or another policy; [`Error::Store`].
    pub fn register_holder(&self, registration: HolderRegistration) -> Result<Registered, Error> {
        if registration.attestation_keys.is_empty() {
            return Err(Error::NoAttestationKeys(registration.id));
        }
        registration.policy.validate()?;
        self.retrying(|| {
            if let Some(existing) = self.store.holder(&registration.id)? {
                let mismatch = |field| Error::RegistrationMismatch {
                    kind: RecordKind::Holder,
                    id: registration.id.to_string(),
                    field,
                };
                if !same_keys(&existing.attestation_keys, &registration.attestation_keys) {
                    return Err(mismatch(RegistrationField::AttestationKeys));
                }
                if existing.policy != registration.policy {
                    return Err(mismatch(RegistrationField::Policy));
                }
                return Ok(Registered::Unchanged);
            }
            let record = AuditRecord::new(
                self.now(),
                Actor::Holder(registration.id.clone()),
                AuditEvent::HolderRegistered {
                    attestation_keys: thumbprints(&registration.attestation_keys),
                    policy: Some(registration.policy.clone()),
                },
            );
            let holder = HolderRecord {
                id: registration.id.clone(),
                policy: registration.policy.clone(),
                attestation_keys: registration.attestation_keys.clone(),
                retired_attestation_keys: Vec::new(),
                version: 1,
            };
            self.commit(Commit::new(record).change(Change::InsertHolder { holder }))
                .map_err(|e| raced(e, RecordKind::Holder))?;
            Ok(Registered::New)
        })
    }

    /// Registers a platform, or confirms that it is registered exactly so.
    ///
    /// # Errors
    /// [`Error::RegistrationMismatch`] when the platform is registered for other purposes;
    /// [`Error::Store`].
    pub fn register_platform(&self, profile: PlatformProfile) -> Result<Registered, Error> {
        self.retrying(|| {
            if let Some(existing) = self.store.platform(&profile.id)? {
                if existing.registered_purposes != profile.registered_purposes {
                    return Err(Error::RegistrationMismatch {
                        kind: RecordKind::Platform,
                        id: profile.id.to_string(),
                        field: RegistrationField::Purposes,
                    });
                }
                return Ok(Registered::Unchanged);
            }
            let record = AuditRecord::new(
                self.now(),
                Actor::Platform(profile.id.clone()),
                AuditEvent::PlatformRegistered {
                    purposes: Some(profile.registered_purposes),
                },
            );
            self.commit(Commit::new(record).change(Change::InsertPlatform {
                platform: profile.clone(),
            }))
            .map_err(|e| raced(e, RecordKind::Platform))?;
            Ok(Registered::New)
        })
    }
}
