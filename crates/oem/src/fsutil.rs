//! Writing files so that a failure leaves nothing behind: every output is
//! written to a temporary file in the same directory, synced, and renamed
//! into place; directories are staged under a temporary name and renamed
//! whole.
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A synced temporary file holding `bytes`, next to `path`.
fn synced_temp(path: &Path, bytes: &[u8]) -> Result<tempfile::NamedTempFile> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".tc-tmp-")
        .tempfile_in(parent_of(path))
        .at(parent_of(path))?;
    tmp.write_all(bytes).at(tmp.path().to_path_buf())?;
    tmp.as_file().sync_all().at(path)?;
    Ok(tmp)
}

/// Writes `bytes` to `path` atomically; refuses to replace an existing file.
pub fn write_new(path: &Path, bytes: &[u8], what: &'static str) -> Result<()> {
    if path.exists() {
        return Err(Error::AlreadyExists {
            path: path.to_path_buf(),
            what,
        });
    }
    synced_temp(path, bytes)?
        .persist_noclobber(path)
        .map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                Error::AlreadyExists {
                    path: path.to_path_buf(),
                    what,
                }
            } else {
                Error::Io {
                    path: path.to_path_buf(),
                    source: e.error,
                }
            }
        })?;
    sync_dir(parent_of(path));
    Ok(())
}

/// Replaces each `(path, bytes)` of `files`, in order, atomically one by
/// one, after all of them are staged (synced temporary files): an error
/// before the renames changes nothing, and each rename replaces one whole
/// file. Order them so that a crash between two renames leaves a state
/// that is still valid (CRLs before the bundle that repeats them).
pub fn replace_all(files: &[(&Path, &[u8])]) -> Result<()> {
    let mut staged = Vec::with_capacity(files.len());
    for (path, bytes) in files {
        staged.push((synced_temp(path, bytes)?, *path));
    }
    for (tmp, path) in staged {
        tmp.persist(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e.error,
        })?;
        sync_dir(parent_of(path));
    }
    Ok(())
}

/// Best effort: make a rename durable.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A directory being built under a temporary name next to its final path.
/// Dropped without [`StagedDir::commit`], it is removed with its contents.
pub struct StagedDir {
    tmp: Option<tempfile::TempDir>,
    target: PathBuf,
    what: &'static str,
}

impl StagedDir {
    /// Starts staging `target`, which must not exist.
    pub fn new(target: &Path, what: &'static str) -> Result<Self> {
        if target.exists() {
            return Err(Error::AlreadyExists {
                path: target.to_path_buf(),
                what,
            });
        }
        let parent = parent_of(target);
        if !parent.is_dir() {
            return Err(Error::NotFound {
                path: parent.to_path_buf(),
                what: "parent directory",
            });
        }
        let tmp = tempfile::Builder::new()
            .prefix(".tc-staging-")
            .tempdir_in(parent)
            .at(parent)?;
        Ok(Self {
            tmp: Some(tmp),
            target: target.to_path_buf(),
            what,
        })
    }

    /// The staging directory, where files go until the commit.
    pub fn path(&self) -> &Path {
        match &self.tmp {
            Some(t) => t.path(),
            None => &self.target,
        }
    }

    /// The final path.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Renames the staged directory to its final path.
    pub fn commit(mut self) -> Result<PathBuf> {
        let Some(tmp) = self.tmp.take() else {
            return Ok(self.target.clone());
        };
        if self.target.exists() {
            return Err(Error::AlreadyExists {
                path: self.target.clone(),
                what: self.what,
            });
        }
        let staged = tmp.keep();
        for entry in fs::read_dir(&staged).at(&staged)? {
            let entry = entry.at(&staged)?;
            if entry.file_type().at(entry.path())?.is_file() {
                File::open(entry.path())
                    .and_then(|f| f.sync_all())
                    .at(entry.path())?;
            }
        }
        if let Err(source) = fs::rename(&staged, &self.target) {
            let _ = fs::remove_dir_all(&staged);
            return Err(Error::Io {
                path: self.target.clone(),
                source,
            });
        }
        sync_dir(parent_of(&self.target));
        Ok(self.target.clone())
    }
}

/// One process at a time changing a directory: an exclusive advisory lock
/// (`flock`) on the directory itself, released when dropped (or when the
/// process dies, `kill -9` included). Locking the directory rather than a
/// file in it creates nothing, so a refused command leaves the directory
/// byte for byte as it was.
///
/// The OEM's commands that change OEM_DIR take it before they read what
/// they will change — the audit log's head, the last security counter, a
/// CRL's number — so that two at once cannot fork the audit log's hash
/// chain, master two releases past each other's counter check, or sign two
/// CRLs with one number. Another process holding it is waited for.
#[derive(Debug)]
pub struct DirLock {
    _dir: File,
}

impl DirLock {
    /// Waits for, then holds, the lock of `dir`.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let file = File::open(dir).at(dir)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                tracing::warn!(
                    "waiting for {}: another trustchain process is changing it",
                    dir.display()
                );
                file.lock().at(dir)?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(e).at(dir),
        }
        Ok(Self { _dir: file })
    }
}

/// Reads `path`, at most `max + 1` bytes: bounded while reading, not by the
/// size the file states (a pipe states none, and a file can grow), so the
/// caller's parser sees more than `max` and refuses it by name without the
/// rest ever being read. `what` names the file when it does not exist.
pub fn read_bounded(path: &Path, max: u64, what: &'static str) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound {
            path: path.to_path_buf(),
            what,
        },
        _ => Error::Io {
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .at(path)?;
    Ok(bytes)
}
