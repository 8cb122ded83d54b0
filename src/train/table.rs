//! The per-epoch row of `amfmn train`: loss, learning rate, speed, the share of the time spent
//! waiting for batches, the validation recalls of
//! the selecting mode (the recall metrics of [`METRICS`]), the best mR so far, the time, and the
//! other modes' mR; under it, the fp16 steps the loss scaler skipped, if any.

use std::fmt;

use super::GraphCounts;
use crate::eval::{Metrics, METRICS};
use crate::optim::ScalerState;
use crate::score::Mode;

/// One line of the per-epoch table.
pub(super) struct EpochRow {
    /// Validation mR of the modes other than the selecting one (sentence, keywords).
    pub others: Vec<f64>,
    pub fold: usize,
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    pub images_per_second: f64,
    /// Share of the training time spent waiting for the loader (0 to 1).
    pub waiting: f64,
    pub metrics: Option<Metrics>,
    pub best: f64,
    pub seconds: f64,
}

impl EpochRow {
    /// The header; with several modes the recalls are the last (selecting) mode's and the
    /// other modes' mR follow.
    pub fn header(modes: &[Mode]) -> String {
        let mut header =
            format!("{:>4} {:>5} {:>9} {:>9} {:>7} {:>5}", "fold", "epoch", "loss", "lr", "img/s", "wait%");
        for metric in METRICS.iter().filter(|m| m.recall) {
            header.push_str(&format!(" {:>6}", metric.name));
        }
        header.push_str(&format!(" {:>6} {:>6}", "best", "sec"));
        for mode in &modes[..modes.len() - 1] {
            header.push_str(&format!(" {:>11}", format!("mR {}", mode.name())));
        }
        header
    }
}

impl fmt::Display for EpochRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>4} {:>5} {:>9.3} {:>9.2e} {:>7.1} {:>5.1}",
            self.fold,
            self.epoch,
            self.loss,
            self.lr,
            self.images_per_second,
            100.0 * self.waiting
        )?;
        let recalls = self.metrics.unwrap_or_default().named().filter(|(metric, _)| metric.recall);
        for (_, value) in recalls {
            match self.metrics {
                Some(_) => write!(f, " {value:>6.2}")?,
                None => write!(f, " {:>6}", "-")?,
            }
        }
        write!(f, " {:>6.2} {:>6.1}", self.best, self.seconds)?;
        for mr in &self.others {
            write!(f, " {mr:>11.2}")?;
        }
        Ok(())
    }
}

/// The line under an epoch's row when fp16's loss scaler skipped steps in it (their gradients
/// held an inf or NaN, as PyTorch's `GradScaler` skips them), `before` and `after` the epoch;
/// `None` when it skipped none.
pub(super) fn skipped_steps(fold: usize, epoch: usize, before: ScalerState, after: ScalerState) -> Option<String> {
    let skipped = after.skipped - before.skipped;
    (skipped > 0).then(|| {
        format!(
            "fold {fold} epoch {epoch}: fp16 skipped {skipped} step(s) whose gradients held an inf or NaN \
             ({} in all); loss scale now {}",
            after.skipped, after.scale
        )
    })
}

/// The line under an epoch's row trained through CUDA graphs: how its steps ran, from the
/// graphs' counts `before` and `after` the epoch.
pub(super) fn graphed_steps(fold: usize, epoch: usize, before: GraphCounts, after: GraphCounts) -> String {
    format!(
        "fold {fold} epoch {epoch}: {} step(s) replayed from CUDA graphs, {} graph(s) captured, {} warm-up step(s) \
         without a graph (each new caption width's first)",
        after.replays - before.replays,
        after.captures - before.captures,
        after.warm_ups - before.warm_ups
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_rows_align() {
        let header = EpochRow::header(&[Mode::Sentence, Mode::Fused]);
        assert_eq!(
            header,
            "fold epoch      loss        lr   img/s wait%    r1i    r5i   r10i    r1t    r5t   r10t     mR   best    sec \
             mR sentence"
        );
        let m = Metrics { r1i: 18.75, mR: 57.66, ..Default::default() };
        let row = EpochRow {
            others: vec![12.5],
            fold: 0,
            epoch: 1,
            loss: 135.32,
            lr: 2e-4,
            images_per_second: 40.3,
            waiting: 0.0123,
            metrics: Some(m),
            best: 57.66,
            seconds: 33.2,
        };
        let text = row.to_string();
        assert_eq!(text.len(), header.len(), "{text}");
        assert!(text.starts_with("   0     1   135.320   2.00e-4    40.3   1.2  18.75   0.00"), "{text}");
        assert!(text.ends_with("  57.66  57.66   33.2       12.50"), "{text}");
        let blank = EpochRow { metrics: None, others: vec![], ..row };
        assert!(blank.to_string().contains("    -      -      -      -      -      -      -  57.66"), "{blank}");
    }

    #[test]
    fn skipped_fp16_steps_are_told_under_the_row() {
        let state = |scale, skipped| ScalerState { scale, growth_tracker: 0, skipped };
        assert_eq!(skipped_steps(0, 3, state(65536.0, 2), state(65536.0, 2)), None, "none this epoch");
        assert_eq!(
            skipped_steps(1, 4, state(65536.0, 2), state(16384.0, 4)).as_deref(),
            Some("fold 1 epoch 4: fp16 skipped 2 step(s) whose gradients held an inf or NaN (4 in all); loss scale now 16384")
        );
    }
}
