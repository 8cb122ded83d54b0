//! One training epoch, a batch at a time: scores of the batch in each mode, the ranking loss
//! (docs/ARCHITECTURE.md, Loss) summed over the modes, backward, clipping, Adam; logged like the original.

use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{bail, Result};

use super::fold::Fold;
use super::Trainer;
use crate::data::PairBatch;
use crate::device::{upload, Autotune};
use crate::loss::{contrastive_loss, dynamic_margins, Margin};
use crate::model::Pass;
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

impl Trainer<'_> {
    /// Trains `epoch` from batch `skip` on; stops after the step in which Ctrl-C came.
    pub(super) fn train_epoch(&self, fold: &mut Fold, epoch: usize, skip: usize) -> Result<EpochStats> {
        let batches = fold.loader.num_pair_batches();
        let label = format!("fold {} epoch {}", fold.index, epoch + 1);
        let progress = report::progress((batches - skip.min(batches)) as u64, &label);
        let (mut loss_sum, mut steps, mut skipped, mut images, mut waited) = (0f64, 0usize, 0usize, 0usize, 0f64);
        let epoch_start = Instant::now();
        let mut step_start = Instant::now();
        let world = fold.replicas.peers().map_or(1, |group| group.world);
        for batch in fold.loader.train_epoch_from(epoch, skip) {
            let i = skip + steps;
            let batch = batch?;
            let data_time = step_start.elapsed().as_secs_f64();
            waited += data_time;
            if batch.caption_ids.len() < world {
                report::warn(format!(
                    "step {i} of epoch {epoch} has {} pair(s) for {world} processes: skipped (each needs one)",
                    batch.caption_ids.len()
                ));
                steps += 1;
                skipped += 1;
                step_start = Instant::now();
                continue;
            }
            let tuning = Autotune::for_batch(fold.replicas.primary.device(), fold.loader.is_full_batch(i));
            let loss = self.train_step(fold, &batch, epoch, i)?;
            drop(tuning);
            loss_sum += loss;
            steps += 1;
            images += batch.caption_ids.len();
            let batch_time = step_start.elapsed().as_secs_f64();
            step_start = Instant::now();
            self.log_step(fold, epoch, i, batches, loss, (batch_time, data_time))?;
            let speed = images as f64 / epoch_start.elapsed().as_secs_f64();
            progress.set_message(format!("loss {loss:.3} lr {:.2e} {speed:.1} img/s", fold.adam.lr()));
            progress.inc(1);
            if self.stop_now(fold)? {
                progress.finish_and_clear();
                fold.board.flush();
                let mean_loss = loss_sum / (steps - skipped).max(1) as f64;
                return Ok(EpochStats { mean_loss, images_per_second: 0.0, waiting: 0.0, interrupted_at: Some(i + 1) });
            }
        }
        progress.finish_and_clear();
        fold.board.flush();
        let seconds = epoch_start.elapsed().as_secs_f64();
        Ok(EpochStats {
            mean_loss: if steps > skipped { loss_sum / (steps - skipped) as f64 } else { 0.0 },
            images_per_second: images as f64 / seconds,
            waiting: waited / seconds,
            interrupted_at: None,
        })
    }

    /// Whether to stop after this step: Ctrl-C came (on any process of a launch, which all stop
    /// after the same step). Every [`SYNC_CHECK_STEPS`] steps, the processes also check that
    /// they still hold the same weights.
    fn stop_now(&self, fold: &Fold) -> Result<bool> {
        let interrupted = self.interrupt.load(Ordering::SeqCst);
        let Some(group) = fold.replicas.peers() else { return Ok(interrupted) };
        if fold.position.eiters.is_multiple_of(SYNC_CHECK_STEPS) {
            fold.replicas.check_in_sync()?;
        }
        group.any(interrupted)
    }

    /// Step `i` of `epoch`: forward (on every replica), loss, backward, clipping and Adam.
    /// Returns the loss.
    fn train_step(&self, fold: &mut Fold, batch: &PairBatch, epoch: usize, i: usize) -> Result<f64> {
        let optim = &self.options.optim;
        // Each process of a launch draws its own dropout masks (rank 0 those of one process).
        let stream = match fold.replicas.peers().map_or(0, |group| group.rank as u64) {
            0 => rng::derive(fold.data_seed, &[rng::tag::DROPOUT, epoch as u64, i as u64]),
            rank => rng::derive(fold.data_seed, &[rng::tag::DROPOUT, epoch as u64, i as u64, rank]),
        };
        tch::manual_seed(stream as i64);
        let scores = fold.replicas.scores(batch, Pass::training(optim.amp.kind()))?;
        let margin = match &fold.prior {
            Some(prior) => Margin::PerPair(upload(
                &dynamic_margins(&prior.matrix(&batch.image_ids, &batch.caption_ids), optim.gamma, optim.beta),
                fold.replicas.primary.device(),
            )),
            None => Margin::Fixed(optim.margin),
        };
        let loss = scores.map(|scores| {
            let modes = scores.iter().map(|scores| contrastive_loss(scores, &margin, optim.max_violation));
            modes.reduce(|a, b| a + b).expect("one mode at least")
        });
        // Read only after the update is queued: reading it between the forward and the backward
        // would make the host wait for the device mid-step. A diverged step's weights are never
        // saved (the error ends the run).
        let detached = loss.detached();
        fold.replicas.update(&mut fold.adam, loss, optim.grad_clip)?;
        let value = detached.double_value(&[]);
        if !value.is_finite() {
            bail!(
                "the loss became {value} at epoch {epoch}, step {i} of fold {}; lower optim.lr or set optim.grad_clip \
                 (the last good state is {})",
                fold.index,
                fold.dir.join("last.json").display()
            );
        }
        fold.position.eiters += 1;
        Ok(value)
    }

    /// The original's text-log line every `print_freq` steps, and the TensorBoard scalars;
    /// `times` are the step's seconds, waiting for its batch included, and that wait.
    fn log_step(
        &self,
        fold: &mut Fold,
        epoch: usize,
        i: usize,
        batches: usize,
        loss: f64,
        times: (f64, f64),
    ) -> Result<()> {
        let (batch_time, data_time) = times;
        if i.is_multiple_of(self.options.logs.print_freq) {
            fold.log.line(&format!("Epoch: [{epoch}][{i}/{batches}]\tTime {batch_time:.3}\tL {}\t", loss as f32));
        }
        let step = fold.position.eiters;
        fold.board.scalar("epoch", epoch as f64, step);
        fold.board.scalar("step", i as f64, step);
        fold.board.scalar("batch_time", batch_time, step);
        fold.board.scalar("data_time", data_time, step);
        fold.board.scalar("L", loss, step);
        fold.board.scalar("lr", fold.adam.lr(), step);
        Ok(())
    }
}
