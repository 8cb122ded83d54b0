//! One training epoch, a batch at a time: scores of the batch in each mode, the ranking loss
//! (docs/ARCHITECTURE.md, Loss) summed over the modes, backward, clipping, Adam; logged like the
//! original, each step's loss read once the next step is queued.

use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{bail, Result};
use tch::Tensor;

use super::fold::Fold;
use super::graphs::StepInputs;
use super::{Replicas, Trainer};
use crate::data::PairBatch;
use crate::device::{upload, Autotune, QueueMark};
use crate::loss::{contrastive_loss, dynamic_margins, Margin};
use crate::model::Pass;
use crate::optim::Adam;
use crate::report;
use crate::rng;

/// How often (in steps) the processes of a launch compare their weights.
const SYNC_CHECK_STEPS: u64 = 100;

/// Mean loss and speed of (part of) an epoch.
pub(super) struct EpochStats {
    pub mean_loss: f64,
    pub images_per_second: f64,
    /// Share of the epoch's time spent waiting for the loader's next batch (0 to 1): above a few
    /// percent, decoding is the bottleneck (more `dataset.workers` help).
    pub waiting: f64,
    /// Batches done when Ctrl-C stopped the epoch.
    pub interrupted_at: Option<usize>,
}

/// A step queued on the device whose loss has not been read yet. It is read once the next step
/// is queued: the host then prepares and queues step i + 1 while the device runs step i, and
/// waits for the device once per step, for the step before, rather than after each step.
struct Queued {
    /// The loss, a scalar on the device.
    loss: Tensor,
    /// In a launch: the processes' stop votes of the step (how many got Ctrl-C, queued with it),
    /// and the point of the device's queue where the step ends, to wait for with the group's
    /// timeout.
    launch: Option<(Tensor, QueueMark)>,
    /// The step's position in the epoch.
    i: usize,
    /// Its global number (`Eiters` once it is done).
    eiters: u64,
    /// Seconds waited for its batch.
    data_time: f64,
}

impl Trainer<'_> {
    /// Trains `epoch` from batch `skip` on; stops after the step in which Ctrl-C came (in a
    /// launch, after the step that follows it: [`Trainer::vote`]).
    pub(super) fn train_epoch(&self, fold: &mut Fold, epoch: usize, skip: usize) -> Result<EpochStats> {
        let batches = fold.loader.num_pair_batches();
        let label = format!("fold {} epoch {}", fold.index, epoch + 1);
        let progress = report::progress((batches - skip.min(batches)) as u64, &label);
        let (mut loss_sum, mut steps, mut skipped, mut images, mut waited) = (0f64, 0usize, 0usize, 0usize, 0f64);
        let epoch_start = Instant::now();
        let mut fetch_start = Instant::now();
        let mut done_at = Instant::now();
        let mut queued: Option<Queued> = None;
        let mut interrupted_at = None;
        let world = fold.replicas.peers().map_or(1, |group| group.world);
        for batch in fold.loader.train_epoch_from(epoch, skip) {
            let i = skip + steps;
            let batch = batch?;
            let data_time = fetch_start.elapsed().as_secs_f64();
            waited += data_time;
            steps += 1;
            if batch.caption_ids.len() < world {
                report::warn(format!(
                    "step {i} of epoch {epoch} has {} pair(s) for {world} processes: skipped (each needs one)",
                    batch.caption_ids.len()
                ));
                skipped += 1;
                fetch_start = Instant::now();
                continue;
            }
            let tuning = Autotune::for_batch(fold.replicas.primary.device(), fold.loader.is_full_batch(i));
            let loss = self.train_step(fold, &batch, epoch, i)?;
            drop(tuning);
            images += batch.caption_ids.len();
            let launch = self.vote(fold)?;
            let mut stop = launch.is_none() && self.interrupt.load(Ordering::SeqCst);
            let step = Queued { loss, launch, i, eiters: fold.position.eiters, data_time };
            if let Some(previous) = queued.replace(step) {
                let (loss, voted) = self.finish_step(fold, epoch, previous, &mut done_at)?;
                stop |= voted;
                loss_sum += loss;
                let speed = images as f64 / epoch_start.elapsed().as_secs_f64();
                progress.set_message(format!("loss {loss:.3} lr {:.2e} {speed:.1} img/s", fold.adam.lr()));
            }
            progress.inc(1);
            fetch_start = Instant::now();
            if stop {
                interrupted_at = Some(i + 1);
                break;
            }
        }
        if let Some(last) = queued {
            let i = last.i;
            let (loss, voted) = self.finish_step(fold, epoch, last, &mut done_at)?;
            loss_sum += loss;
            if voted && interrupted_at.is_none() {
                interrupted_at = Some(i + 1);
            }
        }
        progress.finish_and_clear();
        fold.board.flush();
        let mean_loss = loss_sum / (steps - skipped).max(1) as f64;
        if interrupted_at.is_some() {
            return Ok(EpochStats { mean_loss, images_per_second: 0.0, waiting: 0.0, interrupted_at });
        }
        let seconds = epoch_start.elapsed().as_secs_f64();
        Ok(EpochStats {
            mean_loss,
            images_per_second: images as f64 / seconds,
            waiting: waited / seconds,
            interrupted_at,
        })
    }

    /// Reads a queued step's loss (waiting for the device to have run the step: in a launch, at
    /// most the group's timeout), stops on a non-finite one, and logs it with the time since the
    /// step before was done (`done_at`, then set to now). Returns the loss and whether a process
    /// of the launch got Ctrl-C by that step.
    fn finish_step(&self, fold: &mut Fold, epoch: usize, step: Queued, done_at: &mut Instant) -> Result<(f64, bool)> {
        let mut voted = false;
        if let (Some((votes, end)), Some(group)) = (&step.launch, fold.replicas.peers()) {
            if !end.wait(group.timeout)? {
                return Err(group.stalled(&format!("step {} of epoch {epoch}", step.i)));
            }
            voted = votes.double_value(&[0]) > 0.0;
        }
        let value = step.loss.double_value(&[]);
        if !value.is_finite() {
            bail!(
                "the loss became {value} at epoch {epoch}, step {} of fold {}; lower optim.lr or set optim.grad_clip \
                 (the last good state is {})",
                step.i,
                fold.index,
                fold.dir.join("last.json").display()
            );
        }
        let batch_time = done_at.elapsed().as_secs_f64();
        *done_at = Instant::now();
        let batches = fold.loader.num_pair_batches();
        self.log_step(fold, epoch, (step.i, batches), step.eiters, value, (batch_time, step.data_time))?;
        Ok((value, voted))
    }

    /// In a launch, after a step is queued: the processes' votes on stopping (whether Ctrl-C
    /// came), queued, and the step's end in the device's queue. The votes are read with the
    /// step's loss, once the next step is queued, and every process stops after that next step.
    /// Every [`SYNC_CHECK_STEPS`] steps, the processes also check that they still hold the same
    /// weights. `None` for a process alone, which stops after the step in which Ctrl-C came.
    fn vote(&self, fold: &Fold) -> Result<Option<(Tensor, QueueMark)>> {
        let Some(group) = fold.replicas.peers() else { return Ok(None) };
        if fold.position.eiters.is_multiple_of(SYNC_CHECK_STEPS) {
            fold.replicas.check_in_sync()?;
        }
        let votes = group.vote(self.interrupt.load(Ordering::SeqCst))?;
        Ok(Some((votes, QueueMark::now(fold.replicas.primary.device())?)))
    }

    /// Queues step `i` of `epoch` on the device: forward (on every replica), loss, backward,
    /// clipping and Adam; a full batch's step through the fold's CUDA graphs when it has them.
    /// Returns the loss, a scalar on the device, unread: reading it would make the host wait for
    /// the device to run the step ([`Queued`]).
    fn train_step(&self, fold: &mut Fold, batch: &PairBatch, epoch: usize, i: usize) -> Result<Tensor> {
        let optim = &self.options.optim;
        // Each process of a launch draws its own dropout masks (rank 0 those of one process).
        let stream = match fold.replicas.peers().map_or(0, |group| group.rank as u64) {
            0 => rng::derive(fold.data_seed, &[rng::tag::DROPOUT, epoch as u64, i as u64]),
            rank => rng::derive(fold.data_seed, &[rng::tag::DROPOUT, epoch as u64, i as u64, rank]),
        };
        tch::manual_seed(stream as i64);
        let margins = fold.prior.as_ref().map(|prior| {
            let margins = dynamic_margins(&prior.matrix(&batch.image_ids, &batch.caption_ids), optim.gamma, optim.beta);
            upload(&margins, fold.replicas.primary.device())
        });
        let inputs = StepInputs { batch: fold.replicas.inputs(batch)?, margins };
        let (replicas, adam) = (&fold.replicas, &mut fold.adam);
        let lr = adam.lr();
        let mut step = |inputs: &StepInputs| self.queue_step(replicas, adam, inputs);
        let loss = match &mut fold.graphs {
            Some(graphs) if fold.loader.is_full_batch(i) => graphs.step(lr, inputs, step)?,
            _ => step(&inputs)?,
        };
        fold.position.eiters += 1;
        Ok(loss)
    }

    /// The step of [`Trainer::train_step`] on its inputs: reads nothing else of the batch.
    fn queue_step(&self, replicas: &Replicas, adam: &mut Adam, inputs: &StepInputs) -> Result<Tensor> {
        let optim = &self.options.optim;
        let scores = replicas.scores_of(&inputs.batch, Pass::training(optim.amp.kind()))?;
        let margin = match &inputs.margins {
            Some(margins) => Margin::PerPair(margins.shallow_clone()),
            None => Margin::Fixed(optim.margin),
        };
        let loss = scores.map(|scores| {
            let modes = scores.iter().map(|scores| contrastive_loss(scores, &margin, optim.max_violation));
            modes.reduce(|a, b| a + b).expect("one mode at least")
        });
        let detached = loss.detached();
        replicas.update(adam, loss, optim.grad_clip)?;
        Ok(detached)
    }

    /// The original's text-log line every `print_freq` steps, and the TensorBoard scalars, of
    /// step `i` of `batches`, the `eiters`-th in all; `times` are the step's seconds, waiting for
    /// its batch included, and that wait.
    fn log_step(
        &self,
        fold: &mut Fold,
        epoch: usize,
        (i, batches): (usize, usize),
        eiters: u64,
        loss: f64,
        times: (f64, f64),
    ) -> Result<()> {
        let (batch_time, data_time) = times;
        if i.is_multiple_of(self.options.logs.print_freq) {
            fold.log.line(&format!("Epoch: [{epoch}][{i}/{batches}]\tTime {batch_time:.3}\tL {}\t", loss as f32));
        }
        fold.board.scalar("epoch", epoch as f64, eiters);
        fold.board.scalar("step", i as f64, eiters);
        fold.board.scalar("batch_time", batch_time, eiters);
        fold.board.scalar("data_time", data_time, eiters);
        fold.board.scalar("L", loss, eiters);
        fold.board.scalar("lr", fold.adam.lr(), eiters);
        Ok(())
    }
}
