//! `amfmn prepare`: the precomp layout from the official release files, `dataset_RSITMD.json`
//! (with keywords) or a Karpathy-style `dataset_rsicd.json`, with the split they give.

use std::path::PathBuf;

use anyhow::Result;

use crate::data::release::{read_precomp_text, write_precomp_text, ReleaseLayout, ValSplit};
use crate::table::Table;

/// Arguments of `amfmn prepare`.
#[derive(Debug, Clone, clap::Args)]
pub struct PrepareArgs {
    /// The release's JSON (`{"images": [{"filename", "split", "sentences": [{"raw"}], "keywords"?}]}`).
    #[arg(long, value_name = "FILE")]
    pub json: PathBuf,
    /// Folder of the images (file names of the JSON are relative to it).
    #[arg(long, value_name = "DIR")]
    pub images: PathBuf,
    /// Output folder (the precomp layout).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Where images of the `val` split go: `train` (as the published AMFMN data, e.g. RSICD's
    /// 9828 training images), `test`, or `skip`.
    #[arg(long, value_enum, default_value_t = ValSplit::Train)]
    pub val_split: ValSplit,
    #[arg(long = "captions-per-image", default_value_t = 5)]
    pub captions_per_image: usize,
    /// Replace caption, file-name or keyword files in --out that amfmn prepare did not write.
    #[arg(long)]
    pub force: bool,
}

/// Writes the precomp files and prints the split sizes.
pub fn run(args: &PrepareArgs) -> Result<()> {
    let layout =
        ReleaseLayout { images: &args.images, val_split: args.val_split, captions_per_image: args.captions_per_image };
    let text = read_precomp_text(&args.json, layout)?;
    write_precomp_text(&args.out, &text, args.force)?;
    let mut table = Table::new(["split", "images", "captions", "keywords"]);
    for (name, split) in ["train", "test"].iter().zip(&text.splits) {
        table.row([
            name.to_string(),
            split.images.to_string(),
            (split.images * args.captions_per_image).to_string(),
            if text.has_keywords { "yes".into() } else { "-".to_string() },
        ]);
    }
    print!("{table}");
    println!(
        "\nwritten to {}; set dataset.data_path to it and dataset.image_path to {}",
        args.out.display(),
        args.images.display()
    );
    Ok(())
}
