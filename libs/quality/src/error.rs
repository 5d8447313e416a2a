//! The quality engine's error: what is wrong with the input, and where.

/// Invalid input to the quality engine. Every variant names the first offending row where one exists.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QualityError {
    /// Two inputs that must have one entry per row do not.
    #[error("length mismatch: {what} has {got} rows, expected {expected}")]
    LengthMismatch {
        /// Which input is off.
        what: &'static str,
        /// Its length.
        got: usize,
        /// The number of rows.
        expected: usize,
    },
    /// A value is out of its allowed range (NaN, negative probability, label outside 0..K, ...).
    #[error("invalid {what} at row {row}: {reason}")]
    InvalidValue {
        /// Which input.
        what: &'static str,
        /// First offending row (0-based).
        row: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The task needs at least two classes.
    #[error("at least two classes are needed, got {0}")]
    TooFewClasses(usize),
    /// The input has no rows.
    #[error("the input has no rows")]
    Empty,
    /// An option is out of range, or two options cannot be combined.
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        /// Which option.
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A table column cannot be used as asked (AutoML featurization).
    #[error("column {column:?}{}: {reason}", row.map(|r| format!(", row {r}")).unwrap_or_default())]
    InvalidColumn {
        /// The column's name.
        column: String,
        /// First offending row (0-based), when one row is at fault.
        row: Option<usize>,
        /// What is wrong with it.
        reason: String,
    },
}
