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
/// old contents or the new, never a part. Its parent directories are made first. On failure the
/// file beside it is removed and `path` is as it was.
///
/// # Errors
/// The file system's; the randomness's, as [`std::io::ErrorKind::Other`].
pub(crate) fn write_atomically(path: &Path, bytes: &[u8], readers: Readers) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
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
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        // Its own file, just created: nothing half-written is left beside `path`.
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// [`write_atomically`] for the owner alone, then the rename flushed with the directory, so that
/// the new contents survive a power loss once this returns.
///
/// # Errors
/// The file system's.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically(path, bytes, Readers::Owner)?;
    #[cfg(unix)]
    {
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        std::fs::File::open(directory)?.sync_all()?;
    }
    Ok(())
}
