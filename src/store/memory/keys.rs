//! Subjects' keys in the memory store.
//!
//! A decision reads its subject's key, and when the subject is one among millions each line it
//! fetches from memory is a wait. A map from a subject's id to its record fetched three: the
//! map's control bytes, its slot, and the id's text to compare. Here an [`Index`] slot (which
//! carries part of the hash) leads to an entry holding the key and, when short, the subject's id
//! itself: one line of index and one entry.
//!
//! The entries are wiped when they go: a removed entry's key is wiped as it drops, and when the
//! entries outgrow their allocation they are copied to a larger one and the old ones dropped
//! (so wiped), not moved with their bytes left behind in freed memory.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use time::OffsetDateTime;

use super::index::Index;
use super::text::Text;
use crate::ids::SubjectId;
use crate::privacy::{SubjectKey, SubjectKeyRecord};
use crate::store::StoreError;

/// Bytes of a subject's id kept in its entry (a UUID's 36 fit).
const SUBJECT_INLINE: usize = 46;

#[derive(Clone)]
struct Entry {
    subject: Text<SUBJECT_INLINE>,
    key: SubjectKey,
    created_at: OffsetDateTime,
}

/// Subjects' keys, by subject (hashed by `H`: randomly seeded but in tests).
#[derive(Default)]
pub(super) struct SubjectKeys<H = RandomState> {
    index: Index,
    entries: Vec<Option<Entry>>,
    /// Entries' places free to reuse.
    free: Vec<u32>,
    hasher: H,
}

impl<H> std::fmt::Debug for SubjectKeys<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubjectKeys(..)")
    }
}

fn damaged() -> StoreError {
    StoreError::Corrupt(
        "the memory store's subject keys are damaged (an index does not agree)".into(),
    )
}

impl<H: BuildHasher> SubjectKeys<H> {
    fn hash(&self, subject: &str) -> u64 {
        self.hasher.hash_one(subject.as_bytes())
    }

    fn entry(&self, at: u32) -> Option<&Entry> {
        self.entries.get(at as usize).and_then(Option::as_ref)
    }

    fn find(&self, subject: &str, hash: u64) -> Option<u32> {
        self.index.find(hash, |at| {
            self.entry(at)
                .is_some_and(|entry| entry.subject.bytes() == subject.as_bytes())
        })
    }

    /// The subject's key.
    pub(super) fn key(&self, subject: &SubjectId) -> Option<&SubjectKey> {
        let subject = subject.as_str();
        self.find(subject, self.hash(subject))
            .and_then(|at| self.entry(at))
            .map(|entry| &entry.key)
    }

    /// Stores a subject's key; false (and nothing changed) if the subject already has one.
    ///
    /// # Errors
    /// `Unavailable` when it holds as many keys as it can index.
    pub(super) fn insert(&mut self, record: SubjectKeyRecord) -> Result<bool, StoreError> {
        let subject = record.subject.as_str();
        let hash = self.hash(subject);
        if self.find(subject, hash).is_some() {
            return Ok(false);
        }
        let entry = Entry {
            subject: Text::new(subject),
            key: record.key,
            created_at: record.created_at,
        };
        let at = match self.free.pop() {
            Some(at) => {
                *self.entries.get_mut(at as usize).ok_or_else(damaged)? = Some(entry);
                at
            }
            None => {
                let at = u32::try_from(self.entries.len())
                    .ok()
                    .filter(|&at| at != u32::MAX)
                    .ok_or_else(|| {
                        StoreError::Unavailable(
                            "the memory store holds as many subject keys as it can index".into(),
                        )
                    })?;
                if self.entries.len() == self.entries.capacity() {
                    // Copied, and the old entries dropped (so wiped), rather than moved.
                    let mut grown = Vec::with_capacity((self.entries.len() * 2).max(16));
                    grown.extend(self.entries.iter().cloned());
                    self.entries = grown;
                }
                self.entries.push(Some(entry));
                at
            }
        };
        if !self.index.insert(hash, at) {
            return Err(damaged());
        }
        Ok(true)
    }

    /// Removes a subject's key; its record, if it had one.
    pub(super) fn remove(&mut self, subject: &SubjectId) -> Option<SubjectKeyRecord> {
        let text = subject.as_str();
        let hash = self.hash(text);
        let at = self.find(text, hash)?;
        self.index.remove(hash, at);
        let entry = self.entries.get_mut(at as usize).and_then(Option::take)?;
        self.free.push(at);
        Some(SubjectKeyRecord {
            subject: subject.clone(),
            key: entry.key.clone(),
            created_at: entry.created_at,
        })
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails by panicking")]
mod tests {
    use std::collections::HashMap;
    use std::hash::BuildHasherDefault;

    use proptest::prelude::*;

    use super::*;
    use crate::testing::SeededRandom;

    fn record(subject: &str, seed: u64) -> SubjectKeyRecord {
        SubjectKeyRecord {
            subject: subject.parse().unwrap(),
            key: SubjectKey::generate(&SeededRandom::new(seed)).unwrap(),
            created_at: OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(seed as i64),
        }
    }

    proptest! {
        /// Inserts and removals of subjects with short and long ids (places reused) leave the
        /// keys exactly what a plain map holds; also when every id hashes alike, so that only
        /// the comparison of ids tells subjects apart.
        #[test]
        fn the_keys_agree_with_a_plain_map(
            ops in proptest::collection::vec((any::<bool>(), 0u8..40), 1..200),
            collide in any::<bool>(),
        ) {
            if collide {
                run(SubjectKeys::<BuildHasherDefault<Collide>>::default(), ops)?;
            } else {
                run(SubjectKeys::<RandomState>::default(), ops)?;
            }
        }
    }

    /// A hasher under which every id collides.
    #[derive(Default)]
    struct Collide;

    impl std::hash::Hasher for Collide {
        fn finish(&self) -> u64 {
            0x0123_4567_89ab_cdef
        }
        fn write(&mut self, _: &[u8]) {}
    }

    fn run<H: BuildHasher>(
        mut keys: SubjectKeys<H>,
        ops: Vec<(bool, u8)>,
    ) -> Result<(), TestCaseError> {
        let mut model: HashMap<String, SubjectKeyRecord> = HashMap::new();
        let name = |n: u8| {
            if n.is_multiple_of(2) {
                format!("subject-{n}")
            } else {
                format!("subject-{n}-{}", "z".repeat(SUBJECT_INLINE))
            }
        };
        for (seed, (insert, n)) in ops.into_iter().enumerate() {
            let subject = name(n);
            if insert {
                let new = record(&subject, seed as u64);
                let fresh = !model.contains_key(&subject);
                prop_assert_eq!(keys.insert(new.clone()).unwrap(), fresh);
                model.entry(subject).or_insert(new);
            } else {
                let id: SubjectId = subject.parse().unwrap();
                prop_assert_eq!(keys.remove(&id), model.remove(&subject));
            }
            for n in 0..40 {
                let id: SubjectId = name(n).parse().unwrap();
                prop_assert_eq!(keys.key(&id), model.get(id.as_str()).map(|r| &r.key));
            }
        }
        Ok(())
    }
}
