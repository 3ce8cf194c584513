//! The foreground view of `mesh up`: a live status line per process (indicatif) at the bottom of the terminal, and
//! the children's output multiplexed above it as `name | line`. Without a terminal, plain lines only.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};

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

/// Reads one line into `line` (without its newline), keeping at most `max` bytes of it and skipping the rest, so
/// that a writer that never ends its line (a child printing gigabytes, a client sending garbage) cannot make the
/// supervisor hold it all. Returns how many bytes were skipped, or `None` at the end of the stream.
pub(crate) async fn read_line_capped<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<usize>> {
    line.clear();
    let (mut skipped, mut any) = (0, false);
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(any.then_some(skipped));
        }
        any = true;
        let (content, used, ended) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (&chunk[..i], i + 1, true),
            None => (chunk, chunk.len(), false),
        };
        let keep = content.len().min(max.saturating_sub(line.len()));
        line.extend_from_slice(&content[..keep]);
        skipped += content.len() - keep;
        reader.consume(used);
        if ended {
            return Ok(Some(skipped));
        }
    }
}

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
        let skipped = match read_line_capped(&mut reader, &mut line, MAX_LINE).await {
            Ok(Some(skipped)) => skipped,
            Ok(None) | Err(_) => return,
        };
        while line.last().is_some_and(|b| *b == b'\r') {
            line.pop();
        }
        let mut text = String::from_utf8_lossy(&line).into_owned();
        if skipped > 0 {
            text.push_str(&format!(" …[{skipped} more bytes cut]"));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_line_without_end_is_held_only_up_to_the_cap() {
        let mut input = vec![b'x'; 1_000_000];
        input.extend_from_slice(b"\nshort\r\nlast");
        let mut reader = BufReader::with_capacity(4096, &input[..]);
        let mut line = Vec::new();
        assert_eq!(read_line_capped(&mut reader, &mut line, 100).await.expect("read"), Some(999_900));
        assert_eq!(line.len(), 100);
        assert_eq!(read_line_capped(&mut reader, &mut line, 100).await.expect("read"), Some(0));
        assert_eq!(line, b"short\r");
        assert_eq!(read_line_capped(&mut reader, &mut line, 100).await.expect("read"), Some(0));
        assert_eq!(line, b"last", "the last line needs no newline");
        assert_eq!(read_line_capped(&mut reader, &mut line, 100).await.expect("read"), None);
    }
}
