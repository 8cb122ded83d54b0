//! The SeLo benchmark's annotation file (docs/LOCALISATION.md, Annotation format): a JSON array of
//! `{"caption", "jpg_name", "points"}`, one per test case in evaluation order, `points` a list of
//! polygons of `[x, y]` vertices in scene pixels. The probability map of case `i` is
//! `probmap_{i}.png` (or `.jpg`).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use image::{ColorType, DynamicImage, ImageDecoder, RgbImage};
use serde::Deserialize;

use super::raster::Gray;
use super::selo::Region;
use crate::data::image_file::{check_pixels, decode_rgb};
use crate::fsutil::one_line;

/// The most cases a file may hold (the benchmark has 59).
const MAX_CASES: usize = 100_000;

/// The largest vertex coordinate accepted, in pixels (scenes are far smaller; a polygon is
/// rasterised edge by edge, so its coordinates bound the work).
pub const MAX_COORDINATE: f64 = (1 << 20) as f64;

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
    let text =
        crate::fsutil::read_to_string(path).with_context(|| format!("cannot read annotations {}", path.display()))?;
    let deserializer = &mut serde_json::Deserializer::from_str(&text);
    let cases: Vec<Case> = serde_path_to_error::deserialize(&mut *deserializer)
        .map_err(|e| anyhow!("{}: {}: {}", path.display(), e.path(), e.inner()))?;
    deserializer.end().map_err(|e| anyhow!("{}: more after the array of cases: {e}", path.display()))?;
    if cases.len() > MAX_CASES {
        bail!("{}: {} cases, more than {MAX_CASES}", path.display(), cases.len());
    }
    for (i, case) in cases.iter().enumerate() {
        if case.points.is_empty() {
            bail!("{}: [{i}].points is empty; a case needs at least one region", path.display());
        }
        for (k, polygon) in case.points.iter().enumerate() {
            check_polygon(polygon).map_err(|e| anyhow!("{}: [{i}].points[{k}] {e}", path.display()))?;
        }
    }
    Ok(cases)
}

/// Why a polygon cannot be a region, if it cannot: fewer than 3 vertices, a vertex that is not
/// a finite number or lies beyond ±[`MAX_COORDINATE`], or vertices that all coincide (a circle of
/// radius 0, whose Ras is 0/0 in SLM).
pub fn check_polygon(polygon: &[[f64; 2]]) -> Result<()> {
    if polygon.len() < 3 {
        bail!("has {} vertices; a region needs at least 3", polygon.len());
    }
    if let Some(v) = polygon.iter().find(|v| v.iter().any(|c| !c.is_finite() || c.abs() > MAX_COORDINATE)) {
        bail!("has a vertex at {v:?}, not a number within ±{MAX_COORDINATE} pixels");
    }
    if Region::of(polygon).radius == 0 {
        bail!("has all its vertices within a pixel of their centre: a region of radius 0 has nothing to locate");
    }
    Ok(())
}

/// The probability map of case `index` in `dir`: `probmap_{index}.png`, else `.jpg`.
pub fn map_path(dir: &Path, index: usize) -> Option<PathBuf> {
    ["png", "jpg"].iter().map(|ext| dir.join(format!("probmap_{index}.{ext}"))).find(|p| p.is_file())
}

/// Reads a probability map of at most `max_pixels` pixels as grayscale, as SLM reads it (OpenCV's
/// `IMREAD_GRAYSCALE`: a 16-bit map keeps the high byte of each value); a colour image whose
/// channels differ (a JET overlay, not a probability map) is refused.
pub fn read_map(path: &Path, max_pixels: u64) -> Result<Gray> {
    let bytes = crate::fsutil::read(path).with_context(|| format!("cannot read probability map {}", path.display()))?;
    let rgb = decode_map(&bytes, max_pixels)
        .map_err(|e| anyhow!("cannot decode probability map {}: {}", path.display(), one_line(&format!("{e:#}"))))?;
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

/// An 8-bit RGB picture of a map: 16-bit samples reduced to their high byte (libpng's
/// `strip_16`, which OpenCV applies when it reads a 16-bit PNG as 8 bits), anything else decoded
/// as every image is.
fn decode_map(bytes: &[u8], max_pixels: u64) -> Result<RgbImage> {
    let decoder = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format()?.into_decoder()?;
    if !matches!(decoder.color_type(), ColorType::L16 | ColorType::La16 | ColorType::Rgb16 | ColorType::Rgba16) {
        return decode_rgb(bytes, max_pixels);
    }
    let (width, height) = decoder.dimensions();
    check_pixels(width as u64, height as u64, max_pixels)?;
    let deep = DynamicImage::from_decoder(decoder)?.into_rgb16();
    let high: Vec<u8> = deep.into_raw().into_iter().map(|v| (v >> 8) as u8).collect();
    RgbImage::from_raw(width, height, high).context("the decoded map has another size than its header")
}

/// Whether a polygon leaves a `width × height` map.
pub fn leaves_map(polygon: &[[f64; 2]], width: usize, height: usize) -> bool {
    polygon.iter().any(|v| v[0] < 0.0 || v[1] < 0.0 || v[0] >= width as f64 || v[1] >= height as f64)
}
