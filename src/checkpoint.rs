//! Checkpoints: the model in safetensors with the original state_dict keys (so it loads into
//! the PyTorch code with `load_state_dict(strict=True)`), a JSON sidecar with the training
//! position and options, and, for `last`, the optimizer state in a third file. Every file is
//! written to a temporary name and renamed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::eval::Metrics;
use crate::fsutil::write_atomic;
use crate::model::amfmn::{read_safetensors, write_safetensors};
use crate::model::Model;
use crate::optim::Adam;
use crate::options::Options;

/// The sidecar `<kind>.json` of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointInfo {
    /// `best` (highest validation mR) or `last` (where training stopped).
    pub kind: String,
    pub fold: usize,
    /// Epochs completed; for `last`, the epoch training continues with.
    pub epoch: usize,
    /// Batches of `epoch` already trained (non-zero after an interruption).
    pub batch: usize,
    /// Best validation mR so far (the original's `best_rsum`).
    pub best_rsum: f64,
    /// Training steps so far (the original's `Eiters`).
    #[serde(rename = "Eiters")]
    pub eiters: u64,
    /// Learning rate of `epoch`.
    pub lr: f64,
    /// Seed of the fold split (the split itself is in `split.json`).
    pub split_seed: u64,
    pub vocab_path: PathBuf,
    pub vocab_size: usize,
    /// Validation metrics of this checkpoint's epoch, when evaluated.
    pub metrics: Option<Metrics>,
    pub options: Options,
    pub amfmn_version: String,
    /// File names (in the checkpoint folder) of the weights and of the optimizer state.
    pub model_file: String,
    pub optimizer_file: Option<String>,
}

/// A checkpoint on disk: its sidecar and folder.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub info: CheckpointInfo,
    pub dir: PathBuf,
}

impl Checkpoint {
    /// Writes `<dir>/<kind>.safetensors` (+ `<kind>.optimizer.safetensors`) and `<kind>.json`.
    pub fn save(dir: &Path, mut info: CheckpointInfo, model: &Model, optimizer: Option<&Adam>) -> Result<Checkpoint> {
        let kind = info.kind.clone();
        info.model_file = format!("{kind}.safetensors");
        write_safetensors(&dir.join(&info.model_file), &model.state_dict())?;
        info.optimizer_file = match optimizer {
            Some(adam) => {
                let name = format!("{kind}.optimizer.safetensors");
                write_safetensors(&dir.join(&name), &adam.state_dict())?;
                Some(name)
            }
            None => None,
        };
        let json = serde_json::to_string_pretty(&info)?;
        write_atomic(&dir.join(format!("{kind}.json")), json.as_bytes())?;
        Ok(Checkpoint { info, dir: dir.to_owned() })
    }

    /// Opens a checkpoint from its `.json`, its `.safetensors`, or a fold folder (`last.json`).
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let json = if path.is_dir() {
            path.join("last.json")
        } else if path.extension().is_some_and(|e| e == "json") {
            path.to_owned()
        } else {
            path.with_extension("json")
        };
        let text = std::fs::read_to_string(&json).with_context(|| {
            format!(
                "cannot read checkpoint {} (give a fold folder, a .json sidecar or its .safetensors)",
                json.display()
            )
        })?;
        let info: CheckpointInfo = serde_json::from_str(&text)
            .with_context(|| format!("{}: not an amfmn checkpoint sidecar", json.display()))?;
        let dir = json.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_owned();
        Ok(Checkpoint { info, dir })
    }

    pub fn model_path(&self) -> PathBuf {
        self.dir.join(&self.info.model_file)
    }

    /// Loads the weights into `model`.
    pub fn load_model(&self, model: &mut Model) -> Result<()> {
        let path = self.model_path();
        let tensors = read_safetensors(&path)?;
        model.load_state_dict(&tensors).with_context(|| format!("cannot load {}", path.display()))
    }

    /// Loads the optimizer state (a `last` checkpoint has one).
    pub fn load_optimizer(&self, adam: &mut Adam) -> Result<()> {
        let Some(name) = &self.info.optimizer_file else {
            bail!("{}: this checkpoint has no optimizer state (resume from last.json)", self.dir.display());
        };
        let path = self.dir.join(name);
        let tensors: BTreeMap<String, Tensor> = read_safetensors(&path)?;
        adam.load_state_dict(&tensors).with_context(|| format!("cannot load {}", path.display()))
    }
}
