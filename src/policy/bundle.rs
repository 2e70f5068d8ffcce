//! Reading the policy directories into memory: Rego sources, parameter data and
//! the bundle revision.
//!
//! Reading is separate from compiling so a reload can read and hash everything,
//! notice that nothing changed, and skip the compile.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use crate::policy::error::PolicyError;

/// Suffix of Rego unit-test files, which are not served (only `policy test` loads them).
pub const TEST_SUFFIX: &str = "_test.rego";

/// File names of parameter documents, merged below `data.params`.
pub const DATA_FILE_NAMES: [&str; 3] = ["data.json", "data.yaml", "data.yml"];

/// One Rego source file.
#[derive(Debug, Clone)]
pub struct RegoFile {
    /// The path as found (directory joined with the relative path); also the label
    /// regorus puts in diagnostics.
    pub path: PathBuf,
    pub text: String,
    pub is_test: bool,
}

/// One parameter document.
#[derive(Debug, Clone)]
pub struct DataFile {
    pub path: PathBuf,
    pub value: serde_json::Value,
}

/// Everything read from the policy directories.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub rego: Vec<RegoFile>,
    pub data: Vec<DataFile>,
    /// Hex SHA-256 over the names and contents of every file read.
    pub revision: String,
}

impl Bundle {
    /// Reads `dirs` recursively. Test files are included only when `include_tests`.
    pub fn read(
        dirs: &[PathBuf],
        include_tests: bool,
        max_file_bytes: u64,
    ) -> Result<Self, PolicyError> {
        let mut files = Vec::new();
        for dir in dirs {
            walk(dir, &mut files)?;
        }
        let mut hasher = Sha256::new();
        let mut rego = Vec::new();
        let mut data = Vec::new();
        for path in files {
            let name = file_name(&path);
            let is_rego = name.ends_with(".rego");
            let is_test = name.ends_with(TEST_SUFFIX);
            let is_data = DATA_FILE_NAMES.contains(&name);
            if !(is_rego || is_data) || (is_test && !include_tests) {
                continue;
            }
            let text = read_capped(&path, max_file_bytes)?;
            hasher.update(path.to_string_lossy().as_bytes());
            hasher.update([0]);
            hasher.update(text.as_bytes());
            hasher.update([0]);
            if is_rego {
                rego.push(RegoFile {
                    path,
                    text,
                    is_test,
                });
            } else {
                let value = parse_data(&path, &text)?;
                data.push(DataFile { path, value });
            }
        }
        Ok(Self {
            rego,
            data,
            revision: hex::encode(hasher.finalize()),
        })
    }
}

/// A cheap summary of the directories (names, sizes, modification times) that
/// changes whenever a file is added, removed or written; the reload poller reads
/// contents only when it changes.
pub fn fingerprint(dirs: &[PathBuf]) -> Result<String, PolicyError> {
    let mut files = Vec::new();
    for dir in dirs {
        walk(dir, &mut files)?;
    }
    let mut hasher = Sha256::new();
    for path in files {
        // A file that vanished between listing and stat simply changes the hash.
        let (len, mtime) = match fs::metadata(&path) {
            Ok(m) => (
                m.len(),
                m.modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos())
                    .unwrap_or(0),
            ),
            Err(_) => (u64::MAX, 0),
        };
        hasher.update(path.to_string_lossy().as_bytes());
        hasher.update(len.to_le_bytes());
        hasher.update(mtime.to_le_bytes());
    }
    Ok(hex::encode(hasher.finalize()))
}

fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

/// Lists files below `dir`, sorted so the revision does not depend on the order
/// the file system returns. Hidden entries (`.git`, editor swap files) and
/// symlinked directories (loops) are skipped.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), PolicyError> {
    let entries = fs::read_dir(dir).map_err(|source| PolicyError::Directory {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| PolicyError::Directory {
            path: dir.to_path_buf(),
            source,
        })?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        paths.push((entry.path(), kind));
    }
    paths.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, kind) in paths {
        if kind.is_dir() {
            walk(&path, out)?;
        } else if kind.is_file() || (kind.is_symlink() && path.is_file()) {
            out.push(path);
        }
    }
    Ok(())
}

fn read_capped(path: &Path, max: u64) -> Result<String, PolicyError> {
    let read_err = |source| PolicyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let len = fs::metadata(path).map_err(read_err)?.len();
    if len > max {
        return Err(PolicyError::Read {
            path: path.to_path_buf(),
            source: std::io::Error::other(format!("{len} bytes, larger than the {max} allowed")),
        });
    }
    fs::read_to_string(path).map_err(read_err)
}

fn parse_data(path: &Path, text: &str) -> Result<serde_json::Value, PolicyError> {
    let value: serde_json::Value = if file_name(path).ends_with(".json") {
        serde_json::from_str(text).map_err(|e| PolicyError::Data {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?
    } else if text.trim().is_empty() {
        serde_json::Value::Object(serde_json::Map::new())
    } else {
        serde_saphyr::from_str(text).map_err(|e| PolicyError::Data {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?
    };
    if !value.is_object() {
        return Err(PolicyError::Data {
            path: path.to_path_buf(),
            message: "must be a mapping (it is merged below data.params)".into(),
        });
    }
    Ok(value)
}
