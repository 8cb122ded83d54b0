//! What amfmn may replace. A folder amfmn writes outputs into keeps a manifest,
//! `.amfmn-manifest.json`, of the files it wrote under it: relative path → purpose (`synth`,
//! `vocab`, `scores`, ...), size and SHA-256. A file may be replaced only when it does not
//! exist, or when the manifest records it as amfmn's output for the same purpose and it is
//! unchanged since; anything else needs `--force`. Only files the manifest records for a purpose,
//! and only while they are still what amfmn wrote, are ever removed as that purpose's stale
//! outputs.
//!
//! The manifest is a file like any other a user or an attacker can edit: every entry must be a
//! plain relative path inside its folder (no `..`, no absolute path), and no file is written or
//! removed through a symbolic link below the folder, so nothing outside it is ever touched.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{remove_if_present, sha256_file, sha256_hex, write_atomic, write_atomic_with};

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
        if std::fs::symlink_metadata(&path).is_err() {
            return Ok(Manifest::default());
        }
        let text = super::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let manifest: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("{}: not an amfmn manifest; remove it or give --force", path.display()))?;
        if let Some(key) = manifest.files.keys().find(|key| !is_plain_relative(key)) {
            bail!(
                "{}: the entry {key:?} is not a path inside its folder (amfmn writes plain relative paths); \
                 remove the manifest or give --force",
                path.display()
            );
        }
        Ok(manifest)
    }
}

/// Whether a manifest key is a plain relative path: `/`-separated names, none of them empty (no
/// root, no `//`), `.` or `..`.
fn is_plain_relative(key: &str) -> bool {
    key.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
}

/// The first symbolic link among the folders between `root` (excluded) and `path` (excluded):
/// amfmn writes and removes only through real folders under the root.
fn link_below(root: &Path, path: &Path) -> Option<PathBuf> {
    let relative = path.strip_prefix(root).ok()?;
    let mut folder = root.to_owned();
    let parents: Vec<Component> = relative.parent().map(|p| p.components().collect()).unwrap_or_default();
    for part in parents {
        folder.push(part);
        if std::fs::symlink_metadata(&folder).is_ok_and(|m| m.file_type().is_symlink()) {
            return Some(folder);
        }
    }
    None
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

    /// Whether `path` is amfmn's unchanged output for this purpose: a regular file (not a link)
    /// of the recorded size and SHA-256, reached through real folders.
    fn is_own(&self, path: &Path) -> Result<bool> {
        let Some(entry) = self.manifest.files.get(&self.key(path)?) else { return Ok(false) };
        let Ok(meta) = std::fs::symlink_metadata(path) else { return Ok(false) };
        let same_size = meta.file_type().is_file() && meta.len() == entry.size;
        Ok(entry.purpose == self.purpose
            && same_size
            && link_below(&self.root, path).is_none()
            && sha256_file(path)? == entry.sha256)
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
    /// `--force`), and always when a folder between the root and it is a symbolic link.
    pub fn check(&mut self, path: &Path) -> Result<()> {
        if let Some(link) = link_below(&self.root, path) {
            bail!(
                "{} is a symbolic link: amfmn writes only into real folders under {} (it would write {} elsewhere)",
                link.display(),
                self.root.display(),
                path.display()
            );
        }
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

    /// Like [`Outputs::write`], with the content produced by `write` into the file.
    pub fn write_with(&mut self, path: &Path, write: impl FnOnce(&mut std::fs::File) -> Result<()>) -> Result<()> {
        self.check(path)?;
        write_atomic_with(path, write)?;
        let size = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?.len();
        self.record(path, size, sha256_file(path)?)
    }

    fn record(&mut self, path: &Path, size: u64, sha256: String) -> Result<()> {
        let key = self.key(path)?;
        let entry = Entry { purpose: self.purpose.clone(), size, sha256 };
        self.manifest.files.insert(key.clone(), entry.clone());
        self.changes.insert(key, Some(entry));
        Ok(())
    }

    /// Removes the files that the manifest records for this purpose and that `keep` does not
    /// name (outputs of an earlier run that this run did not write again). A recorded file that
    /// changed since amfmn wrote it (another size or hash, a link, behind a linked folder) is
    /// the user's now: it is kept, and only its entry goes. Files amfmn did not write, or wrote
    /// for another purpose, are never touched.
    pub fn remove_stale(&mut self, keep: &HashSet<PathBuf>) -> Result<Stale> {
        let keep: HashSet<String> = keep.iter().filter_map(|p| self.key(p).ok()).collect();
        let stale: Vec<String> = self
            .manifest
            .files
            .iter()
            .filter(|(key, entry)| entry.purpose == self.purpose && !keep.contains(*key))
            .map(|(key, _)| key.clone())
            .collect();
        let mut outcome = Stale::default();
        for key in stale {
            let path = self.root.join(&key);
            if self.is_own(&path)? {
                remove_if_present(&path)?;
                outcome.removed.push(key.clone());
            } else if std::fs::symlink_metadata(&path).is_ok() {
                outcome.kept.push(path);
            }
            self.manifest.files.remove(&key);
            self.changes.insert(key, None);
        }
        Ok(outcome)
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

/// Outputs of one purpose given by path, in any number of folders (each with its manifest),
/// all checked before the first is written (`locate --out DIR1/x.png --prob DIR2/y.png`).
pub struct Files {
    folders: Vec<(PathBuf, Outputs)>,
}

impl Files {
    /// Checks that each of `paths` may be written as `purpose` output.
    pub fn check(paths: &[&Path], purpose: &str, force: bool) -> Result<Files> {
        let mut files = Files { folders: Vec::new() };
        for &path in paths {
            files.outputs(path, purpose, force)?.check(path)?;
        }
        Ok(files)
    }

    /// The outputs of the folder of `path` (created on first use).
    fn outputs(&mut self, path: &Path, purpose: &str, force: bool) -> Result<&mut Outputs> {
        let folder = path.parent().unwrap_or(Path::new("")).to_owned();
        let at = match self.folders.iter().position(|(f, _)| *f == folder) {
            Some(at) => at,
            None => {
                self.folders.push((folder, Outputs::for_file(path, purpose, force)?));
                self.folders.len() - 1
            }
        };
        Ok(&mut self.folders[at].1)
    }

    /// Writes `bytes` to the checked `path` atomically and records it.
    pub fn write(&mut self, path: &Path, bytes: &[u8]) -> Result<()> {
        let folder = path.parent().unwrap_or(Path::new(""));
        let outputs = self.folders.iter_mut().find(|(f, _)| f == folder).map(|(_, o)| o);
        outputs.with_context(|| format!("{} was not checked (amfmn bug)", path.display()))?.write(path, bytes)
    }

    /// Writes the manifests.
    pub fn finish(self) -> Result<()> {
        self.folders.into_iter().try_for_each(|(_, outputs)| outputs.finish())
    }
}

/// What [`Outputs::remove_stale`] did with an earlier run's outputs that this run did not write.
#[derive(Debug, Default)]
pub struct Stale {
    /// Removed (manifest keys).
    pub removed: Vec<String>,
    /// Kept because they changed since amfmn wrote them (paths); no longer recorded.
    pub kept: Vec<PathBuf>,
}

impl Stale {
    /// The warning for the kept files, if any.
    pub fn kept_warning(&self) -> Option<String> {
        let names: Vec<String> = self.kept.iter().map(|p| p.display().to_string()).collect();
        (!names.is_empty()).then(|| {
            format!(
                "kept {}: changed since amfmn wrote them, so they are yours now (no longer replaced)",
                names.join(", ")
            )
        })
    }
}

/// Refuses a run whose outputs name one file twice (`--out x.png --prob x.png`, or `x.png` and
/// `x.jpg` both giving `x.overlay.png`), before anything is written: each output is `(path,
/// what it is)`, and paths are compared as the files they reach (`./x.png` is `x.png`).
pub fn refuse_collisions<'a>(outputs: impl IntoIterator<Item = (&'a Path, String)>) -> Result<()> {
    let mut seen: HashMap<PathBuf, String> = HashMap::new();
    for (path, what) in outputs {
        if let Some(first) = seen.insert(identity(path), what.clone()) {
            bail!("{first} and {what} are the same file {}: give each output its own name", path.display());
        }
    }
    Ok(())
}

/// The file `path` reaches: its folder resolved (links, `.`, `..`) when it exists, and its own
/// link resolved when it is one.
fn identity(path: &Path) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(path) {
        return real;
    }
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    match (absolute.parent().map(std::fs::canonicalize), absolute.file_name()) {
        (Some(Ok(folder)), Some(name)) => folder.join(name),
        _ => absolute,
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
        let stale = second.remove_stale(&HashSet::from([d.join("images/a_1.png")])).unwrap();
        second.finish().unwrap();
        assert_eq!((stale.removed, stale.kept), (vec!["images/a_2.png".to_owned()], vec![]));
        let mut left: Vec<String> = std::fs::read_dir(d.join("images"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["a_1.png", "n.txt", "user_1.png"]);
        assert!(!Outputs::new(d, "synth", false).unwrap().is_recorded(&d.join("images/a_2.png")));
    }

    /// A manifest as an attacker writes it: entries that leave the folder, and a stale entry whose
    /// file the user replaced since.
    #[test]
    fn a_manifest_never_leads_outside_its_folder_or_to_a_users_file() {
        let dir = tempfile::tempdir().unwrap();
        let (d, outside) = (dir.path().join("out"), dir.path().join("victim"));
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(outside.join("precious.txt"), "user data").unwrap();
        let entry = r#"{"purpose": "synth", "size": 9, "sha256": "0000"}"#;
        let absolute = outside.join("precious.txt").display().to_string();
        for key in ["../victim/precious.txt", absolute.as_str(), "./a.png", "a//b.png", ""] {
            std::fs::write(d.join(MANIFEST), format!(r#"{{"files": {{{key:?}: {entry}}}}}"#)).unwrap();
            let err = format!("{:#}", Outputs::new(&d, "synth", false).err().unwrap());
            assert!(err.contains("is not a path inside its folder"), "{key}: {err}");
            let mut forced = Outputs::new(&d, "synth", true).unwrap();
            let stale = forced.remove_stale(&HashSet::new()).unwrap();
            assert!(stale.removed.is_empty() && stale.kept.is_empty(), "{key}: --force starts afresh");
        }
        // A folder under the root that is a link to elsewhere: never written or removed through.
        std::os::unix::fs::symlink(&outside, d.join("sub")).unwrap();
        let sha = sha256_hex(b"user data");
        let linked =
            format!(r#"{{"files": {{"sub/precious.txt": {{"purpose": "synth", "size": 9, "sha256": "{sha}"}}}}}}"#);
        std::fs::write(d.join(MANIFEST), linked).unwrap();
        let mut outputs = Outputs::new(&d, "synth", true).unwrap();
        let err = format!("{:#}", outputs.write(&d.join("sub/new.png"), b"x").unwrap_err());
        assert!(err.contains("sub is a symbolic link: amfmn writes only into real folders under"), "{err}");
        assert_eq!(outputs.remove_stale(&HashSet::new()).unwrap().removed, Vec::<String>::new());
        assert_eq!(std::fs::read(outside.join("precious.txt")).unwrap(), b"user data");
        assert!(!outside.join("new.png").exists());

        // A stale output the user replaced since amfmn wrote it is theirs: kept, forgotten.
        std::fs::remove_file(d.join("sub")).unwrap();
        let mut first = Outputs::new(&d, "synth", true).unwrap();
        first.write(&d.join("a.png"), b"amfmn's").unwrap();
        first.finish().unwrap();
        std::fs::write(d.join("a.png"), "user data").unwrap();
        let mut second = Outputs::new(&d, "synth", false).unwrap();
        let stale = second.remove_stale(&HashSet::new()).unwrap();
        second.finish().unwrap();
        assert_eq!((stale.removed.len(), stale.kept), (0, vec![d.join("a.png")]));
        assert_eq!(std::fs::read(d.join("a.png")).unwrap(), b"user data");
        assert!(!Outputs::new(&d, "synth", false).unwrap().is_recorded(&d.join("a.png")));
    }

    #[test]
    fn two_outputs_naming_one_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (x, also_x, y) = (d.join("x.png"), d.join("./sub/../x.png"), d.join("y.png"));
        std::fs::create_dir(d.join("sub")).unwrap();
        refuse_collisions([(x.as_path(), "--out".into()), (y.as_path(), "--prob".into())]).unwrap();
        let err = refuse_collisions([(x.as_path(), "--out".into()), (also_x.as_path(), "--prob".into())]).unwrap_err();
        assert!(err.to_string().starts_with("--out and --prob are the same file"), "{err}");
        std::fs::write(&y, "y").unwrap();
        std::os::unix::fs::symlink(&y, d.join("link.png")).unwrap();
        let link = d.join("link.png");
        assert!(refuse_collisions([(y.as_path(), "a".into()), (link.as_path(), "b".into())]).is_err());
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
