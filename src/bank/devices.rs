//! The subject's device keys at the bank: registered in the bank's authenticated session (the
//! subject compares a confirmation code shown by the device with the one the bank shows), named
//! in each approval, and revoked when a phone is lost. Responses are sealed to the keys an
//! approval named that are not revoked.

use super::{Bank, BankError};
use crate::audit::AuditEvent;
use crate::hpke::DevicePublicKey;
use crate::ids::SubjectId;
use crate::store::{
    Change, Commit, DeviceKeyRecord, LedgerRead, Precondition, RecordKind, Store, StoreError,
};

/// The most device keys one subject may have live (registered and not revoked) at once: as many
/// as a sealed response has envelopes ([`MAX_ENVELOPES`](crate::MAX_ENVELOPES)) and an approval
/// names devices. Revoked keys are kept (so that a lost phone's key can never be registered
/// again) and are not counted: the gate, which reads the subject's keys for each sealed access,
/// reads those too, so only the subject's own register-and-revoke cycles at the bank lengthen
/// that read.
pub const MAX_LIVE_DEVICES: usize = crate::MAX_ENVELOPES;

impl<S: Store + LedgerRead> Bank<S> {
    /// Registers one of `subject`'s device keys, after the subject confirmed, in the bank's
    /// authenticated session, that the code the device shows is
    /// [`DevicePublicKey::confirmation_code`] of this key (a key swapped in by anyone else shows
    /// another code). Recorded in the ledger and the journal.
    ///
    /// # Errors
    /// [`BankError::DeviceKeyInUse`] for a key registered before, for anyone;
    /// [`BankError::TooManyDevices`] when the subject has [`MAX_LIVE_DEVICES`] live keys (the
    /// commit checks the live keys it counted are still the live ones, so registrations at once
    /// cannot pass the bound together); [`BankError::Store`].
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "bank.register_device", level = "debug", skip_all)
    )]
    pub fn register_device(
        &self,
        subject: &SubjectId,
        key: DevicePublicKey,
    ) -> Result<(), BankError> {
        self.retrying(|| {
            let live: Vec<String> = self
                .live_devices(subject)?
                .iter()
                .map(DevicePublicKey::thumbprint)
                .collect();
            if live.len() >= MAX_LIVE_DEVICES {
                return Err(BankError::TooManyDevices {
                    limit: MAX_LIVE_DEVICES,
                });
            }
            let keyed = self.key_of(subject)?;
            let entry = self.record(
                self.me(),
                AuditEvent::DeviceKeyRegistered {
                    subject: keyed.key.subject(subject),
                    device: keyed.key.device(&key.thumbprint()),
                },
            );
            let record = DeviceKeyRecord {
                subject: subject.clone(),
                key,
                registered_at: self.now(),
                revoked_at: None,
            };
            let commit = keyed
                .store_in(Commit::new(entry))
                .precondition(Precondition::LiveDeviceKeys {
                    subject: subject.clone(),
                    thumbprints: live,
                })
                .change(Change::RegisterDeviceKey { record });
            match self.ledger.commit(commit) {
                Ok(_) => Ok(()),
                Err(StoreError::Duplicate {
                    kind: RecordKind::DeviceKey,
                    ..
                }) => Err(BankError::DeviceKeyInUse),
                Err(error) => Err(error.into()),
            }
        })
    }

    /// Revokes one of `subject`'s device keys (a lost phone): nothing is sealed to it after.
    ///
    /// # Errors
    /// [`BankError::UnknownDevice`] for a key that is not a live key of the subject's;
    /// [`BankError::Store`].
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "bank.revoke_device", level = "debug", skip_all)
    )]
    pub fn revoke_device(&self, subject: &SubjectId, thumbprint: &str) -> Result<(), BankError> {
        self.check_devices(subject, &[thumbprint.to_owned()])?;
        self.retrying(|| {
            let keyed = self.key_of(subject)?;
            let entry = self.record(
                self.me(),
                AuditEvent::DeviceKeyRevoked {
                    subject: keyed.key.subject(subject),
                    device: keyed.key.device(thumbprint),
                },
            );
            let change = Change::RevokeDeviceKey {
                subject: subject.clone(),
                thumbprint: thumbprint.to_owned(),
                at: self.now(),
            };
            match self
                .ledger
                .commit(keyed.store_in(Commit::new(entry)).change(change))
            {
                Ok(_) => Ok(()),
                Err(StoreError::Missing { .. }) => Err(BankError::UnknownDevice(thumbprint.into())),
                Err(error) => Err(error.into()),
            }
        })
    }

    /// `subject`'s device keys, revoked ones included.
    ///
    /// # Errors
    /// [`BankError::Store`].
    pub fn devices(&self, subject: &SubjectId) -> Result<Vec<DeviceKeyRecord>, BankError> {
        Ok(self.ledger.device_keys(subject)?)
    }

    /// Every thumbprint names a live device key of `subject`'s: the thumbprints of all of the
    /// subject's live keys, for the commit's precondition.
    pub(super) fn check_devices(
        &self,
        subject: &SubjectId,
        thumbprints: &[String],
    ) -> Result<Vec<String>, BankError> {
        let live: Vec<String> = self
            .live_devices(subject)?
            .iter()
            .map(DevicePublicKey::thumbprint)
            .collect();
        match thumbprints.iter().find(|t| !live.contains(t)) {
            Some(unknown) => Err(BankError::UnknownDevice(unknown.clone())),
            None => Ok(live),
        }
    }

    /// `subject`'s device keys that are not revoked, in the order they were registered.
    pub(super) fn live_devices(
        &self,
        subject: &SubjectId,
    ) -> Result<Vec<DevicePublicKey>, StoreError> {
        Ok(self
            .ledger
            .device_keys(subject)?
            .into_iter()
            .filter(|record| record.revoked_at.is_none())
            .map(|record| record.key)
            .collect())
    }
}
