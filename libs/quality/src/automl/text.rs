//! Text features: TF-IDF over word 1–2-grams and char 3–5-grams (within the lower-cased, whitespace-
//! normalized text), sublinear tf (`1 + ln tf`), smooth idf (`ln((1 + n)/(1 + df)) + 1`), each
//! analyzer's block l2-normalized per row. Terms are identified by a 64-bit hash, so no vocabulary
//! of strings is kept; terms seen in fewer than [`MIN_DF`] rows are dropped and at most
//! [`MAX_TERMS`] (the most frequent) are kept per analyzer.

use std::collections::HashMap;

use rayon::prelude::*;

use super::table::Column;

/// Terms in fewer rows than this are dropped (they cannot generalise across folds).
const MIN_DF: u32 = 2;
/// Terms kept per analyzer and column.
const MAX_TERMS: usize = 50_000;

/// A block of sparse columns: per row, sorted `(column, value)` pairs.
pub(super) struct SparseBlock {
    /// Number of columns.
    pub(super) cols: usize,
    /// Per row, `(column, value)` with increasing columns.
    pub(super) rows: Vec<Vec<(u32, f32)>>,
}

/// FNV-1a, 64-bit: a stable hash of a term (std's hasher is not stable across releases).
pub(super) fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Word 1–2-gram hashes of one text, with counts.
fn word_terms(text: &str) -> HashMap<u64, u32> {
    let words: Vec<&str> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let mut counts = HashMap::new();
    for (i, w) in words.iter().enumerate() {
        *counts.entry(fnv1a(1, w.as_bytes())).or_insert(0) += 1;
        if let Some(next) = words.get(i + 1) {
            let bigram = fnv1a(fnv1a(2, w.as_bytes()), next.as_bytes());
            *counts.entry(bigram).or_insert(0) += 1;
        }
    }
    counts
}

/// Char 3–5-gram hashes of one text (whitespace runs become one space, padded at both ends).
fn char_terms(text: &str) -> HashMap<u64, u32> {
    let mut chars = vec![' '];
    for w in text.split_whitespace() {
        chars.extend(w.chars());
        chars.push(' ');
    }
    let mut counts = HashMap::new();
    let mut buf = [0u8; 20];
    for len in 3..=5 {
        for window in chars.windows(len) {
            let mut at = 0;
            for c in window {
                at += c.encode_utf8(&mut buf[at..]).len();
            }
            *counts.entry(fnv1a(len as u64, &buf[..at])).or_insert(0) += 1;
        }
    }
    counts
}

/// TF-IDF of one analyzer's per-row term counts.
fn tfidf(docs: Vec<HashMap<u64, u32>>) -> SparseBlock {
    let n = docs.len();
    let mut df: HashMap<u64, u32> = HashMap::new();
    for doc in &docs {
        for h in doc.keys() {
            *df.entry(*h).or_insert(0) += 1;
        }
    }
    let mut kept: Vec<(u64, u32)> = df.into_iter().filter(|&(_, d)| d >= MIN_DF).collect();
    // Most frequent first, ties by hash: deterministic.
    kept.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    kept.truncate(MAX_TERMS);
    kept.sort_unstable_by_key(|&(h, _)| h);
    let index: HashMap<u64, (u32, f32)> = kept
        .iter()
        .enumerate()
        .map(|(i, &(h, d))| {
            let idf = ((1.0 + n as f64) / (1.0 + f64::from(d))).ln() + 1.0;
            (h, (i as u32, idf as f32))
        })
        .collect();
    let rows = docs
        .into_par_iter()
        .map(|doc| {
            let mut row: Vec<(u32, f32)> = doc
                .iter()
                .filter_map(|(h, &tf)| {
                    index
                        .get(h)
                        .map(|&(col, idf)| (col, (1.0 + (tf as f32).ln()) * idf))
                })
                .collect();
            row.sort_unstable_by_key(|&(c, _)| c);
            let norm = row.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|(_, v)| *v /= norm);
            }
            row
        })
        .collect();
    SparseBlock {
        cols: kept.len(),
        rows,
    }
}

/// The word and char TF-IDF blocks of a text column, side by side (words first); a missing value
/// is an empty text.
pub(super) fn featurize(column: &Column) -> SparseBlock {
    let texts: Vec<String> = (0..column.len())
        .map(|i| column.get(i).unwrap_or("").to_lowercase())
        .collect();
    let words = tfidf(texts.par_iter().map(|t| word_terms(t)).collect());
    let chars = tfidf(texts.par_iter().map(|t| char_terms(t)).collect());
    let offset = words.cols as u32;
    let rows = words
        .rows
        .into_iter()
        .zip(chars.rows)
        .map(|(mut w, c)| {
            w.extend(c.into_iter().map(|(col, v)| (col + offset, v)));
            w
        })
        .collect();
    SparseBlock {
        cols: words.cols + chars.cols,
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tfidf_rows_are_unit_norm_per_analyzer_and_rare_terms_dropped() {
        let column = Column::new(
            "t",
            ["the cat sat", "the cat ran", "a dog ran", ""]
                .map(String::from)
                .to_vec(),
        );
        let block = featurize(&column);
        assert!(block.cols > 0);
        assert!(block.rows[3].is_empty());
        for row in &block.rows[..3] {
            let norm: f32 = row.iter().map(|(_, v)| v * v).sum();
            // One word block and one char block, each of norm 1.
            assert!((norm - 2.0).abs() < 1e-5, "{norm}");
            assert!(row.windows(2).all(|w| w[0].0 < w[1].0));
        }
        // "the cat" is shared by rows 0 and 1 (as are "the", "cat", and their char grams), so they
        // are closer to each other than to row 2.
        let dot = |a: &[(u32, f32)], b: &[(u32, f32)]| -> f32 {
            a.iter()
                .filter_map(|(c, v)| b.iter().find(|(d, _)| d == c).map(|(_, w)| v * w))
                .sum()
        };
        assert!(dot(&block.rows[0], &block.rows[1]) > dot(&block.rows[0], &block.rows[2]));
    }
}
