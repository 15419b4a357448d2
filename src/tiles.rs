//! The audit log published as C2SP tlog-tiles: static files any web server or object store can
//! serve, which anyone can verify without the broker's database.
//!
//! # Layout (C2SP `tlog-tiles`)
//!
//! Under a directory (the log's URL prefix):
//!
//! * `checkpoint`: the latest signed checkpoint (a C2SP signed note), with any witness
//!   cosignatures;
//! * `tile/<L>/<N>[.p/<W>]`: hash tiles. Tile `N` of level `L` holds `W` (256 when full)
//!   consecutive 32-byte hashes of the tree's level `8·L`, starting at node `256·N`: level 0 holds
//!   leaf hashes, level 1 the roots of complete subtrees of 256 leaves, and so on. `<N>` is
//!   written in groups of three digits, all but the last prefixed with `x`
//!   (`1234067` → `x001/x234/067`);
//! * `tile/entries/<N>[.p/<W>]`: entry bundles, the log entries `256·N ..` each as a big-endian
//!   16-bit length and its bytes (so an entry is at most 65,535 bytes).
//!
//! A partial tile (width below 256) is the right edge of the tree at the checkpoint's size; it is
//! replaced by its full tile once the log grows past it. Full tiles and bundles never change.
//!
//! # Publishing and reading
//!
//! [`publish`] writes, for a signed checkpoint, the tiles and bundles that are new since the
//! checkpoint already in the directory (atomically, file by file, the checkpoint last), so a
//! reader never sees a checkpoint whose tiles are missing. [`TileSource`] reads them back (from a
//! directory with [`DirTiles`]; over HTTP once the networking work lands), and [`TiledLog`]
//! verifies: the checkpoint's signature, every entry against its level-0 tile, the root the tiles
//! and entries give against the checkpoint's, and, for a whole-log audit, every published tile
//! against the tree the entries make. A monitor keeps a [`TiledLog`] position (a size and the
//! O(log n) subtree roots of that prefix) and reads only what is new.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::auditor::StoreNodes;
use crate::checkpoint::{Checkpoint, CheckpointError, NoteVerifier, verify_checkpoint};
use crate::merkle;
use crate::merkle::{
    EMPTY_ROOT, Hash, MemoryNodes, MerkleError, NodeSource, TreeBuilder, leaf_hash,
};
use crate::store::{LogRead, StoreError, StoredCheckpoint};

/// Hashes per full tile (tiles have height 8).
pub const TILE_WIDTH: u64 = 256;
/// Bytes of a full hash tile.
pub const FULL_TILE_BYTES: usize = 256 * 32;
/// The largest entry a bundle can hold (its length is a 16-bit number).
pub const MAX_ENTRY_BYTES: usize = u16::MAX as usize;
/// The highest tile level (C2SP: 0 to 63).
pub const MAX_LEVEL: u8 = 63;
/// The file name of the checkpoint under the prefix.
pub const CHECKPOINT_FILE: &str = "checkpoint";

/// What a tile holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TileKind {
    /// Hashes of the tree's level `8 · level`.
    Hashes {
        /// The tile level (0: leaf hashes).
        level: u8,
    },
    /// Log entries (an entry bundle).
    Entries,
}

/// One tile or entry bundle: its kind, its index within its level, and its width (1 to 256).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tile {
    /// Hashes or entries.
    pub kind: TileKind,
    /// `N`: the tile's index within its level.
    pub index: u64,
    /// `W`: how many hashes or entries it holds; 256 for a full tile.
    pub width: u16,
}

/// Why tiles could not be written, read or trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TileError {
    /// A tile path that is not one the C2SP layout defines (leading zeros, a missing `x`, a width
    /// of 0 or 256 or more, a level over 63, anything else).
    #[error("not a tile path")]
    BadPath,
    /// A file the checkpoint requires is missing.
    #[error("{path} is missing")]
    Missing {
        /// The tile's path.
        path: String,
    },
    /// A tile or bundle whose bytes are not what its path says (length, framing).
    #[error("{path} is malformed")]
    Malformed {
        /// The tile's path.
        path: String,
    },
    /// An entry's leaf hash is not the hash its level-0 tile holds.
    #[error("entry {index} does not match its tile")]
    EntryMismatch {
        /// The entry's index in the log.
        index: u64,
    },
    /// A published hash tile differs from the tree the entries make.
    #[error("{path} does not match the entries")]
    TileMismatch {
        /// The tile's path.
        path: String,
    },
    /// The tiles and entries make another root than the checkpoint's.
    #[error("the tiles make another root than the checkpoint's at size {size}")]
    RootMismatch {
        /// The checkpoint's size.
        size: u64,
    },
    /// A checkpoint smaller than what was already verified or published, or than the checkpoint
    /// a log is held to ([`TiledLog::pinned`]): a rollback.
    #[error("the checkpoint's size {size} is below the {known} already seen")]
    Rollback {
        /// The new checkpoint's size.
        size: u64,
        /// The size already verified or published.
        known: u64,
    },
    /// The store's log is not an extension of the one published in the directory (restored from
    /// a backup, or another history): publishing it would mix two logs.
    #[error("the store's log does not extend the published one of size {published}")]
    NotAnExtension {
        /// The published size.
        published: u64,
    },
    /// An entry too long for a bundle.
    #[error("entry {index} is {len} bytes, more than a bundle can hold")]
    EntryTooLarge {
        /// The entry's index.
        index: u64,
        /// Its length.
        len: usize,
    },
    /// The checkpoint did not verify or parse.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The store could not be read, or lacks what the checkpoint covers.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The tree could not be computed.
    #[error("tree: {0}")]
    Tree(#[from] MerkleError),
    /// Reading or writing the files failed.
    #[error("{0}")]
    Io(String),
}

/// Encodes `n` as C2SP path elements: groups of three digits, all but the last prefixed `x`.
fn encode_index(mut n: u64) -> String {
    let mut path = format!("{:03}", n % 1000);
    while n >= 1000 {
        n /= 1000;
        path = format!("x{:03}/{path}", n % 1000);
    }
    path
}

impl Tile {
    /// A full hash tile.
    pub fn hashes(level: u8, index: u64) -> Self {
        Self {
            kind: TileKind::Hashes { level },
            index,
            width: 256,
        }
    }

    /// A full entry bundle.
    pub fn entries(index: u64) -> Self {
        Self {
            kind: TileKind::Entries,
            index,
            width: 256,
        }
    }

    /// The same tile with `width`.
    #[must_use]
    pub fn with_width(self, width: u16) -> Self {
        Self { width, ..self }
    }

    /// Whether it is full (256 wide).
    pub fn is_full(&self) -> bool {
        self.width == 256
    }

    /// Its path under the prefix, e.g. `tile/0/x001/x234/067.p/5`.
    pub fn path(&self) -> String {
        let level = match self.kind {
            TileKind::Hashes { level } => level.to_string(),
            TileKind::Entries => "entries".to_owned(),
        };
        let partial = if self.is_full() {
            String::new()
        } else {
            format!(".p/{}", self.width)
        };
        format!("tile/{level}/{}{partial}", encode_index(self.index))
    }

    /// Parses a tile path, accepting only the canonical form [`Tile::path`] writes.
    ///
    /// # Errors
    /// [`TileError::BadPath`].
    pub fn parse(path: &str) -> Result<Self, TileError> {
        // Bounded before any work: the longest canonical path is well under 100 bytes.
        if path.len() > 128 {
            return Err(TileError::BadPath);
        }
        let rest = path.strip_prefix("tile/").ok_or(TileError::BadPath)?;
        let (level, rest) = rest.split_once('/').ok_or(TileError::BadPath)?;
        let kind = if level == "entries" {
            TileKind::Entries
        } else {
            let level: u8 = canonical_decimal(level)
                .and_then(|l| u8::try_from(l).ok())
                .filter(|l| *l <= MAX_LEVEL)
                .ok_or(TileError::BadPath)?;
            TileKind::Hashes { level }
        };
        let (digits, width) = match rest.split_once(".p/") {
            Some((digits, width)) => {
                let width = canonical_decimal(width)
                    .and_then(|w| u16::try_from(w).ok())
                    .filter(|w| (1..256).contains(w))
                    .ok_or(TileError::BadPath)?;
                (digits, width)
            }
            None => (rest, 256),
        };
        let mut index: u64 = 0;
        let groups: Vec<&str> = digits.split('/').collect();
        let last = groups.len().saturating_sub(1);
        for (i, group) in groups.iter().enumerate() {
            let group = if i < last {
                group.strip_prefix('x').ok_or(TileError::BadPath)?
            } else {
                group
            };
            if group.len() != 3 || !group.bytes().all(|b| b.is_ascii_digit()) {
                return Err(TileError::BadPath);
            }
            let value: u64 = group.parse().map_err(|_| TileError::BadPath)?;
            index = index
                .checked_mul(1000)
                .and_then(|n| n.checked_add(value))
                .ok_or(TileError::BadPath)?;
        }
        let tile = Self { kind, index, width };
        // One spelling per tile: `x000/…` and other non-canonical forms are refused.
        if tile.path() != path {
            return Err(TileError::BadPath);
        }
        Ok(tile)
    }

    /// The hash tiles and entry bundles a tree of `size` leaves is published as: every full tile
    /// and, per level, the partial one at the right edge.
    pub fn all_for(size: u64) -> Vec<Tile> {
        Self::new_between(0, size)
    }

    /// What publishing a tree of `new` leaves adds to one of `old`: the full tiles completed
    /// since and the partial tiles of the new right edge, at every level (entry bundles follow
    /// level 0).
    pub fn new_between(old: u64, new: u64) -> Vec<Tile> {
        let mut tiles = Vec::new();
        let mut level: u8 = 0;
        loop {
            let shift = 8 * u32::from(level);
            let (old_nodes, new_nodes) = (
                old.checked_shr(shift).unwrap_or(0),
                new.checked_shr(shift).unwrap_or(0),
            );
            if new_nodes == 0 || level > MAX_LEVEL {
                break;
            }
            // Full tiles completed between the two sizes, then the new partial one.
            let first = old_nodes / TILE_WIDTH;
            for index in first..new_nodes / TILE_WIDTH {
                tiles.push(Tile::hashes(level, index));
                if level == 0 {
                    tiles.push(Tile::entries(index));
                }
            }
            let width = new_nodes % TILE_WIDTH;
            if width > 0 && new_nodes != old_nodes {
                let width = u16::try_from(width).unwrap_or(255);
                let index = new_nodes / TILE_WIDTH;
                tiles.push(Tile::hashes(level, index).with_width(width));
                if level == 0 {
                    tiles.push(Tile::entries(index).with_width(width));
                }
            }
            level = level.saturating_add(1);
        }
        tiles
    }

    /// The node range of the tree this tile covers: level `8·L`, indices `256·N .. 256·N + W`.
    pub(crate) fn nodes(&self) -> (u32, Range<u64>) {
        let level = match self.kind {
            TileKind::Hashes { level } => 8 * u32::from(level),
            TileKind::Entries => 0,
        };
        let start = self.index.saturating_mul(TILE_WIDTH);
        (level, start..start.saturating_add(u64::from(self.width)))
    }
}

impl fmt::Display for Tile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

/// A decimal with no leading zeros (but `0` itself).
fn canonical_decimal(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if canonical { text.parse().ok() } else { None }
}

/// The bytes of `tile` from the store's log and tree.
///
/// # Errors
/// [`TileError::Store`] when the store lacks an entry or node the tile needs;
/// [`TileError::EntryTooLarge`].
pub fn tile_bytes(store: &impl LogRead, tile: &Tile) -> Result<Vec<u8>, TileError> {
    let (level, range) = tile.nodes();
    let wanted = usize::from(tile.width);
    match tile.kind {
        TileKind::Hashes { .. } => {
            let nodes = store.merkle_nodes(level, range.clone())?;
            if nodes.len() != wanted || nodes.iter().zip(range).any(|((i, _), want)| *i != want) {
                return Err(StoreError::Corrupt(format!("the tree lacks nodes of {tile}")).into());
            }
            Ok(nodes.iter().flat_map(|(_, hash)| *hash).collect())
        }
        TileKind::Entries => {
            let entries = store.audit_bytes(range.clone())?;
            if entries.len() != wanted {
                return Err(StoreError::Corrupt(format!("the log lacks entries of {tile}")).into());
            }
            let mut bundle = Vec::new();
            for (entry, index) in entries.iter().zip(range) {
                let len =
                    u16::try_from(entry.bytes.len()).map_err(|_| TileError::EntryTooLarge {
                        index,
                        len: entry.bytes.len(),
                    })?;
                bundle.extend_from_slice(&len.to_be_bytes());
                bundle.extend_from_slice(&entry.bytes);
            }
            Ok(bundle)
        }
    }
}

/// What [`publish`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The size of the checkpoint published before (0 for none).
    pub from: u64,
    /// The size now published.
    pub to: u64,
    /// Tiles and bundles written.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// The file in a publish directory that publishers lock, one at a time (empty, readable by its
/// owner alone; not part of the log, and nothing a reader needs).
pub const LOCK_FILE: &str = ".publish.lock";

/// How long [`publish`] waits for another publisher in the same directory before it gives up.
const PUBLISH_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Publishes `checkpoint` (as the broker signed it, possibly with cosignatures appended to its
/// note) and the tiles and bundles it needs under `dir`: only those new since the checkpoint
/// already there. Each file is written to a temporary name, flushed and renamed; the checkpoint
/// is written last, once every tile's file, the directories from its own up to `dir` and `dir`
/// in its parent are flushed, so the directory is always a consistent, servable log, after a power loss too (on
/// Unix: elsewhere directories are not flushed); the checkpoint's name is flushed before this
/// returns, so the directory does not go back to an older one either. An error after the
/// checkpoint's rename (its flush) leaves it in place, not yet known durable: publishing the
/// same checkpoint again rewrites only it.
///
/// Publishers in one directory take turns: each holds a lock on [`LOCK_FILE`] in it (std's
/// `File::try_lock`: `flock` on Linux, the BSDs and macOS, `LockFileEx` on Windows, so any
/// thread or process there; on targets without file locks `publish` fails with
/// [`TileError::Io`]) from reading the checkpoint there to writing its own, so the larger of
/// two checkpoints published at once is the one left (the other is refused as
/// [`TileError::Rollback`], or is overwritten). A publisher that cannot take the lock within a
/// minute gives up with [`TileError::Io`] (another publisher stopped, or anyone who can open
/// the file holding it). Do not remove the file while a publish may run: one that starts then
/// makes another and does not wait.
///
/// # Errors
/// [`TileError::Rollback`] when `dir` holds a larger checkpoint (a rolled-back store does not
/// overwrite what was published); [`TileError::Store`], [`TileError::EntryTooLarge`],
/// [`TileError::Io`].
pub fn publish(
    store: &impl LogRead,
    dir: &Path,
    checkpoint: &StoredCheckpoint,
) -> Result<Published, TileError> {
    // One publisher at a time in `dir`, across threads and processes (two `audit publish` runs,
    // or one beside an embedder's timer): two that both read the checkpoint there before either
    // wrote could otherwise leave the smaller of theirs over the larger, a log rolled back to
    // its readers. Released when the file is closed, at return or at a crash.
    crate::files::make_dirs(dir).map_err(|e| io_error(dir, e))?;
    let lock_path = dir.join(LOCK_FILE);
    let _lock = crate::files::lock_file(&lock_path, PUBLISH_LOCK_WAIT)
        .map_err(|e| io_error(&lock_path, e))?;
    let published = published_checkpoint(dir)?;
    let from = published.as_ref().map_or(0, |p| p.size);
    if checkpoint.size < from {
        return Err(TileError::Rollback {
            size: checkpoint.size,
            known: from,
        });
    }
    // The store must extend what is published: a store restored from a backup and grown back,
    // or another history of the same size, would leave a mix of two logs in the directory.
    if let Some(published) = &published
        && published.size > 0
        && merkle::root(published.size, &StoreNodes(store))? != published.root
    {
        return Err(TileError::NotAnExtension {
            published: published.size,
        });
    }
    let len = store.audit_len()?;
    if checkpoint.size > len {
        return Err(StoreError::Corrupt(format!(
            "the checkpoint covers {} entries, the log holds {len}",
            checkpoint.size
        ))
        .into());
    }
    let mut report = Published {
        from,
        to: checkpoint.size,
        files: 0,
        bytes: 0,
    };
    // Files are made in batches and each batch written by several threads: every file is
    // fsynced before the checkpoint that needs it, and fsyncs in flight together cost little more
    // than one.
    let tiles = Tile::new_between(from, checkpoint.size);
    for batch in tiles.chunks(PUBLISH_BATCH) {
        let files = batch
            .iter()
            .map(|tile| Ok((dir.join(tile.path()), tile_bytes(store, tile)?)))
            .collect::<Result<Vec<(PathBuf, Vec<u8>)>, TileError>>()?;
        write_all(&files)?;
        for (_, bytes) in &files {
            report.files = report.files.saturating_add(1);
            report.bytes = report
                .bytes
                .saturating_add(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
        }
    }
    // Each tile's name flushed in its directory, and each directory's name in its parent up to
    // `dir`, before the checkpoint that needs them: a tile file flushed is not durable while its
    // name is not, and a checkpoint that survived a power loss its tiles did not would be a log
    // that cannot be served. The directories that were there already are flushed too: one made
    // by a run stopped before its flush (or by a build that did not flush) may not be durable.
    let mut directories = std::collections::BTreeSet::new();
    for tile in &tiles {
        let path = dir.join(tile.path());
        let mut next = path.parent();
        while let Some(directory) = next.filter(|d| d.starts_with(dir)) {
            if !directories.insert(directory.to_owned()) {
                break;
            }
            next = directory.parent();
        }
    }
    // And the directory's own name in its parent, should an earlier run have made it and
    // stopped before its flush.
    directories.insert(crate::files::parent_of(dir).to_owned());
    for directory in &directories {
        crate::files::sync_dir(directory).map_err(|error| io_error(directory, error))?;
    }
    write_atomically(&dir.join(CHECKPOINT_FILE), checkpoint.note.as_bytes())?;
    // And the checkpoint's own name: a power loss after this returns does not take the
    // directory back to an older checkpoint, which the monitors that read this one would report
    // as a log rolled back.
    crate::files::sync_dir(dir).map_err(|error| io_error(dir, error))?;
    Ok(report)
}

/// A file system error on `path`, as the publisher reports it.
fn io_error(path: &Path, error: std::io::Error) -> TileError {
    TileError::Io(format!("{}: {error}", path.display()))
}

/// The checkpoint published in `dir`, if any, read from its body without checking its
/// signature: the publisher's own file, used to know what is new and what must be extended.
fn published_checkpoint(dir: &Path) -> Result<Option<Checkpoint>, TileError> {
    let path = dir.join(CHECKPOINT_FILE);
    let note = match std::fs::read_to_string(&path) {
        Ok(note) => note,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(&path, error)),
    };
    let body = note.split("\n\n").next().unwrap_or_default();
    let body = format!("{body}\n");
    Ok(Some(Checkpoint::parse_body(&body)?))
}

/// Tiles made and written at a time by [`publish`].
const PUBLISH_BATCH: usize = 64;
/// Threads writing a batch.
const WRITERS: usize = 8;

/// Writes `files` with up to [`WRITERS`] threads; the first error wins.
fn write_all(files: &[(PathBuf, Vec<u8>)]) -> Result<(), TileError> {
    let per_writer = files.len().div_ceil(WRITERS).max(1);
    std::thread::scope(|scope| {
        let writers: Vec<_> = files
            .chunks(per_writer)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .try_for_each(|(path, bytes)| write_atomically(path, bytes))
                })
            })
            .collect();
        writers.into_iter().try_for_each(|writer| {
            writer
                .join()
                .map_err(|_| TileError::Io("a tile writer panicked".to_owned()))?
        })
    })
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), TileError> {
    crate::files::write_atomically(path, bytes, crate::files::Readers::Any)
        .map_err(|error| io_error(path, error))
}

/// Where tiles are read from: a directory, an HTTP prefix, an object store.
pub trait TileSource {
    /// The file at `path` under the prefix (`checkpoint`, `tile/…`), or `None` when it does not
    /// exist.
    ///
    /// # Errors
    /// [`TileError::Io`] when it could not be read.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, TileError>;
}

/// Tiles in a local directory (a copy of a published log, or the publisher's own).
#[derive(Debug, Clone)]
pub struct DirTiles {
    dir: PathBuf,
}

impl DirTiles {
    /// The tiles under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

/// The largest file a published log holds at `path` (one of the layout's own paths): a
/// checkpoint's note, a full hash tile, a full bundle of the largest entries. A reader refuses a
/// larger one before reading it whole.
///
/// # Errors
/// [`TileError::Malformed`] for a path that is not the layout's.
pub(crate) fn largest_file(path: &str) -> Result<usize, TileError> {
    Ok(if path == CHECKPOINT_FILE {
        crate::checkpoint::MAX_NOTE_BYTES
    } else {
        match Tile::parse(path)?.kind {
            TileKind::Hashes { .. } => FULL_TILE_BYTES,
            TileKind::Entries => 256 * (2 + MAX_ENTRY_BYTES),
        }
    })
}

impl TileSource for DirTiles {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, TileError> {
        // Only the layout's own paths: nothing outside the directory can be named. Each kind of
        // file has a largest size; a file above it (or not a regular file: a device, a pipe) is
        // refused before it is read.
        let limit = largest_file(path)?;
        let full = self.dir.join(path);
        let io = |error: std::io::Error| io_error(&full, error);
        let metadata = match std::fs::metadata(&full) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io(error)),
        };
        let too_large = usize::try_from(metadata.len()).map_or(true, |len| len > limit);
        if !metadata.is_file() || too_large {
            return Err(TileError::Malformed {
                path: path.to_owned(),
            });
        }
        let mut bytes = Vec::new();
        std::fs::File::open(&full)
            .and_then(|file| {
                use std::io::Read as _;
                file.take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
                    .read_to_end(&mut bytes)
            })
            .map_err(io)?;
        if bytes.len() > limit {
            return Err(TileError::Malformed {
                path: path.to_owned(),
            });
        }
        Ok(Some(bytes))
    }
}

/// The `checkpoint` file a source serves, as text (not yet verified).
///
/// # Errors
/// [`TileError::Missing`], [`TileError::Malformed`] for a file that is not UTF-8, the source's.
pub fn checkpoint_note(source: &impl TileSource) -> Result<String, TileError> {
    let note = source
        .read(CHECKPOINT_FILE)?
        .ok_or_else(|| TileError::Missing {
            path: CHECKPOINT_FILE.to_owned(),
        })?;
    String::from_utf8(note).map_err(|_| TileError::Malformed {
        path: CHECKPOINT_FILE.to_owned(),
    })
}

fn fetch(source: &impl TileSource, tile: &Tile) -> Result<Vec<u8>, TileError> {
    let path = tile.path();
    let bytes = source
        .read(&path)?
        .ok_or_else(|| TileError::Missing { path: path.clone() })?;
    let expected = usize::from(tile.width);
    let well_formed = match tile.kind {
        TileKind::Hashes { .. } => bytes.len() == expected * 32,
        TileKind::Entries => bundle_entries(&bytes).is_some_and(|e| e.len() == expected),
    };
    if well_formed {
        Ok(bytes)
    } else {
        Err(TileError::Malformed { path })
    }
}

/// The entries of a bundle, or `None` if its framing is broken.
fn bundle_entries(mut bytes: &[u8]) -> Option<Vec<&[u8]>> {
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len));
        let (entry, rest) = rest.split_at_checked(len)?;
        entries.push(entry);
        bytes = rest;
        if entries.len() > 256 {
            return None;
        }
    }
    Some(entries)
}

fn hashes_of(bytes: &[u8]) -> impl Iterator<Item = Hash> + '_ {
    bytes
        .chunks_exact(32)
        .filter_map(|chunk| chunk.try_into().ok())
}

/// A verified position in a tiled log: a size, its checkpoint, and the roots of the complete
/// subtrees of that prefix (O(log n) hashes), from which the next checkpoint is checked by
/// reading only the entries after it.
#[derive(Debug, Clone)]
pub struct TiledLog {
    checkpoint: Option<Checkpoint>,
    tree: TreeBuilder,
    /// A checkpoint this log must extend, not verified through yet (see [`TiledLog::pinned`]).
    pin: Option<Checkpoint>,
}

/// One verified entry, read from the tiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TiledEntry {
    /// Its index in the log.
    pub index: u64,
    /// Its bytes, as the log holds them.
    pub bytes: Vec<u8>,
}

impl Default for TiledLog {
    fn default() -> Self {
        Self::new()
    }
}

impl TiledLog {
    /// Nothing verified yet: the empty log.
    pub fn new() -> Self {
        Self {
            checkpoint: None,
            tree: TreeBuilder::new(),
            pin: None,
        }
    }

    /// Nothing verified yet, but held to `checkpoint` (verified by the caller, who kept it
    /// without the tree of its entries): reading refuses a checkpoint smaller than it
    /// ([`TileError::Rollback`]) and entries whose first `checkpoint.size` do not have its root
    /// ([`TileError::RootMismatch`] at its size), as [`TiledLog::resume`] would, at the cost of
    /// reading the log from its start.
    pub fn pinned(checkpoint: Checkpoint) -> Self {
        Self {
            pin: Some(checkpoint),
            ..Self::new()
        }
    }

    /// The size verified so far.
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// The last checkpoint verified, if any.
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoint.as_ref()
    }

    /// The tree of the entries verified so far (its size and the roots of its complete
    /// subtrees): with [`TiledLog::checkpoint`], what [`TiledLog::resume`] takes back.
    pub fn tree(&self) -> &TreeBuilder {
        &self.tree
    }

    /// A position verified earlier and kept: `checkpoint` (verified again by the caller, who
    /// kept it) and the tree of its entries. `None` unless the tree has the checkpoint's size
    /// and root.
    pub fn resume(checkpoint: Checkpoint, tree: TreeBuilder) -> Option<Self> {
        (tree.size() == checkpoint.size && tree.root() == checkpoint.root).then_some(Self {
            checkpoint: Some(checkpoint),
            tree,
            pin: None,
        })
    }

    /// Reads the source's checkpoint, verifies its signature (and origin, when given), then the
    /// entries after the size verified so far: each against its level-0 tile, and the root of all
    /// of them, prefix included, against the checkpoint's. Returns the new entries; `self`
    /// moves to the new size only if everything verified.
    ///
    /// # Errors
    /// [`TileError::Missing`] for the checkpoint or a tile; [`TileError::Checkpoint`] for a bad
    /// signature or origin; [`TileError::Rollback`] for a checkpoint below the verified size (or
    /// the one held to); [`TileError::EntryMismatch`], [`TileError::RootMismatch`] (the log was
    /// rewritten, or the tiles do not match the checkpoint); [`TileError::Malformed`].
    pub fn update(
        &mut self,
        source: &impl TileSource,
        verifier: &NoteVerifier,
        origin: Option<&str>,
    ) -> Result<Vec<TiledEntry>, TileError> {
        let note = checkpoint_note(source)?;
        let checkpoint = verify_checkpoint(&note, verifier, origin)?;
        self.update_to(source, checkpoint)
    }

    /// [`TiledLog::update`] with a checkpoint the caller already verified (its signatures, its
    /// witnesses' cosignatures).
    ///
    /// # Errors
    /// As [`TiledLog::update`].
    pub fn update_to(
        &mut self,
        source: &impl TileSource,
        checkpoint: Checkpoint,
    ) -> Result<Vec<TiledEntry>, TileError> {
        let mut entries = Vec::new();
        self.update_each(source, checkpoint, |index, bytes| {
            entries.push(TiledEntry {
                index,
                bytes: bytes.to_vec(),
            });
        })?;
        Ok(entries)
    }

    /// [`TiledLog::update_to`], handing each new entry (its index and bytes) to `each` as it is
    /// read instead of keeping them all: for a reader that keeps only what it needs of a long
    /// stretch. What `each` saw is trustworthy only once this returns `Ok` (an entry it was
    /// given may belong to tiles that then fail to match the checkpoint): stage it until then.
    ///
    /// # Errors
    /// As [`TiledLog::update`].
    pub fn update_each(
        &mut self,
        source: &impl TileSource,
        checkpoint: Checkpoint,
        mut each: impl FnMut(u64, &[u8]),
    ) -> Result<(), TileError> {
        self.walk(source, checkpoint, |index, bytes, _| each(index, bytes))
    }

    /// Reads the entries after the verified size up to `checkpoint`'s, each checked against its
    /// level-0 tile and handed to `each` (index, bytes, leaf hash) as it is read, then the root
    /// against the checkpoint's; `self` moves only if all of it verified. What `each` saw is
    /// trustworthy only once this returns `Ok`.
    fn walk(
        &mut self,
        source: &impl TileSource,
        checkpoint: Checkpoint,
        mut each: impl FnMut(u64, &[u8], Hash),
    ) -> Result<(), TileError> {
        let from = self.tree.size();
        let pin = self.pin.as_ref().map(|pin| (pin.size, pin.root));
        let known = pin.map_or(from, |(size, _)| size.max(from));
        if checkpoint.size < known {
            return Err(TileError::Rollback {
                size: checkpoint.size,
                known,
            });
        }
        let mut tree = self.tree.clone();
        let mut index = from;
        while index < checkpoint.size {
            let bundle_index = index / TILE_WIDTH;
            let end = (bundle_index.saturating_add(1))
                .saturating_mul(TILE_WIDTH)
                .min(checkpoint.size);
            let width = u16::try_from(end - bundle_index * TILE_WIDTH).unwrap_or(256);
            let leaves = fetch(source, &Tile::hashes(0, bundle_index).with_width(width))?;
            let bundle = fetch(source, &Tile::entries(bundle_index).with_width(width))?;
            let framed = bundle_entries(&bundle).ok_or_else(|| TileError::Malformed {
                path: Tile::entries(bundle_index).with_width(width).path(),
            })?;
            let skip = usize::try_from(index - bundle_index * TILE_WIDTH).unwrap_or(usize::MAX);
            for (entry, published) in framed.iter().zip(hashes_of(&leaves)).skip(skip) {
                let hash = leaf_hash(entry);
                if hash != published {
                    return Err(TileError::EntryMismatch { index });
                }
                tree.try_push(hash)?;
                if let Some((size, root)) = pin
                    && tree.size() == size
                    && tree.root() != root
                {
                    return Err(TileError::RootMismatch { size });
                }
                each(index, entry, hash);
                index = index.saturating_add(1);
            }
        }
        let root = if checkpoint.size == 0 {
            EMPTY_ROOT
        } else {
            tree.root()
        };
        if root != checkpoint.root {
            return Err(TileError::RootMismatch {
                size: checkpoint.size,
            });
        }
        self.tree = tree;
        self.checkpoint = Some(checkpoint);
        self.pin = None;
        Ok(())
    }
}

/// What [`verify_tiles`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TilesReport {
    /// The verified checkpoint.
    pub checkpoint: Checkpoint,
    /// Hash tiles checked against the tree the entries make.
    pub tiles: usize,
}

/// The whole audit of a published log: the checkpoint's signature (and origin), every entry
/// against its level-0 tile and the checkpoint's root, and every hash tile at every level
/// against the tree the entries make (so a reader that trusts the higher tiles is not misled).
///
/// # Errors
/// As [`TiledLog::update`], and [`TileError::TileMismatch`] for a published tile that differs
/// from the tree.
pub fn verify_tiles(
    source: &impl TileSource,
    verifier: &NoteVerifier,
    origin: Option<&str>,
) -> Result<TilesReport, TileError> {
    // Only the leaf hashes are kept (32 bytes an entry), not the entries.
    let checkpoint = verify_checkpoint(&checkpoint_note(source)?, verifier, origin)?;
    let mut nodes = MemoryNodes::new();
    let mut pushed = Ok(());
    TiledLog::new().walk(source, checkpoint.clone(), |_, _, hash| {
        if pushed.is_ok() {
            pushed = nodes.push(hash);
        }
    })?;
    pushed?;
    let mut tiles = 0;
    for tile in Tile::all_for(checkpoint.size) {
        let TileKind::Hashes { .. } = tile.kind else {
            continue;
        };
        let published = fetch(source, &tile)?;
        let (level, range) = tile.nodes();
        let mut expected = Vec::with_capacity(published.len());
        for index in range {
            expected.extend_from_slice(&nodes.node(level, index)?);
        }
        if published != expected {
            return Err(TileError::TileMismatch { path: tile.path() });
        }
        tiles += 1;
    }
    Ok(TilesReport { checkpoint, tiles })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Publishes 700 entries into `dir` (which `prepare` may make beforehand) and checks the
    /// order of what the file helpers did: every directory whose entries changed (a tile renamed
    /// into it, a directory made in it) flushed after the change and before the checkpoint's
    /// rename; every directory from a tile's up to `dir` flushed before that rename, those found
    /// made included; `dir` flushed after it.
    fn publish_and_check_the_flushes(prepare: impl FnOnce(&Path)) {
        #![expect(clippy::unwrap_used, reason = "tests fail by panicking")]
        use crate::audit::{Actor, AuditEvent, AuditRecord};
        use crate::files::observed::{Event, under};
        use crate::store::{Commit, MemoryStore, Store};

        let store = MemoryStore::new();
        for _ in 0..700 {
            store
                .commit(Commit::new(AuditRecord::new(
                    time::OffsetDateTime::UNIX_EPOCH,
                    Actor::Platform("chat".parse().unwrap()),
                    AuditEvent::PlatformRegistered { purposes: None },
                )))
                .unwrap();
        }
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("published/log");
        prepare(&dir);
        let checkpoint = StoredCheckpoint {
            size: 700,
            root: crate::merkle::EMPTY_ROOT,
            note: "broker.example/log\n700\n\n".to_owned(),
        };
        publish(&store, &dir, &checkpoint).unwrap();
        let events = under(root.path());
        let written = events
            .iter()
            .position(|event| *event == Event::Renamed(dir.join(CHECKPOINT_FILE)))
            .unwrap();
        let flushed_between = |directory: &Path, from: usize| {
            events[from..written].contains(&Event::Flushed(directory.to_owned()))
        };
        let mut tiles = 0;
        for (at, event) in events[..written].iter().enumerate() {
            let (Event::Renamed(path) | Event::Made(path)) = event else {
                continue;
            };
            let parent = path.parent().unwrap();
            assert!(
                flushed_between(parent, at),
                "{} not flushed after {event:?}",
                parent.display()
            );
            if matches!(event, Event::Renamed(_)) {
                assert!(
                    events[..at].contains(&Event::Synced(path.clone())),
                    "{} renamed before its contents were flushed",
                    path.display()
                );
                tiles += 1;
                for directory in parent.ancestors().take_while(|d| d.starts_with(&dir)) {
                    assert!(
                        flushed_between(directory, 0),
                        "{} not flushed",
                        directory.display()
                    );
                }
            }
        }
        assert_eq!(tiles, 7);
        assert!(events[..written].contains(&Event::Synced(dir.join(CHECKPOINT_FILE))));
        // The publish directory's own name, in case a run before made it and stopped.
        assert!(events[..written].contains(&Event::Flushed(dir.parent().unwrap().to_owned())));
        assert!(events[written..].contains(&Event::Flushed(dir.clone())));
    }

    #[test]
    fn every_tile_and_directory_is_flushed_before_the_checkpoint_and_the_checkpoint_after() {
        // Nothing there: every directory is made by the publish.
        publish_and_check_the_flushes(|_| {});
    }

    #[test]
    fn directories_found_made_are_flushed_before_the_checkpoint_too() {
        // Made by someone else, never flushed (a run stopped before its flush, an older build).
        publish_and_check_the_flushes(|dir| {
            for sub in ["tile/0", "tile/1", "tile/entries"] {
                std::fs::create_dir_all(dir.join(sub)).unwrap();
            }
        });
    }

    #[test]
    fn paths_follow_the_c2sp_examples() {
        assert_eq!(Tile::hashes(0, 1_234_067).path(), "tile/0/x001/x234/067");
        assert_eq!(
            Tile::hashes(0, 1_234_067).with_width(5).path(),
            "tile/0/x001/x234/067.p/5"
        );
        assert_eq!(
            Tile::entries(1_234_067).path(),
            "tile/entries/x001/x234/067"
        );
        for n in [0, 999, 1000, 123_456_789, u64::MAX] {
            let tile = Tile::hashes(2, n).with_width(17);
            assert_eq!(Tile::parse(&tile.path()), Ok(tile));
        }
        for bad in [
            "tile/0/1",
            "tile/0/x000/001",
            "tile/00/001",
            "tile/64/001",
            "tile/0/001.p/0",
            "tile/0/001.p/256",
            "tile/0/001.p/07",
            "tile/0/001/",
            "tile/0/x1000/000",
            "tile/data/000",
            "tile/0/x018/x446/x744/x073/x709/x551/616",
            "../../etc/passwd",
        ] {
            assert_eq!(Tile::parse(bad), Err(TileError::BadPath), "{bad}");
        }
    }

    #[test]
    fn the_tiles_of_a_size_match_the_c2sp_example() {
        // "a tree of size 70,000 will be represented by 273 full level 0 tiles, one partial level
        // 0 tile of width 112, one full level 1 tile, one partial level 1 tile of width 17, and
        // one partial level 2 tile of width 1."
        let tiles: Vec<Tile> = Tile::all_for(70_000)
            .into_iter()
            .filter(|t| t.kind != TileKind::Entries)
            .collect();
        let of = |level: u8| {
            tiles
                .iter()
                .filter(move |t| t.kind == TileKind::Hashes { level })
                .collect::<Vec<_>>()
        };
        assert_eq!(of(0).iter().filter(|t| t.is_full()).count(), 273);
        assert_eq!(of(0).last().map(|t| t.width), Some(112));
        assert_eq!(of(1).len(), 2);
        assert_eq!(of(1).last().map(|t| t.width), Some(17));
        assert_eq!(of(2).len(), 1);
        assert_eq!(of(2).first().map(|t| t.width), Some(1));
        assert!(of(3).is_empty());
        // "a tree of size 256 will be represented by a full level 0 tile and a partial level 1
        // tile of width 1."
        assert_eq!(
            Tile::all_for(256),
            [
                Tile::hashes(0, 0),
                Tile::entries(0),
                Tile::hashes(1, 0).with_width(1)
            ]
        );
        assert!(Tile::all_for(0).is_empty());
        // Growing publishes only what changed.
        assert_eq!(
            Tile::new_between(256, 300),
            [
                Tile::hashes(0, 1).with_width(44),
                Tile::entries(1).with_width(44)
            ]
        );
    }
}
