//! Text kept in the structure that holds it when short, else in an allocation of its own.
//!
//! A record that finds its key by comparing text pays, when it is one among millions, a fetch
//! from memory for the record and another for a string held apart. Text of at most `N` bytes is
//! kept in the record itself (as a grant's ids usually are); longer text in an exactly sized
//! allocation. Either way it reads back as `&str` at no cost (no check as UTF-8 on each read).

use arrayvec::ArrayString;

/// Up to `N` bytes of text in place, or longer text apart.
#[derive(Debug, Clone)]
pub(crate) enum Text<const N: usize> {
    /// In place.
    Inline(ArrayString<N>),
    /// Too long to be kept in place.
    Spilled(Box<str>),
}

impl<const N: usize> Text<N> {
    /// The text, in place if it fits.
    pub(crate) fn new(text: &str) -> Self {
        match ArrayString::from(text) {
            Ok(inline) => Self::Inline(inline),
            Err(_) => Self::Spilled(text.into()),
        }
    }

    /// The text, leaving empty text in its place (nothing allocated, nothing copied apart).
    pub(crate) fn take(&mut self) -> Self {
        std::mem::replace(self, Self::Inline(ArrayString::new()))
    }

    /// Whether it is kept in place.
    #[cfg(test)]
    pub(crate) fn is_inline(&self) -> bool {
        matches!(self, Self::Inline(_))
    }

    /// The text.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Self::Inline(text) => text,
            Self::Spilled(text) => text,
        }
    }

    /// Its bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.as_str().as_bytes()
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
            assert_eq!(kept.as_str(), text);
            assert_eq!(kept.bytes(), text.as_bytes());
            let mut left = kept.clone();
            let taken = left.take();
            assert_eq!((taken.as_str(), left.as_str()), (text, ""));
            assert_eq!(taken.is_inline(), kept.is_inline());
        }
    }
}
