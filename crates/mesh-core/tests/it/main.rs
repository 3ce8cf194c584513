//! Cross-cutting properties of the core, through its public API only.

mod safety;
