//! A child's log file that never grows past a size: when the next line would cross it, the file becomes
//! `<name>.log.1` (replacing the previous one) and a fresh file starts. A child flooding its output costs at most
//! two files of disk, and `mesh logs` keeps showing the newest lines.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Default size of one log file before it is rotated: 16 MiB (two files at most per process).
pub const LOG_LIMIT: u64 = 16 * 1024 * 1024;

/// An append-only, size-bounded log file (see the module doc).
pub struct RotatingLog {
    path: PathBuf,
    file: File,
    written: u64,
    limit: u64,
}

impl RotatingLog {
    /// Opens (or creates, private) the log at `path`, counting what it holds already toward `limit`.
    pub fn open(path: &Path, limit: u64) -> io::Result<Self> {
        let file = crate::private::open_append(path)?;
        let written = file.metadata()?.len();
        Ok(Self { path: path.to_path_buf(), file, written, limit: limit.max(1) })
    }

    /// The previous generation's path: `<path>.1`.
    pub fn previous(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".1");
        PathBuf::from(name)
    }

    /// Appends one line (a newline is added), rotating first if it would cross the limit.
    pub fn line(&mut self, text: &str) -> io::Result<()> {
        let len = text.len() as u64 + 1;
        if self.written > 0 && self.written + len > self.limit {
            self.rotate()?;
        }
        writeln!(self.file, "{text}")?;
        self.written += len;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        std::fs::rename(&self.path, Self::previous(&self.path))?;
        self.file = crate::private::open_append(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_keeps_two_files_within_the_limit_and_the_newest_lines() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("agent.log");
        std::fs::write(&path, "x".repeat(500)).expect("an old log");
        let mut log = RotatingLog::open(&path, 1_000).expect("open");
        for i in 0..10_000 {
            log.line(&format!("line {i:05} {}", "y".repeat(40))).expect("write");
        }
        let size = |p: &Path| std::fs::metadata(p).expect("exists").len();
        assert!(size(&path) <= 1_000 && size(&RotatingLog::previous(&path)) <= 1_000);
        let newest = std::fs::read_to_string(&path).expect("read");
        assert!(newest.trim_end().ends_with(&format!("line 09999 {}", "y".repeat(40))), "{newest}");
        assert!(!tmp.path().join("agent.log.2").exists(), "one previous generation only");
    }
}
