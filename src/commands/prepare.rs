//! `amfmn prepare`: the precomp layout from the official release files, `dataset_RSITMD.json`
//! (with keywords) or a Karpathy-style `dataset_rsicd.json`, with the split they give.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::fsutil::write_atomic;
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
}

/// Destination of the release's validation images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ValSplit {
    Train,
    Test,
    Skip,
}

#[derive(Debug, Deserialize)]
struct Release {
    images: Vec<ReleaseImage>,
}

#[derive(Debug, Deserialize)]
struct ReleaseImage {
    filename: String,
    /// Sub-folder of the image (Karpathy files of some datasets).
    #[serde(default)]
    filepath: Option<String>,
    split: String,
    sentences: Vec<Sentence>,
    #[serde(default)]
    keywords: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct Sentence {
    raw: String,
}

/// Captions, file names and keywords of one output split.
#[derive(Default)]
struct SplitText {
    captions: String,
    filenames: String,
    keywords: String,
    images: usize,
}

/// Reads the release JSON; errors name the JSON path of the problem.
fn read_release(path: &Path) -> Result<Release> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut de = serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let at = e.path().to_string();
        let inner = e.into_inner();
        if at == "." {
            anyhow::anyhow!("{}: {inner}", path.display())
        } else {
            anyhow::anyhow!("{}: {at}: {inner}", path.display())
        }
    })
}

/// Writes the precomp files and prints the split sizes.
pub fn run(args: &PrepareArgs) -> Result<()> {
    let release = read_release(&args.json)?;
    if release.images.is_empty() {
        bail!("{}: `images` is empty", args.json.display());
    }
    let per = args.captions_per_image;
    let mut splits: [SplitText; 2] = Default::default();
    let mut missing = Vec::new();
    let has_keywords = release.images.iter().any(|i| i.keywords.is_some());
    for (n, image) in release.images.iter().enumerate() {
        let target = match image.split.as_str() {
            "train" | "restval" => 0,
            "test" => 1,
            "val" => match args.val_split {
                ValSplit::Train => 0,
                ValSplit::Test => 1,
                ValSplit::Skip => continue,
            },
            other => {
                bail!("{}: images[{n}].split: unknown split `{other}` (expected train, val, test)", args.json.display())
            }
        };
        if image.sentences.len() != per {
            bail!(
                "{}: images[{n}] ({}) has {} sentences, expected {per} (--captions-per-image)",
                args.json.display(),
                image.filename,
                image.sentences.len()
            );
        }
        let relative = match &image.filepath {
            Some(dir) if !dir.is_empty() => Path::new(dir).join(&image.filename),
            _ => PathBuf::from(&image.filename),
        };
        if !args.images.join(&relative).is_file() {
            missing.push(relative.display().to_string());
        }
        let name = relative.to_string_lossy();
        if name.contains('\n') {
            bail!("{}: images[{n}].filename contains a line break", args.json.display());
        }
        let split = &mut splits[target];
        split.filenames.push_str(&format!("{name}\n"));
        for s in &image.sentences {
            let line = s.raw.split_whitespace().collect::<Vec<_>>().join(" ");
            split.captions.push_str(&line);
            split.captions.push('\n');
        }
        if has_keywords {
            let words: Vec<String> =
                image.keywords.iter().flatten().map(|k| k.replace([',', '\n'], " ").trim().to_owned()).collect();
            split.keywords.push_str(&words.join(","));
            split.keywords.push('\n');
        }
        split.images += 1;
    }
    if let Some(first) = missing.first() {
        bail!(
            "{} of {} images named in {} are not in {} (first: {first})",
            missing.len(),
            release.images.len(),
            args.json.display(),
            args.images.display()
        );
    }
    let mut table = Table::new(["split", "images", "captions", "keywords"]);
    for (name, split) in ["train", "test"].iter().zip(&splits) {
        if split.images == 0 {
            bail!("{}: no image goes to the {name} split", args.json.display());
        }
        write_atomic(&args.out.join(format!("{name}_caps.txt")), split.captions.as_bytes())?;
        write_atomic(&args.out.join(format!("{name}_filename.txt")), split.filenames.as_bytes())?;
        if has_keywords {
            write_atomic(&args.out.join(format!("{name}_keywords.txt")), split.keywords.as_bytes())?;
        }
        table.row([
            name.to_string(),
            split.images.to_string(),
            (split.images * per).to_string(),
            if has_keywords { "yes".into() } else { "-".to_string() },
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
