//! `modality-fixtures`: writes the image and text fixtures with planted issues
//! ([`trustmesh_quality::modality::synth`]) under `DIR` (default `libs/quality/fixtures/modality`):
//! `images/<class>/<file>`, `images.csv` (path, planted types) and `texts.csv` (text, planted types,
//! PII kinds).
//!
//! Usage: `cargo run -p trustmesh-quality --bin modality-fixtures [-- DIR]`

use std::path::PathBuf;

use trustmesh_quality::modality::synth;

fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/modality"),
        PathBuf::from,
    );
    let images = synth::image_fixtures(synth::FIXTURE_SEED);
    if dir.join("images").exists() {
        std::fs::remove_dir_all(dir.join("images"))?;
    }
    for image in &images {
        let path = dir.join("images").join(&image.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, &image.bytes)?;
    }
    std::fs::write(dir.join("images.csv"), synth::images_csv(&images))?;
    let texts = synth::text_fixtures(synth::FIXTURE_SEED);
    std::fs::write(dir.join("texts.csv"), synth::texts_csv(&texts))?;
    println!(
        "{}: {} images, {} texts",
        dir.display(),
        images.len(),
        texts.len()
    );
    Ok(())
}
