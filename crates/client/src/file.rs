//! Local files that must survive a crash and may hold secrets: the one way btlog replaces a
//! file, creates a private one, and reads a TOML file.
//!
//! [`write_atomic`] leaves either the old or the new content after a crash, never a mix: a
//! fresh temp file beside the target, named for the writing process (created exclusively, so a
//! planted symlink is never followed), written and fsynced, renamed over the target, then the
//! directory fsynced so the rename itself is durable. Permission bits apply on Unix; other
//! platforms keep their defaults.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Who may read a file btlog writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Mode 0600: keys, tokens, an installer's trusted state.
    Private,
    /// Mode 0644: vkeys, monitor state and evidence.
    Public,
}

impl Access {
    #[cfg(unix)]
    fn mode(self) -> u32 {
        match self {
            Access::Private => 0o600,
            Access::Public => 0o644,
        }
    }
}

/// Replaces `path` with `data` atomically and durably (see the module docs). Concurrent
/// writers (two installers sharing a state directory) each use a temp file of their own; the
/// last rename wins.
pub fn write_atomic(path: &Path, data: &[u8], access: Access) -> io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = parent(path);
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    tmp_name.push(format!(".{}.{n}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let mut result = write_new(&tmp, data, access);
    if result
        .as_ref()
        .is_err_and(|e| e.kind() == io::ErrorKind::AlreadyExists)
    {
        // Left by a crashed process that had this id; `create_new` never follows a link.
        fs::remove_file(&tmp)?;
        result = write_new(&tmp, data, access);
    }
    let result = result.and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir)
}

/// Creates `path` with `data`, fsynced; fails with [`io::ErrorKind::AlreadyExists`] if it
/// exists (so a key is never overwritten).
pub fn create_new(path: &Path, data: &[u8], access: Access) -> io::Result<()> {
    write_new(path, data, access)?;
    sync_dir(parent(path))
}

/// Holds an exclusive advisory lock on `path` (created, mode 0600, never through a symlink)
/// until dropped: the way processes sharing a directory serialize a read-modify-write of a file
/// in it. Blocks while another holds it.
pub fn lock_exclusive(path: &Path) -> io::Result<fs::File> {
    let file = open_lock(path)?;
    loop {
        match file.lock() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other.map(|()| file),
        }
    }
}

/// [`lock_exclusive`] without waiting: fails with [`io::ErrorKind::WouldBlock`] while another
/// process (or handle) holds the lock.
pub fn try_lock_exclusive(path: &Path) -> io::Result<fs::File> {
    let file = open_lock(path)?;
    file.try_lock().map_err(|e| match e {
        fs::TryLockError::WouldBlock => {
            io::Error::new(io::ErrorKind::WouldBlock, "locked by another process")
        }
        fs::TryLockError::Error(e) => e,
    })?;
    Ok(file)
}

fn open_lock(path: &Path) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        // A planted symlink in a shared directory must not redirect the lock file.
        options
            .mode(Access::Private.mode())
            .custom_flags(libc::O_NOFOLLOW);
    }
    options.open(path)
}

/// Creates `dir` and its parents; the last one mode 0700 on Unix.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// The permission bits of `path` that let group or others in, if any (always `None` off Unix).
pub fn shared_mode(path: &Path) -> io::Result<Option<u32>> {
    let meta = fs::metadata(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode() & 0o7777;
        Ok((mode & 0o077 != 0).then_some(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        Ok(None)
    }
}

fn write_new(path: &Path, data: &[u8], access: Access) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, access.mode());
    #[cfg(not(unix))]
    let _ = access;
    let mut file = options.open(path)?;
    file.write_all(data)?;
    file.sync_all()
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Makes the entries of `dir` (a file created or renamed in it) durable.
#[cfg(unix)]
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Directories cannot be opened for fsync off Unix; the rename is as durable as the OS makes it.
#[cfg(not(unix))]
pub fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// Why a TOML file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TomlFileError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file is not valid TOML for what it configures.
    #[error("{}:{line}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The 1-based line of the problem.
        line: usize,
        /// What is wrong, on one line.
        reason: String,
    },
}

/// Reads a TOML file into `T`, with errors that name the file and the line.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, TomlFileError> {
    let text = fs::read_to_string(path).map_err(|source| TomlFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| TomlFileError::Parse {
        path: path.to_owned(),
        line: e.span().map_or(1, |s| {
            text[..s.start.min(text.len())].matches('\n').count() + 1
        }),
        reason: e.message().replace('\n', " "),
    })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("stat").permissions().mode() & 0o777
    }

    #[test]
    fn replaces_atomically_with_the_mode_asked_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one", Access::Private).expect("write");
        assert_eq!(mode(&path), 0o600);
        write_atomic(&path, b"two", Access::Public).expect("rewrite");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        assert_eq!(mode(&path), 0o644);
        let names: Vec<_> = fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(names.len(), 1, "no temp file left behind");
    }

    #[test]
    fn concurrent_writers_do_not_fail_each_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("origin.checkpoint");
        std::thread::scope(|s| {
            for i in 0..8u8 {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..50 {
                        write_atomic(path, &[i; 64], Access::Private).expect("write");
                    }
                });
            }
        });
        let data = fs::read(&path).expect("read");
        assert!(data.len() == 64 && data.iter().all(|b| *b == data[0]));
    }

    #[test]
    fn a_planted_symlink_is_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep").expect("victim");
        let key = dir.path().join("log.key");
        std::os::unix::fs::symlink(&victim, &key).expect("symlink");
        let err = create_new(&key, b"secret", Access::Private).expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&victim).expect("read"), b"keep");
    }

    #[test]
    fn shared_modes_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k");
        create_new(&path, b"k", Access::Private).expect("create");
        assert_eq!(shared_mode(&path).expect("stat"), None);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        assert_eq!(shared_mode(&path).expect("stat"), Some(0o640));
    }
}
