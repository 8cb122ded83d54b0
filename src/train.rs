//! `amfmn train`: the original `train.py` (SPEC §6) — for each fold, split the training images
//! 80/20, train with Adam and the ranking loss, evaluate on the fold's validation part every
//! `eval_step` epochs, keep the best checkpoint by mR — made safe to run for days: resumable
//! from any step, Ctrl-C writes a checkpoint, a non-finite loss stops with its position.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tch::{Device, Tensor};

use crate::checkpoint::{Checkpoint, CheckpointInfo};
use crate::data::{CaptionSet, FoldSplit, Loader, LoaderConfig, Transform};
use crate::eval::{self, Metrics, Mode};
use crate::logging::{score_block, Board, TextLog};
use crate::loss::{contrastive_loss, dynamic_margins, Margin, PriorSimilarity};
use crate::model::{pretrained, skipthoughts, Model};
use crate::optim::{learning_rate, Adam};
use crate::options::{MarginType, Options, ResnetWeights};
use crate::rng;
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
    pub dir: PathBuf,
}

/// Where training stands inside a fold.
#[derive(Debug, Clone, Default)]
struct Position {
    epoch: usize,
    batch: usize,
    eiters: u64,
    best_rsum: f64,
    best: Option<(usize, Metrics)>,
}

/// `<ckpt_save_path>/<experiment_name>/<fold>/`.
pub fn fold_dir(options: &Options, fold: usize) -> PathBuf {
    options.logs.ckpt_save_path.join(&options.k_fold.experiment_name).join(fold.to_string())
}

/// Everything a fold needs that does not change between folds.
struct Run<'a> {
    options: &'a Options,
    device: Device,
    vocab: Vocabulary,
    data: Arc<CaptionSet>,
    interrupt: &'a AtomicBool,
}

/// Trains every fold (from the checkpoint `resume`, if given). `interrupt` is polled after each
/// step: when set, the run saves `last` and returns [`Outcome::Interrupted`].
pub fn run(options: &Options, resume: Option<&Path>, interrupt: &AtomicBool) -> Result<Outcome> {
    let device = crate::device::resolve(options.device)?;
    crate::device::set_threads(options.threads);
    let d = &options.dataset;
    let vocab = Vocabulary::load(&d.vocab_path)?;
    let (mut data, split) = CaptionSet::load(options, "train", &vocab)?;
    if d.keywords && split.keywords.is_none() {
        bail!(
            "dataset.keywords is on but {} does not exist; write it (one line per image, keywords separated by ',') or set dataset.keywords to False",
            d.data_path.join("train_keywords.txt").display()
        );
    }
    if !d.keywords {
        // Keywords take part in training only when asked for, even if the split has them.
        data.keywords = None;
    }
    let data = Arc::new(data);
    let resume = match (resume, &options.optim.resume) {
        (Some(path), _) => Some(Checkpoint::open(path)?),
        (None, crate::options::Resume::From(path)) => Some(Checkpoint::open(path)?),
        (None, crate::options::Resume::No) => None,
    };
    let first_fold = resume.as_ref().map_or(0, |c| c.info.fold);
    if first_fold >= options.k_fold.nums {
        bail!("the checkpoint is of fold {first_fold} but k_fold.nums is {}", options.k_fold.nums);
    }
    println!(
        "training {} on {}: {} images, {} captions, vocabulary {} words, {} fold(s) of {} epochs",
        options.model.name_str(),
        crate::device::describe(device),
        data.num_images(),
        data.num_captions(),
        vocab.len(),
        options.k_fold.nums,
        options.optim.epochs
    );
    let run = Run { options, device, vocab, data, interrupt };
    let mut results = Vec::new();
    for fold in first_fold..options.k_fold.nums {
        let from = if fold == first_fold { resume.as_ref() } else { None };
        match run.fold(fold, from)? {
            FoldEnd::Done(result) => results.push(result),
            FoldEnd::Interrupted(path) => return Ok(Outcome::Interrupted { checkpoint: path }),
        }
    }
    Ok(Outcome::Finished(results))
}

enum FoldEnd {
    Done(FoldResult),
    Interrupted(PathBuf),
}

/// Mean loss and speed of (part of) an epoch.
struct EpochStats {
    mean_loss: f64,
    images_per_second: f64,
    /// Batches done when Ctrl-C stopped the epoch.
    interrupted_at: Option<usize>,
}

impl Run<'_> {
    fn fold(&self, fold: usize, resume: Option<&Checkpoint>) -> Result<FoldEnd> {
        let o = self.options;
        let seed = o.seed;
        let split = FoldSplit::new(self.data.num_images(), seed, fold);
        let dir = fold_dir(o, fold);
        split.save(&dir.join("split.json"), &self.data.image_names)?;
        let train_set = Arc::new(self.data.subset(&split.train));
        let val_set = Arc::new(self.data.subset(&split.val));

        let mut model =
            Model::new(o, self.vocab.len(), self.device, rng::derive(seed, &[rng::tag::INIT, fold as u64]))?;
        let mut adam = Adam::new(model.trainable(), o.optim.lr);
        let mut position = Position::default();
        match resume {
            Some(checkpoint) => {
                checkpoint.load_model(&mut model)?;
                match &checkpoint.info.optimizer_file {
                    Some(_) => checkpoint.load_optimizer(&mut adam)?,
                    None => {
                        eprintln!("warning: {} has no optimizer state; Adam starts afresh", checkpoint.dir.display())
                    }
                }
                let info = &checkpoint.info;
                position = Position {
                    epoch: info.epoch,
                    batch: info.batch,
                    eiters: info.eiters,
                    best_rsum: info.best_rsum,
                    best: read_best(&dir)?,
                };
                println!(
                    "fold {fold}: resuming {} at epoch {}, batch {}",
                    checkpoint.dir.display(),
                    info.epoch,
                    info.batch
                );
            }
            None => self.load_pretrained(&model, fold)?,
        }
        if fold == 0 || resume.is_some() {
            println!("model has {} parameters", model.num_parameters());
        }

        let d = &o.dataset;
        let data_seed = rng::derive(seed, &[rng::tag::DATA, fold as u64]);
        let loader = Loader::new(
            Arc::clone(&train_set),
            Transform::Train { resize: d.resize, crop: d.image_size, rotation: d.rotation },
            LoaderConfig { batch_size: d.batch_size, workers: d.workers, prefetch: d.prefetch, seed: data_seed },
        );
        let prior = (o.optim.margin_type == MarginType::Dynamic).then(|| PriorSimilarity::new(&train_set));
        let log = TextLog::new(dir.join(format!("{}_{}.txt", o.model.name_str(), d.datatype)));
        let board = Board::new(&o.logs.logger_name.join(&o.k_fold.experiment_name).join(fold.to_string()))?;
        let eval_config = eval::eval_config(o, d.image_size);
        println!(
            "fold {fold}: {} train / {} val images, split seed {seed}, checkpoints in {}",
            train_set.num_images(),
            val_set.num_images(),
            dir.display()
        );
        let modes: &[Mode] =
            if d.keywords { &[Mode::Sentence, Mode::Keywords, Mode::Fused] } else { &[Mode::Sentence] };
        println!("{}", EpochRow::header(modes));

        let mut fold_state = FoldState { fold, model, adam, position, dir, loader, prior, log, board, data_seed };
        for epoch in fold_state.position.epoch..o.optim.epochs {
            let lr = learning_rate(o.optim.lr, o.optim.lr_decay_param, o.optim.lr_update_epoch, epoch);
            fold_state.adam.set_lr(lr);
            let skip = if epoch == fold_state.position.epoch { fold_state.position.batch } else { 0 };
            let started = Instant::now();
            let stats = self.train_epoch(&mut fold_state, epoch, skip)?;
            if let Some(batch) = stats.interrupted_at {
                fold_state.position.epoch = epoch;
                fold_state.position.batch = batch;
                let saved = self.save(&fold_state, "last", lr, None)?;
                return Ok(FoldEnd::Interrupted(saved.dir.join("last.json")));
            }
            fold_state.position.epoch = epoch + 1;
            fold_state.position.batch = 0;
            let mut metrics = None;
            let mut others = Vec::new();
            if epoch % o.logs.eval_step == 0 {
                let results = eval::evaluate(&fold_state.model, &val_set, eval_config, modes, "validating")?;
                // The last mode (fused with keywords, else sentence) selects the best epoch.
                let m = results.last().expect("at least one mode").2;
                for (mode, _, r) in &results[..results.len() - 1] {
                    fold_state.board.scalar(&format!("rsum_{}", mode.name()), r.mR, fold_state.position.eiters);
                    others.push(r.mR);
                }
                let is_best = m.mR > fold_state.position.best_rsum;
                fold_state.position.best_rsum = fold_state.position.best_rsum.max(m.mR);
                if is_best {
                    fold_state.position.best = Some((epoch + 1, m));
                    self.save(&fold_state, "best", lr, Some(m))?;
                }
                let best = fold_state.position.best.map(|(_, b)| b).unwrap_or(m);
                fold_state.log.line(&format!("Epoch:{} {}", epoch + 1, score_block(&m)))?;
                fold_state.log.line(&format!("Best:   {}", score_block(&best)))?;
                fold_state.board.metrics(&m, fold_state.position.eiters);
                metrics = Some(m);
            }
            self.save(&fold_state, "last", lr, metrics)?;
            let row = EpochRow {
                others,
                fold,
                epoch: epoch + 1,
                loss: stats.mean_loss,
                lr,
                images_per_second: stats.images_per_second,
                metrics,
                best: fold_state.position.best_rsum,
                seconds: started.elapsed().as_secs_f64(),
            };
            println!("{row}");
        }
        let (best_epoch, best) = fold_state.position.best.context("no validation ran (logs.eval_step > epochs?)")?;
        Ok(FoldEnd::Done(FoldResult { fold, best_epoch, best, dir: fold_state.dir }))
    }

    /// ImageNet ResNet-18 and skip-thoughts weights when available; one warning each otherwise.
    fn load_pretrained(&self, model: &Model, fold: usize) -> Result<()> {
        let o = self.options;
        let announce = fold == 0;
        let dir_st = &o.model.seq2vec.dir_st;
        match skipthoughts::load(&model.net.text_feature.seq2vec, dir_st, self.vocab.words())? {
            Some(l) if announce => println!(
                "skip-thoughts weights from {}: {} of {} words in its dictionary",
                dir_st.display(),
                l.vocabulary - l.unknown_words,
                l.vocabulary
            ),
            Some(_) => {}
            None if announce => {
                let files = skipthoughts::files(dir_st, &model.net.text_feature.seq2vec.encoder);
                let names: Vec<String> =
                    files.iter().map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect();
                eprintln!(
                    "warning: no skip-thoughts files in {} ({}); the text encoder starts from random weights",
                    dir_st.display(),
                    names.join(", ")
                );
            }
            None => {}
        }
        match pretrained::resolve(&o.model.resnet_weights) {
            Some(path) if path.is_file() => {
                let n = pretrained::load_resnet(model, &path)?;
                if announce {
                    println!("ImageNet ResNet-18 weights from {} ({n} tensors)", path.display());
                }
            }
            Some(path) if announce => eprintln!(
                "warning: model.resnet_weights {} does not exist; the CNN starts from random weights",
                path.display()
            ),
            None if announce && o.model.resnet_weights == ResnetWeights::Auto => eprintln!(
                "warning: no ImageNet ResNet-18 weights in torchvision's cache (~/.cache/torch/hub/checkpoints/resnet18-*.pth); \
                 the CNN starts from random weights (set model.resnet_weights to a file, or to none to silence this)"
            ),
            _ => {}
        }
        Ok(())
    }

    fn train_epoch(&self, s: &mut FoldState, epoch: usize, skip: usize) -> Result<EpochStats> {
        let o = self.options;
        let batches = s.loader.num_pair_batches();
        let progress =
            crate::progress::bar((batches - skip.min(batches)) as u64, &format!("fold {} epoch {}", s.fold, epoch + 1));
        let (mut loss_sum, mut steps, mut images) = (0f64, 0usize, 0usize);
        let epoch_start = Instant::now();
        let mut step_start = Instant::now();
        for (offset, batch) in s.loader.train_epoch_from(epoch, skip).enumerate() {
            let i = skip + offset;
            let batch = batch?;
            tch::manual_seed(rng::derive(s.data_seed, &[rng::tag::DROPOUT, epoch as u64, i as u64]) as i64);
            let device = self.device;
            let pixels = s.model.prepare_images(&batch.images);
            let captions = (&batch.captions.to_device(device), &batch.lengths.to_device(device));
            let scores: Vec<Tensor> = match &batch.keywords {
                Some((ids, lengths)) => {
                    let keywords = (&ids.to_device(device), &lengths.to_device(device));
                    let m = s.model.net.forward_with_keywords(&pixels, captions, keywords, true);
                    vec![m.sentence, m.keywords, m.fused]
                }
                None => vec![s.model.net.forward(&pixels, captions.0, captions.1, true)],
            };
            let margin = match &s.prior {
                Some(prior) => Margin::PerPair(
                    dynamic_margins(&prior.matrix(&batch.image_ids, &batch.caption_ids), o.optim.gamma, o.optim.beta)
                        .to_device(device),
                ),
                None => Margin::Fixed(o.optim.margin),
            };
            let loss = scores
                .iter()
                .map(|mode_scores| contrastive_loss(mode_scores, &margin, o.optim.max_violation))
                .reduce(|a, b| a + b)
                .expect("one mode at least");
            let value = loss.double_value(&[]);
            if !value.is_finite() {
                bail!(
                    "the loss became {value} at epoch {epoch}, step {i} of fold {}; lower optim.lr or set optim.grad_clip \
                     (the last good state is {})",
                    s.fold,
                    s.dir.join("last.json").display()
                );
            }
            s.adam.zero_grad();
            s.model.backward(&loss);
            if o.optim.grad_clip > 0.0 {
                s.adam.clip_grad_norm(o.optim.grad_clip);
            }
            s.adam.step();
            s.position.eiters += 1;
            let n = batch.caption_ids.len();
            loss_sum += value;
            steps += 1;
            images += n;
            let batch_time = step_start.elapsed().as_secs_f64();
            step_start = Instant::now();
            if i.is_multiple_of(o.logs.print_freq) {
                s.log.line(&format!("Epoch: [{epoch}][{i}/{batches}]\tTime {batch_time:.3}\tL {}\t", value as f32))?;
            }
            let step = s.position.eiters;
            s.board.scalar("epoch", epoch as f64, step);
            s.board.scalar("step", i as f64, step);
            s.board.scalar("batch_time", batch_time, step);
            s.board.scalar("L", value, step);
            s.board.scalar("lr", s.adam.lr(), step);
            progress.set_message(format!(
                "loss {value:.3} lr {:.2e} {:.1} img/s",
                s.adam.lr(),
                images as f64 / epoch_start.elapsed().as_secs_f64()
            ));
            progress.inc(1);
            if self.interrupt.load(Ordering::SeqCst) {
                progress.finish_and_clear();
                s.board.flush();
                return Ok(EpochStats {
                    mean_loss: loss_sum / steps as f64,
                    images_per_second: 0.0,
                    interrupted_at: Some(i + 1),
                });
            }
        }
        progress.finish_and_clear();
        s.board.flush();
        Ok(EpochStats {
            mean_loss: if steps > 0 { loss_sum / steps as f64 } else { 0.0 },
            images_per_second: images as f64 / epoch_start.elapsed().as_secs_f64(),
            interrupted_at: None,
        })
    }

    fn save(&self, s: &FoldState, kind: &str, lr: f64, metrics: Option<Metrics>) -> Result<Checkpoint> {
        let info = CheckpointInfo {
            kind: kind.to_owned(),
            fold: s.fold,
            epoch: s.position.epoch,
            batch: s.position.batch,
            best_rsum: s.position.best_rsum,
            eiters: s.position.eiters,
            lr,
            split_seed: self.options.seed,
            vocab_path: self.options.dataset.vocab_path.clone(),
            vocab_size: self.vocab.len(),
            metrics,
            options: self.options.clone(),
            amfmn_version: env!("CARGO_PKG_VERSION").to_owned(),
            model_file: String::new(),
            optimizer_file: None,
        };
        let optimizer = (kind == "last").then_some(&s.adam);
        Checkpoint::save(&s.dir, info, &s.model, optimizer)
    }
}

/// The fold's best checkpoint so far, if one was written.
fn read_best(dir: &Path) -> Result<Option<(usize, Metrics)>> {
    if !dir.join("best.json").is_file() {
        return Ok(None);
    }
    let best = Checkpoint::open(&dir.join("best.json"))?;
    Ok(best.info.metrics.map(|m| (best.info.epoch, m)))
}

/// The mutable state of a fold being trained.
struct FoldState {
    fold: usize,
    model: Model,
    adam: Adam,
    position: Position,
    dir: PathBuf,
    loader: Loader,
    prior: Option<PriorSimilarity>,
    log: TextLog,
    board: Board,
    data_seed: u64,
}

/// One line of the per-epoch table.
struct EpochRow {
    /// Validation mR of the modes other than the selecting one (sentence, keywords).
    others: Vec<f64>,
    fold: usize,
    epoch: usize,
    loss: f64,
    lr: f64,
    images_per_second: f64,
    metrics: Option<Metrics>,
    best: f64,
    seconds: f64,
}

impl EpochRow {
    /// The header; with several modes the recalls are the last (selecting) mode's and the
    /// other modes' mR follow.
    fn header(modes: &[Mode]) -> String {
        let mut header = format!(
            "{:>4} {:>5} {:>9} {:>9} {:>7} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
            "fold", "epoch", "loss", "lr", "img/s", "r1i", "r5i", "r10i", "r1t", "r5t", "r10t", "mR", "best", "sec"
        );
        for mode in &modes[..modes.len() - 1] {
            header.push_str(&format!(" {:>11}", format!("mR {}", mode.name())));
        }
        header
    }
}

impl std::fmt::Display for EpochRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>4} {:>5} {:>9.3} {:>9.2e} {:>7.1}",
            self.fold, self.epoch, self.loss, self.lr, self.images_per_second
        )?;
        match &self.metrics {
            Some(m) => write!(
                f,
                " {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>6.2}",
                m.r1i, m.r5i, m.r10i, m.r1t, m.r5t, m.r10t, m.mR
            )?,
            None => write!(f, " {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}", "-", "-", "-", "-", "-", "-", "-")?,
        }
        write!(f, " {:>6.2} {:>6.1}", self.best, self.seconds)?;
        for mr in &self.others {
            write!(f, " {mr:>11.2}")?;
        }
        Ok(())
    }
}
