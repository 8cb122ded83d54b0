//! Reader of the official release files, `dataset_RSITMD.json` (with keywords) or a
//! Karpathy-style `dataset_rsicd.json`, turned into the text files of the precomp layout with
//! the split they give.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::image_file::confined_path;
use crate::fsutil::owned::Outputs;

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
#[derive(Debug, Default)]
pub struct SplitText {
    pub captions: String,
    pub filenames: String,
    pub keywords: String,
    pub images: usize,
}

/// The precomp text of a release: the train and test splits.
#[derive(Debug)]
pub struct PrecompText {
    /// `train`, then `test`.
    pub splits: [SplitText; 2],
    /// Whether the release has keywords (then every image has a keywords line).
    pub has_keywords: bool,
}

/// What the conversion needs besides the JSON: where its images are and how to split.
#[derive(Debug, Clone, Copy)]
pub struct ReleaseLayout<'a> {
    pub images: &'a Path,
    pub val_split: ValSplit,
    pub captions_per_image: usize,
}

/// Reads the release JSON; errors name the JSON path of the problem.
fn read_release(path: &Path) -> Result<Release> {
    let text = crate::fsutil::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
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

/// The precomp text of the release `json`; every image must have its captions and exist under
/// `layout.images`, and both splits must get images.
pub fn read_precomp_text(json: &Path, layout: ReleaseLayout) -> Result<PrecompText> {
    let release = read_release(json)?;
    if release.images.is_empty() {
        bail!("{}: `images` is empty", json.display());
    }
    let has_keywords = release.images.iter().any(|i| i.keywords.is_some());
    let mut text = PrecompText { splits: Default::default(), has_keywords };
    let mut missing = Vec::new();
    for (n, image) in release.images.iter().enumerate() {
        let Some(target) = target_split(json, n, &image.split, layout.val_split)? else { continue };
        let at = || format!("{}: images[{n}]", json.display());
        let relative = add_image(&mut text, target, image, layout.captions_per_image, at)?;
        let name = relative.to_string_lossy();
        let path = confined_path(layout.images, &name).map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
        if !path.is_file() {
            missing.push(relative.display().to_string());
        }
    }
    if let Some(first) = missing.first() {
        bail!(
            "{} of {} images named in {} are not in {} (first: {first})",
            missing.len(),
            release.images.len(),
            json.display(),
            layout.images.display()
        );
    }
    for (name, split) in ["train", "test"].iter().zip(&text.splits) {
        if split.images == 0 {
            bail!("{}: no image goes to the {name} split", json.display());
        }
    }
    Ok(text)
}

/// The output split (0 train, 1 test) of image `n`, or none for a skipped `val` image.
fn target_split(json: &Path, n: usize, split: &str, val_split: ValSplit) -> Result<Option<usize>> {
    Ok(match split {
        "train" | "restval" => Some(0),
        "test" => Some(1),
        "val" => match val_split {
            ValSplit::Train => Some(0),
            ValSplit::Test => Some(1),
            ValSplit::Skip => None,
        },
        other => bail!("{}: images[{n}].split: unknown split `{other}` (expected train, val, test)", json.display()),
    })
}

/// Adds an image's file name, captions and keywords to split `target`; returns the image's path
/// relative to the images folder. Errors start with `at()` (the file and the image's index).
fn add_image(
    text: &mut PrecompText,
    target: usize,
    image: &ReleaseImage,
    per: usize,
    at: impl Fn() -> String,
) -> Result<PathBuf> {
    if image.sentences.len() != per {
        bail!(
            "{} ({}) has {} sentences, expected {per} (--captions-per-image)",
            at(),
            image.filename,
            image.sentences.len()
        );
    }
    let relative = match &image.filepath {
        Some(dir) if !dir.is_empty() => Path::new(dir).join(&image.filename),
        _ => PathBuf::from(&image.filename),
    };
    let name = relative.to_string_lossy();
    if name.contains('\n') {
        bail!("{}.filename contains a line break", at());
    }
    let split = &mut text.splits[target];
    split.filenames.push_str(&format!("{name}\n"));
    for sentence in &image.sentences {
        split.captions.push_str(&sentence.raw.split_whitespace().collect::<Vec<_>>().join(" "));
        split.captions.push('\n');
    }
    if text.has_keywords {
        let words: Vec<String> =
            image.keywords.iter().flatten().map(|k| k.replace([',', '\n'], " ").trim().to_owned()).collect();
        split.keywords.push_str(&words.join(","));
        split.keywords.push('\n');
    }
    split.images += 1;
    Ok(relative)
}

/// The files of `text` in `out`, with their contents: `<split>_caps.txt`,
/// `<split>_filename.txt` and, when the release has keywords, `<split>_keywords.txt`.
fn precomp_files<'t>(out: &Path, text: &'t PrecompText) -> Vec<(PathBuf, &'t str)> {
    let mut files = Vec::new();
    for (name, split) in ["train", "test"].iter().zip(&text.splits) {
        files.push((out.join(format!("{name}_caps.txt")), split.captions.as_str()));
        files.push((out.join(format!("{name}_filename.txt")), split.filenames.as_str()));
        if text.has_keywords {
            files.push((out.join(format!("{name}_keywords.txt")), split.keywords.as_str()));
        }
    }
    files
}

/// Writes the precomp text into `out` as one set: every file is checked before the first is
/// written (a file there that amfmn's `prepare` did not write is refused unless `force`), and
/// files an earlier `prepare` wrote that this set does not have (keywords of an earlier release)
/// are removed.
pub fn write_precomp_text(out: &Path, text: &PrecompText, force: bool) -> Result<()> {
    let mut outputs = Outputs::new(out, "prepare", force)?;
    let files = precomp_files(out, text);
    for (path, _) in &files {
        outputs.check(path)?;
    }
    for (path, content) in &files {
        outputs.write(path, content.as_bytes())?;
    }
    let stale = outputs.remove_stale(&files.into_iter().map(|(path, _)| path).collect())?;
    if let Some(warning) = stale.kept_warning() {
        crate::report::warn(warning);
    }
    outputs.finish()
}
