//! Training logs: the original's text log (`<fold folder>/<name>_<datatype>.txt`, same lines)
//! and TensorBoard scalars (`<logger_name>/<experiment>/<fold>/`), readable by TensorBoard.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tensorboard_rs::summary_writer::SummaryWriter;

use crate::eval::Metrics;

/// A float as Python's `str()` writes it (`100.0`, `12.345679012345679`, `1e-05`).
pub fn python_float(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let abs = v.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        let s = format!("{v:e}");
        let (mantissa, exponent) = s.split_once('e').expect("exponent form");
        let exp: i32 = exponent.parse().expect("integer exponent");
        return format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    let s = format!("{v}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

/// The original's `all_score` block for a validation result: the image-to-text metrics, the
/// text-to-image metrics and mR on three lines, under their text-log names.
pub fn score_block(m: &Metrics) -> String {
    let entries: Vec<String> = m.named().map(|(metric, v)| format!("{}:{}", metric.log, python_float(v))).collect();
    format!("{}\n {}\n {}\n ------\n", entries[..5].join(" "), entries[5..10].join(" "), entries[10])
}

/// The text log of one fold (appended to, like the original's `log_to_txt`).
pub struct TextLog {
    path: PathBuf,
}

impl TextLog {
    pub fn new(path: PathBuf) -> TextLog {
        TextLog { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `text` and a newline.
    pub fn line(&self, text: &str) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("cannot write the log {}", self.path.display()))?;
        writeln!(file, "{text}").with_context(|| format!("cannot write the log {}", self.path.display()))
    }
}

/// TensorBoard scalars of one fold.
pub struct Board {
    writer: SummaryWriter,
}

impl Board {
    pub fn new(dir: &Path) -> Result<Board> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the TensorBoard folder {}", dir.display()))?;
        Ok(Board { writer: SummaryWriter::new(dir) })
    }

    pub fn scalar(&mut self, tag: &str, value: f64, step: u64) {
        self.writer.add_scalar(tag, value as f32, step as usize);
    }

    /// The validation scalars of the original, under their TensorBoard tags (`rsum` = mR).
    pub fn metrics(&mut self, m: &Metrics, step: u64) {
        for (metric, value) in m.named() {
            self.scalar(metric.board, value, step);
        }
        self.flush();
    }

    pub fn flush(&mut self) {
        self.writer.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_python() {
        assert_eq!(python_float(100.0), "100.0");
        assert_eq!(python_float(12.345679012345679), "12.345679012345679");
        assert_eq!(python_float(1.0 / 3.0), "0.3333333333333333");
        assert_eq!(python_float(0.00001), "1e-05");
        assert_eq!(python_float(0.0), "0.0");
        assert_eq!(python_float(2.5e16), "2.5e+16");
    }

    #[test]
    fn score_block_layout() {
        let m = Metrics { r1i: 10.0, mR: 12.5, ..Default::default() };
        let block = score_block(&m);
        assert!(block.starts_with("r1i:10.0 r5i:0.0 r10i:0.0 medri:0.0 meanri:0.0\n r1t:0.0"));
        assert!(block.ends_with(" sum:12.5\n ------\n"));
    }
}
