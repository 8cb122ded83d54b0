//! A synthetic remote-sensing set in the precomp layout: procedurally drawn aerial-like scenes of
//! ten classes ([`scenes`]), each image with its own attributes (object counts, colours,
//! positions, orientations) that its five captions and keywords describe, so retrieval has to
//! read the attributes, not only the class. Same seed → identical files. Kept apart from the
//! readers of real datasets in [`crate::data`].

mod canvas;
pub mod large;
mod scenes;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::{ImageFormat, RgbImage};
use rand_chacha::ChaCha8Rng;

use crate::fsutil::entries_if_present;
use crate::fsutil::owned::{Outputs, MANIFEST};
use crate::rng;
use scenes::{Scene, CLASSES};

/// Which file formats the images are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SynthFormat {
    /// `.tif`, `.jpg` and `.png` in turn.
    Mixed,
    Tif,
    Jpg,
    Png,
}

impl SynthFormat {
    /// The file extension of image `i`.
    fn extension(self, i: usize) -> &'static str {
        match self {
            SynthFormat::Mixed => ["tif", "jpg", "png"][i % 3],
            SynthFormat::Tif => "tif",
            SynthFormat::Jpg => "jpg",
            SynthFormat::Png => "png",
        }
    }
}

/// Settings of `amfmn synth`.
#[derive(Debug, Clone, Copy)]
pub struct SynthConfig {
    pub images: usize,
    pub size: u32,
    pub seed: u64,
    pub format: SynthFormat,
}

/// Counts of what was written, for the summary table.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SynthSummary {
    /// Images per (class, split).
    pub per_class: BTreeMap<&'static str, [usize; 2]>,
    /// Images per file extension.
    pub per_format: BTreeMap<&'static str, usize>,
    pub captions: [usize; 2],
    pub caption_words: usize,
    pub keywords: usize,
}

const CAPTIONS_PER_IMAGE: usize = 5;
/// RSITMD has one to five keywords per image.
const MAX_KEYWORDS: usize = 5;

/// The text files of one split, as they are being written: captions, file names, keywords.
#[derive(Default)]
struct SplitText {
    captions: String,
    file_names: String,
    keywords: String,
}

/// Five different captions for a scene, in random order.
fn captions(scene: &dyn Scene, rng: &mut ChaCha8Rng) -> Vec<String> {
    let mut candidates = scene.sentences(rng);
    candidates.dedup();
    rng::shuffle(rng, &mut candidates);
    let mut out: Vec<String> = Vec::with_capacity(CAPTIONS_PER_IMAGE);
    for c in candidates {
        if !out.contains(&c) {
            out.push(c);
        }
        if out.len() == CAPTIONS_PER_IMAGE {
            break;
        }
    }
    assert_eq!(out.len(), CAPTIONS_PER_IMAGE, "every scene has at least five sentences");
    out.into_iter().enumerate().map(|(i, c)| if i % 2 == 0 { capitalize(&c) } else { c }).collect()
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|f| f.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// Writes `image` to `path` in the format of its extension, atomically, as a synth output.
fn write_image(outputs: &mut Outputs, path: &Path, image: &RgbImage, extension: &str) -> Result<()> {
    let format = match extension {
        "tif" => ImageFormat::Tiff,
        "jpg" => ImageFormat::Jpeg,
        _ => ImageFormat::Png,
    };
    outputs.write_with(path, |file| {
        let mut writer = std::io::BufWriter::new(file);
        image.write_to(&mut writer, format)?;
        Ok(())
    })
}

/// Writes a complete precomp dataset to `out`: `train_*` (one file name per image) and
/// `test_*` (one file name per caption, like RSITMD's test split; a fifth of the images), keywords,
/// and `images/`. Only files an earlier `synth` wrote into `out` (its manifest) are replaced or
/// removed; a non-empty folder without them is refused unless `force`.
pub fn write_dataset(out: &Path, config: SynthConfig, force: bool) -> Result<SynthSummary> {
    if !(10..=1_000_000).contains(&config.images) {
        bail!("--images {}: give 10 (one per class) to 1000000 images", config.images);
    }
    if !(32..=1024).contains(&config.size) {
        bail!("--size {}: expected 32..=1024 pixels", config.size);
    }
    let mut outputs = Outputs::new(out, "synth", force)?;
    if !force && !outputs.has_outputs() {
        if let Some(first) = first_entry(out)? {
            bail!(
                "{} is not empty ({first}) and holds no earlier output of amfmn synth; give --force to write into it \
                 (amfmn then replaces files of the same names) or choose an empty folder",
                out.display()
            );
        }
    }
    let image_dir = out.join("images");
    for path in planned_paths(out, config) {
        outputs.check(&path)?;
    }
    std::fs::create_dir_all(&image_dir).with_context(|| format!("cannot create {}", image_dir.display()))?;
    let mut summary = SynthSummary::default();
    let mut text: [SplitText; 2] = Default::default();
    let progress = crate::report::progress(config.images as u64, "synthesising images");
    let mut written = HashSet::new();
    for i in 0..config.images {
        written.insert(write_scene(&mut outputs, &image_dir, config, i, &mut text, &mut summary)?);
        progress.inc(1);
    }
    progress.finish_and_clear();
    for (split, files) in ["train", "test"].iter().zip(&text) {
        for (kind, content) in
            [("caps", &files.captions), ("filename", &files.file_names), ("keywords", &files.keywords)]
        {
            let path = out.join(format!("{split}_{kind}.txt"));
            outputs.write(&path, content.as_bytes())?;
            written.insert(path);
        }
    }
    let stale = outputs.remove_stale(&written)?;
    if let Some(warning) = stale.kept_warning() {
        crate::report::warn(warning);
    }
    outputs.finish()?;
    Ok(summary)
}

const SPLITS: [&str; 2] = ["train", "test"];
const TEXT_KINDS: [&str; 3] = ["caps", "filename", "keywords"];

/// `<out>/<split>_<kind>.txt`.
fn text_path(out: &Path, split: &str, kind: &str) -> PathBuf {
    out.join(format!("{split}_{kind}.txt"))
}

/// The file name of image `i`.
fn image_name(config: SynthConfig, i: usize) -> String {
    format!("{}_{i}.{}", CLASSES[i % CLASSES.len()].name, config.format.extension(i))
}

/// Every file a run writes, checked before the first is written.
fn planned_paths(out: &Path, config: SynthConfig) -> Vec<PathBuf> {
    let images = (0..config.images).map(|i| out.join("images").join(image_name(config, i)));
    let texts = SPLITS.iter().flat_map(|split| TEXT_KINDS.map(|kind| text_path(out, split, kind)));
    images.chain(texts).collect()
}

/// The name of some entry of `dir` other than amfmn's manifest, if `dir` exists and has one.
fn first_entry(dir: &Path) -> Result<Option<String>> {
    let names =
        entries_if_present(dir)?.into_iter().filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    Ok(names.into_iter().find(|name| name != MANIFEST))
}

/// Samples, draws and describes image `i`; writes the image and adds its lines to its split's
/// text. Returns the image's path.
fn write_scene(
    outputs: &mut Outputs,
    image_dir: &Path,
    config: SynthConfig,
    i: usize,
    text: &mut [SplitText; 2],
    summary: &mut SynthSummary,
) -> Result<PathBuf> {
    let mut rng = rng::stream(config.seed, &[rng::tag::SYNTH, i as u64]);
    let class = &CLASSES[i % CLASSES.len()];
    let scene = (class.sample)(&mut rng);
    let image = scene.render(config.size, &mut rng);
    let extension = config.format.extension(i);
    let name = image_name(config, i);
    let path = image_dir.join(&name);
    write_image(outputs, &path, &image, extension)?;
    let caps = captions(scene.as_ref(), &mut rng);
    let mut keywords = scene.keywords();
    keywords.truncate(MAX_KEYWORDS);
    // Two images of each block of ten go to the test split, a different pair of classes in
    // each block, so every class is in both splits.
    let split = usize::from(i % 5 == (i / CLASSES.len()) % 5);
    let files = &mut text[split];
    for c in &caps {
        files.captions.push_str(c);
        files.captions.push('\n');
        summary.caption_words += c.split_whitespace().count();
    }
    // The test split lists the file once per caption (like RSITMD's), the train split once.
    let listed = if split == 1 { caps.len() } else { 1 };
    files.file_names.push_str(&format!("{name}\n").repeat(listed));
    files.keywords.push_str(&keywords.join(","));
    files.keywords.push('\n');
    summary.per_class.entry(class.name).or_default()[split] += 1;
    *summary.per_format.entry(extension).or_default() += 1;
    summary.captions[split] += caps.len();
    summary.keywords += keywords.len();
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_five_distinct_captions_and_keywords() {
        for (class, entry) in CLASSES.iter().enumerate() {
            for seed in 0..20 {
                let mut rng = rng::stream(seed, &[class as u64]);
                let scene = (entry.sample)(&mut rng);
                let caps = captions(scene.as_ref(), &mut rng);
                let mut sorted = caps.clone();
                sorted.sort();
                sorted.dedup();
                assert_eq!(sorted.len(), 5, "{scene:?}");
                let k = scene.keywords();
                assert!((1..=5).contains(&k.len()), "{k:?}");
            }
        }
    }

    #[test]
    fn same_class_images_get_different_descriptions() {
        let mut rng = rng::stream(1, &[]);
        let sample = CLASSES[1].sample;
        let a = sample(&mut rng);
        let b =
            (0..10).map(|_| sample(&mut rng)).find(|s| format!("{s:?}") != format!("{a:?}")).expect("attributes vary");
        let mut r = rng::stream(2, &[]);
        assert_ne!(a.sentences(&mut r), b.sentences(&mut r));
    }
}
