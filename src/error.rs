//! The crate's error type. Every error names what was wrong: the parameter, the file, the field.

use std::path::PathBuf;

/// Errors of the library. The binary wraps them in `anyhow` at its edge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter outside its valid range, e.g. a degradation level outside [0, 1]
    /// or a frequency above Nyquist.
    #[error("invalid parameter `{name}` = {value}: {reason}")]
    InvalidParameter {
        name: &'static str,
        value: String,
        reason: String,
    },
    /// Data of the wrong shape (tensor, image, batch).
    #[error("shape mismatch in {what}: expected {expected}, got {got}")]
    Shape {
        what: String,
        expected: String,
        got: String,
    },
    /// A file that could not be read or is corrupt, truncated or mislabelled.
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    /// A non-finite value (NaN or infinity) where a finite one is required.
    #[error("non-finite value in {0}")]
    NonFinite(String),
    #[error("io error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Polars(#[from] polars::error::PolarsError),
    #[error("{0}")]
    Other(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::InvalidParameter`].
    pub fn param(
        name: &'static str,
        value: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidParameter {
            name,
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::File`].
    pub fn file(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::File {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// Wraps an io error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
