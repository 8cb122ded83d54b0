//! Reading image files (TIFF, JPEG, PNG) as 8-bit RGB, like PIL's `Image.open(p).convert('RGB')`
//! for 8-bit images: gray is replicated, alpha dropped, palettes expanded. 16-bit images are
//! scaled to 8 bits (PIL would clip them at 255). JPEG goes through libjpeg-turbo's decoder
//! (the `mozjpeg` crate builds it from source), the library PIL uses, with PIL's settings (the
//! accurate integer IDCT, fancy upsampling, no EXIF rotation), so pixels equal PIL's bit for bit.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};
use image::{DynamicImage, RgbImage};

use crate::fsutil::one_line;

/// Decodes the image file at `path` into RGB; errors name the file.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    Ok(read_and_decode(path)?.0)
}

/// [`load_rgb`], with the SHA-256 of the file's bytes (the file is read once).
pub fn load_rgb_hashed(path: &Path) -> Result<(RgbImage, String)> {
    let (image, bytes) = read_and_decode(path)?;
    Ok((image, crate::fsutil::sha256_hex(&bytes)))
}

/// The decoded image and the file's bytes.
fn read_and_decode(path: &Path) -> Result<(RgbImage, Vec<u8>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read image {}", path.display()))?;
    let image = decode_rgb(&bytes)
        .map_err(|e| anyhow::anyhow!("cannot decode image {}: {}", path.display(), one_line(&format!("{e:#}"))))?;
    Ok((image, bytes))
}

/// The width and height an image file's header gives, without decoding its pixels.
pub fn image_dimensions(path: &Path) -> Result<(u32, u32)> {
    image::image_dimensions(path)
        .map_err(|e| anyhow::anyhow!("cannot read the size of image {}: {}", path.display(), one_line(&e.to_string())))
}

/// Decodes each file of `paths` on `workers` threads and maps each image with `f`; in the order
/// of `paths`, an unreadable file gives its error text instead.
pub fn decode_each<T: Send>(
    paths: &[PathBuf],
    workers: usize,
    f: impl Fn(RgbImage) -> T + Sync,
) -> Vec<std::result::Result<T, String>> {
    let chunk = paths.len().div_ceil(workers.max(1)).max(1);
    let f = &f;
    let decode = move |p: &PathBuf| load_rgb(p).map(f).map_err(|e| format!("{e:#}"));
    std::thread::scope(|s| {
        let handles: Vec<_> =
            paths.chunks(chunk).map(|part| s.spawn(move || part.iter().map(decode).collect::<Vec<_>>())).collect();
        handles.into_iter().flat_map(|h| h.join().expect("decode thread")).collect()
    })
}

/// The largest side accepted (a header claiming more is refused before decoding), and the most
/// memory one decode may take: a 20000x20000 scene in 16-bit colour fits.
const MAX_SIDE: u32 = 20_000;
const MAX_DECODED_BYTES: u64 = 3 << 30;

/// Decodes an in-memory image file into RGB. Strict: a truncated file is an error, never a
/// partly grey image (the JPEG decoder would fill in what is missing; PIL refuses it too).
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage> {
    if bytes.starts_with(&[0xFF, 0xD8]) {
        if !jpeg_is_complete(bytes) {
            anyhow::bail!("the JPEG data ends before its end-of-image marker (a truncated file)");
        }
        if let Some(rgb) = decode_jpeg(bytes)? {
            return Ok(rgb);
        }
    }
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    reader.limits(limits);
    let image = reader.decode()?;
    Ok(match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    })
}

/// Decodes JPEG data with libjpeg-turbo into RGB (grayscale replicated, as libjpeg and PIL do);
/// `None` for CMYK and YCCK files, which libjpeg cannot convert to RGB (the caller's general
/// decoder takes them). libjpeg's fatal errors unwind and are caught here.
fn decode_jpeg(bytes: &[u8]) -> Result<Option<RgbImage>> {
    let decoded = std::panic::catch_unwind(|| -> std::io::Result<Option<RgbImage>> {
        let decompress = mozjpeg::Decompress::new_mem(bytes)?;
        if matches!(decompress.color_space(), mozjpeg::ColorSpace::JCS_CMYK | mozjpeg::ColorSpace::JCS_YCCK) {
            return Ok(None);
        }
        let (width, height) = decompress.size();
        let too_large = width as u64 > MAX_SIDE as u64
            || height as u64 > MAX_SIDE as u64
            || (width as u64 * height as u64 * 3) > MAX_DECODED_BYTES;
        if too_large {
            return Err(std::io::Error::other(format!("{width}x{height} pixels, more than amfmn decodes")));
        }
        let mut started = decompress.rgb()?;
        let pixels: Vec<u8> = started.read_scanlines::<u8>()?;
        started.finish()?;
        let image = RgbImage::from_raw(width as u32, height as u32, pixels);
        image.map(Some).ok_or_else(|| std::io::Error::other("the JPEG data ends before its last row"))
    });
    match decoded {
        Ok(result) => Ok(result?),
        Err(payload) => {
            let message = payload.downcast_ref::<String>().cloned().unwrap_or_else(|| "libjpeg failed".to_owned());
            anyhow::bail!("{message}")
        }
    }
}

/// Whether JPEG data has its end-of-image marker after the start of its last scan (inside a
/// scan, `FF` bytes are stuffed, so `FF D9` there can only be the marker).
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    last_scan.is_some_and(|start| bytes[start..].windows(2).any(|w| w == [0xFF, 0xD9]))
}

/// The images of `paths` that cannot be read or decoded, with the reason; decoded on `workers`
/// threads with a progress bar.
pub fn unreadable_images(paths: &[PathBuf], workers: usize, label: &str) -> Vec<(PathBuf, String)> {
    let progress = crate::report::progress(paths.len() as u64, label);
    let chunk = paths.len().div_ceil(workers.max(1)).max(1);
    let failures = std::thread::scope(|scope| {
        let handles: Vec<_> = paths
            .chunks(chunk)
            .map(|part| {
                let progress = progress.clone();
                scope.spawn(move || {
                    let failed: Vec<(PathBuf, String)> = part
                        .iter()
                        .filter_map(|p| {
                            progress.inc(1);
                            load_rgb(p).err().map(|e| (p.clone(), format!("{e:#}")))
                        })
                        .collect();
                    failed
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    });
    progress.finish_and_clear();
    failures
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

    #[test]
    fn truncated_images_are_errors() {
        let noise: Vec<u8> = (0..64 * 64 * 3).map(|i| ((i * 7919) % 251) as u8).collect();
        let image = DynamicImage::ImageRgb8(RgbImage::from_raw(64, 64, noise).unwrap());
        for format in [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::Tiff] {
            let bytes = encode(&image, format);
            assert!(decode_rgb(&bytes).is_ok(), "{format:?}");
            // Cutting a JPEG's end marker alone is caught too; a PNG whose pixel data is whole
            // decodes (like PIL), whatever is cut from its IEND chunk.
            let just_the_end = (format == ImageFormat::Jpeg).then_some(bytes.len() - 2);
            for keep in [bytes.len() * 3 / 4, bytes.len() / 2].into_iter().chain(just_the_end) {
                assert!(decode_rgb(&bytes[..keep]).is_err(), "{format:?} cut to {keep} of {} bytes", bytes.len());
            }
        }
    }
}
