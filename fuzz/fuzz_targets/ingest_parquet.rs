//! Ingest's Parquet upload parser on arbitrary bytes: a clear rejection or a consistent table, never a
//! panic out of `parse`. Seeds: `fuzz/corpus/ingest_parquet` (pyarrow-written files and the corrupt
//! footer that once crashed the reader).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        // NOTE: `parse` catches the reader's own panics on corrupt metadata (by design); libFuzzer's
        // hook would abort on those before they unwind. A panic escaping `parse` still fails the run
        // (libfuzzer-sys aborts on it).
        std::panic::set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| trustmesh_fuzz::ingest_parquet(data)
);
