//! `amfmn test` (every fold's best checkpoint on the test split, and their average, like the
//! original `test.py`) and `amfmn test-single` (one checkpoint, like `test_single.py`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::{OptionArgs, RuntimeArgs};
use crate::checkpoint::{
    experiment_dir, fold_dir, Checkpoint, CheckpointKind, InitialWeights, Opening, Source, TrainedModel,
};
use crate::data::CaptionSet;
use crate::eval::{self, results_table, Metrics};
use crate::fsutil::owned::Outputs;
use crate::options::Options;
use crate::score::Mode;
use crate::text::Vocabulary;

/// Options shared by `test` and `test-single`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub options: OptionArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Save the images x captions score matrix as float32 .npy (`test`: one file per fold,
    /// FILE.fold<k>.npy).
    #[arg(long = "save-sims", value_name = "FILE.npy")]
    pub save_sims: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Retrieval modes to report: sentence, keywords, fused (default: all three for a model
    /// trained with keywords, else sentence).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub modes: Vec<Mode>,
    /// Replace an existing score or results file that amfmn did not write for this purpose (or
    /// that changed since).
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `amfmn test`.
#[derive(Debug, Clone, clap::Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub eval: EvalArgs,
}

/// Arguments of `amfmn test-single`.
#[derive(Debug, Clone, clap::Args)]
pub struct TestSingleArgs {
    #[command(flatten)]
    pub eval: EvalArgs,
    /// The checkpoint: a fold folder, a .json sidecar, or a .safetensors file (with or
    /// without sidecar; without one the model options come from --path_opt).
    #[arg(long, value_name = "CKPT")]
    pub resume: PathBuf,
}

impl EvalArgs {
    fn options(&self) -> Result<Options> {
        let mut options = self.options.load()?;
        self.runtime.apply(&mut options);
        crate::device::set_threads(options.threads)?;
        Ok(options)
    }
}

/// The modes to report: the ones asked for, else those the checkpoint was trained for.
fn modes_for(asked: &[Mode], keywords_trained: bool) -> Vec<Mode> {
    let mut modes = if !asked.is_empty() {
        asked.to_vec()
    } else if keywords_trained {
        vec![Mode::Sentence, Mode::Keywords, Mode::Fused]
    } else {
        vec![Mode::Sentence]
    };
    modes.sort();
    modes.dedup();
    modes
}

/// What every evaluated checkpoint shares: the options, the vocabulary, the test split, the
/// modes asked for, and where score matrices go.
struct Evaluation<'a> {
    options: &'a Options,
    vocab: Vocabulary,
    set: std::sync::Arc<CaptionSet>,
    asked: &'a [Mode],
    /// `--save-sims`: the outputs the score files are written as.
    sims: Option<Outputs>,
    /// What the evaluated checkpoints' weights started from (each description once).
    initial_weights: Vec<String>,
}

impl<'a> Evaluation<'a> {
    /// Loads the vocabulary (see [`vocabulary`]) and the test split; with `--save-sims`, checks
    /// `sims_files` first.
    fn new(
        options: &'a Options,
        args: &'a EvalArgs,
        sims_files: &[PathBuf],
        checkpoint: &Path,
    ) -> Result<Evaluation<'a>> {
        let sims = match &args.save_sims {
            Some(path) => {
                let mut outputs = Outputs::for_file(path, "scores", args.force)?;
                for file in sims_files {
                    outputs.check(file)?;
                }
                Some(outputs)
            }
            None => None,
        };
        let vocab = vocabulary(options, checkpoint)?;
        let set = eval::load_test_set(options, &vocab)?;
        Ok(Evaluation { options, vocab, set, asked: &args.modes, sims, initial_weights: Vec::new() })
    }

    /// Scores the test split with the model of `checkpoint` in each mode; saves the matrices to
    /// `sims` when asked (`FILE.npy` for the first mode, `FILE.<mode>.npy` for the others).
    fn checkpoint(&mut self, checkpoint: &Path, sims: Option<&Path>, label: &str) -> Result<Vec<(Mode, Metrics)>> {
        let options = self.options;
        let device = crate::device::resolve(&options.device)?;
        let opening = Opening { options: Some(options), vocab: Some(&self.vocab), ..Opening::on(device) };
        let trained = TrainedModel::open(checkpoint, opening)?;
        let described = InitialWeights::describe_recorded(trained.initial_weights.as_ref());
        if !self.initial_weights.contains(&described) {
            self.initial_weights.push(described);
        }
        let modes = modes_for(self.asked, trained.keywords_trained());
        let model = trained.model;
        if modes.iter().any(|&m| m != Mode::Sentence) && self.set.keywords.is_none() {
            bail!(
                "--modes {}: the test split has no keywords ({} is missing)",
                modes.iter().map(|m| m.name()).collect::<Vec<_>>().join(","),
                options.dataset.data_path.join("test_keywords.txt").display()
            );
        }
        let config = eval::eval_config(options, model.image_size());
        let evaluated = eval::evaluate(&model, (&self.set, config, None), &modes, label)?;
        let (images, captions) = (self.set.num_images(), self.set.num_captions());
        crate::report::stderr_line(&format!("{label}: {images} images x {captions} captions, {}", evaluated.seconds));
        let mut out = Vec::new();
        for (i, result) in evaluated.results.into_iter().enumerate() {
            if let (Some(path), Some(outputs)) = (sims, self.sims.as_mut()) {
                let name = result.mode.name();
                let path = if i == 0 { path.to_owned() } else { path.with_extension(format!("{name}.npy")) };
                crate::npy::write_f32(outputs, &path, &result.scores.view())?;
            }
            out.push((result.mode, result.metrics));
        }
        Ok(out)
    }

    /// Writes the results JSON to `out`, then prints it (`--json`) or the table.
    fn report(self, json: &serde_json::Value, rows: &[(String, Metrics)], out: &Path, args: &EvalArgs) -> Result<()> {
        if let Some(outputs) = self.sims {
            outputs.finish()?;
        }
        let mut results = Outputs::for_file(out, "test results", args.force)?;
        results.write(out, serde_json::to_string_pretty(json)?.as_bytes())?;
        results.finish()?;
        if args.json {
            println!("{json}");
        } else {
            for line in &self.initial_weights {
                println!("{line}");
            }
            print!("{}", results_table(rows));
            let set = &self.set;
            println!(
                "\n{} test images, {} captions; results written to {}",
                set.num_images(),
                set.num_captions(),
                out.display()
            );
        }
        Ok(())
    }
}

/// The vocabulary of the option file; when that file is absent, the one `checkpoint` carries.
fn vocabulary(options: &Options, checkpoint: &Path) -> Result<Vocabulary> {
    let path = &options.dataset.vocab_path;
    if !path.exists() {
        if let Ok(Source::Amfmn(sidecar)) = Source::of(checkpoint, CheckpointKind::Best) {
            if let Some(c) = Checkpoint::open(&sidecar).ok().filter(|c| c.info.vocabulary.is_some()) {
                crate::report::warn(format!(
                    "{} does not exist: using the vocabulary {} carries",
                    path.display(),
                    sidecar.display()
                ));
                return c.vocabulary();
            }
        }
    }
    Vocabulary::load(path)
}

/// One result as JSON: the metrics object, or `{mode: metrics}` for several modes.
fn result_json(results: &[(Mode, Metrics)]) -> Result<serde_json::Value> {
    if let [(Mode::Sentence, m)] = results {
        return Ok(serde_json::to_value(m)?);
    }
    let mut object = serde_json::Map::new();
    for (mode, m) in results {
        object.insert(mode.name().to_owned(), serde_json::to_value(m)?);
    }
    Ok(serde_json::Value::Object(object))
}

/// Table rows `label` (one mode) or `label mode`.
fn labelled(label: &str, results: &[(Mode, Metrics)]) -> Vec<(String, Metrics)> {
    results
        .iter()
        .map(|(mode, m)| (if results.len() == 1 { label.to_owned() } else { format!("{label} {}", mode.name()) }, *m))
        .collect()
}

/// The mean over the folds of each mode that every fold was evaluated in (folds trained with
/// different settings can differ: each is evaluated in its own modes, said in a warning).
fn average_of_folds(folds: &[Vec<(Mode, Metrics)>]) -> Vec<(Mode, Metrics)> {
    let modes_of = |fold: &[(Mode, Metrics)]| fold.iter().map(|(m, _)| *m).collect::<Vec<_>>();
    let common: Vec<Mode> =
        modes_of(&folds[0]).into_iter().filter(|m| folds.iter().all(|f| modes_of(f).contains(m))).collect();
    if folds.iter().any(|f| modes_of(f) != common) {
        let names: Vec<&str> = common.iter().map(|m| m.name()).collect();
        crate::report::warn(format!(
            "the folds were evaluated in different modes (trained with different dataset.keywords); the average covers {}",
            names.join(", ")
        ));
    }
    common
        .into_iter()
        .map(|mode| {
            let per_fold: Vec<Metrics> =
                folds.iter().filter_map(|f| f.iter().find(|(m, _)| *m == mode).map(|(_, r)| *r)).collect();
            (mode, Metrics::mean(&per_fold))
        })
        .collect()
}

/// `sims.npy` → `sims.fold<k>.npy`.
fn fold_file(path: &Path, fold: usize) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!("{stem}.fold{fold}.npy"))
}

/// `amfmn test`: every fold's best checkpoint on the test split, then the average.
pub fn run_test(args: &TestArgs) -> Result<()> {
    let options = args.eval.options()?;
    let found: Vec<Option<PathBuf>> = (0..options.k_fold.nums)
        .map(|k| Source::in_fold(&fold_dir(&options, k)).map(|s| s.path().to_owned()))
        .collect();
    let missing: Vec<String> = found
        .iter()
        .enumerate()
        .filter(|(_, p)| p.is_none())
        .map(|(k, _)| format!("fold {k} ({})", CheckpointKind::Best.sidecar_in(&fold_dir(&options, k)).display()))
        .collect();
    let checkpoints: Vec<PathBuf> = found.into_iter().flatten().collect();
    if !missing.is_empty() {
        bail!(
            "no best checkpoint for {} of {} folds: {}; train them with `amfmn train --path_opt {}`",
            missing.len(),
            options.k_fold.nums,
            missing.join(", "),
            args.eval.options.path_opt.display()
        );
    }
    let sims: Vec<PathBuf> = match &args.eval.save_sims {
        Some(path) => (0..checkpoints.len()).map(|k| fold_file(path, k)).collect(),
        None => Vec::new(),
    };
    let mut evaluation = Evaluation::new(&options, &args.eval, &sims, &checkpoints[0])?;
    let mut folds = Vec::new();
    for (k, checkpoint) in checkpoints.iter().enumerate() {
        let label = format!("testing fold {k}");
        folds.push(evaluation.checkpoint(checkpoint, sims.get(k).map(PathBuf::as_path), &label)?);
    }
    let average = average_of_folds(&folds);
    let mut object = serde_json::Map::new();
    for (k, results) in folds.iter().enumerate() {
        object.insert(k.to_string(), result_json(results)?);
    }
    object.insert("average".into(), result_json(&average)?);
    let out = experiment_dir(&options).join("test.json");
    let mut rows: Vec<(String, Metrics)> =
        folds.iter().enumerate().flat_map(|(k, results)| labelled(&k.to_string(), results)).collect();
    rows.extend(labelled("average", &average));
    evaluation.report(&serde_json::Value::Object(object), &rows, &out, &args.eval)
}

/// `amfmn test-single`: one checkpoint on the test split.
pub fn run_test_single(args: &TestSingleArgs) -> Result<()> {
    let options = args.eval.options()?;
    let sims: Vec<PathBuf> = args.eval.save_sims.iter().cloned().collect();
    let mut evaluation = Evaluation::new(&options, &args.eval, &sims, &args.resume)?;
    let results = evaluation.checkpoint(&args.resume, args.eval.save_sims.as_deref(), "testing")?;
    let out = Source::of(&args.resume, CheckpointKind::Best)?.path().with_extension("test.json");
    evaluation.report(&result_json(&results)?, &labelled("test", &results), &out, &args.eval)
}
