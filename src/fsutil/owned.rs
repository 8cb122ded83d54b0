//! What amfmn may replace. A folder amfmn writes outputs into keeps a manifest,
//! `.amfmn-manifest.json`, of the files it wrote under it: relative path → purpose (`synth`,
//! `vocab`, `scores`, ...), size and SHA-256. A file may be replaced only when it does not
//! exist, or when the manifest records it as amfmn's output for the same purpose and it is
//! unchanged since; anything else needs `--force`. Only files the manifest records for a purpose
//! are ever removed as that purpose's stale outputs.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{remove_if_present, sha256_file, sha256_hex, write_atomic, write_atomic_path};

/// The manifest's file name in each folder.
pub const MANIFEST: &str = ".amfmn-manifest.json";

/// One file amfmn wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    purpose: String,
    size: u64,
    sha256: String,
}

/// The manifest of one folder.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    files: BTreeMap<String, Entry>,
}

impl Manifest {
    fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{}: not an amfmn manifest; remove it or give --force", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
}

/// A set of outputs written for one purpose under one folder, the manifest's. The manifest is
/// updated by [`Outputs::finish`] (and, best effort, when the set is dropped after a failure).
pub struct Outputs {
    root: PathBuf,
    purpose: String,
    force: bool,
    manifest: Manifest,
    /// The entries this set recorded (`Some`) or removed (`None`), applied to the manifest on
    /// disk when it is saved, so that sets of other purposes writing into the same folder
    /// meanwhile keep their entries.
    changes: BTreeMap<String, Option<Entry>>,
    /// Paths already found writable (so a write after a check does not hash the file again).
    checked: HashSet<PathBuf>,
}

impl Outputs {
    /// Outputs for `purpose` under `root`; with `force`, existing files that amfmn did not write
    /// may be replaced too (and an unreadable manifest is started afresh).
    pub fn new(root: &Path, purpose: &str, force: bool) -> Result<Outputs> {
        let manifest = match Manifest::read(root) {
            Ok(m) => m,
            Err(_) if force => Manifest::default(),
            Err(e) => return Err(e),
        };
        let (root, purpose) = (root.to_owned(), purpose.to_owned());
        Ok(Outputs { root, purpose, force, manifest, changes: BTreeMap::new(), checked: HashSet::new() })
    }

    /// Outputs for `purpose` of the single file `path` (the manifest of its folder; a bare
    /// file name means the current folder).
    pub fn for_file(path: &Path, purpose: &str, force: bool) -> Result<Outputs> {
        Outputs::new(path.parent().unwrap_or(Path::new("")), purpose, force)
    }

    /// The manifest key of `path`: its path relative to the root, `/`-separated.
    fn key(&self, path: &Path) -> Result<String> {
        let relative = path.strip_prefix(&self.root).with_context(|| {
            format!("{} is outside {} (amfmn bug: an output outside its folder)", path.display(), self.root.display())
        })?;
        let parts: Vec<String> = relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        Ok(parts.join("/"))
    }

    /// Whether `path` is amfmn's unchanged output for this purpose.
    fn is_own(&self, path: &Path) -> Result<bool> {
        let Some(entry) = self.manifest.files.get(&self.key(path)?) else { return Ok(false) };
        let size = std::fs::metadata(path).map(|m| m.len()).ok();
        Ok(entry.purpose == self.purpose && size == Some(entry.size) && sha256_file(path)? == entry.sha256)
    }

    /// Whether the manifest records any output of this purpose (the folder is this purpose's own).
    pub fn has_outputs(&self) -> bool {
        self.manifest.files.values().any(|e| e.purpose == self.purpose)
    }

    /// Whether `path` (under the root) is recorded as this purpose's output.
    pub fn is_recorded(&self, path: &Path) -> bool {
        self.key(path).is_ok_and(|k| self.manifest.files.get(&k).is_some_and(|e| e.purpose == self.purpose))
    }

    /// Refuses `path` when it exists and is not this purpose's own unchanged output (unless
    /// `--force`).
    pub fn check(&mut self, path: &Path) -> Result<()> {
        if self.force || self.checked.contains(path) || std::fs::symlink_metadata(path).is_err() || self.is_own(path)? {
            self.checked.insert(path.to_owned());
            return Ok(());
        }
        bail!(
            "{} exists and amfmn did not write it as {} output (or it changed since); give --force to replace it",
            path.display(),
            self.purpose
        )
    }

    /// Writes `bytes` to `path` atomically (after [`Outputs::check`]) and records it.
    pub fn write(&mut self, path: &Path, bytes: &[u8]) -> Result<()> {
        self.check(path)?;
        write_atomic(path, bytes)?;
        self.record(path, bytes.len() as u64, sha256_hex(bytes))
    }

    /// Like [`Outputs::write`], for writers that take a file path (the temporary file).
    pub fn write_path(&mut self, path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        self.check(path)?;
        write_atomic_path(path, write)?;
        let size = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?.len();
        self.record(path, size, sha256_file(path)?)
    }

    /// Like [`Outputs::write`], with the content produced by `write` into the file.
    pub fn write_with(&mut self, path: &Path, write: impl FnOnce(&mut std::fs::File) -> Result<()>) -> Result<()> {
        self.write_path(path, |tmp| {
            let mut file = std::fs::File::create(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
            write(&mut file).with_context(|| format!("cannot write {}", path.display()))?;
            file.flush()?;
            file.sync_all().with_context(|| format!("cannot write {}", path.display()))
        })
    }

    fn record(&mut self, path: &Path, size: u64, sha256: String) -> Result<()> {
        let key = self.key(path)?;
        let entry = Entry { purpose: self.purpose.clone(), size, sha256 };
        self.manifest.files.insert(key.clone(), entry.clone());
        self.changes.insert(key, Some(entry));
        Ok(())
    }

    /// Removes the files that the manifest records for this purpose and that `keep` does not
    /// name (outputs of an earlier run that this run did not write again), and returns their
    /// keys. Files amfmn did not write, or wrote for another purpose, are never touched.
    pub fn remove_stale(&mut self, keep: &HashSet<PathBuf>) -> Result<Vec<String>> {
        let keep: HashSet<String> = keep.iter().filter_map(|p| self.key(p).ok()).collect();
        let stale: Vec<String> = self
            .manifest
            .files
            .iter()
            .filter(|(key, entry)| entry.purpose == self.purpose && !keep.contains(*key))
            .map(|(key, _)| key.clone())
            .collect();
        for key in &stale {
            let path = self.root.join(key);
            remove_if_present(&path)?;
            self.manifest.files.remove(key);
            self.changes.insert(key.clone(), None);
        }
        Ok(stale)
    }

    /// Writes the manifest.
    pub fn finish(mut self) -> Result<()> {
        self.save()
    }

    /// Applies this set's changes to the manifest as it is on disk now, and writes it.
    fn save(&mut self) -> Result<()> {
        if self.changes.is_empty() {
            return Ok(());
        }
        let mut manifest = Manifest::read(&self.root).unwrap_or_default();
        for (key, change) in std::mem::take(&mut self.changes) {
            match change {
                Some(entry) => manifest.files.insert(key, entry),
                None => manifest.files.remove(&key),
            };
        }
        let json = serde_json::to_string_pretty(&manifest)?;
        write_atomic(&self.root.join(MANIFEST), json.as_bytes())?;
        self.manifest = manifest;
        Ok(())
    }
}

impl Drop for Outputs {
    /// After a failure, still records what was written, so that a second run may replace it.
    fn drop(&mut self) {
        let _ = self.save();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unchanged_own_outputs_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("theirs.txt"), "a user's file").unwrap();
        let mut out = Outputs::new(d, "vocab", false).unwrap();
        let err = format!("{:#}", out.write(&d.join("theirs.txt"), b"x").unwrap_err());
        assert!(err.contains("theirs.txt exists and amfmn did not write it as vocab output"), "{err}");
        assert!(err.contains("--force"), "{err}");
        out.write(&d.join("ours.txt"), b"one").unwrap();
        out.finish().unwrap();
        assert_eq!(std::fs::read(d.join("theirs.txt")).unwrap(), b"a user's file");

        let mut again = Outputs::for_file(&d.join("ours.txt"), "vocab", false).unwrap();
        again.write(&d.join("ours.txt"), b"two").unwrap();
        again.finish().unwrap();
        assert_eq!(std::fs::read(d.join("ours.txt")).unwrap(), b"two");

        let mut other = Outputs::new(d, "scores", false).unwrap();
        assert!(other.write(&d.join("ours.txt"), b"3").is_err(), "another purpose's output");
        std::fs::write(d.join("ours.txt"), "edited by hand").unwrap();
        let mut edited = Outputs::new(d, "vocab", false).unwrap();
        assert!(edited.write(&d.join("ours.txt"), b"4").is_err(), "changed since amfmn wrote it");
        let mut forced = Outputs::new(d, "vocab", true).unwrap();
        forced.write(&d.join("theirs.txt"), b"forced").unwrap();
        forced.finish().unwrap();
        assert_eq!(std::fs::read(d.join("theirs.txt")).unwrap(), b"forced");
    }

    #[test]
    fn sets_of_two_purposes_in_one_folder_keep_each_others_entries() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut pictures = Outputs::new(d, "locate", false).unwrap();
        pictures.check(&d.join("map.png")).unwrap();
        let mut codes = Outputs::new(d, "crop codes", false).unwrap();
        codes.write(&d.join("scene.codes"), b"codes").unwrap();
        codes.finish().unwrap();
        pictures.write(&d.join("map.png"), b"png").unwrap();
        pictures.finish().unwrap();
        let mut again = Outputs::new(d, "crop codes", false).unwrap();
        again.write(&d.join("scene.codes"), b"new codes").unwrap();
        again.finish().unwrap();
        let manifest = Manifest::read(d).unwrap();
        let purposes: Vec<(&str, &str)> =
            manifest.files.iter().map(|(k, e)| (k.as_str(), e.purpose.as_str())).collect();
        assert_eq!(purposes, [("map.png", "locate"), ("scene.codes", "crop codes")]);
    }

    #[test]
    fn stale_outputs_of_the_purpose_only_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("images")).unwrap();
        std::fs::write(d.join("images/user_1.png"), "keep").unwrap();
        let mut first = Outputs::new(d, "synth", true).unwrap();
        for name in ["images/a_1.png", "images/a_2.png"] {
            first.write(&d.join(name), name.as_bytes()).unwrap();
        }
        first.finish().unwrap();
        let mut notes = Outputs::new(d, "notes", false).unwrap();
        notes.write(&d.join("images/n.txt"), b"n").unwrap();
        notes.finish().unwrap();

        let mut second = Outputs::new(d, "synth", false).unwrap();
        assert!(second.has_outputs() && second.is_recorded(&d.join("images/a_2.png")));
        second.write(&d.join("images/a_1.png"), b"new").unwrap();
        let removed = second.remove_stale(&HashSet::from([d.join("images/a_1.png")])).unwrap();
        second.finish().unwrap();
        assert_eq!(removed, ["images/a_2.png"]);
        let mut left: Vec<String> = std::fs::read_dir(d.join("images"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["a_1.png", "n.txt", "user_1.png"]);
        assert!(!Outputs::new(d, "synth", false).unwrap().is_recorded(&d.join("images/a_2.png")));
    }

    #[test]
    fn a_failed_run_still_records_what_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        {
            let mut out = Outputs::for_file(&path, "vocab", false).unwrap();
            out.write(&path, b"partial").unwrap();
        }
        let mut again = Outputs::for_file(&path, "vocab", false).unwrap();
        again.write(&path, b"complete").unwrap();
        again.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"complete");
        let bad = dir.path().join(MANIFEST);
        std::fs::write(&bad, "not json").unwrap();
        let err = format!("{:#}", Outputs::for_file(&path, "vocab", false).err().unwrap());
        assert!(err.contains("not an amfmn manifest; remove it or give --force"), "{err}");
        assert!(Outputs::for_file(&path, "vocab", true).is_ok());
    }
}
