//! The topology manager's changelog on the wire: a sealed [`Window`] as one or more `window` records, and back.
//!
//! Most windows are one record. One with many reinforced edges (500 agents talking for a decay interval touch tens
//! of thousands) is split so that every record stays far below Kafka's default 1 MB limit: part 0 carries the roster
//! changes and the ranges, each part a slice of the reinforcements. Readers apply a window only when all its parts,
//! from one writer, arrived in order; a window cut short by a crash is never applied, and its successor re-cuts the
//! same input from the same positions.

use mesh_core::topology::Window;

use crate::records::WindowBody;

/// Reinforcements per `window` record: at about 40 bytes each, some 320 KB.
pub const REINFORCEMENTS_PER_PART: usize = 8_000;

/// The records of one window, in the order they must be appended.
pub fn split(window: Window, writer: &str, interval_ms: u64, per_part: usize) -> Vec<WindowBody> {
    let per_part = per_part.max(1);
    let Window { seq, tick, roster, reinforcements, spans } = window;
    let mut chunks: Vec<Vec<_>> = Vec::new();
    let mut rest = reinforcements.into_iter().peekable();
    while rest.peek().is_some() {
        chunks.push(rest.by_ref().take(per_part).collect());
    }
    if chunks.is_empty() {
        chunks.push(Vec::new());
    }
    let parts = u32::try_from(chunks.len()).unwrap_or(u32::MAX);
    let mut first = Some((roster, spans));
    chunks
        .into_iter()
        .zip(0u32..)
        .map(|(reinforcements, part)| {
            let (roster, spans) = first.take().unwrap_or_default();
            WindowBody {
                writer: writer.to_owned(),
                interval_ms,
                part,
                parts,
                window: Window { seq, tick, roster, reinforcements, spans },
            }
        })
        .collect()
}

/// Puts windows back together from their parts, in log order.
#[derive(Debug, Default)]
pub struct Assembler {
    partial: Option<WindowBody>,
}

impl Assembler {
    /// An assembler with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next `window` record of the changelog: the whole window once its last part arrived. A part that does not
    /// continue the pending window (another writer, another window, a part missing) drops what was pending.
    pub fn push(&mut self, part: WindowBody) -> Option<(Window, u64)> {
        if part.part == 0 {
            self.partial = Some(part);
        } else {
            match &mut self.partial {
                Some(p)
                    if p.writer == part.writer
                        && p.window.seq == part.window.seq
                        && p.part + 1 == part.part
                        && p.parts == part.parts =>
                {
                    p.part = part.part;
                    p.window.reinforcements.extend(part.window.reinforcements);
                }
                _ => {
                    self.partial = None;
                    return None;
                }
            }
        }
        let complete = self.partial.as_ref().is_some_and(|p| p.part + 1 >= p.parts);
        if complete { self.partial.take().map(|p| (p.window, p.interval_ms)) } else { None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::AgentId;
    use mesh_core::topology::{Reinforcement, Span};

    fn window(edges: u32) -> Window {
        let id = |i: u32| AgentId::new(format!("a{i}")).expect("valid");
        Window {
            seq: 4,
            tick: 9,
            roster: vec![],
            reinforcements: (0..edges).map(|i| Reinforcement(id(i), id(i + 1), i + 1)).collect(),
            spans: vec![Span { topic: "t.messages".into(), partition: 0, from: 0, to: 10 }],
        }
    }

    #[test]
    fn a_window_comes_back_whole_from_its_parts() {
        for (edges, expected_parts) in [(0, 1), (3, 1), (10, 4)] {
            let w = window(edges);
            let parts = split(w.clone(), "topology-1-2", 200, 3);
            assert_eq!(parts.len(), expected_parts);
            let mut a = Assembler::new();
            let mut out = Vec::new();
            for p in parts {
                out.extend(a.push(p));
            }
            assert_eq!(out, vec![(w, 200)]);
        }
    }

    #[test]
    fn a_window_cut_short_is_never_applied_and_does_not_spoil_the_next() {
        let mut a = Assembler::new();
        let torn = split(window(10), "topology-1-1", 200, 3);
        a.push(torn[0].clone());
        a.push(torn[1].clone());
        // The next run writes the window again from scratch.
        let again = split(window(10), "topology-2-1", 200, 3);
        let mut out = Vec::new();
        for p in again.iter().cloned() {
            out.extend(a.push(p));
        }
        assert_eq!(out.len(), 1);
        // A stray later part of the torn window (a zombie writer) is ignored.
        let mut b = Assembler::new();
        b.push(again[0].clone());
        assert_eq!(b.push(torn[1].clone()), None);
        assert_eq!(b.push(again[1].clone()), None, "what was pending was dropped");
    }
}
