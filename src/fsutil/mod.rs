//! File writing that never leaves a half-written file behind, never follows a link planted at a
//! temporary name and never replaces what amfmn did not write ([`owned`]); file reading that
//! touches only regular files (a FIFO or a device named like an input never blocks a run); file
//! hashes.

pub mod lock;
pub mod owned;

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// Opens the regular file `path` (links followed) for reading. It is opened without blocking and
/// checked before anything reads it, so a FIFO, a device or a folder is refused at once instead
/// of hanging the run. Errors do not repeat the path: callers name the file in their context.
pub fn open(path: &Path) -> Result<std::fs::File> {
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() { "a folder" } else { "a FIFO, socket or device" };
        bail!("it is {what}, not a regular file");
    }
    Ok(file)
}

/// The bytes of the regular file `path` ([`open`]).
pub fn read(path: &Path) -> Result<Vec<u8>> {
    let mut file = open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The UTF-8 text of the regular file `path` ([`open`]).
pub fn read_to_string(path: &Path) -> Result<String> {
    Ok(String::from_utf8(read(path)?).map_err(|e| e.utf8_error())?)
}

/// `text` on one line: line breaks and runs of spaces of a library's message become one space.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether the process `pid` exists (signal 0 checks without sending anything).
pub fn process_running(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only asks whether the process exists and may be signalled.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The pid in the name of a temporary file of [`write_atomic_with`] (`.<name>.tmp<pid>-<random>`,
/// or `.<name>.tmp<pid>` as earlier versions named them).
fn temporary_owner(name: &str) -> Option<i32> {
    let (_, owner) = name.strip_prefix('.')?.rsplit_once(".tmp")?;
    let pid = owner.split_once('-').map_or(owner, |(pid, _)| pid);
    pid.parse().ok()
}

/// The entries of `dir`, none when it does not exist.
pub fn entries_if_present(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let listing = match std::fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    listing.map(|entry| entry.map(|e| e.path()).with_context(|| format!("cannot list {}", dir.display()))).collect()
}

/// Removes `path`; a file that is already gone is fine.
pub fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Removes the temporary files that processes no longer running left in `dir` (a write killed
/// halfway). Returns how many.
pub fn remove_stale_temporaries(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    for path in entries_if_present(dir)? {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if temporary_owner(&name).is_some_and(|pid| pid > 0 && !process_running(pid)) {
            std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// SHA-256 of `bytes`, as hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Bytes as lower-case hex digits.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a regular file, as hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Writes `bytes` to `path` through a temporary file in the same folder, then renames it over
/// `path`; parent folders are created.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |file| file.write_all(bytes).map_err(Into::into))
}

/// Like [`write_atomic`], with the content produced by `write` into the temporary file. The
/// temporary file is created exclusively under an unpredictable name (`.<name>.tmp<pid>-<random>`
/// beside `path`), so a link planted in the folder is never written through; on failure it is
/// removed and `path` is left as it was.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&mut std::fs::File) -> Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create folder {}", dir.display()))?;
    let name = path.file_name().with_context(|| format!("{} is not a file path", path.display()))?;
    let mut temporary = tempfile::Builder::new()
        .prefix(&format!(".{}.tmp{}-", name.to_string_lossy(), std::process::id()))
        .rand_bytes(8)
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    write(temporary.as_file_mut()).with_context(|| format!("cannot write {}", path.display()))?;
    temporary.as_file().sync_all().with_context(|| format!("cannot write {}", path.display()))?;
    temporary
        .persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot rename a temporary file to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_replaces_without_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        write_atomic(&path, b"old").unwrap();
        let err = write_atomic_with(&path, |_| anyhow::bail!("disk full")).unwrap_err();
        assert!(format!("{err:#}").contains("disk full"));
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn links_planted_at_temporary_names_are_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let (outside, folder) = (dir.path().join("precious.txt"), dir.path().join("out"));
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(&outside, "user data").unwrap();
        // Earlier versions wrote through `.out.png.tmp<pid>`: a link there reached any file.
        std::os::unix::fs::symlink(&outside, folder.join(format!(".out.png.tmp{}", std::process::id()))).unwrap();
        write_atomic(&folder.join("out.png"), b"png").unwrap();
        assert_eq!(std::fs::read(&outside).unwrap(), b"user data");
        assert_eq!(std::fs::read(folder.join("out.png")).unwrap(), b"png");
        let mode = std::fs::metadata(folder.join("out.png")).unwrap().permissions().mode();
        assert_eq!(mode & 0o044, 0o044, "outputs stay readable by others (umask applied), not 0600: {mode:o}");
    }

    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("f.png");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo only creates a FIFO at a path this test owns.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for path in [fifo.as_path(), dir.path(), Path::new("/dev/zero")] {
            let err = format!("{:#}", read(path).unwrap_err());
            assert!(err.contains("not a regular file"), "{}: {err}", path.display());
        }
        std::fs::write(dir.path().join("a.txt"), "text").unwrap();
        assert_eq!(read_to_string(&dir.path().join("a.txt")).unwrap(), "text");
    }

    #[test]
    fn temporaries_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mine = format!(".a.json.tmp{}-Xa8Zq0", std::process::id());
        let dead = [".best.safetensors.tmp999999999", ".c.png.tmp999999998-k2Jd9s"];
        for name in dead.into_iter().chain([mine.as_str(), "tmp5", ".x.tmpz", "kept.txt"]) {
            std::fs::write(d.join(name), "x").unwrap();
        }
        assert_eq!(remove_stale_temporaries(d).unwrap(), 2);
        let mut left: Vec<String> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        let mut expected = vec![mine.clone(), ".x.tmpz".into(), "kept.txt".into(), "tmp5".into()];
        expected.sort();
        assert_eq!(left, expected, "a live process's temporary stays");
    }
}
