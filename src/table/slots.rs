//! Entries in numbered places that stay theirs until removed, with what they hold wiped where it
//! sat: a removed entry is dropped in its place (the caller gets a copy), and when the entries
//! outgrow their allocation each is relocated and the old one dropped in its place, not moved.
//! What a [`Table`](super::Table) keeps its entries in, and the memory store its consents.

use super::Full;

/// An entry of [`Slots`]: how it moves to a larger allocation.
pub(crate) trait Relocate: Clone {
    /// The entry for a larger allocation, as the places grow; `self` is dropped right after
    /// (and so wipes what it holds in place). A copy by default; an entry holding text apart
    /// hands it over instead of copying it (growth then allocates nothing per entry).
    fn relocated(&mut self) -> Self {
        self.clone()
    }
}

/// Entries by place (a `u32`); a removed entry's place is reused.
#[derive(Clone)]
pub(crate) struct Slots<T> {
    entries: Vec<Option<T>>,
    /// Places free to reuse.
    free: Vec<u32>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> std::fmt::Debug for Slots<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Entries may hold secrets: their number only.
        f.debug_struct("Slots")
            .field("len", &(self.entries.len() - self.free.len()))
            .finish_non_exhaustive()
    }
}

impl<T: Relocate> Slots<T> {
    /// How many entries it holds.
    pub(crate) fn len(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    /// One more than the highest place ever taken (a bound on any walk from place to place).
    pub(crate) fn places(&self) -> usize {
        self.entries.len()
    }

    /// The entry at `at`.
    pub(crate) fn get(&self, at: u32) -> Option<&T> {
        self.entries.get(at as usize).and_then(Option::as_ref)
    }

    /// The entry at `at`, to change.
    pub(crate) fn get_mut(&mut self, at: u32) -> Option<&mut T> {
        self.entries.get_mut(at as usize).and_then(Option::as_mut)
    }

    /// Every entry, by place.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().flatten()
    }

    /// Puts `entry` in a free place, or a new one; its place.
    ///
    /// # Errors
    /// [`Full`] when every place a `u32` names but one (kept for "none") is taken.
    pub(crate) fn put(&mut self, entry: T) -> Result<u32, Full> {
        // A free place is always one of the entries' (were it not, it would be forgotten).
        if let Some(at) = self.free.pop()
            && let Some(place) = self.entries.get_mut(at as usize)
        {
            *place = Some(entry);
            return Ok(at);
        }
        let at = u32::try_from(self.entries.len())
            .ok()
            .filter(|&at| at != u32::MAX)
            .ok_or(Full)?;
        if self.entries.len() == self.entries.capacity() {
            // Relocated, and the old entries dropped where they sit, rather than moved.
            let mut grown = Vec::with_capacity((self.entries.len() * 2).max(16));
            grown.extend(
                self.entries
                    .iter_mut()
                    .map(|entry| entry.as_mut().map(Relocate::relocated)),
            );
            self.entries = grown;
        }
        self.entries.push(Some(entry));
        Ok(at)
    }

    /// Removes the entry at `at`; a copy of it, if there was one (the entry itself is dropped
    /// where it sat).
    pub(crate) fn take(&mut self, at: u32) -> Option<T> {
        let place = self.entries.get_mut(at as usize)?;
        let copy = place.clone()?;
        *place = None;
        self.free.push(at);
        Some(copy)
    }

    /// Removes the entry at `at`, dropping it where it sat; whether there was one.
    pub(crate) fn discard(&mut self, at: u32) -> bool {
        let Some(place) = self.entries.get_mut(at as usize) else {
            return false;
        };
        if place.is_none() {
            return false;
        }
        // Dropped in place by the assignment (`Option::take` would move it out first).
        *place = None;
        self.free.push(at);
        true
    }
}
