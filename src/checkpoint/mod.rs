//! Checkpoints, the one owner of trained weights on disk: the model in safetensors with the
//! original state_dict keys (so it loads into the PyTorch code with
//! `load_state_dict(strict=True)`), a JSON sidecar with the training position and options, and,
//! for `last`, the optimizer state in a third file. Here live the fold folder naming, the rule
//! that turns a path given by a user into a checkpoint, loading a model from one, and (in
//! [`tensors`]) the safetensors reader and writer. Every file is written to a temporary name and
//! renamed.

pub mod pretrained;
pub mod pytorch;
pub mod set;
pub mod tensors;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::Device;

pub use tensors::{read_safetensors, write_safetensors, TensorMap};

use crate::eval::Metrics;
use crate::fsutil::{entries_if_present, write_atomic};
use crate::model::Model;
use crate::optim::Adam;
use crate::options::Options;
use crate::text::Vocabulary;

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

/// A checkpoint on disk: its sidecar and folder.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub info: CheckpointInfo,
    pub dir: PathBuf,
}

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

/// The original code's best checkpoint in a fold folder, `<model name>_best.pth.tar` (its
/// `test.py` reads that file).
pub fn original_best(dir: &Path, options: &Options) -> PathBuf {
    dir.join(format!("{}_best.pth.tar", options.model.name_str()))
}

/// The checkpoint a fold folder holds for evaluation: amfmn's `best.json`, else the original
/// code's `<model name>_best.pth.tar`.
pub fn best_in_fold(dir: &Path, options: &Options) -> Option<PathBuf> {
    let sidecar = CheckpointKind::Best.sidecar_in(dir);
    let original = original_best(dir, options);
    [sidecar, original].into_iter().find(|p| p.is_file())
}

/// The sidecar a path given by a user names: a fold folder means its `folder_means` checkpoint,
/// a `.json` file is the sidecar itself, any other file (`best.safetensors`) the `.json` beside it.
pub fn sidecar_path(path: &Path, folder_means: CheckpointKind) -> PathBuf {
    if path.is_dir() {
        folder_means.sidecar_in(path)
    } else if path.extension().is_some_and(|e| e == "json") {
        path.to_owned()
    } else {
        path.with_extension("json")
    }
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

    /// Opens the checkpoint a path names (see [`sidecar_path`]).
    pub fn open_as(path: &Path, folder_means: CheckpointKind) -> Result<Checkpoint> {
        let json = sidecar_path(path, folder_means);
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
        let sidecar = sidecar_path(path, CheckpointKind::Last);
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
        };
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_owned();
        Checkpoint { info, dir }
    }

    /// Opens the checkpoint a path names for evaluation: amfmn's ([`Checkpoint::open`]) or a
    /// `torch.save` file of the original code, whose model options come from its `options`
    /// entry (the original saves them) and whose vocabulary is the file those options name.
    pub fn open_for_evaluation(path: &Path) -> Result<Checkpoint> {
        if !(path.is_file() && pytorch::is_pytorch_file(path)) {
            return Checkpoint::open(path);
        }
        let file = pytorch::read(path)?;
        let Some(saved) = &file.options else {
            bail!(
                "{}: a PyTorch file without the original's `options` entry; evaluate it with test-single --path_opt",
                path.display()
            );
        };
        let options = Options::parse(&serde_json::to_string(saved)?, &[]).with_context(|| {
            format!("{}: its `options` entry is not an option file of the original", path.display())
        })?;
        Ok(Checkpoint::from_original(path, &file, &options))
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

/// Copies the weights of a weights file into `model` (every key, every shape): safetensors, or
/// a `torch.save` file of the original code (its `model` state dict) or of a bare state dict.
/// Keys under the prefixes `optional` may be absent.
fn load_weights(model: &mut Model, path: &Path, optional: &[&str]) -> Result<()> {
    let tensors = if pytorch::is_pytorch_file(path) { pytorch::read(path)?.tensors } else { read_safetensors(path)? };
    model.load_state_dict_except(&tensors, optional).with_context(|| format!("cannot load {}", path.display()))
}

/// A trained model and what it was trained with.
pub struct TrainedModel {
    pub model: Model,
    /// Whether it was trained with keywords (`dataset.keywords`).
    pub keywords_trained: bool,
    /// The pretrained weights its training started from, when recorded.
    pub initial_weights: Option<InitialWeights>,
}

/// A model with the weights a path names: an amfmn checkpoint (its sidecar fixes the model
/// options; a fold folder means its `best`, or the original code's `<name>_best.pth.tar`), or
/// bare weights without a sidecar (safetensors or `torch.save`; the model options of `options`).
pub fn load_model(options: &Options, path: &Path, vocab: &Vocabulary, device: Device) -> Result<TrainedModel> {
    load_model_except(options, path, vocab, device, &[])
}

/// Like [`load_model`] for a caller that scores by plain cosine: bare weights may lack the
/// [`crate::model::SCORING_HEAD`] (SLM's reduced AMFMN, LOCATE.md §1.1).
pub fn load_encoders(options: &Options, path: &Path, vocab: &Vocabulary, device: Device) -> Result<TrainedModel> {
    load_model_except(options, path, vocab, device, &crate::model::SCORING_HEAD)
}

fn load_model_except(
    options: &Options,
    path: &Path,
    vocab: &Vocabulary,
    device: Device,
    optional: &[&str],
) -> Result<TrainedModel> {
    let path = &match best_in_fold(path, options) {
        Some(file) if path.is_dir() => file,
        _ => path.to_owned(),
    };
    let sidecar = sidecar_path(path, CheckpointKind::Best);
    let has_sidecar = path.is_dir() || sidecar.as_path() == path || sidecar.is_file();
    let checkpoint = if has_sidecar { Some(Checkpoint::open(path)?) } else { None };
    let mut model_options = options.clone();
    if let Some(c) = &checkpoint {
        if c.info.vocab_size != vocab.len() {
            bail!(
                "{} was trained with a vocabulary of {} words ({}), dataset.vocab_path has {}",
                c.dir.display(),
                c.info.vocab_size,
                c.info.vocab_path.display(),
                vocab.len()
            );
        }
        if c.info.vocab_sha256.as_ref().is_some_and(|h| *h != vocab.sha256()) {
            bail!(
                "{} was trained with another vocabulary of {} words ({}): the words or their order differ; \
                 set dataset.vocab_path to the vocabulary it was trained with",
                c.dir.display(),
                vocab.len(),
                c.info.vocab_path.display()
            );
        }
        model_options.model = c.info.options.model.clone();
        model_options.dataset.image_size = c.info.options.dataset.image_size;
    }
    let mut model = Model::new(&model_options, vocab.len(), device, 0)?;
    match &checkpoint {
        Some(c) => c.load_model(&mut model)?,
        None => load_weights(&mut model, path, optional)?,
    }
    let keywords_trained = checkpoint.as_ref().map_or(options.dataset.keywords, |c| c.info.options.dataset.keywords);
    let initial_weights = checkpoint.and_then(|c| c.info.initial_weights);
    Ok(TrainedModel { model, keywords_trained, initial_weights })
}
