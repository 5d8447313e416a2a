//! Image checks with CleanVision's definitions (reference §10): `dark`, `light`, `blurry`,
//! `low_information`, `odd_aspect_ratio`, `odd_size`, `grayscale`, `exact_duplicate` and
//! `near_duplicate`, all from one decode per image, images in parallel (rayon).
//!
//! Where we differ from CleanVision, on purpose:
//! - `grayscale` looks at the pixels (at most 1% of pixels with a channel spread above
//!   [`GREY_SPREAD`]), not only at the file's mode, so RGB files of grey pictures are flagged.
//! - `near_duplicate` joins perceptual hashes within a Hamming tolerance (CleanVision needs equal
//!   hashes), so resized and re-encoded copies are caught; sets whose images all have equal pixels are
//!   exact duplicates only, and flat images (no structure for a perceptual hash) take no part.
//! - `blurry` leaves out the border pixels, which PIL's edge filter copies unfiltered (they put the
//!   image's brightness into the edge statistic, so small bright images were never blurry).
//! - `odd_size` with IQR = 0 flags sizes off the median by more than half of it (see `iqr_scores`).
//! - A file that cannot be decoded, or is over the pixel limit, is not analyzed (with the reason)
//!   instead of failing the run; 16-bit images are scaled properly.

use std::collections::{HashMap, HashSet};
use std::io::Cursor;

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, ImageReader, Limits, RgbImage};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::{DisjointSets, ModalityColumn, hamming_sets, iqr_scores, set_column, threshold_column};

/// A pixel whose largest and smallest channel differ by at most this (of 255) is grey; JPEG's
/// chroma rounding stays well below it on grey pictures.
const GREY_SPREAD: u8 = 6;
/// The blur check works on the image downscaled to this side at most (CleanVision's
/// `MAX_RESOLUTION_FOR_BLURRY_DETECTION`).
const BLUR_SIDE: u32 = 64;
/// Side of the grey thumbnail the perceptual hash is taken on, and of its low-frequency block.
const HASH_SIDE: usize = 32;
const HASH_LOW: usize = 8;
/// Below this standard deviation (of 255) the hash thumbnail is flat: its hash is noise.
const FLAT_STD: f64 = 2.0;
/// Brightness histogram bins per unit of 8-bit brightness (percentiles to 1/4 of a level).
const BRIGHTNESS_STEPS: f32 = 4.0;

/// An image check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImageIssueType {
    /// 99th-percentile brightness below the threshold.
    Dark,
    /// 5th-percentile brightness above 1 − threshold.
    Light,
    /// Little edge energy on the ≤ 64-pixel grey image (flat images excepted).
    Blurry,
    /// Histogram entropy below 10 × threshold bits.
    LowInformation,
    /// `min(w/h, h/w)` below the threshold.
    OddAspectRatio,
    /// `sqrt(w·h)` outside `[Q1 − 3·IQR, Q3 + 3·IQR]` of the dataset's.
    OddSize,
    /// Grey pixel content (whatever the file's mode).
    Grayscale,
    /// Equal pixels to another image.
    ExactDuplicate,
    /// Perceptual hash within the tolerance of another image's whose pixels differ.
    NearDuplicate,
}

impl ImageIssueType {
    /// Every type, in report order.
    pub const ALL: [Self; 9] = [
        Self::Dark,
        Self::Light,
        Self::Blurry,
        Self::LowInformation,
        Self::OddAspectRatio,
        Self::OddSize,
        Self::Grayscale,
        Self::ExactDuplicate,
        Self::NearDuplicate,
    ];

    /// The name used in column names (`low_information`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Dark => "dark",
            Self::Light => "light",
            Self::Blurry => "blurry",
            Self::LowInformation => "low_information",
            Self::OddAspectRatio => "odd_aspect_ratio",
            Self::OddSize => "odd_size",
            Self::Grayscale => "grayscale",
            Self::ExactDuplicate => "exact_duplicate",
            Self::NearDuplicate => "near_duplicate",
        }
    }

    /// Parses [`Self::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// What to run and the thresholds; [`Default`] holds CleanVision's (reference §10.2).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageOptions {
    /// The checks (the report keeps [`ImageIssueType::ALL`]'s order).
    pub issue_types: Vec<ImageIssueType>,
    /// Images with more pixels are not analyzed (a decompression-bomb guard).
    pub max_pixels: u64,
    /// `dark`: flags a 99th-percentile brightness below this.
    pub dark_threshold: f64,
    /// `light`: flags `1 − 5th-percentile brightness` below this.
    pub light_threshold: f64,
    /// `blurry`: flags a blur score below this.
    pub blurry_threshold: f64,
    /// `low_information`: flags `min(1, entropy/10)` below this.
    pub low_information_threshold: f64,
    /// `odd_aspect_ratio`: flags `min(w/h, h/w)` below this.
    pub odd_aspect_ratio_threshold: f64,
    /// `odd_size`: the fences' IQR factor.
    pub odd_size_iqr_factor: f64,
    /// `grayscale`: flags `min(1, 10 × coloured pixel fraction)` below this.
    pub grayscale_threshold: f64,
    /// `near_duplicate`: the largest Hamming distance between two 64-bit perceptual hashes.
    pub near_duplicate_tolerance: u32,
}

impl Default for ImageOptions {
    fn default() -> Self {
        Self {
            issue_types: ImageIssueType::ALL.to_vec(),
            max_pixels: 100_000_000,
            dark_threshold: 0.32,
            light_threshold: 0.05,
            blurry_threshold: 0.29,
            low_information_threshold: 0.3,
            odd_aspect_ratio_threshold: 0.35,
            odd_size_iqr_factor: 3.0,
            grayscale_threshold: 0.1,
            near_duplicate_tolerance: 6,
        }
    }
}

/// What [`check_images`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageReport {
    /// Number of images.
    pub n: usize,
    /// One column per check that ran, in [`ImageIssueType::ALL`] order.
    pub columns: Vec<ModalityColumn>,
    /// Why each image was not analyzed (`None` = analyzed); such rows are flagged by no check.
    pub not_analyzed: Vec<Option<String>>,
    /// Width and height of each analyzed image.
    pub size: Vec<Option<(u32, u32)>>,
    /// Exact-duplicate set id per image (images sharing an id have equal pixels).
    pub exact_duplicate_set: Vec<Option<u32>>,
    /// Near-duplicate set id per image.
    pub near_duplicate_set: Vec<Option<u32>>,
}

impl ImageReport {
    /// The column of one check, if it ran.
    pub fn column(&self, issue_type: ImageIssueType) -> Option<&ModalityColumn> {
        self.columns.iter().find(|c| c.name == issue_type.name())
    }
}

/// Everything the checks need from one image, taken from one decode.
struct Properties {
    width: u32,
    height: u32,
    /// Brightness percentiles in [0, 1].
    brightness_p5: f64,
    brightness_p99: f64,
    /// Shannon entropy (bits) of the histogram (768 bins for colour, 256 for grey files).
    entropy: f64,
    blur_score: f64,
    coloured_fraction: f64,
    pixel_hash: [u8; 32],
    /// `None` for flat images.
    perceptual_hash: Option<u64>,
}

/// Decodes `bytes` within the pixel limit.
fn decode(bytes: &[u8], max_pixels: u64) -> Result<DynamicImage, String> {
    let reader = || {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| format!("unreadable: {e}"))
    };
    let probe = reader()?;
    if probe.format().is_none() {
        return Err("not an image (unrecognized format)".into());
    }
    let (w, h) = probe
        .into_dimensions()
        .map_err(|e| format!("corrupt image: {e}"))?;
    let pixels = u64::from(w) * u64::from(h);
    if pixels > max_pixels {
        return Err(format!(
            "{w}×{h} = {pixels} pixels, over the limit of {max_pixels}"
        ));
    }
    let mut reader = reader()?;
    let mut limits = Limits::default();
    // Room for the widest decoded buffer (16-bit RGBA) of an image within the pixel limit.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(1 << 20));
    reader.limits(limits);
    reader.decode().map_err(|e| format!("corrupt image: {e}"))
}

/// Percentile `q` (in [0, 1]) of a histogram over `bins` equal steps of [0, 1].
fn histogram_percentile(hist: &[u32], total: u64, q: f64) -> f64 {
    let rank = (q * (total - 1) as f64).floor() as u64;
    let mut seen = 0u64;
    for (bin, &count) in hist.iter().enumerate() {
        seen += u64::from(count);
        if seen > rank {
            return bin as f64 / (hist.len() - 1) as f64;
        }
    }
    1.0
}

/// Shannon entropy in bits of a histogram.
fn entropy(hist: &[u32]) -> f64 {
    let total: u64 = hist.iter().map(|&c| u64::from(c)).sum();
    if total == 0 {
        return 0.0;
    }
    hist.iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / total as f64;
            -p * p.log2()
        })
        .sum()
}

/// Population standard deviation.
fn std_dev(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let (n, sum, sum2) = values.fold((0.0, 0.0, 0.0), |(n, s, s2), v| {
        (n + 1.0, s + v, s2 + v * v)
    });
    if n == 0.0 {
        return 0.0;
    }
    let mean = sum / n;
    (sum2 / n - mean * mean).max(0.0).sqrt()
}

/// CleanVision's blur score on the grey image downscaled to ≤ 64 pixels a side: `1 − exp(−σ/100)`
/// of the FIND_EDGES response (σ its standard deviation) plus a term for a peaked histogram (flat
/// images are not blurry).
fn blur_score(small: &GrayImage) -> f64 {
    let (w, h) = small.dimensions();
    let at = |x: u32, y: u32| i32::from(small.get_pixel(x, y).0[0]);
    // PIL's 3 × 3 filter copies the border pixels unfiltered, which puts the image's brightness
    // into the edge statistic; we take the interior only (no edges at all for an image
    // of two pixels a side or less).
    let (x0, y0, x1, y1) = if w > 2 && h > 2 {
        (1, 1, w - 1, h - 1)
    } else {
        (0, 0, 0, 0)
    };
    let edges = (y0..y1)
        .flat_map(|y| (x0..x1).map(move |x| (x, y)))
        .map(|(x, y)| {
            let mut sum = 8 * at(x, y);
            for (dx, dy) in [
                (0, 0),
                (1, 0),
                (2, 0),
                (0, 1),
                (2, 1),
                (0, 2),
                (1, 2),
                (2, 2),
            ] {
                sum -= at(x + dx - 1, y + dy - 1);
            }
            f64::from(sum.clamp(0, 255))
        });
    let blurriness = std_dev(edges);
    let mut hist = [0u32; 256];
    for p in small.pixels() {
        hist[usize::from(p.0[0])] += 1;
    }
    let hist_std = std_dev(hist.iter().map(|&c| f64::from(c)));
    let blur = 1.0 - (-0.01 * blurriness).exp();
    let colour = 1.0 - (-0.01 * hist_std).exp();
    let colour = if colour <= 0.18 { 0.0 } else { colour };
    (blur + colour).min(1.0)
}

/// The 64-bit DCT perceptual hash (pHash: the 8 × 8 lowest frequencies of the 32 × 32 grey
/// thumbnail against their median), `None` when the thumbnail is flat.
fn perceptual_hash(grey: &GrayImage) -> Option<u64> {
    let side = HASH_SIDE as u32;
    let thumb = image::imageops::resize(grey, side, side, FilterType::Triangle);
    let pixels: Vec<f64> = thumb.pixels().map(|p| f64::from(p.0[0])).collect();
    if std_dev(pixels.iter().copied()) < FLAT_STD {
        return None;
    }
    let n = HASH_SIDE as f64;
    let cos: Vec<f64> = (0..HASH_LOW)
        .flat_map(|u| {
            (0..HASH_SIDE).map(move |x| {
                (std::f64::consts::PI * (2.0 * x as f64 + 1.0) * u as f64 / (2.0 * n)).cos()
            })
        })
        .collect();
    // Separable DCT-II: rows first (low frequencies only), then columns.
    let mut rows = vec![0.0; HASH_SIDE * HASH_LOW];
    for y in 0..HASH_SIDE {
        for u in 0..HASH_LOW {
            rows[y * HASH_LOW + u] = (0..HASH_SIDE)
                .map(|x| pixels[y * HASH_SIDE + x] * cos[u * HASH_SIDE + x])
                .sum();
        }
    }
    let mut low = [0.0; HASH_LOW * HASH_LOW];
    for v in 0..HASH_LOW {
        for u in 0..HASH_LOW {
            low[v * HASH_LOW + u] = (0..HASH_SIDE)
                .map(|y| rows[y * HASH_LOW + u] * cos[v * HASH_SIDE + y])
                .sum();
        }
    }
    let mut sorted = low;
    sorted.sort_by(f64::total_cmp);
    let median = (sorted[31] + sorted[32]) / 2.0;
    Some(
        low.iter()
            .enumerate()
            .fold(0u64, |h, (i, &c)| if c > median { h | (1 << i) } else { h }),
    )
}

/// Decodes one image and measures everything the checks need.
fn analyze(bytes: &[u8], max_pixels: u64) -> Result<Properties, String> {
    let decoded = decode(bytes, max_pixels)?;
    let grey_mode = !decoded.color().has_color();
    let rgb: RgbImage = decoded.to_rgb8();
    drop(decoded);
    let (width, height) = rgb.dimensions();
    if width == 0 || height == 0 {
        return Err("empty image (0 pixels)".into());
    }
    // HSP brightness per pixel, through per-channel tables of weighted squares.
    let table = |w: f32| -> [f32; 256] { std::array::from_fn(|v| w * (v * v) as f32) };
    let (tr, tg, tb) = (table(0.241), table(0.691), table(0.068));
    let bins = (255.0 * BRIGHTNESS_STEPS) as usize + 1;
    let mut brightness = vec![0u32; bins];
    let mut channels = vec![0u32; 3 * 256];
    let mut coloured = 0u64;
    let grey = GrayImage::from_fn(width, height, |x, y| {
        let [r, g, b] = rgb.get_pixel(x, y).0;
        let (ri, gi, bi) = (usize::from(r), usize::from(g), usize::from(b));
        let level = (tr[ri] + tg[gi] + tb[bi]).sqrt();
        brightness[((level * BRIGHTNESS_STEPS) as usize).min(bins - 1)] += 1;
        channels[ri] += 1;
        channels[256 + gi] += 1;
        channels[512 + bi] += 1;
        if r.max(g).max(b) - r.min(g).min(b) > GREY_SPREAD {
            coloured += 1;
        }
        // PIL's "L" conversion (ITU-R 601-2 luma, fixed point).
        image::Luma([((19_595 * u32::from(r)
            + 38_470 * u32::from(g)
            + 7_471 * u32::from(b)
            + 0x8000)
            >> 16) as u8])
    });
    let total = u64::from(width) * u64::from(height);
    let entropy = if grey_mode {
        entropy(&channels[..256])
    } else {
        entropy(&channels)
    };
    let scale = f64::from(BLUR_SIDE) / f64::from(width.max(height));
    let small = if scale < 1.0 {
        let w = ((f64::from(width) * scale).round() as u32).max(1);
        let h = ((f64::from(height) * scale).round() as u32).max(1);
        image::imageops::resize(&grey, w, h, FilterType::Triangle)
    } else {
        grey
    };
    let mut hasher = Sha256::new();
    hasher.update(width.to_le_bytes());
    hasher.update(height.to_le_bytes());
    hasher.update(rgb.as_raw());
    Ok(Properties {
        width,
        height,
        brightness_p5: histogram_percentile(&brightness, total, 0.05),
        brightness_p99: histogram_percentile(&brightness, total, 0.99),
        entropy,
        blur_score: blur_score(&small),
        coloured_fraction: if grey_mode {
            0.0
        } else {
            coloured as f64 / total as f64
        },
        pixel_hash: hasher.finalize().into(),
        perceptual_hash: perceptual_hash(&small),
    })
}

/// Runs the image checks on encoded images (PNG, JPEG, BMP, GIF): each decoded once, in parallel.
/// An image that cannot be decoded is not analyzed (with the reason) and the rest are checked.
pub fn check_images<B: AsRef<[u8]> + Sync>(images: &[B], options: &ImageOptions) -> ImageReport {
    let props: Vec<Result<Properties, String>> = images
        .par_iter()
        .map(|b| analyze(b.as_ref(), options.max_pixels))
        .collect();
    let n = props.len();
    let analyzed: Vec<bool> = props.iter().map(Result::is_ok).collect();
    let per_image = |f: &dyn Fn(&Properties) -> f64| -> Vec<f64> {
        props
            .iter()
            .map(|p| p.as_ref().map_or(f64::NAN, f))
            .collect()
    };

    // Exact duplicates: equal pixel hashes. Near duplicates: perceptual hashes within the tolerance,
    // in sets holding at least two distinct pixel contents.
    let mut exact = DisjointSets::new(n);
    let mut first: HashMap<[u8; 32], usize> = HashMap::new();
    for (i, p) in props.iter().enumerate() {
        if let Ok(p) = p {
            exact.union(*first.entry(p.pixel_hash).or_insert(i), i);
        }
    }
    let exact_duplicate_set = exact.sets();
    let phashes: Vec<Option<u64>> = props
        .iter()
        .map(|p| p.as_ref().ok().and_then(|p| p.perceptual_hash))
        .collect();
    let mut near_duplicate_set = hamming_sets(&phashes, options.near_duplicate_tolerance).sets();
    let mut contents: HashMap<u32, HashSet<[u8; 32]>> = HashMap::new();
    for (set, p) in near_duplicate_set.iter().zip(&props) {
        if let (Some(set), Ok(p)) = (set, p) {
            contents.entry(*set).or_default().insert(p.pixel_hash);
        }
    }
    for set in &mut near_duplicate_set {
        if set.is_some_and(|s| contents[&s].len() < 2) {
            *set = None;
        }
    }

    let mut types = options.issue_types.clone();
    types.sort_unstable();
    types.dedup();
    let columns = types
        .into_iter()
        .map(|t| {
            let name = t.name();
            match t {
                ImageIssueType::Dark => threshold_column(
                    name,
                    per_image(&|p| p.brightness_p99),
                    options.dark_threshold,
                ),
                ImageIssueType::Light => threshold_column(
                    name,
                    per_image(&|p| 1.0 - p.brightness_p5),
                    options.light_threshold,
                ),
                ImageIssueType::Blurry => {
                    threshold_column(name, per_image(&|p| p.blur_score), options.blurry_threshold)
                }
                ImageIssueType::LowInformation => threshold_column(
                    name,
                    per_image(&|p| (0.1 * p.entropy).min(1.0)),
                    options.low_information_threshold,
                ),
                ImageIssueType::OddAspectRatio => threshold_column(
                    name,
                    per_image(&|p| {
                        let (w, h) = (f64::from(p.width), f64::from(p.height));
                        (w / h).min(h / w)
                    }),
                    options.odd_aspect_ratio_threshold,
                ),
                ImageIssueType::OddSize => threshold_column(
                    name,
                    iqr_scores(
                        &per_image(&|p| (f64::from(p.width) * f64::from(p.height)).sqrt()),
                        options.odd_size_iqr_factor,
                        0.0,
                    ),
                    0.5,
                ),
                ImageIssueType::Grayscale => threshold_column(
                    name,
                    per_image(&|p| (10.0 * p.coloured_fraction).min(1.0)),
                    options.grayscale_threshold,
                ),
                ImageIssueType::ExactDuplicate => set_column(name, &exact_duplicate_set, &analyzed),
                ImageIssueType::NearDuplicate => set_column(name, &near_duplicate_set, &analyzed),
            }
        })
        .collect();
    ImageReport {
        n,
        columns,
        size: props
            .iter()
            .map(|p| p.as_ref().ok().map(|p| (p.width, p.height)))
            .collect(),
        not_analyzed: props.into_iter().map(Result::err).collect(),
        exact_duplicate_set,
        near_duplicate_set,
    }
}
