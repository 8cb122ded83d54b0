//! Reader of the "precomp" layout (docs/ARCHITECTURE.md, Data): `<split>_caps.txt`, `<split>_filename.txt` and the
//! optional `<split>_keywords.txt` of one split.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// One split (`train`, `test`, ...) as read from disk, captions grouped by image.
#[derive(Debug, Clone, PartialEq)]
pub struct PrecompSplit {
    /// Caption lines, stripped; the captions of image `i` are `captions[i*c..(i+1)*c]`.
    pub captions: Vec<String>,
    /// One image file name per image, relative to the image folder.
    pub images: Vec<String>,
    /// Keywords per image, when `<split>_keywords.txt` exists.
    pub keywords: Option<Vec<Vec<String>>>,
    /// Captions per image (`c` above).
    pub captions_per_image: usize,
    /// 1-based line numbers of blank captions in `<split>_caps.txt`.
    pub blank_caption_lines: Vec<usize>,
}

/// How `<split>_filename.txt` lists images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilenameLayout {
    /// One line per image.
    PerImage,
    /// One line per caption (each image repeated for its captions).
    PerCaption,
}

/// Reads the lines of a text file like the original (`line.strip()` on each byte line),
/// checking that every line is UTF-8.
pub fn read_lines(path: &Path) -> Result<Vec<String>> {
    let bytes = crate::fsutil::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut pieces: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if pieces.last().is_some_and(|p| p.is_empty()) {
        pieces.pop();
    }
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, line)| {
            let line = strip_python_bytes(line);
            if line.len() > MAX_LINE_BYTES {
                anyhow::bail!(
                    "{}:{}: a line of {} bytes; captions, file names and keywords are at most {MAX_LINE_BYTES}",
                    path.display(),
                    i + 1,
                    line.len()
                );
            }
            String::from_utf8(line.to_vec()).map_err(|e| {
                anyhow::anyhow!(
                    "{}:{}: not valid UTF-8 (byte {} of the line); save the file as UTF-8",
                    path.display(),
                    i + 1,
                    e.utf8_error().valid_up_to() + 1
                )
            })
        })
        .collect()
}

/// The longest line accepted: far beyond any caption, short enough for the tokenizer's regular
/// expressions to stay within their backtracking limits.
pub const MAX_LINE_BYTES: usize = 10_000;

/// Python's `bytes.strip()`: removes ASCII whitespace (vertical tab included) at both ends.
fn strip_python_bytes(line: &[u8]) -> &[u8] {
    let space = |b: &u8| b" \t\n\r\x0b\x0c".contains(b);
    let start = line.iter().position(|b| !space(b)).unwrap_or(line.len());
    let end = line.iter().rposition(|b| !space(b)).map_or(start, |i| i + 1);
    &line[start..end]
}

impl PrecompSplit {
    /// Reads split `split` from `data_path`.
    pub fn read(data_path: &Path, split: &str, captions_per_image: usize) -> Result<PrecompSplit> {
        let caps_path = data_path.join(format!("{split}_caps.txt"));
        let names_path = data_path.join(format!("{split}_filename.txt"));
        let captions = read_lines(&caps_path)?;
        let names = read_lines(&names_path)?;
        if captions.is_empty() {
            bail!("{}: no captions", caps_path.display());
        }
        let layout = detect_layout(&caps_path, captions.len(), &names_path, names.len(), captions_per_image)?;
        let images = match layout {
            FilenameLayout::PerImage => names,
            FilenameLayout::PerCaption => group_per_caption(&names_path, names, captions_per_image)?,
        };
        for (i, name) in images.iter().enumerate() {
            if name.is_empty() {
                let line = match layout {
                    FilenameLayout::PerImage => i + 1,
                    FilenameLayout::PerCaption => i * captions_per_image + 1,
                };
                bail!("{}:{line}: empty file name", names_path.display());
            }
        }
        let keywords_path = data_path.join(format!("{split}_keywords.txt"));
        let keywords = if keywords_path.exists() {
            Some(read_keywords(&keywords_path, images.len(), captions_per_image)?)
        } else {
            None
        };
        let blank_caption_lines =
            captions.iter().enumerate().filter(|(_, c)| c.is_empty()).map(|(i, _)| i + 1).collect();
        Ok(PrecompSplit { captions, images, keywords, captions_per_image, blank_caption_lines })
    }

    /// Number of images.
    pub fn num_images(&self) -> usize {
        self.images.len()
    }

    /// The image of caption `k`.
    pub fn image_of_caption(&self, k: usize) -> usize {
        k / self.captions_per_image
    }

    /// A warning for blank captions (encoded as the original does: padding up to the last step
    /// of their batch), if there are any.
    pub fn blank_caption_warning(&self, caps_path: &Path) -> Option<String> {
        let lines = &self.blank_caption_lines;
        if lines.is_empty() {
            return None;
        }
        let shown: Vec<String> = lines.iter().take(10).map(usize::to_string).collect();
        let more = if lines.len() > 10 { format!(" and {} more", lines.len() - 10) } else { String::new() };
        Some(format!(
            "{}: {} blank caption(s) on line(s) {}{more}; each is encoded as padding, like the original does",
            caps_path.display(),
            lines.len(),
            shown.join(", ")
        ))
    }

    /// Full paths of the images under `image_path`.
    pub fn image_paths(&self, image_path: &Path) -> Vec<PathBuf> {
        self.images.iter().map(|name| image_path.join(name)).collect()
    }
}

/// Decides the filename layout from the line counts, or explains the mismatch.
fn detect_layout(
    caps_path: &Path,
    num_captions: usize,
    names_path: &Path,
    num_names: usize,
    per_image: usize,
) -> Result<FilenameLayout> {
    if !num_captions.is_multiple_of(per_image) {
        bail!(
            "{} has {num_captions} captions, not a multiple of {per_image} captions per image (dataset.captions_per_image)",
            caps_path.display()
        );
    }
    if num_names * per_image == num_captions {
        Ok(FilenameLayout::PerImage)
    } else if num_names == num_captions {
        Ok(FilenameLayout::PerCaption)
    } else {
        bail!(
            "{} has {num_names} lines but {} has {num_captions} captions: expected one file name per image ({}) or per caption ({num_captions})",
            names_path.display(),
            caps_path.display(),
            num_captions / per_image
        )
    }
}

/// Per-caption layout: keeps every `per_image`-th name and checks that each group repeats it.
fn group_per_caption(names_path: &Path, names: Vec<String>, per_image: usize) -> Result<Vec<String>> {
    let mut images = Vec::with_capacity(names.len() / per_image);
    for (g, group) in names.chunks(per_image).enumerate() {
        if let Some(off) = group.iter().position(|n| n != &group[0]) {
            bail!(
                "{}:{}: `{}` differs from `{}` on line {}; the {per_image} captions of an image must be consecutive",
                names_path.display(),
                g * per_image + off + 1,
                group[off],
                group[0],
                g * per_image + 1
            );
        }
        images.push(group[0].clone());
    }
    Ok(images)
}

/// Reads `<split>_keywords.txt`: one line per image (or per caption), keywords separated by `,`.
fn read_keywords(path: &Path, num_images: usize, per_image: usize) -> Result<Vec<Vec<String>>> {
    let lines = read_lines(path)?;
    let per_line = |line: &String| -> Vec<String> {
        line.split(',').map(str::trim).filter(|k| !k.is_empty()).map(str::to_owned).collect()
    };
    if lines.len() == num_images {
        Ok(lines.iter().map(per_line).collect())
    } else if lines.len() == num_images * per_image {
        Ok(lines.iter().step_by(per_image).map(per_line).collect())
    } else {
        bail!(
            "{} has {} lines, expected one per image ({num_images}) or per caption ({})",
            path.display(),
            lines.len(),
            num_images * per_image
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &[u8]) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    fn caps(n: usize) -> String {
        (0..n).map(|i| format!("caption {i}\n")).collect()
    }

    #[test]
    fn per_image_layout() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "train_caps.txt", caps(10).as_bytes());
        write(d.path(), "train_filename.txt", b"a.tif\nb.jpg\n");
        let s = PrecompSplit::read(d.path(), "train", 5).unwrap();
        assert_eq!(s.images, ["a.tif", "b.jpg"]);
        assert_eq!(s.captions.len(), 10);
        assert_eq!((s.image_of_caption(4), s.image_of_caption(5)), (0, 1));
        assert_eq!(s.keywords, None);
    }

    #[test]
    fn per_caption_layout_with_keywords_and_crlf() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "test_caps.txt", caps(10).replace('\n', "\r\n").as_bytes());
        write(d.path(), "test_filename.txt", "a.tif\n".repeat(5).as_bytes());
        std::fs::OpenOptions::new()
            .append(true)
            .open(d.path().join("test_filename.txt"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, "b.png\r\n".repeat(5).as_bytes()))
            .unwrap();
        write(d.path(), "test_keywords.txt", b"port, white boat\n-forest\n");
        let s = PrecompSplit::read(d.path(), "test", 5).unwrap();
        assert_eq!(s.images, ["a.tif", "b.png"]);
        assert_eq!(s.captions[0], "caption 0");
        assert_eq!(s.keywords.unwrap(), [vec!["port", "white boat"], vec!["-forest"]]);
    }

    #[test]
    fn count_mismatch_names_both_files() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "train_caps.txt", caps(10).as_bytes());
        write(d.path(), "train_filename.txt", b"a.tif\nb.tif\nc.tif\n");
        let e = format!("{:#}", PrecompSplit::read(d.path(), "train", 5).unwrap_err());
        assert!(
            e.contains("train_filename.txt has 3 lines but") && e.contains("train_caps.txt has 10 captions"),
            "{e}"
        );
        write(d.path(), "train_caps.txt", caps(7).as_bytes());
        let e = format!("{:#}", PrecompSplit::read(d.path(), "train", 5).unwrap_err());
        assert!(e.contains("7 captions, not a multiple of 5"), "{e}");
    }

    #[test]
    fn scattered_per_caption_names_are_refused() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "test_caps.txt", caps(5).as_bytes());
        write(d.path(), "test_filename.txt", b"a\na\nb\na\na\n");
        let e = format!("{:#}", PrecompSplit::read(d.path(), "test", 5).unwrap_err());
        assert!(e.contains("test_filename.txt:3: `b` differs from `a` on line 1"), "{e}");
    }

    #[test]
    fn non_utf8_line_is_named() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "train_caps.txt", b"ok\nbad \xff line\nok\nok\nok\n");
        write(d.path(), "train_filename.txt", b"a\n");
        let e = format!("{:#}", PrecompSplit::read(d.path(), "train", 5).unwrap_err());
        assert!(e.contains("train_caps.txt:2: not valid UTF-8 (byte 5 of the line)"), "{e}");
    }

    #[test]
    fn blank_captions_are_reported_by_line() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "train_caps.txt", b"a\n\nb\n  \nc\n");
        write(d.path(), "train_filename.txt", b"x.png\n");
        let s = PrecompSplit::read(d.path(), "train", 5).unwrap();
        assert_eq!(s.blank_caption_lines, [2, 4]);
        let w = s.blank_caption_warning(&d.path().join("train_caps.txt")).unwrap();
        assert!(w.ends_with("train_caps.txt: 2 blank caption(s) on line(s) 2, 4; each is encoded as padding, like the original does"), "{w}");
    }

    #[test]
    fn missing_file_and_bad_keywords_are_named() {
        let d = tempfile::tempdir().unwrap();
        let e = format!("{:#}", PrecompSplit::read(d.path(), "val", 5).unwrap_err());
        assert!(e.contains("cannot read") && e.contains("val_caps.txt"), "{e}");
        write(d.path(), "train_caps.txt", caps(5).as_bytes());
        write(d.path(), "train_filename.txt", b"x.png\n");
        write(d.path(), "train_keywords.txt", b"a\nb\n");
        let e = format!("{:#}", PrecompSplit::read(d.path(), "train", 5).unwrap_err());
        assert!(e.contains("train_keywords.txt has 2 lines, expected one per image (1)"), "{e}");
    }

    #[test]
    fn overlong_lines_are_refused_and_the_tokenizer_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let long = "a ".repeat(6_000);
        write(dir.path(), "c.txt", format!("a red house\n{long}\n").as_bytes());
        let err = format!("{:#}", read_lines(&dir.path().join("c.txt")).unwrap_err());
        assert!(
            err.contains("c.txt:2: a line of 11999 bytes; captions, file names and keywords are at most 10000"),
            "{err}"
        );
        // Whatever reaches the tokenizer (a query, say), it returns tokens, never panics.
        let hostile = format!("{}{}", "'".repeat(50_000), "a.".repeat(50_000));
        assert!(!crate::text::word_tokenize(&hostile).is_empty());
    }
}
