//! Text kept in the structure that holds it when it is short, else in an allocation of its own.
//!
//! A record that finds its key by comparing text pays, when it is one among millions, a fetch
//! from memory for the record and another for a string held apart. Text of at most `N` bytes is
//! kept in the record itself (as a grant's ids usually are); longer text in an exactly sized
//! allocation, as before.

/// Up to `N` bytes of text in place, or longer text apart.
#[derive(Debug, Clone)]
pub(super) enum Text<const N: usize> {
    /// In place: the first `len` bytes.
    Inline { len: u8, bytes: [u8; N] },
    /// Too long to be kept in place.
    Spilled(Box<str>),
}

impl<const N: usize> Text<N> {
    /// The text, in place if it fits.
    pub(super) fn new(text: &str) -> Self {
        let mut bytes = [0u8; N];
        match (bytes.get_mut(..text.len()), u8::try_from(text.len())) {
            (Some(inline), Ok(len)) => {
                inline.copy_from_slice(text.as_bytes());
                Self::Inline { len, bytes }
            }
            _ => Self::Spilled(text.into()),
        }
    }

    /// Whether it is kept in place.
    #[cfg(test)]
    pub(super) fn is_inline(&self) -> bool {
        matches!(self, Self::Inline { .. })
    }

    /// Its bytes.
    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Self::Spilled(text) => text.as_bytes(),
        }
    }

    /// The whole text; `None` if it is not UTF-8 (never, unless damaged).
    pub(super) fn as_str(&self) -> Option<&str> {
        match self {
            Self::Inline { .. } => std::str::from_utf8(self.bytes()).ok(),
            Self::Spilled(text) => Some(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_in_place_long_text_apart_both_read_alike() {
        for text in [
            "",
            "a",
            "cns_0123456789",
            &"x".repeat(8),
            &"y".repeat(9),
            "é-ü",
        ] {
            let kept = Text::<8>::new(text);
            assert_eq!(kept.is_inline(), text.len() <= 8, "{text}");
            assert_eq!(kept.as_str(), Some(text));
            assert_eq!(kept.bytes(), text.as_bytes());
        }
    }
}
