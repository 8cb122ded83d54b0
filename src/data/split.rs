//! The fold protocol (docs/ARCHITECTURE.md, Data): for fold k, a seeded shuffle of the training images, the first
//! 80% train and the rest validation; captions follow their image. The split lives in memory
//! and is recorded in the run folder; the data folder is never written.

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;
use crate::rng;

/// Fraction of the images a fold trains on (the original's `percent = 0.8`).
pub const TRAIN_FRACTION: f64 = 0.8;

/// Image indices of one fold's train and validation parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldSplit {
    pub seed: u64,
    pub fold: usize,
    pub train: Vec<usize>,
    pub val: Vec<usize>,
}

/// What is written to `<fold folder>/split.json`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct SplitRecord {
    pub seed: u64,
    pub fold: usize,
    pub train_fraction: f64,
    pub train: Vec<String>,
    pub val: Vec<String>,
}

impl FoldSplit {
    /// How many of `num_images` images a fold trains on (the rest validate).
    pub fn train_size(num_images: usize) -> usize {
        (num_images as f64 * TRAIN_FRACTION) as usize
    }

    /// Refuses a split that would leave a fold without training or without validation images
    /// (whose validation recall would mean nothing).
    pub fn check(num_images: usize, split_file: &Path) -> Result<()> {
        let train = FoldSplit::train_size(num_images);
        if train == 0 || train == num_images {
            anyhow::bail!(
                "{} lists {num_images} image(s): a fold trains on 80 % and validates on the rest, so it needs at \
                 least 2 images to have both; add images",
                split_file.display()
            );
        }
        Ok(())
    }

    /// Splits `num_images` images for fold `fold` of a run seeded with `seed`.
    pub fn new(num_images: usize, seed: u64, fold: usize) -> FoldSplit {
        let mut order: Vec<usize> = (0..num_images).collect();
        rng::shuffle(&mut rng::stream(seed, &[rng::tag::FOLD, fold as u64]), &mut order);
        let val = order.split_off(FoldSplit::train_size(num_images));
        FoldSplit { seed, fold, train: order, val }
    }

    /// The record of this split with image names.
    pub fn record(&self, image_names: &[String]) -> SplitRecord {
        let names = |ids: &[usize]| ids.iter().map(|&i| image_names[i].clone()).collect();
        SplitRecord {
            seed: self.seed,
            fold: self.fold,
            train_fraction: TRAIN_FRACTION,
            train: names(&self.train),
            val: names(&self.val),
        }
    }

    /// Writes the record as JSON to `path` (atomically).
    pub fn save(&self, path: &Path, image_names: &[String]) -> Result<()> {
        let json = serde_json::to_string_pretty(&self.record(image_names))?;
        write_atomic(path, json.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_a_seeded_80_20_partition() {
        let s = FoldSplit::new(103, 42, 0);
        assert_eq!((s.train.len(), s.val.len()), (82, 21));
        let mut all: Vec<usize> = s.train.iter().chain(&s.val).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..103).collect::<Vec<_>>());
        assert_eq!(s, FoldSplit::new(103, 42, 0));
        assert_ne!(s.train, FoldSplit::new(103, 42, 1).train);
        assert_ne!(s.train, FoldSplit::new(103, 43, 0).train);
    }

    #[test]
    fn record_round_trips_through_json() {
        let names: Vec<String> = (0..10).map(|i| format!("img_{i}.tif")).collect();
        let s = FoldSplit::new(10, 7, 2);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fold/split.json");
        s.save(&path, &names).unwrap();
        let back: SplitRecord = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back, s.record(&names));
        assert_eq!((back.seed, back.fold, back.train.len(), back.val.len()), (7, 2, 8, 2));
        assert_eq!(back.train[0], names[s.train[0]]);
    }
}
