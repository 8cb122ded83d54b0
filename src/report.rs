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

/// Prints information on stdout, warnings on stderr (`warning: ...`), and draws progress bars
/// on stderr when it is a terminal.
pub struct Terminal;

impl Reporter for Terminal {
    fn message(&self, message: Message) {
        match message {
            Message::Info(text) => println!("{text}"),
            Message::Warning(text) => eprintln!("warning: {text}"),
        }
    }

    fn progress(&self, total: u64, label: &str) -> ProgressBar {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{msg:24} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(label.to_owned());
        bar
    }
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

/// Reports a line of information.
pub fn info(text: impl Into<String>) {
    current().message(Message::Info(text.into()));
}

/// Reports a warning.
pub fn warn(text: impl Into<String>) {
    current().message(Message::Warning(text.into()));
}

/// A progress bar over `total` items labelled `label`.
pub fn progress(total: u64, label: &str) -> ProgressBar {
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
}
