//! `amfmn inspect`: reads a dataset through its option file, checks it, and prints statistics.

use anyhow::{bail, Result};

use super::OptionArgs;
use crate::data::image_file::{load_rgb, unreadable_images};
use crate::data::CaptionSet;
use crate::table::Table;
use crate::text::Vocabulary;

/// Arguments of `amfmn inspect`.
#[derive(Debug, Clone, clap::Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub options: OptionArgs,
    /// Splits to read.
    #[arg(long, value_delimiter = ',', default_value = "train,test")]
    pub splits: Vec<String>,
}

/// Reads every split, checks that its images exist, and prints one table row per split.
pub fn run(args: &InspectArgs) -> Result<()> {
    let options = args.options.load()?;
    let d = &options.dataset;
    let vocab = Vocabulary::load(&d.vocab_path)?;
    let mut table = Table::new([
        "split",
        "images",
        "captions",
        "keywords",
        "tokens/caption",
        "max tokens",
        "<unk> %",
        "first image",
    ]);
    let mut unreadable = Vec::new();
    let mut total = 0;
    for split_name in &args.splits {
        let (set, split) = CaptionSet::load(&options, split_name, &vocab)?;
        let label = format!("decoding {split_name} images");
        unreadable.extend(unreadable_images(&set.image_paths, d.workers.max(1), &label));
        total += set.num_images();
        let first =
            load_rgb(&set.image_paths[0]).map_or("unreadable".to_string(), |i| format!("{}x{}", i.width(), i.height()));
        let tokens: usize = set.captions.iter().map(Vec::len).sum();
        let unknown = set.captions.iter().flatten().filter(|&&id| id == vocab.unk_id()).count();
        let keywords = split.keywords.as_ref().map_or("-".to_string(), |k| {
            format!("{:.1}/image", k.iter().map(Vec::len).sum::<usize>() as f64 / k.len() as f64)
        });
        table.row([
            split_name.clone(),
            set.num_images().to_string(),
            set.num_captions().to_string(),
            keywords,
            format!("{:.1}", tokens as f64 / set.num_captions() as f64),
            set.captions.iter().map(Vec::len).max().unwrap_or(0).to_string(),
            format!("{:.2}", 100.0 * unknown as f64 / tokens as f64),
            first,
        ]);
    }
    print!("{table}");
    if !unreadable.is_empty() {
        for (path, reason) in &unreadable {
            println!("unreadable {}: {reason}", path.display());
        }
        bail!("{} of {total} images cannot be decoded (listed above); replace or remove them", unreadable.len());
    }
    println!(
        "\nvocabulary {}: {} words; all images present and decodable ({total})",
        d.vocab_path.display(),
        vocab.len()
    );
    Ok(())
}
