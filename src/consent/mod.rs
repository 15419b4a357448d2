//! Consent requests, grants and their lifecycle: [`request`] holds what a platform asks for and
//! its validation, [`lifecycle`] the states, the transitions and the approval that activates a
//! grant. Pure: nothing here reads a clock or a store, and nothing here depends on how an
//! attestation is verified (that module depends on this one, never the reverse).

mod lifecycle;
mod request;

pub use lifecycle::{
    Approval, Consent, ConsentError, ConsentState, ConsentStatus, Grant, RevocationReason, Revoker,
};
pub use request::{
    ABSOLUTE_MAX_CONSENT_DURATION, AccountSelection, ConsentRequest, ConsentRequestDraft,
    DEFAULT_APPROVAL_WINDOW, DEFAULT_MAX_CONSENT_DURATION, RequestError, RequestLimits,
};

/// `time::Duration` as whole seconds on the wire.
pub(crate) mod seconds {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(d.whole_seconds())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::seconds(i64::deserialize(d)?))
    }
}
