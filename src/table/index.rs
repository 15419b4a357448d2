//! An index of positions by hash, for the consent table and every [`Table`](super::Table): open
//! addressing with linear probing, each slot 8 bytes holding the position and the high half of
//! its key's hash.
//!
//! A general hash table (hashbrown's, the standard library's) keeps its control bytes apart from
//! its slots: finding a key among a million then fetches two lines from memory (a control group,
//! then the slot) before the record itself. Here a slot carries what the control byte would (a
//! part of the hash, to skip other keys' records without fetching them), so a lookup fetches one
//! line of slots and then the record. The table is at most half full, so a lookup reads about
//! one and a half slots on average, almost always within one line.
//!
//! The index never reads keys itself: the caller hashes (with its randomly seeded hasher, so
//! that nobody outside can choose keys that collide) and says which position holds the key it
//! is after. Removal shifts the slots after the removed one back (Knuth's algorithm R), so no
//! tombstones accumulate.

/// No position (an empty slot's).
const EMPTY: u32 = u32::MAX;

/// The fewest slots a table that holds anything has.
const MIN_SLOTS: usize = 16;

/// Positions by the hash of their key.
#[derive(Debug, Default, Clone)]
pub(crate) struct Index {
    /// Each slot: the high 32 bits of the hash, then the position (`EMPTY` if none). A power of
    /// two long, or empty.
    slots: Vec<u64>,
    len: usize,
}

fn slot(tag: u32, at: u32) -> u64 {
    (u64::from(tag) << 32) | u64::from(at)
}

fn tag_of(slot: u64) -> u32 {
    (slot >> 32) as u32
}

fn at_of(slot: u64) -> u32 {
    slot as u32
}

fn tag(hash: u64) -> u32 {
    (hash >> 32) as u32
}

const VACANT: u64 = EMPTY as u64;

impl Index {
    /// How many positions it holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Where a slot with this tag is placed when nothing is in the way.
    fn home(&self, tag: u32) -> usize {
        tag as usize & self.mask()
    }

    /// The index of the slot holding a position for which `is` holds, among those whose key has
    /// `hash`.
    fn slot_of(&self, hash: u64, mut is: impl FnMut(u32) -> bool) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let (tag, mask) = (tag(hash), self.mask());
        let mut i = self.home(tag);
        // At most every slot once: the table always has an empty one, but bound it regardless.
        for _ in 0..self.slots.len() {
            let found = *self.slots.get(i)?;
            if at_of(found) == EMPTY {
                return None;
            }
            if tag_of(found) == tag && is(at_of(found)) {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// The position, among those whose key has `hash`, for which `is` holds (the caller compares
    /// the key at that position with the one it looks for).
    pub(crate) fn find(&self, hash: u64, is: impl FnMut(u32) -> bool) -> Option<u32> {
        self.slot_of(hash, is)
            .and_then(|i| self.slots.get(i))
            .map(|&found| at_of(found))
    }

    /// Adds `at` under `hash` (the caller knows no position under it holds the same key); false
    /// (and nothing added) if `at` is `u32::MAX`, which marks an empty slot.
    #[must_use]
    pub(crate) fn insert(&mut self, hash: u64, at: u32) -> bool {
        if at == EMPTY {
            return false;
        }
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        self.place(slot(tag(hash), at));
        self.len += 1;
        true
    }

    /// Puts a slot in the first empty place from its home (there is one: at most half full).
    fn place(&mut self, new: u64) {
        let mask = self.mask();
        let mut i = self.home(tag_of(new));
        for _ in 0..self.slots.len() {
            match self.slots.get_mut(i) {
                Some(place) if at_of(*place) == EMPTY => {
                    *place = new;
                    return;
                }
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Doubles the slots (the tags say where each goes: no key is read again).
    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, vec![VACANT; size]);
        for held in old {
            if at_of(held) != EMPTY {
                self.place(held);
            }
        }
    }

    /// Replaces the position `old` under `hash` with `new`; whether `old` was there.
    pub(crate) fn replace(&mut self, hash: u64, old: u32, new: u32) -> bool {
        if new == EMPTY {
            return false;
        }
        match self
            .slot_of(hash, |at| at == old)
            .and_then(|i| self.slots.get_mut(i))
        {
            Some(place) => {
                *place = slot(tag(hash), new);
                true
            }
            None => false,
        }
    }

    /// Removes the position `at` under `hash`; whether it was there.
    pub(crate) fn remove(&mut self, hash: u64, at: u32) -> bool {
        let Some(mut hole) = self.slot_of(hash, |found| found == at) else {
            return false;
        };
        let mask = self.mask();
        // Algorithm R: move back each following slot that may sit in the hole (its home is not
        // cyclically within (hole, next]), until an empty slot.
        let mut next = hole;
        for _ in 0..self.slots.len() {
            next = (next + 1) & mask;
            let Some(&moving) = self.slots.get(next) else {
                break;
            };
            if at_of(moving) == EMPTY {
                break;
            }
            let home = self.home(tag_of(moving));
            let stays = if hole <= next {
                hole < home && home <= next
            } else {
                hole < home || home <= next
            };
            if !stays {
                if let Some(place) = self.slots.get_mut(hole) {
                    *place = moving;
                }
                hole = next;
            }
        }
        if let Some(place) = self.slots.get_mut(hole) {
            *place = VACANT;
        }
        self.len -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    /// Operations on keys 0..64 whose hashes are chosen to collide often: few distinct tags, so
    /// runs of probes form, wrap around the end of the slots and are cut by removals.
    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8),
        Remove(u8),
        Move(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..64).prop_map(Op::Insert),
            2 => (0u8..64).prop_map(Op::Remove),
            1 => (0u8..64).prop_map(Op::Move),
        ]
    }

    /// A hash for key `k` that collides with others: few distinct values, some near the top of
    /// the slots so that runs wrap.
    fn hash(k: u8, spread: u64) -> u64 {
        let tag = (u64::from(k) % spread).wrapping_mul(0x9E37_79B9) ^ u64::from(k % 3) << 31;
        (tag << 32) | u64::from(k)
    }

    proptest! {
        /// Any sequence of inserts, removals and moves leaves the index finding exactly what a
        /// plain map holds, with the count right.
        #[test]
        fn the_index_agrees_with_a_plain_map(
            ops in proptest::collection::vec(op(), 1..300),
            spread in 1u64..20,
        ) {
            let mut index = Index::default();
            // key -> position; positions are key * 1000 + a generation.
            let mut model: HashMap<u8, u32> = HashMap::new();
            let mut generation = 0u32;
            for op in ops {
                generation += 1;
                match op {
                    Op::Insert(k) => {
                        if let std::collections::hash_map::Entry::Vacant(entry) = model.entry(k) {
                            let at = u32::from(k) * 1000 + generation % 1000;
                            prop_assert!(index.insert(hash(k, spread), at));
                            entry.insert(at);
                        }
                    }
                    Op::Remove(k) => {
                        let was = model.remove(&k);
                        let at = was.unwrap_or(u32::from(k) * 1000);
                        prop_assert_eq!(index.remove(hash(k, spread), at), was.is_some());
                    }
                    Op::Move(k) => {
                        if let Some(at) = model.get_mut(&k) {
                            let new = u32::from(k) * 1000 + generation % 1000;
                            prop_assert!(index.replace(hash(k, spread), *at, new));
                            *at = new;
                        }
                    }
                }
                prop_assert_eq!(index.len(), model.len());
                for k in 0..64u8 {
                    let found = index.find(hash(k, spread), |at| at / 1000 == u32::from(k));
                    prop_assert_eq!(found, model.get(&k).copied(), "key {}", k);
                }
            }
        }
    }

    #[test]
    fn grows_keeping_every_position_and_never_fills() {
        let mut index = Index::default();
        for at in 0..10_000u32 {
            let h = u64::from(at).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            assert!(index.insert(h, at));
            assert!(index.len() * 2 <= index.slots.len());
        }
        for at in 0..10_000u32 {
            let h = u64::from(at).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            assert_eq!(index.find(h, |found| found == at), Some(at));
        }
        assert!(!index.insert(0, EMPTY));
        assert_eq!(Index::default().find(0, |_| true), None);
    }
}
