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
pub mod serve;
pub mod synth;
pub mod test;
pub mod train;
pub mod vocab;

use std::path::PathBuf;

use anyhow::Result;

use crate::locate::crops::CropResize;
use crate::locate::map::{Filter, MapSettings, ScoreKind};
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

    /// For the commands that run a trained model without an option file: libtorch's threads
    /// (`--threads`, else one per core) and the device (`--device`, else auto), never those of
    /// the machine the checkpoint was trained on.
    pub fn device(&self) -> Result<tch::Device> {
        crate::device::set_threads(self.threads.unwrap_or(0))?;
        crate::device::resolve(&self.device.clone().unwrap_or_default())
    }
}

/// How a scene's map is made: the crops, their scores, the filter (shared by `locate` and
/// `selo`'s end-to-end mode).
#[derive(Debug, Clone, clap::Args)]
pub struct MapArgs {
    /// Crop sides, each cut on two grids (SeLo's default 256,512,768).
    #[arg(long, value_delimiter = ',', default_value = "256,512,768")]
    pub steps: Vec<usize>,
    /// How crops are resized to the network's input.
    #[arg(long, value_enum, default_value = "cubic")]
    pub crop_resize: CropResize,
    /// How a crop is scored: `vga`, the model's own score (visual-guided attention); `plain`,
    /// cos(Fv, t) as SLM's released model (which may lack the attention and fusion weights).
    #[arg(long, value_enum, default_value = "vga")]
    pub score: ScoreKind,
    /// The map's filter: `median:251` (SeLo v1), `gaussian:255` (SeLo v2) or `none`.
    #[arg(long, default_value = "median:251", value_parser = Filter::parse)]
    pub filter: Filter,
    /// Refuse scenes of more pixels than this (read from the header before decoding; memory is
    /// about 9 bytes per pixel, so the default keeps a run under 2 GB).
    #[arg(long, default_value_t = 200_000_000)]
    pub max_pixels: u64,
    /// Crops encoded at a time.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

impl MapArgs {
    /// The library's settings.
    pub fn settings(&self) -> MapSettings {
        MapSettings {
            steps: self.steps.clone(),
            crop_resize: self.crop_resize,
            score: self.score,
            filter: self.filter,
            max_pixels: self.max_pixels,
            batch_size: self.batch_size,
        }
    }
}
