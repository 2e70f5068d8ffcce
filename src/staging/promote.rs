//! Moving an accepted package's blobs from staging into the real repository, and
//! undoing or completing that when the manifest PUT does not follow.
//!
//! Order of a push on an admission-controlled route: blobs uploaded to staging;
//! manifest admitted; journal entry written; missing blobs mounted
//! (`POST /v2/<real>/blobs/uploads/?mount=<d>&from=<staging>`); manifest PUT; journal
//! entry removed. When the upstream refuses the manifest PUT, the mounted blobs are
//! unlinked again. When the proxy dies between mount and PUT, the next start finds the
//! journal entry and rolls it forward: the package had been admitted, so its manifest is
//! PUT then (a tag pushed since by someone else is never overwritten: the mounts are
//! rolled back instead). Rolling forward is what leaves no repository behind: with
//! docker-registry 2.8 a repository appears in `_catalog` with its first blob link and
//! never leaves it, even once every link is deleted.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};

use super::journal::Entry;
use super::Staging;
use crate::oci::Digest;
use crate::upstream::credentials::Scopes;
use crate::upstream::registry::{Auth, Caller, RegistryError, Request};
use crate::upstream::Upstream;

/// Most tags read to find the blobs accepted packages use before a rollback unlinks any.
const MAX_SCAN_TAGS: usize = 2000;
/// Largest manifest read during that scan.
const MAX_SCAN_MANIFEST: u64 = 4 << 20;
/// Deadline of each call made while promoting.
const CALL_DEADLINE: Duration = Duration::from_secs(60);
/// Environment variable of the test fault injection: `staging-after-mount` aborts the
/// process between the mounts and the manifest PUT, as a crash would.
pub const FAILPOINT_ENV: &str = "MARGO_PROXY_FAILPOINT";

/// The same caller with other token scopes for the proxy's account (the client's own
/// credentials, when they are what goes upstream, stay as they are).
pub fn scoped<'a>(base: &Caller<'a>, scopes: Vec<String>) -> Caller<'a> {
    Caller {
        request_id: base.request_id,
        forwarded: base.forwarded,
        auth: match &base.auth {
            Auth::Account(_) => Auth::Account(Scopes::Listed(scopes)),
            other => other.clone(),
        },
    }
}

fn pull_push(real: &str, staged: &str) -> Vec<String> {
    vec![
        format!("repository:{real}:pull,push"),
        format!("repository:{staged}:pull"),
    ]
}

/// `HEAD /v2/<name>/blobs/<d>`: whether the repository holds the blob.
async fn blob_exists(
    upstream: &Upstream,
    caller: &Caller<'_>,
    name: &str,
    digest: &Digest,
) -> Result<bool, RegistryError> {
    let req =
        Request::new(Method::HEAD, format!("/v2/{name}/blobs/{digest}")).deadline(CALL_DEADLINE);
    let r = upstream.registry().send(caller, req).await?;
    match r.status {
        s if s.is_success() => Ok(true),
        StatusCode::NOT_FOUND => Ok(false),
        s => Err(RegistryError::Status {
            upstream: upstream.name.clone(),
            status: s.as_u16(),
        }),
    }
}

/// A blob read of the client's repository that only staging can answer: `true` when
/// the real repository lacks the blob and staging has it (the read then goes there).
pub async fn blob_fallback(
    upstream: &Upstream,
    caller: &Caller<'_>,
    real: &str,
    staged: &str,
    digest: &Digest,
) -> bool {
    let caller = scoped(
        caller,
        vec![
            format!("repository:{real}:pull"),
            format!("repository:{staged}:pull"),
        ],
    );
    matches!(
        blob_exists(upstream, &caller, real, digest).await,
        Ok(false)
    ) && matches!(
        blob_exists(upstream, &caller, staged, digest).await,
        Ok(true)
    )
}

/// Cross-repository mount of one blob from staging. `Ok(false)`: staging does not have
/// it (the upstream opened an upload session instead, which is cancelled).
async fn mount(
    upstream: &Upstream,
    caller: &Caller<'_>,
    real: &str,
    staged: &str,
    digest: &Digest,
) -> Result<bool, RegistryError> {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("mount", &digest.to_string())
        .append_pair("from", staged)
        .finish();
    let req = Request::new(Method::POST, format!("/v2/{real}/blobs/uploads/?{query}"))
        .header(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"))
        .deadline(CALL_DEADLINE);
    let r = upstream.registry().send(caller, req).await?;
    match r.status {
        StatusCode::CREATED => Ok(true),
        StatusCode::ACCEPTED => {
            let location = r
                .headers
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| upstream_path(upstream, l));
            if let Some(path) = location {
                let cancel = Request::new(Method::DELETE, path).deadline(CALL_DEADLINE);
                let _ = upstream.registry().send(caller, cancel).await;
            }
            Ok(false)
        }
        s => Err(RegistryError::Status {
            upstream: upstream.name.clone(),
            status: s.as_u16(),
        }),
    }
}

/// The path and query of an upload `Location` on this upstream (relative or absolute).
fn upstream_path(upstream: &Upstream, location: &str) -> Option<String> {
    if location.starts_with('/') {
        return Some(location.to_owned());
    }
    let url = url::Url::parse(location).ok()?;
    let host = url.host_str()?;
    if host != upstream.base.host {
        return None;
    }
    Some(match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    })
}

/// A promotion under way: settle it with the outcome of the manifest PUT.
pub struct Promotion<'s> {
    staging: &'s Staging,
    /// `None`: nothing was mounted, nothing to journal or undo.
    journalled: Option<(String, Entry)>,
}

/// How the manifest PUT ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Stored,
    Refused,
    /// No answer (timeout, cut connection): the upstream may have stored it.
    Unknown,
}

/// What the promotion needs to know about the push.
pub struct Push<'a> {
    pub real: &'a str,
    pub staged: &'a str,
    pub reference: &'a str,
    pub content_type: Option<&'a str>,
    pub manifest: &'a Bytes,
}

/// Why a promotion could not be made (the push is then refused, nothing forwarded).
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    #[error(transparent)]
    Upstream(#[from] RegistryError),
    #[error("staging journal: {0}")]
    Journal(std::io::Error),
}

/// Mounts every blob of an accepted manifest that the real repository lacks from
/// staging, journalled first.
pub async fn promote<'s>(
    staging: &'s Staging,
    upstream: &Upstream,
    caller: &Caller<'_>,
    push: &Push<'_>,
) -> Result<Promotion<'s>, PromoteError> {
    let caller = scoped(caller, pull_push(push.real, push.staged));
    let mut missing = Vec::new();
    for d in super::manifest_blobs(push.manifest) {
        if !blob_exists(upstream, &caller, push.real, &d).await? {
            missing.push(d);
        }
    }
    let nothing = Promotion {
        staging,
        journalled: None,
    };
    if missing.is_empty() {
        return Ok(nothing);
    }
    // A blob neither repository has: the upstream will refuse the manifest
    // (`MANIFEST_BLOB_UNKNOWN`), so nothing is mounted that would have to be undone.
    for d in &missing {
        if !blob_exists(upstream, &caller, push.staged, d).await? {
            return Ok(nothing);
        }
    }
    let entry = Entry {
        upstream: upstream.name.clone(),
        repository: push.real.to_owned(),
        staged: push.staged.to_owned(),
        reference: push.reference.to_owned(),
        manifest_digest: Digest::sha256_of(push.manifest).to_string(),
        content_type: push.content_type.map(str::to_owned),
        manifest: String::from_utf8_lossy(push.manifest).into_owned(),
        mounted: missing.iter().map(|d| d.to_string()).collect(),
    };
    let id = staging
        .journal
        .write(&entry)
        .map_err(PromoteError::Journal)?;
    let promotion = Promotion {
        journalled: Some((id, entry)),
        ..nothing
    };
    for d in &missing {
        if let Err(e) = mount(upstream, &caller, push.real, push.staged, d).await {
            promotion
                .settle(upstream, &caller, PutOutcome::Refused)
                .await;
            return Err(e.into());
        }
    }
    if std::env::var(FAILPOINT_ENV).as_deref() == Ok("staging-after-mount") {
        tracing::error!("failpoint staging-after-mount: aborting between mount and manifest PUT");
        std::process::abort();
    }
    Ok(promotion)
}

impl Promotion<'_> {
    /// Ends the promotion: kept when the manifest was stored, undone otherwise.
    pub async fn settle(self, upstream: &Upstream, caller: &Caller<'_>, outcome: PutOutcome) {
        let Some((id, entry)) = self.journalled else {
            return;
        };
        let caller = scoped(caller, pull_push(&entry.repository, &entry.staged));
        let stored = match outcome {
            PutOutcome::Stored => true,
            PutOutcome::Refused => false,
            PutOutcome::Unknown => manifest_present(upstream, &caller, &entry).await,
        };
        if stored {
            self.staging.journal.remove(&id);
        } else {
            rollback(self.staging, upstream, &caller, &id, &entry).await;
        }
    }
}

async fn manifest_present(upstream: &Upstream, caller: &Caller<'_>, entry: &Entry) -> bool {
    matches!(
        upstream
            .registry()
            .manifest_head(caller, &entry.repository, &entry.manifest_digest)
            .await,
        Ok(Some(_))
    )
}

/// The blobs the tagged manifests of a repository use: never to be unlinked. `None`
/// when they cannot be read completely (then nothing is unlinked: deny when unsure).
async fn used_blobs(
    upstream: &Upstream,
    caller: &Caller<'_>,
    repository: &str,
) -> Option<HashSet<String>> {
    let registry = upstream.registry();
    let tags = match registry.tags_list(caller, repository, MAX_SCAN_TAGS).await {
        Ok(t) => t.unwrap_or_default(),
        Err(_) => return None,
    };
    let mut used = HashSet::new();
    for tag in tags {
        let m = registry
            .manifest_get(caller, repository, &tag, MAX_SCAN_MANIFEST)
            .await
            .ok()?;
        if let Some(m) = m {
            used.extend(super::manifest_blobs(&m.body).iter().map(|d| d.to_string()));
        }
    }
    Some(used)
}

/// Unlinks the blobs a promotion mounted, except those an accepted package (a tagged
/// manifest of the repository) or another promotion in flight uses. When that cannot
/// be known, the journal entry stays for the next start.
async fn rollback(
    staging: &Staging,
    upstream: &Upstream,
    caller: &Caller<'_>,
    id: &str,
    entry: &Entry,
) {
    let Some(used) = used_blobs(upstream, caller, &entry.repository).await else {
        tracing::warn!(upstream = %upstream.name, repository = %entry.repository,
            "staging rollback postponed: the repository's manifests could not be read");
        return;
    };
    let delete = scoped(
        caller,
        vec![format!("repository:{}:delete", entry.repository)],
    );
    let mut complete = true;
    for d in &entry.mounted {
        if used.contains(d) || staging.journal.in_use(id, &entry.repository, d) {
            continue;
        }
        let req = Request::new(
            Method::DELETE,
            format!("/v2/{}/blobs/{d}", entry.repository),
        )
        .deadline(CALL_DEADLINE);
        match upstream.registry().send(&delete, req).await {
            Ok(r) if r.status.is_success() || r.status == StatusCode::NOT_FOUND => {}
            Ok(r) => {
                complete = false;
                tracing::warn!(upstream = %upstream.name, repository = %entry.repository,
                    status = r.status.as_u16(),
                    "staging rollback: blob delete refused (docker-registry needs storage.delete.enabled)");
            }
            Err(e) => {
                complete = false;
                tracing::warn!(upstream = %upstream.name, error = %e, "staging rollback: blob delete failed");
            }
        }
    }
    if complete {
        staging.journal.remove(id);
    }
}

/// Completes the promotions an earlier process left in the journal (see the module
/// documentation): runs once at start-up.
pub async fn recover(staging: &Staging, upstreams: &[std::sync::Arc<Upstream>]) {
    for (id, entry) in staging.journal.leftovers() {
        let Some(upstream) = upstreams.iter().find(|u| u.name == entry.upstream) else {
            tracing::warn!(upstream = %entry.upstream, "staging journal: entry for an unknown upstream left in place");
            continue;
        };
        let mut scopes = pull_push(&entry.repository, &entry.staged);
        scopes.push(format!("repository:{}:delete", entry.repository));
        let caller = Caller::proxy(scopes);
        let done = roll_forward(upstream, &caller, &entry).await;
        tracing::info!(upstream = %upstream.name, repository = %entry.repository,
            reference = %entry.reference, completed = done,
            "staging journal: push interrupted between mount and manifest PUT settled");
        if done {
            staging.journal.remove(&id);
        } else {
            rollback(staging, upstream, &caller, &id, &entry).await;
        }
    }
}

/// Redoes an interrupted promotion: mounts again what is missing, then PUTs the
/// manifest, unless it is there already or its tag now names another manifest.
async fn roll_forward(upstream: &Upstream, caller: &Caller<'_>, entry: &Entry) -> bool {
    if manifest_present(upstream, caller, entry).await {
        return true;
    }
    let registry = upstream.registry();
    if entry.reference.parse::<Digest>().is_err() {
        match registry
            .manifest_digest(caller, &entry.repository, &entry.reference)
            .await
        {
            Ok(None) => {}
            Ok(Some(d)) if d.to_string() == entry.manifest_digest => return true,
            // Pushed since by someone else, or unknown: never overwritten.
            _ => return false,
        }
    }
    for d in &entry.mounted {
        let Ok(d) = d.parse::<Digest>() else {
            return false;
        };
        match blob_exists(upstream, caller, &entry.repository, &d).await {
            Ok(true) => {}
            Ok(false) => {
                if !matches!(
                    mount(upstream, caller, &entry.repository, &entry.staged, &d).await,
                    Ok(true)
                ) {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    let content_type = entry
        .content_type
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok());
    let put = registry
        .manifest_put(
            caller,
            &format!("/v2/{}/manifests/{}", entry.repository, entry.reference),
            content_type.as_ref(),
            Bytes::from(entry.manifest.clone().into_bytes()),
            64 * 1024,
        )
        .await;
    matches!(put, Ok(r) if r.status.is_success())
}

/// A refused manifest's blobs leave staging at once, so that the client's repository
/// (whose blob reads fall back to staging) looks as before the push. Only staging links
/// go: the real repository, and so every accepted package, is not touched. A concurrent
/// push of the same blob to the same repository then uploads it again (its mount finds
/// nothing and its manifest PUT is refused as `MANIFEST_BLOB_UNKNOWN`).
pub async fn discard(upstream: &Upstream, caller: &Caller<'_>, staged: &str, manifest: &[u8]) {
    let caller = scoped(caller, vec![format!("repository:{staged}:delete")]);
    for d in super::manifest_blobs(manifest) {
        let req =
            Request::new(Method::DELETE, format!("/v2/{staged}/blobs/{d}")).deadline(CALL_DEADLINE);
        match upstream.registry().send(&caller, req).await {
            Ok(r) if r.status.is_success() || r.status == StatusCode::NOT_FOUND => {}
            Ok(r) => tracing::warn!(upstream = %upstream.name, repository = %staged,
                status = r.status.as_u16(),
                "staging: blob of a refused push not deleted (docker-registry needs storage.delete.enabled)"),
            Err(e) => tracing::warn!(upstream = %upstream.name, error = %e,
                "staging: blob of a refused push not deleted"),
        }
    }
}
