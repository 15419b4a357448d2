//! The in-memory store's consents, each one packed record.
//!
//! A broker may hold millions of consents, and a [`Consent`] as the rest of the crate uses it is
//! a tree of allocations: the struct itself (about 250 bytes), an `Arc<str>` per id, a slice per
//! account set, a box for the attestation id. Kept that way, a stored grant cost about 730 bytes
//! (issue 18 asks for at most 512). Here a consent is one [`Packed`] record: its times, sets and
//! counters as plain fields, the platform and holder as positions in small tables of the ids the
//! store already holds, and every other id (the consent's, the subject's, the accounts', the
//! attestation's) in one exactly sized string. A stored grant is then a slot of the slab and one
//! short allocation, plus its share of two hash tables of 4-byte slots.
//!
//! The table keeps:
//! - the records in a slab (`Vec` of slots; a removed record's slot is reused);
//! - an index by consent id and one by subject, each a hash table of slab positions keyed (with
//!   the standard library's randomly seeded SipHash, as the store's other tables) by text held in
//!   the records themselves;
//! - a subject's consents threaded through their records (each names the next), so the subject
//!   index holds one position per subject and no list.
//!
//! Decoding makes a [`Consent`] equal to the one stored, field for field.

use std::collections::hash_map::RandomState;
use std::fmt::Write as _;
use std::hash::BuildHasher;

use hashbrown::HashTable;
use time::{Duration, OffsetDateTime};

use crate::consent::{
    AccountSelection, Consent, ConsentRequest, ConsentState, Grant, RevocationReason, Revoker,
};
use crate::ids::{AccountId, ConsentId, HolderId, PlatformId, SubjectId};
use crate::privacy::{GrantPseudonyms, PSEUDONYM_BYTES, PseudonymBytes};
use crate::sets::{AccountSet, PurposeSet, ScopeSet};
use crate::store::StoreError;
use crate::table::Index;

/// No record (the end of a subject's thread).
const NONE: u32 = u32::MAX;

/// Ids shared by many consents, stored once: a consent holds their positions here.
#[derive(Debug)]
struct Names<T> {
    all: Vec<T>,
    index: HashTable<u32>,
}

impl<T> Default for Names<T> {
    fn default() -> Self {
        Self {
            all: Vec::new(),
            index: HashTable::new(),
        }
    }
}

/// An id kept in [`Names`].
trait Name: Clone {
    fn text(&self) -> &str;
    fn unshared(&self) -> Self;
}

impl Name for PlatformId {
    fn text(&self) -> &str {
        self.as_str()
    }
    fn unshared(&self) -> Self {
        PlatformId::unshared(self)
    }
}

impl Name for HolderId {
    fn text(&self) -> &str {
        self.as_str()
    }
    fn unshared(&self) -> Self {
        HolderId::unshared(self)
    }
}

impl<T: Name> Names<T> {
    fn position(&mut self, hasher: &RandomState, name: &T) -> Result<u32, StoreError> {
        let text = name.text();
        let hash = hasher.hash_one(text);
        let all = &self.all;
        if let Some(found) = self.index.find(hash, |&at| {
            all.get(at as usize).map(Name::text) == Some(text)
        }) {
            return Ok(*found);
        }
        let at = u32::try_from(self.all.len()).map_err(|_| full())?;
        self.all.push(name.clone());
        let all = &self.all;
        self.index.insert_unique(hash, at, |&at| {
            hasher.hash_one(all.get(at as usize).map_or("", Name::text))
        });
        Ok(at)
    }

    fn get(&self, at: u32) -> Result<T, StoreError> {
        self.all
            .get(at as usize)
            .map(Name::unshared)
            .ok_or_else(damaged)
    }
}

/// The consents of a [`MemoryStore`](super::MemoryStore).
#[derive(Debug, Default)]
pub(super) struct Consents {
    slab: Vec<Option<Packed>>,
    free: Vec<u32>,
    by_id: Index,
    /// A subject's first record.
    by_subject: Index,
    platforms: Names<PlatformId>,
    holders: Names<HolderId>,
    hasher: RandomState,
    /// The position the next new consent takes (oldest first).
    next_position: u64,
}

fn full() -> StoreError {
    StoreError::Unavailable("the memory store holds as many consents as it can index".into())
}

fn damaged() -> StoreError {
    StoreError::Corrupt(
        "the memory store's consent table is damaged (a record or an index does not agree)".into(),
    )
}

impl Consents {
    fn record(&self, at: u32) -> Option<&Packed> {
        self.slab.get(at as usize).and_then(Option::as_ref)
    }

    fn record_mut(&mut self, at: u32) -> Option<&mut Packed> {
        self.slab.get_mut(at as usize).and_then(Option::as_mut)
    }

    fn find(&self, id: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(id);
        self.by_id.find(hash, |at| {
            self.record(at).map(Packed::id_bytes) == Some(id.as_bytes())
        })
    }

    fn find_subject(&self, subject: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(subject);
        self.by_subject.find(hash, |at| {
            self.record(at).map(Packed::subject_bytes) == Some(subject.as_bytes())
        })
    }

    /// How many consents the table holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether a consent with this id is stored.
    pub(super) fn contains(&self, id: &ConsentId) -> bool {
        self.find(id.as_str()).is_some()
    }

    /// A stored consent's version.
    pub(super) fn version(&self, id: &ConsentId) -> Option<u64> {
        self.find(id.as_str())
            .and_then(|at| self.record(at))
            .map(|record| record.version)
    }

    /// A stored consent; `id` is the caller's copy of its id, shared by the result.
    /// Its other ids have text of their own (see `MemoryStore::access_view`).
    pub(super) fn get(&self, id: &ConsentId) -> Result<Option<Consent>, StoreError> {
        let Some(record) = self.find(id.as_str()).and_then(|at| self.record(at)) else {
            return Ok(None);
        };
        self.decode(record, Some(id)).map(Some)
    }

    /// The positions of a subject's records, by its thread.
    fn thread(&self, subject: &str) -> Vec<u32> {
        let mut found = Vec::new();
        let mut at = self.find_subject(subject).unwrap_or(NONE);
        // A thread never holds more records than the slab: bounded even if it were damaged.
        while at != NONE && found.len() < self.slab.len() {
            found.push(at);
            at = self.record(at).map_or(NONE, |record| record.next);
        }
        found
    }

    /// Every consent of a subject, oldest first.
    pub(super) fn of_subject(&self, subject: &SubjectId) -> Result<Vec<Consent>, StoreError> {
        let mut records: Vec<&Packed> = self
            .thread(subject.as_str())
            .into_iter()
            .filter_map(|at| self.record(at))
            .collect();
        records.sort_by_key(|record| record.position);
        records
            .into_iter()
            .map(|record| self.decode(record, None))
            .collect()
    }

    /// The ids of a subject's consents.
    pub(super) fn ids_of_subject(&self, subject: &SubjectId) -> Vec<ConsentId> {
        self.thread(subject.as_str())
            .into_iter()
            .filter_map(|at| self.record(at).and_then(Packed::id_text))
            .map(ConsentId::from_packed)
            .collect()
    }

    /// At most `limit` of the consents that ended before `before`, those that ended first (then
    /// by id); only those are decoded.
    pub(super) fn ended_before(
        &self,
        before: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Consent>, StoreError> {
        let mut ended: Vec<(OffsetDateTime, &str, &Packed)> = self
            .slab
            .iter()
            .flatten()
            .filter(|record| record.at < before)
            .map(|record| Ok((record.at, record.id_text().ok_or_else(damaged)?, record)))
            .collect::<Result<_, StoreError>>()?;
        ended.sort_unstable_by(|(a_end, a_id, _), (b_end, b_id, _)| {
            a_end.cmp(b_end).then_with(|| a_id.cmp(b_id))
        });
        ended.truncate(limit);
        ended
            .into_iter()
            .map(|(_, _, record)| self.decode(record, None))
            .collect()
    }

    /// Stores a new consent.
    ///
    /// # Errors
    /// `Ok(false)` when a consent with its id is already stored (nothing changed).
    pub(super) fn insert(&mut self, consent: &Consent) -> Result<bool, StoreError> {
        if self.contains(consent.id()) {
            return Ok(false);
        }
        let position = self.next_position;
        let record = self.encode(consent, position)?;
        self.next_position = position.saturating_add(1);
        self.place(record)?;
        Ok(true)
    }

    /// Places a record (its position kept) in a free slot, indexed, first in its subject's
    /// thread.
    fn place(&mut self, record: Packed) -> Result<(), StoreError> {
        let id_hash = self.hasher.hash_one(record.id_text().ok_or_else(damaged)?);
        let at = match self.free.pop() {
            Some(at) => {
                *self.slab.get_mut(at as usize).ok_or_else(damaged)? = Some(record);
                at
            }
            None => {
                let at = u32::try_from(self.slab.len())
                    .ok()
                    .filter(|&at| at != NONE)
                    .ok_or_else(full)?;
                self.slab.push(Some(record));
                at
            }
        };
        if !self.by_id.insert(id_hash, at) {
            return Err(damaged());
        }
        self.link(at)
    }

    /// Links the record at `at` first in its subject's thread (in constant time: a subject may
    /// have any number of consents).
    fn link(&mut self, at: u32) -> Result<(), StoreError> {
        let subject = self
            .record(at)
            .and_then(Packed::subject_text)
            .ok_or_else(damaged)?;
        let hash = self.hasher.hash_one(subject);
        let head = self.find_subject(subject);
        let record = self.record_mut(at).ok_or_else(damaged)?;
        record.previous = NONE;
        record.next = head.unwrap_or(NONE);
        match head {
            Some(head) => {
                self.record_mut(head).ok_or_else(damaged)?.previous = at;
                if !self.by_subject.replace(hash, head, at) {
                    return Err(damaged());
                }
            }
            None => {
                if !self.by_subject.insert(hash, at) {
                    return Err(damaged());
                }
            }
        }
        Ok(())
    }

    /// Unlinks the record at `at` from its subject's thread (in constant time).
    fn unlink(&mut self, at: u32) -> Result<(), StoreError> {
        let record = self.record(at).ok_or_else(damaged)?;
        let (previous, next) = (record.previous, record.next);
        if previous == NONE {
            // The first: the subject's index points at the next one, or forgets the subject.
            let hash = self
                .hasher
                .hash_one(record.subject_text().ok_or_else(damaged)?);
            let moved = if next == NONE {
                self.by_subject.remove(hash, at)
            } else {
                self.by_subject.replace(hash, at, next)
            };
            if !moved {
                return Err(damaged());
            }
        } else {
            self.record_mut(previous).ok_or_else(damaged)?.next = next;
        }
        if next != NONE {
            self.record_mut(next).ok_or_else(damaged)?.previous = previous;
        }
        let record = self.record_mut(at).ok_or_else(damaged)?;
        record.previous = NONE;
        record.next = NONE;
        Ok(())
    }

    /// Replaces a stored consent with `consent` (same id), keeping its position; the record it
    /// replaced, or `None` if no consent has its id.
    pub(super) fn replace(&mut self, consent: &Consent) -> Result<Option<Packed>, StoreError> {
        let Some(at) = self.find(consent.id().as_str()) else {
            return Ok(None);
        };
        let position = self
            .record(at)
            .map(|record| record.position)
            .ok_or_else(damaged)?;
        let record = self.encode(consent, position)?;
        self.put(at, record).map(Some)
    }

    /// Puts back a record that [`Consents::replace`] replaced.
    pub(super) fn restore(&mut self, old: Packed) -> Result<(), StoreError> {
        let id = old.id_text().ok_or_else(damaged)?;
        let at = self.find(id).ok_or_else(damaged)?;
        self.put(at, old).map(drop)
    }

    /// Writes `record` (the same consent id) at `at` in place of the record there; the one it
    /// replaced. The thread links stay, unless the subject differs: then it moves to its
    /// subject's thread.
    fn put(&mut self, at: u32, mut record: Packed) -> Result<Packed, StoreError> {
        let slot = self.record(at).ok_or_else(damaged)?;
        if slot.subject_text() == record.subject_text() {
            record.previous = slot.previous;
            record.next = slot.next;
            let slot = self.record_mut(at).ok_or_else(damaged)?;
            return Ok(std::mem::replace(slot, record));
        }
        self.unlink(at)?;
        let slot = self.record_mut(at).ok_or_else(damaged)?;
        let old = std::mem::replace(slot, record);
        self.link(at)?;
        Ok(old)
    }

    /// Removes a consent; its record, to [`Consents::put_back`] if the commit fails.
    pub(super) fn remove(&mut self, id: &ConsentId) -> Result<Option<Packed>, StoreError> {
        let Some(at) = self.find(id.as_str()) else {
            return Ok(None);
        };
        self.unlink(at)?;
        let hash = self.hasher.hash_one(id.as_str());
        self.by_id.remove(hash, at);
        let record = self
            .slab
            .get_mut(at as usize)
            .and_then(Option::take)
            .ok_or_else(damaged)?;
        self.free.push(at);
        Ok(Some(record))
    }

    /// Puts back a record that [`Consents::remove`] removed (its position kept: it lists where
    /// it did among its subject's consents).
    pub(super) fn put_back(&mut self, record: Packed) -> Result<(), StoreError> {
        self.place(record)
    }

    fn encode(&mut self, consent: &Consent, position: u64) -> Result<Packed, StoreError> {
        let request = &consent.request;
        let platform = self.platforms.position(&self.hasher, &request.platform)?;
        let holder = self.holders.position(&self.hasher, &request.holder)?;
        let (grant, at, revoked) = match &consent.state {
            ConsentState::Requested => (None, request.approval_deadline, None),
            ConsentState::Authorised { grant } => (Some(grant), grant.expires_at, None),
            ConsentState::Rejected { at } => (None, *at, None),
            ConsentState::Revoked {
                grant,
                by,
                reason,
                at,
            } => (Some(grant), *at, Some((*by, *reason))),
        };
        let mut text = String::with_capacity(128);
        text.push_str(request.id.as_str());
        text.push_str(request.subject.as_str());
        let attestation = grant.map_or("", |grant| &grant.attestation_id);
        text.push_str(attestation);
        let requested: &[AccountId] = match &request.accounts {
            AccountSelection::Listed(accounts) => accounts.as_slice(),
            AccountSelection::SubjectChooses => &[],
        };
        let start = text.len();
        for (i, account) in requested.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(account.as_str());
        }
        let requested_len = text.len() - start;
        // The pseudonyms kept with the grant: the subject's and the first account's in the
        // record, each further account's after its id in the text.
        // Pseudonyms that do not match the grant's accounts are never used (a decision makes
        // them from the key instead, `Grant::kept_pseudonyms`): not kept.
        let kept = grant.and_then(|grant| {
            grant
                .pseudonyms
                .as_ref()
                .filter(|kept| kept.accounts.len() == grant.accounts.len())
        });
        if let Some(grant) = grant {
            for (i, account) in grant.accounts.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                match requested.binary_search(account) {
                    // The same account as the request's: its position there, not its text again.
                    Ok(at) => {
                        // Writing to a `String` cannot fail.
                        let _ = write!(text, "#{at}");
                    }
                    Err(_) => text.push_str(account.as_str()),
                }
                if i > 0
                    && let Some(pseudonym) = kept.and_then(|kept| kept.accounts.get(i))
                {
                    // `=`, which neither an id nor base64url holds, then the pseudonym's text.
                    text.push('=');
                    pseudonym.write_text(&mut text);
                }
            }
        }
        let pseudonyms = kept.map(|kept| {
            let first = kept.accounts.first().map_or([0; 16], |first| first.0);
            [kept.subject.0, first]
        });
        let length = |len: usize| u32::try_from(len).map_err(|_| damaged());
        Ok(Packed {
            position,
            version: consent.version,
            requested_at: request.requested_at,
            approval_deadline: request.approval_deadline,
            at,
            authorised_at: grant.map_or(OffsetDateTime::UNIX_EPOCH, |grant| grant.authorised_at),
            expires_at: grant.map_or(OffsetDateTime::UNIX_EPOCH, |grant| grant.expires_at),
            duration: request.duration,
            previous: NONE,
            next: NONE,
            platform,
            holder,
            unattended_daily_limit: grant.map_or(0, |grant| grant.unattended_daily_limit),
            attestation_len: length(attestation.len())?,
            requested_len: length(requested_len)?,
            // Ids are at most `MAX_ID_LEN` (128) bytes.
            id_len: u8::try_from(request.id.as_str().len()).map_err(|_| damaged())?,
            subject_len: u8::try_from(request.subject.as_str().len()).map_err(|_| damaged())?,
            state: match &consent.state {
                ConsentState::Requested => State::Requested,
                ConsentState::Authorised { .. } => State::Authorised,
                ConsentState::Rejected { .. } => State::Rejected,
                ConsentState::Revoked { .. } => State::Revoked,
            },
            listed: matches!(request.accounts, AccountSelection::Listed(_)),
            scopes: request.scopes,
            purposes: request.purposes,
            granted_scopes: grant.map_or_else(ScopeSet::new, |grant| grant.scopes),
            granted_purposes: grant.map_or_else(PurposeSet::new, |grant| grant.purposes),
            revoked,
            pseudonyms,
            text: Text::new(&text),
        })
    }

    /// The consent a record holds; its id shares `id`'s text when given.
    fn decode(&self, record: &Packed, id: Option<&ConsentId>) -> Result<Consent, StoreError> {
        decode(record, id, &self.platforms, &self.holders).ok_or_else(damaged)
    }
}

fn decode(
    record: &Packed,
    id: Option<&ConsentId>,
    platforms: &Names<PlatformId>,
    holders: &Names<HolderId>,
) -> Option<Consent> {
    let parts = record.parts()?;
    let id = match id {
        Some(id) if id.as_str() == parts.id => id.clone(),
        _ => ConsentId::from_packed(parts.id),
    };
    let subject = SubjectId::from_packed(parts.subject);
    let requested_text = parts.requested;
    let requested = if record.listed {
        Some(accounts(requested_text, &[])?)
    } else {
        None
    };
    let grant = match record.state {
        State::Authorised | State::Revoked => {
            let (accounts, pseudonyms) = granted(
                parts.granted,
                requested.as_ref().map_or(&[], AccountSet::as_slice),
                record.pseudonyms.as_ref(),
            )?;
            Some(Grant {
                scopes: record.granted_scopes,
                purposes: record.granted_purposes,
                accounts,
                authorised_at: record.authorised_at,
                expires_at: record.expires_at,
                attestation_id: parts.attestation.into(),
                unattended_daily_limit: record.unattended_daily_limit,
                pseudonyms,
            })
        }
        State::Requested | State::Rejected => None,
    };
    let state = match (record.state, grant, record.revoked) {
        (State::Requested, None, None) => ConsentState::Requested,
        (State::Authorised, Some(grant), None) => ConsentState::Authorised { grant },
        (State::Rejected, None, None) => ConsentState::Rejected { at: record.at },
        (State::Revoked, Some(grant), Some((by, reason))) => ConsentState::Revoked {
            grant,
            by,
            reason,
            at: record.at,
        },
        _ => return None,
    };
    Some(Consent {
        request: ConsentRequest {
            id,
            subject,
            platform: platforms.get(record.platform).ok()?,
            holder: holders.get(record.holder).ok()?,
            scopes: record.scopes,
            purposes: record.purposes,
            accounts: requested.map_or(AccountSelection::SubjectChooses, AccountSelection::Listed),
            duration: record.duration,
            requested_at: record.requested_at,
            approval_deadline: record.approval_deadline,
        },
        state,
        version: record.version,
    })
}

/// A set of accounts from its text: ids separated by commas, `#n` for the `n`th of `shared`.
fn accounts(text: &str, shared: &[AccountId]) -> Option<AccountSet> {
    Some(granted(text, shared, None)?.0)
}

/// A grant's accounts from its text (as [`accounts`], each after the first followed by `=` and
/// its pseudonym when the grant keeps them), and its pseudonyms when `kept` (the subject's and
/// the first account's, from the record). One pass, no copy of the text.
fn granted(
    text: &str,
    shared: &[AccountId],
    kept: Option<&[[u8; PSEUDONYM_BYTES]; 2]>,
) -> Option<(AccountSet, Option<GrantPseudonyms>)> {
    // Sized exactly: a slice made from a larger vector is reallocated.
    let count = match text.is_empty() {
        true => 0,
        false => text.bytes().filter(|&b| b == b',').count() + 1,
    };
    let mut accounts = Vec::with_capacity(count);
    let mut pseudonyms = Vec::with_capacity(if kept.is_some() { count } else { 0 });
    for (i, entry) in text.split(',').take(count).enumerate() {
        let account = match kept {
            None => entry,
            Some([_, first]) if i == 0 && !entry.contains('=') => {
                pseudonyms.push(PseudonymBytes(*first));
                entry
            }
            Some(_) if i == 0 => return None,
            Some(_) => {
                let (account, pseudonym) = entry.split_once('=')?;
                pseudonyms.push(PseudonymBytes::parse(pseudonym)?);
                account
            }
        };
        accounts.push(match account.strip_prefix('#') {
            Some(at) => shared.get(at.parse::<usize>().ok()?)?.clone(),
            None if account.is_empty() => return None,
            None => AccountId::from_packed(account),
        });
    }
    let pseudonyms = kept.map(|[subject, _]| GrantPseudonyms {
        subject: PseudonymBytes(*subject),
        accounts: pseudonyms.into_boxed_slice(),
    });
    Some((
        AccountSet::from_sorted(accounts.into_boxed_slice()),
        pseudonyms,
    ))
}

/// Where a consent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Requested,
    Authorised,
    Rejected,
    Revoked,
}

/// One consent's record. Its ids and the attestation id are one string (`text`): the consent id,
/// the subject, the attestation id, the requested accounts (separated by commas, which no id
/// holds), then the granted ones (`#n` for the `n`th requested account).
#[derive(Debug, Clone)]
pub(super) struct Packed {
    /// Insertion order (a subject's consents list oldest first).
    position: u64,
    version: u64,
    requested_at: OffsetDateTime,
    approval_deadline: OffsetDateTime,
    /// When it ends (`Consent::ends_at`): the approval deadline, the grant's expiry, or when it
    /// was rejected or revoked.
    at: OffsetDateTime,
    authorised_at: OffsetDateTime,
    expires_at: OffsetDateTime,
    duration: Duration,
    /// The previous and the next record of the same subject (`NONE`: none).
    previous: u32,
    next: u32,
    platform: u32,
    holder: u32,
    unattended_daily_limit: u32,
    attestation_len: u32,
    requested_len: u32,
    id_len: u8,
    subject_len: u8,
    state: State,
    listed: bool,
    scopes: ScopeSet,
    purposes: PurposeSet,
    granted_scopes: ScopeSet,
    granted_purposes: PurposeSet,
    revoked: Option<(Revoker, RevocationReason)>,
    /// The subject's and the first account's pseudonyms, when the grant keeps them.
    pseudonyms: Option<[[u8; PSEUDONYM_BYTES]; 2]>,
    text: Text,
}

/// Bytes of text a record holds in itself (a grant's usually fit: then finding and reading a
/// consent fetches the record alone).
const INLINE: usize = 96;

type Text = crate::table::Text<INLINE>;

/// A record's text cut into its parts.
struct Parts<'a> {
    id: &'a str,
    subject: &'a str,
    attestation: &'a str,
    requested: &'a str,
    granted: &'a str,
}

impl Packed {
    /// Its text in parts (checked as UTF-8 once, for all of them).
    fn parts(&self) -> Option<Parts<'_>> {
        let text = self.text.as_str();
        let (id, rest) = text.split_at_checked(usize::from(self.id_len))?;
        let (subject, rest) = rest.split_at_checked(usize::from(self.subject_len))?;
        let (attestation, rest) = rest.split_at_checked(self.attestation_len as usize)?;
        let (requested, granted) = rest.split_at_checked(self.requested_len as usize)?;
        Some(Parts {
            id,
            subject,
            attestation,
            requested,
            granted,
        })
    }

    fn id_text(&self) -> Option<&str> {
        self.parts().map(|parts| parts.id)
    }

    fn subject_text(&self) -> Option<&str> {
        self.parts().map(|parts| parts.subject)
    }

    /// The id's bytes, to compare (no check as UTF-8: a lookup compares many); empty if the
    /// record is damaged.
    fn id_bytes(&self) -> &[u8] {
        self.text
            .bytes()
            .get(..usize::from(self.id_len))
            .unwrap_or_default()
    }

    /// The subject's bytes, as [`Packed::id_bytes`].
    fn subject_bytes(&self) -> &[u8] {
        let from = usize::from(self.id_len);
        self.text
            .bytes()
            .get(from..from + usize::from(self.subject_len))
            .unwrap_or_default()
    }
}

#[cfg(test)]
#[expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking"
)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use time::macros::{datetime, offset};

    use super::*;
    use crate::vocab::{Purpose, Scope};

    fn id<T: std::str::FromStr>(text: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        text.parse().unwrap()
    }

    /// A consent for `n`, of `subject`, in the state `state` picks (0 to 3 and, for revoked ones,
    /// every revoker and reason), with `accounts` requested and the odd ones granted plus one the
    /// request did not list.
    fn consent(n: u32, subject: u32, state: u8, accounts: u8, nanos: u32) -> Consent {
        let at = datetime!(2026-11-30 10:00:00 UTC) + Duration::seconds(i64::from(n));
        let at = at.replace_nanosecond(nanos % 1_000_000_000).unwrap();
        let listed: AccountSet = (0..accounts)
            .map(|a| id::<AccountId>(&format!("acc-{n}-{a}")))
            .collect();
        let request = ConsentRequest {
            id: id(&format!("cns_{n}")),
            subject: id(&format!("subject-{subject}")),
            platform: id(&format!("chat-{}", n % 3)),
            holder: id(&format!("bank-{}", n % 2)),
            scopes: ScopeSet::from([Scope::Balance, Scope::Alerts]),
            purposes: PurposeSet::from([Purpose::FraudProtection]),
            accounts: if accounts == 0 {
                AccountSelection::SubjectChooses
            } else {
                AccountSelection::Listed(listed.clone())
            },
            duration: Duration::new(86_400 * 30, 7),
            requested_at: at,
            approval_deadline: at + Duration::minutes(10),
        };
        let grant = Grant {
            scopes: ScopeSet::from([Scope::Alerts]),
            purposes: PurposeSet::from([Purpose::FraudProtection]),
            accounts: listed
                .iter()
                .step_by(2)
                .cloned()
                .chain([id::<AccountId>(&format!("acc-other-{n}"))])
                .collect(),
            authorised_at: at + Duration::minutes(1),
            expires_at: at + Duration::days(30),
            // Texts that fit in the record and texts that do not.
            attestation_id: format!("att-{n}-{}", "x".repeat(n as usize % 7 * 40)).into(),
            unattended_daily_limit: n,
            pseudonyms: None,
        };
        // Two grants in three keep their pseudonyms (as a grant made through the broker does).
        let mut grant = grant;
        if !n.is_multiple_of(3) {
            let key = crate::privacy::SubjectKey::from_bytes(&[n.to_le_bytes()[0]; 32]);
            grant.pseudonyms = Some(key.grant_pseudonyms(&request.subject, &grant.accounts));
        }
        let revokers = [Revoker::Subject, Revoker::Holder, Revoker::Platform];
        let reasons = [
            RevocationReason::SubjectWithdrew,
            RevocationReason::AccountClosed,
            RevocationReason::SuspectedMisuse,
            RevocationReason::NoLongerNeeded,
            RevocationReason::Erasure,
        ];
        let state = match state % 4 {
            0 => ConsentState::Requested,
            1 => ConsentState::Authorised { grant },
            2 => ConsentState::Rejected {
                at: at + Duration::seconds(5),
            },
            _ => ConsentState::Revoked {
                grant,
                by: revokers[usize::from(state / 4) % 3],
                reason: reasons[usize::from(state / 4) % 5],
                at: at + Duration::days(2),
            },
        };
        Consent {
            request,
            state,
            version: u64::from(n) * 3,
        }
    }

    #[test]
    fn every_state_comes_back_equal() {
        let mut table = Consents::default();
        let mut stored = Vec::new();
        for n in 0..60u32 {
            let c = consent(n, n % 7, u8::try_from(n).unwrap(), (n % 4) as u8, n * 13);
            assert!(table.insert(&c).unwrap());
            stored.push(c);
        }
        // Granted accounts referring to requested ones past the ninth (`#10`).
        let many = consent(100, 1, 1, 12, 0);
        assert!(table.insert(&many).unwrap());
        stored.push(many);
        for c in &stored {
            let back = table.get(c.id()).unwrap().unwrap();
            assert_eq!(&back, c);
            assert_eq!(back.ends_at(), c.ends_at());
            // The same in every form the rest of the crate reads.
            assert_eq!(
                serde_json::to_string(&back).unwrap(),
                serde_json::to_string(c).unwrap()
            );
            assert_eq!(table.version(c.id()), Some(c.version));
        }
        assert!(table.get(&id("cns_none")).unwrap().is_none());
        assert!(
            !table.insert(&stored[3]).unwrap(),
            "a duplicate id is refused"
        );
    }

    #[test]
    fn a_time_with_an_offset_comes_back_with_it() {
        let mut c = consent(1, 1, 1, 2, 999_999_999);
        c.request.requested_at = c.request.requested_at.to_offset(offset!(+5:30));
        let mut table = Consents::default();
        table.insert(&c).unwrap();
        let back = table.get(c.id()).unwrap().unwrap();
        assert_eq!(back, c);
        assert_eq!(back.request.requested_at.offset(), offset!(+5:30));
    }

    #[test]
    fn a_grant_is_a_slot() {
        // The benchmark's grant: one account, a short attestation id.
        let mut c = consent(123_456, 123_456, 1, 1, 0);
        if let ConsentState::Authorised { grant } = &mut c.state {
            grant.attestation_id = "att_0123456789abcdefghijkl".into();
            grant.accounts = grant.accounts.iter().take(1).cloned().collect();
        }
        let mut table = Consents::default();
        let position = table.next_position;
        let record = table.encode(&c, position).unwrap();
        // The id, the subject, the attestation id, the account, the reference to it.
        let text = "cns_123456subject-123456att_0123456789abcdefghijklacc-123456-0#0";
        assert!(record.text.is_inline());
        assert_eq!(record.text.as_str(), text);
        // 256 bytes of fields and text, and the grant's two pseudonyms (32 bytes) that spare a
        // decision the subject's key and two HMACs.
        assert!(std::mem::size_of::<Option<Packed>>() <= 288);
        assert_eq!(table.decode(&record, None).unwrap(), c);
        // A text longer than the record holds is kept apart, and reads back the same.
        if let ConsentState::Authorised { grant } = &mut c.state {
            grant.attestation_id = format!("att_{}", "y".repeat(INLINE)).into();
        }
        let record = table.encode(&c, position).unwrap();
        assert!(!record.text.is_inline());
        assert_eq!(table.decode(&record, None).unwrap(), c);
    }

    /// What the table should hold: by id, the consent and its position.
    type Model = BTreeMap<String, (u64, Consent)>;

    fn agrees(table: &Consents, model: &Model) {
        assert_eq!(table.len(), model.len());
        for (_, consent) in model.values() {
            assert_eq!(table.get(consent.id()).unwrap().as_ref(), Some(consent));
        }
        let subjects: std::collections::BTreeSet<&SubjectId> =
            model.values().map(|(_, c)| &c.request.subject).collect();
        for subject in subjects {
            let mut expected: Vec<&(u64, Consent)> = model
                .values()
                .filter(|(_, c)| &c.request.subject == subject)
                .collect();
            expected.sort_by_key(|(position, _)| *position);
            let expected: Vec<&Consent> = expected.into_iter().map(|(_, c)| c).collect();
            let found = table.of_subject(subject).unwrap();
            assert_eq!(found.iter().collect::<Vec<_>>(), expected, "oldest first");
            let mut ids = table.ids_of_subject(subject);
            ids.sort();
            let mut want: Vec<ConsentId> = expected.iter().map(|c| c.id().clone()).collect();
            want.sort();
            assert_eq!(ids, want);
        }
        let cut = datetime!(2026-11-30 10:00:00 UTC) + Duration::days(1);
        let ended: Vec<ConsentId> = table
            .ended_before(cut, usize::MAX)
            .unwrap()
            .iter()
            .map(|c| c.id().clone())
            .collect();
        let mut want: Vec<(time::OffsetDateTime, ConsentId)> = model
            .values()
            .filter(|(_, c)| c.ends_at() < cut)
            .map(|(_, c)| (c.ends_at(), c.id().clone()))
            .collect();
        want.sort();
        let want: Vec<ConsentId> = want.into_iter().map(|(_, id)| id).collect();
        assert_eq!(ended, want, "those that ended first, then by id");
        let first = table.ended_before(cut, 2).unwrap();
        assert_eq!(first.len(), want.len().min(2));
        assert!(first.iter().map(Consent::id).eq(want.iter().take(2)));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert {
            n: u32,
            subject: u32,
            state: u8,
            accounts: u8,
        },
        /// An update; a consent's subject never changes, but the table copes if it does.
        Replace {
            pick: usize,
            state: u8,
            subject: Option<u32>,
        },
        Remove {
            pick: usize,
        },
        /// Remove then put back (a failed erasure's undo).
        RemoveAndPutBack {
            picks: Vec<usize>,
        },
        /// Replace then restore (a failed update's undo).
        ReplaceAndRestore {
            pick: usize,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..40u32, 0..5u32, any::<u8>(), 0..4u8)
                .prop_map(|(n, subject, state, accounts)| Op::Insert { n, subject, state, accounts }),
            2 => (any::<usize>(), any::<u8>(), proptest::option::weighted(0.2, 0..5u32))
                .prop_map(|(pick, state, subject)| Op::Replace { pick, state, subject }),
            2 => any::<usize>().prop_map(|pick| Op::Remove { pick }),
            1 => proptest::collection::vec(any::<usize>(), 1..4)
                .prop_map(|picks| Op::RemoveAndPutBack { picks }),
            1 => any::<usize>().prop_map(|pick| Op::ReplaceAndRestore { pick }),
        ]
    }

    fn picked(model: &Model, pick: usize) -> Option<Consent> {
        let len = model.len();
        (len > 0).then(|| model.values().nth(pick % len).unwrap().1.clone())
    }

    proptest! {
        /// Any sequence of inserts, updates, removals and their undos leaves the table holding
        /// exactly what a plain map would: every consent equal, each subject's consents oldest
        /// first, the retention scan right, freed slots reused without mixing threads up.
        #[test]
        fn the_table_agrees_with_a_plain_map(ops in proptest::collection::vec(op(), 1..80)) {
            let mut table = Consents::default();
            let mut model = Model::new();
            let mut next_position = 0u64;
            for op in ops {
                match op {
                    Op::Insert { n, subject, state, accounts } => {
                        let c = consent(n, subject, state, accounts, n);
                        let fresh = !model.contains_key(c.id().as_str());
                        prop_assert_eq!(table.insert(&c).unwrap(), fresh);
                        if fresh {
                            model.insert(c.id().as_str().to_owned(), (next_position, c));
                            next_position += 1;
                        }
                    }
                    Op::Replace { pick, state, subject } => {
                        if let Some(old) = picked(&model, pick) {
                            let mut new = consent(
                                u32::try_from(old.version / 3).unwrap(), 9, state, 2, 1);
                            new.request.id = old.id().clone();
                            new.request.subject = match subject {
                                Some(subject) => id(&format!("subject-{subject}")),
                                None => old.request.subject.clone(),
                            };
                            new.version = old.version + 1;
                            prop_assert!(table.replace(&new).unwrap().is_some());
                            model.get_mut(old.id().as_str()).unwrap().1 = new;
                        }
                    }
                    Op::Remove { pick } => {
                        if let Some(old) = picked(&model, pick) {
                            prop_assert!(table.remove(old.id()).unwrap().is_some());
                            prop_assert!(table.remove(old.id()).unwrap().is_none());
                            model.remove(old.id().as_str());
                        }
                    }
                    Op::RemoveAndPutBack { picks } => {
                        let mut taken = Vec::new();
                        for pick in picks {
                            if let Some(old) = picked(&model, pick)
                                && let Some(record) = table.remove(old.id()).unwrap()
                            {
                                taken.push(record);
                            }
                        }
                        for record in taken {
                            table.put_back(record).unwrap();
                        }
                    }
                    Op::ReplaceAndRestore { pick } => {
                        if let Some(old) = picked(&model, pick) {
                            let mut new = old.clone();
                            new.version += 1;
                            new.state = ConsentState::Rejected { at: old.request.requested_at };
                            if pick % 2 == 0 {
                                new.request.subject = id("subject-moved");
                            }
                            let before = table.replace(&new).unwrap().unwrap();
                            table.restore(before).unwrap();
                        }
                    }
                }
                agrees(&table, &model);
            }
        }
    }
}
