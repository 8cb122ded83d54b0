//! One fold, in the order of the paper's procedure: prepare it (split, model, optimizer, resume,
//! loader, logs), then per epoch train, validate, keep the best, save, and report the row.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use tch::Tensor;

use super::replicas::settled;
use super::table::{graphed_steps, skipped_steps, EpochRow};
use super::{FoldEnd, FoldResult, Replicas, StepGraphs, Trainer};
use crate::checkpoint::{
    board_dir, fold_dir, pretrained, recover_fold, Checkpoint, CheckpointInfo, CheckpointKind, InitialWeights,
};
use crate::data::{CaptionSet, FoldSplit, Loader, LoaderConfig, Pixels, Transform};
use crate::eval::{self, Metrics};
use crate::logging::{score_block, Board, TextLog};
use crate::loss::PriorSimilarity;
use crate::model::{skipthoughts, Model, ModelConfig};
use crate::optim::{learning_rate, Adam, GradScaler};
use crate::options::{Amp, MarginType, ResnetWeights};
use crate::report;
use crate::rng;
use crate::score::Mode;

/// Where training stands inside a fold.
#[derive(Debug, Clone, Default)]
pub(super) struct Position {
    /// The epoch to train next.
    pub epoch: usize,
    /// Batches of `epoch` already trained.
    pub batch: usize,
    /// Training steps so far (the original's `Eiters`).
    pub eiters: u64,
    /// Best validation mR so far.
    pub best_rsum: f64,
    /// The best epoch (epochs completed) and its metrics.
    pub best: Option<(usize, Metrics)>,
}

/// A fold being trained: its model (replicas), optimizer, position, data and logs.
pub(super) struct Fold {
    pub index: usize,
    pub replicas: Replicas,
    pub adam: Adam,
    pub position: Position,
    pub dir: PathBuf,
    pub loader: Loader,
    pub val_set: Arc<CaptionSet>,
    pub prior: Option<PriorSimilarity>,
    pub log: TextLog,
    pub board: Board,
    /// Seed of the fold's data order and dropout masks.
    pub data_seed: u64,
    /// The pretrained weights the fold started from (unknown when resumed from an older checkpoint).
    pub initial_weights: Option<InitialWeights>,
    /// The CUDA graphs of the steps, with `cuda_graphs: True`.
    pub graphs: Option<StepGraphs>,
}

/// The retrieval modes validated: the last one selects the best epoch.
fn validation_modes(keywords: bool) -> &'static [Mode] {
    if keywords {
        &[Mode::Sentence, Mode::Keywords, Mode::Fused]
    } else {
        &[Mode::Sentence]
    }
}

impl Trainer<'_> {
    /// Trains fold `index` from its start or from `resume`.
    pub(super) fn fold(&self, index: usize, resume: Option<&Checkpoint>) -> Result<FoldEnd> {
        let mut fold = self.prepare_fold(index, resume)?;
        let modes = validation_modes(self.options.dataset.keywords);
        report::info(EpochRow::header(modes));
        for epoch in fold.position.epoch..self.options.optim.epochs {
            if let Some(checkpoint) = self.epoch(&mut fold, epoch, modes)? {
                return Ok(FoldEnd::Interrupted(checkpoint));
            }
        }
        let (best_epoch, best) = fold.position.best.context("no validation ran (logs.eval_step > epochs?)")?;
        Ok(FoldEnd::Done(FoldResult { fold: index, best_epoch, best, dir: fold.dir }))
    }

    /// The fold's split (recorded in its folder), model, optimizer, position, loader and logs.
    fn prepare_fold(&self, index: usize, resume: Option<&Checkpoint>) -> Result<Fold> {
        let options = self.options;
        let seed = options.seed;
        let split = FoldSplit::new(self.data.num_images(), seed, index);
        let dir = fold_dir(options, index);
        if self.writes() {
            recover_fold(&dir)?;
            split.save(&dir.join("split.json"), &self.data.image_names)?;
        }
        let train_set = Arc::new(self.data.subset(&split.train));
        let val_set = Arc::new(self.data.subset(&split.val));
        let init_seed = rng::derive(seed, &[rng::tag::INIT, index as u64]);
        let device = self.devices[0];
        let layout = options.channels_last.applies(device, options.optim.amp);
        let config = ModelConfig::new(options, self.vocab.len());
        let mut model = Model::new(&config, device, init_seed)?.with_channels_last(layout);
        let mut adam = Adam::new(model.trainable(), options.optim.lr);
        if options.optim.amp == Amp::Fp16 {
            adam.scaler = Some(GradScaler::new(device));
        }
        let (position, initial_weights) = match resume {
            Some(checkpoint) => (
                resume_position(checkpoint, &dir, &mut model, &mut adam, index)?,
                checkpoint.info.initial_weights.clone(),
            ),
            None => (Position::default(), Some(self.load_pretrained(&model, index)?)),
        };
        if index == 0 || resume.is_some() {
            report::info(format!("model has {} parameters", model.num_parameters()));
        }
        let mut replicas = Replicas::new(model, &self.devices[1..])?;
        if let Some(group) = &self.group {
            replicas = replicas.with_peers(Rc::clone(group))?;
        }
        let dataset = &options.dataset;
        let data_seed = rng::derive(seed, &[rng::tag::DATA, index as u64]);
        let loader = self.loader(&train_set, data_seed);
        let prior = (options.optim.margin_type == MarginType::Dynamic).then(|| PriorSimilarity::new(&train_set));
        let log_path = dir.join(format!("{}_{}.txt", options.model.name_str(), dataset.datatype));
        let board_path = board_dir(options).join(index.to_string());
        let (mut log, board) = if self.writes() {
            (TextLog::new(log_path), Board::new(&board_path))
        } else {
            (TextLog::off(log_path), Board::off(&board_path))
        };
        if let Some(warning) = &self.fell_back {
            log.line(&format!("warning: {warning}"));
        }
        report::info(format!(
            "fold {index}: {} train / {} val images, split seed {seed}, checkpoints in {}",
            train_set.num_images(),
            val_set.num_images(),
            dir.display()
        ));
        Ok(Fold {
            index,
            replicas,
            adam,
            position,
            dir,
            loader,
            val_set,
            prior,
            log,
            board,
            data_seed,
            initial_weights,
            graphs: options.cuda_graphs.then(|| StepGraphs::new(device)).transpose()?,
        })
    }

    /// The loader of a fold's training images, in the epoch orders of `data_seed`.
    fn loader(&self, train_set: &Arc<CaptionSet>, data_seed: u64) -> Loader {
        let dataset = &self.options.dataset;
        Loader::new(
            Arc::clone(train_set),
            Transform::Train { resize: dataset.resize, crop: dataset.image_size, rotation: dataset.rotation },
            LoaderConfig {
                batch_size: dataset.batch_size,
                workers: dataset.workers,
                prefetch: dataset.prefetch,
                seed: data_seed,
                pixels: if self.devices[0].is_cuda() { Pixels::Device } else { Pixels::Host },
                share: self.group.as_ref().map(|g| (g.rank, g.world)),
            },
        )
    }

    /// One epoch: train, then (every `eval_step` epochs) validate and keep the best, save
    /// `last`, report the row. Returns the checkpoint to resume from when Ctrl-C stopped it.
    fn epoch(&self, fold: &mut Fold, epoch: usize, modes: &[Mode]) -> Result<Option<PathBuf>> {
        let optim = &self.options.optim;
        let lr = learning_rate(optim.lr, optim.lr_decay_param, optim.lr_update_epoch, epoch);
        fold.adam.set_lr(lr);
        let skip = if epoch == fold.position.epoch { fold.position.batch } else { 0 };
        let started = Instant::now();
        let scaler_before = fold.adam.scaler.as_ref().map(|scaler| scaler.state());
        let graphs_before = fold.graphs.as_ref().map(|graphs| graphs.counts);
        let stats = self.train_epoch(fold, epoch, skip)?;
        if let Some(batch) = stats.interrupted_at {
            fold.position.epoch = epoch;
            fold.position.batch = batch;
            self.save(fold, CheckpointKind::Last, lr, None)?;
            return Ok(Some(CheckpointKind::Last.sidecar_in(&fold.dir)));
        }
        fold.position.epoch = epoch + 1;
        fold.position.batch = 0;
        let validation = if epoch.is_multiple_of(self.options.logs.eval_step) {
            Some(self.validate(fold, epoch, lr, modes)?)
        } else {
            None
        };
        let metrics = validation.as_ref().map(|v| v.metrics);
        self.save(fold, CheckpointKind::Last, lr, metrics)?;
        let row = EpochRow {
            others: validation.map(|v| v.others).unwrap_or_default(),
            fold: fold.index,
            epoch: epoch + 1,
            loss: stats.mean_loss,
            lr,
            images_per_second: stats.images_per_second,
            waiting: stats.waiting,
            metrics,
            best: fold.position.best_rsum,
            seconds: started.elapsed().as_secs_f64(),
        };
        report::info(row.to_string());
        let after = fold.adam.scaler.as_ref().map(|scaler| scaler.state());
        if let Some(line) = scaler_before.zip(after).and_then(|(b, a)| skipped_steps(fold.index, epoch + 1, b, a)) {
            report::info(line);
        }
        if let Some((before, graphs)) = graphs_before.zip(fold.graphs.as_ref()) {
            report::info(graphed_steps(fold.index, epoch + 1, before, graphs.counts));
        }
        Ok(None)
    }

    /// Evaluates the fold's validation images in `modes`, keeps the best epoch by the last
    /// mode's mR, and logs the result.
    fn validate(&self, fold: &mut Fold, epoch: usize, lr: f64, modes: &[Mode]) -> Result<Validation> {
        let config = eval::eval_config(self.options, self.options.dataset.image_size);
        let gather;
        let peers = match fold.replicas.peers() {
            Some(group) => {
                gather = |rows: &Tensor, sizes: &[usize]| {
                    let all = group.all_gather_rows(rows, sizes)?;
                    settled(group, "a gather of the validation's codes")?;
                    Ok(all)
                };
                Some(eval::Peers { rank: group.rank, world: group.world, gather: &gather })
            }
            None => None,
        };
        let set = (&fold.val_set, config, peers.as_ref());
        let mut results = eval::evaluate(&fold.replicas.primary, set, modes, "validating")?.results;
        let selecting = results.pop().expect("at least one mode").metrics;
        let step = fold.position.eiters;
        let mut others = Vec::new();
        for result in &results {
            fold.board.scalar(&format!("rsum_{}", result.mode.name()), result.metrics.mR, step);
            others.push(result.metrics.mR);
        }
        self.keep_best(fold, epoch, lr, selecting)?;
        let best = fold.position.best.map(|(_, b)| b).unwrap_or(selecting);
        fold.log.line(&format!("Epoch:{} {}", epoch + 1, score_block(&selecting)));
        fold.log.line(&format!("Best:   {}", score_block(&best)));
        fold.board.metrics(&selecting, step);
        Ok(Validation { metrics: selecting, others })
    }

    /// Saves `best` when `metrics` beat the best mR so far.
    fn keep_best(&self, fold: &mut Fold, epoch: usize, lr: f64, metrics: Metrics) -> Result<()> {
        let is_best = metrics.mR > fold.position.best_rsum;
        fold.position.best_rsum = fold.position.best_rsum.max(metrics.mR);
        if is_best {
            fold.position.best = Some((epoch + 1, metrics));
            self.save(fold, CheckpointKind::Best, lr, Some(metrics))?;
        }
        Ok(())
    }

    /// Writes the fold's `kind` checkpoint (`last` with the optimizer state); rank 0 alone
    /// writes under a launcher.
    fn save(&self, fold: &Fold, kind: CheckpointKind, lr: f64, metrics: Option<Metrics>) -> Result<()> {
        if !self.writes() {
            return Ok(());
        }
        let info = CheckpointInfo {
            kind,
            fold: fold.index,
            epoch: fold.position.epoch,
            batch: fold.position.batch,
            best_rsum: fold.position.best_rsum,
            eiters: fold.position.eiters,
            lr,
            split_seed: self.options.seed,
            vocab_path: self.options.dataset.vocab_path.clone(),
            vocab_size: self.vocab.len(),
            vocab_sha256: Some(self.vocab.sha256()),
            metrics,
            options: self.options.clone(),
            amfmn_version: env!("CARGO_PKG_VERSION").to_owned(),
            model_file: String::new(),
            optimizer_file: None,
            model_sha256: None,
            optimizer_sha256: None,
            initial_weights: fold.initial_weights.clone(),
            vocabulary: Some(self.vocab.words().to_vec()),
            model_config: None,
        };
        let optimizer = (kind == CheckpointKind::Last).then_some(&fold.adam);
        Checkpoint::save(&fold.dir, info, &fold.replicas.primary, optimizer)?;
        Ok(())
    }

    /// The ImageNet ResNet-18 and skip-thoughts weights the options ask for (reported for the
    /// first fold only); returns what was loaded, for the checkpoints.
    fn load_pretrained(&self, model: &Model, index: usize) -> Result<InitialWeights> {
        let announce = index == 0;
        let seq2vec_options = &self.options.model.seq2vec;
        let skipthoughts = if seq2vec_options.pretrained {
            let dir_st = &seq2vec_options.dir_st;
            let loaded = skipthoughts::load(&model.net.text_feature.seq2vec, dir_st, self.vocab.words())?;
            if announce {
                report::info(format!(
                    "skip-thoughts weights from {}: {} of {} words in its dictionary",
                    dir_st.display(),
                    loaded.vocabulary - loaded.unknown_words,
                    loaded.vocabulary
                ));
            }
            Some(dir_st.display().to_string())
        } else {
            None
        };
        let imagenet = load_imagenet_weights(model, &self.options.model.resnet_weights, announce)?;
        let initial = InitialWeights { imagenet, skipthoughts };
        if announce {
            report::info(initial.describe());
        }
        Ok(initial)
    }
}

/// The ImageNet ResNet-18 weights of `setting` (fetched into torchvision's cache for `auto`);
/// returns the file's name, none for random weights.
fn load_imagenet_weights(model: &Model, setting: &ResnetWeights, announce: bool) -> Result<Option<String>> {
    let Some(path) = pretrained::resolve(setting)? else { return Ok(None) };
    let n = pretrained::load_resnet(model, &path)?;
    if announce {
        report::info(format!("ImageNet ResNet-18 weights from {} ({n} tensors)", path.display()));
    }
    Ok(Some(path.file_name().unwrap_or_default().to_string_lossy().into_owned()))
}

/// Restores the model, optimizer and position of `checkpoint` (the fold's best so far from its
/// folder).
fn resume_position(
    checkpoint: &Checkpoint,
    dir: &Path,
    model: &mut Model,
    adam: &mut Adam,
    index: usize,
) -> Result<Position> {
    checkpoint.load_model(model)?;
    match &checkpoint.info.optimizer_file {
        Some(_) => checkpoint.load_optimizer(adam)?,
        None => report::warn(format!("{} has no optimizer state; Adam starts afresh", checkpoint.dir.display())),
    }
    let info = &checkpoint.info;
    let best = Checkpoint::find_in(dir, CheckpointKind::Best)?;
    report::info(format!(
        "fold {index}: resuming {} at epoch {}, batch {}",
        checkpoint.dir.display(),
        info.epoch,
        info.batch
    ));
    Ok(Position {
        epoch: info.epoch,
        batch: info.batch,
        eiters: info.eiters,
        best_rsum: info.best_rsum,
        best: best.and_then(|b| b.info.metrics.map(|m| (b.info.epoch, m))),
    })
}

/// What a validation found: the selecting mode's metrics and the other modes' mR.
struct Validation {
    metrics: Metrics,
    others: Vec<f64>,
}
