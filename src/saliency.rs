//! MVSA's spatial saliency (docs/LOCALISATION.md, Which tensor is the mask): the gate `A = σ(conv1x1_2(J))` (or the attended
//! `main ⊙ A`) on its (S/16)² grid, scaled to 8 bits and upsampled onto the original image,
//! whose whole area the evaluation transform squashes to S×S: cell (i, j) is centred at
//! `((j + 0.5)·W/w, (i + 0.5)·H/h)`.

use std::path::Path;

use anyhow::Result;
use image::{GrayImage, RgbImage};

use crate::data::transforms::resize_bilinear;
use crate::fsutil::owned::Outputs;
use crate::html;
use crate::locate::raster::Gray;
use crate::locate::render;

/// Which of MVSA's maps is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MapKind {
    /// The spatial gate A in (0, 1).
    Gate,
    /// `main ⊙ A`, signed.
    Attended,
}

/// How grid values become levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scale {
    /// `round(255·v)` (values in 0..1; comparable across images).
    Absolute,
    /// Per image, `(v − min)/(max − min)`.
    Minmax,
}

/// How the grid is brought to the image's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Upsample {
    /// Bilinear with half-pixel centres (align-corners off): cell centres where docs/LOCALISATION.md puts them.
    Bilinear,
    /// Each cell a block of pixels.
    Nearest,
}

/// One map of the grid: `height × width` values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    pub width: usize,
    pub height: usize,
    pub values: Vec<f32>,
}

impl Grid {
    /// The values in 0..1 by `scale` (absolute: clamped; min–max: a flat grid gives zeros).
    pub fn scaled(&self, scale: Scale) -> Grid {
        let values = match scale {
            Scale::Absolute => self.values.iter().map(|v| v.clamp(0.0, 1.0)).collect(),
            Scale::Minmax => {
                let (min, max) = self.values.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                let range = max - min;
                self.values.iter().map(|&v| if range > 0.0 { (v - min) / range } else { 0.0 }).collect()
            }
        };
        Grid { values, ..*self }
    }

    /// The grid brought to `width × height` pixels.
    pub fn upsample(&self, width: usize, height: usize, mode: Upsample) -> Vec<f32> {
        let axis = |out: usize, cells: usize| -> Vec<(usize, usize, f32)> {
            (0..out)
                .map(|p| match mode {
                    Upsample::Nearest => {
                        let cell = (p * cells / out).min(cells - 1);
                        (cell, cell, 0.0)
                    }
                    Upsample::Bilinear => {
                        let source = ((p as f64 + 0.5) * cells as f64 / out as f64 - 0.5).max(0.0);
                        let first = (source.floor() as usize).min(cells - 1);
                        (first, (first + 1).min(cells - 1), (source - first as f64) as f32)
                    }
                })
                .collect()
        };
        let (columns, rows) = (axis(width, self.width), axis(height, self.height));
        let at = |r: usize, c: usize| self.values[r * self.width + c];
        let mut out = Vec::with_capacity(width * height);
        for &(r0, r1, fy) in &rows {
            for &(c0, c1, fx) in &columns {
                let top = at(r0, c0) * (1.0 - fx) + at(r0, c1) * fx;
                let bottom = at(r1, c0) * (1.0 - fx) + at(r1, c1) * fx;
                out.push(top * (1.0 - fy) + bottom * fy);
            }
        }
        out
    }
}

/// `round(255·v)` per value in 0..1.
pub fn levels(values: &[f32]) -> Vec<u8> {
    values.iter().map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8).collect()
}

/// What `--json` reports of a gate.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GateSummary {
    pub min: f32,
    pub max: f32,
    pub mean: f32,
    /// The cell of the largest value, `[row, column]` (the first in raster order).
    pub argmax: [usize; 2],
    /// The fraction of cells above 0.5.
    pub above_half: f64,
}

/// The summary of a grid.
pub fn summary(grid: &Grid) -> GateSummary {
    let values = &grid.values;
    let best = (0..values.len()).fold(0, |b, i| if values[i] > values[b] { i } else { b });
    GateSummary {
        min: values.iter().copied().fold(f32::MAX, f32::min),
        max: values[best],
        mean: values.iter().sum::<f32>() / values.len() as f32,
        argmax: [best / grid.width, best % grid.width],
        above_half: values.iter().filter(|&&v| v > 0.5).count() as f64 / values.len() as f64,
    }
}

/// The gray mask of a grid on a `width × height` image, and the image with the mask's JET
/// colours laid over it with weight `alpha`.
pub fn pictures(grid: &Grid, image: &RgbImage, scale: Scale, mode: Upsample, alpha: f64) -> (GrayImage, RgbImage) {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let pixels = levels(&grid.scaled(scale).upsample(width, height, mode));
    let mask = Gray { width, height, pixels };
    let overlay = render::overlay(image.clone(), &mask, alpha);
    let gray = GrayImage::from_raw(width as u32, height as u32, mask.pixels).expect("one level per pixel");
    (gray, overlay)
}

/// Side of the pictures on the HTML page, in pixels.
pub const PAGE_SIDE: u32 = 256;

/// One image on the HTML page.
pub struct PageEntry<'a> {
    pub name: &'a str,
    pub image: &'a RgbImage,
    pub overlay: &'a RgbImage,
    /// The grid as drawn (scaled to 0..1).
    pub grid: &'a Grid,
}

fn data_uri(image: &RgbImage) -> Result<String> {
    html::png_data_uri(&resize_bilinear(image, PAGE_SIDE, PAGE_SIDE))
}

/// The grid as a table of cells coloured by JET, each with its value.
fn grid_table(grid: &Grid) -> String {
    let cell = PAGE_SIDE as usize / grid.width.max(grid.height);
    let mut rows = String::new();
    for r in 0..grid.height {
        rows.push_str("<tr>");
        for c in 0..grid.width {
            let v = grid.values[r * grid.width + c];
            let [red, green, blue] = render::jet(levels(&[v])[0]);
            rows.push_str(&format!(
                "<td style=\"background:rgb({red},{green},{blue});width:{cell}px;height:{cell}px\" title=\"{v:.3}\"></td>"
            ));
        }
        rows.push_str("</tr>");
    }
    format!("<table>{rows}</table>")
}

/// Writes a self-contained page: per image, the original, the overlay and the grid.
pub fn write_page(outputs: &mut Outputs, path: &Path, title: &str, entries: &[PageEntry]) -> Result<()> {
    let mut rows = String::new();
    for entry in entries {
        rows.push_str(&format!(
            "<section><h2>{}</h2><img src=\"{}\" alt=\"image\"><img src=\"{}\" alt=\"overlay\">{}</section>\n",
            html::escape(entry.name),
            data_uri(entry.image)?,
            data_uri(entry.overlay)?,
            grid_table(entry.grid)
        ));
    }
    let side = PAGE_SIDE;
    let style = format!(
        "section {{ display: grid; grid-template-columns: repeat(3, {side}px); column-gap: 16px; margin-bottom: 16px; }}
h2 {{ grid-column: 1 / 4; font-size: 13px; margin: 0 0 4px 0; height: 16px; overflow: hidden; }}
img {{ display: block; width: {side}px; height: {side}px; }}
table {{ border-collapse: collapse; border-spacing: 0; }}
td {{ padding: 0; }}
"
    );
    let page = html::page(title, &style, &rows);
    outputs.write(path, page.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_hot(row: usize, column: usize) -> Grid {
        let mut values = vec![0.0; 256];
        values[row * 16 + column] = 1.0;
        Grid { width: 16, height: 16, values }
    }

    #[test]
    fn a_one_hot_cell_peaks_at_its_centre_on_the_image() {
        for (row, column) in [(1, 1), (5, 11), (14, 3)] {
            let up = one_hot(row, column).upsample(300, 200, Upsample::Bilinear);
            let best = (0..up.len()).fold(0, |b, i| if up[i] > up[b] { i } else { b });
            let (x, y) = ((best % 300) as f64, (best / 300) as f64);
            // Cell centres at ((j + 0.5)·300/16, (i + 0.5)·200/16) in continuous coordinates,
            // i.e. pixel centre (j + 0.5)·18.75 − 0.5.
            let (cx, cy) = ((column as f64 + 0.5) * 300.0 / 16.0 - 0.5, (row as f64 + 0.5) * 200.0 / 16.0 - 0.5);
            assert!(
                (x - cx).abs() <= 0.5 && (y - cy).abs() <= 0.5,
                "cell ({row}, {column}): peak ({x}, {y}), centre ({cx}, {cy})"
            );
        }
    }

    #[test]
    fn nearest_upsampling_gives_exact_blocks() {
        let up = one_hot(5, 11).upsample(300, 200, Upsample::Nearest);
        // Column 11 covers x with ⌊16x/300⌋ = 11: 207..=224; row 5 covers ⌊16y/200⌋ = 5: 63..=74.
        let lit: Vec<(usize, usize)> = (0..up.len()).filter(|&i| up[i] == 1.0).map(|i| (i % 300, i / 300)).collect();
        assert_eq!(lit.len(), 18 * 12);
        assert_eq!((lit[0], lit[lit.len() - 1]), ((207, 63), (224, 74)));
    }

    #[test]
    fn scales_and_summary() {
        let grid = Grid { width: 2, height: 2, values: vec![0.25, 0.75, -0.5, 0.5] };
        assert_eq!(grid.scaled(Scale::Absolute).values, [0.25, 0.75, 0.0, 0.5]);
        assert_eq!(grid.scaled(Scale::Minmax).values, [0.6, 1.0, 0.0, 0.8]);
        assert_eq!(levels(&[0.0, 0.5, 1.0, 0.2]), [0, 128, 255, 51]);
        let flat = Grid { width: 1, height: 2, values: vec![0.3, 0.3] };
        assert_eq!(flat.scaled(Scale::Minmax).values, [0.0, 0.0]);
        let s = summary(&grid);
        assert_eq!((s.min, s.max, s.mean, s.argmax, s.above_half), (-0.5, 0.75, 0.25, [0, 1], 0.25));
    }
}
