//! `herald backup`: a consistent copy of a live SQLite database.
//!
//! `VACUUM INTO` reads one snapshot (a read transaction: in WAL mode the
//! worker's writers go on meanwhile) and writes it out as a compact database of
//! its own, without a WAL. The copy is written under a temporary name beside
//! the target, synced, then moved into place, so the target is never half a
//! file: it is absent, or what it was before, or the whole copy.
//!
//! PostgreSQL is backed up with `pg_dump`, which takes its own consistent
//! snapshot; Herald does not wrap it.

use std::path::{Path, PathBuf};

use super::{Context as _, Pool, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{} already exists", .0.display())]
    Exists(PathBuf),
    #[error("{} is the database being backed up", .0.display())]
    SameFile(PathBuf),
    #[error("this database is PostgreSQL; back it up with pg_dump")]
    Postgres,
    #[error("cannot write the backup {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// The copy, as the caller named it.
    pub path: PathBuf,
    pub bytes: u64,
    /// The database file that was copied.
    pub source: PathBuf,
}

impl Store {
    /// Writes a consistent copy of this SQLite database to `target`, which
    /// must not exist unless `replace` is set.
    pub async fn backup(&self, target: &Path, replace: bool) -> Result<Backup, BackupError> {
        let Pool::Sqlite(pool) = &self.pool else {
            return Err(BackupError::Postgres);
        };
        let source: String =
            sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                .fetch_one(pool)
                .await
                .context("finding the database file to back up")?;
        let source = PathBuf::from(source);
        if target.exists() {
            if !replace {
                return Err(BackupError::Exists(target.to_path_buf()));
            }
            if same_file(target, &source) {
                return Err(BackupError::SameFile(target.to_path_buf()));
            }
        }
        let io = |source| BackupError::Io {
            path: target.to_path_buf(),
            source,
        };
        let dir = parent_dir(target);
        if !dir.is_dir() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("there is no directory {}", dir.display()),
            )));
        }
        let partial = partial_name(target).map_err(io)?;
        // VACUUM INTO writes only into a new file: clear a leftover of an
        // earlier backup killed half-way under the same process id.
        let _ = std::fs::remove_file(&partial);
        let written = async {
            let into = partial.to_str().ok_or_else(|| {
                io(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the path is not valid UTF-8",
                ))
            })?;
            sqlx::query("VACUUM INTO $1")
                .bind(into)
                .execute(pool)
                .await
                .context("copying the database (VACUUM INTO)")?;
            // VACUUM INTO does not sync what it wrote: make the copy durable
            // before it takes the target's name.
            let file = std::fs::File::open(&partial).map_err(io)?;
            file.sync_all().map_err(io)?;
            let bytes = file.metadata().map_err(io)?.len();
            put_in_place(&partial, target, replace)?;
            Ok::<u64, BackupError>(bytes)
        }
        .await;
        let bytes = match written {
            Ok(bytes) => bytes,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
        };
        sync_dir(target);
        Ok(Backup {
            path: target.to_path_buf(),
            bytes,
            source,
        })
    }
}

/// `DIR/.NAME.PID.partial`: beside the target, so the final rename stays on
/// one file system; hidden, and named after the process that writes it.
fn partial_name(target: &Path) -> std::io::Result<PathBuf> {
    let name = target
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"))?;
    let mut partial = std::ffi::OsString::from(".");
    partial.push(name);
    partial.push(format!(".{}.partial", std::process::id()));
    Ok(target.with_file_name(partial))
}

/// Gives the finished copy the target's name: a rename when replacing, else
/// a hard link, which fails rather than overwrite a file that appeared meanwhile.
fn put_in_place(partial: &Path, target: &Path, replace: bool) -> Result<(), BackupError> {
    let io = |source| BackupError::Io {
        path: target.to_path_buf(),
        source,
    };
    if replace {
        return std::fs::rename(partial, target).map_err(io);
    }
    match std::fs::hard_link(partial, target) {
        Ok(()) => {
            let _ = std::fs::remove_file(partial);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(BackupError::Exists(target.to_path_buf()))
        }
        // A file system without hard links: the check made before copying stands.
        Err(_) if !target.exists() => std::fs::rename(partial, target).map_err(io),
        Err(e) => Err(io(e)),
    }
}

/// The directory `target` goes in (`.` for a bare file name).
fn parent_dir(target: &Path) -> &Path {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Makes the new name durable too (a crash right after could otherwise lose
/// the rename). Best effort: not every platform can open a directory.
fn sync_dir(target: &Path) {
    if let Ok(d) = std::fs::File::open(parent_dir(target)) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_file_is_hidden_beside_the_target() {
        let p = partial_name(Path::new("backups/herald.db")).unwrap();
        assert_eq!(p.parent(), Some(Path::new("backups")));
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(".herald.db.") && name.ends_with(".partial"));
        assert!(partial_name(Path::new("/")).is_err());
    }
}
