//! `amfmn train`: the original `train.py` (docs/ARCHITECTURE.md, Training). For each fold: split the training
//! images 80/20, train with Adam and the ranking loss, evaluate on the fold's validation part
//! every `eval_step` epochs, keep the best checkpoint by mR. Made safe to run for days:
//! resumable from any step, Ctrl-C writes a checkpoint, a non-finite loss stops with its position.
//!
//! [`run`] loads the data once and trains the folds in turn; [`fold`] prepares one fold and runs
//! its epochs; [`step`] trains one epoch a batch at a time, through the CUDA graphs of [`graphs`]
//! when asked; [`table`] is the per-epoch row.

mod fold;
mod graphs;
mod replicas;
mod step;
mod table;

pub use graphs::{GraphCounts, StepGraphs, StepInputs};
pub use replicas::{BatchInputs, Replicas};

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use tch::Device;

use crate::checkpoint::{existing_checkpoints, experiment_dir, experiment_lock, move_experiment_aside, Checkpoint};
use crate::data::{CaptionSet, FoldSplit};
use crate::dist::{Launch, ProcessGroup};
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
/// vocabulary, the training split, the Ctrl-C flag and, under a launcher, the other processes.
struct Trainer<'a> {
    options: &'a Options,
    devices: Vec<Device>,
    vocab: Vocabulary,
    data: Arc<CaptionSet>,
    interrupt: &'a AtomicBool,
    /// The warning of a `device: auto` that found no GPU, repeated in each fold's text log.
    fell_back: Option<String>,
    /// The processes of a launch, this one among them; `None` when it trains alone.
    group: Option<Rc<ProcessGroup>>,
}

impl Trainer<'_> {
    /// Whether this process writes the run's files (checkpoints, split, logs): the only
    /// process, or rank 0 of a launch.
    fn writes(&self) -> bool {
        ProcessGroup::leads(self.group.as_deref())
    }
}

/// How a run treats checkpoints already in its experiment folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Refuse to start (the default).
    Refuse,
    /// Move the earlier run aside and start over (`--overwrite`).
    MoveAside,
}

/// This process's place among the processes a launcher started (torchrun, SLURM), and how long
/// it waits for them: at start-up, and in each collective.
#[derive(Debug, Clone)]
pub struct Launched {
    pub launch: Launch,
    pub timeout: Duration,
}

/// Trains every fold (from the checkpoint `resume`, if given), data-parallel when the options
/// name several devices ([`Replicas`]) or a launcher started several processes (`launched`:
/// each takes its local rank's device, rank 0 alone writes files). The run holds the
/// experiment's lock throughout; an experiment folder that already has checkpoints is refused
/// unless the run resumes or `existing` says to move them aside. `interrupt` is polled after
/// each step: when set (on any process), the run saves `last` and returns
/// [`Outcome::Interrupted`].
pub fn run(
    options: &Options,
    resume: Option<&Path>,
    existing: Existing,
    interrupt: &AtomicBool,
    launched: Option<&Launched>,
) -> Result<Outcome> {
    let devices = match launched {
        Some(l) => vec![crate::device::for_rank(&options.device, l.launch.local_rank)?],
        None => crate::device::resolve_replicas(&options.device)?,
    };
    let group = launched.map(|l| ProcessGroup::join(&l.launch, l.timeout, devices[0])).transpose()?.map(Rc::new);
    if let Some(group) = &group {
        report::as_rank(group.rank);
    }
    let outcome = train_all(options, resume, existing, interrupt, devices, group.clone());
    if let Some(group) = &group {
        match &outcome {
            Ok(_) => group.finished(),
            Err(error) => group.announce_stop(&format!("{error:#}")),
        }
    }
    outcome
}

/// [`run`] once the devices are known and the processes of a launch have met: the start-up
/// checks (each agreed on by every process), then the folds.
fn train_all(
    options: &Options,
    resume: Option<&Path>,
    existing: Existing,
    interrupt: &AtomicBool,
    devices: Vec<Device>,
    group: Option<Rc<ProcessGroup>>,
) -> Result<Outcome> {
    let group_ref = group.as_deref();
    let vocab = together(group_ref, "start", prepare_process(options, &devices, group_ref))?;
    together(group_ref, "options", same_as_rank_0(group_ref, options, &vocab))?;
    let leads = ProcessGroup::leads(group_ref);
    let setup = if leads { lead(options, resume) } else { Ok((None, None)) };
    let (_lock, opened) = together(group_ref, "setup", setup)?;
    let loaded = (|| {
        let resume = if leads { opened } else { open_resume(options, resume_path(options, resume))? };
        if let Some(checkpoint) = &resume {
            refuse_changed_options(options, checkpoint)?;
        }
        if resume.as_ref().is_none_or(|c| c.info.fold + 1 < options.k_fold.nums) {
            require_pretrained(options)?;
        }
        let data = Arc::new(load_training_split(options, &vocab)?);
        FoldSplit::check(data.num_images(), &options.dataset.data_path.join("train_filename.txt"))?;
        let first_fold = resume.as_ref().map_or(0, |c| c.info.fold);
        if first_fold >= options.k_fold.nums {
            bail!("the checkpoint is of fold {first_fold} but k_fold.nums is {}", options.k_fold.nums);
        }
        Ok((resume, data, first_fold))
    })();
    let (resume, data, first_fold) = together(group_ref, "data", loaded)?;
    let fresh = if leads && resume.is_none() { start_afresh(options, existing) } else { Ok(()) };
    together(group_ref, "fresh", fresh)?;
    let fell_back = crate::device::auto_fell_back(&options.device, &devices);
    if let Some(warning) = &fell_back {
        report::warn(warning.clone());
    }
    let place = match group_ref {
        Some(g) => {
            format!(
                "{} processes over {} ({} each, this rank {})",
                g.world,
                g.backend(),
                crate::device::describe(devices[0]),
                g.rank
            )
        }
        None => crate::device::describe_replicas(&devices),
    };
    report::info(format!(
        "training {} on {place}: {} images, {} captions, vocabulary {} words, {} fold(s) of {} epochs",
        options.model.name_str(),
        data.num_images(),
        data.num_captions(),
        vocab.len(),
        options.k_fold.nums,
        options.optim.epochs
    ));
    let trainer = Trainer { options, devices, vocab, data, interrupt, fell_back, group };
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

/// `outcome` as every process of the launch sees it ([`ProcessGroup::agree`]); itself alone.
fn together<T>(group: Option<&ProcessGroup>, step: &str, outcome: Result<T>) -> Result<T> {
    match group {
        Some(group) => group.agree(step, outcome),
        None => outcome,
    }
}

/// What this process checks before anything is shared: enough pairs per device, CUDA graphs
/// on one device alone, its threads and precision, and the vocabulary (returned).
fn prepare_process(options: &Options, devices: &[Device], group: Option<&ProcessGroup>) -> Result<Vocabulary> {
    let batch = options.dataset.batch_size;
    if batch < devices.len() {
        bail!(
            "dataset.batch_size {batch} is smaller than the {} devices of device {}: each replica needs a pair at least",
            devices.len(),
            options.device
        );
    }
    if let Some(group) = group.filter(|g| batch < g.world) {
        bail!("dataset.batch_size {batch} is smaller than the {} processes: each needs a pair at least", group.world);
    }
    if options.cuda_graphs && (devices.len() > 1 || group.is_some()) {
        bail!(
            "cuda_graphs: True trains on one device in one process (device {}{}); set cuda_graphs: False",
            options.device,
            if group.is_some() { ", under a launcher" } else { "" }
        );
    }
    if options.cuda_graphs && !devices[0].is_cuda() {
        report::warn("cuda_graphs: True on the CPU, which has no CUDA graphs: the steps run as without them");
    }
    crate::device::set_threads(options.threads)?;
    crate::device::set_precision(options.optim.amp, options.optim.tf32, devices[0])?;
    Vocabulary::load(&options.dataset.vocab_path)
}

/// Refuses a process of a launch whose options (but [`RUNTIME_KEYS`]) or vocabulary differ from
/// rank 0's, which publishes its own in the store.
fn same_as_rank_0(group: Option<&ProcessGroup>, options: &Options, vocab: &Vocabulary) -> Result<()> {
    let Some(group) = group else { return Ok(()) };
    if group.rank == 0 {
        let mine = serde_json::json!({ "options": options, "vocabulary": vocab.sha256() });
        return group.set("options", mine.to_string().as_bytes());
    }
    let theirs: serde_json::Value = serde_json::from_slice(&group.get("options")?)?;
    let leader: Options = serde_json::from_value(theirs["options"].clone())?;
    let changed = options.differences(&leader);
    if !changed.is_empty() {
        bail!(
            "rank {}'s options differ from rank 0's ({}): start every process with the same option file and --set values",
            group.rank,
            changed.join("; ")
        );
    }
    if theirs["vocabulary"] != serde_json::json!(vocab.sha256()) {
        bail!(
            "rank {}'s vocabulary {} differs from rank 0's (another file under the same name): give every process the same file",
            group.rank,
            options.dataset.vocab_path.display()
        );
    }
    Ok(())
}

/// What only the writing process (the only one, or rank 0) does before the others read the
/// experiment folder: take the experiment's lock and open the checkpoint to resume (repairing
/// what a killed run left). Room for a fresh start is made last, once everything is checked.
fn lead(options: &Options, resume: Option<&Path>) -> Result<(Option<Lock>, Option<Checkpoint>)> {
    let lock = Lock::acquire(&experiment_lock(options), &experiment_dir(options).display().to_string())?;
    let checkpoint = open_resume(options, resume_path(options, resume))?;
    Ok((Some(lock), checkpoint))
}

/// The checkpoint to resume from: `--resume`, else `optim.resume`.
fn resume_path<'a>(options: &'a Options, resume: Option<&'a Path>) -> Option<&'a Path> {
    match (resume, &options.optim.resume) {
        (Some(path), _) => Some(path),
        (None, Resume::From(path)) => Some(path),
        (None, Resume::No) => None,
    }
}

fn open_resume(options: &Options, path: Option<&Path>) -> Result<Option<Checkpoint>> {
    path.map(|path| Checkpoint::open_to_resume(path, options)).transpose()
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
