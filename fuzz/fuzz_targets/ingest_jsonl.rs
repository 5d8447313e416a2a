//! Ingest's JSONL upload parser on arbitrary bytes: a clear rejection or a consistent table, never a
//! panic. Seeds: `fuzz/corpus/ingest_jsonl`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| trustmesh_fuzz::ingest_jsonl(data));
