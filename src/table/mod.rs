//! Tables for what a decision looks up among millions: few lines fetched from memory a lookup,
//! and secrets wiped when they leave memory.
//!
//! - [`Index`]: positions by hash, each 8-byte slot carrying part of the hash, so that a lookup
//!   fetches one line of slots and then the entry (a general hash table fetches its control
//!   bytes, then its slot).
//! - [`Text`]: text kept in place when short, so that comparing an entry's key fetches the entry
//!   alone.
//! - [`Table`]: entries kept in place, found by a key of bytes they hold, through an [`Index`].
//!   When the entries outgrow their allocation they are copied to a larger one and the old ones
//!   dropped, not moved: an entry that wipes a secret as it drops (a subject's key) leaves no copy
//!   behind in freed memory, as a general hash table's growth would.

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
                    // Copied, and the old entries dropped, rather than moved.
                    let mut grown = Vec::with_capacity((self.entries.len() * 2).max(16));
                    grown.extend(self.entries.iter().cloned());
                    self.entries = grown;
                }
                self.entries.push(Some(entry));
                at
            }
        };
        if self.index.insert(hash, at) {
            Ok(true)
        } else {
            // Unreachable (`at` is never the reserved position): take the entry back out.
            self.entries.get_mut(at as usize).map(Option::take);
            self.free.push(at);
            Err(Full)
        }
    }

    /// Removes the entry with this key; the entry, if there was one.
    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<T> {
        let hash = self.hash(key);
        let at = self.position(key, hash)?;
        self.index.remove(hash, at);
        let entry = self.entries.get_mut(at as usize).and_then(Option::take)?;
        self.free.push(at);
        Some(entry)
    }
}

#[cfg(test)]
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
                1 => {
                    let removed = table.remove(key.as_bytes()).map(|entry| entry.value);
                    prop_assert_eq!(removed, model.remove(&key));
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

    /// Growing copies the entries and drops the old ones (a wiping entry leaves no copy).
    #[test]
    fn growing_drops_the_old_entries() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static DROPPED: AtomicUsize = AtomicUsize::new(0);
        #[derive(Clone)]
        struct Counted(Text<8>);
        impl Drop for Counted {
            fn drop(&mut self) {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
        impl Keyed for Counted {
            fn key(&self) -> &[u8] {
                self.0.bytes()
            }
        }
        let mut table = Table::<Counted>::default();
        for n in 0..17 {
            assert_eq!(table.insert(Counted(Text::new(&format!("{n}")))), Ok(true));
        }
        // Growing from 16 to 32 dropped the 16 old copies; the 17 held are alive.
        assert_eq!(DROPPED.load(Ordering::Relaxed), 16);
        assert_eq!(table.len(), 17);
        drop(table);
        assert_eq!(DROPPED.load(Ordering::Relaxed), 33);
    }
}
