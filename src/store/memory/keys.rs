//! Subjects' keys in the memory store.
//!
//! A decision reads its subject's key, and when the subject is one among millions each line it
//! fetches from memory is a wait. A map from a subject's id to its record fetched three: the
//! map's control bytes, its slot, and the id's text to compare. Here a [`Table`] finds an entry
//! holding the key and, when short, the subject's id itself: one line of index and one entry.
//! A removed entry's key is wiped where it sat, and the table's growth leaves no copy behind.

use time::OffsetDateTime;

use crate::ids::SubjectId;
use crate::privacy::{SubjectKey, SubjectKeyRecord};
use crate::store::StoreError;
use crate::table::{Keyed, Table, Text};

/// Bytes of a subject's id kept in its entry (a UUID's 36 fit).
const SUBJECT_INLINE: usize = 46;

#[derive(Clone)]
struct Entry {
    subject: Text<SUBJECT_INLINE>,
    key: SubjectKey,
    created_at: OffsetDateTime,
}

impl Keyed for Entry {
    fn key(&self) -> &[u8] {
        self.subject.bytes()
    }

    fn relocated(&mut self) -> Self {
        Self {
            subject: self.subject.take(),
            key: self.key.clone(),
            created_at: self.created_at,
        }
    }
}

/// Subjects' keys, by subject.
#[derive(Debug, Default)]
pub(super) struct SubjectKeys(Table<Entry>);

impl SubjectKeys {
    /// The subject's key.
    pub(super) fn key(&self, subject: &SubjectId) -> Option<&SubjectKey> {
        self.0
            .get(subject.as_str().as_bytes())
            .map(|entry| &entry.key)
    }

    /// Stores a subject's key; false (and nothing changed) if the subject already has one.
    ///
    /// # Errors
    /// `Unavailable` when it holds as many keys as it can index.
    pub(super) fn insert(&mut self, record: SubjectKeyRecord) -> Result<bool, StoreError> {
        self.0
            .insert(Entry {
                subject: Text::new(record.subject.as_str()),
                key: record.key,
                created_at: record.created_at,
            })
            .map_err(|_| {
                StoreError::Unavailable(
                    "the memory store holds as many subject keys as it can index".into(),
                )
            })
    }

    /// Removes a subject's key; its record, if it had one.
    pub(super) fn remove(&mut self, subject: &SubjectId) -> Option<SubjectKeyRecord> {
        let entry = self.0.remove(subject.as_str().as_bytes())?;
        Some(SubjectKeyRecord {
            subject: subject.clone(),
            key: entry.key,
            created_at: entry.created_at,
        })
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails by panicking")]
mod tests {
    use super::*;
    use crate::testing::SeededRandom;

    #[test]
    fn a_key_is_found_by_its_subject_short_or_long_and_removed_whole() {
        let mut keys = SubjectKeys::default();
        let record = |subject: &str, seed: u64| SubjectKeyRecord {
            subject: subject.parse().unwrap(),
            key: SubjectKey::generate(&SeededRandom::new(seed)).unwrap(),
            created_at: OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(7),
        };
        let long = "s".repeat(SUBJECT_INLINE + 1);
        let (a, b) = (record("alice", 1), record(&long, 2));
        assert!(keys.insert(a.clone()).unwrap());
        assert!(keys.insert(b.clone()).unwrap());
        assert!(!keys.insert(record("alice", 3)).unwrap());
        assert_eq!(keys.key(&a.subject), Some(&a.key));
        assert_eq!(keys.key(&b.subject), Some(&b.key));
        assert_eq!(keys.key(&"alic".parse().unwrap()), None);
        assert_eq!(keys.remove(&a.subject), Some(a.clone()));
        assert_eq!(keys.key(&a.subject), None);
        assert_eq!(keys.remove(&a.subject), None);
        assert_eq!(keys.key(&b.subject), Some(&b.key));
    }
}
