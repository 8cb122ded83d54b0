//! The sidecar `<kind>.json` of a checkpoint: where training stands, what it was trained with,
//! the files of its set and their hashes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::eval::Metrics;
use crate::model::ModelConfig;
use crate::options::Options;

/// Which of a fold's two checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointKind {
    /// The epoch with the highest validation mR.
    Best,
    /// Where training stopped (with the optimizer state, for resuming).
    Last,
}

impl CheckpointKind {
    /// `best` or `last`: the stem of the checkpoint's files.
    pub fn name(self) -> &'static str {
        match self {
            CheckpointKind::Best => "best",
            CheckpointKind::Last => "last",
        }
    }

    /// The sidecar `<dir>/<kind>.json` of this checkpoint in a fold folder.
    pub fn sidecar_in(self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.json", self.name()))
    }
}

/// The sidecar `<kind>.json` of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointInfo {
    pub kind: CheckpointKind,
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
    /// SHA-256 of the vocabulary ([`Vocabulary::sha256`]; absent in older sidecars).
    #[serde(default)]
    pub vocab_sha256: Option<String>,
    /// Validation metrics of this checkpoint's epoch, when evaluated.
    pub metrics: Option<Metrics>,
    pub options: Options,
    pub amfmn_version: String,
    /// File names (in the checkpoint folder) of the weights and of the optimizer state.
    pub model_file: String,
    pub optimizer_file: Option<String>,
    /// SHA-256 of the weights and of the optimizer state, checked when they are read (absent in
    /// sidecars of amfmn 0.1 before the set protocol).
    #[serde(default)]
    pub model_sha256: Option<String>,
    /// SHA-256 of the optimizer state.
    #[serde(default)]
    pub optimizer_sha256: Option<String>,
    /// The pretrained weights training started from (absent in older sidecars: unknown).
    #[serde(default)]
    pub initial_weights: Option<InitialWeights>,
    /// The vocabulary's words in id order (from 1), so that the checkpoint works without its
    /// vocabulary file (absent in older sidecars).
    #[serde(default)]
    pub vocabulary: Option<Vec<String>>,
    /// The network's configuration (absent in older sidecars: [`CheckpointInfo::model_config`]
    /// derives it from `options` and `vocab_size`).
    #[serde(default)]
    pub model_config: Option<ModelConfig>,
}

impl CheckpointInfo {
    /// The configuration of the network these weights belong to.
    pub fn model_config(&self) -> ModelConfig {
        self.model_config.clone().unwrap_or_else(|| ModelConfig::new(&self.options, self.vocab_size))
    }
}

/// The pretrained weights a run started from, recorded in its checkpoints.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct InitialWeights {
    /// The ImageNet ResNet-18 file's name; none for random weights (`model.resnet_weights: none`).
    pub imagenet: Option<String>,
    /// The skip-thoughts folder; none for random weights (`model.seq2vec.pretrained: false`).
    pub skipthoughts: Option<String>,
}

impl InitialWeights {
    /// [`InitialWeights::describe`] of a record that may be missing.
    pub fn describe_recorded(record: Option<&InitialWeights>) -> String {
        record.map_or_else(
            || "initial weights: not recorded (a bare weights file or a checkpoint of an older amfmn)".to_owned(),
            InitialWeights::describe,
        )
    }

    /// One line saying what the weights started from, and whether that is the paper's setup.
    pub fn describe(&self) -> String {
        let cnn = match &self.imagenet {
            Some(file) => format!("ImageNet ResNet-18 ({file})"),
            None => "a random ResNet-18 (model.resnet_weights: none)".to_owned(),
        };
        let text = match &self.skipthoughts {
            Some(dir) => format!("skip-thoughts ({dir})"),
            None => "a random text encoder (model.seq2vec.pretrained: false)".to_owned(),
        };
        let setup = if self.imagenet.is_some() && self.skipthoughts.is_some() { "" } else { "; not the paper's setup" };
        format!("initial weights: {cnn}, {text}{setup}")
    }
}
