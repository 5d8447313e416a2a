//! Modality-specific checks: images (CleanVision's semantics, reference §10) and text cells
//! (empty, length outliers, PII, language, near duplicates).
//!
//! Each check gives a [`ModalityColumn`]: `is_<type>_issue` and `<type>_score` per row, in [0, 1]
//! with 1 = clean, as the dataset-level detectors do. These checks need no labels, predictions or
//! features: only the raw cells.
//!
//! Layout: `archive.rs` (reading an image zip within limits: folder per class, or a table naming
//! the images), `data_uri.rs` (images in a JSONL field as data URIs), `image.rs` (one decode per image for every image check), `text.rs` and `pii.rs` (the text
//! checks), `synth.rs` (deterministic images and texts with planted issues, for the fixtures, tests
//! and benchmark); this file holds what both modalities share: IQR outlier scores and grouping by
//! Hamming distance of 64-bit hashes.

mod archive;
mod data_uri;
mod image;
mod pii;
pub mod synth;
mod text;

use std::collections::HashMap;

pub use archive::{
    ArchiveError, ArchiveFile, ArchiveLimits, ImageArchive, TableArchive, TableFormat, Unresolved,
    image_dimensions, read_archive,
};
pub use data_uri::{decode_image_uri, holds_image_uris};
pub use image::{ImageIssueType, ImageOptions, ImageReport, check_images};
pub use pii::{PiiMatch, PiiType, find_pii};
pub use text::{TextIssueType, TextOptions, TextReport, check_texts};

/// One check's per-row output.
#[derive(Debug, Clone, PartialEq)]
pub struct ModalityColumn {
    /// The check's name (`dark`, `PII`, ...).
    pub name: &'static str,
    /// `is_<name>_issue` per row.
    pub is_issue: Vec<bool>,
    /// `<name>_score` per row, in [0, 1], 1 = clean; NaN for a row that was not analyzed.
    pub score: Vec<f64>,
}

impl ModalityColumn {
    /// The flag column's name: `is_<name>_issue`.
    pub fn flag_column(&self) -> String {
        format!("is_{}_issue", self.name)
    }

    /// The score column's name: `<name>_score`.
    pub fn score_column(&self) -> String {
        format!("{}_score", self.name)
    }

    /// Rows flagged.
    pub fn num_issues(&self) -> usize {
        self.is_issue.iter().filter(|&&f| f).count()
    }

    /// Mean score of the analyzed rows (1 when none were): the dataset-level score, as Datalab's
    /// summary.
    pub fn mean_score(&self) -> f64 {
        let (sum, count) = self
            .score
            .iter()
            .filter(|s| !s.is_nan())
            .fold((0.0, 0usize), |(s, c), v| (s + v, c + 1));
        if count == 0 { 1.0 } else { sum / count as f64 }
    }
}

/// Linear-interpolated quantile of sorted values (numpy's default), `q` in [0, 1].
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// CleanVision's `odd_size` score (reference §10.2) for any value: with `lo = Q1 − f·IQR`,
/// `hi = Q3 + f·IQR`, `mid = (lo + hi)/2`, the score is `1 − clip(|v − mid| / (hi − lo), 0, 1)`, and a
/// score below 0.5 lies outside `[lo, hi]`. NaN values are not analyzed (NaN score). The IQR is at
/// least `min_iqr`. Where CleanVision flags every value but the median when IQR = 0, we normalise by
/// `mid` instead, flagging values off the median by more than half of it.
fn iqr_scores(values: &[f64], iqr_factor: f64, min_iqr: f64) -> Vec<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return vec![f64::NAN; values.len()];
    }
    sorted.sort_by(f64::total_cmp);
    let (q1, q3) = (quantile(&sorted, 0.25), quantile(&sorted, 0.75));
    let iqr = (q3 - q1).max(min_iqr);
    let (lo, hi) = (q1 - iqr_factor * iqr, q3 + iqr_factor * iqr);
    let mid = (lo + hi) / 2.0;
    let gap = if hi > lo {
        hi - lo
    } else {
        mid.abs().max(f64::MIN_POSITIVE)
    };
    values
        .iter()
        .map(|&v| 1.0 - ((v - mid).abs() / gap).clamp(0.0, 1.0))
        .collect()
}

/// Union-find over row indices.
struct DisjointSets(Vec<usize>);

impl DisjointSets {
    fn new(n: usize) -> Self {
        Self((0..n).collect())
    }

    fn find(&mut self, mut i: usize) -> usize {
        while self.0[i] != i {
            self.0[i] = self.0[self.0[i]];
            i = self.0[i];
        }
        i
    }

    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            self.0[a.max(b)] = a.min(b);
        }
    }

    /// Set id per row for the sets of at least two rows (numbered by first row), `None` otherwise.
    fn sets(mut self) -> Vec<Option<u32>> {
        let n = self.0.len();
        let roots: Vec<usize> = (0..n).map(|i| self.find(i)).collect();
        let mut size = vec![0usize; n];
        for &r in &roots {
            size[r] += 1;
        }
        let mut ids: HashMap<usize, u32> = HashMap::new();
        roots
            .iter()
            .map(|&r| {
                (size[r] > 1).then(|| {
                    let next = ids.len() as u32;
                    *ids.entry(r).or_insert(next)
                })
            })
            .collect()
    }
}

/// Groups rows whose 64-bit hashes are within `tolerance` bits of each other (transitively). Rows
/// with `None` take no part. By the pigeonhole principle two hashes within `tolerance` bits agree
/// exactly on at least one of `tolerance + 1` disjoint bit ranges, so only rows sharing a range's
/// value are compared: near-linear for spread-out hashes instead of all pairs.
fn hamming_sets(hashes: &[Option<u64>], tolerance: u32) -> DisjointSets {
    let mut sets = DisjointSets::new(hashes.len());
    let chunks = tolerance.min(63) + 1;
    let width = 64 / chunks;
    for c in 0..chunks {
        let shift = c * width;
        let bits = if c + 1 == chunks { 64 - shift } else { width };
        let mask = if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        let mut buckets: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, h) in hashes.iter().enumerate() {
            if let Some(h) = h {
                buckets.entry((h >> shift) & mask).or_default().push(i);
            }
        }
        for rows in buckets.values() {
            for (a, &i) in rows.iter().enumerate() {
                for &j in &rows[a + 1..] {
                    let (Some(hi), Some(hj)) = (hashes[i], hashes[j]) else {
                        continue;
                    };
                    if (hi ^ hj).count_ones() <= tolerance {
                        sets.union(i, j);
                    }
                }
            }
        }
    }
    sets
}

/// A duplicate check's column from set ids: members score `1/|set|` and are flagged, as CleanVision.
fn set_column(name: &'static str, sets: &[Option<u32>], analyzed: &[bool]) -> ModalityColumn {
    let mut size: HashMap<u32, usize> = HashMap::new();
    for s in sets.iter().flatten() {
        *size.entry(*s).or_default() += 1;
    }
    let score = sets
        .iter()
        .zip(analyzed)
        .map(|(s, &ok)| match (ok, s) {
            (false, _) => f64::NAN,
            (true, Some(s)) => 1.0 / size[s] as f64,
            (true, None) => 1.0,
        })
        .collect();
    ModalityColumn {
        name,
        is_issue: sets.iter().map(Option::is_some).collect(),
        score,
    }
}

/// A threshold check's column: flagged when the score is below `threshold` (NaN = not analyzed).
fn threshold_column(name: &'static str, score: Vec<f64>, threshold: f64) -> ModalityColumn {
    ModalityColumn {
        name,
        is_issue: score.iter().map(|&s| s < threshold).collect(),
        score,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hamming_sets_join_close_hashes_transitively() {
        let hashes = [
            Some(0u64),
            Some(0b111),
            Some(0b1111_1111),
            Some(u64::MAX),
            None,
            Some(u64::MAX ^ 1),
        ];
        let sets = hamming_sets(&hashes, 5).sets();
        assert_eq!(sets[0], sets[1]);
        assert_eq!(sets[1], sets[2]);
        assert_ne!(sets[0], sets[3]);
        assert_eq!(sets[3], sets[5]);
        assert_eq!(sets[4], None);
        let exact = hamming_sets(&hashes, 0).sets();
        assert_eq!(exact, vec![None; 6]);
    }

    #[test]
    fn iqr_scores_flag_values_outside_the_fences() {
        let values = [10.0, 11.0, 12.0, 13.0, 14.0, 100.0, 0.5, f64::NAN];
        let s = iqr_scores(&values, 3.0, 0.0);
        assert!(s[..5].iter().all(|&v| v >= 0.5));
        assert!(s[5] < 0.5);
        assert!(s[7].is_nan());
        // IQR = 0: only values far from the median are flagged.
        let s = iqr_scores(&[8.0, 8.0, 8.0, 8.0, 9.0, 2.0], 3.0, 0.0);
        assert!(s[4] >= 0.5 && s[5] < 0.5);
        // A floor on the IQR widens the fences.
        let s = iqr_scores(&[8.0, 8.0, 8.0, 8.0, 9.0, 2.0], 3.0, 3.0);
        assert!(s[5] >= 0.5);
    }
}
