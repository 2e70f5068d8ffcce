//! The promotion journal: written (and fsynced) before the first blob of an accepted
//! manifest is mounted into the real repository, removed once the manifest PUT has been
//! answered. An entry found at start-up is a push the proxy crashed in the middle of;
//! [`super::promote::recover`] completes it.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Most journal entries read at start-up (each is one interrupted push).
const MAX_ENTRIES: usize = 10_000;
/// Largest journal file read back (a manifest is at most `limits.max_manifest_bytes`).
const MAX_ENTRY_BYTES: u64 = 64 << 20;

/// One promotion in progress.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// The upstream's configured name.
    pub upstream: String,
    /// The real repository, as the upstream names it.
    pub repository: String,
    pub staged: String,
    /// Tag or digest the client pushed to.
    pub reference: String,
    pub manifest_digest: String,
    pub content_type: Option<String>,
    /// The admitted manifest (JSON, so UTF-8).
    pub manifest: String,
    /// Blobs that were not in the real repository before this promotion: the only ones
    /// a rollback may unlink.
    pub mounted: Vec<String>,
}

/// The journal directory, and the promotions of this process still in flight (a
/// rollback must not unlink a blob another promotion is about to use).
pub struct Journal {
    dir: PathBuf,
    inflight: Mutex<HashMap<String, Entry>>,
}

impl Journal {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Journal {
            dir: dir.to_owned(),
            inflight: Mutex::new(HashMap::new()),
        })
    }

    /// Writes an entry durably (temporary file, fsync, rename, fsync of the directory);
    /// its id for [`Journal::remove`].
    pub fn write(&self, entry: &Entry) -> std::io::Result<String> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let json = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        let tmp = self.dir.join(format!(".{id}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.dir.join(format!("{id}.json")))?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        if let Ok(mut m) = self.inflight.lock() {
            m.insert(id.clone(), entry.clone());
        }
        Ok(id)
    }

    /// The promotion is settled: its entry goes.
    pub fn remove(&self, id: &str) {
        if let Ok(mut m) = self.inflight.lock() {
            m.remove(id);
        }
        let path = self.dir.join(format!("{id}.json"));
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "staging journal: cannot remove entry");
            }
        }
    }

    /// Whether another promotion in flight in this process uses `digest` in `repository`.
    pub fn in_use(&self, except: &str, repository: &str, digest: &str) -> bool {
        self.inflight.lock().is_ok_and(|m| {
            m.iter().any(|(id, e)| {
                id != except
                    && e.repository == repository
                    && super::manifest_blobs(e.manifest.as_bytes())
                        .iter()
                        .any(|d| d.to_string() == digest)
            })
        })
    }

    /// Entries left by an earlier process, with their ids. Unreadable ones are logged
    /// and left in place for an operator.
    pub fn leftovers(&self) -> Vec<(String, Entry)> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in rd.flatten().take(MAX_ENTRIES) {
            let path = e.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .map(str::to_owned)
            else {
                continue;
            };
            let read = std::fs::metadata(&path)
                .ok()
                .filter(|m| m.len() <= MAX_ENTRY_BYTES)
                .and_then(|_| std::fs::read(&path).ok())
                .and_then(|b| serde_json::from_slice::<Entry>(&b).ok());
            match read {
                Some(entry) => {
                    if let Ok(mut m) = self.inflight.lock() {
                        m.insert(id.clone(), entry.clone());
                    }
                    out.push((id, entry));
                }
                None => {
                    tracing::warn!(path = %path.display(), "staging journal: unreadable entry left in place")
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(repo: &str, blob: &str) -> Entry {
        Entry {
            upstream: "a".into(),
            repository: repo.into(),
            staged: format!("s/{repo}"),
            reference: "1.0.0".into(),
            manifest_digest: format!("sha256:{}", "0".repeat(64)),
            content_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
            manifest: format!(r#"{{"layers":[{{"digest":"{blob}"}}]}}"#),
            mounted: vec![blob.into()],
        }
    }

    #[test]
    fn entries_survive_a_restart_until_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blob = format!("sha256:{}", "a".repeat(64));
        let j = Journal::open(dir.path()).expect("open");
        let id = j.write(&entry("r", &blob)).expect("write");
        assert!(j.in_use("other", "r", &blob));
        assert!(
            !j.in_use(&id, "r", &blob),
            "an entry does not guard against itself"
        );
        assert!(!j.in_use("other", "r2", &blob));
        drop(j);
        std::fs::write(dir.path().join("junk.json"), b"{").expect("junk");
        let j = Journal::open(dir.path()).expect("reopen");
        let left = j.leftovers();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0, id);
        assert_eq!(left[0].1, entry("r", &blob));
        j.remove(&id);
        assert!(!j.in_use("other", "r", &blob));
        let j = Journal::open(dir.path()).expect("reopen");
        assert!(j.leftovers().is_empty());
    }
}
