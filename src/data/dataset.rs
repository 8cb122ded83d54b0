//! A split in memory, ready for the loader: encoded captions grouped by image, image paths.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::image_file::confined_path;
use super::precomp::PrecompSplit;
use crate::options::Options;
use crate::text::Vocabulary;

/// Encoded captions of a set of images; caption `k` belongs to image `k / captions_per_image`.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptionSet {
    /// Image file names as listed in the split (recorded in fold files and reports).
    pub image_names: Vec<String>,
    /// Full paths of the images.
    pub image_paths: Vec<PathBuf>,
    /// Token ids per caption (empty for a blank caption, see [`super::loader::pad_captions`]).
    pub captions: Vec<Vec<i64>>,
    /// The caption lines themselves (for the dynamic margin's prior similarity).
    pub texts: Vec<String>,
    /// Token ids of each image's keywords (joined by `, `), when the split has keywords.
    pub keywords: Option<Vec<Vec<i64>>>,
    pub captions_per_image: usize,
}

impl CaptionSet {
    /// Encodes `split` with `vocab`; image names are resolved under `image_path`.
    pub fn new(split: &PrecompSplit, image_path: &Path, vocab: &Vocabulary) -> CaptionSet {
        CaptionSet {
            image_names: split.images.clone(),
            image_paths: split.image_paths(image_path),
            captions: split.captions.iter().map(|c| vocab.encode(c)).collect(),
            texts: split.captions.clone(),
            keywords: split.keywords.as_ref().map(|k| k.iter().map(|words| vocab.encode(&words.join(", "))).collect()),
            captions_per_image: split.captions_per_image,
        }
    }

    /// Reads split `name` of the dataset of `options` (warning about blank captions), encodes
    /// it with `vocab`, and checks that every image exists.
    pub fn load(options: &Options, name: &str, vocab: &Vocabulary) -> Result<(CaptionSet, PrecompSplit)> {
        let dataset = &options.dataset;
        let split = PrecompSplit::read(&dataset.data_path, name, dataset.captions_per_image)?;
        if let Some(warning) = split.blank_caption_warning(&dataset.data_path.join(format!("{name}_caps.txt"))) {
            crate::report::warn(warning);
        }
        for image in &split.images {
            confined_path(&dataset.image_path, image).map_err(|e| {
                anyhow::anyhow!("{}: {e}", dataset.data_path.join(format!("{name}_filename.txt")).display())
            })?;
        }
        let set = CaptionSet::new(&split, &dataset.image_path, vocab);
        let missing = set.missing_images();
        if let Some(first) = missing.first() {
            bail!(
                "{} of {} images of the {name} split are missing, first {}; put the images under dataset.image_path ({})",
                missing.len(),
                set.num_images(),
                first.display(),
                dataset.image_path.display()
            );
        }
        Ok((set, split))
    }

    pub fn num_images(&self) -> usize {
        self.image_paths.len()
    }

    pub fn num_captions(&self) -> usize {
        self.captions.len()
    }

    /// The image of caption `k`.
    pub fn image_of_caption(&self, k: usize) -> usize {
        k / self.captions_per_image
    }

    /// The images `images` (in that order) with their captions.
    pub fn subset(&self, images: &[usize]) -> CaptionSet {
        let per = self.captions_per_image;
        CaptionSet {
            image_names: images.iter().map(|&i| self.image_names[i].clone()).collect(),
            image_paths: images.iter().map(|&i| self.image_paths[i].clone()).collect(),
            captions: images.iter().flat_map(|&i| self.captions[i * per..(i + 1) * per].iter().cloned()).collect(),
            texts: images.iter().flat_map(|&i| self.texts[i * per..(i + 1) * per].iter().cloned()).collect(),
            keywords: self.keywords.as_ref().map(|k| images.iter().map(|&i| k[i].clone()).collect()),
            captions_per_image: per,
        }
    }

    /// Paths of images that do not exist, in order.
    pub fn missing_images(&self) -> Vec<&Path> {
        self.image_paths.iter().filter(|p| !p.is_file()).map(PathBuf::as_path).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_keeps_captions_with_their_images() {
        let split = PrecompSplit {
            captions: vec!["a".into(), "b".into(), "c".into(), "d".into(), "e".into(), "f".into()],
            images: vec!["x.png".into(), "y.png".into(), "z.png".into()],
            keywords: Some(vec![vec!["a".into(), "f".into()], vec!["c".into()], vec!["zzz".into()]]),
            captions_per_image: 2,
            blank_caption_lines: vec![],
        };
        let vocab = Vocabulary::from_words(["a", "b", "c", "d", "e", "f", "<unk>"].map(String::from).to_vec()).unwrap();
        let set = CaptionSet::new(&split, Path::new("/img"), &vocab);
        let sub = set.subset(&[2, 0]);
        assert_eq!(sub.image_names, ["z.png", "x.png"]);
        assert_eq!(sub.image_paths[0], Path::new("/img/z.png"));
        assert_eq!(sub.captions, [vec![5], vec![6], vec![1], vec![2]]);
        assert_eq!(sub.texts, ["e", "f", "a", "b"]);
        assert_eq!(sub.keywords, Some(vec![vec![7], vec![1, 6]]), "keywords follow their image, unknown ones as <unk>");
        assert_eq!(sub.image_of_caption(3), 1);
        assert_eq!(sub.missing_images().len(), 2);
    }
}
