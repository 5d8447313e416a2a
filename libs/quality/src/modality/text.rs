//! Text checks: `empty_text`, `text_length` (outliers of `text_num_characters`), `PII` (with
//! `PII_types` and `PII_items`, see `pii.rs`), `non_english` (with `predicted_language`, by the
//! `whatlang` crate's trigram profiles, compiled in) and `near_duplicate` (equal words after
//! normalization, or MinHash Jaccard estimate of word 1–2-gram sets above a threshold, candidates
//! from LSH bands). Texts are analyzed in parallel (rayon).
//!
//! `toxic` is left out: an honest offline check needs a classifier or a lexicon with a measured
//! precision, and we have neither.

use std::collections::HashMap;

use rayon::prelude::*;

use super::pii::{PiiMatch, find_pii};
use super::{DisjointSets, ModalityColumn, iqr_scores, set_column, threshold_column};

/// Frequent English function words that are not frequent words of other Latin-script languages
/// (no `a`, `in`, `is`, `to`, `for`, `at`, `an`, `by`, `my`, `will`, ...).
const ENGLISH_FUNCTION_WORDS: &[&str] = &[
    "the", "and", "of", "that", "it", "with", "his", "they", "this", "from", "or", "had", "but",
    "what", "were", "we", "when", "your", "said", "there", "which", "she", "their", "if", "about",
    "out", "them", "would", "these", "has", "been", "who", "its", "our", "you", "are", "not", "be",
    "should", "could", "because",
];
/// A text whose words are at least this share of English function words is English.
const ENGLISH_FUNCTION_SHARE: f64 = 0.15;

/// MinHash functions per text, and LSH bands (of `MINHASHES / BANDS` rows each).
const MINHASHES: usize = 32;
const BANDS: usize = 8;

/// A text check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TextIssueType {
    /// Empty or whitespace-only text.
    EmptyText,
    /// Unusually short or long text (`log(1 + characters)` outside the IQR fences).
    TextLength,
    /// Personally identifiable information or secrets.
    Pii,
    /// Text in another language than English.
    NonEnglish,
    /// The same or nearly the same words as another text.
    NearDuplicate,
}

impl TextIssueType {
    /// Every type, in report order.
    pub const ALL: [Self; 5] = [
        Self::EmptyText,
        Self::TextLength,
        Self::Pii,
        Self::NonEnglish,
        Self::NearDuplicate,
    ];

    /// The name used in column names (`empty_text`, `PII`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::EmptyText => "empty_text",
            Self::TextLength => "text_length",
            Self::Pii => "PII",
            Self::NonEnglish => "non_english",
            Self::NearDuplicate => "near_duplicate",
        }
    }

    /// Parses [`Self::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// What to run and the thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct TextOptions {
    /// The checks (the report keeps [`TextIssueType::ALL`]'s order).
    pub issue_types: Vec<TextIssueType>,
    /// `text_length`: the IQR factor of the fences on `log(1 + characters)`.
    pub text_length_iqr_factor: f64,
    /// `text_length`: the smallest IQR of `log(1 + characters)`, so texts of near-equal lengths do
    /// not make every other length an outlier (0.5 with the factor 1.5: more than e^0.75 ≈ 2.1
    /// times beyond the quartiles).
    pub text_length_min_iqr: f64,
    /// `non_english`: flags a text whose detected language beats English, in a detection between
    /// the two only, with more confidence than this.
    pub non_english_min_confidence: f64,
    /// `non_english`: texts with fewer letters are too short to tell, and never flagged.
    pub non_english_min_letters: usize,
    /// `near_duplicate`: the smallest estimated Jaccard similarity of word 1–2-gram sets.
    pub near_duplicate_threshold: f64,
    /// `near_duplicate`: texts with fewer words are only duplicates when their words are equal.
    pub near_duplicate_min_words: usize,
}

impl Default for TextOptions {
    fn default() -> Self {
        Self {
            issue_types: TextIssueType::ALL.to_vec(),
            text_length_iqr_factor: 1.5,
            text_length_min_iqr: 0.5,
            non_english_min_confidence: 0.5,
            non_english_min_letters: 20,
            near_duplicate_threshold: 0.7,
            near_duplicate_min_words: 5,
        }
    }
}

/// What [`check_texts`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct TextReport {
    /// Number of texts.
    pub n: usize,
    /// One column per check that ran, in [`TextIssueType::ALL`] order.
    pub columns: Vec<ModalityColumn>,
    /// Characters per text (`text_num_characters`).
    pub text_num_characters: Vec<usize>,
    /// The PII items of each text (their kinds are `PII_types`).
    pub pii: Vec<Vec<PiiMatch>>,
    /// The detected language's English name per text (`None` when undetectable).
    pub predicted_language: Vec<Option<&'static str>>,
    /// Near-duplicate set id per text.
    pub near_duplicate_set: Vec<Option<u32>>,
}

impl TextReport {
    /// The column of one check, if it ran.
    pub fn column(&self, issue_type: TextIssueType) -> Option<&ModalityColumn> {
        self.columns.iter().find(|c| c.name == issue_type.name())
    }
}

/// Everything the checks need from one text.
struct Properties {
    empty: bool,
    characters: usize,
    pii: Vec<PiiMatch>,
    /// The detected language, and the confidence that the text is in it rather than in English.
    language: Option<(whatlang::Lang, f64)>,
    letters: usize,
    /// Hash of the normalized words (`None` for empty text).
    words_hash: Option<u64>,
    /// MinHash signature (`None` below the minimum word count).
    signature: Option<[u64; MINHASHES]>,
}

/// SplitMix64's finalizer: a well-mixed 64-bit hash of a 64-bit value.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a of a string, mixed.
fn hash_str(s: &str) -> u64 {
    mix(s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    }))
}

fn analyze(text: &str, options: &TextOptions) -> Properties {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let empty = text.trim().is_empty();
    let words_hash = (!empty).then(|| hash_str(&words.join(" ")));
    let signature = (words.len() >= options.near_duplicate_min_words).then(|| {
        let features: Vec<u64> = words
            .iter()
            .map(|w| hash_str(w))
            .chain(
                words
                    .windows(2)
                    .map(|p| mix(hash_str(&p[0]) ^ hash_str(&p[1]).rotate_left(1))),
            )
            .collect();
        std::array::from_fn(|i| {
            let seed = mix(i as u64 + 1);
            features
                .iter()
                .map(|&f| mix(f ^ seed))
                .min()
                .unwrap_or(u64::MAX)
        })
    });
    Properties {
        empty,
        characters: text.chars().count(),
        pii: find_pii(text),
        language: language(text, &words),
        letters: text.chars().filter(|c| c.is_alphabetic()).count(),
        words_hash,
        signature,
    }
}

/// The detected language and how sure it is not English: the confidence of a second detection
/// between that language and English only, since close languages (Spanish, Catalan) split the
/// confidence of the first without making English any more likely.
fn language(text: &str, words: &[String]) -> Option<(whatlang::Lang, f64)> {
    // whatlang's trigram profiles take some plain English for Danish or Scots; English function
    // words (none of them a common word of another language) settle it, and spare the detector
    // (most of the text checks' time) on English text.
    let function_words = words
        .iter()
        .filter(|w| ENGLISH_FUNCTION_WORDS.contains(&w.as_str()))
        .count();
    if function_words > 0 && function_words as f64 >= ENGLISH_FUNCTION_SHARE * words.len() as f64 {
        return Some((whatlang::Lang::Eng, 1.0));
    }
    let info = whatlang::detect(text)?;
    if info.lang() == whatlang::Lang::Eng {
        return Some((info.lang(), info.confidence()));
    }
    let pair = whatlang::Detector::with_allowlist(vec![info.lang(), whatlang::Lang::Eng]);
    let confidence = pair
        .detect(text)
        .filter(|i| i.lang() == info.lang())
        .map_or(0.0, |i| i.confidence());
    Some((info.lang(), confidence))
}

/// Sets of texts with equal normalized words or an estimated Jaccard similarity of at least
/// `threshold` (LSH: texts sharing a band of their signature are compared).
fn near_duplicate_sets(props: &[Properties], threshold: f64) -> Vec<Option<u32>> {
    let mut sets = DisjointSets::new(props.len());
    let mut first: HashMap<u64, usize> = HashMap::new();
    for (i, p) in props.iter().enumerate() {
        if let Some(h) = p.words_hash {
            sets.union(*first.entry(h).or_insert(i), i);
        }
    }
    let rows = MINHASHES / BANDS;
    for band in 0..BANDS {
        let mut buckets: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, p) in props.iter().enumerate() {
            if let Some(sig) = &p.signature {
                let key = sig[band * rows..(band + 1) * rows]
                    .iter()
                    .fold(band as u64, |h, &v| mix(h ^ v));
                buckets.entry(key).or_default().push(i);
            }
        }
        for members in buckets.values() {
            for (a, &i) in members.iter().enumerate() {
                for &j in &members[a + 1..] {
                    let (Some(si), Some(sj)) = (&props[i].signature, &props[j].signature) else {
                        continue;
                    };
                    let equal = si.iter().zip(sj).filter(|(x, y)| x == y).count();
                    if equal as f64 / MINHASHES as f64 >= threshold {
                        sets.union(i, j);
                    }
                }
            }
        }
    }
    sets.sets()
}

/// Runs the text checks; a missing cell is an empty text.
pub fn check_texts<S: AsRef<str> + Sync>(texts: &[S], options: &TextOptions) -> TextReport {
    let props: Vec<Properties> = texts
        .par_iter()
        .map(|t| analyze(t.as_ref(), options))
        .collect();
    let n = props.len();
    let near_duplicate_set = near_duplicate_sets(&props, options.near_duplicate_threshold);
    let mut types = options.issue_types.clone();
    types.sort_unstable();
    types.dedup();
    let columns = types
        .into_iter()
        .map(|t| {
            let name = t.name();
            match t {
                TextIssueType::EmptyText => threshold_column(
                    name,
                    props
                        .iter()
                        .map(|p| if p.empty { 0.0 } else { 1.0 })
                        .collect(),
                    0.5,
                ),
                TextIssueType::TextLength => {
                    let lengths: Vec<f64> = props
                        .iter()
                        .map(|p| {
                            if p.empty {
                                f64::NAN
                            } else {
                                (p.characters as f64).ln_1p()
                            }
                        })
                        .collect();
                    threshold_column(
                        name,
                        iqr_scores(
                            &lengths,
                            options.text_length_iqr_factor,
                            options.text_length_min_iqr,
                        ),
                        0.5,
                    )
                }
                TextIssueType::Pii => threshold_column(
                    name,
                    props
                        .iter()
                        .map(|p| {
                            1.0 - p
                                .pii
                                .iter()
                                .map(|m| m.pii_type.severity())
                                .fold(0.0, f64::max)
                        })
                        .collect(),
                    1.0,
                ),
                TextIssueType::NonEnglish => ModalityColumn {
                    name,
                    is_issue: props
                        .iter()
                        .map(|p| {
                            p.letters >= options.non_english_min_letters
                                && p.language.is_some_and(|(lang, confidence)| {
                                    lang != whatlang::Lang::Eng
                                        && confidence > options.non_english_min_confidence
                                })
                        })
                        .collect(),
                    score: props
                        .iter()
                        .map(|p| match p.language {
                            Some((lang, confidence)) if lang != whatlang::Lang::Eng => {
                                1.0 - confidence
                            }
                            _ => 1.0,
                        })
                        .collect(),
                },
                TextIssueType::NearDuplicate => {
                    set_column(name, &near_duplicate_set, &vec![true; n])
                }
            }
        })
        .collect();
    TextReport {
        n,
        columns,
        text_num_characters: props.iter().map(|p| p.characters).collect(),
        predicted_language: props
            .iter()
            .map(|p| p.language.map(|(lang, _)| lang.eng_name()))
            .collect(),
        pii: props.into_iter().map(|p| p.pii).collect(),
        near_duplicate_set,
    }
}
