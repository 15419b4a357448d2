//! Files written whole or not at all.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path` through a file of its own beside it, flushed, then renamed over
/// `path`: a reader sees the old contents or the new, never a part (its parent directories are
/// made first).
///
/// # Errors
/// The file system's.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut temporary = path.as_os_str().to_owned();
    // A name of its own per write: writers in other processes or threads never share one.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let write = WRITES.fetch_add(1, Ordering::Relaxed);
    temporary.push(format!(".{}.{write}.tmp", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        // Nothing half-written left beside the file (it may not exist: ignored).
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// [`write_atomically`], then the rename flushed with the directory, so that the new contents
/// survive a power loss once this returns.
///
/// # Errors
/// The file system's.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically(path, bytes)?;
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
