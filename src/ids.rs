//! Typed identifiers, and the injected source of fresh ones.
//!
//! Each party and record has its own id type so that a subject id can never be passed where an
//! account id is expected. Ids are short printable ASCII: they appear in tokens, audit entries and
//! log lines, so they must never carry whitespace, control characters or unbounded length.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::random::{RandomSource, random_token};

/// Longest accepted id, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// An identifier that is empty, too long, or contains a character outside the allowed set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The id is the empty string.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which id type.
        kind: &'static str,
    },
    /// The id is longer than [`MAX_ID_LEN`] bytes.
    #[error("{kind} is {len} bytes long; at most {MAX_ID_LEN} are allowed")]
    TooLong {
        /// Which id type.
        kind: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The id contains a character other than ASCII letters, digits and `-._~:@`.
    #[error(
        "{kind} contains {found:?} at byte {at}; only ASCII letters, digits and -._~:@ are allowed"
    )]
    InvalidCharacter {
        /// Which id type.
        kind: &'static str,
        /// The offending character.
        found: char,
        /// Its byte offset.
        at: usize,
    },
    /// A fresh id was needed and the random source failed: no id is made up instead.
    #[error("no random bytes were available for a fresh id")]
    RandomnessUnavailable,
}

fn validate(kind: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            kind,
            len: value.len(),
        });
    }
    match value
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || "-._~:@".contains(c)))
    {
        Some((at, found)) => Err(IdError::InvalidCharacter { kind, found, at }),
        None => Ok(()),
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        ///
        /// The text is shared (`Arc<str>`): cloning an id copies a pointer, never the text.
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Checks and wraps an identifier.
            ///
            /// # Errors
            /// [`IdError`] when the value is empty, longer than [`MAX_ID_LEN`] bytes, or holds a
            /// character outside ASCII letters, digits and `-._~:@`.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate($kind, &value)?;
                Ok(Self(value.into()))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// A copy with text of its own, sharing nothing with `self`: for ids a store hands
            /// out to concurrent callers, whose reference counts would otherwise be one cache
            /// line written by every core (a clone writes the count, and so does its drop).
            #[allow(dead_code, reason = "not every id type is handed out by a store")]
            pub(crate) fn unshared(&self) -> Self {
                Self(Arc::from(&*self.0))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(value: &str) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = String::deserialize(deserializer)?;
                Self::new(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// The person whose data it is, as the holder knows them.
    SubjectId, "subject id"
);
id_type!(
    /// The data recipient (the messaging platform).
    PlatformId, "platform id"
);
id_type!(
    /// The data holder (the bank).
    HolderId, "holder id"
);
id_type!(
    /// An account at the holder.
    AccountId, "account id"
);
id_type!(
    /// A consent, from request through grant to its end.
    ConsentId, "consent id"
);
id_type!(
    /// The broker, as named in the `aud` of attestations and the `iss` of its tokens.
    BrokerId, "broker id"
);
id_type!(
    /// What a log entry names a subject, an account or a device by: a keyed pseudonym under the
    /// subject's key ([`SubjectKey`](crate::SubjectKey)), `ps_` and 22 base64url characters.
    /// Entries written before pseudonyms (audit formats 1 to 4) hold the identifier itself here.
    Pseudonym, "pseudonym"
);

/// Ids the in-memory store kept as text in its packed records, which it checked when they were
/// first made (the records are written only from ids of these types).
macro_rules! from_packed {
    ($($name:ident),*) => {$(
        impl $name {
            pub(crate) fn from_packed(value: &str) -> Self {
                debug_assert!(validate("packed id", value).is_ok());
                Self(value.into())
            }
        }
    )*};
}

from_packed!(SubjectId, AccountId, ConsentId);

/// A subject's id is looked up by its text (its hash and equality are those of the text).
impl std::borrow::Borrow<str> for SubjectId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Pseudonym {
    /// Wraps text this crate made (a prefix and base64url: always a valid id).
    pub(crate) fn from_trusted(value: String) -> Self {
        Self(value.into())
    }

    /// As [`Pseudonym::from_trusted`], from borrowed text (one allocation: the shared text).
    pub(crate) fn from_trusted_str(value: &str) -> Self {
        Self(value.into())
    }
}

impl AccountId {
    /// An account's pseudonym where the log's types hold an account id (a denial's reasons):
    /// a pseudonym is always a valid account id.
    pub(crate) fn from_pseudonym(pseudonym: &Pseudonym) -> Self {
        Self(pseudonym.as_str().into())
    }
}

/// Source of fresh consent ids, injected so that tests are deterministic.
pub trait IdGenerator: Send + Sync {
    /// A consent id never returned before by this generator, nor by that of any other broker on
    /// the same store, even for a consent since erased: a decision on a grant that keeps its
    /// pseudonyms checks at its commit the consent's id and version, not the subject's key (see
    /// [`AccessView::subject_key_unread`](crate::AccessView::subject_key_unread)), so an id used
    /// again could pass for the erased consent. [`RandomIds`] draws 128 random bits.
    ///
    /// # Errors
    /// [`IdError::RandomnessUnavailable`] when a generator that needs randomness cannot get any:
    /// the caller fails closed rather than use a predictable id.
    fn consent_id(&self) -> Result<ConsentId, IdError>;
}

/// Consent ids with 128 bits from a [`RandomSource`] (by default the operating system's CSPRNG).
pub struct RandomIds {
    random: Arc<dyn RandomSource>,
}

impl std::fmt::Debug for RandomIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RandomIds").finish_non_exhaustive()
    }
}

impl Default for RandomIds {
    fn default() -> Self {
        Self::new()
    }
}

impl RandomIds {
    /// A generator backed by the system CSPRNG.
    pub fn new() -> Self {
        Self::from_source(Arc::new(ring::rand::SystemRandom::new()))
    }

    /// A generator drawing from `random`.
    pub fn from_source(random: Arc<dyn RandomSource>) -> Self {
        Self { random }
    }
}

impl IdGenerator for RandomIds {
    fn consent_id(&self) -> Result<ConsentId, IdError> {
        // No fallback: an id that an attacker could predict would let them name a consent
        // before it exists.
        let body =
            random_token(self.random.as_ref()).map_err(|_| IdError::RandomnessUnavailable)?;
        Ok(ConsentId(format!("cns_{body}").into()))
    }
}

/// Consent ids `cns_1`, `cns_2`, …: deterministic, for tests and examples.
#[derive(Debug, Default)]
pub struct SequentialIds {
    next: AtomicU64,
}

impl SequentialIds {
    /// Starts at `cns_1`.
    pub fn new() -> Self {
        Self::default()
    }
}

impl IdGenerator for SequentialIds {
    fn consent_id(&self) -> Result<ConsentId, IdError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(ConsentId(format!("cns_{n}").into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert_eq!(
            SubjectId::new(""),
            Err(IdError::Empty { kind: "subject id" })
        );
        assert!(matches!(
            AccountId::new("a".repeat(129)),
            Err(IdError::TooLong { len: 129, .. })
        ));
        assert_eq!(
            HolderId::new("bank one"),
            Err(IdError::InvalidCharacter {
                kind: "holder id",
                found: ' ',
                at: 4
            })
        );
        assert!(ConsentId::new("cns_ab-9.x~y:z@w").is_ok());
        assert!(serde_json::from_str::<PlatformId>("\"é\"").is_err());
    }

    #[test]
    fn generators_never_repeat() {
        let random = RandomIds::new();
        assert_ne!(random.consent_id().unwrap(), random.consent_id().unwrap());
        let sequential = SequentialIds::new();
        assert_eq!(sequential.consent_id().unwrap().as_str(), "cns_1");
        assert_eq!(sequential.consent_id().unwrap().as_str(), "cns_2");
    }

    #[test]
    fn a_failing_random_source_fails_closed() {
        struct Broken;
        impl RandomSource for Broken {
            fn fill(&self, _: &mut [u8]) -> Result<(), crate::random::RandomError> {
                Err(crate::random::RandomError)
            }
        }
        let ids = RandomIds::from_source(Arc::new(Broken));
        assert_eq!(ids.consent_id(), Err(IdError::RandomnessUnavailable));
    }
}
