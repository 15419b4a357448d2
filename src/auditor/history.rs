//! A subject's history ("who asked for my data, when, why, and what was decided"), and a
//! consent's, read from the log alone.

use std::collections::HashSet;

use crate::audit::{AuditEntry, AuditEvent};
use crate::ids::{ConsentId, Pseudonym};
use crate::store::{LogRead, StoreError};

use super::CHUNK;

/// Every entry about a subject, in order: those naming the subject (by `subject`, its pseudonym
/// under its key: [`SubjectKey::subject`](crate::SubjectKey::subject); in entries of audit
/// formats 1 to 4, its id), and those naming one of the subject's consents from the entry that
/// requested it on (an access refused for a prohibited purpose names only the consent).
///
/// Decided by position in the log, not by time: an entry naming a consent id before the entry
/// that requested that consent (a probe for an id that did not exist yet, even in the same
/// second) is not the subject's.
///
/// # Errors
/// [`StoreError`].
pub fn subject_history<S: LogRead + ?Sized>(
    log: &S,
    subject: &Pseudonym,
) -> Result<Vec<AuditEntry>, StoreError> {
    history_of_any(log, std::slice::from_ref(subject))
}

/// [`subject_history`] for a subject the log names by any of several pseudonyms (a bank's
/// journal names a customer by one per platform).
///
/// # Errors
/// [`StoreError`].
pub fn history_of_any<S: LogRead + ?Sized>(
    log: &S,
    pseudonyms: &[Pseudonym],
) -> Result<Vec<AuditEntry>, StoreError> {
    let subject = |p: &Pseudonym| pseudonyms.contains(p);
    let mut consents: HashSet<ConsentId> = HashSet::new();
    entries_where(log, |entry| {
        // A broker's log names the subject's consents when they are requested, a bank's journal
        // when it attests them.
        if let AuditEvent::ConsentRequested {
            consent,
            subject: requested_for,
        }
        | AuditEvent::AttestationSigned {
            consent,
            subject: requested_for,
            ..
        } = &entry.event
            && subject(requested_for)
        {
            consents.insert(consent.clone());
        }
        entry.subject().is_some_and(subject)
            || entry.consent().is_some_and(|c| consents.contains(c))
    })
}

/// Every entry about a consent, in order.
///
/// # Errors
/// [`StoreError`].
pub fn consent_history<S: LogRead + ?Sized>(
    log: &S,
    consent: &ConsentId,
) -> Result<Vec<AuditEntry>, StoreError> {
    entries_where(log, |entry| entry.consent() == Some(consent))
}

fn entries_where<S: LogRead + ?Sized>(
    log: &S,
    mut keep: impl FnMut(&AuditEntry) -> bool,
) -> Result<Vec<AuditEntry>, StoreError> {
    let size = log.audit_len()?;
    let mut found = Vec::new();
    let mut next = 0u64;
    while next < size {
        let end = next.saturating_add(CHUNK).min(size);
        let chunk = log.audit_entries(next..end)?;
        // Read what the store holds, not what it claims: a tampered length must not turn a
        // history into billions of empty reads.
        if chunk.is_empty() {
            return Err(StoreError::Corrupt(format!(
                "the audit log claims {size} entries but holds none from {next}"
            )));
        }
        next = end;
        found.extend(chunk.into_iter().filter(|e| keep(e)));
    }
    Ok(found)
}
