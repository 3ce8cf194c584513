//! The foreground view of `mesh up`: a live status line per process (indicatif) at the bottom of the terminal, and
//! the children's output multiplexed above it as `name | line`. Without a terminal, plain lines only.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::rotating::RotatingLog;

/// Where the supervisor writes what a person watching the terminal should see.
#[derive(Clone)]
pub(crate) struct Console {
    multi: Option<MultiProgress>,
    color: bool,
}

/// One process's status line.
pub(crate) struct StatusLine(Option<ProgressBar>);

impl Console {
    /// Status lines only on a terminal; `color` for ANSI prefixes.
    pub(crate) fn new(color: bool) -> Self {
        let multi = std::io::stdout()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stdout_with_hz(4)));
        Self { multi, color }
    }

    /// Plain lines, for a detached supervisor's log or a pipe.
    pub(crate) fn plain() -> Self {
        Self { multi: None, color: false }
    }

    /// A line of output, with a `name |` prefix (coloured with ANSI code `code`, if colours are on).
    pub(crate) fn line(&self, name: &str, code: u8, text: &str) {
        let prefix = if self.color { format!("\x1b[{code}m{name:>16} |\x1b[0m") } else { format!("{name:>16} |") };
        let line = format!("{prefix} {text}");
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None => {
                let _ = writeln!(std::io::stdout().lock(), "{line}");
            }
        }
    }

    /// A status line for a process, shown while the supervisor runs.
    pub(crate) fn status_line(&self, name: &str) -> StatusLine {
        StatusLine(self.multi.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{prefix:>16.bold} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(name.to_owned());
            bar
        }))
    }

    /// Removes the status lines (before the final messages of a stop).
    pub(crate) fn clear(&self) {
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}

impl StatusLine {
    /// Shows `text` on the line.
    pub(crate) fn set(&self, text: String) {
        if let Some(bar) = &self.0 {
            bar.set_message(text);
        }
    }
}

/// Longest line kept whole in logs and on the terminal; longer lines are cut and say by how much.
const MAX_LINE: usize = 64 * 1024;

/// Copies a child's output stream, line by line, to its log file (timestamped) and to the console.
pub(crate) async fn pump_output(
    name: String,
    console: Option<(Console, u8)>,
    stream: impl AsyncRead + Unpin,
    log: Arc<Mutex<RotatingLog>>,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        let mut text = String::from_utf8_lossy(&line[..line.len().min(MAX_LINE)]).into_owned();
        if line.len() > MAX_LINE {
            text.push_str(&format!(" …[{} more bytes cut]", line.len() - MAX_LINE));
        }
        let stamp = humantime::format_rfc3339_millis(SystemTime::now());
        if let Ok(mut f) = log.lock() {
            let _ = f.line(&format!("{stamp} {text}"));
        }
        if let Some((console, code)) = &console {
            console.line(&name, *code, &text);
        }
    }
}
