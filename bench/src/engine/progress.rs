//! The phase bars on stderr: one per phase (broker warm-up, start-up, joining, warm-up, measuring, idle, the
//! baselines), and the phase's last line as plain text when stderr is not a terminal (logs, CI), where a bar draws
//! nothing.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A phase's bar: `len` steps (seconds, processes or edges), labelled `what`.
pub(crate) fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{spinner} {prefix:<12} [{bar:30}] {pos}/{len} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    pb.set_style(style);
    pb.set_prefix(what.to_owned());
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// Ends a phase: the bar's last line on a terminal, a plain line otherwise (logs, CI).
pub(crate) fn done(pb: &ProgressBar, message: String) {
    if pb.is_hidden() {
        eprintln!("{:<12} {message}", pb.prefix());
    }
    pb.finish_with_message(message);
}
