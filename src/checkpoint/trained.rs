//! Opening a trained model for inference and evaluation: the one way every command does it. The
//! path is read by the one rule ([`Source::of`]); the network is rebuilt from the configuration
//! the checkpoint records (or, for weights that record none, from an option file), its weights
//! loaded and checked, its vocabulary found.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::Device;

use super::{pytorch, read_safetensors, Checkpoint, CheckpointKind, InitialWeights, Source, TensorMap};
use crate::model::{Model, ModelConfig, SCORING_HEAD};
use crate::options::Options;
use crate::text::Vocabulary;

/// How to open a trained model.
#[derive(Clone, Copy)]
pub struct Opening<'a> {
    /// Where the model runs.
    pub device: Device,
    /// Weights without the scoring head (the visual-guided attention and the fusion gate) load
    /// too: SLM's reduced AMFMN, scored by plain cosine.
    pub encoders_only: bool,
    /// The model options of weights that record none (bare safetensors, a bare state dict); for
    /// an original `.pth` they replace its `options` entry (as the original's `test.py` reads
    /// its option file).
    pub options: Option<&'a Options>,
    /// The vocabulary to use instead of the checkpoint's (it must be the one trained with).
    pub vocab: Option<&'a Vocabulary>,
}

impl Opening<'_> {
    /// Everything from the checkpoint, on `device`.
    pub fn on(device: Device) -> Opening<'static> {
        Opening { device, encoders_only: false, options: None, vocab: None }
    }
}

/// A trained model with what it was trained with.
pub struct TrainedModel {
    pub model: Model,
    pub vocab: Vocabulary,
    /// The weights file.
    pub weights: PathBuf,
    /// The options it was trained with (for weights that record none, the option file's).
    pub options: Options,
    /// The pretrained weights its training started from, when recorded.
    pub initial_weights: Option<InitialWeights>,
    /// The weights' SHA-256 as the sidecar records it (checked when they were loaded).
    recorded_sha256: Option<String>,
}

impl TrainedModel {
    /// Opens the trained model `path` names ([`Source::of`], a fold folder meaning its best).
    pub fn open(path: &Path, opening: Opening) -> Result<TrainedModel> {
        match Source::of(path, CheckpointKind::Best)? {
            Source::Amfmn(sidecar) => open_amfmn(&Checkpoint::open(&sidecar)?, opening),
            Source::Original(file) => {
                let saved = pytorch::read(&file)?;
                let options = pytorch_options(&file, saved.options, opening)?;
                open_weights(&file, saved.tensors, options, opening)
            }
            Source::Bare(file) => {
                let Some(options) = opening.options else {
                    bail!(
                        "{} has no sidecar ({}) to say which model it is: give the checkpoint's folder or .json \
                         (test-single --resume takes bare weights with the option file they were trained with)",
                        file.display(),
                        file.with_extension("json").display()
                    );
                };
                open_weights(&file, read_safetensors(&file)?, options.clone(), opening)
            }
        }
    }

    /// Whether it was trained with keywords (`dataset.keywords`).
    pub fn keywords_trained(&self) -> bool {
        self.options.dataset.keywords
    }

    /// The weights file's SHA-256: the one loading verified, else (a file without sidecar) computed.
    pub fn weights_sha256(&self) -> Result<String> {
        self.recorded_sha256.clone().map_or_else(|| crate::fsutil::sha256_file(&self.weights), Ok)
    }
}

/// An amfmn checkpoint: the network its sidecar records, the weights checked against its hash.
fn open_amfmn(checkpoint: &Checkpoint, opening: Opening) -> Result<TrainedModel> {
    let info = &checkpoint.info;
    let vocab = match opening.vocab {
        Some(vocab) => {
            check_vocabulary(checkpoint, vocab)?;
            vocab.clone()
        }
        None => checkpoint.vocabulary()?,
    };
    let mut model = Model::new(&info.model_config(), opening.device, 0)?;
    checkpoint.load_model(&mut model)?;
    Ok(TrainedModel {
        model,
        vocab,
        weights: checkpoint.model_path(),
        options: info.options.clone(),
        initial_weights: info.initial_weights.clone(),
        recorded_sha256: info.model_sha256.clone(),
    })
}

/// Refuses a vocabulary other than the one `checkpoint` was trained with.
fn check_vocabulary(checkpoint: &Checkpoint, vocab: &Vocabulary) -> Result<()> {
    let info = &checkpoint.info;
    if info.vocab_size != vocab.len() {
        bail!(
            "{} was trained with a vocabulary of {} words ({}), dataset.vocab_path has {}",
            checkpoint.dir.display(),
            info.vocab_size,
            info.vocab_path.display(),
            vocab.len()
        );
    }
    if info.vocab_sha256.as_ref().is_some_and(|h| *h != vocab.sha256()) {
        bail!(
            "{} was trained with another vocabulary of {} words ({}): the words or their order differ; \
             set dataset.vocab_path to the vocabulary it was trained with",
            checkpoint.dir.display(),
            vocab.len(),
            info.vocab_path.display()
        );
    }
    Ok(())
}

/// The model options of a `torch.save` file: the option file's when given, else its `options`
/// entry `saved` (the original saves its option file there).
fn pytorch_options(file: &Path, saved: Option<serde_json::Value>, opening: Opening) -> Result<Options> {
    if let Some(options) = opening.options {
        return Ok(options.clone());
    }
    let Some(saved) = saved else {
        bail!(
            "{}: a PyTorch file without the original's `options` entry; evaluate it with test-single --path_opt",
            file.display()
        );
    };
    Options::parse(&serde_json::to_string(&saved)?, &[])
        .with_context(|| format!("{}: its `options` entry is not an option file of the original", file.display()))
}

/// The weights `tensors` of `file`, which has no sidecar (a `torch.save` file or bare
/// safetensors), in the network and with the vocabulary of `options`.
fn open_weights(file: &Path, tensors: TensorMap, options: Options, opening: Opening) -> Result<TrainedModel> {
    let vocab = match opening.vocab {
        Some(vocab) => vocab.clone(),
        None => Vocabulary::load(&options.dataset.vocab_path)?,
    };
    let mut model = Model::new(&ModelConfig::new(&options, vocab.len()), opening.device, 0)?;
    let optional: &[&str] = if opening.encoders_only { &SCORING_HEAD } else { &[] };
    model.load_state_dict_except(&tensors, optional).with_context(|| format!("cannot load {}", file.display()))?;
    Ok(TrainedModel { model, vocab, weights: file.to_owned(), options, initial_weights: None, recorded_sha256: None })
}
