//! The service's data folder: the database, content-addressed originals (`blobs/ab/<sha256>`),
//! thumbnails (`thumbs/<sha256>.png`) and `tmp/` for uploads in progress. Every name in it is
//! chosen by the server (a SHA-256 or a random name); nothing a request says becomes a path.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::RngExt;

use crate::fsutil::hex;

/// An image format the service accepts, from the file's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
    Tiff,
}

impl Format {
    /// The format whose signature `head` starts with.
    pub fn sniff(head: &[u8]) -> Option<Format> {
        if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Format::Jpeg)
        } else if head.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Format::Png)
        } else if head.starts_with(b"II*\0") || head.starts_with(b"MM\0*") {
            Some(Format::Tiff)
        } else {
            None
        }
    }

    /// Its name in the database and in responses.
    pub fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "jpeg",
            Format::Png => "png",
            Format::Tiff => "tiff",
        }
    }

    /// Its media type.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Tiff => "image/tiff",
        }
    }

    /// The format named `name` in the database.
    pub fn from_name(name: &str) -> Option<Format> {
        [Format::Jpeg, Format::Png, Format::Tiff].into_iter().find(|f| f.name() == name)
    }

    fn image_format(self) -> image::ImageFormat {
        match self {
            Format::Jpeg => image::ImageFormat::Jpeg,
            Format::Png => image::ImageFormat::Png,
            Format::Tiff => image::ImageFormat::Tiff,
        }
    }
}

/// The width and height the header of the image file `path` (of `format`, starting with `head`)
/// gives, read without decoding any pixel. A PNG's are in its first chunk (IHDR) at a fixed
/// place, read from `head` alone.
pub fn header_dimensions(path: &Path, head: &[u8], format: Format) -> Result<(u32, u32)> {
    if format == Format::Png {
        if head.len() < 24 || &head[12..16] != b"IHDR" {
            bail!("the PNG does not start with its IHDR chunk");
        }
        let be = |at: usize| u32::from_be_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
        return Ok((be(16), be(20)));
    }
    let file = std::io::BufReader::new(File::open(path)?);
    let reader = image::ImageReader::with_format(file, format.image_format());
    Ok(reader.into_dimensions()?)
}

/// Bytes of a file kept to judge its format (and a PNG's size).
pub const HEAD: usize = 24;

/// Why a file is not taken as an image.
#[derive(Debug)]
pub enum Refused {
    /// Not a JPEG, PNG or TIFF, or its header cannot be read.
    Unsupported(String),
    /// More pixels than allowed.
    TooManyPixels(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Refused::Unsupported(why) | Refused::TooManyPixels(why) => f.write_str(why),
        }
    }
}

/// The format, width and height of the image file `path` whose first bytes are `head`, judged
/// without decoding a pixel; refused past `max_pixels`.
pub fn check_image(path: &Path, head: &[u8], max_pixels: u64) -> Result<(Format, u32, u32), Refused> {
    let format = Format::sniff(head).ok_or_else(|| {
        Refused::Unsupported("the body is not a JPEG, PNG or TIFF image (judged from its first bytes)".into())
    })?;
    let (width, height) = header_dimensions(path, head, format)
        .map_err(|e| Refused::Unsupported(format!("cannot read the {} header: {e}", format.name())))?;
    if width as u64 * height as u64 > max_pixels {
        return Err(Refused::TooManyPixels(format!("a {width}x{height} image: at most {max_pixels} pixels")));
    }
    Ok((format, width, height))
}

/// Whether `sha` is a SHA-256 in lowercase hexadecimal (the only blob names there are).
fn is_sha256(sha: &str) -> bool {
    sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The data folder `--data` names.
#[derive(Debug, Clone)]
pub struct DataFolder {
    pub root: PathBuf,
}

impl DataFolder {
    /// The folder at `root`, with its sub-folders created.
    pub fn open(root: &Path) -> Result<DataFolder> {
        for sub in ["blobs", "results", "thumbs", "tmp"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        Ok(DataFolder { root: root.to_owned() })
    }

    /// The database file.
    pub fn database(&self) -> PathBuf {
        self.root.join(super::store::DATABASE)
    }

    /// Where the original with SHA-256 `sha` lies.
    pub fn blob(&self, sha: &str) -> Result<PathBuf> {
        if !is_sha256(sha) {
            bail!("{sha:?} is not a blob name");
        }
        Ok(self.root.join("blobs").join(&sha[..2]).join(sha))
    }

    /// Where the thumbnail of the original `sha` lies.
    pub fn thumbnail(&self, sha: &str) -> Result<PathBuf> {
        if !is_sha256(sha) {
            bail!("{sha:?} is not a blob name");
        }
        Ok(self.root.join("thumbs").join(format!("{sha}.png")))
    }

    /// The folder of a locate job's results.
    pub fn results(&self, job: &str) -> Result<PathBuf> {
        if !super::jobs::is_job_id(job) {
            bail!("{job:?} is not a job id");
        }
        Ok(self.root.join("results").join(job))
    }

    /// Removes a job's results, if any.
    pub fn remove_results(&self, job: &str) -> Result<()> {
        let dir = self.results(job)?;
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {}", dir.display()))
            }
            _ => Ok(()),
        }
    }

    /// Removes the result folders of jobs not in `jobs`; returns how many.
    pub fn collect_results(&self, jobs: &HashSet<String>) -> Result<usize> {
        let mut removed = 0;
        for dir in crate::fsutil::entries_if_present(&self.root.join("results"))? {
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if !jobs.contains(&name) && super::jobs::is_job_id(&name) {
                self.remove_results(&name)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// A new file in `tmp/` under a random name, created exclusively.
    pub fn temporary(&self) -> Result<(File, PathBuf)> {
        let path = self.root.join("tmp").join(hex(&rand::rng().random::<[u8; 16]>()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok((file, path))
    }

    /// Moves the synced upload `temporary` to the blob of `sha` (dropping it when that blob is
    /// already there) and syncs the folder, so the blob survives a crash.
    pub fn keep_blob(&self, temporary: &Path, sha: &str) -> Result<PathBuf> {
        let blob = self.blob(sha)?;
        let dir = blob.parent().expect("blobs/ab");
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        if blob.is_file() {
            std::fs::remove_file(temporary)?;
        } else {
            std::fs::rename(temporary, &blob)
                .with_context(|| format!("cannot move an upload to {}", blob.display()))?;
        }
        File::open(dir)?.sync_all()?;
        Ok(blob)
    }

    /// Removes what an interrupted upload left in `tmp/`; returns how many files.
    pub fn sweep_temporaries(&self) -> Result<usize> {
        let mut removed = 0;
        for path in crate::fsutil::entries_if_present(&self.root.join("tmp"))? {
            if std::fs::symlink_metadata(&path)?.is_file() {
                std::fs::remove_file(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes the blobs (and thumbnails) whose SHA-256 is not in `referenced`; returns how many
    /// blobs.
    pub fn collect_garbage(&self, referenced: &HashSet<String>) -> Result<usize> {
        let mut removed = 0;
        for dir in crate::fsutil::entries_if_present(&self.root.join("blobs"))? {
            for blob in crate::fsutil::entries_if_present(&dir)? {
                let name = blob.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                if is_sha256(&name) && !referenced.contains(&name) {
                    self.remove_blob(&name)?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Removes the original `sha` and its thumbnail.
    pub fn remove_blob(&self, sha: &str) -> Result<()> {
        crate::fsutil::remove_if_present(&self.blob(sha)?)?;
        crate::fsutil::remove_if_present(&self.thumbnail(sha)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_by_signature_not_by_name() {
        assert_eq!(Format::sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(Format::Jpeg));
        assert_eq!(Format::sniff(b"\x89PNG\r\n\x1a\n...."), Some(Format::Png));
        assert_eq!(Format::sniff(b"II*\0...."), Some(Format::Tiff));
        assert_eq!(Format::sniff(b"MM\0*...."), Some(Format::Tiff));
        assert_eq!(Format::sniff(b"GIF89a"), None);
        assert_eq!(Format::sniff(b"\x89PN"), None);
        assert_eq!(Format::from_name("png"), Some(Format::Png));
    }

    #[test]
    fn blobs_are_named_by_hash_and_collected() {
        let dir = tempfile::tempdir().unwrap();
        let folder = DataFolder::open(dir.path()).unwrap();
        assert!(folder.blob("../../etc/passwd").is_err());
        assert!(folder.blob(&"A".repeat(64)).is_err(), "lowercase only");
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        for sha in [&a, &b, &a] {
            let (_, tmp) = folder.temporary().unwrap();
            folder.keep_blob(&tmp, sha).unwrap();
        }
        assert!(folder.blob(&a).unwrap().ends_with(format!("blobs/aa/{a}")));
        let (_, left) = folder.temporary().unwrap();
        assert_eq!(folder.sweep_temporaries().unwrap(), 1, "the same blob twice left nothing behind");
        assert!(!left.exists());
        assert_eq!(folder.collect_garbage(&HashSet::from([a.clone()])).unwrap(), 1);
        assert!(folder.blob(&a).unwrap().is_file() && !folder.blob(&b).unwrap().exists());
    }
}
