//! Staging of uploads to admission-controlled routes, so that a refused push leaves
//! nothing behind in the client's repository.
//!
//! A manifest push is judged only once its blobs are uploaded. Uploaded straight into the
//! client's repository, the blobs of a refused package would stay linked there (and a new
//! repository would show up in `_catalog`) although the manifest never reached the
//! upstream. So on `app` and `component` routes every upload (POST, PATCH, PUT of upload
//! sessions, monolithic or chunked, and cross-repository mounts) is sent to a staging
//! repository of the same upstream, `<staging.repository>/<upstream name>`; the upload's
//! `Location` is mapped back to the client's name, so sessions resume as usual and bodies
//! stream as before. Blob HEAD/GET on the client's repository falls back to staging
//! ([`promote::blob_fallback`]). An accepted manifest has its blobs cross-repository
//! mounted into the real repository just before the manifest PUT ([`promote::Promotion`]),
//! under a write-ahead journal ([`journal`]) that a restart rolls forward. Staged blobs are
//! deleted by age ([`ledger`]).
//!
//! Staging repositories are hidden from clients: never listed in `_catalog` through the
//! proxy and not addressable by any client name ([`crate::upstream::routing::Router`]).

pub mod journal;
pub mod ledger;
pub mod promote;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::config::RouteKind;
use crate::oci::{OciRoute, RepoName};
use crate::upstream::forward::Forward;
use crate::upstream::Upstream;

/// `staging:` in the config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StagingConfig {
    /// Namespace of the staging repositories at every upstream: uploads for upstream
    /// repository `margo/apps/x` go to `<repository>/margo/apps/x`.
    pub repository: String,
    /// Directory owned by the proxy for the promotion journal and the staged-blob ledger
    /// (survives restarts; a journal entry left by a crash is completed at start-up).
    pub state_dir: PathBuf,
    /// Staged blobs older than this are deleted from staging.
    #[serde(default = "default_max_age", with = "crate::config::duration")]
    pub max_age: Duration,
    /// How often the staging cleanup runs.
    #[serde(default = "default_interval", with = "crate::config::duration")]
    pub cleanup_interval: Duration,
}

fn default_max_age() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_interval() -> Duration {
    Duration::from_secs(600)
}

/// Why the staging section cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    #[error("staging.repository `{0}` is not a valid repository name: {1}")]
    BadName(String, crate::oci::name::NameError),
    #[error("staging.state_dir {0}: {1}")]
    StateDir(PathBuf, std::io::Error),
}

/// The staging service, shared by every request.
pub struct Staging {
    prefix: String,
    pub config: StagingConfig,
    pub ledger: ledger::Ledger,
    pub journal: journal::Journal,
}

impl Staging {
    pub fn from_config(config: &StagingConfig) -> Result<Self, StagingError> {
        RepoName::parse(&config.repository)
            .map_err(|e| StagingError::BadName(config.repository.clone(), e))?;
        let dir = |e| StagingError::StateDir(config.state_dir.clone(), e);
        let journal = journal::Journal::open(&config.state_dir.join("journal")).map_err(dir)?;
        let ledger = ledger::Ledger::open(&config.state_dir.join("staged.log")).map_err(dir)?;
        Ok(Staging {
            prefix: config.repository.clone(),
            config: config.clone(),
            ledger,
            journal,
        })
    }

    /// Whether an upstream repository name is inside the staging namespace.
    pub fn is_staging(&self, upstream_name: &str) -> bool {
        is_under(&self.prefix, upstream_name)
    }

    /// The staging repository of an upstream repository.
    pub fn staged_name(&self, upstream_name: &RepoName) -> Option<RepoName> {
        RepoName::parse(&format!("{}/{}", self.prefix, upstream_name.as_str())).ok()
    }

    /// Sends an upload of an admission-controlled route to its staging repository (other
    /// requests are left as they are). `Err`: the repository's staging name would be
    /// invalid (too long), so the upload cannot be staged and is refused.
    pub fn plan_upload(&self, fwd: &mut Forward, route: &OciRoute) -> Result<(), RepoName> {
        if !matches!(
            route,
            OciRoute::UploadStart { .. } | OciRoute::UploadSession { .. }
        ) {
            return Ok(());
        }
        let Some(matched) = fwd.matched.as_ref().filter(|m| stages(m.route.kind)) else {
            return Ok(());
        };
        let real = matched.upstream_name.clone();
        let staged = self.staged_name(&real).ok_or_else(|| real.clone())?;
        let old = format!("/v2/{}/", real.as_str());
        if let Some(rest) = fwd.path_and_query.strip_prefix(&old) {
            fwd.path_and_query = format!("/v2/{}/{rest}", staged.as_str());
            fwd.staged = Some(staged);
        }
        Ok(())
    }

    /// The staging repository a blob read of this request may fall back to.
    pub fn fallback_for(&self, fwd: &Forward, route: &OciRoute) -> Option<(RepoName, RepoName)> {
        if !matches!(route, OciRoute::Blob { .. }) || fwd.staged.is_some() {
            return None;
        }
        let matched = fwd.matched.as_ref().filter(|m| stages(m.route.kind))?;
        let staged = self.staged_name(&matched.upstream_name)?;
        Some((matched.upstream_name.clone(), staged))
    }

    /// Whether pushes of this forward go through staging (admission-controlled route).
    pub fn applies(&self, fwd: &Forward) -> bool {
        fwd.matched.as_ref().is_some_and(|m| stages(m.route.kind))
    }

    /// Completes what a crash left half done, then deletes old staged blobs every
    /// `cleanup_interval`, for the life of the process, on a thread and runtime of its own
    /// (it starts before Pingora's runtimes exist).
    pub fn spawn_worker(self: &Arc<Self>, upstreams: Vec<Arc<Upstream>>) -> std::io::Result<()> {
        let me = self.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("staging".into())
            .spawn(move || {
                rt.block_on(async move {
                    promote::recover(&me, &upstreams).await;
                    loop {
                        let n = ledger::cleanup(&me, &upstreams).await;
                        if n > 0 {
                            tracing::info!(
                                deleted = n,
                                "staging cleanup: old staged blobs deleted"
                            );
                        }
                        tokio::time::sleep(me.config.cleanup_interval).await;
                    }
                })
            })?;
        Ok(())
    }
}

/// Routes whose pushes are judged: their uploads are staged.
fn stages(kind: RouteKind) -> bool {
    kind != RouteKind::Passthrough
}

/// `name` is `prefix` or below it.
pub fn is_under(prefix: &str, name: &str) -> bool {
    name == prefix
        || name
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Most blobs one manifest may name for promotion (a Margo package has a handful).
pub const MAX_MANIFEST_BLOBS: usize = 1000;

/// The blobs an image manifest references (config and layers). An index references
/// manifests only, which are pushed straight to the real repository: none to promote.
pub fn manifest_blobs(body: &[u8]) -> Vec<crate::oci::Digest> {
    #[derive(Deserialize)]
    struct Descriptor {
        digest: String,
    }
    #[derive(Deserialize)]
    struct Manifest {
        config: Option<Descriptor>,
        #[serde(default)]
        layers: Vec<Descriptor>,
    }
    let Ok(m) = serde_json::from_slice::<Manifest>(body) else {
        return Vec::new();
    };
    let mut out: Vec<crate::oci::Digest> = Vec::new();
    for d in m.config.iter().chain(m.layers.iter()) {
        if let Ok(d) = d.digest.parse::<crate::oci::Digest>() {
            if !out.contains(&d) {
                out.push(d);
            }
        }
        if out.len() >= MAX_MANIFEST_BLOBS {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::upstream::forward;
    use crate::upstream::routing::Router;

    fn setup() -> (Router, Staging, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let yaml = format!(
            r#"
listeners: [{{address: "127.0.0.1:1"}}]
upstreams: [{{name: a, url: "http://127.0.0.1:5000"}}]
routes:
  - {{match: "apps/**", upstream: a, kind: app, rewrite: {{strip: "apps/", prefix: "margo/apps/"}}}}
  - {{match: "**", upstream: a}}
staging: {{repository: margo-staging, state_dir: "{}"}}
"#,
            dir.path().display()
        );
        let c = Config::parse(&yaml).expect("config");
        let staging = Staging::from_config(c.staging.as_ref().expect("staging")).expect("staging");
        (Router::from_config(&c).expect("router"), staging, dir)
    }

    fn planned(router: &Router, staging: &Staging, path: &str, query: Option<&str>) -> Forward {
        let route = OciRoute::parse(path).expect("route");
        let mut f = forward::plan(router, &route, path, query).expect("plan");
        staging.plan_upload(&mut f, &route).expect("stageable");
        f
    }

    #[test]
    fn uploads_of_app_routes_go_to_staging_with_the_query_kept() {
        let (r, s, _d) = setup();
        let f = planned(&r, &s, "/v2/apps/x/blobs/uploads/", None);
        assert_eq!(
            f.path_and_query,
            "/v2/margo-staging/margo/apps/x/blobs/uploads/"
        );
        assert_eq!(f.repository(), Some("margo-staging/margo/apps/x"));
        let f = planned(
            &r,
            &s,
            "/v2/apps/x/blobs/uploads/u1",
            Some("_state=a%3D&digest=sha256%3Aab"),
        );
        assert_eq!(
            f.path_and_query,
            "/v2/margo-staging/margo/apps/x/blobs/uploads/u1?_state=a%3D&digest=sha256%3Aab"
        );
        // A mount lands in staging too; its source stays the client's (translated) one.
        let d = format!("sha256:{}", "a".repeat(64));
        let f = planned(
            &r,
            &s,
            "/v2/apps/x/blobs/uploads/",
            Some(&format!("mount={d}&from=apps/y")),
        );
        assert!(f
            .path_and_query
            .starts_with("/v2/margo-staging/margo/apps/x/blobs/uploads/?mount="));
        assert_eq!(f.mount_from.as_deref(), Some("margo/apps/y"));
    }

    #[test]
    fn other_requests_and_passthrough_routes_are_not_staged() {
        let (r, s, _d) = setup();
        let f = planned(&r, &s, "/v2/library/nginx/blobs/uploads/", None);
        assert_eq!(f.path_and_query, "/v2/library/nginx/blobs/uploads/");
        assert!(f.staged.is_none());
        let d = format!("sha256:{}", "b".repeat(64));
        let f = planned(&r, &s, &format!("/v2/apps/x/blobs/{d}"), None);
        assert!(f.staged.is_none());
        let route = OciRoute::parse(&format!("/v2/apps/x/blobs/{d}")).expect("route");
        let (real, staged) = s.fallback_for(&f, &route).expect("fallback");
        assert_eq!(
            (real.as_str(), staged.as_str()),
            ("margo/apps/x", "margo-staging/margo/apps/x")
        );
    }

    #[test]
    fn staging_names_are_recognised() {
        let (_r, s, _d) = setup();
        assert!(s.is_staging("margo-staging"));
        assert!(s.is_staging("margo-staging/margo/apps/x"));
        assert!(!s.is_staging("margo-stagingx/a"));
        assert!(!s.is_staging("margo/apps/x"));
    }

    #[test]
    fn manifest_blobs_lists_config_and_layers_once() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let body = format!(
            r#"{{"config":{{"digest":"{a}"}},"layers":[{{"digest":"{b}"}},{{"digest":"{b}"}},{{"digest":"bad"}}]}}"#
        );
        let got: Vec<String> = manifest_blobs(body.as_bytes())
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(got, vec![a, b]);
        assert!(manifest_blobs(br#"{"manifests":[]}"#).is_empty());
        assert!(manifest_blobs(b"not json").is_empty());
    }

    #[test]
    fn bad_staging_names_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = StagingConfig {
            repository: "Bad Name".into(),
            state_dir: dir.path().into(),
            max_age: default_max_age(),
            cleanup_interval: default_interval(),
        };
        assert!(matches!(
            Staging::from_config(&c),
            Err(StagingError::BadName(..))
        ));
    }
}
