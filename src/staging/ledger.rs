//! When each blob was staged, so that staging is cleaned by age. Registries give no
//! blob ages (and docker-registry 2.8 cannot list a repository's blobs), so the proxy
//! notes every upload it completes into a staging repository: one line
//! `<unix seconds> <upstream> <staging repository> <digest>` appended to a file.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Staging;
use crate::oci::Digest;
use crate::upstream::registry::{Caller, Request};
use crate::upstream::Upstream;

/// Largest ledger read (each line is ~150 bytes: about 400 000 staged blobs).
const MAX_LEDGER_BYTES: u64 = 64 << 20;

/// One staged blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    pub at: u64,
    pub upstream: String,
    pub repository: String,
    pub digest: Digest,
}

impl Staged {
    fn line(&self) -> String {
        format!(
            "{} {} {} {}\n",
            self.at, self.upstream, self.repository, self.digest
        )
    }

    fn parse(line: &str) -> Option<Staged> {
        let mut parts = line.split_whitespace();
        let at = parts.next()?.parse().ok()?;
        let upstream = parts.next()?.to_owned();
        let repository = parts.next()?.to_owned();
        let digest = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some(Staged {
            at,
            upstream,
            repository,
            digest,
        })
    }
}

/// The ledger file; appends and the cleanup's rewrite are serialised by the mutex.
pub struct Ledger {
    path: PathBuf,
    lock: Mutex<()>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Ledger {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Ledger {
            path: path.to_owned(),
            lock: Mutex::new(()),
        })
    }

    /// Notes a blob just completed in a staging repository. A failure is logged: the
    /// blob then outlives `max_age` (until the registry's garbage collection), nothing
    /// worse.
    pub fn record(&self, upstream: &str, repository: &str, digest: &Digest) {
        let line = Staged {
            at: now(),
            upstream: upstream.to_owned(),
            repository: repository.to_owned(),
            digest: digest.clone(),
        }
        .line();
        let _guard = self.lock.lock();
        let written = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), error = %e, "staging ledger: cannot record a staged blob");
        }
    }

    /// Takes the entries staged before `cutoff` out of the ledger: the ones to delete
    /// now. A blob staged again since (same repository and digest) is kept: a push may be
    /// using it.
    pub fn take_expired(&self, cutoff: u64) -> std::io::Result<Vec<Staged>> {
        let _guard = self.lock.lock();
        let len = std::fs::metadata(&self.path)?.len();
        if len > MAX_LEDGER_BYTES {
            tracing::warn!(path = %self.path.display(), len, "staging ledger too large, started afresh");
            std::fs::write(&self.path, b"")?;
            return Ok(Vec::new());
        }
        let text = std::fs::read_to_string(&self.path)?;
        let all: Vec<Staged> = text.lines().filter_map(Staged::parse).collect();
        let young: HashSet<(&str, &str, String)> = all
            .iter()
            .filter(|s| s.at >= cutoff)
            .map(|s| {
                (
                    s.upstream.as_str(),
                    s.repository.as_str(),
                    s.digest.to_string(),
                )
            })
            .collect();
        let (keep, old): (Vec<&Staged>, Vec<&Staged>) = all.iter().partition(|s| s.at >= cutoff);
        let mut seen = HashSet::new();
        let expired: Vec<Staged> = old
            .into_iter()
            .filter(|s| {
                let key = (
                    s.upstream.as_str(),
                    s.repository.as_str(),
                    s.digest.to_string(),
                );
                !young.contains(&key) && seen.insert(key)
            })
            .cloned()
            .collect();
        let rest: String = keep.iter().map(|s| s.line()).collect();
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, rest)?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(expired)
    }
}

/// Deletes the staged blobs older than `max_age` (`DELETE /v2/<staging>/blobs/<d>`):
/// only staging links go, never the real repositories' (a promoted blob was mounted, so
/// the real repository holds its own link). Needs blob deletes at the upstream
/// (docker-registry: `storage.delete.enabled: true`); the space comes back with the
/// registry's garbage collection. The number deleted.
pub async fn cleanup(staging: &Staging, upstreams: &[Arc<Upstream>]) -> usize {
    let cutoff = now().saturating_sub(staging.config.max_age.as_secs());
    let expired = match staging.ledger.take_expired(cutoff) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "staging cleanup: cannot read the ledger");
            return 0;
        }
    };
    let mut deleted = 0;
    for s in expired {
        let Some(upstream) = upstreams.iter().find(|u| u.name == s.upstream) else {
            continue;
        };
        if !staging.is_staging(&s.repository) {
            continue;
        }
        let caller = Caller::proxy(vec![format!("repository:{}:delete", s.repository)]);
        let req = Request::new(
            http::Method::DELETE,
            format!("/v2/{}/blobs/{}", s.repository, s.digest),
        )
        .deadline(Duration::from_secs(30));
        match upstream.registry().send(&caller, req).await {
            Ok(r) if r.status.is_success() => deleted += 1,
            Ok(r) if r.status == http::StatusCode::NOT_FOUND => {}
            Ok(r) => tracing::warn!(upstream = %upstream.name, repository = %s.repository,
                status = r.status.as_u16(),
                "staging cleanup: blob delete refused (docker-registry needs storage.delete.enabled)"),
            Err(e) => {
                tracing::warn!(upstream = %upstream.name, error = %e, "staging cleanup: blob delete failed")
            }
        }
    }
    deleted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .expect("digest")
    }

    #[test]
    fn lines_round_trip_and_garbage_is_skipped() {
        let s = Staged {
            at: 12,
            upstream: "a".into(),
            repository: "s/x".into(),
            digest: d('a'),
        };
        assert_eq!(Staged::parse(s.line().trim_end()), Some(s));
        assert_eq!(Staged::parse("12 a s/x"), None);
        assert_eq!(Staged::parse("x a s/x sha256:00"), None);
        assert_eq!(Staged::parse("12 a s/x sha256:00 extra"), None);
    }

    #[test]
    fn expired_entries_are_taken_once_unless_staged_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("staged.log");
        let l = Ledger::open(&path).expect("open");
        let line = |at: u64, repo: &str, c: char| {
            Staged {
                at,
                upstream: "a".into(),
                repository: repo.into(),
                digest: d(c),
            }
            .line()
        };
        let text = [
            line(10, "s/x", 'a'),
            line(11, "s/x", 'a'),
            line(10, "s/x", 'b'),
            line(100, "s/x", 'b'),
            line(100, "s/y", 'c'),
            "garbage\n".into(),
        ]
        .concat();
        std::fs::write(&path, text).expect("write");
        let expired = l.take_expired(50).expect("take");
        assert_eq!(expired.len(), 1, "{expired:?}");
        assert_eq!(
            (expired[0].repository.as_str(), &expired[0].digest),
            ("s/x", &d('a'))
        );
        let left = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            left,
            [line(100, "s/x", 'b'), line(100, "s/y", 'c')].concat()
        );
        l.record("a", "s/z", &d('e'));
        assert!(l.take_expired(50).expect("take").is_empty());
        assert_eq!(
            std::fs::read_to_string(&path)
                .expect("read")
                .lines()
                .count(),
            3
        );
    }
}
