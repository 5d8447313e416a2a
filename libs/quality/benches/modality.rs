//! Throughput of the modality checks: images per second for every image check on generated
//! 256 × 256 PNG pictures, rows per second for every text check on generated texts.
//!
//! `cargo bench -p trustmesh-quality --bench modality [-- IMAGES TEXTS]` (defaults: 10,000 images,
//! 100,000 texts). Prints wall time and throughput; generation is not timed.

use std::time::Instant;

use trustmesh_quality::modality::{
    ImageOptions, ModalityColumn, TextOptions, check_images, check_texts, synth,
};

/// Rows flagged per check, as `name n, ...` (checks flagging none left out).
fn flags(columns: &[ModalityColumn]) -> String {
    let counts: Vec<String> = columns
        .iter()
        .filter(|c| c.num_issues() > 0)
        .map(|c| format!("{} {}", c.name, c.num_issues()))
        .collect();
    counts.join(", ")
}

fn main() {
    // `cargo bench` passes `--bench`; the sizes are the positional numbers.
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let images = sizes.first().copied().unwrap_or(10_000);
    let texts = sizes.get(1).copied().unwrap_or(100_000);
    let threads = rayon::current_num_threads();

    let data = synth::bench_images(images, 256, 42);
    let mb = data.iter().map(Vec::len).sum::<usize>() as f64 / 1e6;
    let start = Instant::now();
    let report = check_images(&data, &ImageOptions::default());
    let secs = start.elapsed().as_secs_f64();
    let flagged = flags(&report.columns);
    println!(
        "images: {images} × 256×256 PNG ({mb:.1} MB), all 9 checks: {secs:.2} s, {:.0} images/s \
         ({threads} threads; flags: {flagged})",
        images as f64 / secs
    );

    let data = synth::bench_texts(texts, 42);
    let start = Instant::now();
    let report = check_texts(&data, &TextOptions::default());
    let secs = start.elapsed().as_secs_f64();
    let flagged = flags(&report.columns);
    println!(
        "texts: {texts} rows, all 5 checks: {secs:.2} s, {:.0} rows/s ({threads} threads; \
         flags: {flagged})",
        texts as f64 / secs
    );
}
