//! `amfmn index`: encodes every image of a folder once for searching.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::RuntimeArgs;
use crate::checkpoint::{Opening, TrainedModel};
use crate::encode::Workers;
use crate::fsutil::owned::Outputs;
use crate::options::MAX_WORKERS;
use crate::report;
use crate::search::index::{scan, update, Index, IndexInfo, Scan};
use crate::table::Table;

/// Arguments of `amfmn index`.
#[derive(Debug, Clone, clap::Args)]
pub struct IndexArgs {
    /// A trained checkpoint: a fold folder (its best), a .json sidecar or its .safetensors.
    #[arg(long, value_name = "CKPT")]
    pub checkpoint: PathBuf,
    /// Folder of images (.tif, .jpg, .png).
    #[arg(long, value_name = "DIR")]
    pub images: PathBuf,
    /// Also index images in sub-folders.
    #[arg(long)]
    pub recursive: bool,
    /// The index file to write (an existing one is updated: only new or changed files are
    /// encoded).
    #[arg(long, value_name = "INDEX")]
    pub out: PathBuf,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Images encoded per batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Decode threads, sharing each batch (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Replace an existing output file that amfmn did not write for this purpose (or that changed since).
    #[arg(long)]
    pub force: bool,
}

/// Builds or updates the index and prints what it did.
pub fn run(args: &IndexArgs) -> Result<()> {
    if let Some(workers) = args.workers.filter(|&w| w > MAX_WORKERS) {
        bail!("--workers {workers}: at most {MAX_WORKERS} decode threads");
    }
    let mut outputs = Outputs::for_file(&args.out, "index", args.force)?;
    outputs.check(&args.out)?;
    let trained = TrainedModel::open(&args.checkpoint, Opening::on(args.runtime.device()?))?;
    let model_path = std::fs::canonicalize(&trained.weights)
        .with_context(|| format!("cannot find {}", trained.weights.display()))?;
    let root =
        std::fs::canonicalize(&args.images).with_context(|| format!("cannot open folder {}", args.images.display()))?;
    let Scan { files, links_outside } = scan(&root, args.recursive)?;
    if let Some(first) = links_outside.first() {
        report::warn(format!(
            "skipped {} symbolic link(s) that lead outside {} (first: {first}); copy those images into the folder to index them",
            links_outside.len(),
            root.display()
        ));
    }
    if files.is_empty() {
        bail!(
            "no .tif, .jpg or .png images in {}{}",
            root.display(),
            if args.recursive { "" } else { " (add --recursive for sub-folders)" }
        );
    }
    let config = trained.model.config();
    let info = IndexInfo {
        root,
        files: Vec::new(),
        checkpoint_sha256: trained.weights_sha256()?,
        checkpoint: model_path,
        image_size: config.image_size,
        att_type: serde_json::to_value(config.model.cross_attention.att_type)?.as_str().unwrap_or_default().to_owned(),
        embed_dim: config.embed_dim(),
        vocab_path: trained.options.dataset.vocab_path.clone(),
        vocab_sha256: Some(trained.vocab.sha256()),
        keywords_trained: trained.keywords_trained(),
        amfmn_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let previous = if args.out.is_file() { Some(Index::load(&args.out)?) } else { None };
    if previous.as_ref().is_some_and(|p| !p.info.same_source(&info)) {
        report::warn(format!(
            "{} was made with another checkpoint or folder; encoding everything again",
            args.out.display()
        ));
    }
    let model = trained.model;
    let workers = args.workers.unwrap_or_else(|| Workers::all_cores().workers);
    let (index, summary) = update(&model, info, &files, previous.as_ref(), args.batch_size, workers)?;
    index.save(&mut outputs, &args.out)?;
    outputs.finish()?;
    let mut table = Table::new(["images", "reused", "encoded", "unreadable", "encoded/s", "index"]);
    let indexed = index.info.files.len();
    let encoded = indexed - summary.reused;
    let rate = if encoded > 0 { format!("{:.0}", encoded as f64 / summary.encode_seconds) } else { "-".to_owned() };
    table.row([
        indexed.to_string(),
        summary.reused.to_string(),
        encoded.to_string(),
        summary.skipped.len().to_string(),
        rate,
        args.out.display().to_string(),
    ]);
    print!("{table}");
    for (path, reason) in &summary.skipped {
        println!("skipped {path}: {reason}");
    }
    Ok(())
}
