//! Tables for what a decision looks up among millions: few lines fetched from memory a lookup,
//! and secrets wiped when they leave memory.
//!
//! - [`Index`]: positions by hash, each 8-byte slot carrying part of the hash, so that a lookup
//!   fetches one line of slots and then the entry (a general hash table fetches its control
//!   bytes, then its slot).
//! - [`Text`]: text kept in place when short, so that comparing an entry's key fetches the entry
//!   alone.
//! - [`Table`]: entries kept in place, found by a key of bytes they hold, through an [`Index`].
//!   An entry that wipes a secret as it drops (a subject's key) leaves no copy of it behind in the
//!   table's memory, as a general hash table would: a removed entry is dropped where it sits (the
//!   caller gets a copy), and when the entries outgrow their allocation each is relocated (a copy
//!   of what it holds in place, what it holds apart handed over, see [`Keyed::relocated`]) and
//!   the old one dropped where it sits, not moved.
//!
//! What a table cannot wipe is what Rust's moves leave: an entry passed by value to
//! [`Table::insert`], or a copy returned by [`Table::remove`], may leave its bytes in a stack frame
//! until it is overwritten.

mod index;
mod text;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

pub(crate) use index::Index;
pub(crate) use text::Text;

/// An entry of a [`Table`]: the key it is found by.
pub(crate) trait Keyed: Clone {
    /// The key's bytes.
    fn key(&self) -> &[u8];

    /// The entry for a larger allocation, as the table grows; `self` is dropped right after
    /// (and so wipes what it holds in place). A copy by default; an entry holding text apart
    /// hands it over instead of copying it (a table's growth then allocates nothing per entry).
    fn relocated(&mut self) -> Self {
        self.clone()
    }
}

/// The table holds as many entries as it can index (about four thousand million).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

/// Entries by key, hashed by `H` (randomly seeded but in tests).
#[derive(Clone)]
pub(crate) struct Table<T, H = RandomState> {
    index: Index,
    entries: Vec<Option<T>>,
    /// Places free to reuse.
    free: Vec<u32>,
    hasher: H,
}

impl<T, H: Default> Default for Table<T, H> {
    fn default() -> Self {
        Self {
            index: Index::default(),
            entries: Vec::new(),
            free: Vec::new(),
            hasher: H::default(),
        }
    }
}

impl<T, H> std::fmt::Debug for Table<T, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Entries may hold secrets: their number only.
        f.debug_struct("Table")
            .field("len", &(self.entries.len() - self.free.len()))
            .finish_non_exhaustive()
    }
}

impl<T: Keyed, H: BuildHasher> Table<T, H> {
    /// How many entries it holds.
    pub(crate) fn len(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn entry(&self, at: u32) -> Option<&T> {
        self.entries.get(at as usize).and_then(Option::as_ref)
    }

    fn position(&self, key: &[u8], hash: u64) -> Option<u32> {
        self.index.find(hash, |at| {
            self.entry(at).is_some_and(|entry| entry.key() == key)
        })
    }

    /// The entry with this key.
    pub(crate) fn get(&self, key: &[u8]) -> Option<&T> {
        self.position(key, self.hash(key))
            .and_then(|at| self.entry(at))
    }

    /// The entry with this key, to change (not its key).
    pub(crate) fn get_mut(&mut self, key: &[u8]) -> Option<&mut T> {
        let at = self.position(key, self.hash(key))?;
        self.entries.get_mut(at as usize).and_then(Option::as_mut)
    }

    /// Adds an entry; false (and nothing changed) if one with its key is there.
    ///
    /// # Errors
    /// [`Full`] when it holds as many entries as it can index.
    pub(crate) fn insert(&mut self, entry: T) -> Result<bool, Full> {
        let hash = self.hash(entry.key());
        if self.position(entry.key(), hash).is_some() {
            return Ok(false);
        }
        let at = match self.free.pop() {
            Some(at) => {
                *self.entries.get_mut(at as usize).ok_or(Full)? = Some(entry);
                at
            }
            None => {
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
                            .map(|entry| entry.as_mut().map(Keyed::relocated)),
                    );
                    self.entries = grown;
                }
                self.entries.push(Some(entry));
                at
            }
        };
        if self.index.insert(hash, at) {
            Ok(true)
        } else {
            // Unreachable (`at` is never the reserved position): the entry dropped again.
            if let Some(slot) = self.entries.get_mut(at as usize) {
                *slot = None;
            }
            self.free.push(at);
            Err(Full)
        }
    }

    /// Removes the entry with this key; a copy of it, if there was one (the entry itself is
    /// dropped where it sat).
    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<T> {
        let (at, slot) = self.unlink(key)?;
        let entry = slot.clone();
        *slot = None;
        self.free.push(at);
        entry
    }

    /// Removes the entry with this key, dropping it where it sat; whether there was one.
    pub(crate) fn discard(&mut self, key: &[u8]) -> bool {
        let Some((at, slot)) = self.unlink(key) else {
            return false;
        };
        *slot = None;
        self.free.push(at);
        true
    }

    /// The place of the entry with this key, taken out of the index.
    fn unlink(&mut self, key: &[u8]) -> Option<(u32, &mut Option<T>)> {
        let hash = self.hash(key);
        let at = self.position(key, hash)?;
        self.index.remove(hash, at);
        Some((at, self.entries.get_mut(at as usize)?))
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails by panicking")]
mod tests {
    use std::collections::HashMap;
    use std::hash::BuildHasherDefault;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    struct Entry {
        key: Text<12>,
        value: u64,
    }

    impl Keyed for Entry {
        fn key(&self) -> &[u8] {
            self.key.bytes()
        }
    }

    /// A hasher under which every key collides: only comparing keys tells entries apart.
    #[derive(Default)]
    struct Collide;

    impl std::hash::Hasher for Collide {
        fn finish(&self) -> u64 {
            0x0123_4567_89ab_cdef
        }
        fn write(&mut self, _: &[u8]) {}
    }

    /// Keys short and long, some prefixes of others.
    fn name(n: u8) -> String {
        if n.is_multiple_of(2) {
            format!("k{n}")
        } else {
            format!("k{n}-{}", "z".repeat(16))
        }
    }

    fn run<H: BuildHasher>(
        mut table: Table<Entry, H>,
        ops: Vec<(u8, u8)>,
    ) -> Result<(), TestCaseError> {
        let mut model: HashMap<String, u64> = HashMap::new();
        for (step, (op, n)) in ops.into_iter().enumerate() {
            let key = name(n);
            match op % 3 {
                0 => {
                    let fresh = !model.contains_key(&key);
                    let entry = Entry {
                        key: Text::new(&key),
                        value: step as u64,
                    };
                    prop_assert_eq!(table.insert(entry), Ok(fresh));
                    model.entry(key).or_insert(step as u64);
                }
                1 if step % 2 == 0 => {
                    let removed = table.remove(key.as_bytes()).map(|entry| entry.value);
                    prop_assert_eq!(removed, model.remove(&key));
                }
                1 => {
                    prop_assert_eq!(table.discard(key.as_bytes()), model.remove(&key).is_some());
                }
                _ => {
                    if let Some(entry) = table.get_mut(key.as_bytes()) {
                        entry.value += 1000;
                    }
                    if let Some(value) = model.get_mut(&key) {
                        *value += 1000;
                    }
                }
            }
            prop_assert_eq!(table.len(), model.len());
            for n in 0..40 {
                let key = name(n);
                let found = table.get(key.as_bytes()).map(|entry| entry.value);
                prop_assert_eq!(found, model.get(&key).copied(), "{}", key);
            }
        }
        Ok(())
    }

    proptest! {
        /// Inserts, removals and changes (places reused) leave the table holding exactly what a
        /// plain map would; also when every key hashes alike.
        #[test]
        fn the_table_agrees_with_a_plain_map(
            ops in proptest::collection::vec((any::<u8>(), 0u8..40), 1..200),
            collide in any::<bool>(),
        ) {
            if collide {
                run(Table::<Entry, BuildHasherDefault<Collide>>::default(), ops)?;
            } else {
                run(Table::<Entry, RandomState>::default(), ops)?;
            }
        }
    }

    /// An entry that counts its drops and copies; relocated by a copy, or (`hand_over`) by a new
    /// entry made without one.
    struct Counted {
        key: Text<8>,
        hand_over: bool,
        drops: std::rc::Rc<std::cell::Cell<usize>>,
        copies: std::rc::Rc<std::cell::Cell<usize>>,
    }

    impl Counted {
        fn made(&self) -> Self {
            Self {
                key: Text::new(self.key.as_str()),
                hand_over: self.hand_over,
                drops: self.drops.clone(),
                copies: self.copies.clone(),
            }
        }
    }

    impl Clone for Counted {
        fn clone(&self) -> Self {
            self.copies.set(self.copies.get() + 1);
            self.made()
        }
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            self.drops.set(self.drops.get() + 1);
        }
    }

    impl Keyed for Counted {
        fn key(&self) -> &[u8] {
            self.key.bytes()
        }
        fn relocated(&mut self) -> Self {
            if self.hand_over {
                self.made()
            } else {
                self.clone()
            }
        }
    }

    /// A table of counted entries and the counts: (drops, copies).
    fn counted(
        hand_over: bool,
    ) -> (
        Table<Counted>,
        impl Fn() -> (usize, usize),
        impl Fn(&str) -> Counted,
    ) {
        let drops = std::rc::Rc::new(std::cell::Cell::new(0));
        let copies = std::rc::Rc::new(std::cell::Cell::new(0));
        let counts = {
            let (drops, copies) = (drops.clone(), copies.clone());
            move || (drops.get(), copies.get())
        };
        let entry = move |key: &str| Counted {
            key: Text::new(key),
            hand_over,
            drops: drops.clone(),
            copies: copies.clone(),
        };
        (Table::default(), counts, entry)
    }

    /// Growing relocates each entry (a copy by default, none when the entry hands over what it
    /// holds) and drops the old one where it sat: a wiping entry leaves no copy behind.
    #[test]
    fn growing_relocates_and_drops_the_old_entries() {
        for hand_over in [false, true] {
            let (mut table, counts, entry) = counted(hand_over);
            for n in 0..17 {
                assert_eq!(table.insert(entry(&format!("{n}"))), Ok(true));
            }
            // Growing from 16 to 32 dropped the 16 old entries; the 17 held are alive.
            let copies = if hand_over { 0 } else { 16 };
            assert_eq!(counts(), (16, copies), "hand over: {hand_over}");
            assert_eq!(table.len(), 17);
            for n in 0..17 {
                assert!(table.get(format!("{n}").as_bytes()).is_some());
            }
            drop(table);
            assert_eq!(counts(), (33, copies));
        }
    }

    /// A removed entry is dropped where it sat (so a wiping entry leaves nothing in the table's
    /// memory), the caller holding a copy; a discarded one is dropped with no copy made.
    #[test]
    fn removing_drops_the_entry_where_it_sat() {
        let (mut table, counts, entry) = counted(false);
        for key in ["a", "b", "c"] {
            assert_eq!(table.insert(entry(key)), Ok(true));
        }
        let copy = table.remove(b"a").unwrap();
        assert_eq!(copy.key.as_str(), "a");
        assert_eq!(counts(), (1, 1), "dropped in place while the copy lives");
        drop(copy);
        assert_eq!(counts(), (2, 1));
        assert!(table.discard(b"b"));
        assert_eq!(counts(), (3, 1));
        assert!(!table.discard(b"b"));
        assert!(table.remove(b"b").is_none());
        assert_eq!(counts(), (3, 1));
        assert_eq!(table.len(), 1);
        assert!(table.get(b"c").is_some());
        // The places freed are reused.
        assert_eq!(table.insert(entry("d")), Ok(true));
        assert_eq!(table.insert(entry("e")), Ok(true));
        assert_eq!(table.entries.len(), 3);
    }
}
