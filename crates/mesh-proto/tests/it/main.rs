//! Integration tests of the wire contract.

mod golden;
