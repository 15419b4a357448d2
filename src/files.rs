//! Files written whole or not at all.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ring::rand::SecureRandom as _;

/// Who may read a file written here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Readers {
    /// As the process's umask allows (published tiles).
    Any,
    /// Its owner alone, on Unix (a bank's own state).
    Owner,
}

/// Writes `bytes` to `path` through a new file of its own beside it (a name no other writer
/// takes: process, count and 64 random bits; created, never opened if it exists, so a link
/// planted under that name is not followed), flushed, then renamed over `path`: a reader sees the
/// old contents or the new, never a part. Its parent directories are made first, each one new
/// flushed into its own parent ([`make_dirs`]). On failure the file beside it is removed and
/// `path` is as it was. The rename itself is durable once `path`'s directory is flushed
/// ([`sync_dir`]; [`write_durably`] does it).
///
/// # Errors
/// The file system's; the randomness's, as [`std::io::ErrorKind::Other`].
pub(crate) fn write_atomically(path: &Path, bytes: &[u8], readers: Readers) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        make_dirs(parent)?;
    }
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let write = WRITES.fetch_add(1, Ordering::Relaxed);
    let mut random = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut random)
        .map_err(|_| std::io::Error::other("no randomness for a temporary file's name"))?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(
        ".{}.{write}.{:016x}.tmp",
        std::process::id(),
        u64::from_be_bytes(random)
    ));
    let temporary = PathBuf::from(temporary);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if readers == Readers::Owner {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    let mut file = options.open(&temporary)?;
    let written = (|| {
        file.write_all(bytes)?;
        file.sync_all()?;
        #[cfg(test)]
        observed::note(observed::Event::Synced(path.to_owned()));
        std::fs::rename(&temporary, path)?;
        #[cfg(test)]
        observed::note(observed::Event::Renamed(path.to_owned()));
        Ok(())
    })();
    if written.is_err() {
        // Its own file, just created: nothing half-written is left beside `path`.
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// [`write_atomically`] for the owner alone, then the rename flushed with the directory, so that
/// the new contents survive a power loss once this returns (on Unix: elsewhere the directory is
/// not flushed).
///
/// # Errors
/// The file system's.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically(path, bytes, Readers::Owner)?;
    sync_dir(parent_of(path))
}

/// Appends `bytes` to the file at `path` and flushes it, if `expected` (given the file, opened
/// for reading too) finds it still the one expected. Returns whether it appended; `false`, with
/// nothing written, for no file there or another.
///
/// # Errors
/// The file system's, and `expected`'s: the file may then hold part of `bytes`.
pub(crate) fn append_durably(
    path: &Path,
    bytes: &[u8],
    expected: impl FnOnce(&mut std::fs::File) -> std::io::Result<bool>,
) -> std::io::Result<bool> {
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
    {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(error),
    };
    if !expected(&mut file)? {
        return Ok(false);
    }
    file.write_all(bytes)?;
    file.sync_data()?;
    Ok(true)
}

/// The SHA-256 of `file`'s `len` bytes from `start`, read a stretch at a time.
///
/// # Errors
/// The file system's; `UnexpectedEof` when the file ends before.
pub(crate) fn sha256_of(
    file: &mut std::fs::File,
    start: u64,
    len: u64,
) -> std::io::Result<[u8; 32]> {
    use std::io::{Read as _, Seek as _};
    file.seek(std::io::SeekFrom::Start(start))?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut stretch = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        let take = usize::try_from(left.min(stretch.len() as u64)).unwrap_or(stretch.len());
        let part = stretch.get_mut(..take).unwrap_or_default();
        file.read_exact(part)?;
        context.update(part);
        left -= take as u64;
    }
    let mut hash = [0u8; 32];
    hash.copy_from_slice(context.finish().as_ref());
    Ok(hash)
}

/// A file's identity: its device and inode on Unix (what a file put in another's place does
/// not share with it); nothing elsewhere.
pub(crate) fn identity(metadata: &std::fs::Metadata) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        Some((metadata.dev(), metadata.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = metadata;
        None
    }
}

/// The directory that holds `path`, for [`sync_dir`] (which reads an empty path, a bare name's
/// parent, as the current directory).
pub(crate) fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or_else(|| Path::new(""))
}

/// Flushes `dir`'s entries (the names created, renamed or removed in it), so that they survive
/// a power loss (an empty path is the current directory). Only on Unix, where a directory can be
/// opened and flushed; elsewhere nothing. As PostgreSQL does (`fsync_fname`), a file system that
/// refuses to flush a directory (`EINVAL`, `ENOTSUP`: some FUSE and network mounts) is taken as
/// having nothing to flush, since nothing more can be done there; any other error (`EIO`) is
/// returned.
///
/// # Errors
/// The file system's.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    #[cfg(unix)]
    match std::fs::File::open(dir)?.sync_all() {
        Ok(()) => {}
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::Unsupported
            ) => {}
        Err(error) => return Err(error),
    }
    #[cfg(test)]
    observed::note(observed::Event::Flushed(dir.to_owned()));
    Ok(())
}

/// Opens (creating it, readable by its owner alone on Unix) and locks `path` for its holder
/// alone (any other open of it, in this process or another, waits), waiting at most `wait` for
/// another holder to let go; the lock is released when the file returned is closed (at a crash
/// too). A link planted under the name is refused, before it is opened (so nothing is made where
/// it points) and again once locked (a link planted meanwhile), and a file removed or replaced
/// while this waited is opened and locked again. A file removed while
/// it is held is beyond it: the next caller makes and locks another, so do not remove it.
///
/// # Errors
/// The file system's; [`std::io::ErrorKind::TimedOut`] when another holder kept it past
/// `wait`; [`std::io::ErrorKind::InvalidInput`] when `path` is a link; `Unsupported` where the
/// platform has no file locks.
pub(crate) fn lock_file(path: &Path, wait: std::time::Duration) -> std::io::Result<std::fs::File> {
    let deadline = std::time::Instant::now() + wait;
    let refuse_link = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is a link, not a lock file", path.display()),
        )
    };
    loop {
        if std::fs::symlink_metadata(path).is_ok_and(|found| found.file_type().is_symlink()) {
            return Err(refuse_link());
        }
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path)?;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    if std::time::Instant::now() >= deadline {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!(
                                "{} stayed locked by another holder for {wait:?}",
                                path.display()
                            ),
                        ));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(std::fs::TryLockError::Error(error)) => return Err(error),
            }
        }
        let named = match std::fs::symlink_metadata(path) {
            Ok(named) => named,
            // Removed while this waited: the next holder would make another file.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        if named.file_type().is_symlink() {
            return Err(refuse_link());
        }
        if identity(&file.metadata()?) != identity(&named) {
            continue;
        }
        return Ok(file);
    }
}

/// What the unit tests see of the files written and the directories flushed, in order, by
/// every thread (each test reads the events under a directory of its own).
#[cfg(test)]
pub(crate) mod observed {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    /// One step.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum Event {
        /// A file's contents flushed (named by the path it is then renamed to).
        Synced(PathBuf),
        /// A file renamed into place.
        Renamed(PathBuf),
        /// A directory made.
        Made(PathBuf),
        /// A directory flushed.
        Flushed(PathBuf),
    }

    static EVENTS: Mutex<Vec<Event>> = Mutex::new(Vec::new());

    pub(super) fn note(event: Event) {
        EVENTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(event);
    }

    /// The events on paths under `root` (itself included), in order.
    pub(crate) fn under(root: &Path) -> Vec<Event> {
        EVENTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|event| match event {
                Event::Synced(path)
                | Event::Renamed(path)
                | Event::Made(path)
                | Event::Flushed(path) => path.starts_with(root),
            })
            .cloned()
            .collect()
    }
}

/// Makes `dir` and its missing ancestors, as `create_dir_all` does, and flushes each one this
/// call makes into its parent: a file flushed into a new directory is not durable while the
/// directory's own name is not (after a power loss the directory, and the file with it, may be
/// gone). A directory another writer made between this call's look and its `create_dir` has its
/// parent flushed here all the same; one found made when this call looked (by a run that
/// stopped before its flush, say) is not: a caller that needs the whole path durable flushes it
/// (as `tiles::publish` does, up to its directory and that directory's parent, before its
/// checkpoint).
///
/// # Errors
/// The file system's; [`std::io::ErrorKind::AlreadyExists`] when something other than a
/// directory is at `dir` or one of its ancestors.
pub(crate) fn make_dirs(dir: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut next = Some(dir);
    while let Some(path) = next.filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(found) = std::fs::metadata(path) {
            if !found.is_dir() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("{} is not a directory", path.display()),
                ));
            }
            break;
        }
        missing.push(path);
        next = path.parent();
    }
    for path in missing.into_iter().rev() {
        match std::fs::create_dir(path) {
            Ok(()) => {
                #[cfg(test)]
                observed::note(observed::Event::Made(path.to_owned()));
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => {}
            Err(error) => return Err(error),
        }
        sync_dir(parent_of(path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests fail by panicking")]

    use super::{Readers, lock_file, make_dirs, write_atomically, write_durably};
    use std::time::Duration;

    #[test]
    fn a_lock_held_elsewhere_times_out_and_a_link_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join(".lock");
        let held = lock_file(&path, Duration::ZERO).unwrap();
        let waited = lock_file(&path, Duration::from_millis(50)).unwrap_err();
        assert_eq!(waited.kind(), std::io::ErrorKind::TimedOut);
        drop(held);
        let again = lock_file(&path, Duration::ZERO).unwrap();
        drop(again);
        #[cfg(unix)]
        {
            let link = root.path().join("link.lock");
            std::os::unix::fs::symlink(&path, &link).unwrap();
            let refused = lock_file(&link, Duration::ZERO).unwrap_err();
            assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput);
            // A link to a name not there: refused, and nothing made where it points.
            let nowhere = root.path().join("nowhere");
            let dangling = root.path().join("dangling.lock");
            std::os::unix::fs::symlink(&nowhere, &dangling).unwrap();
            let refused = lock_file(&dangling, Duration::ZERO).unwrap_err();
            assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput);
            assert!(!nowhere.exists());
        }
    }

    #[test]
    fn a_waiter_whose_lock_file_was_replaced_locks_the_new_one() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join(".lock");
        let first = lock_file(&path, Duration::ZERO).unwrap();
        std::thread::scope(|s| {
            // Waits on the file `first` holds.
            let waiter = s.spawn(|| lock_file(&path, Duration::from_millis(600)));
            std::thread::sleep(Duration::from_millis(100));
            // The file replaced, and the new one held by another.
            std::fs::remove_file(&path).unwrap();
            let other = lock_file(&path, Duration::ZERO).unwrap();
            // The old file let go: the waiter gets it, sees it is no longer the one named, and
            // waits for the new one, which stays held.
            drop(first);
            let waited = waiter.join().unwrap();
            assert_eq!(
                waited.map(|_| ()).unwrap_err().kind(),
                std::io::ErrorKind::TimedOut
            );
            drop(other);
        });
    }

    #[test]
    fn missing_directories_are_made_and_writers_racing_to_make_them_all_succeed() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("tile/0/x001/x002");
        std::thread::scope(|s| {
            for n in 0..8 {
                let deep = &deep;
                s.spawn(move || {
                    write_atomically(&deep.join(format!("{n:03}")), b"tile", Readers::Any).unwrap();
                });
            }
        });
        for n in 0..8 {
            assert_eq!(
                std::fs::read(deep.join(format!("{n:03}"))).unwrap(),
                b"tile"
            );
        }
        // Made already: nothing to do, and no error.
        make_dirs(&deep).unwrap();
        // A bare name's directory is the current one.
        super::sync_dir(super::parent_of(std::path::Path::new("monitor.json"))).unwrap();
        write_durably(&root.path().join("state/monitor.json"), b"{}").unwrap();
        assert!(root.path().join("state").is_dir());
    }

    #[test]
    fn a_file_in_the_way_of_a_directory_is_an_error_not_a_directory() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("tile");
        std::fs::write(&file, b"not a directory").unwrap();
        assert!(make_dirs(&file.join("0")).is_err());
        assert!(make_dirs(&file).is_err(), "a file is not a directory made");
        assert!(write_atomically(&file.join("0/000"), b"x", Readers::Any).is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
    }
}
