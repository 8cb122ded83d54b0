//! `amfmn train`: the original `train.py` (docs/ARCHITECTURE.md, Training). For each fold: split the training
//! images 80/20, train with Adam and the ranking loss, evaluate on the fold's validation part
//! every `eval_step` epochs, keep the best checkpoint by mR. Made safe to run for days:
//! resumable from any step, Ctrl-C writes a checkpoint, a non-finite loss stops with its position.
//!
//! [`run`] loads the data once and trains the folds in turn; [`fold`] prepares one fold and runs
//! its epochs; [`step`] trains one epoch a batch at a time; [`table`] is the per-epoch row.

mod fold;
mod replicas;
mod step;
mod table;

pub use replicas::{shares, Replicas};

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Result};
use tch::Device;

use crate::checkpoint::{existing_checkpoints, experiment_dir, experiment_lock, move_experiment_aside, Checkpoint};
use crate::data::{CaptionSet, FoldSplit};
use crate::eval::Metrics;
use crate::fsutil::lock::Lock;
use crate::options::{Options, Resume, RUNTIME_KEYS};
use crate::report;
use crate::text::Vocabulary;

/// How a training run ended.
#[derive(Debug)]
pub enum Outcome {
    /// Every fold trained; their best validation results.
    Finished(Vec<FoldResult>),
    /// Stopped by Ctrl-C after a step; `checkpoint` resumes it.
    Interrupted { checkpoint: PathBuf },
}

/// The best validation result of one fold.
#[derive(Debug, Clone)]
pub struct FoldResult {
    pub fold: usize,
    /// Epochs completed at the best checkpoint.
    pub best_epoch: usize,
    pub best: Metrics,
    /// The fold folder, holding `best.safetensors`.
    pub dir: PathBuf,
}

/// Everything the folds share: the options, the devices (the first holds the optimizer), the
/// vocabulary, the training split and the Ctrl-C flag.
struct Trainer<'a> {
    options: &'a Options,
    devices: Vec<Device>,
    vocab: Vocabulary,
    data: Arc<CaptionSet>,
    interrupt: &'a AtomicBool,
    /// The warning of a `device: auto` that found no GPU, repeated in each fold's text log.
    fell_back: Option<String>,
}

/// How a run treats checkpoints already in its experiment folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Refuse to start (the default).
    Refuse,
    /// Move the earlier run aside and start over (`--overwrite`).
    MoveAside,
}

/// Trains every fold (from the checkpoint `resume`, if given), data-parallel when the options
/// name several devices ([`Replicas`]). The run holds the experiment's
/// lock throughout; an experiment folder that already has checkpoints is refused unless the
/// run resumes or `existing` says to move them aside. `interrupt` is polled after each step:
/// when set, the run saves `last` and returns [`Outcome::Interrupted`].
pub fn run(options: &Options, resume: Option<&Path>, existing: Existing, interrupt: &AtomicBool) -> Result<Outcome> {
    let devices = crate::device::resolve_replicas(&options.device)?;
    if options.dataset.batch_size < devices.len() {
        bail!(
            "dataset.batch_size {} is smaller than the {} devices of device {}: each replica needs a pair at least",
            options.dataset.batch_size,
            devices.len(),
            options.device
        );
    }
    let fell_back = crate::device::auto_fell_back(&options.device, &devices);
    if let Some(warning) = &fell_back {
        report::warn(warning.clone());
    }
    crate::device::set_threads(options.threads)?;
    crate::device::set_precision(options.optim.amp, options.optim.tf32, devices[0])?;
    let _lock = Lock::acquire(&experiment_lock(options), &experiment_dir(options).display().to_string())?;
    let resume = match (resume, &options.optim.resume) {
        (Some(path), _) => Some(Checkpoint::open_to_resume(path, options)?),
        (None, Resume::From(path)) => Some(Checkpoint::open_to_resume(path, options)?),
        (None, Resume::No) => None,
    };
    if let Some(checkpoint) = &resume {
        refuse_changed_options(options, checkpoint)?;
    }
    if resume.as_ref().is_none_or(|c| c.info.fold + 1 < options.k_fold.nums) {
        require_pretrained(options)?;
    }
    let vocab = Vocabulary::load(&options.dataset.vocab_path)?;
    let data = Arc::new(load_training_split(options, &vocab)?);
    FoldSplit::check(data.num_images(), &options.dataset.data_path.join("train_filename.txt"))?;
    if resume.is_none() {
        start_afresh(options, existing)?;
    }
    let first_fold = resume.as_ref().map_or(0, |c| c.info.fold);
    if first_fold >= options.k_fold.nums {
        bail!("the checkpoint is of fold {first_fold} but k_fold.nums is {}", options.k_fold.nums);
    }
    report::info(format!(
        "training {} on {}: {} images, {} captions, vocabulary {} words, {} fold(s) of {} epochs",
        options.model.name_str(),
        crate::device::describe_replicas(&devices),
        data.num_images(),
        data.num_captions(),
        vocab.len(),
        options.k_fold.nums,
        options.optim.epochs
    ));
    let trainer = Trainer { options, devices, vocab, data, interrupt, fell_back };
    let mut results = Vec::new();
    for fold in first_fold..options.k_fold.nums {
        let from = if fold == first_fold { resume.as_ref() } else { None };
        match trainer.fold(fold, from)? {
            FoldEnd::Done(result) => results.push(result),
            FoldEnd::Interrupted(path) => return Ok(Outcome::Interrupted { checkpoint: path }),
        }
    }
    Ok(Outcome::Finished(results))
}

/// A resumed run trains what the run it continues trained: only [`RUNTIME_KEYS`] may differ.
fn refuse_changed_options(options: &Options, checkpoint: &Checkpoint) -> Result<()> {
    let changed = options.differences(&checkpoint.info.options);
    if !changed.is_empty() {
        bail!(
            "{} was trained with other options ({}); resume with the option file and --set values of that run, \
             or start a new experiment (only {} may change)",
            checkpoint.dir.display(),
            changed.join("; "),
            RUNTIME_KEYS.join(", ")
        );
    }
    Ok(())
}

/// Checks, before any training, that the pretrained weights the options ask for are there: the
/// skip-thoughts files, and the ImageNet ResNet-18 file (downloaded into torchvision's cache
/// for `auto`).
fn require_pretrained(options: &Options) -> Result<()> {
    let seq2vec = &options.model.seq2vec;
    if seq2vec.pretrained {
        crate::model::skipthoughts::require(&seq2vec.dir_st, seq2vec.kind)?;
    }
    crate::checkpoint::pretrained::resolve(&options.model.resnet_weights)?;
    Ok(())
}

/// Makes room for a run that starts from scratch: no checkpoints of an earlier run are in its
/// folder, or they are moved aside when asked.
fn start_afresh(options: &Options, existing: Existing) -> Result<()> {
    let found = existing_checkpoints(options)?;
    let Some(first) = found.first() else { return Ok(()) };
    if existing == Existing::Refuse {
        let fold = first.parent().unwrap_or(first);
        bail!(
            "{} already holds checkpoints ({}); continue that run with --resume {}, or start over with --overwrite \
             (the earlier run is moved aside, not deleted)",
            experiment_dir(options).display(),
            first.display(),
            fold.display()
        );
    }
    for aside in move_experiment_aside(options)? {
        report::info(format!("the earlier run was moved to {}", aside.display()));
    }
    Ok(())
}

/// The training split; its keywords only when `dataset.keywords` is on (then they must exist).
fn load_training_split(options: &Options, vocab: &Vocabulary) -> Result<CaptionSet> {
    let dataset = &options.dataset;
    let (mut data, split) = CaptionSet::load(options, "train", vocab)?;
    if dataset.keywords && split.keywords.is_none() {
        bail!(
            "dataset.keywords is on but {} does not exist; write it (one line per image, keywords separated by ',') or set dataset.keywords to False",
            dataset.data_path.join("train_keywords.txt").display()
        );
    }
    if !dataset.keywords {
        data.keywords = None;
    }
    Ok(data)
}

/// How a fold ended.
enum FoldEnd {
    Done(FoldResult),
    /// Stopped by Ctrl-C; the `last.json` that resumes it.
    Interrupted(PathBuf),
}
