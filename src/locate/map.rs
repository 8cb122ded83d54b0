//! A scene's probability map, as `locate` and `selo` make it: the crops of the scene (counted
//! before they are listed), each crop's score for the query, the per-pixel mean on the
//! compressed grid of crop edges, min–max to u8, and a filter.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};

use super::crops::CropResize;
use super::heat::{crop_count, crops, gaussian_filter, median_filter, MeanMap, Rect, MAX_MEDIAN};
use super::raster::Gray;
use crate::data::image_file::image_dimensions;
use crate::search::{Query, Searcher};

/// The widest Gaussian window: its cost grows with its side, and wider windows only flatten the
/// map further (SeLo v2 uses 255).
pub const MAX_GAUSSIAN: usize = 1023;

/// The most crops a scene is cut into (SeLo's steps cut a 4096² scene into 698; a 20000²
/// scene into about 17,000): each is encoded by the network, so the count bounds the work.
pub const MAX_CROPS: u64 = 100_000;

/// How a crop is scored against the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScoreKind {
    /// The model's own score: cos(Fv, g ⊙ t) for soft attention, any attention and fusion.
    Vga,
    /// cos(Fv, t), as SLM's released model computes it.
    Plain,
}

/// The filter of the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Median(usize),
    Gaussian(usize),
    None,
}

impl Filter {
    /// `median:251`, `gaussian:255` or `none` (odd window sides; the median up to
    /// [`MAX_MEDIAN`], the Gaussian up to [`MAX_GAUSSIAN`]).
    pub fn parse(text: &str) -> std::result::Result<Filter, String> {
        let expected = || format!("expected median:SIZE, gaussian:SIZE (an odd side) or none, not {text:?}");
        if text == "none" {
            return Ok(Filter::None);
        }
        let (kind, size) = text.split_once(':').ok_or_else(expected)?;
        let size: usize = size.parse().map_err(|_| expected())?;
        if size.is_multiple_of(2) {
            return Err(expected());
        }
        let (filter, largest) = match kind {
            "median" => (Filter::Median(size), MAX_MEDIAN),
            "gaussian" => (Filter::Gaussian(size), MAX_GAUSSIAN),
            _ => return Err(expected()),
        };
        if size > largest {
            return Err(format!("{text}: the {kind} window is at most {largest} pixels wide"));
        }
        Ok(filter)
    }

    fn apply(self, map: Gray) -> Gray {
        match self {
            Filter::Median(size) => median_filter(&map, size),
            Filter::Gaussian(size) => gaussian_filter(&map, size),
            Filter::None => map,
        }
    }
}

/// How a scene's map is made.
#[derive(Debug, Clone)]
pub struct MapSettings {
    /// Crop sides, each cut on two grids (SeLo's 256, 512, 768).
    pub steps: Vec<usize>,
    /// How crops are resized to the network's input.
    pub crop_resize: CropResize,
    pub score: ScoreKind,
    pub filter: Filter,
    /// Scenes of more pixels are refused from their header.
    pub max_pixels: u64,
    /// Crops encoded at a time.
    pub batch_size: usize,
}

impl MapSettings {
    /// Whether the model needs only its encoders (a plain cosine score: SLM's reduced AMFMN
    /// has no attention or fusion weights).
    pub fn encoders_only(&self) -> bool {
        self.score == ScoreKind::Plain
    }

    /// The crops of a scene, from its header (checked against `max_pixels` and counted against
    /// [`MAX_CROPS`] before anything is decoded or listed).
    pub fn scene_crops(&self, path: &Path) -> Result<Vec<Rect>> {
        let (width, height) = image_dimensions(path)?;
        let pixels = width as u64 * height as u64;
        if pixels > self.max_pixels {
            bail!(
                "{}: {width}x{height} is {pixels} pixels, more than --max-pixels {} (raise it if the memory allows: \
                 about 9 bytes a pixel)",
                path.display(),
                self.max_pixels
            );
        }
        let count = crop_count(height as usize, width as usize, &self.steps);
        if count > MAX_CROPS {
            bail!(
                "--steps {:?} cut the {width}x{height} scene {} into {count} crops, more than {MAX_CROPS}: give larger steps",
                self.steps,
                path.display()
            );
        }
        let rects = crops(height as usize, width as usize, &self.steps);
        if rects.is_empty() {
            bail!("no crop of --steps {:?} fits in the {width}x{height} scene {}", self.steps, path.display());
        }
        Ok(rects)
    }

    /// The score of every crop the searcher holds for `query`, `[N]` on the CPU.
    pub fn scores(&self, searcher: &Searcher, query: &Query) -> Result<tch::Tensor> {
        match self.score {
            ScoreKind::Vga => searcher.scores(query),
            ScoreKind::Plain => searcher.plain_scores(query),
        }
    }

    /// The filtered probability map of a `height × width` scene whose crops `rects` scored
    /// `scores` (a flat map, all zero, is warned about), with the seconds taken to build it
    /// (SLM's "Gnt") and to filter it ("Flt").
    pub fn probability_map(&self, height: usize, width: usize, rects: &[Rect], scores: &[f32]) -> (Gray, [f64; 2]) {
        let start = Instant::now();
        let values: Vec<f64> = scores.iter().map(|&v| f64::from(v)).collect();
        if values.iter().all(|&v| v == values[0]) {
            crate::report::warn("every crop has the same score: the map is flat (all zero)");
        }
        let raw = MeanMap::new(height, width, rects, &values).to_u8();
        let built = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let map = self.filter.apply(raw);
        (map, [built, start.elapsed().as_secs_f64()])
    }
}
