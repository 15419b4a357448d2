//! The history of a log's checkpoint keys, as the log itself records it.
//!
//! A verifier trusts one checkpoint key out of band (the one it was given when it started
//! auditing). A rotation is an entry in the log (`checkpoint_key_activated` with a `rotation`
//! note): a C2SP signed note whose text is [`rotation_statement`] — the origin, the retiring
//! verifier key and the new one — signed by *both* keys. Reading the log from the start, a
//! verifier follows each endorsed rotation: the old key is good for checkpoints up to the size
//! just before the rotation's entry, the new key from the size that includes it. A key change
//! that the old key did not endorse (a broker restarted with another key, a key swapped in the
//! database) stops the history: it is reported, not followed.

use crate::audit::{AuditEntry, AuditEvent};
use crate::checkpoint::{
    Checkpoint, CheckpointError, NoteError, NoteSigner, NoteVerifier, open_note, split_note,
};
use crate::store::{LogRead, StoreError};

/// The text both keys sign for a rotation.
pub fn rotation_statement(origin: &str, old_vkey: &str, new_vkey: &str) -> String {
    format!("consent-broker checkpoint key rotation\n{origin}\n{old_vkey}\n{new_vkey}\n")
}

/// The rotation note: [`rotation_statement`] signed by `old` and by `new`.
///
/// # Errors
/// [`NoteError`] from signing.
pub fn endorse(old: &NoteSigner, new: &NoteSigner) -> Result<String, NoteError> {
    let statement = rotation_statement(old.name(), &old.verifier_key(), &new.verifier_key());
    let by_old = old.sign(&statement)?;
    let by_new = new.sign(&statement)?;
    let new_line = by_new
        .rsplit_once("\n\n")
        .map(|(_, line)| line)
        .ok_or(NoteError::MissingBlankLine)?;
    Ok(format!("{by_old}{new_line}"))
}

/// Why the key history stops.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyHistoryError {
    /// A checkpoint key was activated at `seq` without the endorsement of the key before it.
    #[error("entry {seq} activates a checkpoint key the previous key did not endorse")]
    Unendorsed {
        /// The entry.
        seq: u64,
    },
    /// The log could not be read.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// The checkpoint keys of one log and the sizes each signs for.
#[derive(Debug, Clone)]
pub struct KeyHistory {
    origin: String,
    /// The key trusted at the start: it signs from size 0.
    first: NoteVerifier,
    /// Each later key with the smallest checkpoint size it signs.
    later: Vec<(u64, NoteVerifier)>,
}

impl KeyHistory {
    /// A history that starts with the key the verifier trusts.
    pub fn new(origin: &str, first: NoteVerifier) -> Self {
        Self {
            origin: origin.to_owned(),
            first,
            later: Vec::new(),
        }
    }

    /// Follows every key change in `log` from the start.
    ///
    /// # Errors
    /// [`KeyHistoryError`].
    pub fn from_log(
        log: &impl LogRead,
        origin: &str,
        first: NoteVerifier,
    ) -> Result<Self, KeyHistoryError> {
        let mut history = Self::new(origin, first);
        let len = log.audit_len()?;
        let mut start = 0;
        while start < len {
            let end = start.saturating_add(4096).min(len);
            // An entry that does not parse is not a key activation this build can follow; the
            // log's own verification reports it.
            for stored in log.audit_bytes(start..end)? {
                if let Ok(entry) = AuditEntry::from_bytes(&stored.bytes) {
                    history.observe(&entry)?;
                }
            }
            start = end;
        }
        Ok(history)
    }

    /// Takes one entry of the log into account (entries in order, for a monitor that reads the
    /// log as it grows).
    ///
    /// # Errors
    /// [`KeyHistoryError::Unendorsed`].
    pub fn observe(&mut self, entry: &AuditEntry) -> Result<(), KeyHistoryError> {
        let AuditEvent::CheckpointKeyActivated {
            verifier_key,
            rotation,
            ..
        } = &entry.event
        else {
            return Ok(());
        };
        let current = self.current().clone();
        let current_vkey = current.to_vkey();
        if *verifier_key == current_vkey {
            return Ok(());
        }
        let unendorsed = KeyHistoryError::Unendorsed { seq: entry.seq };
        let new = NoteVerifier::from_vkey(verifier_key).map_err(|_| unendorsed.clone())?;
        let note = rotation.as_deref().ok_or_else(|| unendorsed.clone())?;
        let statement = rotation_statement(&self.origin, &current_vkey, verifier_key);
        let by_old = open_note(note, std::slice::from_ref(&current));
        let by_new = open_note(note, std::slice::from_ref(&new));
        match (by_old, by_new) {
            (Ok(old_text), Ok(new_text)) if old_text == statement && new_text == statement => {
                self.later.push((entry.seq.saturating_add(1), new));
                Ok(())
            }
            _ => Err(unendorsed),
        }
    }

    /// The key in force now.
    fn current(&self) -> &NoteVerifier {
        self.later.last().map_or(&self.first, |(_, key)| key)
    }

    /// The key that signs checkpoints of `size`.
    pub fn key_for(&self, size: u64) -> &NoteVerifier {
        self.later
            .iter()
            .rev()
            .find(|(from, _)| *from <= size)
            .map_or(&self.first, |(_, key)| key)
    }

    /// The verifier keys in order, each with the smallest checkpoint size it signs.
    pub fn keys(&self) -> impl Iterator<Item = (u64, &NoteVerifier)> {
        std::iter::once((0, &self.first)).chain(self.later.iter().map(|(from, key)| (*from, key)))
    }

    /// Verifies a checkpoint with the key in force at its size: a retired key's signature on a
    /// later checkpoint does not count.
    ///
    /// # Errors
    /// [`CheckpointError`].
    pub fn verify_checkpoint(&self, note: &str) -> Result<Checkpoint, CheckpointError> {
        let (text, _) = split_note(note)?;
        let claimed = Checkpoint::parse_body(text)?;
        crate::checkpoint::verify_checkpoint(note, self.key_for(claimed.size), Some(&self.origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Actor;

    fn signer(seed: u8) -> Result<NoteSigner, NoteError> {
        let mut pkcs8 = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        pkcs8.extend_from_slice(&[seed; 32]);
        NoteSigner::new("log.example", &pkcs8)
    }

    fn activation(seq: u64, new: &NoteSigner, rotation: Option<String>) -> AuditEntry {
        AuditEntry {
            seq,
            at: time::OffsetDateTime::UNIX_EPOCH,
            actor: Actor::Broker("log.example".parse().unwrap_or_else(|_| unreachable!())),
            event: AuditEvent::CheckpointKeyActivated {
                key_id: "k".into(),
                verifier_key: new.verifier_key(),
                retired_key_id: Some("old".into()),
                rotation,
            },
        }
    }

    #[test]
    fn only_a_rotation_both_keys_signed_is_followed() -> Result<(), NoteError> {
        let (old, new, other) = (signer(1)?, signer(2)?, signer(3)?);
        let trusted = || {
            KeyHistory::new(
                "log.example",
                NoteVerifier::from_vkey(&old.verifier_key()).unwrap_or_else(|_| unreachable!()),
            )
        };
        // Both keys: followed, from the size that includes the entry.
        let mut history = trusted();
        assert_eq!(
            history.observe(&activation(7, &new, Some(endorse(&old, &new)?))),
            Ok(())
        );
        assert_eq!(history.key_for(7).to_vkey(), old.verifier_key());
        assert_eq!(history.key_for(8).to_vkey(), new.verifier_key());
        // Only the new key signed; the statement signed by both but naming another old key; no
        // note: not followed.
        let by_new_only = new.sign(&rotation_statement(
            "log.example",
            &old.verifier_key(),
            &new.verifier_key(),
        ))?;
        let wrong_old = endorse(&other, &new)?;
        for rotation in [Some(by_new_only), Some(wrong_old), None] {
            assert_eq!(
                trusted().observe(&activation(7, &new, rotation)),
                Err(KeyHistoryError::Unendorsed { seq: 7 })
            );
        }
        Ok(())
    }
}
