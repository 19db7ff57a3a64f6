//! The one error type of the core. `py.rs` maps it onto `spanwatch.errors`.

use thiserror::Error;

/// Everything that can go wrong inside the sketch core.
#[derive(Debug, Error, PartialEq)]
pub enum CoreError {
    /// A configuration value is out of range or inconsistent.
    #[error("invalid sketch config: {0}")]
    Config(String),
    /// A batch argument has the wrong shape or an out-of-range value.
    #[error("invalid input: {0}")]
    Input(String),
    /// Snapshot bytes are corrupt, truncated, foreign or incompatible.
    #[error("{0}")]
    Snapshot(String),
    /// A client id that the store does not hold.
    #[error("unknown client: {0:?}")]
    UnknownClient(String),
}

pub type CoreResult<T> = Result<T, CoreError>;
