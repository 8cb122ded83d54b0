//! Training logs: the original's text log (`<fold folder>/<name>_<datatype>.txt`, same lines)
//! and TensorBoard scalars (`<logger_name>/<experiment>/<fold>/`), readable by TensorBoard.

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tensorboard_rs::summary_writer::SummaryWriter;

use crate::eval::Metrics;
use crate::report;

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

/// The text log of one fold (appended to, like the original's `log_to_txt`). A failure to
/// write it (disk full, ...) is reported once; the log stops and training goes on.
pub struct TextLog {
    path: PathBuf,
    failed: bool,
}

impl TextLog {
    pub fn new(path: PathBuf) -> TextLog {
        TextLog { path, failed: false }
    }

    /// A log that writes nothing (the processes of a launch other than rank 0, which logs).
    pub fn off(path: PathBuf) -> TextLog {
        TextLog { path, failed: true }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `text` and a newline.
    pub fn line(&mut self, text: &str) {
        if self.failed {
            return;
        }
        if let Err(e) = self.append(text) {
            self.failed = true;
            report::warn(format!("{e:#}; the text log stops here, training goes on"));
        }
    }

    fn append(&self, text: &str) -> Result<()> {
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

/// TensorBoard scalars of one fold. tensorboard-rs panics when it cannot write; those panics
/// are caught here: the failure is reported once, TensorBoard logging stops, training goes on.
pub struct Board {
    dir: PathBuf,
    writer: Option<SummaryWriter>,
}

impl Board {
    pub fn new(dir: &Path) -> Board {
        let mut board = Board { dir: dir.to_owned(), writer: None };
        let created = std::fs::create_dir_all(dir).map_err(anyhow::Error::from).and_then(|()| {
            catch_unwind(AssertUnwindSafe(|| SummaryWriter::new(dir)))
                .map_err(|_| anyhow::anyhow!("cannot write there"))
        });
        match created {
            Ok(writer) => board.writer = Some(writer),
            Err(e) => board.failed(&format!("{e:#}")),
        }
        board
    }

    /// A board that writes nothing (the processes of a launch other than rank 0, which logs).
    pub fn off(dir: &Path) -> Board {
        Board { dir: dir.to_owned(), writer: None }
    }

    fn failed(&mut self, why: &str) {
        if let Some(writer) = self.writer.take() {
            // Its drop joins the failed writer thread and would panic again.
            std::mem::forget(writer);
        }
        report::warn(format!(
            "cannot write TensorBoard events to {} ({why}); TensorBoard logging stops here, training goes on",
            self.dir.display()
        ));
    }

    fn guarded(&mut self, write: impl FnOnce(&mut SummaryWriter)) {
        let Some(writer) = self.writer.as_mut() else { return };
        if catch_unwind(AssertUnwindSafe(|| write(writer))).is_err() {
            self.failed("the writer stopped");
        }
    }

    pub fn scalar(&mut self, tag: &str, value: f64, step: u64) {
        self.guarded(|w| w.add_scalar(tag, value as f32, step as usize));
    }

    /// The validation scalars of the original, under their TensorBoard tags (`rsum` = mR).
    pub fn metrics(&mut self, m: &Metrics, step: u64) {
        for (metric, value) in m.named() {
            self.scalar(metric.board, value, step);
        }
        self.flush();
    }

    pub fn flush(&mut self) {
        self.guarded(|w| w.flush());
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            let _ = catch_unwind(AssertUnwindSafe(move || drop(writer)));
        }
    }
}

/// Keeps tensorboard-rs's panics (caught by [`Board`], which reports them as one warning) off
/// the terminal; every other panic is shown as before.
pub fn quiet_tensorboard_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.location().is_some_and(|l| l.file().contains("tensorboard-rs")) {
            previous(info);
        }
    }));
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

    /// The descriptor of this process that has `file` open.
    fn descriptor_of(file: &Path) -> i32 {
        let fds = std::fs::read_dir("/proc/self/fd").unwrap();
        let fd = fds.filter_map(|e| e.ok()).find(|e| std::fs::read_link(e.path()).is_ok_and(|target| target == file));
        fd.unwrap().file_name().to_string_lossy().parse().unwrap()
    }

    #[test]
    fn a_disk_that_fills_up_mid_run_stops_tensorboard_with_one_warning() {
        let dir = tempfile::tempdir().unwrap();
        let (mut board, reports) = report::capture(|| Board::new(dir.path()));
        assert!(reports.is_empty(), "{reports:?}");
        board.scalar("L", 1.0, 1);
        board.flush();
        let mut events = PathBuf::new();
        let mut written = 0;
        for _ in 0..200 {
            if let Some(Ok(entry)) = std::fs::read_dir(dir.path()).unwrap().next() {
                (events, written) = (entry.path(), entry.metadata().unwrap().len());
                if written > 0 {
                    break;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(written > 0, "the writer thread wrote the first events");
        // The events file now sits on a full disk: every further write fails with ENOSPC.
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let fd = descriptor_of(&events);
        assert_eq!(unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&full), fd) }, fd);
        let ((), reports) = report::capture(|| {
            for step in 2..200 {
                board.scalar("L", step as f64, step);
                board.flush();
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        });
        let warnings = format!("{reports:?}");
        assert_eq!(warnings.matches("TensorBoard logging stops here, training goes on").count(), 1, "{warnings}");
        assert!(board.writer.is_none());
        drop(board);
    }
}
