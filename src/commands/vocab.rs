//! `amfmn vocab`: builds a vocabulary from caption files, exactly as the original `vocab.py`.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::data::precomp::read_lines;
use crate::fsutil::owned::Outputs;
use crate::options::Options;
use crate::table::Table;
use crate::text::Vocabulary;

/// Arguments of `amfmn vocab`.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["data_path", "path_opt"])))]
pub struct VocabArgs {
    /// Folder with the `<split>_caps.txt` files.
    #[arg(long = "data_path", visible_alias = "data-path", value_name = "DIR", requires = "out")]
    pub data_path: Option<PathBuf>,
    /// Or an option file: its `dataset.data_path` is read and its `dataset.vocab_path` written
    /// (unless --out is given).
    #[arg(long = "path_opt", visible_alias = "path-opt", value_name = "FILE", conflicts_with = "data_path")]
    pub path_opt: Option<PathBuf>,
    /// Overrides of the option file, as in `train` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", requires = "path_opt")]
    pub set: Vec<String>,
    /// Splits whose captions are counted, in order.
    #[arg(long, value_delimiter = ',', default_value = "train,test")]
    pub splits: Vec<String>,
    /// Minimum number of occurrences of a kept word.
    #[arg(long, default_value_t = 5)]
    pub threshold: usize,
    /// Output JSON file (the original's format).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Replace an existing output file that amfmn did not write for this purpose (or that changed since).
    #[arg(long, conflicts_with = "if_missing")]
    pub force: bool,
    /// Keep an output file that already exists (a vocabulary copied from the original's
    /// repository, or built by an earlier run) and do nothing.
    #[arg(long)]
    pub if_missing: bool,
}

/// Builds and writes the vocabulary, then prints what it counted.
pub fn run(args: &VocabArgs) -> Result<()> {
    if args.threshold == 0 {
        bail!("--threshold 0: use 1 or more (words seen fewer times are dropped)");
    }
    let (data_path, out) = args.paths()?;
    if args.if_missing && out.exists() {
        println!("vocabulary {} exists; kept", out.display());
        return Ok(());
    }
    let mut table = Table::new(["split", "captions", "file"]);
    let mut captions = Vec::new();
    for split in &args.splits {
        let path = data_path.join(format!("{split}_caps.txt"));
        let lines = read_lines(&path)?;
        table.row([split.clone(), lines.len().to_string(), path.display().to_string()]);
        captions.extend(lines);
    }
    let progress = crate::report::progress(captions.len() as u64, "tokenizing captions");
    let vocab = Vocabulary::build(captions.iter().map(|c| (progress.inc(1), c.as_str()).1), args.threshold);
    progress.finish_and_clear();
    let mut outputs = Outputs::for_file(&out, "vocab", args.force)?;
    vocab.save(&mut outputs, &out)?;
    outputs.finish()?;
    print!("{table}");
    println!(
        "\nvocabulary: {} words ({} seen at least {} times, plus <unk>) written to {}",
        vocab.len(),
        vocab.len() - 1,
        args.threshold,
        out.display()
    );
    Ok(())
}

impl VocabArgs {
    /// The caption folder and the output file: from the flags, or from the option file.
    fn paths(&self) -> Result<(PathBuf, PathBuf)> {
        match (&self.data_path, &self.path_opt) {
            (Some(data_path), _) => Ok((data_path.clone(), self.out.clone().unwrap_or_default())),
            (None, Some(path_opt)) => {
                let options = Options::load(path_opt, &self.set)?;
                let out = self.out.clone().unwrap_or(options.dataset.vocab_path);
                Ok((options.dataset.data_path, out))
            }
            (None, None) => bail!("give --data_path DIR --out FILE, or --path_opt FILE"),
        }
    }
}
