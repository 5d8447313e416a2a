//! Datalab issue types and the per-row trust score.
