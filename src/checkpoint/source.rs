//! Which checkpoint a path given by a user names: the one rule every command follows.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::{pytorch, CheckpointKind};

/// The original code's best checkpoint in a fold folder (`<model name>_best.pth.tar`, the file its
/// `test.py` reads; AMFMN is the only model name).
pub const ORIGINAL_BEST: &str = "AMFMN_best.pth.tar";

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An amfmn checkpoint, by its sidecar.
    Amfmn(PathBuf),
    /// A `torch.save` file: a checkpoint of the original code, or a bare state dict.
    Original(PathBuf),
    /// Weights without a sidecar (safetensors): their model options must come from an option file.
    Bare(PathBuf),
}

impl Source {
    /// What `path` names, a fold folder meaning its `kind` checkpoint:
    /// - a folder: its `<kind>.json`; for `best`, else the original's [`ORIGINAL_BEST`];
    /// - a `.json` file: that sidecar;
    /// - a `torch.save` file: the original's checkpoint;
    /// - any other file (`best.safetensors`): the sidecar beside it, else bare weights.
    pub fn of(path: &Path, kind: CheckpointKind) -> Result<Source> {
        if path.is_dir() {
            let sidecar = kind.sidecar_in(path);
            let original = path.join(ORIGINAL_BEST);
            if sidecar.is_file() || kind == CheckpointKind::Last {
                return Ok(Source::Amfmn(sidecar));
            }
            if original.is_file() {
                return Ok(Source::Original(original));
            }
            bail!(
                "{} holds no checkpoint (neither {} nor {ORIGINAL_BEST})",
                path.display(),
                kind.sidecar_in(Path::new("")).display()
            );
        }
        if path.extension().is_some_and(|e| e == "json") || !path.exists() {
            return Ok(Source::Amfmn(sidecar_of(path, kind)));
        }
        if pytorch::is_pytorch_file(path) {
            return Ok(Source::Original(path.to_owned()));
        }
        let sidecar = path.with_extension("json");
        Ok(if sidecar.is_file() { Source::Amfmn(sidecar) } else { Source::Bare(path.to_owned()) })
    }

    /// The checkpoint a fold folder holds for evaluation, if it holds one.
    pub fn in_fold(dir: &Path) -> Option<Source> {
        dir.is_dir().then(|| Source::of(dir, CheckpointKind::Best).ok()).flatten()
    }

    /// The file: a sidecar, a `torch.save` file or bare weights.
    pub fn path(&self) -> &Path {
        match self {
            Source::Amfmn(path) | Source::Original(path) | Source::Bare(path) => path,
        }
    }
}

/// The sidecar `path` names: a fold folder's `<kind>.json`, a `.json` file itself, the `.json`
/// beside any other file.
pub(super) fn sidecar_of(path: &Path, kind: CheckpointKind) -> PathBuf {
    if path.is_dir() {
        kind.sidecar_in(path)
    } else if path.extension().is_some_and(|e| e == "json") {
        path.to_owned()
    } else {
        path.with_extension("json")
    }
}
