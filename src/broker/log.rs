//! The broker's side of its audit log: signing checkpoints, handing out receipts, and reading
//! histories.

use super::Broker;
use crate::audit::AuditEntry;
use crate::auditor::{self, Receipt};
use crate::error::Error;
use crate::ids::ConsentId;
use crate::store::{KeyUse, Store, StoredCheckpoint};

impl<S: Store> Broker<S> {
    /// The checkpoints' origin line: the broker's id.
    pub fn log_origin(&self) -> &str {
        self.settings.id.as_str()
    }

    /// The verifier key of the broker's checkpoint signatures (C2SP `signed-note` vkey), for
    /// auditors to keep. It is also recorded in the log when the key is activated.
    pub fn checkpoint_verifier_key(&self) -> String {
        self.checkpointer().signer.verifier_key()
    }

    fn checkpointer(&self) -> std::sync::RwLockReadGuard<'_, super::Checkpointer> {
        self.checkpoints
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Signs a checkpoint of the whole audit log (C2SP `tlog-checkpoint` in a `signed-note`),
    /// after proving that the log is consistent with the last checkpoint recorded: the broker
    /// never signs two inconsistent checkpoints. The checkpoint is recorded in the store.
    ///
    /// # Errors
    /// [`Error::CheckpointInconsistent`]; [`Error::KeyRetired`] if another broker on the same
    /// store has replaced this broker's checkpoint key; [`Error::Merkle`]; [`Error::Store`].
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "broker.checkpoint", level = "debug", skip_all)
    )]
    pub fn checkpoint(&self) -> Result<StoredCheckpoint, Error> {
        // Under the read lock: a rotation waits for checkpoints being signed with the old key.
        let current = self.checkpointer();
        self.ensure_active(KeyUse::Checkpoint, &current.kid)?;
        Ok(auditor::checkpoint_log(
            &self.store,
            self.log_origin(),
            &current.signer,
        )?)
    }

    /// Signs a checkpoint (as [`Broker::checkpoint`]) and asks the witnesses of `cosigning` to
    /// cosign it, each with a consistency proof from the size it cosigned last: the note with
    /// every cosignature that verified, and an alarm per witness that refused. Publish the note
    /// (with [`crate::tiles::publish`]); a checkpoint without enough cosignatures is what a
    /// rolled-back or forked log gets, and readers with a witness policy refuse it.
    ///
    /// # Errors
    /// As [`Broker::checkpoint`]; [`Error::Merkle`] when a proof cannot be made.
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "broker.witnessed_checkpoint", level = "debug", skip_all)
    )]
    pub fn witnessed_checkpoint(
        &self,
        cosigning: &mut crate::witness::Cosigning<'_>,
    ) -> Result<(StoredCheckpoint, crate::witness::Cosigned), Error> {
        let checkpoint = self.checkpoint()?;
        let verifier = crate::checkpoint::NoteVerifier::from_vkey(&self.checkpoint_verifier_key())
            .map_err(|e| Error::Store(crate::store::StoreError::Corrupt(e.to_string())))?;
        let cosigned = cosigning.cosign(&self.store, &checkpoint, &verifier)?;
        Ok((checkpoint, cosigned))
    }

    /// A receipt for the audit entry at `seq`: the entry, its inclusion proof, and a freshly
    /// signed checkpoint it is proven against.
    ///
    /// # Errors
    /// [`Error::Receipt`] (for example a missing entry, as `StoreError::Missing`), and the errors
    /// of [`Broker::checkpoint`].
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "broker.receipt", level = "debug", skip_all)
    )]
    pub fn receipt(&self, seq: u64) -> Result<Receipt, Error> {
        let checkpoint = self.checkpoint()?;
        Ok(auditor::prove(&self.store, seq, &checkpoint)?)
    }

    /// Every audit entry about a consent, in order.
    ///
    /// # Errors
    /// [`Error::Store`].
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "broker.consent_history", level = "debug", skip_all)
    )]
    pub fn consent_history(&self, consent: &ConsentId) -> Result<Vec<AuditEntry>, Error> {
        Ok(auditor::consent_history(&self.store, consent)?)
    }

    /// The whole audit log, in sequence order.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn audit_log(&self) -> Result<Vec<AuditEntry>, Error> {
        let len = self.store.audit_len()?;
        Ok(self.store.audit_entries(0..len)?)
    }
}
