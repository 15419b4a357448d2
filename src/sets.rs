//! Compact sets for what a consent holds: scopes and purposes as bitsets, accounts as a sorted
//! slice.
//!
//! A stored consent carries several of these sets (requested and granted scopes, purposes and
//! accounts), and a broker may hold a million consents. A `BTreeSet` spends a separate node
//! allocation on every non-empty set (a few hundred bytes for one account); these types spend
//! one byte on a set of scopes or purposes and one exactly sized allocation on a set of accounts.
//! They behave like ordered sets: iteration, `Debug` and the serialized form (a JSON array) are
//! in ascending order without duplicates, exactly as a `BTreeSet` of the same values, so stored
//! records and wire formats are unchanged.

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::AccountId;
use crate::vocab::{Purpose, Scope};

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::vocab::Scope {}
    impl Sealed for crate::vocab::Purpose {}
}

/// A closed vocabulary small enough for a bitset: [`Scope`] and [`Purpose`].
pub trait Flag: Copy + Ord + fmt::Debug + sealed::Sealed + 'static {
    /// Every value, in ascending order; a value's bit is its position here.
    const ALL: &'static [Self];

    /// This value's bit.
    fn bit(self) -> u8;
}

impl Flag for Scope {
    const ALL: &'static [Self] = &[Scope::Balance, Scope::Alerts, Scope::Transactions];

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl Flag for Purpose {
    const ALL: &'static [Self] = &[Purpose::CustomerService, Purpose::FraudProtection];

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of [`Flag`] values in one byte.
///
/// ```
/// use consent_broker::{Scope, ScopeSet};
///
/// let scopes = ScopeSet::from([Scope::Alerts, Scope::Balance, Scope::Alerts]);
/// assert_eq!(scopes.len(), 2);
/// assert!(scopes.contains(Scope::Balance));
/// assert_eq!(scopes.iter().collect::<Vec<_>>(), [Scope::Balance, Scope::Alerts]);
/// assert_eq!(serde_json::to_string(&scopes).unwrap(), r#"["balance","alerts"]"#);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlagSet<T: Flag> {
    bits: u8,
    of: PhantomData<T>,
}

/// A set of scopes.
pub type ScopeSet = FlagSet<Scope>;
/// A set of purposes.
pub type PurposeSet = FlagSet<Purpose>;

impl<T: Flag> FlagSet<T> {
    /// The empty set.
    pub const fn new() -> Self {
        Self {
            bits: 0,
            of: PhantomData,
        }
    }

    /// Adds `value`; whether it was absent.
    pub fn insert(&mut self, value: T) -> bool {
        let absent = !self.contains(value);
        self.bits |= value.bit();
        absent
    }

    /// Removes `value`; whether it was present.
    pub fn remove(&mut self, value: T) -> bool {
        let present = self.contains(value);
        self.bits &= !value.bit();
        present
    }

    /// Whether `value` (given by value or by reference) is in the set.
    pub fn contains(&self, value: impl Borrow<T>) -> bool {
        self.bits & value.borrow().bit() != 0
    }

    /// How many values the set holds.
    pub fn len(&self) -> usize {
        self.bits.count_ones() as usize
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }

    /// Whether every value of `self` is in `other`.
    pub fn is_subset(&self, other: &Self) -> bool {
        self.bits & !other.bits == 0
    }

    /// The values in ascending order.
    pub fn iter(&self) -> FlagIter<T> {
        FlagIter {
            bits: self.bits,
            all: T::ALL.iter(),
        }
    }

    /// The smallest value, if any.
    pub fn first(&self) -> Option<T> {
        self.iter().next()
    }
}

impl<T: Flag> Default for FlagSet<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Flag> fmt::Debug for FlagSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl<T: Flag> FromIterator<T> for FlagSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(values: I) -> Self {
        let mut set = Self::new();
        set.extend(values);
        set
    }
}

impl<T: Flag> Extend<T> for FlagSet<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, values: I) {
        for value in values {
            self.insert(value);
        }
    }
}

impl<T: Flag, const N: usize> From<[T; N]> for FlagSet<T> {
    fn from(values: [T; N]) -> Self {
        values.into_iter().collect()
    }
}

/// The values of a [`FlagSet`], in ascending order.
#[derive(Debug, Clone)]
pub struct FlagIter<T: Flag> {
    bits: u8,
    all: std::slice::Iter<'static, T>,
}

impl<T: Flag> Iterator for FlagIter<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        let bits = self.bits;
        self.all.by_ref().copied().find(|v| bits & v.bit() != 0)
    }
}

impl<T: Flag> DoubleEndedIterator for FlagIter<T> {
    fn next_back(&mut self) -> Option<T> {
        let bits = self.bits;
        self.all
            .by_ref()
            .rev()
            .copied()
            .find(|v| bits & v.bit() != 0)
    }
}

impl<T: Flag> IntoIterator for FlagSet<T> {
    type Item = T;
    type IntoIter = FlagIter<T>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<T: Flag> IntoIterator for &FlagSet<T> {
    type Item = T;
    type IntoIter = FlagIter<T>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<T: Flag + Serialize> Serialize for FlagSet<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de, T: Flag + Deserialize<'de>> Deserialize<'de> for FlagSet<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(SetVisitor(PhantomData))
    }
}

/// Reads a JSON array into any of the sets (duplicates collapse, as in a `BTreeSet`).
struct SetVisitor<C, T>(PhantomData<fn() -> (C, T)>);

impl<'de, C, T> Visitor<'de> for SetVisitor<C, T>
where
    C: FromIterator<T>,
    T: Deserialize<'de>,
{
    type Value = C;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<C, A::Error> {
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
        while let Some(value) = seq.next_element::<T>()? {
            values.push(value);
        }
        Ok(values.into_iter().collect())
    }
}

/// Uses of data the subject agreed to receive unsealed: pairs of a [`Scope`] and a [`Purpose`]
/// (the data, and what the platform says it is for), in one byte. A pair names exactly what may
/// leave the bank unsealed: allowing alerts for fraud protection does not let a balance out
/// unsealed under the same purpose label. Serialized as an array of `[scope, purpose]` pairs in
/// ascending order.
///
/// ```
/// use consent_broker::{PlaintextUses, Purpose, Scope};
///
/// let uses = PlaintextUses::from([(Scope::Alerts, Purpose::FraudProtection)]);
/// assert!(uses.contains(Scope::Alerts, Purpose::FraudProtection));
/// assert!(!uses.contains(Scope::Balance, Purpose::FraudProtection));
/// assert_eq!(
///     serde_json::to_string(&uses).unwrap(),
///     r#"[["alerts","fraud_protection"]]"#
/// );
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PlaintextUses {
    bits: u8,
}

impl PlaintextUses {
    /// The empty set: everything sealed.
    pub const fn new() -> Self {
        Self { bits: 0 }
    }

    fn bit(scope: Scope, purpose: Purpose) -> u8 {
        // Three scopes times two purposes: six bits.
        1 << ((scope as u8) * (Purpose::ALL.len() as u8) + purpose as u8)
    }

    /// Adds a use; whether it was absent.
    pub fn insert(&mut self, scope: Scope, purpose: Purpose) -> bool {
        let absent = !self.contains(scope, purpose);
        self.bits |= Self::bit(scope, purpose);
        absent
    }

    /// Whether data of `scope` may leave unsealed for `purpose`.
    pub fn contains(&self, scope: Scope, purpose: Purpose) -> bool {
        self.bits & Self::bit(scope, purpose) != 0
    }

    /// How many uses the set holds.
    pub fn len(&self) -> usize {
        self.bits.count_ones() as usize
    }

    /// Whether the set is empty (everything sealed).
    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }

    /// Whether every use of `self` is in `other`.
    pub fn is_subset(&self, other: &Self) -> bool {
        self.bits & !other.bits == 0
    }

    /// The uses, ordered by scope, then purpose.
    pub fn iter(&self) -> impl Iterator<Item = (Scope, Purpose)> + '_ {
        Scope::ALL.into_iter().flat_map(move |scope| {
            Purpose::ALL
                .into_iter()
                .filter(move |purpose| self.contains(scope, *purpose))
                .map(move |purpose| (scope, purpose))
        })
    }
}

impl fmt::Debug for PlaintextUses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<(Scope, Purpose)> for PlaintextUses {
    fn from_iter<I: IntoIterator<Item = (Scope, Purpose)>>(uses: I) -> Self {
        let mut set = Self::new();
        for (scope, purpose) in uses {
            set.insert(scope, purpose);
        }
        set
    }
}

impl<const N: usize> From<[(Scope, Purpose); N]> for PlaintextUses {
    fn from(uses: [(Scope, Purpose); N]) -> Self {
        uses.into_iter().collect()
    }
}

impl Serialize for PlaintextUses {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// An element of a serialized [`PlaintextUses`]: a `[scope, purpose]` pair, or a bare purpose
/// as an earlier draft of the format wrote it (purposes without scopes), which is read as nothing
/// unsealed: a permission that did not name its scope is not widened to every scope, it is
/// dropped (fail closed: those responses are sealed).
#[derive(Deserialize)]
#[serde(untagged)]
enum UseElement {
    Use(Scope, Purpose),
    Draft(
        #[expect(
            dead_code,
            reason = "read only to accept the draft's form, then dropped"
        )]
        Purpose,
    ),
}

impl<'de> Deserialize<'de> for PlaintextUses {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let elements: Vec<UseElement> = deserializer.deserialize_seq(SetVisitor(PhantomData))?;
        Ok(elements
            .into_iter()
            .filter_map(|element| match element {
                UseElement::Use(scope, purpose) => Some((scope, purpose)),
                UseElement::Draft(_) => None,
            })
            .collect())
    }
}

/// A set of accounts: sorted, without duplicates, in one exactly sized allocation.
///
/// ```
/// use consent_broker::{AccountId, AccountSet};
///
/// let a: AccountId = "acc-a".parse().unwrap();
/// let b: AccountId = "acc-b".parse().unwrap();
/// let accounts = AccountSet::from([b.clone(), a.clone(), b.clone()]);
/// assert_eq!(accounts.len(), 2);
/// assert!(accounts.contains(&a));
/// assert_eq!(accounts.first(), Some(&a));
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct AccountSet(Box<[AccountId]>);

impl AccountSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `account`; whether it was absent.
    pub fn insert(&mut self, account: AccountId) -> bool {
        match self.0.binary_search(&account) {
            Ok(_) => false,
            Err(at) => {
                let mut accounts = std::mem::take(&mut self.0).into_vec();
                accounts.insert(at, account);
                self.0 = accounts.into_boxed_slice();
                true
            }
        }
    }

    /// Whether `account` is in the set.
    pub fn contains(&self, account: &AccountId) -> bool {
        self.0.binary_search(account).is_ok()
    }

    /// How many accounts the set holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether every account of `self` is in `other`.
    pub fn is_subset(&self, other: &Self) -> bool {
        self.0.iter().all(|account| other.contains(account))
    }

    /// The accounts in ascending order.
    pub fn iter(&self) -> std::slice::Iter<'_, AccountId> {
        self.0.iter()
    }

    /// The smallest account, if any.
    pub fn first(&self) -> Option<&AccountId> {
        self.0.first()
    }

    /// The accounts in ascending order, as a slice.
    pub fn as_slice(&self) -> &[AccountId] {
        &self.0
    }

    /// Wraps accounts already in ascending order without duplicates (as a set's own slice is).
    pub(crate) fn from_sorted(accounts: Box<[AccountId]>) -> Self {
        debug_assert!(
            accounts
                .windows(2)
                .all(|pair| matches!(pair, [a, b] if a < b))
        );
        Self(accounts)
    }
}

impl fmt::Debug for AccountSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<AccountId> for AccountSet {
    fn from_iter<I: IntoIterator<Item = AccountId>>(accounts: I) -> Self {
        let mut accounts: Vec<AccountId> = accounts.into_iter().collect();
        accounts.sort_unstable();
        accounts.dedup();
        Self(accounts.into_boxed_slice())
    }
}

impl<const N: usize> From<[AccountId; N]> for AccountSet {
    fn from(accounts: [AccountId; N]) -> Self {
        accounts.into_iter().collect()
    }
}

impl IntoIterator for AccountSet {
    type Item = AccountId;
    type IntoIter = std::vec::IntoIter<AccountId>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_vec().into_iter()
    }
}

impl<'a> IntoIterator for &'a AccountSet {
    type Item = &'a AccountId;
    type IntoIter = std::slice::Iter<'a, AccountId>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Serialize for AccountSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for AccountSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(SetVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn plaintext_uses_round_trip_and_a_drafts_bare_purposes_unseal_nothing() {
        let every: Vec<(Scope, Purpose)> = Scope::ALL
            .into_iter()
            .flat_map(|scope| Purpose::ALL.map(|purpose| (scope, purpose)))
            .collect();
        for bits in 0u8..64 {
            let uses: PlaintextUses = (0..every.len())
                .filter(|k| bits & (1 << k) != 0)
                .map(|k| every[k])
                .collect();
            assert_eq!(uses.len(), bits.count_ones() as usize);
            let json = serde_json::to_string(&uses).unwrap();
            assert_eq!(serde_json::from_str::<PlaintextUses>(&json).unwrap(), uses);
        }
        let draft: PlaintextUses =
            serde_json::from_str(r#"["fraud_protection", ["alerts", "customer_service"]]"#)
                .unwrap();
        assert_eq!(
            draft,
            PlaintextUses::from([(Scope::Alerts, Purpose::CustomerService)])
        );
        for bad in [
            r#"["ads"]"#,
            r#"[["ads", "fraud_protection"]]"#,
            r#"[["balance"]]"#,
            "{}",
        ] {
            assert!(serde_json::from_str::<PlaintextUses>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flag_sets_behave_like_ordered_sets() {
        for bits in 0u8..8 {
            let values: Vec<Scope> = Scope::ALL
                .iter()
                .copied()
                .filter(|s| bits & s.bit() != 0)
                .collect();
            let ours: ScopeSet = values.iter().rev().copied().collect();
            let reference: BTreeSet<Scope> = values.iter().copied().collect();
            assert_eq!(ours.len(), reference.len());
            assert_eq!(ours.iter().collect::<Vec<_>>(), values);
            let backwards: Vec<Scope> = ours.iter().rev().collect();
            assert_eq!(backwards, values.iter().rev().copied().collect::<Vec<_>>());
            assert_eq!(ours.into_iter().count(), values.len());
            assert_eq!(
                serde_json::to_string(&ours).unwrap(),
                serde_json::to_string(&reference).unwrap()
            );
            assert_eq!(format!("{ours:?}"), format!("{reference:?}"));
            let back: ScopeSet =
                serde_json::from_str(&serde_json::to_string(&reference).unwrap()).unwrap();
            assert_eq!(back, ours);
        }
        let mut set = PurposeSet::new();
        assert!(set.insert(Purpose::FraudProtection));
        assert!(!set.insert(Purpose::FraudProtection));
        assert!(set.is_subset(&PurposeSet::from([
            Purpose::CustomerService,
            Purpose::FraudProtection
        ])));
        assert!(!PurposeSet::from([Purpose::CustomerService]).is_subset(&set));
        assert!(set.remove(Purpose::FraudProtection));
        assert!(set.is_empty());
        assert!(serde_json::from_str::<ScopeSet>(r#"["ads"]"#).is_err());
        assert!(serde_json::from_str::<ScopeSet>(r#""balance""#).is_err());
    }

    #[test]
    fn account_sets_behave_like_ordered_sets() {
        let ids: Vec<AccountId> = ["c", "a", "b", "a"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let ours: AccountSet = ids.iter().cloned().collect();
        let reference: BTreeSet<AccountId> = ids.iter().cloned().collect();
        assert_eq!(
            ours.iter().collect::<Vec<_>>(),
            reference.iter().collect::<Vec<_>>()
        );
        assert_eq!(
            serde_json::to_string(&ours).unwrap(),
            serde_json::to_string(&reference).unwrap()
        );
        assert_eq!(format!("{ours:?}"), format!("{reference:?}"));
        let mut grown = AccountSet::new();
        for id in &ids {
            grown.insert(id.clone());
        }
        assert_eq!(grown, ours);
        assert!(!ours.contains(&"d".parse().unwrap()));
        assert!(AccountSet::from([ids[1].clone()]).is_subset(&ours));
        assert!(!ours.is_subset(&AccountSet::from([ids[1].clone()])));
        let back: AccountSet = serde_json::from_str(r#"["b","a","b"]"#).unwrap();
        assert_eq!(back.as_slice(), &ours.as_slice()[..2]);
        assert!(serde_json::from_str::<AccountSet>(r#"["a b"]"#).is_err());
    }
}
