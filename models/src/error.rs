//! Typed errors for parsing and model fitting.
//!
//! Parsers report the 1-based line number of the offending line so that a
//! user replaying a CSV can fix the file without guessing.

/// Errors from the pure text parsers (`parse_*`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    /// The input had no header and no data rows.
    #[error("input is empty")]
    Empty,
    /// A column the caller or the format requires is not in the header.
    #[error("missing column `{0}`")]
    MissingColumn(String),
    /// A cell that must be numeric is not.
    #[error("line {line}: column `{column}`: `{value}` is not a finite number")]
    NotNumeric {
        /// 1-based line number in the input text.
        line: usize,
        /// Column name (or 1-based index for headerless formats).
        column: String,
        /// The offending text.
        value: String,
    },
    /// A data line has a different number of fields than the header.
    #[error("line {line}: expected {expected} fields, found {found}")]
    FieldCount {
        /// 1-based line number in the input text.
        line: usize,
        /// Fields required.
        expected: usize,
        /// Fields found.
        found: usize,
    },
}

/// Errors from fitting or running models.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// Too few rows to estimate the model.
    #[error("not enough data: need at least {need} rows, got {got}")]
    NotEnoughData {
        /// Minimum rows required.
        need: usize,
        /// Rows supplied.
        got: usize,
    },
    /// A sample's width differs from the width the model was fitted on.
    #[error("dimension mismatch: expected {expected} values, got {got}")]
    Dimension {
        /// Width the model expects.
        expected: usize,
        /// Width supplied.
        got: usize,
    },
    /// A NaN or infinite value reached a model.
    #[error("non-finite input value")]
    NonFinite,
    /// A parameter is outside its valid range.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// The detector name is not one of the known names (listed in the second field).
    #[error("unknown detector `{name}` (known: {known})")]
    UnknownDetector {
        /// The name asked for.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// Labels the evaluation needs are absent.
    #[error("missing labels: {0}")]
    MissingLabels(String),
    /// A parse failure surfaced through a higher-level function.
    #[error(transparent)]
    Parse(#[from] ParseError),
}
