//! `amfmn vocab`: builds a vocabulary from caption files, exactly as the original `vocab.py`.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::data::precomp::read_lines;
use crate::fsutil::owned::Outputs;
use crate::table::Table;
use crate::text::Vocabulary;

/// Arguments of `amfmn vocab`.
#[derive(Debug, Clone, clap::Args)]
pub struct VocabArgs {
    /// Folder with the `<split>_caps.txt` files.
    #[arg(long = "data_path", visible_alias = "data-path", value_name = "DIR")]
    pub data_path: PathBuf,
    /// Splits whose captions are counted, in order.
    #[arg(long, value_delimiter = ',', default_value = "train,test")]
    pub splits: Vec<String>,
    /// Minimum number of occurrences of a kept word.
    #[arg(long, default_value_t = 5)]
    pub threshold: usize,
    /// Output JSON file (the original's format).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace an existing output file that amfmn did not write for this purpose (or that changed since).
    #[arg(long)]
    pub force: bool,
}

/// Builds and writes the vocabulary, then prints what it counted.
pub fn run(args: &VocabArgs) -> Result<()> {
    if args.threshold == 0 {
        bail!("--threshold 0: use 1 or more (words seen fewer times are dropped)");
    }
    let mut table = Table::new(["split", "captions", "file"]);
    let mut captions = Vec::new();
    for split in &args.splits {
        let path = args.data_path.join(format!("{split}_caps.txt"));
        let lines = read_lines(&path)?;
        table.row([split.clone(), lines.len().to_string(), path.display().to_string()]);
        captions.extend(lines);
    }
    let progress = crate::report::progress(captions.len() as u64, "tokenizing captions");
    let vocab = Vocabulary::build(captions.iter().map(|c| (progress.inc(1), c.as_str()).1), args.threshold);
    progress.finish_and_clear();
    let mut outputs = Outputs::for_file(&args.out, "vocab", args.force)?;
    vocab.save(&mut outputs, &args.out)?;
    outputs.finish()?;
    print!("{table}");
    println!(
        "\nvocabulary: {} words ({} seen at least {} times, plus <unk>) written to {}",
        vocab.len(),
        vocab.len() - 1,
        args.threshold,
        args.out.display()
    );
    Ok(())
}
