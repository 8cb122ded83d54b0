//! The library reports, the binary prints: every message of the library (a line of progress
//! such as a training row, a warning) and every progress bar goes through the [`Reporter`] in
//! force. The binary installs [`Terminal`]; tests and a future server run their work under
//! [`capture`] and read the messages back. Library code never prints by itself.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};

use indicatif::{ProgressBar, ProgressStyle};

/// A message from the library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Something the user asked to see (a table row, what was loaded).
    Info(String),
    /// Something that may be wrong but does not stop the work.
    Warning(String),
}

/// Where the library's messages and progress bars go.
pub trait Reporter: Send + Sync {
    /// Shows or keeps one message.
    fn message(&self, message: Message);
    /// A bar over `total` items; hidden where nobody watches.
    fn progress(&self, total: u64, label: &str) -> ProgressBar;
}

/// Writes `line` and a newline to stderr in one write, so that the lines of processes sharing
/// the stream (the ranks of a torchrun job) never interleave within a line.
pub fn stderr_line(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(format!("{line}\n").as_bytes());
}

/// Prints information on stdout, warnings on stderr (`warning: ...`), and draws progress bars
/// on stderr when it is a terminal.
pub struct Terminal;

impl Reporter for Terminal {
    fn message(&self, message: Message) {
        match message {
            Message::Info(text) => println!("{}", escape_controls(&text)),
            Message::Warning(text) => stderr_line(&format!("warning: {}", escape_controls(&text))),
        }
    }

    fn progress(&self, total: u64, label: &str) -> ProgressBar {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{msg:24} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(escape_controls(label));
        bar
    }
}

/// `text` safe to show on a terminal: control characters other than line breaks and tabs (an
/// escape sequence or a bell in a file name) written as `\u{1b}`, so that a hostile name can
/// neither recolour nor rewrite the screen.
pub fn escape_controls(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\t' => c.to_string(),
            c if c.is_control() => c.escape_unicode().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// The one line an error shows on the terminal: its causes joined by `: `, libtorch's C++ stack
/// frames left out unless `RUST_BACKTRACE` asks for them, control characters escaped.
pub fn error_line(error: &anyhow::Error) -> String {
    error_text(error, std::env::var("RUST_BACKTRACE").is_ok_and(|v| v != "0"))
}

/// [`error_line`], with libtorch's frames when `verbose`.
fn error_text(error: &anyhow::Error, verbose: bool) -> String {
    let full = format!("{error:#}");
    let text = match full.find("Exception raised from") {
        Some(at) if !verbose => format!("{} (libtorch's stack: RUST_BACKTRACE=1)", full[..at].trim_end()),
        _ => full,
    };
    escape_controls(&text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Keeps the messages in memory; progress bars are hidden.
#[derive(Default)]
pub struct Capture {
    messages: Mutex<Vec<Message>>,
}

impl Capture {
    /// The messages so far, oldest first.
    pub fn messages(&self) -> Vec<Message> {
        self.messages.lock().expect("capture lock").clone()
    }
}

impl Reporter for Capture {
    fn message(&self, message: Message) {
        self.messages.lock().expect("capture lock").push(message);
    }

    fn progress(&self, total: u64, _label: &str) -> ProgressBar {
        let bar = ProgressBar::hidden();
        bar.set_length(total);
        bar
    }
}

static INSTALLED: OnceLock<Arc<dyn Reporter>> = OnceLock::new();

thread_local! {
    static SCOPED: RefCell<Option<Arc<dyn Reporter>>> = const { RefCell::new(None) };
}

/// Makes `reporter` the process-wide one (the binary's; once, the first call wins).
pub fn install(reporter: Arc<dyn Reporter>) {
    let _ = INSTALLED.set(reporter);
}

/// Runs `work` with every message of this thread going to a new [`Capture`], returned with the
/// result.
pub fn capture<T>(work: impl FnOnce() -> T) -> (T, Vec<Message>) {
    let capture = Arc::new(Capture::default());
    let previous = SCOPED.with(|s| s.replace(Some(capture.clone())));
    let result = work();
    SCOPED.with(|s| *s.borrow_mut() = previous);
    (result, capture.messages())
}

/// The reporter in force on this thread: a scoped capture, else the installed one, else
/// [`Terminal`].
fn current() -> Arc<dyn Reporter> {
    SCOPED.with(|s| s.borrow().clone()).or_else(|| INSTALLED.get().cloned()).unwrap_or_else(|| Arc::new(Terminal))
}

/// The rank of this process in a launch of several, once [`as_rank`] said it.
static RANK: OnceLock<usize> = OnceLock::new();

/// Marks this process as rank `rank` of a launch (torchrun, SLURM). Rank 0 reports for all;
/// the others show only their warnings, marked with their rank, and no progress bars.
pub fn as_rank(rank: usize) {
    let _ = RANK.set(rank);
}

/// The rank of this process when it is not the one that reports.
fn follower() -> Option<usize> {
    RANK.get().copied().filter(|&rank| rank > 0)
}

/// Reports a line of information.
pub fn info(text: impl Into<String>) {
    if follower().is_none() {
        current().message(Message::Info(text.into()));
    }
}

/// Reports a warning.
pub fn warn(text: impl Into<String>) {
    let text = match follower() {
        Some(rank) => format!("rank {rank}: {}", text.into()),
        None => text.into(),
    };
    current().message(Message::Warning(text));
}

/// A progress bar over `total` items labelled `label`.
pub fn progress(total: u64, label: &str) -> ProgressBar {
    if follower().is_some() {
        let bar = ProgressBar::hidden();
        bar.set_length(total);
        return bar;
    }
    current().progress(total, label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_collects_this_threads_messages_in_order() {
        let ((), messages) = capture(|| {
            info("one");
            warn("two");
            let bar = progress(3, "work");
            bar.inc(3);
            assert!(bar.is_hidden());
        });
        assert_eq!(messages, [Message::Info("one".into()), Message::Warning("two".into())]);
        let ((), nested) = capture(|| {
            let ((), inner) = capture(|| info("inner"));
            assert_eq!(inner.len(), 1);
            info("outer");
        });
        assert_eq!(nested, [Message::Info("outer".into())]);
    }

    #[test]
    fn errors_are_one_line_without_libtorch_frames_or_control_characters() {
        let torch = "shapes cannot be multiplied (1x7 and 32x32)\nException raised from meta at \
                     /pytorch/aten/src/ATen/native/LinearAlgebra.cpp:191 (most recent call first):\n\
                     frame #0: c10::Error::Error(...) + 0x98 (0x7f in libc10.so)\nframe #1: ...";
        let error = anyhow::anyhow!("{torch}").context("case 3");
        assert_eq!(
            error_text(&error, false),
            "case 3: shapes cannot be multiplied (1x7 and 32x32) (libtorch's stack: RUST_BACKTRACE=1)"
        );
        assert!(error_text(&error, true).contains("frame #0: c10::Error::Error"));
        let named = anyhow::anyhow!("cannot read red\u{1b}[31m.png\u{7}: no such file");
        assert_eq!(error_text(&named, false), "cannot read red\\u{1b}[31m.png\\u{7}: no such file");
    }
}
