//! `mesh view`: a live page of the mesh in the browser. It reads what any observer can (the topology manager's
//! snapshot in the store, then the changelog, proposals, votes and decisions topics, verified with the deployment's
//! secret as the managers verify them, and the supervisor's event log in the state directory) into a
//! [`model::Model`], and pushes a [`model::Frame`] to every open page over server-sent events whenever it changed.
//! It writes nothing anywhere.

pub(crate) mod model;
mod serve;
mod tail;

pub(crate) use serve::{ViewOptions, bind, run};
