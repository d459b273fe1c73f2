//! Configuration errors: every one names the file, where possible the line and column, and the
//! key or value that was wrong.

use std::{fmt, io, path::PathBuf};

use thiserror::Error;

/// A configuration could not be loaded. Nothing of it was applied.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the config file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The YAML is malformed, or a key or value is invalid.
    #[error("{origin}{at}: {message}", at = Position(*line, *column))]
    Invalid {
        /// The file name, or `<input>` for text that did not come from a file.
        origin: String,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
        /// What was wrong, naming the key and value.
        message: String,
    },
}

/// `:LINE:COLUMN`, or nothing when the position is unknown.
struct Position(Option<usize>, Option<usize>);

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(line), Some(column)) => write!(f, ":{line}:{column}"),
            (Some(line), None) => write!(f, ":{line}"),
            _ => Ok(()),
        }
    }
}
