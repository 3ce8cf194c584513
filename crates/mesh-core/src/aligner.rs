//! Tick alignment across input partitions, so that the graph is a pure function of the log.
//!
//! STUB: API fixed, bodies to be written (see the helper's task).

/// A window closed by tick markers present in every source: the events that fell before tick `tick`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window<E> {
    /// The tick that closed the window.
    pub tick: u64,
    /// The tick that closed the previous window (`None` for the first window ever).
    pub previous_tick: Option<u64>,
    /// Events in canonical order: by source index, then in the order each source delivered them.
    pub events: Vec<E>,
}

/// Aligns tick markers from several ordered sources (Kafka partitions).
#[derive(Debug, Clone)]
pub struct TickAligner<E> {
    _e: std::marker::PhantomData<E>,
}

impl<E> TickAligner<E> {
    /// An aligner over `sources` sources, whose last closed window was `last_closed` (from a snapshot).
    pub fn new(_sources: usize, _last_closed: Option<u64>) -> Self { todo!() }
    /// An event read from `source` at `position` (its Kafka offset).
    pub fn push_event(&mut self, _source: usize, _position: i64, _event: E) -> Vec<Window<E>> { todo!() }
    /// A tick marker read from `source` at `position`.
    pub fn push_marker(&mut self, _source: usize, _position: i64, _tick: u64) -> Vec<Window<E>> { todo!() }
    /// The last closed tick.
    pub fn last_closed(&self) -> Option<u64> { todo!() }
    /// Per source, the position to resume reading from so that a restart rebuilds exactly the open state.
    pub fn resume_positions(&self) -> Vec<Option<i64>> { todo!() }
    /// Events held back waiting for other sources' markers (for memory accounting and status).
    pub fn buffered(&self) -> usize { todo!() }
}
