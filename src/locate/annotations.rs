//! The SeLo benchmark's annotation file (LOCATE.md §1.4): a JSON array of
//! `{"caption", "jpg_name", "points"}`, one per test case in evaluation order, `points` a list of
//! polygons of `[x, y]` vertices in scene pixels. The probability map of case `i` is
//! `probmap_{i}.png` (or `.jpg`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::raster::Gray;

/// The most cases a file may hold (the benchmark has 59).
const MAX_CASES: usize = 100_000;

/// One test case: the query, the scene and the annotated regions.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub caption: String,
    pub jpg_name: String,
    /// Polygons of `[x, y]` vertices.
    pub points: Vec<Vec<[f64; 2]>>,
}

/// Reads an annotation file; a malformed field names its JSON path.
pub fn read(path: &Path) -> Result<Vec<Case>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read annotations {}", path.display()))?;
    let deserializer = &mut serde_json::Deserializer::from_str(&text);
    let cases: Vec<Case> = serde_path_to_error::deserialize(deserializer)
        .map_err(|e| anyhow::anyhow!("{}: {}: {}", path.display(), e.path(), e.inner()))?;
    if cases.len() > MAX_CASES {
        bail!("{}: {} cases, more than {MAX_CASES}", path.display(), cases.len());
    }
    for (i, case) in cases.iter().enumerate() {
        if let Some((k, polygon)) = case.points.iter().enumerate().find(|(_, p)| p.len() < 3) {
            bail!("{}: [{i}].points[{k}] has {} vertices; a region needs at least 3", path.display(), polygon.len());
        }
        if let Some(k) = case.points.iter().position(|p| p.iter().flatten().any(|v| !v.is_finite())) {
            bail!("{}: [{i}].points[{k}] has a vertex that is not a finite number", path.display());
        }
        if case.points.is_empty() {
            bail!("{}: [{i}].points is empty; a case needs at least one region", path.display());
        }
    }
    Ok(cases)
}

/// The probability map of case `index` in `dir`: `probmap_{index}.png`, else `.jpg`.
pub fn map_path(dir: &Path, index: usize) -> Option<PathBuf> {
    ["png", "jpg"].iter().map(|ext| dir.join(format!("probmap_{index}.{ext}"))).find(|p| p.is_file())
}

/// Reads a probability map as grayscale; a colour image whose channels differ (a JET overlay,
/// not a probability map) is refused.
pub fn read_map(path: &Path) -> Result<Gray> {
    let rgb = crate::data::image_file::load_rgb(path)?;
    if let Some(p) = rgb.pixels().find(|p| p[0] != p[1] || p[1] != p[2]) {
        bail!(
            "{} is a colour image (a pixel is {:?}): give the grayscale probability map, not a colour overlay",
            path.display(),
            p.0
        );
    }
    let (width, height) = rgb.dimensions();
    Ok(Gray { width: width as usize, height: height as usize, pixels: rgb.pixels().map(|p| p[0]).collect() })
}

/// Whether a polygon leaves a `width × height` map.
pub fn leaves_map(polygon: &[[f64; 2]], width: usize, height: usize) -> bool {
    polygon.iter().any(|v| v[0] < 0.0 || v[1] < 0.0 || v[0] >= width as f64 || v[1] >= height as f64)
}
