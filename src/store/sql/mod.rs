//! What the two SQL stores share: every statement, the reads, and the commit semantics, written
//! once over a small [`Dialect`] trait that each engine implements (SQLite through rusqlite,
//! PostgreSQL through the `postgres` client).
//!
//! The statements are written with `?N` placeholders (SQLite's), which the PostgreSQL dialect
//! rewrites to `$N` when it prepares them; values are bound from [`Value`]s, which each dialect
//! converts to the column types its schema declares. What differs between the engines is only
//! behind the trait: how a statement runs, how a row is read, how commits are serialised (the
//! PostgreSQL dialect takes an advisory lock), and how the Merkle siblings of an append are
//! fetched (one round trip on PostgreSQL). Schemas and migrations stay per engine.
//!
//! Everything here runs inside a transaction the store opened: a [`Failure::Refused`] outcome
//! (a failed precondition, a duplicate) and an engine error both make the store roll it back.

pub(crate) mod ledger;
#[cfg(feature = "sqlite")]
mod pool;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
pub(crate) mod privacy;
pub(crate) mod read;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;
mod write;

#[cfg(feature = "postgres")]
pub(crate) use write::apply_commit;
pub(crate) use write::record_checkpoint;
#[cfg(feature = "sqlite")]
pub(crate) use write::{
    Frontier, append_leaf, append_records, apply_changes, current_frontier, encode_records,
    preconditions_hold, prepare_records,
};

use std::collections::HashMap;
use std::ops::Range;

use time::{Date, OffsetDateTime};

use super::StoreError;
use crate::merkle::Hash;

/// One step of a SQL store's schema history.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The version the database has after this step.
    pub version: i64,
    /// The SQL that takes it there from the previous version.
    pub sql: &'static str,
}

/// A value bound to a statement parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    /// An integer (a dialect narrows it to the column's width, or refuses).
    Int(i64),
    /// An integer or SQL `NULL`.
    OptionalInt(Option<i64>),
    /// Text. The audit entry column is `BYTEA` on PostgreSQL: that dialect binds its bytes.
    Text(&'a str),
    /// Bytes.
    Blob(&'a [u8]),
    /// Bytes or SQL `NULL`.
    OptionalBlob(Option<&'a [u8]>),
}

/// A result row.
pub(crate) trait Row {
    /// An integer column, `None` for `NULL`.
    fn int(&self, column: usize) -> Result<Option<i64>, StoreError>;
    /// A text or binary column, as bytes.
    fn bytes(&self, column: usize) -> Result<Vec<u8>, StoreError>;
    /// A text or binary column, as bytes, `None` for `NULL`.
    fn optional_bytes(&self, column: usize) -> Result<Option<Vec<u8>>, StoreError>;
}

/// Why a statement inside a commit did not complete.
#[derive(Debug)]
pub(crate) enum Failure<E> {
    /// The store's own answer: a failed precondition, a duplicate, a damaged row.
    Refused(StoreError),
    /// The engine's error, for the store to map (and, on PostgreSQL, perhaps retry).
    Engine(E),
}

impl<E> From<StoreError> for Failure<E> {
    fn from(error: StoreError) -> Self {
        Self::Refused(error)
    }
}

/// Merkle nodes by `(level, index)`.
pub(crate) type Nodes = HashMap<(u32, u64), Hash>;

/// What an engine provides: statements, rows, and the two things engines do differently.
pub(crate) trait Dialect {
    /// The engine's error.
    type Error;

    /// Runs a statement; the number of rows it changed.
    fn execute(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
    ) -> Result<u64, Failure<Self::Error>>;

    /// Runs a query, handing each row to `each` in order.
    fn query(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
        each: &mut dyn FnMut(&dyn Row) -> Result<(), StoreError>,
    ) -> Result<(), Failure<Self::Error>>;

    /// The levels above the leaves (1 to this) whose Merkle nodes this engine derives from the
    /// stored leaves on every read instead of storing them (see `derived_nodes`). 0: every
    /// level is stored.
    fn derived_levels(&self) -> u32 {
        0
    }

    /// Called first in every commit's transaction: serialises commits where the engine's own
    /// locking does not (SQLite's `BEGIN IMMEDIATE` already has), and refuses a database whose
    /// schema another build has migrated since this one opened it.
    fn lock_for_commit(&mut self) -> Result<(), Failure<Self::Error>> {
        Ok(())
    }

    /// The stored nodes on the right edge of a log of `size` leaves (every node an append can
    /// combine with): node `(level, (size >> level) - 1)` for every level where `size` has a 1
    /// bit. By default one query per node (cheap on an embedded engine).
    fn append_siblings(&mut self, size: u64) -> Result<Nodes, Failure<Self::Error>> {
        let mut found = HashMap::new();
        for level in (0..64u32).filter(|level| (size >> level) & 1 == 1) {
            let index = (size >> level) - 1;
            if let Some(hash) = node(self, level, index)? {
                found.insert((level, index), hash);
            }
        }
        Ok(found)
    }
}

// ---- decoding ----------------------------------------------------------------------------------

/// A count, size or index as the SQL stores keep it (saturating: no index reaches `i64::MAX`).
pub(crate) fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Whether a stored version is exactly `expected` (compared as the memory store does: a version
/// no row can hold, past `i64::MAX`, matches none, where [`signed`] would saturate onto one).
fn same_version(stored: Option<i64>, expected: u64) -> bool {
    stored.is_some_and(|stored| u64::try_from(stored) == Ok(expected))
}

fn unsigned(what: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} is negative")))
}

fn required(what: &str, value: Option<i64>) -> Result<i64, StoreError> {
    value.ok_or_else(|| StoreError::Corrupt(format!("{what} is NULL")))
}

fn hash(what: &str, bytes: &[u8]) -> Result<Hash, StoreError> {
    Hash::try_from(bytes).map_err(|_| StoreError::Corrupt(format!("{what} is not 32 bytes")))
}

/// A stored Merkle node's hash, named in the error only when it is not one (a verification
/// reads every stored node: a description formatted for each was a twentieth of its time).
fn node_hash(level: u32, index: u64, bytes: &[u8]) -> Result<Hash, StoreError> {
    Hash::try_from(bytes)
        .map_err(|_| StoreError::Corrupt(format!("Merkle node ({level}, {index}) is not 32 bytes")))
}

fn text(what: &str, bytes: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|_| StoreError::Corrupt(format!("{what} is not UTF-8")))
}

fn time(what: &str, seconds: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(|_| StoreError::Corrupt(format!("{what} {seconds} is out of range")))
}

/// A stored record that does not decode: what it is and where decoding stopped, never serde's
/// message, which can quote the record's values (personal data among them).
fn corrupt(what: String) -> impl FnOnce(serde_json::Error) -> StoreError {
    move |e| {
        StoreError::Corrupt(format!(
            "{what}: {:?} error at line {}, column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    }
}

fn day_key(day: Date) -> String {
    day.to_string()
}

// ---- queries -----------------------------------------------------------------------------------

fn rows<D: Dialect + ?Sized, T>(
    db: &mut D,
    sql: &'static str,
    params: &[Value<'_>],
    mut decode: impl FnMut(&dyn Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, Failure<D::Error>> {
    let mut found = Vec::new();
    db.query(sql, params, &mut |row| {
        found.push(decode(row)?);
        Ok(())
    })?;
    Ok(found)
}

fn one<D: Dialect + ?Sized, T>(
    db: &mut D,
    sql: &'static str,
    params: &[Value<'_>],
    decode: impl FnMut(&dyn Row) -> Result<T, StoreError>,
) -> Result<Option<T>, Failure<D::Error>> {
    Ok(rows(db, sql, params, decode)?.into_iter().next())
}

fn record<D: Dialect + ?Sized>(
    db: &mut D,
    sql: &'static str,
    key: &str,
) -> Result<Option<Vec<u8>>, Failure<D::Error>> {
    one(db, sql, &[Value::Text(key)], |row| row.bytes(0))
}

fn node<D: Dialect + ?Sized>(
    db: &mut D,
    level: u32,
    index: u64,
) -> Result<Option<Hash>, Failure<D::Error>> {
    if is_derived(db, level) {
        return Ok(derived_nodes(db, level, index..index.saturating_add(1))?
            .into_iter()
            .next()
            .map(|(_, hash)| hash));
    }
    one(
        db,
        "SELECT hash FROM merkle_nodes WHERE level = ?1 AND idx = ?2",
        &[Value::Int(i64::from(level)), Value::Int(signed(index))],
        |row| node_hash(level, index, &row.bytes(0)?),
    )
}

/// The nodes stored at `level` with indices in `range`, in index order.
fn stored_nodes<D: Dialect + ?Sized>(
    db: &mut D,
    level: u32,
    range: Range<u64>,
) -> Result<Vec<(u64, Hash)>, Failure<D::Error>> {
    rows(
        db,
        "SELECT idx, hash FROM merkle_nodes WHERE level = ?1 AND idx >= ?2 AND idx < ?3 \
         ORDER BY idx",
        &[
            Value::Int(i64::from(level)),
            Value::Int(signed(range.start)),
            Value::Int(signed(range.end)),
        ],
        |row| {
            let index = unsigned(
                "Merkle node index",
                required("Merkle node index", row.int(0)?)?,
            )?;
            Ok((index, node_hash(level, index, &row.bytes(1)?)?))
        },
    )
}

/// Whether `level`'s nodes are derived from the leaves on this engine rather than stored.
fn is_derived<D: Dialect + ?Sized>(db: &D, level: u32) -> bool {
    (1..=db.derived_levels()).contains(&level)
}

/// The nodes at a derived `level` with indices in `range`: each the root of its `2^level`
/// stored leaves, for every such subtree that is complete. An engine derives the lowest levels
/// (SQLite: 1 to 3) so that an append does not write a page per level: the leaves and the
/// nodes above them were each appended at the right edge of their own level's key range, so a
/// transaction of a batch of decisions wrote 4.4 pages of nodes, and now 2.75 (counted in the
/// write-ahead log; see BENCHMARKS.md). A derived node costs its subtree's leaves (at
/// most eight rows, read together) and `2^level - 1` hashes to read.
fn derived_nodes<D: Dialect + ?Sized>(
    db: &mut D,
    level: u32,
    range: Range<u64>,
) -> Result<Vec<(u64, Hash)>, Failure<D::Error>> {
    let width = 1u64 << level;
    // Subtrees past what a u64 leaf index can reach do not exist.
    let leaves = range.start.saturating_mul(width)..range.end.saturating_mul(width);
    let mut nodes = Vec::new();
    // The subtree being read: its leaves so far (RFC 6962's tree over them).
    let mut subtree = crate::merkle::TreeBuilder::new();
    let mut next = None;
    for (index, leaf) in stored_nodes(db, 0, leaves)? {
        // A leaf stored twice (its table rebuilt without its key) would make this read and a
        // verifier's disagree on which copy counts: refuse it.
        if next.is_some_and(|next| index < next) {
            return Err(Failure::Refused(StoreError::Corrupt(format!(
                "Merkle tree: leaf {index} is stored more than once"
            ))));
        }
        // A gap (a leaf missing) breaks the subtree it falls in: start again at this leaf.
        if next != Some(index) || index % width == 0 {
            subtree = crate::merkle::TreeBuilder::new();
        }
        next = index.checked_add(1);
        subtree.push(leaf);
        if subtree.size() == width {
            nodes.push((index / width, subtree.root()));
        }
    }
    Ok(nodes)
}
