//! The words of consent: what data ([`Scope`]) and why ([`Purpose`]).
//!
//! This module owns the rule that prohibited uses (targeted advertising, cross-selling, data sale)
//! can be *named* but never *granted*. They parse into [`ProhibitedUse`] so that a refusal can say
//! exactly what was refused; the types that a grant stores, [`Scope`] and [`Purpose`], have no
//! value for them. Nothing here may ever add a configuration switch that lets a prohibited use
//! through.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A category of data a holder can share.
///
/// `transactions` exists so that it can be requested and refused precisely: a holder's policy
/// enables it explicitly or it is never permitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Account balances.
    Balance,
    /// Fraud and security alerts.
    Alerts,
    /// Transaction history (off unless the holder's policy enables it).
    Transactions,
}

/// A reason for access that can be granted.
///
/// There is deliberately no variant for a prohibited use: a grant holding a [`Purpose`] cannot
/// hold advertising, cross-selling or data sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Purpose {
    /// Answering the subject's own question (for example "what is my balance?").
    CustomerService,
    /// Detecting and warning the subject about fraud.
    FraudProtection,
}

/// A use of data that is never allowed, under any configuration.
///
/// Recognised so that it is refused with a precise reason (and the refusal audited), rather than
/// as an unknown word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProhibitedUse {
    /// Targeted advertising.
    Ads,
    /// Selling other products to the subject on the strength of their data.
    CrossSelling,
    /// Selling or licensing the data to third parties.
    DataSale,
}

/// A purpose as a requester stated it: either grantable or prohibited.
///
/// Access requests and consent requests carry this type, so that a prohibited purpose reaches
/// the policy check and is refused there with [`crate::DenyReason::ProhibitedPurpose`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RequestedPurpose {
    /// A purpose that can be granted.
    Permitted(Purpose),
    /// A purpose that is never granted.
    Prohibited(ProhibitedUse),
}

/// A scope as a requester stated it: either a data category or a prohibited use given as a scope
/// name (`"ads"` as a scope is refused exactly as `"ads"` as a purpose is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RequestedScope {
    /// A data category.
    Data(Scope),
    /// A prohibited use named as a scope.
    Prohibited(ProhibitedUse),
}

/// A word that is not part of the vocabulary, or a prohibited use where only grantable words fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VocabError {
    /// The word is not a known scope.
    #[error("unknown scope {0:?}: expected one of \"balance\", \"alerts\", \"transactions\"")]
    UnknownScope(String),
    /// The word is not a known purpose.
    #[error(
        "unknown purpose {0:?}: expected \"customer_service\" or \"fraud_protection\" \
         (\"ads\", \"cross_selling\" and \"data_sale\" are recognised and always refused)"
    )]
    UnknownPurpose(String),
    /// A prohibited use was given where a grantable purpose or scope is required.
    #[error("{0} is a prohibited use and can never be granted")]
    Prohibited(ProhibitedUse),
}

/// `Display`, `Serialize` and `Deserialize` through `as_str` and `FromStr`.
macro_rules! text_wire {
    ($ty:ty) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let word = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                word.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

macro_rules! wire_names {
    ($ty:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The wire name (as used in JSON, tokens and the audit log).
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name),+ }
            }

            fn from_wire(word: &str) -> Option<Self> {
                match word { $($name => Some(Self::$variant),)+ _ => None }
            }
        }

        text_wire!($ty);
    };
}

wire_names!(Scope { Balance => "balance", Alerts => "alerts", Transactions => "transactions" });
wire_names!(Purpose { CustomerService => "customer_service", FraudProtection => "fraud_protection" });
wire_names!(ProhibitedUse { Ads => "ads", CrossSelling => "cross_selling", DataSale => "data_sale" });

impl Scope {
    /// Every scope, in a fixed order.
    pub const ALL: [Scope; 3] = [Scope::Balance, Scope::Alerts, Scope::Transactions];
}

impl Purpose {
    /// Every grantable purpose, in a fixed order.
    pub const ALL: [Purpose; 2] = [Purpose::CustomerService, Purpose::FraudProtection];
}

impl ProhibitedUse {
    /// Every prohibited use, in a fixed order.
    pub const ALL: [ProhibitedUse; 3] = [
        ProhibitedUse::Ads,
        ProhibitedUse::CrossSelling,
        ProhibitedUse::DataSale,
    ];
}

impl FromStr for ProhibitedUse {
    type Err = VocabError;
    fn from_str(word: &str) -> Result<Self, Self::Err> {
        Self::from_wire(word).ok_or_else(|| VocabError::UnknownPurpose(word.to_owned()))
    }
}

impl FromStr for Scope {
    type Err = VocabError;
    fn from_str(word: &str) -> Result<Self, Self::Err> {
        match RequestedScope::from_str(word)? {
            RequestedScope::Data(scope) => Ok(scope),
            RequestedScope::Prohibited(prohibited) => Err(VocabError::Prohibited(prohibited)),
        }
    }
}

impl FromStr for Purpose {
    type Err = VocabError;
    fn from_str(word: &str) -> Result<Self, Self::Err> {
        match RequestedPurpose::from_str(word)? {
            RequestedPurpose::Permitted(purpose) => Ok(purpose),
            RequestedPurpose::Prohibited(prohibited) => Err(VocabError::Prohibited(prohibited)),
        }
    }
}

impl FromStr for RequestedScope {
    type Err = VocabError;
    fn from_str(word: &str) -> Result<Self, Self::Err> {
        if let Some(scope) = Scope::from_wire(word) {
            Ok(Self::Data(scope))
        } else if let Some(prohibited) = ProhibitedUse::from_wire(word) {
            Ok(Self::Prohibited(prohibited))
        } else {
            Err(VocabError::UnknownScope(word.to_owned()))
        }
    }
}

impl FromStr for RequestedPurpose {
    type Err = VocabError;
    fn from_str(word: &str) -> Result<Self, Self::Err> {
        if let Some(purpose) = Purpose::from_wire(word) {
            Ok(Self::Permitted(purpose))
        } else if let Some(prohibited) = ProhibitedUse::from_wire(word) {
            Ok(Self::Prohibited(prohibited))
        } else {
            Err(VocabError::UnknownPurpose(word.to_owned()))
        }
    }
}

impl RequestedScope {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Data(scope) => scope.as_str(),
            Self::Prohibited(prohibited) => prohibited.as_str(),
        }
    }
}

impl RequestedPurpose {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Permitted(purpose) => purpose.as_str(),
            Self::Prohibited(prohibited) => prohibited.as_str(),
        }
    }
}

impl From<Scope> for RequestedScope {
    fn from(scope: Scope) -> Self {
        Self::Data(scope)
    }
}

impl From<Purpose> for RequestedPurpose {
    fn from(purpose: Purpose) -> Self {
        Self::Permitted(purpose)
    }
}

text_wire!(RequestedScope);
text_wire!(RequestedPurpose);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prohibited_words_parse_as_prohibited_and_never_as_grantable() {
        for prohibited in ProhibitedUse::ALL {
            let word = prohibited.as_str();
            assert_eq!(word.parse(), Ok(RequestedPurpose::Prohibited(prohibited)));
            assert_eq!(word.parse(), Ok(RequestedScope::Prohibited(prohibited)));
            assert_eq!(
                word.parse::<Purpose>(),
                Err(VocabError::Prohibited(prohibited))
            );
            assert_eq!(
                word.parse::<Scope>(),
                Err(VocabError::Prohibited(prohibited))
            );
            let json = format!("\"{word}\"");
            let error = serde_json::from_str::<Purpose>(&json).unwrap_err();
            assert!(error.to_string().contains("prohibited use"), "{error}");
        }
    }

    #[test]
    fn wire_names_round_trip() {
        for scope in Scope::ALL {
            let json = serde_json::to_string(&scope).unwrap();
            assert_eq!(serde_json::from_str::<Scope>(&json).unwrap(), scope);
        }
        for purpose in Purpose::ALL {
            let json = serde_json::to_string(&purpose).unwrap();
            assert_eq!(serde_json::from_str::<Purpose>(&json).unwrap(), purpose);
        }
        assert_eq!(
            serde_json::to_string(&Purpose::CustomerService).unwrap(),
            "\"customer_service\""
        );
    }

    #[test]
    fn unknown_words_are_named_in_the_error() {
        assert_eq!(
            "Balance".parse::<Scope>(),
            Err(VocabError::UnknownScope("Balance".into()))
        );
        assert_eq!(
            "".parse::<Purpose>(),
            Err(VocabError::UnknownPurpose(String::new()))
        );
        assert!(serde_json::from_str::<Scope>("42").is_err());
    }
}
