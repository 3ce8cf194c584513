//! `mesh view`: a live page of the mesh in the browser. It reads what any observer can (the topology manager's
//! snapshot in the store, then the changelog, proposals, votes and decisions topics, verified with the deployment's
//! secret as the managers verify them, and the supervisor's event log in the state directory) into a
//! [`model::Model`], and pushes a [`model::Frame`] to every open page over server-sent events whenever it changed.
//! It writes nothing anywhere.
//!
//! It rebuilds the graph the way recovery does: it loads the topology manager's snapshot from the store and feeds the
//! changelog from the snapshot's position to a `ChangelogFollower` (`mesh_node::topology`), the same
//! assembler-and-apply step the recovering manager and `replay_changelog` use, so the page shows exactly the graph and
//! roster the manager has, window by window. A window refused as a duplicate or a stale writer's changes nothing, as in
//! recovery; one that leaves a gap means the view's chain and the log parted, and the view starts again from the newest
//! snapshot. It reads decisions from the decisions topic, tallies the votes it reads for the proposals it reads (one
//! per voter of the set, the first counting, as the manager counts), and checks every record's tag with the
//! deployment's secret before it counts it.

pub(crate) mod model;
mod serve;
mod tail;

pub(crate) use serve::{ViewOptions, bind, run};
