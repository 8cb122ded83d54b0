//! `amfmn train`: k-fold training (the original `train.py`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;

use super::{OptionArgs, RuntimeArgs};
use crate::checkpoint::CheckpointKind;
use crate::eval::METRICS;
use crate::table::Table;
use crate::train::{self, Existing, Outcome};

/// Arguments of `amfmn train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub options: OptionArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Resume from a checkpoint: a fold folder, its last.json, or last.safetensors (overrides
    /// `optim.resume`).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Start over in an experiment folder that holds checkpoints of an earlier run: its
    /// checkpoint and TensorBoard folders are first moved aside (`<name>.replaced-<time>`).
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
}

/// Trains, then prints each fold's best validation result; Ctrl-C stops after the current step
/// with a checkpoint and exit code 0, a second Ctrl-C at once.
pub fn run(args: &TrainArgs) -> Result<()> {
    let mut options = args.options.load()?;
    args.runtime.apply(&mut options);
    let interrupt = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupt);
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nCtrl-C: stopping after this step and writing a checkpoint (press again to quit at once)");
    })?;
    let existing = if args.overwrite { Existing::MoveAside } else { Existing::Refuse };
    match train::run(&options, args.resume.as_deref(), existing, &interrupt)? {
        Outcome::Finished(results) => {
            let recalls = || METRICS.iter().filter(|m| m.recall).map(|m| m.name);
            let header = ["fold", "best epoch"].into_iter().chain(recalls()).chain(["checkpoint"]);
            let mut table = Table::new(header);
            for r in &results {
                let values = r.best.named().filter(|(m, _)| m.recall).map(|(_, v)| format!("{v:.2}"));
                let weights = r.dir.join(format!("{}.safetensors", CheckpointKind::Best.name()));
                table.row(
                    [r.fold.to_string(), r.best_epoch.to_string()]
                        .into_iter()
                        .chain(values)
                        .chain([weights.display().to_string()]),
                );
            }
            println!("\nbest validation results\n{table}");
        }
        Outcome::Interrupted { checkpoint } => {
            println!(
                "stopped; resume with: amfmn train --path_opt {} --resume {}",
                args.options.path_opt.display(),
                checkpoint.display()
            );
        }
    }
    Ok(())
}
