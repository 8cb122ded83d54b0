//! An exclusive lock held by a process for its lifetime: a lock file holding the owner's pid,
//! created only if absent, removed when the lock is dropped, and taken over when its owner no
//! longer runs (a run killed without cleaning up).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::process_running;

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
}

impl Lock {
    /// Takes the lock `path` for `what` (named in the error when another process holds it).
    pub fn acquire(path: &Path, what: &str) -> Result<Lock> {
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(mut file) => {
                    writeln!(file, "{}", std::process::id())
                        .and_then(|()| file.sync_all())
                        .with_context(|| format!("cannot write the lock {}", path.display()))?;
                    return Ok(Lock { path: path.to_owned() });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(path).unwrap_or_default();
                    match text.trim().parse::<i32>() {
                        Ok(pid) if pid > 0 && process_running(pid) => bail!(
                            "{what} is in use by amfmn process {pid} (lock {}); wait for it to finish or stop it",
                            path.display()
                        ),
                        _ => {
                            // Its owner is gone: a stale lock, taken over.
                            let _ = std::fs::remove_file(path);
                        }
                    }
                }
                Err(e) => return Err(e).with_context(|| format!("cannot create the lock {}", path.display())),
            }
        }
        bail!("{}: another process keeps taking this lock; try again", path.display())
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.path).is_ok_and(|t| t.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_stale_locks_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.lock");
        let lock = Lock::acquire(&path, "checkpoint/x").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), std::process::id().to_string());
        let err = format!("{:#}", Lock::acquire(&path, "checkpoint/x").unwrap_err());
        assert!(err.contains(&format!("checkpoint/x is in use by amfmn process {}", std::process::id())), "{err}");
        drop(lock);
        assert!(!path.exists(), "released on drop");

        // A pid that cannot run (beyond pid_max) and garbage are stale.
        for stale in ["999999999\n", "not a pid"] {
            std::fs::write(&path, stale).unwrap();
            let lock = Lock::acquire(&path, "checkpoint/x").unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), std::process::id().to_string());
            drop(lock);
        }
    }
}
