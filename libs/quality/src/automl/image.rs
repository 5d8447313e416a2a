//! Image features from encoded images: an 8-bin histogram per RGB channel, a 9-bin histogram of
//! gradient orientations (unsigned, magnitude-weighted) in each cell of a 2 × 2 grid over a 64 × 64
//! grey image, and an 8 × 8 RGB thumbnail. Decoding and resizing by the `image` crate.

use image::imageops::FilterType;
use image::{GrayImage, RgbImage};
use rayon::prelude::*;

use super::table::Column;
use crate::QualityError;

/// Bins per colour channel.
const COLOUR_BINS: usize = 8;
/// Orientation bins over [0, π).
const ORIENTATION_BINS: usize = 9;
/// Side of the grey image the gradients are taken on, and cells per side.
const GRADIENT_SIDE: u32 = 64;
const GRID: u32 = 2;
/// Side of the thumbnail.
const THUMB_SIDE: u32 = 8;

/// Features per image.
pub(super) const FEATURES: usize = 3 * COLOUR_BINS
    + (GRID * GRID) as usize * ORIENTATION_BINS
    + (3 * THUMB_SIDE * THUMB_SIDE) as usize;

/// Names of the features of image column `name`.
pub(super) fn names(name: &str) -> Vec<String> {
    let colour = (0..3 * COLOUR_BINS).map(|i| format!("{name}.colour[{i}]"));
    let hog =
        (0..(GRID * GRID) as usize * ORIENTATION_BINS).map(|i| format!("{name}.gradient[{i}]"));
    let thumb =
        (0..(3 * THUMB_SIDE * THUMB_SIDE) as usize).map(|i| format!("{name}.thumbnail[{i}]"));
    colour.chain(hog).chain(thumb).collect()
}

fn colour_histogram(rgb: &RgbImage, out: &mut Vec<f32>) {
    let mut hist = [0.0f32; 3 * COLOUR_BINS];
    for p in rgb.pixels() {
        for (c, v) in p.0.iter().enumerate() {
            hist[c * COLOUR_BINS + usize::from(*v) * COLOUR_BINS / 256] += 1.0;
        }
    }
    let total = (rgb.width() * rgb.height()).max(1) as f32;
    out.extend(hist.iter().map(|h| h / total));
}

fn gradient_histogram(grey: &GrayImage, out: &mut Vec<f32>) {
    let side = GRADIENT_SIDE;
    let cell = side / GRID;
    let mut hist = vec![0.0f32; (GRID * GRID) as usize * ORIENTATION_BINS];
    let at = |x: u32, y: u32| f32::from(grey.get_pixel(x, y).0[0]);
    for y in 1..side - 1 {
        for x in 1..side - 1 {
            let gx = at(x + 1, y) - at(x - 1, y);
            let gy = at(x, y + 1) - at(x, y - 1);
            let magnitude = (gx * gx + gy * gy).sqrt();
            if magnitude == 0.0 {
                continue;
            }
            let angle = gy.atan2(gx).rem_euclid(std::f32::consts::PI);
            let bin = ((angle / std::f32::consts::PI * ORIENTATION_BINS as f32) as usize)
                .min(ORIENTATION_BINS - 1);
            let c = ((y / cell) * GRID + x / cell) as usize;
            hist[c * ORIENTATION_BINS + bin] += magnitude;
        }
    }
    let norm = hist.iter().map(|h| h * h).sum::<f32>().sqrt();
    out.extend(hist.iter().map(|h| if norm > 0.0 { h / norm } else { 0.0 }));
}

/// The features of one encoded image.
fn features(bytes: &[u8]) -> Result<Vec<f32>, image::ImageError> {
    let decoded = image::load_from_memory(bytes)?;
    let rgb = decoded.to_rgb8();
    let mut out = Vec::with_capacity(FEATURES);
    colour_histogram(&rgb, &mut out);
    let grey = image::imageops::resize(
        &decoded.to_luma8(),
        GRADIENT_SIDE,
        GRADIENT_SIDE,
        FilterType::Triangle,
    );
    gradient_histogram(&grey, &mut out);
    let thumb = image::imageops::resize(&rgb, THUMB_SIDE, THUMB_SIDE, FilterType::Triangle);
    out.extend(
        thumb
            .pixels()
            .flat_map(|p| p.0)
            .map(|v| f32::from(v) / 255.0),
    );
    Ok(out)
}

/// Per row, the image's features (`None` when missing).
///
/// # Errors
/// [`QualityError::InvalidColumn`] naming the first row whose image cannot be decoded, or a text
/// column given the image role.
pub(super) fn featurize(column: &Column) -> Result<Vec<Option<Vec<f32>>>, QualityError> {
    if !column.is_binary() {
        return Err(QualityError::InvalidColumn {
            column: column.name().to_owned(),
            row: None,
            reason: "the image role needs a binary column of encoded images".into(),
        });
    }
    (0..column.len())
        .into_par_iter()
        .map(|i| {
            column
                .bytes(i)
                .map(|b| {
                    features(b).map_err(|e| QualityError::InvalidColumn {
                        column: column.name().to_owned(),
                        row: Some(i),
                        reason: format!("not a decodable image: {e}"),
                    })
                })
                .transpose()
        })
        .collect::<Vec<_>>()
        // NOTE: in row order, so the error names the first bad row whatever the thread timing
        // (rayon's collect into a Result keeps whichever error a thread hit first).
        .into_iter()
        .collect()
}
