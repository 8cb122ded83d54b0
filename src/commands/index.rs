//! `amfmn index`: encodes every image of a folder once for searching.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use tch::Tensor;

use crate::checkpoint::Checkpoint;
use crate::options::{AttentionType, DeviceChoice};
use crate::search::index::{encode_images, scan, sha256_file, Index, IndexInfo};
use crate::table::Table;
use crate::text::Vocabulary;

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
    /// Where the model runs: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Images encoded per batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Decode threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
}

/// The checkpoint of a path given on the command line: a fold folder means its best.
pub fn open_checkpoint(path: &std::path::Path) -> Result<Checkpoint> {
    if path.is_dir() {
        Checkpoint::open(&path.join("best.json"))
    } else {
        Checkpoint::open(path)
    }
}

/// Builds or updates the index and prints what it did.
pub fn run(args: &IndexArgs) -> Result<()> {
    let checkpoint = open_checkpoint(&args.checkpoint)?;
    let options = &checkpoint.info.options;
    let model_path = std::fs::canonicalize(checkpoint.model_path())
        .with_context(|| format!("cannot find {}", checkpoint.model_path().display()))?;
    let sha = sha256_file(&model_path)?;
    let root =
        std::fs::canonicalize(&args.images).with_context(|| format!("cannot open folder {}", args.images.display()))?;
    let files = scan(&root, args.recursive)?;
    if files.is_empty() {
        bail!(
            "no .tif, .jpg or .png images in {}{}",
            root.display(),
            if args.recursive { "" } else { " (add --recursive for sub-folders)" }
        );
    }
    let image_size = options.dataset.image_size;
    let previous = if args.out.is_file() { Some(Index::load(&args.out)?) } else { None };
    let reusable: HashMap<&str, usize> = match &previous {
        Some(p) if p.info.checkpoint_sha256 == sha && p.info.root == root && p.info.image_size == image_size => {
            p.info.files.iter().enumerate().map(|(i, f)| (f.path.as_str(), i)).collect()
        }
        Some(_) => {
            eprintln!(
                "warning: {} was made with another checkpoint or folder; encoding everything again",
                args.out.display()
            );
            HashMap::new()
        }
        None => HashMap::new(),
    };
    let reuse_row = |f: &crate::search::index::IndexedFile| -> Option<usize> {
        let p = previous.as_ref()?;
        let &row = reusable.get(f.path.as_str())?;
        (p.info.files[row].size == f.size && p.info.files[row].modified_ns == f.modified_ns).then_some(row)
    };
    let device = crate::device::resolve(args.device)?;
    let vocab_path = std::fs::canonicalize(&options.dataset.vocab_path)
        .with_context(|| format!("cannot find the checkpoint's vocabulary {}", options.dataset.vocab_path.display()))?;
    let vocab = Vocabulary::load(&vocab_path)?;
    let (model, _) = crate::eval::load_model(options, &model_path, &vocab, device)?;

    let to_encode: Vec<usize> = (0..files.len()).filter(|&i| reuse_row(&files[i]).is_none()).collect();
    let progress = crate::progress::bar(to_encode.len() as u64, "encoding images");
    let mut new_codes: HashMap<usize, (Tensor, Option<Tensor>)> = HashMap::new();
    let mut skipped = Vec::new();
    for batch in to_encode.chunks(args.batch_size.max(1)) {
        let paths: Vec<PathBuf> = batch.iter().map(|&i| root.join(&files[i].path)).collect();
        let encoded = encode_images(&model, &paths, image_size, args.workers)?;
        for (k, &row) in encoded.rows.iter().enumerate() {
            let gate = encoded.gate.as_ref().map(|g| g.get(k as i64));
            new_codes.insert(batch[row], (encoded.fv.get(k as i64), gate));
        }
        for (row, reason) in encoded.failures {
            skipped.push((files[batch[row]].path.clone(), reason));
        }
        progress.inc(batch.len() as u64);
    }
    progress.finish_and_clear();

    let mut kept = Vec::new();
    let (mut fv_rows, mut gate_rows) = (Vec::new(), Vec::new());
    let mut reused = 0;
    for (i, file) in files.iter().enumerate() {
        if let Some(row) = reuse_row(file) {
            let p = previous.as_ref().expect("reuse needs a previous index");
            fv_rows.push(p.fv.get(row as i64));
            if let Some(g) = &p.gate {
                gate_rows.push(g.get(row as i64));
            }
            reused += 1;
        } else if let Some((fv, gate)) = new_codes.remove(&i) {
            fv_rows.push(fv);
            gate_rows.extend(gate);
        } else {
            continue;
        }
        kept.push(file.clone());
    }
    if kept.is_empty() {
        bail!("none of the {} images in {} could be read (first: {})", files.len(), root.display(), skipped[0].1);
    }
    let soft = options.model.cross_attention.att_type == AttentionType::Soft;
    let index = Index {
        info: IndexInfo {
            root: root.clone(),
            files: kept,
            checkpoint: model_path,
            checkpoint_sha256: sha,
            image_size,
            att_type: serde_json::to_value(options.model.cross_attention.att_type)?
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            embed_dim: options.model.embed.embed_dim,
            vocab_path,
            keywords_trained: options.dataset.keywords,
            amfmn_version: env!("CARGO_PKG_VERSION").to_owned(),
        },
        fv: Tensor::stack(&fv_rows, 0),
        gate: soft.then(|| Tensor::stack(&gate_rows, 0)),
    };
    index.save(&args.out)?;
    let mut table = Table::new(["images", "reused", "encoded", "unreadable", "index"]);
    table.row([
        index.info.files.len().to_string(),
        reused.to_string(),
        (index.info.files.len() - reused).to_string(),
        skipped.len().to_string(),
        args.out.display().to_string(),
    ]);
    print!("{table}");
    for (path, reason) in &skipped {
        println!("skipped {path}: {reason}");
    }
    Ok(())
}
