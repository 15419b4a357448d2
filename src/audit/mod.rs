//! Audit records: what happened, who did it, and what was decided, as typed events.
//!
//! The broker makes an [`AuditRecord`] for every registration, request, approval, decision,
//! revocation, refusal and key change, and hands it to the store in the same commit as the state
//! change it describes. The store gives it a gap-free sequence number and keeps the exact bytes of
//! the resulting [`AuditEntry`]. Each kind of event is one [`AuditEvent`] variant with exactly its
//! fields, so a record cannot carry a member that means nothing for its kind. This module never
//! performs I/O and never drops a record.
//!
//! The wire form is specified in `docs/AUDIT_FORMAT.md`: a flat JSON object with `seq`, `at`,
//! `actor`, `kind` and the event's members. Entries written by earlier versions parse unchanged
//! (members added since then are optional when read).

mod event;

pub use event::{AuditEvent, AuditKind};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::attestation::AttestationError;
use crate::consent::{ConsentError, RequestError, RevocationReason, Revoker};
use crate::ids::{BrokerId, ConsentId, HolderId, PlatformId, Pseudonym};
use crate::policy::DenyReason;

/// Who caused the event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// The subject, by its pseudonym (entries of audit formats 1 and 2 named the subject by its
    /// id here; this version never writes this actor).
    Subject(Pseudonym),
    /// The platform.
    Platform(PlatformId),
    /// The holder.
    Holder(HolderId),
    /// The broker itself (key management).
    Broker(BrokerId),
}

/// Why a request, approval or re-authorisation was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The consent request was invalid.
    Request(RequestError),
    /// The attestation failed verification.
    Attestation(AttestationError),
    /// The consent was not in a state that allows the transition.
    Lifecycle(ConsentError),
}

/// Who revoked a consent, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Who revoked it.
    pub by: Revoker,
    /// Why.
    pub reason: RevocationReason,
}

/// An event to append: everything but the sequence number, which the store assigns.
///
/// Made by the broker; a store reads it (and writes its bytes with
/// [`AuditRecord::entry_bytes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub(crate) at: OffsetDateTime,
    pub(crate) actor: Actor,
    pub(crate) event: AuditEvent,
}

impl AuditRecord {
    pub(crate) fn new(at: OffsetDateTime, actor: Actor, event: AuditEvent) -> Self {
        Self { at, actor, event }
    }

    /// When (the broker's clock).
    pub fn at(&self) -> OffsetDateTime {
        self.at
    }

    /// Who caused it.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// What happened.
    pub fn event(&self) -> &AuditEvent {
        &self.event
    }

    /// The bytes of this record as the entry at position `seq`: what the store keeps and what
    /// the Merkle leaf hashes. Written once; a verifier never re-encodes them.
    ///
    /// # Errors
    /// Only if a value cannot be encoded as JSON, which no audit record contains.
    pub fn entry_bytes(&self, seq: u64) -> Result<Vec<u8>, serde_json::Error> {
        Ok(self.prepare()?.bytes(seq))
    }

    /// The record encoded but for its sequence number, which [`PreparedEntry::bytes`] puts in:
    /// a store encodes before it takes its write lock and only places the number under it.
    ///
    /// # Errors
    /// As [`AuditRecord::entry_bytes`].
    pub fn prepare(&self) -> Result<PreparedEntry, serde_json::Error> {
        // Sized for a typical entry up front. Growing the buffer (serde_json starts at 128
        // bytes) reallocates, and glibc's `realloc` takes the lock of the arena the block came
        // from, where `malloc` and `free` mostly use the thread's own cache: blocks passed
        // between threads then had two deciding threads queue on one arena's lock, with a
        // futex sleep and wake-up each time (tests/reallocations.rs).
        let mut encoded = Vec::with_capacity(ENTRY_CAPACITY);
        serde_json::to_writer(
            &mut encoded,
            &EntryWire {
                seq: 0,
                at: self.at,
                actor: &self.actor,
                event: &self.event,
            },
        )?;
        // `seq` is the first field and a plain decimal number: the rest follows `{"seq":0`.
        if !encoded.starts_with(SEQ_PREFIX_ZERO) {
            return Err(<serde_json::Error as serde::ser::Error>::custom(
                "an entry that does not begin with its sequence number",
            ));
        }
        Ok(PreparedEntry { encoded })
    }
}

/// The buffer an entry is encoded into at first: most entries fit (a decision's is about 250
/// bytes, a served access's at the bank's gate 400 to 520), and a buffer of this size still
/// comes from the allocator's per-thread cache.
const ENTRY_CAPACITY: usize = 640;

/// How every entry's bytes begin, before the sequence number's digits.
const SEQ_PREFIX: &[u8] = b"{\"seq\":";
/// The same with the number 0, as [`AuditRecord::prepare`] encodes it.
const SEQ_PREFIX_ZERO: &[u8] = b"{\"seq\":0";

/// An audit record encoded but for its sequence number (see [`AuditRecord::prepare`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedEntry {
    /// The entry encoded at sequence number 0 (so it begins with `{"seq":0`).
    encoded: Vec<u8>,
}

impl PreparedEntry {
    /// The entry's bytes after its sequence number's digits: the entry at position `seq` is
    /// `{"seq":`, then `seq` in decimal, then these bytes (how a database server that numbers
    /// entries itself builds them).
    pub fn after_seq(&self) -> &[u8] {
        self.encoded
            .get(SEQ_PREFIX_ZERO.len()..)
            .unwrap_or_default()
    }

    /// The entry's bytes at position `seq`: exactly [`AuditRecord::entry_bytes`]`(seq)`.
    pub fn bytes(&self, seq: u64) -> Vec<u8> {
        let tail = self.after_seq();
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        let mut rest = seq;
        loop {
            start -= 1;
            if let Some(digit) = digits.get_mut(start) {
                *digit = b'0' + (rest % 10) as u8;
            }
            rest /= 10;
            if rest == 0 || start == 0 {
                break;
            }
        }
        let digits = digits.get(start..).unwrap_or_default();
        let mut bytes = Vec::with_capacity(SEQ_PREFIX.len() + digits.len() + tail.len());
        bytes.extend_from_slice(SEQ_PREFIX);
        bytes.extend_from_slice(digits);
        bytes.extend_from_slice(tail);
        bytes
    }
}

#[derive(Serialize)]
struct EntryWire<'a> {
    seq: u64,
    #[serde(with = "time::serde::timestamp")]
    at: OffsetDateTime,
    actor: &'a Actor,
    #[serde(flatten)]
    event: &'a AuditEvent,
}

/// A stored audit entry, as parsed from its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log: 0, 1, 2, … without gaps.
    pub seq: u64,
    /// When (the broker's clock).
    #[serde(with = "time::serde::timestamp")]
    pub at: OffsetDateTime,
    /// Who caused it.
    pub actor: Actor,
    /// What happened.
    #[serde(flatten)]
    pub event: AuditEvent,
}

impl AuditEntry {
    /// Parses stored entry bytes.
    ///
    /// # Errors
    /// The bytes are not the JSON of an audit entry.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The entry's bytes as this version writes them (what [`AuditRecord::entry_bytes`] gives).
    /// A verifier hashes the *stored* bytes instead: it never re-encodes.
    ///
    /// # Errors
    /// As [`AuditRecord::entry_bytes`].
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// The event's kind.
    pub fn kind(&self) -> AuditKind {
        self.event.kind()
    }

    /// The consent the entry is about, if any.
    pub fn consent(&self) -> Option<&ConsentId> {
        self.event.consent()
    }

    /// The subject the entry names, if any.
    pub fn subject(&self) -> Option<&Pseudonym> {
        self.event.subject()
    }

    /// The reasons of a denial (empty otherwise).
    pub fn reasons(&self) -> &[DenyReason] {
        self.event.reasons()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Presence;
    use time::macros::datetime;

    fn entry(event: AuditEvent) -> AuditRecord {
        AuditRecord::new(
            datetime!(2026-11-21 09:00 UTC),
            Actor::Platform("chat".parse().unwrap()),
            event,
        )
    }

    /// The prepared form places the number exactly where serde_json writes it: compared with a
    /// direct encoding of the entry, at numbers of every width.
    #[test]
    fn a_prepared_entry_is_byte_for_byte_the_direct_encoding() {
        let record = entry(AuditEvent::PlatformRegistered { purposes: None });
        let prepared = record.prepare().unwrap();
        for seq in [0, 1, 9, 10, 99, 12_345, u64::from(u32::MAX) + 7, u64::MAX] {
            let direct = serde_json::to_vec(&EntryWire {
                seq,
                at: record.at,
                actor: &record.actor,
                event: &record.event,
            })
            .unwrap();
            assert_eq!(prepared.bytes(seq), direct, "seq {seq}");
            assert_eq!(AuditEntry::from_bytes(&direct).unwrap().seq, seq);
        }
    }

    #[test]
    fn entries_written_by_the_first_format_still_parse() {
        // Verbatim from AUDIT_FORMAT.md's example and a key activation of the first format.
        let old = br#"{"seq":4,"at":1795251600,"kind":"access_permitted","actor":{"platform":"chat"},"consent":"cns_1","subject":"alice","scope":"balance","purpose":"customer_service","account":"acc-current","presence":"subject_present"}"#;
        let parsed = AuditEntry::from_bytes(old).unwrap();
        assert_eq!(parsed.kind(), AuditKind::AccessPermitted);
        assert_eq!(parsed.consent().map(ConsentId::as_str), Some("cns_1"));
        let key = br#"{"seq":0,"at":1795251600,"kind":"signing_key_activated","actor":{"broker":"b"},"key_id":"abc"}"#;
        assert!(matches!(
            AuditEntry::from_bytes(key).unwrap().event,
            AuditEvent::SigningKeyActivated {
                public_key: None,
                ..
            }
        ));
        let registered =
            br#"{"seq":1,"at":1795251600,"kind":"holder_registered","actor":{"holder":"bank"}}"#;
        assert_eq!(
            AuditEntry::from_bytes(registered).unwrap().kind(),
            AuditKind::HolderRegistered
        );
    }

    #[test]
    fn written_bytes_parse_back_to_the_same_entry() {
        let record = entry(AuditEvent::AccessDenied {
            consent: "cns_1".parse().unwrap(),
            subject: None,
            scope: "ads".parse().unwrap(),
            purpose: "ads".parse().unwrap(),
            account: None,
            presence: Presence::Unattended,
            reasons: vec![DenyReason::UnknownConsent],
        });
        let bytes = record.entry_bytes(7).unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with(r#"{"seq":7,"at":1795251600,"actor":{"platform":"chat"},"kind":"access_denied","consent":"cns_1""#), "{text}");
        assert!(!text.contains("subject"), "{text}");
        let parsed = AuditEntry::from_bytes(&bytes).unwrap();
        assert_eq!(parsed.seq, 7);
        assert_eq!(parsed.event, record.event);
        assert_eq!(parsed.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn unknown_kinds_parse_as_unrecognised() {
        let newer = br#"{"seq":9,"at":1,"actor":{"broker":"b"},"kind":"something_new","x":1}"#;
        assert_eq!(
            AuditEntry::from_bytes(newer).unwrap().kind(),
            AuditKind::Unrecognised
        );
    }

    /// Every kind, named so that adding one without documenting it fails here.
    fn every_kind() -> Vec<AuditKind> {
        use AuditKind::*;
        let all = vec![
            HolderRegistered,
            HolderPolicyChanged,
            HolderKeysChanged,
            PlatformRegistered,
            ConsentRequested,
            ConsentRequestRefused,
            ConsentApproved,
            ApprovalRefused,
            ConsentRejected,
            AccessPermitted,
            AccessDenied,
            ConsentRevoked,
            ConsentReauthorised,
            ReauthorisationRefused,
            TokenIssued,
            SigningKeyActivated,
            CheckpointKeyActivated,
            TestDataImported,
            AttestationSigned,
            RevokedAtBank,
            BankPolicySet,
            AccessServed,
            AccessRefusedAtGate,
            RevocationFeedApplied,
            AttestationKeyActivated,
            DeviceKeyRegistered,
            DeviceKeyRevoked,
            SubjectErased,
            RetentionApplied,
            SubjectLinked,
        ];
        for kind in &all {
            // Exhaustive: a new kind must be added to the list above as well.
            match kind {
                HolderRegistered
                | HolderPolicyChanged
                | HolderKeysChanged
                | PlatformRegistered
                | ConsentRequested
                | ConsentRequestRefused
                | ConsentApproved
                | ApprovalRefused
                | ConsentRejected
                | AccessPermitted
                | AccessDenied
                | ConsentRevoked
                | ConsentReauthorised
                | ReauthorisationRefused
                | TokenIssued
                | SigningKeyActivated
                | CheckpointKeyActivated
                | TestDataImported
                | AttestationSigned
                | RevokedAtBank
                | BankPolicySet
                | AccessServed
                | AccessRefusedAtGate
                | RevocationFeedApplied
                | AttestationKeyActivated
                | DeviceKeyRegistered
                | DeviceKeyRevoked
                | SubjectErased
                | RetentionApplied
                | SubjectLinked
                | Unrecognised => {}
            }
        }
        all
    }

    #[test]
    fn the_format_document_describes_every_kind() {
        let document = include_str!("../../docs/AUDIT_FORMAT.md");
        for kind in every_kind() {
            let name = serde_json::to_string(&kind).unwrap();
            let name = name.trim_matches('"');
            assert!(
                document.contains(&format!("`{name}`")),
                "docs/AUDIT_FORMAT.md does not describe `{name}`"
            );
        }
    }
}
