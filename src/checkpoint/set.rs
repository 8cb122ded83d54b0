//! A checkpoint is one consistent set of files (weights, optimizer state, sidecar), replaced as
//! a whole:
//!
//! 1. **stage**: every file of the new set is written under a staging name `.<file>.new` (each
//!    written atomically and synced), then the staged sidecar `.<kind>.json.new`, which holds
//!    the SHA-256 of every file. Writing the staged sidecar is the commit point.
//! 2. **commit**: the staged files are renamed over the old ones, the sidecar last. For `last`
//!    (the set a run resumes from) the old files are first moved into `previous/`, so the
//!    previous complete set stays on disk as a fallback.
//! 3. **recover** (by the next run, under the experiment's lock): a staged sidecar whose files
//!    all match their hashes is a committed set whose renames are finished (rolled forward);
//!    staged files without a valid staged sidecar are an unfinished write and are removed, so
//!    the previous set stays. Temporary files of killed processes go too.
//!
//! A crash, a full disk or a second Ctrl-C at any point therefore leaves the previous complete
//! set or the new complete set, and a set is verified against its hashes when it is read.
//! Resuming from a `last` set that is damaged afterwards (a disk error, a user's copy) falls
//! back to `previous/last.json` when that set is whole.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

use super::tensors::{parse_with_metadata, TensorMap};
use super::{CheckpointInfo, CheckpointKind};
use crate::fsutil::{remove_if_present, remove_stale_temporaries, sha256_file, sha256_hex};

/// The sub-folder of a fold folder that holds the previous `last` set.
pub const PREVIOUS: &str = "previous";

/// The staging name of a file of a set.
pub(super) fn staged(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.new"))
}

/// The files of a set other than its sidecar, with their recorded hashes.
fn data_files(info: &CheckpointInfo) -> Vec<(&str, Option<&str>)> {
    let mut files = vec![(info.model_file.as_str(), info.model_sha256.as_deref())];
    if let Some(name) = &info.optimizer_file {
        files.push((name.as_str(), info.optimizer_sha256.as_deref()));
    }
    files
}

/// Renames the staged files of `info`'s set over the old ones, the sidecar last; for `last`, the
/// old files go into `previous/` first. A file whose staged copy is gone was renamed already.
pub(super) fn commit(dir: &Path, info: &CheckpointInfo) -> Result<()> {
    let sidecar = info.kind.sidecar_in(dir);
    let sidecar_name = sidecar.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let names = data_files(info).into_iter().map(|(name, _)| name.to_owned()).chain([sidecar_name]);
    let previous = dir.join(PREVIOUS);
    for name in names {
        let from = staged(dir, &name);
        if !from.exists() {
            continue;
        }
        let current = dir.join(&name);
        if info.kind == CheckpointKind::Last && current.exists() {
            std::fs::create_dir_all(&previous).with_context(|| format!("cannot create {}", previous.display()))?;
            std::fs::rename(&current, previous.join(&name))
                .with_context(|| format!("cannot move {} into {}", current.display(), previous.display()))?;
        }
        std::fs::rename(&from, &current).with_context(|| format!("cannot rename {} to {name}", from.display()))?;
    }
    for folder in [dir, previous.as_path()] {
        if let Ok(handle) = std::fs::File::open(folder) {
            let _ = handle.sync_all();
        }
    }
    Ok(())
}

/// Whether every file of the staged set `info` (its staged copy, or the final file when that
/// was renamed already) has the hash the staged sidecar records.
fn staged_set_is_whole(dir: &Path, info: &CheckpointInfo) -> bool {
    data_files(info).into_iter().all(|(name, hash)| {
        let staged_copy = staged(dir, name);
        let path = if staged_copy.exists() { staged_copy } else { dir.join(name) };
        hash.is_some_and(|h| sha256_file(&path).is_ok_and(|actual| actual == h))
    })
}

/// Finishes or undoes what a killed run left in the fold folder `dir` for `kind`: see the
/// module documentation. Returns true when a committed set was rolled forward.
pub fn recover(dir: &Path, kind: CheckpointKind) -> Result<bool> {
    remove_stale_temporaries(dir)?;
    let staged_sidecar = staged(dir, &format!("{}.json", kind.name()));
    let staged_info = crate::fsutil::read_to_string(&staged_sidecar)
        .ok()
        .and_then(|text| serde_json::from_str::<CheckpointInfo>(&text).ok());
    let rolled_forward = match staged_info {
        Some(info) if staged_set_is_whole(dir, &info) => {
            commit(dir, &info)?;
            true
        }
        _ => false,
    };
    for name in [format!("{}.safetensors", kind.name()), format!("{}.optimizer.safetensors", kind.name())] {
        remove_if_present(&staged(dir, &name))?;
    }
    remove_if_present(&staged_sidecar)?;
    Ok(rolled_forward)
}

/// The tensors of the file `name` of a set, read once and checked against the hash its sidecar
/// records (sidecars written before hashes were recorded have none: nothing to check); a
/// `torch.save` file (the original code's checkpoint to resume from) is read as such.
pub(super) fn read_verified(dir: &Path, name: &str, hash: Option<&str>, sidecar: &Path) -> Result<TensorMap> {
    let path = dir.join(name);
    let bytes = crate::fsutil::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    if hash.is_some_and(|expected| sha256_hex(&bytes) != expected) {
        return Err(damaged(&path, sidecar));
    }
    if super::pytorch::is_pytorch(&bytes) {
        return Ok(super::pytorch::parse(&bytes)
            .with_context(|| format!("{}: not a readable state dict", path.display()))?
            .tensors);
    }
    Ok(parse_with_metadata(&bytes, &path)?.0)
}

/// Checks every file of the set `info` in `dir` against the hashes its sidecar records.
pub(super) fn verify(dir: &Path, info: &CheckpointInfo, sidecar: &Path) -> Result<()> {
    for (name, hash) in data_files(info) {
        let path = dir.join(name);
        let actual = sha256_file(&path).with_context(|| format!("cannot read {}", path.display()))?;
        if hash.is_some_and(|expected| actual != expected) {
            return Err(damaged(&path, sidecar));
        }
    }
    Ok(())
}

fn damaged(path: &Path, sidecar: &Path) -> anyhow::Error {
    anyhow!(
        "{} is damaged: it does not match the SHA-256 that {} records (a run may be writing it; \
         otherwise resume from another checkpoint or retrain)",
        path.display(),
        sidecar.display()
    )
}

#[cfg(test)]
mod tests {
    use super::super::{Checkpoint, CheckpointInfo, CheckpointKind};
    use super::*;
    use crate::model::Model;
    use crate::options::Options;
    use tch::Device;

    fn model(seed: u64) -> (Options, Model) {
        let options = crate::model::demo_options(&["dataset.image_size=32", "model.embed.embed_dim=16"]);
        let model = Model::new(&crate::model::ModelConfig::new(&options, 12), Device::Cpu, seed).unwrap();
        (options, model)
    }

    fn info(options: &Options) -> CheckpointInfo {
        CheckpointInfo {
            kind: CheckpointKind::Best,
            fold: 0,
            epoch: 1,
            batch: 0,
            best_rsum: 0.0,
            eiters: 0,
            lr: 1e-4,
            split_seed: 0,
            vocab_path: "v.json".into(),
            vocab_size: 12,
            vocab_sha256: None,
            metrics: None,
            options: options.clone(),
            amfmn_version: "test".into(),
            model_file: String::new(),
            optimizer_file: None,
            model_sha256: None,
            optimizer_sha256: None,
            initial_weights: None,
            vocabulary: None,
            model_config: None,
        }
    }

    fn weights_of(dir: &Path) -> Vec<u8> {
        std::fs::read(dir.join("best.safetensors")).unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_killed_write_leaves_the_old_set_or_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (options, old) = model(1);
        let saved = Checkpoint::save(d, info(&options), &old, None).unwrap();
        assert_eq!(names(d), ["best.json", "best.safetensors"]);
        assert!(saved.info.model_sha256.is_some());
        let old_bytes = weights_of(d);
        let (_, new) = model(2);

        // Killed before the commit point: the staged files go, the old set stays.
        Checkpoint::stage(d, info(&options), &new, None).unwrap();
        std::fs::remove_file(staged(d, "best.json")).unwrap();
        assert!(!recover(d, CheckpointKind::Best).unwrap());
        assert_eq!(names(d), ["best.json", "best.safetensors"]);
        assert_eq!(weights_of(d), old_bytes);

        // Killed after the commit point, with the weights renamed and the sidecar not yet.
        let staged_info = Checkpoint::stage(d, info(&options), &new, None).unwrap();
        std::fs::rename(staged(d, "best.safetensors"), d.join("best.safetensors")).unwrap();
        assert!(recover(d, CheckpointKind::Best).unwrap(), "rolled forward");
        assert_eq!(names(d), ["best.json", "best.safetensors"]);
        let reopened = Checkpoint::open(d).unwrap();
        assert_eq!(reopened.info.model_sha256, staged_info.model_sha256);
        let (_, mut loaded) = model(3);
        reopened.load_model(&mut loaded).unwrap();
        assert!(loaded.state_dict().iter().all(|(k, v)| v.equal(&new.state_dict()[k])));

        // A staged set whose files do not match its hashes is not rolled forward.
        Checkpoint::stage(d, info(&options), &old, None).unwrap();
        std::fs::write(staged(d, "best.safetensors"), b"torn").unwrap();
        assert!(!recover(d, CheckpointKind::Best).unwrap());
        assert_eq!(names(d), ["best.json", "best.safetensors"]);
        assert_eq!(Checkpoint::open(d).unwrap().info.model_sha256, staged_info.model_sha256);
    }

    #[test]
    fn resuming_from_a_damaged_last_falls_back_to_the_previous_set() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (options, first) = model(1);
        let (_, second) = model(2);
        let mut adam = crate::optim::Adam::new(first.trainable(), 1e-3);
        let last = |epoch| CheckpointInfo { kind: CheckpointKind::Last, epoch, ..info(&options) };
        Checkpoint::save(d, last(1), &first, Some(&adam)).unwrap();
        assert!(!d.join(PREVIOUS).exists(), "nothing to keep yet");
        adam = crate::optim::Adam::new(second.trainable(), 2e-3);
        Checkpoint::save(d, last(2), &second, Some(&adam)).unwrap();
        let kept = ["last.json", "last.optimizer.safetensors", "last.safetensors"];
        assert_eq!(names(&d.join(PREVIOUS)), kept);
        assert_eq!(Checkpoint::open_to_resume(d, &options).unwrap().info.epoch, 2, "a whole set is used");

        // Killed halfway through the commit: the staged set is rolled forward, the old one kept.
        let staged_info = Checkpoint::stage(d, last(3), &first, Some(&adam)).unwrap();
        std::fs::rename(d.join("last.safetensors"), d.join(PREVIOUS).join("last.safetensors")).unwrap();
        assert_eq!(Checkpoint::open_to_resume(d, &options).unwrap().info, staged_info);
        assert_eq!(Checkpoint::open(&d.join(PREVIOUS).join("last.json")).unwrap().info.epoch, 2);

        let mut bytes = std::fs::read(d.join("last.safetensors")).unwrap();
        let end = bytes.len() - 1;
        bytes[end] ^= 1;
        std::fs::write(d.join("last.safetensors"), &bytes).unwrap();
        let (resumed, reports) = crate::report::capture(|| Checkpoint::open_to_resume(d, &options));
        let resumed = resumed.unwrap();
        assert_eq!((resumed.info.epoch, resumed.dir.clone()), (2, d.join(PREVIOUS)));
        let (_, mut loaded) = model(5);
        resumed.load_model(&mut loaded).unwrap();
        assert!(loaded.state_dict().iter().all(|(k, v)| v.equal(&second.state_dict()[k])));
        let warning = format!("{reports:?}");
        assert!(warning.contains("last.safetensors is damaged"), "{warning}");
        assert!(warning.contains("resuming from the previous complete set"), "{warning}");

        std::fs::write(d.join(PREVIOUS).join("last.safetensors"), b"torn").unwrap();
        let err = format!("{:#}", Checkpoint::open_to_resume(d, &options).unwrap_err());
        assert!(err.contains("is damaged") && err.contains("there is no complete earlier set"), "{err}");
    }

    #[test]
    fn damaged_weights_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (options, model_a) = model(1);
        Checkpoint::save(d, info(&options), &model_a, None).unwrap();
        let mut bytes = weights_of(d);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(d.join("best.safetensors"), bytes).unwrap();
        let (_, mut target) = model(4);
        let err = format!("{:#}", Checkpoint::open(d).unwrap().load_model(&mut target).unwrap_err());
        assert!(err.contains("best.safetensors is damaged: it does not match the SHA-256 that"), "{err}");
    }

    #[test]
    fn sidecars_name_only_files_beside_them() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (options, model_a) = model(1);
        Checkpoint::save(d, info(&options), &model_a, None).unwrap();
        let sidecar = d.join("best.json");
        let text = std::fs::read_to_string(&sidecar).unwrap();
        for bad in ["../outside.safetensors", "/etc/passwd", "sub/best.safetensors", ".."] {
            std::fs::write(&sidecar, text.replace("\"best.safetensors\"", &format!("{bad:?}"))).unwrap();
            let err = format!("{:#}", Checkpoint::open(d).unwrap_err());
            assert!(err.contains("is not a file beside it"), "{bad}: {err}");
        }
    }
}
