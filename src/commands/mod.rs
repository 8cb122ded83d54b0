//! The subcommands of the `amfmn` binary; `main.rs` parses the command line and calls these.

pub mod check_weights;
pub mod index;
pub mod inspect;
pub mod locate;
pub mod metrics;
pub mod prepare;
pub mod retrieve;
pub mod saliency;
pub mod selo;
pub mod synth;
pub mod test;
pub mod train;
pub mod vocab;

use std::path::PathBuf;

use anyhow::Result;

use crate::options::{Devices, Options};

/// The option-file arguments shared by every subcommand that runs on a dataset.
#[derive(Debug, Clone, clap::Args)]
pub struct OptionArgs {
    /// YAML option file in the original's format (e.g. option/RSITMD_AMFMN.yaml).
    #[arg(long = "path_opt", visible_alias = "path-opt", value_name = "FILE")]
    pub path_opt: PathBuf,
    /// Override one option, e.g. --set optim.lr=0.0001 (repeatable; value in YAML syntax).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl OptionArgs {
    /// Reads the option file with the overrides applied.
    pub fn load(&self) -> Result<Options> {
        Options::load(&self.path_opt, &self.set)
    }
}

/// Where the model runs, for the subcommands that run it.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    /// Where the model runs: auto (CUDA when available), cpu, cuda or cuda:N (overrides `device`);
    /// `train` takes several, comma-separated, for data-parallel replicas (cuda:0,cuda:1).
    #[arg(long)]
    pub device: Option<Devices>,
    /// libtorch threads on the CPU (overrides `threads`; 0 = one per core).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl RuntimeArgs {
    /// Writes the command-line choices over the option file's.
    pub fn apply(&self, options: &mut Options) {
        if let Some(device) = &self.device {
            options.device = device.clone();
        }
        if let Some(threads) = self.threads {
            options.threads = threads;
        }
    }

    /// For the commands that read a checkpoint's options instead of an option file: the
    /// command-line choices over the options' defaults (auto, libtorch's threads), not over the
    /// machine the checkpoint was trained on.
    pub fn apply_to_checkpoint(&self, options: &mut Options) {
        options.device = Devices::default();
        options.threads = 0;
        self.apply(options);
    }
}
