//! `amfmn train`: k-fold training (the original `train.py`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use super::{OptionArgs, RuntimeArgs};
use crate::checkpoint::CheckpointKind;
use crate::dist::Launch;
use crate::eval::METRICS;
use crate::table::Table;
use crate::train::{self, Existing, Launched, Outcome};

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
    /// Under a launcher (torchrun, srun): how long, in seconds, a process waits for the others
    /// at start-up and in each exchange before it stops with an error naming the missing rank.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
}

/// Trains, then prints each fold's best validation result; Ctrl-C or SIGTERM (a launcher or a
/// scheduler stopping the job) stops after the current step with a checkpoint and returns
/// [`Stopped`] (exit code 130), a second one at once.
pub fn run(args: &TrainArgs) -> Result<()> {
    let mut options = args.options.load()?;
    args.runtime.apply(&mut options);
    let launched = Launch::from_env()?.map(|launch| Launched { launch, timeout: Duration::from_secs(args.timeout) });
    let follower = launched.as_ref().is_some_and(|l| l.launch.rank > 0);
    let when = if launched.is_some() { "the step after this one (every process)" } else { "this step" };
    let interrupt = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupt);
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        if !follower {
            eprintln!("\ninterrupted (Ctrl-C or SIGTERM): stopping after {when} and writing a checkpoint (again: quit at once)");
        }
    })?;
    let existing = if args.overwrite { Existing::MoveAside } else { Existing::Refuse };
    match train::run(&options, args.resume.as_deref(), existing, &interrupt, launched.as_ref())? {
        Outcome::Finished(_) if follower => {}
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
            let resume = (!follower).then(|| resume_command(args, &checkpoint));
            return Err(Stopped { resume }.into());
        }
    }
    Ok(())
}

/// Training stopped by Ctrl-C or SIGTERM after writing a checkpoint; `main` exits with 130, as a shell
/// does for SIGINT, so a script does not go on to test a half-trained model.
#[derive(Debug)]
pub struct Stopped {
    /// The command line that continues the run; `None` in the processes of a launch other than
    /// rank 0, which says it for all of them.
    pub resume: Option<String>,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.resume {
            Some(resume) => write!(f, "stopped by Ctrl-C or SIGTERM; resume with: {resume}"),
            None => write!(f, "stopped by Ctrl-C or SIGTERM (rank 0 says how to resume)"),
        }
    }
}

impl std::error::Error for Stopped {}

/// The `amfmn train` line that resumes from `checkpoint` with this run's option file, overrides
/// and runtime flags, quoted for a POSIX shell.
fn resume_command(args: &TrainArgs, checkpoint: &Path) -> String {
    let mut words = vec!["amfmn".to_owned(), "train".to_owned(), "--path_opt".to_owned()];
    words.push(args.options.path_opt.display().to_string());
    for item in &args.options.set {
        words.extend(["--set".to_owned(), item.clone()]);
    }
    if let Some(device) = &args.runtime.device {
        words.extend(["--device".to_owned(), device.to_string()]);
    }
    if let Some(threads) = args.runtime.threads {
        words.extend(["--threads".to_owned(), threads.to_string()]);
    }
    words.extend(["--resume".to_owned(), checkpoint.display().to_string()]);
    words.iter().map(|w| shell_word(w)).collect::<Vec<_>>().join(" ")
}

/// `word` as a POSIX shell reads it back: bare when it holds only safe characters, otherwise
/// in single quotes (a quote inside written `'\''`).
fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_read_back_as_written() {
        for word in ["plain", "dataset.rotation=[0,90]", "a b", "it's", "", "$HOME", "x\"y", "naïve"] {
            assert_eq!(shlex::split(&shell_word(word)).unwrap(), [word], "{}", shell_word(word));
        }
        assert_eq!(shell_word("optim.lr=0.0001"), "optim.lr=0.0001");
    }
}
