//! The run folders: `<ckpt_save_path>/<experiment_name>/<fold>/` for checkpoints, split and text
//! log, `<logger_name>/<experiment_name>/` for TensorBoard, and the experiment's lock beside them.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::CheckpointKind;
use crate::fsutil::entries_if_present;
use crate::options::Options;

/// `<ckpt_save_path>/<experiment_name>/<fold>/`: where a fold's checkpoints, split and text log go.
pub fn fold_dir(options: &Options, fold: usize) -> PathBuf {
    experiment_dir(options).join(fold.to_string())
}

/// `<ckpt_save_path>/<experiment_name>/`: the fold folders and `test.json`.
pub fn experiment_dir(options: &Options) -> PathBuf {
    options.logs.ckpt_save_path.join(&options.k_fold.experiment_name)
}

/// `<logger_name>/<experiment_name>/`: the TensorBoard folders of the folds.
pub fn board_dir(options: &Options) -> PathBuf {
    options.logs.logger_name.join(&options.k_fold.experiment_name)
}

/// `<ckpt_save_path>/<experiment_name>.lock`: held by the run training the experiment (beside
/// its folder, so that the folder can be moved aside under the lock).
pub fn experiment_lock(options: &Options) -> PathBuf {
    options.logs.ckpt_save_path.join(format!("{}.lock", options.k_fold.experiment_name))
}

/// The sidecars of the checkpoints already in the experiment's fold folders.
pub fn existing_checkpoints(options: &Options) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for fold in entries_if_present(&experiment_dir(options))? {
        for kind in [CheckpointKind::Best, CheckpointKind::Last] {
            let sidecar = kind.sidecar_in(&fold);
            if sidecar.is_file() {
                found.push(sidecar);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Moves the experiment's checkpoint and TensorBoard folders aside (to `<name>.replaced-<unix
/// seconds>`), for a run that starts over; returns where they went.
pub fn move_experiment_aside(options: &Options) -> Result<Vec<PathBuf>> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut moved = Vec::new();
    for dir in [experiment_dir(options), board_dir(options)] {
        if !dir.exists() {
            continue;
        }
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let aside = dir.with_file_name(format!("{name}.replaced-{stamp}"));
        std::fs::rename(&dir, &aside)
            .with_context(|| format!("cannot move {} aside to {}", dir.display(), aside.display()))?;
        moved.push(aside);
    }
    Ok(moved)
}
