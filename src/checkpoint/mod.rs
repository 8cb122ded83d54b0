//! Checkpoints, the one owner of trained weights on disk: the model in safetensors with the
//! original state_dict keys (so it loads into the PyTorch code with
//! `load_state_dict(strict=True)`), a JSON sidecar with the training position, options and
//! network configuration ([`sidecar`]), and, for `last`, the optimizer state in a third file,
//! written and replaced as one set ([`set`]). The run folders are named in [`folders`]; the rule
//! that turns a path given by a user into a checkpoint is [`Source::of`]; a trained model is
//! opened for inference by [`TrainedModel::open`]; [`tensors`] reads and writes safetensors and
//! [`pytorch`] reads `torch.save` files.

mod folders;
pub mod pretrained;
pub mod pytorch;
pub mod set;
mod sidecar;
mod source;
pub mod tensors;
mod trained;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub use folders::{board_dir, existing_checkpoints, experiment_dir, experiment_lock, fold_dir, move_experiment_aside};
pub use sidecar::{CheckpointInfo, CheckpointKind, InitialWeights};
pub use source::{Source, ORIGINAL_BEST};
pub use tensors::{read_safetensors, write_safetensors, TensorMap};
pub use trained::{Opening, TrainedModel};

use crate::fsutil::write_atomic;
use crate::model::Model;
use crate::optim::Adam;
use crate::options::Options;
use crate::text::Vocabulary;

/// A checkpoint on disk: its sidecar and folder.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub info: CheckpointInfo,
    pub dir: PathBuf,
}

impl Checkpoint {
    /// Writes `<dir>/<kind>.safetensors` (+ `<kind>.optimizer.safetensors`) and `<kind>.json` as
    /// one set (see [`set`]): staged, committed by the staged sidecar, then renamed into place.
    pub fn save(dir: &Path, info: CheckpointInfo, model: &Model, optimizer: Option<&Adam>) -> Result<Checkpoint> {
        let info = Checkpoint::stage(dir, info, model, optimizer)?;
        set::commit(dir, &info)?;
        Ok(Checkpoint { info, dir: dir.to_owned() })
    }

    /// Writes the staged set up to its commit point (the staged sidecar); returns its sidecar.
    pub fn stage(
        dir: &Path,
        mut info: CheckpointInfo,
        model: &Model,
        optimizer: Option<&Adam>,
    ) -> Result<CheckpointInfo> {
        let kind = info.kind.name();
        info.model_config = Some(model.config().clone());
        info.model_file = format!("{kind}.safetensors");
        info.model_sha256 = Some(stage_tensors(dir, &info.model_file, &model.state_dict())?);
        (info.optimizer_file, info.optimizer_sha256) = match optimizer {
            Some(adam) => {
                let name = format!("{kind}.optimizer.safetensors");
                let hash = stage_tensors(dir, &name, &adam.state_dict())?;
                (Some(name), Some(hash))
            }
            None => (None, None),
        };
        let json = serde_json::to_string_pretty(&info)?;
        write_atomic(&set::staged(dir, &format!("{kind}.json")), json.as_bytes())?;
        Ok(info)
    }

    /// Opens the checkpoint a path names for evaluation (a fold folder means its `best`).
    pub fn open(path: &Path) -> Result<Checkpoint> {
        Checkpoint::open_as(path, CheckpointKind::Best)
    }

    /// Opens the amfmn checkpoint a path names ([`Source::of`]'s rule for sidecars).
    pub fn open_as(path: &Path, folder_means: CheckpointKind) -> Result<Checkpoint> {
        let json = source::sidecar_of(path, folder_means);
        let text = crate::fsutil::read_to_string(&json).with_context(|| {
            format!(
                "cannot read checkpoint {} (give a fold folder, a .json sidecar or its .safetensors)",
                json.display()
            )
        })?;
        let info: CheckpointInfo = serde_json::from_str(&text)
            .with_context(|| format!("{}: not an amfmn checkpoint sidecar", json.display()))?;
        let names = std::iter::once(&info.model_file).chain(info.optimizer_file.as_ref());
        if let Some(bad) = names.into_iter().find(|n| Path::new(n.as_str()).file_name() != Some(n.as_ref())) {
            bail!("{}: the file `{bad}` it names is not a file beside it (no folders, no `..`)", json.display());
        }
        let dir = json.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_owned();
        Ok(Checkpoint { info, dir })
    }

    /// Opens a `last` checkpoint to resume from, after finishing or undoing what a killed run
    /// left in its fold folder (the caller holds the experiment's lock), and verifies its files.
    /// A damaged set falls back to the previous complete one in `previous/`, with a warning. A
    /// `torch.save` file is a checkpoint of the original code ([`Checkpoint::from_original`]).
    pub fn open_to_resume(path: &Path, options: &Options) -> Result<Checkpoint> {
        if path.is_file() && pytorch::is_pytorch_file(path) {
            return Ok(Checkpoint::from_original(path, &pytorch::read(path)?, options));
        }
        let sidecar = source::sidecar_of(path, CheckpointKind::Last);
        let dir = sidecar.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        recover_fold(dir)?;
        let damaged = match Checkpoint::open_as(path, CheckpointKind::Last)?.verified() {
            Ok(checkpoint) => return Ok(checkpoint),
            Err(damaged) => damaged,
        };
        let previous = dir.join(set::PREVIOUS).join(sidecar.file_name().unwrap_or_default());
        let Ok(fallback) = Checkpoint::open_as(&previous, CheckpointKind::Last).and_then(Checkpoint::verified) else {
            bail!("{damaged:#}; there is no complete earlier set ({}) to fall back to", previous.display());
        };
        crate::report::warn(format!(
            "{damaged:#}; resuming from the previous complete set {} instead (epoch {}, batch {}: the steps after it \
             are trained again)",
            previous.display(),
            fallback.info.epoch,
            fallback.info.batch
        ));
        Ok(fallback)
    }

    /// A checkpoint of the original code to resume from: `torch.save` of `{'model', 'epoch',
    /// 'best_rsum', 'Eiters', 'options'}` (or a bare state dict: epoch 0). Its fold is the
    /// `k_fold.current_num` of its options; it has no optimizer state (the original saves none),
    /// so Adam starts afresh, as the original's resume does. Its `best_rsum` belongs to a best
    /// checkpoint in the original's folder, not in this run's, so the best score starts at 0 and
    /// the first validation writes this run's `best`.
    fn from_original(path: &Path, file: &pytorch::TorchCheckpoint, options: &Options) -> Checkpoint {
        let fold = file.options.as_ref().and_then(|o| o.pointer("/k_fold/current_num")).and_then(|n| n.as_u64());
        let info = CheckpointInfo {
            kind: CheckpointKind::Last,
            fold: fold.unwrap_or(0) as usize,
            epoch: file.epoch.unwrap_or(0).max(0) as usize,
            batch: 0,
            best_rsum: 0.0,
            eiters: file.eiters.unwrap_or(0).max(0) as u64,
            lr: options.optim.lr,
            split_seed: options.seed,
            vocab_path: options.dataset.vocab_path.clone(),
            vocab_size: 0,
            vocab_sha256: None,
            metrics: None,
            options: options.clone(),
            amfmn_version: "the original code".to_owned(),
            model_file: path.file_name().unwrap_or_default().to_string_lossy().into_owned(),
            optimizer_file: None,
            model_sha256: None,
            optimizer_sha256: None,
            initial_weights: None,
            vocabulary: None,
            model_config: None,
        };
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_owned();
        Checkpoint { info, dir }
    }

    /// The checkpoint, once every file of its set matches the hashes its sidecar records.
    fn verified(self) -> Result<Checkpoint> {
        set::verify(&self.dir, &self.info, &self.sidecar())?;
        Ok(self)
    }

    /// The fold's `kind` checkpoint in `dir`, if one was written.
    pub fn find_in(dir: &Path, kind: CheckpointKind) -> Result<Option<Checkpoint>> {
        let json = kind.sidecar_in(dir);
        if json.is_file() {
            Checkpoint::open(&json).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The weights file.
    pub fn model_path(&self) -> PathBuf {
        self.dir.join(&self.info.model_file)
    }

    /// Loads the weights into `model`, after checking them against the sidecar's hash.
    pub fn load_model(&self, model: &mut Model) -> Result<()> {
        let info = &self.info;
        let tensors = set::read_verified(&self.dir, &info.model_file, info.model_sha256.as_deref(), &self.sidecar())?;
        model.load_state_dict(&tensors).with_context(|| format!("cannot load {}", self.model_path().display()))
    }

    /// The vocabulary the checkpoint was trained with: the one its sidecar carries, else (a
    /// checkpoint of an older amfmn) the file it names.
    pub fn vocabulary(&self) -> Result<Vocabulary> {
        match &self.info.vocabulary {
            Some(words) => Vocabulary::from_words(words.clone())
                .with_context(|| format!("{}: its vocabulary is not valid", self.sidecar().display())),
            None => Vocabulary::load(&self.info.vocab_path).with_context(|| {
                format!(
                    "cannot find the checkpoint's vocabulary {} (an older amfmn's checkpoint names its file instead of \
                     carrying it: run from the folder it was trained in)",
                    self.info.vocab_path.display()
                )
            }),
        }
    }

    /// The sidecar's path.
    pub fn sidecar(&self) -> PathBuf {
        self.info.kind.sidecar_in(&self.dir)
    }

    /// Loads the optimizer state (a `last` checkpoint has one).
    pub fn load_optimizer(&self, adam: &mut Adam) -> Result<()> {
        let Some(name) = &self.info.optimizer_file else {
            bail!("{}: this checkpoint has no optimizer state (resume from last.json)", self.dir.display());
        };
        let tensors = set::read_verified(&self.dir, name, self.info.optimizer_sha256.as_deref(), &self.sidecar())?;
        adam.load_state_dict(&tensors).with_context(|| format!("cannot load {}", self.dir.join(name).display()))
    }
}

/// Finishes or undoes the checkpoint writes a killed run left in the fold folder `dir` (both
/// kinds, see [`set`]); reported when a committed set had to be completed.
pub fn recover_fold(dir: &Path) -> Result<()> {
    for kind in [CheckpointKind::Best, CheckpointKind::Last] {
        if set::recover(dir, kind)? {
            crate::report::info(format!(
                "finished writing {} in {}, which a stopped run had left half renamed",
                kind.name(),
                dir.display()
            ));
        }
    }
    Ok(())
}

/// Writes `tensors` under the staging name of `name` in `dir`; returns the file's SHA-256.
fn stage_tensors(dir: &Path, name: &str, tensors: &TensorMap) -> Result<String> {
    write_safetensors(&set::staged(dir, name), tensors)
}
