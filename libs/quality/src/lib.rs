//! The quality engine: confident learning, dataset issue detectors and per-row trust scores, pure Rust.
