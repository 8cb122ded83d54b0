//! The pictures of a probability map: the JET colour map and its overlay on the scene, and
//! pictures written as PNG outputs.

use std::path::Path;

use anyhow::{Context, Result};
use image::{ImageFormat, RgbImage};

use super::raster::Gray;
use crate::fsutil::owned::Outputs;

/// The PNG file of `picture`.
pub fn png_bytes(picture: &image::DynamicImage, path: &Path) -> Result<Vec<u8>> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    picture.write_to(&mut bytes, ImageFormat::Png).with_context(|| format!("cannot encode {}", path.display()))?;
    Ok(bytes.into_inner())
}

/// Writes `picture` to `path` as PNG, as an output of `outputs`.
pub fn write_png(outputs: &mut Outputs, path: &Path, picture: image::DynamicImage) -> Result<()> {
    outputs.write(path, &png_bytes(&picture, path)?)
}

/// The JET colour of a level: the classic piecewise-linear jet (within one level per channel
/// of OpenCV's `COLORMAP_JET`), RGB.
pub fn jet(level: u8) -> [u8; 3] {
    let x = level as f64 / 255.0;
    let channel = |centre: f64| ((1.5 - (4.0 * x - centre).abs()).clamp(0.0, 1.0) * 255.0).round() as u8;
    [channel(3.0), channel(2.0), channel(1.0)]
}

/// The JET picture of a map.
pub fn jet_image(map: &Gray) -> RgbImage {
    RgbImage::from_fn(map.width as u32, map.height as u32, |x, y| image::Rgb(jet(map.at(x as usize, y as usize))))
}

/// `(1 − alpha)·scene + alpha·JET(map)` per channel, rounded half to even and saturated, as
/// OpenCV's `addWeighted` of the scene and the map's JET picture; in place, so a 10k² scene is
/// held once.
pub fn overlay(mut scene: RgbImage, map: &Gray, alpha: f64) -> RgbImage {
    let table: Vec<[u8; 3]> = (0..=255).map(jet).collect();
    for (pixel, &level) in scene.pixels_mut().zip(&map.pixels) {
        for (o, &c) in pixel.0.iter_mut().zip(&table[level as usize]) {
            *o = ((1.0 - alpha) * *o as f64 + alpha * c as f64).round_ties_even().clamp(0.0, 255.0) as u8;
        }
    }
    scene
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jet_is_within_one_level_of_opencvs_table() {
        let opencv = [
            (0, [0, 0, 128]),
            (32, [0, 0, 255]),
            (64, [0, 128, 255]),
            (96, [2, 255, 254]),
            (128, [130, 255, 126]),
            (160, [255, 252, 0]),
            (192, [255, 124, 0]),
            (224, [252, 0, 0]),
            (255, [128, 0, 0]),
        ];
        for (level, want) in opencv {
            let got = jet(level);
            assert!(got.iter().zip(want).all(|(&g, w)| (g as i32 - w).abs() <= 1), "{level}: {got:?} vs {want:?}");
        }
        // Level 96 is JET (1, 255, 254) here: 0.7·(100, 0, 255) + 0.3·that = (70.3, 76.5, 254.7).
        assert_eq!(jet(96), [1, 255, 254]);
        let scene = RgbImage::from_pixel(1, 1, image::Rgb([100, 0, 255]));
        let map = Gray { width: 1, height: 1, pixels: vec![96] };
        assert_eq!(overlay(scene, &map, 0.3).get_pixel(0, 0).0, [70, 76, 255], "76.5 rounds to even");
    }
}
