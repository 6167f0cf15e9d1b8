//! The library's error type: every failure a user can cause (a bad shape, an
//! impossible filter geometry, a broken data file, backward before forward)
//! is an `Error`, never a panic.

use thiserror::Error;

/// Everything that can go wrong in the library.
#[derive(Debug, Error)]
pub enum Error {
    /// A tensor did not have the shape an operation needs.
    #[error("shape error: {0}")]
    Shape(String),
    /// Convolution or pooling geometry that gives no output
    /// (filter larger than the padded input, stride 0, ...).
    #[error("impossible geometry: {0}")]
    Geometry(String),
    /// `backward` was called before any `forward` filled the caches it needs.
    #[error("{0}: backward called before forward")]
    BackwardBeforeForward(&'static str),
    /// A data file is missing, truncated or not what it claims to be.
    #[error("{0}")]
    Data(String),
    /// A configuration value is out of range (batch size 0, unknown optimizer, ...).
    #[error("{0}")]
    Config(String),
    /// A data-set file could not be downloaded, or did not match its
    /// SHA-256 (see `data::download`).
    #[error("{0}")]
    Download(String),
    /// An operating-system I/O error, with the path it concerns.
    #[error("{path}: {error}")]
    Io {
        /// The file or folder the operation concerned.
        path: String,
        /// The operating system's error.
        error: std::io::Error,
    },
}

impl Error {
    /// An I/O error about `path`.
    pub fn io(path: &std::path::Path, error: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            error,
        }
    }

    /// The message without the variant's prefix, for wrapping in a more
    /// specific error of the same kind.
    pub fn detail(&self) -> String {
        match self {
            Error::Shape(m)
            | Error::Geometry(m)
            | Error::Data(m)
            | Error::Config(m)
            | Error::Download(m) => m.clone(),
            other => other.to_string(),
        }
    }
}

/// `Result` with the library's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
