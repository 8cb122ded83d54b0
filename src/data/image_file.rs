//! Reading image files (TIFF, JPEG, PNG) as 8-bit RGB, like PIL's `Image.open(p).convert('RGB')`
//! for 8-bit images: gray is replicated, alpha dropped, palettes expanded. 16-bit images are
//! scaled to 8 bits (PIL would clip them at 255).

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};
use image::{DynamicImage, RgbImage};

/// Decodes the image file at `path` into RGB; errors name the file.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read image {}", path.display()))?;
    decode_rgb(&bytes).with_context(|| format!("cannot decode image {}", path.display()))
}

/// Decodes an in-memory image file into RGB.
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage> {
    let image = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format()?.decode()?;
    Ok(match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    })
}

/// Why a dataset file name may not be used: it must be a relative path without `..` that stays
/// inside the images folder (no symbolic link out of it). `images` is the folder, `name` the file
/// name as the dataset lists it. Returns the full path.
pub fn confined_path(images: &Path, name: &str) -> std::result::Result<PathBuf, String> {
    let relative = Path::new(name);
    let leaves = relative.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if name.is_empty() || leaves {
        return Err(format!("`{name}` is not a relative path inside the images folder (no `/` at the start, no `..`)"));
    }
    let path = images.join(relative);
    if let (Ok(real), Ok(root)) = (std::fs::canonicalize(&path), std::fs::canonicalize(images)) {
        if !real.starts_with(&root) {
            return Err(format!("`{name}` is a link to {}, outside the images folder", real.display()));
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageFormat, Luma, Rgba};

    fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut buf = std::io::Cursor::new(Vec::new());
        image.write_to(&mut buf, format).unwrap();
        buf.into_inner()
    }

    #[test]
    fn gray_rgba_and_16_bit_become_rgb() {
        let gray = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(3, 2, Luma([77])));
        let rgb = decode_rgb(&encode(&gray, ImageFormat::Png)).unwrap();
        assert_eq!((rgb.dimensions(), rgb.get_pixel(2, 1).0), ((3, 2), [77, 77, 77]));

        let rgba = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(2, 2, Rgba([10, 20, 30, 0])));
        assert_eq!(decode_rgb(&encode(&rgba, ImageFormat::Png)).unwrap().get_pixel(0, 0).0, [10, 20, 30]);

        let deep = DynamicImage::ImageRgb16(image::ImageBuffer::from_pixel(2, 2, image::Rgb([65535u16, 0, 32896])));
        let rgb = decode_rgb(&encode(&deep, ImageFormat::Tiff)).unwrap();
        assert_eq!(rgb.get_pixel(1, 1).0, [255, 0, 128]);
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.tif");
        let e = format!("{:#}", load_rgb(&missing).unwrap_err());
        assert!(e.starts_with(&format!("cannot read image {}", missing.display())), "{e}");
        let broken = dir.path().join("broken.jpg");
        std::fs::write(&broken, b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
        let e = format!("{:#}", load_rgb(&broken).unwrap_err());
        assert!(e.starts_with(&format!("cannot decode image {}", broken.display())), "{e}");
    }

    #[test]
    fn dataset_names_are_confined_to_the_images_folder() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("img");
        std::fs::create_dir_all(images.join("sub")).unwrap();
        std::fs::write(dir.path().join("outside.png"), "x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside.png"), images.join("link.png")).unwrap();
        std::os::unix::fs::symlink(images.join("sub"), images.join("inner")).unwrap();
        assert_eq!(confined_path(&images, "sub/a.png").unwrap(), images.join("sub/a.png"));
        assert_eq!(confined_path(&images, "./a.png").unwrap(), images.join("./a.png"));
        assert!(confined_path(&images, "inner/a.png").is_ok(), "a link that stays inside");
        for bad in ["../outside.png", "sub/../../outside.png", "/etc/hostname", ""] {
            let err = confined_path(&images, bad).unwrap_err();
            assert!(err.contains("is not a relative path inside the images folder"), "{bad}: {err}");
        }
        assert!(confined_path(&images, "link.png").unwrap_err().contains("outside the images folder"));
    }
}
