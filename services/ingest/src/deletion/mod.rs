//! Deletion: the `ingest-deletion` consumer of `deletion.requested` ([`consumer`]).

pub(crate) mod consumer;
