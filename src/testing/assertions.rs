//! Assertions that read the real audit log.

use std::fmt::Write as _;

use crate::audit::{AuditEntry, AuditKind};
use crate::auditor::verify_log;
use crate::broker::Broker;
use crate::checkpoint::NoteVerifier;
use crate::ids::SubjectId;
use crate::policy::DenyReason;
use crate::store::StateRead;
use crate::store::{LogRead, Store, StoredEntry};
use crate::vocab::ProhibitedUse;

/// Assertions over what a broker's audit log says, for tests. Each panics with the entries
/// involved when the log does not say what was expected.
pub trait LogAssertions {
    /// The entry at `seq` records an access denied for exactly `reasons`, in this order.
    fn assert_denied(&self, seq: u64, reasons: &[DenyReason]);

    /// The entry at `seq` records a permitted access.
    fn assert_permitted(&self, seq: u64);

    /// No entry in the whole log permits an access, or issues a token, for a prohibited use (as
    /// a purpose or as a scope), and every access that named one was denied for exactly that.
    /// Read from the stored bytes as JSON, so an entry the typed reader would refuse is checked
    /// too.
    fn assert_never_permitted_prohibited_use(&self);

    /// The subject's history ([`Broker::subject_history`](crate::Broker::subject_history)) holds entries of exactly these kinds, in this
    /// order.
    fn assert_history(&self, subject: &SubjectId, kinds: &[AuditKind]);

    /// The whole log verifies, and is consistent with `checkpoint` (a signed note) under
    /// `verifier_key` (a C2SP vkey).
    fn assert_log_verifies(&self, checkpoint: &str, verifier_key: &str);
}

fn show(entries: &[StoredEntry]) -> String {
    let mut shown = String::new();
    for entry in entries {
        let _ = writeln!(
            shown,
            "  {:>5}: {}",
            entry.seq,
            String::from_utf8_lossy(&entry.bytes)
        );
    }
    if shown.is_empty() {
        shown.push_str("  (none)\n");
    }
    shown
}

fn entries_around(log: &dyn LogRead, seq: u64) -> String {
    let around = log
        .audit_bytes(seq.saturating_sub(2)..seq.saturating_add(3))
        .unwrap_or_default();
    show(&around)
}

fn entry(log: &dyn LogRead, seq: u64) -> AuditEntry {
    let found = log
        .audit_entries(seq..seq.saturating_add(1))
        .unwrap_or_else(|e| panic!("the audit log could not be read at {seq}: {e}"));
    found.into_iter().next().unwrap_or_else(|| {
        panic!(
            "the audit log has no entry {seq}; its last entries:\n{}",
            entries_around(log, log.audit_len().unwrap_or(0))
        )
    })
}

fn all(log: &dyn LogRead) -> Vec<StoredEntry> {
    let len = log.audit_len().expect("the audit log's length is readable");
    log.audit_bytes(0..len).expect("the audit log is readable")
}

impl<S: Store> LogAssertions for Broker<S> {
    fn assert_denied(&self, seq: u64, reasons: &[DenyReason]) {
        let log = self.store();
        let found = entry(&log, seq);
        // The log names an account in a reason by its pseudonym under the subject's key.
        let key = found
            .consent()
            .and_then(|consent| log.consent(consent).ok().flatten())
            .and_then(|consent| log.subject_key(&consent.request.subject).ok().flatten());
        let expected = match &key {
            Some(key) => crate::broker::redact_reasons(reasons, key),
            None => reasons.to_vec(),
        };
        if found.kind() != AuditKind::AccessDenied || found.reasons() != expected {
            panic!(
                "expected entry {seq} to record an access denied for {reasons:?}; the log around \
                 it:\n{}",
                entries_around(&log, seq)
            );
        }
    }

    fn assert_permitted(&self, seq: u64) {
        let log = self.store();
        if entry(&log, seq).kind() != AuditKind::AccessPermitted {
            panic!(
                "expected entry {seq} to record a permitted access; the log around it:\n{}",
                entries_around(&log, seq)
            );
        }
    }

    fn assert_never_permitted_prohibited_use(&self) {
        let log = self.store();
        let prohibited = |value: Option<&serde_json::Value>| {
            value
                .and_then(serde_json::Value::as_str)
                .and_then(|word| word.parse::<ProhibitedUse>().ok())
        };
        let mut offending = Vec::new();
        for stored in all(&log) {
            let Ok(json) = serde_json::from_slice::<serde_json::Value>(&stored.bytes) else {
                offending.push(stored);
                continue;
            };
            let kind = json.get("kind").and_then(serde_json::Value::as_str);
            let purpose = prohibited(json.get("purpose"));
            let scope = prohibited(json.get("scope"));
            if purpose.is_none() && scope.is_none() {
                continue;
            }
            let mut expected = Vec::new();
            if let Some(prohibited) = purpose {
                expected.push(DenyReason::ProhibitedPurpose { prohibited });
            }
            if let Some(prohibited) = scope {
                expected.push(DenyReason::ProhibitedScope { prohibited });
            }
            let reasons: Option<Vec<DenyReason>> = json
                .get("reasons")
                .and_then(|reasons| serde_json::from_value(reasons.clone()).ok());
            if kind != Some("access_denied") || reasons.as_deref() != Some(expected.as_slice()) {
                offending.push(stored);
            }
        }
        if !offending.is_empty() {
            panic!(
                "entries that let a prohibited use through (or did not refuse it for exactly \
                 that):\n{}",
                show(&offending)
            );
        }
    }

    fn assert_history(&self, subject: &SubjectId, kinds: &[AuditKind]) {
        let log = self.store();
        let history = self
            .subject_history(subject)
            .unwrap_or_else(|e| panic!("the history of {subject} could not be read: {e}"));
        let found: Vec<AuditKind> = history.iter().map(AuditEntry::kind).collect();
        if found != kinds {
            let shown: Vec<StoredEntry> = history
                .iter()
                .filter_map(|e| log.audit_bytes(e.seq..e.seq + 1).ok()?.pop())
                .collect();
            panic!(
                "expected the history of {subject} to be {kinds:?}, found {found:?}:\n{}",
                show(&shown)
            );
        }
    }

    fn assert_log_verifies(&self, checkpoint: &str, verifier_key: &str) {
        let verifier = NoteVerifier::from_vkey(verifier_key)
            .unwrap_or_else(|e| panic!("the verifier key is not a C2SP vkey: {e}"));
        let log = self.store();
        if let Err(error) = verify_log(&log, Some((checkpoint, &verifier))) {
            let around = error
                .first_bad_index()
                .map(|index| entries_around(&log, index))
                .unwrap_or_default();
            panic!("the audit log does not verify: {error}\n{around}");
        }
    }
}
