//! Integration tests of the whole mesh: real `mesh` processes against a real Apache Kafka broker and a real
//! redis-server, provisioned by `mesh-fixtures` (`cargo xtask test` starts one of each and shares it).

mod bench;
mod demo;
mod deployment;
mod failure;
mod forgery;
mod hostile;
mod metrics;
mod reader;
mod recovery;
mod secure;
mod stop;
mod supervisor;
mod support;
mod view;
mod wire;
