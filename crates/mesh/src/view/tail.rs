//! The supervisor's event log (`events.jsonl`, which `cargo xtask chaos` appends its faults to), read on from where
//! the last read ended, as `mesh view` shows it.

use std::collections::VecDeque;
use std::io::{BufRead, Seek};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use mesh_supervisor::Event;

/// Where the last read ended: the file (by inode, so a new log is read from its start) and the byte after the last
/// whole line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    inode: u64,
    offset: u64,
}

/// The log, read on from where the last read ended: the newest `first` lines at first, then each new line once.
pub(crate) struct EventTail {
    path: PathBuf,
    first: usize,
    position: Option<Position>,
}

impl EventTail {
    /// A tail of `path` whose first read returns at most the newest `first` events.
    pub(crate) fn new(path: PathBuf, first: usize) -> Self {
        Self { path, first, position: None }
    }

    /// The events appended since the last read (a line still being written is left for the next one). A log that
    /// was replaced or cut shorter is read again from its start.
    pub(crate) fn read_new(&mut self) -> Vec<Event> {
        let Ok(file) = std::fs::File::open(&self.path) else { return Vec::new() };
        let Ok(meta) = file.metadata() else { return Vec::new() };
        let start = match self.position {
            Some(p) if p.inode == meta.ino() && p.offset <= meta.len() => p.offset,
            _ => 0,
        };
        // The first read of a long log keeps only the newest lines as it goes, never the whole log.
        let keep = if self.position.is_none() { self.first } else { usize::MAX };
        let mut file = std::io::BufReader::new(file);
        if file.seek(std::io::SeekFrom::Start(start)).is_err() {
            return Vec::new();
        }
        let mut events = VecDeque::new();
        let mut line = String::new();
        let mut offset = start;
        loop {
            line.clear();
            match file.read_line(&mut line) {
                Ok(n) if n > 0 && line.ends_with('\n') => {
                    offset += n as u64;
                    if let Ok(event) = serde_json::from_str::<Event>(&line) {
                        events.push_back(event);
                        if events.len() > keep {
                            events.pop_front();
                        }
                    }
                }
                _ => break,
            }
        }
        self.position = Some(Position { inode: meta.ino(), offset });
        events.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: u64) -> String {
        format!("{{\"at_ms\":{n},\"process\":\"agent-sales\",\"event\":\"ready\"}}\n")
    }

    fn times(events: &[Event]) -> Vec<u64> {
        events.iter().map(|e| e.at_ms).collect()
    }

    #[test]
    fn each_complete_line_is_read_once_starting_from_the_newest_few() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("events.jsonl");
        let mut text: String = (0..100).map(line).collect();
        std::fs::write(&path, &text).expect("write");
        let mut tail = EventTail::new(path.clone(), 40);
        let first = tail.read_new();
        assert_eq!(first.len(), 40);
        assert_eq!(first.last().map(|e| e.at_ms), Some(99));
        assert!(tail.read_new().is_empty(), "nothing new");
        // A line half written is left for the next read.
        text.push_str(&line(100));
        text.push_str("{\"at_ms\":101,");
        std::fs::write(&path, &text).expect("write");
        assert_eq!(times(&tail.read_new()), [100]);
        text.push_str("\"process\":\"supervisor\",\"event\":\"stopped\"}\n");
        std::fs::write(&path, &text).expect("write");
        assert_eq!(times(&tail.read_new()), [101]);
    }

    #[test]
    fn a_log_cut_shorter_or_replaced_is_read_from_its_start() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, (0..5).map(line).collect::<String>()).expect("write");
        let mut tail = EventTail::new(path.clone(), 40);
        assert_eq!(tail.read_new().len(), 5);
        // A new deployment in the same state directory starts a new, shorter log.
        std::fs::write(&path, line(7)).expect("write");
        assert_eq!(times(&tail.read_new()), [7]);
        // Replaced by another file of the same length or longer: a new inode.
        let other = dir.path().join("other.jsonl");
        std::fs::write(&other, (8..10).map(line).collect::<String>()).expect("write");
        std::fs::rename(&other, &path).expect("rename");
        assert_eq!(times(&tail.read_new()), [8, 9]);
    }
}
