//! What several test binaries of this package share, compiled into each of them (`mod common;`):
//! the multi-process layout ([`layout`]: every service its own process over a 3-node NATS cluster),
//! the standalone mesh in the test's process ([`mesh`]), checks on the JetStream streams and
//! consumers ([`streams`]) and the files the check tests write and read ([`files`]).

pub(crate) mod files;
pub(crate) mod layout;
pub(crate) mod mesh;
pub(crate) mod streams;
