//! Personal data in an append-only log: keyed pseudonyms and sealed fields under a per-subject
//! key, so that deleting the key (crypto-shredding) forgets a person without touching the log.
//!
//! Every subject a broker or bank records has its own random 256-bit [`SubjectKey`], kept in the
//! store's subject-key table, apart from the log. Log entries never name the subject, its
//! accounts or its devices: they carry [`Pseudonym`]s, HMAC-SHA-256 under the subject's key of a
//! domain label and the identifier, truncated to 128 bits. Fields the subject must still be able
//! to read (the bank's attestation of an approval, with the accounts it names) are sealed with
//! AES-256-GCM under a key derived from the same subject key, beside a SHA-256 commitment that
//! binds the entry to the exact bytes. The Merkle tree hashes entries as stored, so verifying the
//! log needs no key at all.
//!
//! Erasing a subject deletes the key and every state row about the subject in one commit: the
//! pseudonyms then link to nobody (HMAC under a deleted random key is indistinguishable from
//! random), and the sealed fields can never be opened again. See `docs/PRIVACY.md`.
//!
//! ```
//! use consent_broker::{AccountId, SubjectId, SubjectKey, SystemRandom};
//!
//! let key = SubjectKey::generate(&SystemRandom::new()).unwrap();
//! let alice = SubjectId::new("alice").unwrap();
//! let pseudonym = key.subject(&alice);
//! // Stable under one key, unrelated under another.
//! assert_eq!(pseudonym, key.subject(&alice));
//! let other = SubjectKey::generate(&SystemRandom::new()).unwrap();
//! assert_ne!(pseudonym, other.subject(&alice));
//! assert!(!pseudonym.as_str().contains("alice"));
//! // Accounts get pseudonyms of their own kind.
//! let account = key.account(&AccountId::new("acc-1").unwrap());
//! assert_ne!(account.as_str(), pseudonym.as_str());
//! ```

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::{aead, digest, hmac};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::ids::{AccountId, Pseudonym, SubjectId};
use crate::random::{RandomError, RandomSource};

/// Bytes of a pseudonym before encoding: 128 bits, collision-free for any realistic population
/// (a collision needs about 2^64 subjects) and unlinkable without the key.
pub const PSEUDONYM_BYTES: usize = 16;

/// The prefix every pseudonym this crate makes starts with.
pub const PSEUDONYM_PREFIX: &str = "ps_";

const LABEL: &[u8] = b"consent-broker/v1 ";
const NONCE_LEN: usize = 12;
/// Longest sealed field accepted when opening (an attestation is a few kilobytes).
const MAX_SEALED_LEN: usize = 64 * 1024;

/// Why a sealed field did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PrivacyError {
    /// Not base64url, too short or too long to be a sealed field.
    #[error("the sealed field is malformed")]
    Malformed,
    /// The key, the field or the pseudonym it was sealed for is not this one, or the bytes were
    /// altered.
    #[error("the sealed field does not open with this subject's key")]
    WrongKey,
    /// No random bytes were available for a nonce or a key: nothing was sealed.
    #[error("no random bytes were available")]
    Randomness,
}

impl From<RandomError> for PrivacyError {
    fn from(_: RandomError) -> Self {
        Self::Randomness
    }
}

/// A subject's secret key: the only thing that links the log's pseudonyms to the subject, and
/// the only key that opens its sealed fields. Deleting it erases the subject from the log.
///
/// Its bytes are wiped when it is dropped; its `Debug` form never shows them.
#[derive(Clone)]
pub struct SubjectKey {
    /// The secret; the HMAC and AES keys are derived from it when used (32 bytes to copy, not
    /// the few hundred of prepared keys: a subject's key travels in commits and caches).
    secret: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectKey(..)")
    }
}

impl PartialEq for SubjectKey {
    fn eq(&self, other: &Self) -> bool {
        // No early exit on the secret's bytes.
        self.secret
            .iter()
            .zip(other.secret.iter())
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
    }
}

impl Eq for SubjectKey {}

impl SubjectKey {
    /// A fresh random key.
    ///
    /// # Errors
    /// [`RandomError`] when no randomness is available.
    pub fn generate(random: &dyn RandomSource) -> Result<Self, RandomError> {
        let mut secret = Zeroizing::new([0u8; 32]);
        random.fill(&mut secret[..])?;
        Ok(Self::from_bytes(&secret))
    }

    /// The key with these bytes (as a store reads it back).
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self {
            secret: Zeroizing::new(*bytes),
        }
    }

    fn mac(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.secret[..])
    }

    /// The AES-256-GCM key sealed fields use (made per call: sealing is rare).
    fn aead(&self) -> Result<aead::LessSafeKey, PrivacyError> {
        let mut seal = Zeroizing::new([0u8; 32]);
        seal.copy_from_slice(hmac::sign(&self.mac(), &labelled("seal-key", b"")).as_ref());
        aead::UnboundKey::new(&aead::AES_256_GCM, &seal[..])
            .map(aead::LessSafeKey::new)
            .map_err(|_| PrivacyError::Malformed)
    }

    /// The key's bytes, for a store to keep (wiped when dropped).
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        self.secret.clone()
    }

    /// The key of this subject's relationship with one platform, derived from this one
    /// (HMAC-SHA-256 of `platform`, labelled): what a bank's journal uses for entries about
    /// that relationship, so that the journal gives one person unrelated pseudonyms for each
    /// platform, and two platforms cannot match their users through it.
    pub fn for_platform(&self, platform: &crate::ids::PlatformId) -> SubjectKey {
        let derived = hmac::sign(
            &self.mac(),
            &labelled("platform", platform.as_str().as_bytes()),
        );
        let mut bytes = Zeroizing::new([0u8; 32]);
        bytes.copy_from_slice(derived.as_ref());
        Self::from_bytes(&bytes)
    }

    /// The subject's pseudonym.
    pub fn subject(&self, subject: &SubjectId) -> Pseudonym {
        self.pseudonym("subject", subject.as_str())
    }

    /// The pseudonym of one of the subject's accounts.
    pub fn account(&self, account: &AccountId) -> Pseudonym {
        self.pseudonym("account", account.as_str())
    }

    /// The pseudonym of one of the subject's device keys (by its RFC 7638 thumbprint).
    pub fn device(&self, thumbprint: &str) -> Pseudonym {
        self.pseudonym("device", thumbprint)
    }

    fn pseudonym(&self, kind: &str, value: &str) -> Pseudonym {
        pseudonym_bytes(&self.mac(), kind, value).text()
    }

    /// The pseudonyms of a grant of `subject`'s to `accounts` (in their order), under one
    /// prepared HMAC key: what the broker keeps with the grant, so that a decision on it
    /// computes none.
    pub(crate) fn grant_pseudonyms(
        &self,
        subject: &SubjectId,
        accounts: &crate::sets::AccountSet,
    ) -> GrantPseudonyms {
        let mac = self.mac();
        GrantPseudonyms {
            subject: pseudonym_bytes(&mac, "subject", subject.as_str()),
            accounts: accounts
                .iter()
                .map(|account| pseudonym_bytes(&mac, "account", account.as_str()))
                .collect(),
        }
    }

    /// Seals `plaintext` as the `field` of an entry about `about` (AES-256-GCM, random nonce;
    /// the field's name and the pseudonym are authenticated, so a sealed field cannot be moved
    /// to another member or another subject's entry).
    ///
    /// # Errors
    /// [`PrivacyError::Randomness`].
    pub fn seal(
        &self,
        field: &str,
        about: &Pseudonym,
        plaintext: &[u8],
        random: &dyn RandomSource,
    ) -> Result<SealedField, PrivacyError> {
        let mut nonce = [0u8; NONCE_LEN];
        random.fill(&mut nonce)?;
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let aad = sealing_aad(field, about);
        let tag = self
            .aead()?
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(&aad),
                out.get_mut(NONCE_LEN..).unwrap_or_default(),
            )
            .map_err(|_| PrivacyError::Malformed)?;
        out.extend_from_slice(tag.as_ref());
        Ok(SealedField(URL_SAFE_NO_PAD.encode(out)))
    }

    /// Opens a field sealed by [`SubjectKey::seal`] for the same `field` and `about`.
    ///
    /// # Errors
    /// [`PrivacyError::Malformed`]; [`PrivacyError::WrongKey`].
    pub fn open(
        &self,
        field: &str,
        about: &Pseudonym,
        sealed: &SealedField,
    ) -> Result<Vec<u8>, PrivacyError> {
        if sealed.0.len() > MAX_SEALED_LEN {
            return Err(PrivacyError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(&sealed.0)
            .map_err(|_| PrivacyError::Malformed)?;
        if bytes.len() < NONCE_LEN + aead::AES_256_GCM.tag_len() {
            return Err(PrivacyError::Malformed);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce =
            aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| PrivacyError::Malformed)?;
        let mut in_out = sealed.to_vec();
        let aad = sealing_aad(field, about);
        let opened = self
            .aead()?
            .open_in_place(nonce, aead::Aad::from(&aad), &mut in_out)
            .map_err(|_| PrivacyError::WrongKey)?;
        Ok(opened.to_vec())
    }
}

fn pseudonym_bytes(mac: &hmac::Key, kind: &str, value: &str) -> PseudonymBytes {
    let tag = hmac::sign(mac, &labelled(kind, value.as_bytes()));
    let mut bytes = [0u8; PSEUDONYM_BYTES];
    if let Some(short) = tag.as_ref().get(..PSEUDONYM_BYTES) {
        bytes.copy_from_slice(short);
    }
    PseudonymBytes(bytes)
}

/// A pseudonym's bytes, before its text (`ps_` and base64url): what a store keeps of the
/// pseudonyms made with a grant. Not secret: the log names subjects and accounts by them.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PseudonymBytes(pub(crate) [u8; PSEUDONYM_BYTES]);

impl fmt::Debug for PseudonymBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

impl PseudonymBytes {
    /// Its text, as the log holds it.
    pub(crate) fn text(&self) -> Pseudonym {
        // Written on the stack, then copied once into the pseudonym's shared text.
        let mut text = [0u8; PSEUDONYM_TEXT_LEN];
        let (prefix, encoded) = text.split_at_mut(PSEUDONYM_PREFIX.len());
        prefix.copy_from_slice(PSEUDONYM_PREFIX.as_bytes());
        let written = URL_SAFE_NO_PAD.encode_slice(self.0, encoded).ok();
        // Never `None`: base64url of 16 bytes is the 22 ASCII characters the buffer holds.
        match written.and_then(|_| std::str::from_utf8(&text).ok()) {
            Some(text) => Pseudonym::from_trusted_str(text),
            None => {
                let mut text = String::with_capacity(PSEUDONYM_TEXT_LEN);
                self.write_text(&mut text);
                Pseudonym::from_trusted(text)
            }
        }
    }

    /// Appends its text to `out`.
    pub(crate) fn write_text(&self, out: &mut String) {
        out.push_str(PSEUDONYM_PREFIX);
        URL_SAFE_NO_PAD.encode_string(self.0, out);
    }

    /// The bytes of a pseudonym's text; `None` unless it is `ps_` and exactly 16 bytes in
    /// base64url.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let encoded = text.strip_prefix(PSEUDONYM_PREFIX)?;
        if encoded.len() != PSEUDONYM_TEXT_LEN - PSEUDONYM_PREFIX.len() {
            return None;
        }
        // Room for what 22 characters could decode to; exactly 16 bytes must come out.
        let mut decoded = [0u8; PSEUDONYM_BYTES + 2];
        let len = URL_SAFE_NO_PAD.decode_slice(encoded, &mut decoded).ok()?;
        let bytes: [u8; PSEUDONYM_BYTES] = decoded.get(..len)?.try_into().ok()?;
        Some(Self(bytes))
    }
}

impl Serialize for PseudonymBytes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.text().as_str())
    }
}

impl<'de> Deserialize<'de> for PseudonymBytes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom("not a pseudonym's text"))
    }
}

/// The pseudonyms a grant's decisions write, made with the grant under the subject's key: the
/// subject's, and each granted account's in the grant's order. A store keeps them with the
/// grant; erasure deletes them with it and with the key, in one commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantPseudonyms {
    /// The subject's.
    pub(crate) subject: PseudonymBytes,
    /// Each granted account's, in the order of the grant's accounts.
    pub(crate) accounts: Box<[PseudonymBytes]>,
}

fn labelled(kind: &str, value: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(LABEL.len() + kind.len() + 1 + value.len());
    message.extend_from_slice(LABEL);
    message.extend_from_slice(kind.as_bytes());
    message.push(0);
    message.extend_from_slice(value);
    message
}

fn sealing_aad(field: &str, about: &Pseudonym) -> Vec<u8> {
    let mut aad = labelled("sealed", field.as_bytes());
    aad.push(0);
    aad.extend_from_slice(about.as_str().as_bytes());
    aad
}

/// A field sealed under a subject's key: base64url of a 96-bit nonce, the AES-256-GCM
/// ciphertext and its tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SealedField(String);

impl SealedField {
    /// The encoded form, as the log stores it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The commitment to a high-entropy value kept in the log in its place: base64url of its
/// SHA-256. A signed attestation or token carries a random id and a signature, so its digest
/// reveals nothing, and binds the entry to the exact bytes.
pub fn commitment(value: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, value))
}

/// What a log or an answer keeps of a parser's error message: everything from its first quote
/// (`"` or a backtick) on replaced by `…`, but for the position serde_json ends its messages
/// with (` at line L column C`, numbers the parser counted). What a parser quotes is the input,
/// and an input's value may be a personal identifier; nor can the end of a quoted run be found,
/// since a parser does not always escape the quote inside it (serde's backticks never do), so
/// nothing after the first quote is kept.
///
/// ```
/// use consent_broker::privacy::unquoted;
/// assert_eq!(
///     unquoted(r#"invalid type: string "alice-123", expected u64 at line 1 column 30"#),
///     r#"invalid type: string "… at line 1 column 30"#
/// );
/// assert_eq!(
///     unquoted("unknown variant `x`Alice Smith`y`, expected `EdDSA`"),
///     "unknown variant `…"
/// );
/// ```
pub fn unquoted(message: &str) -> String {
    let (body, position) = match message.rsplit_once(" at line ") {
        Some((body, at))
            if at.split_once(" column ").is_some_and(|(line, column)| {
                [line, column]
                    .iter()
                    .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            }) =>
        {
            (body, message.get(body.len()..).unwrap_or_default())
        }
        _ => (message, ""),
    };
    match body.char_indices().find(|&(_, c)| c == '"' || c == '`') {
        Some((at, quote)) => format!("{}{quote}…{position}", body.get(..at).unwrap_or_default()),
        None => message.to_owned(),
    }
}

/// A subject's key as a store keeps it: in its own table, apart from the log, deleted by
/// erasure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectKeyRecord {
    /// The subject (the platform's pairwise id at a broker, the bank's customer id at a bank).
    pub subject: SubjectId,
    /// The key.
    pub key: SubjectKey,
    /// When it was made.
    pub created_at: time::OffsetDateTime,
}

/// A subject's key, and the change that stores it when it was made just now (it goes into the
/// commit that first needs it; a concurrent writer that made one first makes that commit fail
/// with a conflict, and the retry reads theirs).
#[derive(Debug, Clone)]
pub(crate) struct Keyed {
    pub(crate) subject: SubjectId,
    pub(crate) key: SubjectKey,
    pub(crate) insert: Option<crate::store::Change>,
}

impl Keyed {
    /// The subject's stored key, or a new one with its insert.
    pub(crate) fn read_or_make<S: crate::store::StateRead + ?Sized>(
        store: &S,
        subject: &SubjectId,
        random: &dyn RandomSource,
        now: time::OffsetDateTime,
    ) -> Result<Self, KeyedError> {
        Self::stored_or_made(subject, store.subject_key(subject)?, random, now)
    }

    /// The subject's key as read.
    pub(crate) fn stored(subject: &SubjectId, key: SubjectKey) -> Self {
        Self {
            subject: subject.clone(),
            key,
            insert: None,
        }
    }

    /// The subject's key as read (`stored`), or a new one with its insert when it has none.
    pub(crate) fn stored_or_made(
        subject: &SubjectId,
        stored: Option<SubjectKey>,
        random: &dyn RandomSource,
        now: time::OffsetDateTime,
    ) -> Result<Self, KeyedError> {
        if let Some(key) = stored {
            return Ok(Self::stored(subject, key));
        }
        let key = SubjectKey::generate(random)?;
        Ok(Self {
            subject: subject.clone(),
            insert: Some(crate::store::Change::InsertSubjectKey {
                record: SubjectKeyRecord {
                    subject: subject.clone(),
                    key: key.clone(),
                    created_at: now,
                },
            }),
            key,
        })
    }

    /// The subject's stored key, if it has one (never making one: what a refusal about an
    /// existing record uses, so that no key is made again for a subject erased meanwhile).
    pub(crate) fn read_existing<S: crate::store::StateRead + ?Sized>(
        store: &S,
        subject: &SubjectId,
    ) -> Result<Option<Self>, crate::store::StoreError> {
        Ok(store.subject_key(subject)?.map(|key| Self {
            subject: subject.clone(),
            key,
            insert: None,
        }))
    }

    /// What a commit that uses the key must carry: the key's insert if it is new, else the
    /// precondition that the stored key is still this one.
    pub(crate) fn guard(&self) -> KeyGuard {
        match &self.insert {
            Some(change) => KeyGuard::Insert(Box::new(change.clone())),
            None => KeyGuard::Check(crate::store::Precondition::SubjectKeyIs {
                subject: self.subject.clone(),
                key: Box::new(self.key.clone()),
            }),
        }
    }

    /// Adds [`Keyed::guard`] to `commit`.
    pub(crate) fn store_in(&self, commit: crate::store::Commit) -> crate::store::Commit {
        match self.guard() {
            KeyGuard::Insert(change) => commit.change(*change),
            KeyGuard::Check(precondition) => commit.precondition(precondition),
        }
    }
}

/// Pseudonyms already computed, per subject and key: the checked call reads the subject's key
/// from the store on every call (the key may have been erased and replaced since), but computes
/// the subject's and an account's pseudonym once per key rather than twice per call. Bounded:
/// emptied when it holds [`PseudonymCache::CAPACITY`] subjects; an entry is dropped when its
/// subject is erased through this broker, and is not used (and so replaced) once older than
/// [`PseudonymCache::TTL`], so a subject erased through another broker leaves this one's memory
/// within that time of its next use, or when the cache turns over. An answer computed from a key
/// read before this broker forgot the subject is not remembered (see [`PseudonymCache::epoch`]).
///
/// One [`Table`](crate::table::Table), each subject's entry in place with what it remembers: the
/// key, the subject's id and pseudonym, and (the first few in place) its accounts' ids and
/// pseudonyms. When the subject is one among millions, a lookup fetches a line of the table's
/// index and the entry, not a text, a key and a list apiece. The key is wiped where it sat when
/// the entry goes, and the table's growth leaves no copy of it. A lookup takes one read lock and
/// copies the pseudonyms out with text of their own: nothing the answer holds is shared with the
/// cache or with another thread's answer.
#[derive(Default)]
pub(crate) struct PseudonymCache {
    subjects: std::sync::RwLock<crate::table::Table<Cached>>,
    /// How many times a subject was forgotten (changed under the write lock).
    forgotten: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for PseudonymCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PseudonymCache(..)")
    }
}

/// The length of a pseudonym's text: the prefix and 16 bytes in unpadded base64.
const PSEUDONYM_TEXT_LEN: usize = PSEUDONYM_PREFIX.len() + (PSEUDONYM_BYTES * 4).div_ceil(3);
/// Bytes of a subject's id kept in place (a UUID's 36 fit).
const SUBJECT_INLINE: usize = 46;
/// Bytes of remembered accounts kept in place (one with an id of up to 36 bytes).
const ACCOUNTS_INLINE: usize = 62;

/// One subject's pseudonyms under one key.
#[derive(Clone)]
struct Cached {
    /// When it was made, by the broker's clock.
    made: time::OffsetDateTime,
    /// The key they were made under (wiped when dropped).
    key: SubjectKey,
    subject: crate::table::Text<SUBJECT_INLINE>,
    /// The subject's pseudonym's text.
    pseudonym: arrayvec::ArrayString<PSEUDONYM_TEXT_LEN>,
    /// Each remembered account: its id, a comma (which no id holds), its pseudonym.
    accounts: crate::table::Text<ACCOUNTS_INLINE>,
    /// How many accounts it remembers.
    count: u8,
}

impl crate::table::Keyed for Cached {
    fn key(&self) -> &[u8] {
        self.subject.bytes()
    }

    /// The key copied; the texts held apart (a long id, many accounts) handed over, not copied.
    fn relocated(&mut self) -> Self {
        Self {
            made: self.made,
            key: self.key.clone(),
            subject: self.subject.take(),
            pseudonym: self.pseudonym,
            accounts: self.accounts.take(),
            count: self.count,
        }
    }
}

impl Cached {
    /// An entry for `subject` under `key` with the subject's pseudonym; `None` if it cannot be
    /// held (a pseudonym unlike any this crate makes): then nothing is cached.
    fn new(
        now: time::OffsetDateTime,
        key: &SubjectKey,
        subject: &SubjectId,
        pseudonym: &Pseudonym,
    ) -> Option<Self> {
        Some(Self {
            made: now,
            key: key.clone(),
            subject: crate::table::Text::new(subject.as_str()),
            pseudonym: arrayvec::ArrayString::from(pseudonym.as_str()).ok()?,
            accounts: crate::table::Text::new(""),
            count: 0,
        })
    }

    /// Whether it may serve for `key` at `now`.
    fn serves(&self, key: &SubjectKey, now: time::OffsetDateTime) -> bool {
        self.key == *key && now - self.made < PseudonymCache::TTL
    }

    /// Each remembered account's id and pseudonym.
    fn remembered(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut rest = self.accounts.as_str();
        std::iter::from_fn(move || {
            let (id, after) = rest.split_once(',')?;
            let (pseudonym, after) = after.split_at_checked(PSEUDONYM_TEXT_LEN)?;
            rest = after;
            Some((id, pseudonym))
        })
    }

    /// The account's pseudonym, with text of its own, if remembered.
    fn account(&self, account: &AccountId) -> Option<Pseudonym> {
        let wanted = account.as_str();
        self.remembered()
            .find(|(id, _)| *id == wanted)
            .map(|(_, pseudonym)| pseudonym_from(pseudonym))
    }

    /// Whether no further account is remembered.
    fn full(&self) -> bool {
        usize::from(self.count) >= ACCOUNTS_PER_SUBJECT
    }

    /// Remembers an account's pseudonym, below the bound and if not already there.
    fn remember(&mut self, account: &AccountId, pseudonym: &Pseudonym) {
        let (id, pseudonym) = (account.as_str(), pseudonym.as_str());
        if self.full()
            || pseudonym.len() != PSEUDONYM_TEXT_LEN
            || id.contains(',')
            || self.account(account).is_some()
        {
            return;
        }
        let held = self.accounts.as_str();
        let mut accounts = String::with_capacity(held.len() + id.len() + 1 + pseudonym.len());
        accounts.push_str(held);
        accounts.push_str(id);
        accounts.push(',');
        accounts.push_str(pseudonym);
        self.accounts = crate::table::Text::new(&accounts);
        self.count += 1;
    }
}

/// A pseudonym, with text of its own, from the text a [`Cached`] holds.
fn pseudonym_from(text: &str) -> Pseudonym {
    Pseudonym::from_trusted_str(text)
}

/// A subject's pseudonym and, when one was asked for, an account's with the account it is of.
#[derive(Debug, Clone)]
pub(crate) struct Pseudonyms {
    /// The subject's.
    pub(crate) subject: Pseudonym,
    /// The account asked about and its pseudonym, if one was.
    pub(crate) account: Option<(AccountId, Pseudonym)>,
}

impl Pseudonyms {
    /// The pseudonym of `account`, if it is the one asked about.
    pub(crate) fn account(&self, account: &AccountId) -> Option<&Pseudonym> {
        self.account
            .as_ref()
            .filter(|(id, _)| id == account)
            .map(|(_, pseudonym)| pseudonym)
    }
}

/// Accounts remembered per subject at most (a subject has a handful).
const ACCOUNTS_PER_SUBJECT: usize = 64;

impl PseudonymCache {
    /// Subjects remembered at most.
    pub(crate) const CAPACITY: usize = 65_536;

    /// How long an entry is used (by the broker's clock).
    pub(crate) const TTL: time::Duration = time::Duration::minutes(10);

    /// Forgets a subject (erased), its key wiped where it sat.
    pub(crate) fn forget(&self, subject: &SubjectId) {
        let mut table = self
            .subjects
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Release: a reader that sees the new epoch sees the erasure committed before it.
        self.forgotten
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        table.discard(subject.as_str().as_bytes());
    }

    /// To read before the subject's key is read from the store, and give to [`Self::get`]: a key
    /// read before an erasure committed, handed to `get` after the erasure forgot the subject,
    /// would otherwise be remembered again, with the subject's pseudonyms, after the erasure.
    pub(crate) fn epoch(&self) -> u64 {
        self.forgotten.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The pseudonyms of `subject`, and of `account` if given, under `key` (the key the store
    /// holds now, read after [`Self::epoch`] gave `epoch`), at `now` (the broker's time: no clock
    /// is read here). Remembered only if no subject was forgotten since `epoch`.
    pub(crate) fn get(
        &self,
        subject: &SubjectId,
        key: &SubjectKey,
        account: Option<&AccountId>,
        now: time::OffsetDateTime,
        epoch: u64,
    ) -> Pseudonyms {
        let text = subject.as_str().as_bytes();
        // The entry's pseudonyms, and whether its accounts are at their bound.
        let found = self.subjects.read().ok().and_then(|table| {
            let cached = table.get(text).filter(|c| c.serves(key, now))?;
            let account =
                account.and_then(|account| Some((account.clone(), cached.account(account)?)));
            Some((pseudonym_from(&cached.pseudonym), account, cached.full()))
        });
        let full = match found {
            Some((subject, found, _)) if account.is_none() || found.is_some() => {
                return Pseudonyms {
                    subject,
                    account: found,
                };
            }
            Some((_, _, full)) => full,
            None => false,
        };
        // Computed with no lock held (an HMAC each), then remembered.
        let made = Pseudonyms {
            subject: match &found {
                Some((subject, _, _)) => subject.clone(),
                None => key.subject(subject),
            },
            account: account.map(|account| (account.clone(), key.account(account))),
        };
        if full {
            // Nothing would be remembered: no write lock for every other subject to wait on.
            return made;
        }
        let mut turned = None;
        if let Ok(mut table) = self.subjects.write() {
            if self.forgotten.load(std::sync::atomic::Ordering::Relaxed) != epoch {
                // A subject was forgotten since the key was read: perhaps this one.
                return made;
            }
            if !table.get(text).is_some_and(|c| c.serves(key, now)) {
                table.discard(text);
                if table.len() >= Self::CAPACITY {
                    turned = Some(std::mem::take(&mut *table));
                }
                if let Some(cached) = Cached::new(now, key, subject, &made.subject) {
                    // Full only past four thousand million subjects: then it is not remembered.
                    let _ = table.insert(cached);
                }
            }
            if let (Some(cached), Some((account, pseudonym))) = (table.get_mut(text), &made.account)
            {
                cached.remember(account, pseudonym);
            }
        }
        // A turned-over table's keys are wiped as it drops: not while every decision waits for
        // the lock.
        drop(turned);
        made
    }
}

/// What a commit that uses a subject's key carries (see [`Keyed::guard`]).
#[derive(Debug, Clone)]
pub(crate) enum KeyGuard {
    Insert(Box<crate::store::Change>),
    Check(crate::store::Precondition),
}

/// Why a subject's key could not be read or made.
#[derive(Debug)]
pub(crate) enum KeyedError {
    Store(crate::store::StoreError),
    Random(RandomError),
}

impl From<crate::store::StoreError> for KeyedError {
    fn from(error: crate::store::StoreError) -> Self {
        Self::Store(error)
    }
}

impl From<RandomError> for KeyedError {
    fn from(error: RandomError) -> Self {
        Self::Random(error)
    }
}

impl From<KeyedError> for crate::Error {
    fn from(error: KeyedError) -> Self {
        match error {
            KeyedError::Store(error) => Self::Store(error),
            KeyedError::Random(error) => error.into(),
        }
    }
}

impl From<KeyedError> for crate::BankError {
    fn from(error: KeyedError) -> Self {
        match error {
            KeyedError::Store(error) => Self::Store(error),
            KeyedError::Random(_) => Self::Key(crate::keys::KeyError::RandomnessUnavailable),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::SeededRandom;

    fn key(seed: u64) -> SubjectKey {
        SubjectKey::generate(&SeededRandom::new(seed)).unwrap()
    }

    fn accounts_remembered(cache: &PseudonymCache, subject: &SubjectId) -> Option<usize> {
        let table = cache.subjects.read().unwrap();
        table
            .get(subject.as_str().as_bytes())
            .map(|cached| usize::from(cached.count))
    }

    /// The cache answers what the key computes, for the key the store holds now: never a
    /// pseudonym made under a key since replaced, nor one older than its TTL, nor one of another
    /// account or subject; and it remembers an account only when one was asked for.
    #[test]
    fn cached_pseudonyms_are_the_current_keys() {
        let cache = PseudonymCache::default();
        let (alice, bob): (SubjectId, SubjectId) =
            ("alice".parse().unwrap(), "bob".parse().unwrap());
        let (one, two): (AccountId, AccountId) =
            ("acc-1".parse().unwrap(), "acc-2".parse().unwrap());
        let now = time::OffsetDateTime::UNIX_EPOCH;
        let (old, new) = (key(1), key(2));
        // Asks the cache and checks the answer against the key itself.
        let ask = |subject: &SubjectId,
                   key: &SubjectKey,
                   account: Option<&AccountId>,
                   at: time::OffsetDateTime| {
            let got = cache.get(subject, key, account, at, cache.epoch());
            assert_eq!(got.subject, key.subject(subject));
            let expected = account.map(|account| (account.clone(), key.account(account)));
            assert_eq!(got.account, expected);
        };

        // A foreign platform's question: the subject's pseudonym only, no account remembered.
        ask(&alice, &old, None, now);
        assert_eq!(accounts_remembered(&cache, &alice), Some(0));
        // Asked twice, from the cache the second time; another account beside it.
        for account in [&one, &one, &two, &one] {
            ask(&alice, &old, Some(account), now);
        }
        assert_eq!(accounts_remembered(&cache, &alice), Some(2));
        // Another subject under the same key has pseudonyms of its own.
        ask(&bob, &old, Some(&one), now);
        // The key replaced (erased and made again): the new key's pseudonyms, the old ones gone.
        ask(&alice, &new, Some(&one), now);
        assert_eq!(accounts_remembered(&cache, &alice), Some(1));
        ask(&alice, &new, Some(&two), now);
        // Past the TTL the entry is made again (its accounts with it).
        ask(&alice, &new, None, now + PseudonymCache::TTL);
        assert_eq!(accounts_remembered(&cache, &alice), Some(0));
        // Forgotten at erasure.
        cache.forget(&alice);
        assert_eq!(accounts_remembered(&cache, &alice), None);
        assert_eq!(accounts_remembered(&cache, &bob), Some(1));
    }

    /// Two answers from the cache share no pseudonym's text with each other (nor, so, with the
    /// cache): every deciding thread reads the same entry, and a shared count would be a line
    /// they all write.
    #[test]
    fn cached_answers_share_nothing() {
        let cache = PseudonymCache::default();
        let alice: SubjectId = "alice".parse().unwrap();
        let account: AccountId = "acc-1".parse().unwrap();
        let (key, now) = (key(4), time::OffsetDateTime::UNIX_EPOCH);
        cache.get(&alice, &key, Some(&account), now, cache.epoch());
        let (one, two) = (
            cache.get(&alice, &key, Some(&account), now, cache.epoch()),
            cache.get(&alice, &key, Some(&account), now, cache.epoch()),
        );
        assert_eq!(one.subject, two.subject);
        assert_ne!(one.subject.as_str().as_ptr(), two.subject.as_str().as_ptr());
        let (a, b) = (
            one.account(&account).unwrap(),
            two.account(&account).unwrap(),
        );
        assert_eq!(a, b);
        assert_ne!(a.as_str().as_ptr(), b.as_str().as_ptr());
    }

    /// Subjects and accounts with ids of every length up to the longest allowed, packed side by
    /// side in entries: each answer is what the key computes, from the cache as afresh, and no
    /// entry answers for another subject or account (one whose id is a prefix of another's).
    #[test]
    fn packed_entries_answer_for_their_own_ids_only() {
        let cache = PseudonymCache::default();
        let key = key(5);
        let now = time::OffsetDateTime::UNIX_EPOCH;
        let ids: Vec<String> = (1..=crate::ids::MAX_ID_LEN)
            .step_by(7)
            .chain([crate::ids::MAX_ID_LEN])
            .map(|len| "s".repeat(len))
            .collect();
        for round in 0..2 {
            for (i, subject) in ids.iter().enumerate() {
                let subject: SubjectId = subject.parse().unwrap();
                for account in ids.iter().skip(i % 3).step_by(5) {
                    let account: AccountId = account.parse().unwrap();
                    let got = cache.get(&subject, &key, Some(&account), now, cache.epoch());
                    assert_eq!(got.subject, key.subject(&subject), "round {round}");
                    assert_eq!(got.account(&account), Some(&key.account(&account)));
                }
            }
            // The table grew past 16 subjects in the first round: every entry's texts came
            // through whole (checked before the second round could remember them again).
            let table = cache.subjects.read().unwrap();
            assert_eq!(table.len(), ids.len());
            for (i, subject) in ids.iter().enumerate() {
                let cached = table.get(subject.as_bytes()).unwrap();
                let subject: SubjectId = subject.parse().unwrap();
                assert_eq!(cached.subject.as_str(), subject.as_str());
                assert_eq!(cached.pseudonym.as_str(), key.subject(&subject).as_str());
                for account in ids.iter().skip(i % 3).step_by(5) {
                    let account: AccountId = account.parse().unwrap();
                    assert_eq!(cached.account(&account), Some(key.account(&account)));
                }
            }
        }
    }

    /// A key read before the subject was forgotten (an erasure committed and forgotten between
    /// a decision's read of the key and its answer) is not remembered again; read after, it is.
    #[test]
    fn a_key_read_before_the_subject_was_forgotten_is_not_remembered() {
        let cache = PseudonymCache::default();
        let alice: SubjectId = "alice".parse().unwrap();
        let account: AccountId = "acc-1".parse().unwrap();
        let (key, now) = (key(6), time::OffsetDateTime::UNIX_EPOCH);
        let before = cache.epoch();
        cache.get(&alice, &key, None, now, before);
        assert_eq!(accounts_remembered(&cache, &alice), Some(0));
        // The erasure forgets alice; a decision that read her key before it answers after.
        cache.forget(&alice);
        let got = cache.get(&alice, &key, Some(&account), now, before);
        assert_eq!(got.subject, key.subject(&alice));
        assert_eq!(got.account(&account), Some(&key.account(&account)));
        assert_eq!(accounts_remembered(&cache, &alice), None);
        // A decision that read the (new) key after the erasure is remembered as before.
        cache.get(&alice, &key, Some(&account), now, cache.epoch());
        assert_eq!(accounts_remembered(&cache, &alice), Some(1));
    }

    /// A subject's accounts are remembered up to the bound; past it, pseudonyms are still right,
    /// only made afresh.
    #[test]
    fn a_subjects_remembered_accounts_are_bounded() {
        let cache = PseudonymCache::default();
        let alice: SubjectId = "alice".parse().unwrap();
        let key = key(3);
        let now = time::OffsetDateTime::UNIX_EPOCH;
        for n in 0..ACCOUNTS_PER_SUBJECT + 8 {
            let account: AccountId = format!("acc-{n}").parse().unwrap();
            let got = cache.get(&alice, &key, Some(&account), now, cache.epoch());
            assert_eq!(got.account(&account), Some(&key.account(&account)));
            assert_eq!(got.account(&"acc-other".parse().unwrap()), None);
        }
        assert_eq!(
            accounts_remembered(&cache, &alice),
            Some(ACCOUNTS_PER_SUBJECT)
        );
    }

    #[test]
    fn a_grants_pseudonyms_are_the_keys_and_their_text_reads_back() {
        let key = SubjectKey::from_bytes(&[9; 32]);
        let alice: SubjectId = "alice".parse().unwrap();
        let accounts: crate::sets::AccountSet = ["acc-1", "acc-2"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let kept = key.grant_pseudonyms(&alice, &accounts);
        assert_eq!(kept.subject.text(), key.subject(&alice));
        let made: Vec<Pseudonym> = accounts.iter().map(|a| key.account(a)).collect();
        let texts: Vec<Pseudonym> = kept.accounts.iter().map(PseudonymBytes::text).collect();
        assert_eq!(texts, made);
        for pseudonym in &made {
            let bytes = PseudonymBytes::parse(pseudonym.as_str()).unwrap();
            assert_eq!(&bytes.text(), pseudonym);
        }
        // Only this crate's form: the prefix, 22 characters, no bits past the 16 bytes.
        let text = made[0].as_str();
        for other in [
            &text[3..],
            &text[..text.len() - 1],
            &format!("{text}A"),
            &format!("xx_{}", &text[3..]),
            "ps_AAAAAAAAAAAAAAAAAAAAAB",
            "ps_AAAAAAAAAAAAAAAAAAAA==",
        ] {
            assert_eq!(PseudonymBytes::parse(other), None, "{other}");
        }
        assert!(PseudonymBytes::parse("ps_AAAAAAAAAAAAAAAAAAAAAA").is_some());
    }

    #[test]
    fn pseudonyms_are_keyed_and_separated_by_kind() {
        let (a, b) = (key(1), key(2));
        let alice = SubjectId::new("alice").unwrap();
        let p = a.subject(&alice);
        assert!(p.as_str().starts_with(PSEUDONYM_PREFIX));
        assert_eq!(p.as_str().len(), PSEUDONYM_PREFIX.len() + 22);
        assert_ne!(p, b.subject(&alice));
        assert_ne!(
            a.account(&AccountId::new("alice").unwrap()).as_str(),
            p.as_str()
        );
        assert_ne!(a.device("alice").as_str(), p.as_str());
        assert_eq!(SubjectKey::from_bytes(&a.to_bytes()).subject(&alice), p);
    }

    #[test]
    fn sealed_fields_open_only_for_their_key_field_and_subject() {
        let (a, b) = (key(1), key(2));
        let random = SeededRandom::new(3);
        let p = a.subject(&SubjectId::new("alice").unwrap());
        let q = a.subject(&SubjectId::new("bob").unwrap());
        let sealed = a.seal("attestation", &p, b"secret", &random).unwrap();
        assert_eq!(a.open("attestation", &p, &sealed).unwrap(), b"secret");
        assert_eq!(
            b.open("attestation", &p, &sealed),
            Err(PrivacyError::WrongKey)
        );
        assert_eq!(
            a.open("attestation", &q, &sealed),
            Err(PrivacyError::WrongKey)
        );
        assert_eq!(a.open("other", &p, &sealed), Err(PrivacyError::WrongKey));
        let mut altered = sealed.as_str().to_owned();
        altered.replace_range(20..21, if &altered[20..21] == "A" { "B" } else { "A" });
        assert_eq!(
            a.open("attestation", &p, &SealedField(altered)),
            Err(PrivacyError::WrongKey)
        );
        assert_eq!(
            a.open("attestation", &p, &SealedField("%%".into())),
            Err(PrivacyError::Malformed)
        );
        assert_eq!(
            a.open("attestation", &p, &SealedField("AAAA".into())),
            Err(PrivacyError::Malformed)
        );
        assert!(!sealed.as_str().contains("secret"));
    }

    #[test]
    fn a_parsers_message_loses_what_it_quoted() {
        assert_eq!(
            unquoted(r#"invalid type: string "alice-123", expected u64 at line 1 column 30"#),
            r#"invalid type: string "… at line 1 column 30"#
        );
        assert_eq!(
            unquoted("unknown field `acct-9`, expected one of"),
            "unknown field `…"
        );
        assert_eq!(unquoted(r#"unterminated "alice"#), r#"unterminated "…"#);
        assert_eq!(unquoted("nothing quoted"), "nothing quoted");
        assert_eq!(
            unquoted("a syntax error at line 3 column 9"),
            "a syntax error at line 3 column 9"
        );
    }

    /// A quote inside the quoted value (serde's backticks are never escaped; a `"` is escaped as
    /// `\"`) does not end what is dropped: nothing of the value is kept, wherever it ends.
    #[test]
    fn a_quote_inside_a_quoted_value_keeps_none_of_it() {
        let secret = "Alice Smith, IBAN DE89370400440532013000";
        for message in [
            format!("unknown variant `x`{secret}`y`, expected one of `EdDSA`, `ES256`"),
            format!("invalid type: string \"x\\\"{secret}\\\"y\", expected a map"),
            format!("unknown field `a`, expected `b` or `{secret}` at line 1 column 9"),
            format!("`{secret} at line 1 column 9"),
            format!("x at line 1 column 9 \"{secret}\" at line 1 column 9"),
        ] {
            let kept = unquoted(&message);
            assert!(!kept.contains("Alice"), "{message} -> {kept}");
            assert!(!kept.contains("DE89"), "{message} -> {kept}");
        }
        // Not a position: kept out with the rest.
        assert_eq!(unquoted(&format!("`x` at line {secret} column 1")), "`…");
    }

    #[test]
    fn a_commitment_is_sha256() {
        assert_eq!(
            commitment(b"abc"),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
    }
}
