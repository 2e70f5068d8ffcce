//! Errors of the policy module.
//!
//! Loading errors carry the file (and, for Rego, the line and column) because the
//! first reader is the operator who just edited a policy and restarted or reloaded.

use std::path::PathBuf;

/// Why a policy bundle could not be loaded, compiled or evaluated offline.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A configured policy directory is missing or unreadable.
    #[error("policy directory {path}: {source}")]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A policy or data file could not be read.
    #[error("policy file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A Rego file does not parse or compile. `line`/`column` are 1-based and 0 when
    /// regorus did not report a position.
    #[error("{file}:{line}:{column}: {message}")]
    Compile {
        file: String,
        line: u32,
        column: u32,
        message: String,
    },

    /// The policy set as a whole does not compile (for example a call to an unknown
    /// function, which regorus only detects once every module is loaded).
    #[error("policy set does not compile: {0}")]
    Bundle(String),

    /// A `data.json` / `data.yaml` parameter file is invalid.
    #[error("policy data file {path}: {message}")]
    Data { path: PathBuf, message: String },

    /// The configuration is inconsistent (for example a per-package mode for a
    /// package that no loaded policy declares).
    #[error("policy configuration: {0}")]
    Config(String),

    /// An input document given to `policy eval` is not valid.
    #[error("policy input {path}: {message}")]
    Input { path: PathBuf, message: String },
}

impl PolicyError {
    /// Turns a regorus diagnostic into a [`PolicyError::Compile`] with the position
    /// regorus prints as `--> file:line:col`, so the operator gets `file:line`.
    pub(crate) fn from_regorus(fallback_file: &str, err: &dyn std::fmt::Display) -> Self {
        let text = err.to_string();
        match locate(&text) {
            Some((file, line, column)) => PolicyError::Compile {
                file,
                line,
                column,
                message: diagnostic_message(&text),
            },
            None => PolicyError::Compile {
                file: fallback_file.to_string(),
                line: 0,
                column: 0,
                message: diagnostic_message(&text),
            },
        }
    }
}

/// Finds the first `--> file:line:col` of a regorus diagnostic.
pub(crate) fn locate(text: &str) -> Option<(String, u32, u32)> {
    let rest = &text[text.find("--> ")? + 4..];
    let loc = rest.lines().next()?.trim();
    // The file may itself contain ':' (Windows drive letters), so split from the right.
    let (head, column) = loc.rsplit_once(':')?;
    let (file, line) = head.rsplit_once(':')?;
    Some((file.to_string(), line.parse().ok()?, column.parse().ok()?))
}

/// The human part of a regorus diagnostic: its `error: ...` line when there is one
/// (the source excerpt around it is noise in a log line), else the whole text.
pub(crate) fn diagnostic_message(text: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map(str::to_string)
        .unwrap_or_else(|| text.trim().replace('\n', " "))
}
