//! Reading image files (TIFF, JPEG, PNG) as 8-bit RGB, like PIL's `Image.open(p).convert('RGB')`
//! for 8-bit images: gray is replicated, alpha dropped, palettes expanded. 16-bit images are
//! scaled to 8 bits (PIL would clip them at 255). JPEG goes through libjpeg-turbo's decoder
//! (the `mozjpeg` crate builds it from source), the library PIL uses, with PIL's settings (the
//! accurate integer IDCT, fancy upsampling, no EXIF rotation), so pixels equal PIL's bit for bit.

use std::path::{Component, Path, PathBuf};
use std::sync::{Condvar, Mutex};

use anyhow::{bail, Context, Result};
use image::{DynamicImage, RgbImage};

use crate::fsutil::one_line;

/// The most pixels an ordinary image may have (a dataset tile, an image to index or to explain),
/// read from its header before anything is decoded: PIL's decompression-bomb limit
/// (2 × `Image.MAX_IMAGE_PIXELS`), above which PIL refuses to open an image too. Scenes for
/// localisation have their own limit (`locate --max-pixels`).
pub const MAX_IMAGE_PIXELS: u64 = 178_956_970;

/// The largest side accepted, whatever the pixel limit.
const MAX_SIDE: u32 = 65_535;

/// Decodes the image file at `path` into RGB; errors name the file. Images of more than
/// [`MAX_IMAGE_PIXELS`] are refused from their header.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    load_rgb_within(path, MAX_IMAGE_PIXELS)
}

/// [`load_rgb`] for an image of at most `max_pixels` pixels (a scene).
pub fn load_rgb_within(path: &Path, max_pixels: u64) -> Result<RgbImage> {
    Ok(read_and_decode(path, max_pixels)?.0)
}

/// [`load_rgb_within`], with the SHA-256 of the file's bytes (the file is read once).
pub fn load_rgb_hashed(path: &Path, max_pixels: u64) -> Result<(RgbImage, String)> {
    let (image, bytes) = read_and_decode(path, max_pixels)?;
    Ok((image, crate::fsutil::sha256_hex(&bytes)))
}

/// The decoded image and the file's bytes.
fn read_and_decode(path: &Path, max_pixels: u64) -> Result<(RgbImage, Vec<u8>)> {
    let bytes = read_image(path)?;
    Ok((decode_named(path, &bytes, max_pixels)?, bytes))
}

/// The bytes of the image file at `path`.
fn read_image(path: &Path) -> Result<Vec<u8>> {
    crate::fsutil::read(path).with_context(|| format!("cannot read image {}", path.display()))
}

/// [`decode_rgb`] of the bytes of `path`, its errors naming the file.
fn decode_named(path: &Path, bytes: &[u8], max_pixels: u64) -> Result<RgbImage> {
    decode_rgb(bytes, max_pixels)
        .map_err(|e| anyhow::anyhow!("cannot decode image {}: {}", path.display(), one_line(&format!("{e:#}"))))
}

/// The width and height an image file's header gives, without decoding its pixels.
pub fn image_dimensions(path: &Path) -> Result<(u32, u32)> {
    let read = || -> Result<(u32, u32)> {
        let file = std::io::BufReader::new(crate::fsutil::open(path)?);
        Ok(image::ImageReader::new(file).with_guessed_format()?.into_dimensions()?)
    };
    read().map_err(|e| {
        anyhow::anyhow!("cannot read the size of image {}: {}", path.display(), one_line(&format!("{e:#}")))
    })
}

/// Refuses an image of `width × height` pixels above `max_pixels` (from its header, before
/// anything is allocated for its pixels).
pub fn check_pixels(width: u64, height: u64, max_pixels: u64) -> Result<()> {
    let pixels = width * height;
    if pixels > max_pixels || width > MAX_SIDE as u64 || height > MAX_SIDE as u64 {
        bail!(
            "{width}x{height} is {pixels} pixels, more than the {max_pixels} amfmn decodes here (a decompression \
             bomb, or an image to downscale first)"
        );
    }
    Ok(())
}

/// The decoded bytes all threads together may hold at once while decoding ([`with_decoded`]):
/// decoding threads wait for each other rather than multiply a large image's memory.
const DECODE_BUDGET: u64 = 1 << 30;

/// The bytes of decoded images held now, and the signal that some were given back.
static DECODING: (Mutex<u64>, Condvar) = (Mutex::new(0), Condvar::new());

/// A share of [`DECODE_BUDGET`], given back when dropped.
struct Lease(u64);

impl Lease {
    /// Waits until `bytes` (at most the whole budget) fit in the budget, and takes them.
    fn take(bytes: u64) -> Lease {
        let bytes = bytes.min(DECODE_BUDGET);
        let (held, freed) = &DECODING;
        let mut held = held.lock().unwrap_or_else(|e| e.into_inner());
        while *held + bytes > DECODE_BUDGET {
            held = freed.wait(held).unwrap_or_else(|e| e.into_inner());
        }
        *held += bytes;
        Lease(bytes)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let (held, freed) = &DECODING;
        *held.lock().unwrap_or_else(|e| e.into_inner()) -= self.0;
        freed.notify_all();
    }
}

/// Decodes the ordinary image at `path` ([`load_rgb`]) and maps it with `f`, holding a share of
/// the decoding budget from the header's size until `f` returns: however many threads decode,
/// the images they hold together stay within about 1 GiB.
pub fn with_decoded<T>(path: &Path, f: impl FnOnce(RgbImage) -> T) -> Result<T> {
    let bytes = read_image(path)?;
    // A header the size reader cannot parse leaves the error to the decoder (and its pixel limit).
    let header = image::ImageReader::new(std::io::Cursor::new(&bytes)).with_guessed_format().ok();
    let size = header.and_then(|h| h.into_dimensions().ok()).map_or(0, |(w, h)| w as u64 * h as u64 * 4);
    let _lease = Lease::take(size);
    Ok(f(decode_named(path, &bytes, MAX_IMAGE_PIXELS)?))
}

/// Consecutive groups of `paths` to decode and keep together: at most `batch_size` images, and
/// (from their headers) at most `bytes` of decoded pixels unless one image alone is larger.
pub fn batches_within_budget(paths: &[PathBuf], batch_size: usize, bytes: u64) -> Vec<std::ops::Range<usize>> {
    let mut batches = Vec::new();
    let (mut start, mut held) = (0, 0u64);
    for (i, path) in paths.iter().enumerate() {
        let size = image_dimensions(path).map_or(0, |(w, h)| w as u64 * h as u64 * 3);
        if i > start && (i - start >= batch_size.max(1) || held + size > bytes) {
            batches.push(start..i);
            (start, held) = (i, 0);
        }
        held += size;
    }
    if start < paths.len() {
        batches.push(start..paths.len());
    }
    batches
}

/// Decodes an in-memory image file of at most `max_pixels` pixels into RGB; its header's size is
/// checked before anything is decoded. Strict: a truncated file is an error, never a partly grey
/// image (the JPEG decoder would fill in what is missing; PIL refuses it too).
pub fn decode_rgb(bytes: &[u8], max_pixels: u64) -> Result<RgbImage> {
    if bytes.starts_with(&[0xFF, 0xD8]) {
        if !jpeg_is_complete(bytes) {
            bail!("the JPEG data ends before its end-of-image marker (a truncated file)");
        }
        if let Some(rgb) = decode_jpeg(bytes, max_pixels)? {
            return Ok(rgb);
        }
    } else {
        let (width, height) =
            image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format()?.into_dimensions()?;
        check_pixels(width as u64, height as u64, max_pixels)?;
    }
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    // 16-bit colour with alpha, and the 8-bit copy made from it.
    limits.max_alloc = Some(max_pixels.saturating_mul(8));
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
fn decode_jpeg(bytes: &[u8], max_pixels: u64) -> Result<Option<RgbImage>> {
    let decoded = std::panic::catch_unwind(|| -> std::io::Result<Option<RgbImage>> {
        let decompress = mozjpeg::Decompress::new_mem(bytes)?;
        if matches!(decompress.color_space(), mozjpeg::ColorSpace::JCS_CMYK | mozjpeg::ColorSpace::JCS_YCCK) {
            return Ok(None);
        }
        let (width, height) = decompress.size();
        check_pixels(width as u64, height as u64, max_pixels).map_err(|e| std::io::Error::other(e.to_string()))?;
        check_jpeg_length(bytes, width as u64, height as u64).map_err(|e| std::io::Error::other(e.to_string()))?;
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

/// Refuses a sequential Huffman-coded JPEG (SOF0, SOF1: what cameras and PIL write) too short for
/// its size: such a scan codes every 8x8 block of the first component with at least two bits (a
/// DC difference and an end of block), so `width × height` pixels need `width·height/256` bytes
/// at least. A few hundred bytes claiming 20000x20000 pixels would otherwise be decoded into a
/// grey 1.2 GB picture by libjpeg, which fills in missing data. Progressive and arithmetic-coded
/// files can code blocks in less and are not checked.
fn check_jpeg_length(bytes: &[u8], width: u64, height: u64) -> Result<()> {
    let needed = width.div_ceil(8) * height.div_ceil(8) / 4;
    if matches!(jpeg_frame(bytes), Some(0xC0 | 0xC1)) && (bytes.len() as u64) < needed {
        bail!(
            "{} bytes cannot hold a baseline JPEG of {width}x{height} pixels (at least {needed}): a corrupt or \
             crafted file",
            bytes.len()
        );
    }
    Ok(())
}

/// The marker of a JPEG's frame (`0xC0` baseline, `0xC1` extended, `0xC2` progressive, ...):
/// the first SOFn segment, found by walking the segments after SOI.
fn jpeg_frame(bytes: &[u8]) -> Option<u8> {
    let mut at = 2;
    while at + 4 <= bytes.len() && bytes[at] == 0xFF {
        let marker = bytes[at + 1];
        if (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            return Some(marker);
        }
        at += 2 + u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize;
    }
    None
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
                            with_decoded(p, drop).err().map(|e| (p.clone(), format!("{e:#}")))
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
        let rgb = decode_rgb(&encode(&gray, ImageFormat::Png), MAX_IMAGE_PIXELS).unwrap();
        assert_eq!((rgb.dimensions(), rgb.get_pixel(2, 1).0), ((3, 2), [77, 77, 77]));

        let rgba = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(2, 2, Rgba([10, 20, 30, 0])));
        assert_eq!(
            decode_rgb(&encode(&rgba, ImageFormat::Png), MAX_IMAGE_PIXELS).unwrap().get_pixel(0, 0).0,
            [10, 20, 30]
        );

        let deep = DynamicImage::ImageRgb16(image::ImageBuffer::from_pixel(2, 2, image::Rgb([65535u16, 0, 32896])));
        let rgb = decode_rgb(&encode(&deep, ImageFormat::Tiff), MAX_IMAGE_PIXELS).unwrap();
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

    /// A few hundred bytes whose header claims 20000x20000 pixels: refused from the header in
    /// every format, before a byte of pixels is allocated.
    #[test]
    fn pixel_limits_are_checked_from_the_header() {
        let small = DynamicImage::ImageRgb8(RgbImage::from_pixel(16, 16, image::Rgb([90, 120, 30])));
        for format in [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::Tiff] {
            let mut bytes = encode(&small, format);
            claim_size(&mut bytes, format, 20_000);
            let err = format!("{:#}", decode_rgb(&bytes, MAX_IMAGE_PIXELS).unwrap_err());
            assert!(err.contains("20000x20000 is 400000000 pixels, more than the 178956970"), "{format:?}: {err}");
            let err = format!("{:#}", decode_rgb(&encode(&small, format), 255).unwrap_err());
            assert!(err.contains("16x16 is 256 pixels, more than the 255"), "{format:?}: {err}");
        }
    }

    /// A baseline JPEG too short for the size its header claims is refused before decoding (libjpeg
    /// would fill the missing blocks with grey); one long enough for its blocks is decoded.
    #[test]
    fn baseline_jpegs_too_short_for_their_size_are_refused() {
        let small = DynamicImage::ImageRgb8(RgbImage::from_pixel(16, 16, image::Rgb([90, 120, 30])));
        let mut bytes = encode(&small, ImageFormat::Jpeg);
        assert_eq!(jpeg_frame(&bytes), Some(0xC0));
        claim_size(&mut bytes, ImageFormat::Jpeg, 8000);
        let err = format!("{:#}", decode_rgb(&bytes, MAX_IMAGE_PIXELS).unwrap_err());
        assert!(err.contains("bytes cannot hold a baseline JPEG of 8000x8000 pixels (at least 250000)"), "{err}");
        // A flat 1024x1024 JPEG is about 2 bits a block: long enough for its size, decoded.
        let flat = DynamicImage::ImageRgb8(RgbImage::from_pixel(1024, 1024, image::Rgb([90, 120, 30])));
        let bytes = encode(&flat, ImageFormat::Jpeg);
        assert!(bytes.len() as u64 >= 1024 * 1024 / 256, "{} bytes", bytes.len());
        assert_eq!(decode_rgb(&bytes, MAX_IMAGE_PIXELS).unwrap().dimensions(), (1024, 1024));
    }

    /// Rewrites the width and height an encoded 16x16 image's header gives to `side`.
    fn claim_size(bytes: &mut [u8], format: ImageFormat, side: u32) {
        let at = |pattern: &[u8]| bytes.windows(pattern.len()).position(|w| w == pattern).unwrap();
        match format {
            ImageFormat::Jpeg => {
                let sof = at(&[0xFF, 0xC0]) + 5;
                bytes[sof..sof + 4].copy_from_slice(&[(side >> 8) as u8, side as u8, (side >> 8) as u8, side as u8]);
            }
            ImageFormat::Png => {
                // The IHDR chunk's width and height, and its CRC over type and data (IEEE CRC-32).
                let chunk = at(b"IHDR");
                bytes[chunk + 4..chunk + 12].copy_from_slice(&[side.to_be_bytes(), side.to_be_bytes()].concat());
                let crc = !bytes[chunk..chunk + 17].iter().fold(!0u32, |c, &b| {
                    (0..8).fold(c ^ b as u32, |c, _| if c & 1 == 1 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 })
                });
                bytes[chunk + 17..chunk + 21].copy_from_slice(&crc.to_be_bytes());
            }
            _ => {
                // TIFF (little-endian): the first IFD's ImageWidth (256) and ImageLength (257)
                // entries, rewritten as LONG values.
                let ifd = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
                let count = u16::from_le_bytes([bytes[ifd], bytes[ifd + 1]]) as usize;
                for entry in (0..count).map(|k| ifd + 2 + 12 * k) {
                    if matches!(u16::from_le_bytes([bytes[entry], bytes[entry + 1]]), 256 | 257) {
                        bytes[entry + 2..entry + 4].copy_from_slice(&4u16.to_le_bytes());
                        bytes[entry + 8..entry + 12].copy_from_slice(&side.to_le_bytes());
                    }
                }
            }
        }
    }

    #[test]
    fn truncated_images_are_errors() {
        let noise: Vec<u8> = (0..64 * 64 * 3).map(|i| ((i * 7919) % 251) as u8).collect();
        let image = DynamicImage::ImageRgb8(RgbImage::from_raw(64, 64, noise).unwrap());
        for format in [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::Tiff] {
            let bytes = encode(&image, format);
            assert!(decode_rgb(&bytes, MAX_IMAGE_PIXELS).is_ok(), "{format:?}");
            // Cutting a JPEG's end marker alone is caught too; a PNG whose pixel data is whole
            // decodes (like PIL), whatever is cut from its IEND chunk.
            let just_the_end = (format == ImageFormat::Jpeg).then_some(bytes.len() - 2);
            for keep in [bytes.len() * 3 / 4, bytes.len() / 2].into_iter().chain(just_the_end) {
                assert!(
                    decode_rgb(&bytes[..keep], MAX_IMAGE_PIXELS).is_err(),
                    "{format:?} cut to {keep} of {} bytes",
                    bytes.len()
                );
            }
        }
    }
}
