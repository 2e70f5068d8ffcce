//! The App Registry answers, over a [`Store`]: each endpoint of the reference server
//! (appr/api/registry.py and impl/registry.py) with its JSON shapes and errors.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};

use super::config::ApprConfig;
use super::error::{ApprError, ErrorCode};
use super::mapping::{
    self, ChannelOp, ChannelsDoc, Content, ReleaseManifest, Selection, CHANNELS_TAG, MARGO,
};
use super::route::{query_param, ApprRoute, PackageName};
use super::store::{Store, StoreError};
use super::tarball;
use crate::oci::Digest;

/// The version the reference answers `/cnr/version` with: the API it implements.
pub const API_VERSION: &str = "0.7.4";
/// Most releases of one package read for a listing.
const MAX_RELEASES: usize = 1000;
/// Tries of a channels update before giving up on a contended package.
const CHANNEL_ATTEMPTS: usize = 8;

/// A request, as the glue hands it over.
pub struct Request<'a> {
    pub method: &'a http::Method,
    pub route: &'a ApprRoute,
    pub query: Option<&'a str>,
    pub body: &'a [u8],
    /// `scheme://host` the client used (for the discovery document).
    pub base_url: &'a str,
    /// The request's time, for `created_at` of what it pushes.
    pub now_unix: u64,
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(http::HeaderName, String)>,
    pub body: Bytes,
}

impl Reply {
    pub fn json(status: u16, v: &Value) -> Self {
        Reply {
            status,
            headers: vec![(http::header::CONTENT_TYPE, "application/json".to_owned())],
            body: Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
        }
    }

    pub fn error(e: &ApprError) -> Self {
        Reply::json(e.status(), &e.body())
    }
}

type Result<T> = std::result::Result<T, ApprError>;

fn store_error(e: StoreError) -> ApprError {
    match e {
        StoreError::Upstream { status, message } => {
            let mut e = ApprError::new(ErrorCode::Unavailable, message, json!({}));
            e.status = Some(status);
            e
        }
        StoreError::TooLarge { what, limit } => ApprError::new(
            ErrorCode::PayloadTooLarge,
            format!("{what} is larger than {limit} bytes"),
            json!({}),
        ),
        StoreError::Refused(oci) => {
            let errors: Vec<Value> = oci
                .errors
                .iter()
                .map(|e| json!({"code": e.code, "message": e.message, "detail": e.detail}))
                .collect();
            let message = oci
                .errors
                .first()
                .map(|e| e.message.clone())
                .unwrap_or_else(|| "refused".to_owned());
            let code = if oci.status == 403 {
                ErrorCode::Forbidden
            } else {
                ErrorCode::InvalidRelease
            };
            ApprError::new(code, message, json!({"errors": errors}))
        }
    }
}

/// Answers one request.
pub async fn handle(cfg: &ApprConfig, store: &dyn Store, req: &Request<'_>) -> Reply {
    if !req.route.allows(req.method) {
        return Reply::error(&ApprError::new(
            ErrorCode::MethodNotAllowed,
            format!("{} is not allowed here", req.method),
            json!({}),
        ));
    }
    let svc = Service { cfg, store };
    match svc.dispatch(req).await {
        Ok(r) => r,
        Err(e) => Reply::error(&e),
    }
}

struct Service<'a> {
    cfg: &'a ApprConfig,
    store: &'a dyn Store,
}

/// One release, resolved.
struct Resolved {
    release: String,
    manifest: ReleaseManifest,
    manifest_digest: Digest,
}

impl Service<'_> {
    async fn dispatch(&self, req: &Request<'_>) -> Result<Reply> {
        use http::Method;
        let q = |k: &str| query_param(req.query, k);
        let ok = |v: Value| Ok(Reply::json(200, &v));
        match req.route {
            ApprRoute::Version => ok(json!({"appr-api": API_VERSION})),
            ApprRoute::Discovery => ok(json!({"uri": format!("{}/cnr", req.base_url)})),
            ApprRoute::Login => Err(ApprError::new(
                ErrorCode::Unsupported,
                "login needs the proxy's token endpoint (auth.token_endpoint)",
                json!({}),
            )),
            ApprRoute::List => ok(self
                .list(q("namespace"), q("query"), q("media_type"))
                .await?),
            ApprRoute::Search => ok(self.search(q("q")).await?),
            ApprRoute::Package(p) if *req.method == Method::POST => ok(self.push(p, req).await?),
            ApprRoute::Package(p) => ok(self.releases_view(p, q("media_type").as_deref()).await?),
            ApprRoute::Release(p, r) => ok(self.release_manifests(p, r).await?),
            ApprRoute::Manifest(p, r, m) if *req.method == Method::DELETE => {
                ok(self.delete(p, r, m).await?)
            }
            ApprRoute::Manifest(p, r, m) => ok(self.show(p, r, m).await?),
            ApprRoute::Pull {
                package,
                release,
                media_type,
                json,
            } => {
                let as_json = *json || q("format").as_deref() == Some("json");
                self.pull(package, release, media_type, as_json).await
            }
            ApprRoute::Blob {
                package,
                digest,
                json,
            } => {
                let as_json = *json || q("format").as_deref() == Some("json");
                self.blob(package, digest, as_json).await
            }
            ApprRoute::Channels(p) => ok(self.channels(p).await?),
            ApprRoute::Channel(p, c) if *req.method == Method::DELETE => {
                ok(self.delete_channel(p, c).await?)
            }
            ApprRoute::Channel(p, c) => ok(self.show_channel(p, c).await?),
            ApprRoute::ChannelRelease(p, c, r) if *req.method == Method::POST => {
                ok(self.add_channel_release(p, c, r).await?)
            }
            ApprRoute::ChannelRelease(p, c, r) => ok(self.remove_channel_release(p, c, r).await?),
        }
    }

    fn repo(&self, p: &PackageName) -> String {
        self.cfg.repository(&p.namespace, &p.name)
    }

    /// Releases (highest first) with their tags.
    async fn releases(&self, repo: &str) -> Result<Vec<(semver::Version, String)>> {
        let tags = self.store.tags(repo).await.map_err(store_error)?;
        let mut v: Vec<(semver::Version, String)> = tags
            .into_iter()
            .filter(|t| t != CHANNELS_TAG)
            .filter_map(|t| Some((mapping::release_of(&t)?, t)))
            .collect();
        v.sort_by(|a, b| b.0.cmp(&a.0));
        v.truncate(MAX_RELEASES);
        Ok(v)
    }

    async fn read(&self, repo: &str, tag: &str) -> Result<Option<(ReleaseManifest, Digest)>> {
        let Some(f) = self.store.manifest(repo, tag).await.map_err(store_error)? else {
            return Ok(None);
        };
        Ok(mapping::parse_release(&f.body).map(|m| (m, f.digest)))
    }

    fn view(&self, p: &PackageName, r: &Resolved) -> Value {
        let m = &r.manifest;
        let (digest, size) = match &m.content {
            Content::Tarball { digest, size, .. } => (digest.encoded().to_owned(), *size),
            Content::Margo { files } => (
                r.manifest_digest.encoded().to_owned(),
                files.iter().map(|f| f.size).sum(),
            ),
        };
        json!({
            "created_at": m.created_at,
            "package": p.full(),
            "release": r.release,
            "metadata": m.metadata,
            "mediaType": mapping::artifact_type(m.media_type()),
            "content": {
                "mediaType": mapping::content_media_type(m.media_type()),
                "size": size,
                "digest": digest,
                "urls": [],
            },
        })
    }

    async fn list(
        &self,
        namespace: Option<String>,
        query: Option<String>,
        media_type: Option<String>,
    ) -> Result<Value> {
        let media_type = media_type.map(|m| mapping::short_media_type(&m).to_owned());
        let mut out = Vec::new();
        let mut repos = self.store.repositories().await.map_err(store_error)?;
        repos.sort();
        for repo in repos {
            let Some(name) = self.cfg.package_of(&repo) else {
                continue;
            };
            if namespace
                .as_deref()
                .is_some_and(|ns| name.split_once('/').map(|(n, _)| n) != Some(ns))
                || query.as_deref().is_some_and(|q| !name.contains(q))
                || !self.store.may_pull(&repo)
            {
                continue;
            }
            let mut releases = Vec::new();
            let mut top: Option<ReleaseManifest> = None;
            for (v, tag) in self.releases(&repo).await? {
                if media_type.is_none() && top.is_some() {
                    releases.push(v.to_string());
                    continue;
                }
                let Some((m, _)) = self.read(&repo, &tag).await? else {
                    continue;
                };
                if media_type.as_deref().is_some_and(|mt| mt != m.media_type()) {
                    continue;
                }
                releases.push(v.to_string());
                top.get_or_insert(m);
            }
            let (Some(top), Some(default)) = (top, releases.first().cloned()) else {
                continue;
            };
            out.push(json!({
                "releases": releases,
                "default": default,
                "manifests": [top.media_type()],
                "name": name,
                "visibility": "public",
                "created_at": top.created_at,
            }));
        }
        Ok(Value::Array(out))
    }

    async fn search(&self, q: Option<String>) -> Result<Value> {
        let Some(q) = q else {
            return Ok(json!([]));
        };
        let mut names = Vec::new();
        for repo in self.store.repositories().await.map_err(store_error)? {
            if let Some(name) = self.cfg.package_of(&repo) {
                if name.contains(&q) && self.store.may_pull(&repo) {
                    names.push(name.to_owned());
                }
            }
        }
        names.sort();
        Ok(json!(names))
    }

    async fn resolved_all(&self, p: &PackageName) -> Result<Vec<Resolved>> {
        let repo = self.repo(p);
        let releases = self.releases(&repo).await?;
        if releases.is_empty() {
            return Err(ApprError::package_not_found(&p.full(), None, None));
        }
        let mut out = Vec::new();
        for (v, tag) in releases {
            if let Some((manifest, manifest_digest)) = self.read(&repo, &tag).await? {
                out.push(Resolved {
                    release: v.to_string(),
                    manifest,
                    manifest_digest,
                });
            }
        }
        Ok(out)
    }

    async fn releases_view(&self, p: &PackageName, media_type: Option<&str>) -> Result<Value> {
        let all = self.resolved_all(p).await?;
        let media_type = media_type.map(mapping::short_media_type);
        Ok(Value::Array(
            all.iter()
                .filter(|r| media_type.is_none_or(|m| m == r.manifest.media_type()))
                .map(|r| self.view(p, r))
                .collect(),
        ))
    }

    async fn release_manifests(&self, p: &PackageName, release: &str) -> Result<Value> {
        let repo = self.repo(p);
        let releases = self.releases(&repo).await?;
        if releases.is_empty() {
            return Err(ApprError::package_not_found(&p.full(), None, None));
        }
        let found = releases.iter().find(|(v, _)| v.to_string() == release);
        let not_found = || ApprError::package_not_found(&p.full(), Some(release), None);
        let (v, tag) = found.ok_or_else(not_found)?;
        let (manifest, manifest_digest) = self.read(&repo, tag).await?.ok_or_else(not_found)?;
        let r = Resolved {
            release: v.to_string(),
            manifest,
            manifest_digest,
        };
        Ok(json!([self.view(p, &r)]))
    }

    /// The reference's `_get_package`: a release query and a media type (`-`: the only
    /// one the release has).
    async fn resolve(&self, p: &PackageName, query: &str, media_type: &str) -> Result<Resolved> {
        let repo = self.repo(p);
        let releases = self.releases(&repo).await?;
        if releases.is_empty() {
            return Err(ApprError::package_not_found(&p.full(), None, None));
        }
        let versions: Vec<semver::Version> = releases.iter().map(|(v, _)| v.clone()).collect();
        let v = match mapping::select(&versions, Some(query)) {
            Selection::Found(v) => v,
            Selection::NoMatch => return Err(ApprError::release_not_found(&p.full(), query)),
            Selection::Invalid(why) => {
                return Err(ApprError::new(
                    ErrorCode::InvalidRelease,
                    why,
                    json!({"release": query}),
                ))
            }
        };
        let release = v.to_string();
        let tag = releases
            .iter()
            .find(|(x, _)| *x == v)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| mapping::tag_of(&release));
        let media_type = mapping::short_media_type(media_type);
        let missing = || ApprError::package_not_found(&p.full(), Some(&release), Some(media_type));
        let (manifest, manifest_digest) = self.read(&repo, &tag).await?.ok_or_else(missing)?;
        if media_type != "-" && manifest.media_type() != media_type {
            return Err(missing());
        }
        Ok(Resolved {
            release,
            manifest,
            manifest_digest,
        })
    }

    async fn show(&self, p: &PackageName, release: &str, media_type: &str) -> Result<Value> {
        let r = self.resolve(p, release, media_type).await?;
        let doc = self.read_channels(&self.repo(p)).await?;
        let current: Vec<&String> = doc
            .channels
            .iter()
            .filter(|(_, c)| c.current == r.release)
            .map(|(n, _)| n)
            .collect();
        let mut v = self.view(p, &r);
        if let Value::Object(m) = &mut v {
            m.insert("channels".into(), json!(current));
        }
        Ok(v)
    }

    /// The tarball of a release: the layer, or the Margo package's files packed.
    async fn tarball(&self, p: &PackageName, r: &Resolved) -> Result<Bytes> {
        let repo = self.repo(p);
        match &r.manifest.content {
            Content::Tarball { digest, .. } => self
                .store
                .blob(&repo, digest, self.cfg.max_package_bytes)
                .await
                .map_err(store_error)?
                .ok_or_else(|| {
                    ApprError::package_not_found(&p.full(), Some(digest.encoded()), None)
                }),
            Content::Margo { files } => self.margo_tarball(p, files).await,
        }
    }

    async fn margo_tarball(&self, p: &PackageName, files: &[mapping::MargoFile]) -> Result<Bytes> {
        let repo = self.repo(p);
        let limit = self.cfg.max_package_bytes;
        let total: u64 = files.iter().map(|f| f.size).sum();
        if total > limit {
            return Err(store_error(StoreError::TooLarge {
                what: "the package",
                limit,
            }));
        }
        let mut out = BTreeMap::new();
        for f in files {
            let data = self
                .store
                .blob(&repo, &f.digest, f.size)
                .await
                .map_err(store_error)?
                .ok_or_else(|| {
                    ApprError::package_not_found(&p.full(), Some(f.digest.encoded()), None)
                })?;
            out.insert(f.path.clone(), data);
        }
        tarball::build(&out)
            .map(Bytes::from)
            .map_err(|e| ApprError::new(ErrorCode::Internal, format!("packing: {e}"), json!({})))
    }

    fn pulled(blob: Bytes, filename: String, mut json: Value, as_json: bool) -> Reply {
        if as_json {
            if let Value::Object(m) = &mut json {
                m.insert(
                    "blob".into(),
                    base64::engine::general_purpose::STANDARD
                        .encode(&blob)
                        .into(),
                );
                m.insert("filename".into(), filename.into());
            }
            return Reply::json(200, &json);
        }
        Reply {
            status: 200,
            headers: vec![
                (http::header::CONTENT_TYPE, "application/x-gzip".to_owned()),
                (http::header::CONTENT_DISPOSITION, filename),
            ],
            body: blob,
        }
    }

    async fn pull(
        &self,
        p: &PackageName,
        release: &str,
        media_type: &str,
        as_json: bool,
    ) -> Result<Reply> {
        let r = self.resolve(p, release, media_type).await?;
        let blob = self.tarball(p, &r).await?;
        let filename = format!("{}_{}.tar.gz", p.full().replace('/', "_"), r.release);
        let info = json!({"package": p.full(), "release": r.release,
                          "media_type": r.manifest.media_type()});
        Ok(Self::pulled(blob, filename, info, as_json))
    }

    async fn blob(&self, p: &PackageName, hex: &str, as_json: bool) -> Result<Reply> {
        let missing = || ApprError::package_not_found(&p.full(), Some(hex), None);
        let digest: Digest = format!("sha256:{hex}").parse().map_err(|_| missing())?;
        let repo = self.repo(p);
        // A Margo release's appr digest is its manifest's.
        let margo = match self.store.manifest(&repo, &digest.to_string()).await {
            Ok(Some(f)) => mapping::parse_release(&f.body).and_then(|m| match m.content {
                Content::Margo { files } => Some(files),
                Content::Tarball { .. } => None,
            }),
            _ => None,
        };
        let blob = match margo {
            Some(files) => self.margo_tarball(p, &files).await?,
            None => self
                .store
                .blob(&repo, &digest, self.cfg.max_package_bytes)
                .await
                .map_err(store_error)?
                .ok_or_else(missing)?,
        };
        let short: String = hex.chars().take(8).collect();
        let filename = format!("{}_{short}.tar.gz", p.full().replace('/', "_"));
        let info = json!({"package": p.full(), "release": hex});
        Ok(Self::pulled(blob, filename, info, as_json))
    }

    async fn push(&self, p: &PackageName, req: &Request<'_>) -> Result<Value> {
        let mut values: serde_json::Map<String, Value> =
            url::form_urlencoded::parse(req.query.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                .collect();
        if let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(req.body) {
            values.extend(body);
        }
        let text = |k: &str| values.get(k).and_then(Value::as_str).map(str::to_owned);
        let release = text("release").ok_or_else(|| ApprError::usage("`release` is missing"))?;
        let media_type = text("media_type").unwrap_or_else(|| "kpm".to_owned());
        let media_type = mapping::short_media_type(&media_type).to_owned();
        let force = matches!(values.get("force"), Some(Value::Bool(true)))
            || text("force").as_deref() == Some("true");
        let metadata = values.get("metadata").cloned().unwrap_or(Value::Null);
        if let Err(e) = semver::Version::parse(&release) {
            return Err(ApprError::new(
                ErrorCode::InvalidRelease,
                e.to_string(),
                json!({"version": release}),
            ));
        }
        if !mapping::valid_media_type(&media_type) {
            return Err(ApprError::usage(format!(
                "media_type `{media_type}`: letters, digits, `-`, `_` and `.` only"
            )));
        }
        let b64 = text("blob").ok_or_else(|| ApprError::usage("`blob` is missing"))?;
        let limit = self.cfg.max_package_bytes;
        if b64.len() as u64 > limit.saturating_mul(4) / 3 + 4 {
            return Err(store_error(StoreError::TooLarge {
                what: "the package",
                limit,
            }));
        }
        let blob = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| ApprError::usage(format!("`blob` is not base64: {e}")))?;
        let files = tarball::unpack(&blob, limit).map_err(|e| ApprError::usage(e.to_string()))?;
        let repo = self.repo(p);
        let tag = mapping::tag_of(&release);
        let tags = self.store.tags(&repo).await.map_err(store_error)?;
        if !force && tags.contains(&tag) {
            return Err(ApprError::exists(&p.full(), &release, &media_type));
        }
        let created = crate::auth::token_endpoint::rfc3339(req.now_unix);
        let manifest = if media_type == MARGO {
            self.margo_manifest(&repo, files, &created).await?
        } else {
            let digest = Digest::sha256_of(&blob);
            let size = blob.len() as u64;
            self.upload(&repo, Bytes::from_static(b"{}")).await?;
            self.upload(&repo, Bytes::from(blob)).await?;
            let filename = format!("{}_{release}.tar.gz", p.full().replace('/', "_"));
            Bytes::from(mapping::release_manifest(
                &media_type,
                &digest,
                size,
                &filename,
                &created,
                &metadata,
            ))
        };
        self.store
            .put_manifest(&repo, &tag, manifest, true)
            .await
            .map_err(|e| {
                let mut e = store_error(e);
                e.details.insert("package".into(), p.full().into());
                e.details.insert("release".into(), release.clone().into());
                e.details
                    .insert("media_type".into(), media_type.clone().into());
                e
            })?;
        Ok(json!({"status": "ok"}))
    }

    async fn upload(&self, repo: &str, data: Bytes) -> Result<Digest> {
        let d = Digest::sha256_of(&data);
        self.store
            .put_blob(repo, &d, data)
            .await
            .map_err(store_error)?;
        Ok(d)
    }

    /// A Margo push: the package files packed as an OCI Margo package (as `margo-proxy
    /// push` packs a directory), blobs uploaded; the manifest is what admission judges.
    async fn margo_manifest(
        &self,
        repo: &str,
        files: BTreeMap<String, Bytes>,
        created: &str,
    ) -> Result<Bytes> {
        let files = tarball::strip_top_folder(files, "margo.yaml");
        let packed = crate::catalog::pack::pack_files(&files, Some(created))
            .map_err(|e| ApprError::usage(e.to_string()))?;
        for b in packed.blobs {
            self.store
                .put_blob(repo, &b.digest, b.data)
                .await
                .map_err(store_error)?;
        }
        Ok(packed.manifest)
    }

    async fn delete(&self, p: &PackageName, release: &str, media_type: &str) -> Result<Value> {
        let repo = self.repo(p);
        let not_found = || ApprError::package_not_found(&p.full(), None, None);
        let releases = self.releases(&repo).await?;
        let (_, tag) = releases
            .iter()
            .find(|(v, _)| v.to_string() == release)
            .ok_or_else(not_found)?;
        let (m, digest) = self.read(&repo, tag).await?.ok_or_else(not_found)?;
        if m.media_type() != mapping::short_media_type(media_type) {
            return Err(not_found());
        }
        if !self
            .store
            .delete_manifest(&repo, &digest)
            .await
            .map_err(store_error)?
        {
            return Err(not_found());
        }
        Ok(json!({"status": "deleted", "package": p.full(), "release": release}))
    }

    /// The channels document. A 5xx is tried again a few times: distribution answers
    /// 500 to a tag read that meets a concurrent write of the same tag.
    async fn read_channels(&self, repo: &str) -> Result<ChannelsDoc> {
        let mut tries = 0;
        loop {
            match self.store.manifest(repo, CHANNELS_TAG).await {
                Ok(f) => return Ok(f.map(|f| ChannelsDoc::parse(&f.body)).unwrap_or_default()),
                Err(StoreError::Upstream { status, .. }) if status >= 500 && tries < 4 => {
                    tries += 1;
                    tokio::time::sleep(settle(tries)).await;
                }
                Err(e) => return Err(store_error(e)),
            }
        }
    }

    /// The package must have a release; returns them (as strings).
    async fn existing(&self, p: &PackageName) -> Result<Vec<String>> {
        let releases = self.releases(&self.repo(p)).await?;
        if releases.is_empty() {
            return Err(ApprError::package_not_found(&p.full(), None, None));
        }
        Ok(releases.into_iter().map(|(v, _)| v.to_string()).collect())
    }

    fn channel_view(name: &str, c: &mapping::Channel, existing: &[String]) -> Value {
        let releases: Vec<String> = ChannelsDoc::releases_of(c)
            .into_iter()
            .filter(|r| existing.contains(r))
            .collect();
        json!({"releases": releases, "name": name, "current": c.current})
    }

    async fn channels(&self, p: &PackageName) -> Result<Value> {
        let existing = self.existing(p).await?;
        let doc = self.read_channels(&self.repo(p)).await?;
        Ok(Value::Array(
            doc.channels
                .iter()
                .map(|(n, c)| Self::channel_view(n, c, &existing))
                .collect(),
        ))
    }

    async fn show_channel(&self, p: &PackageName, channel: &str) -> Result<Value> {
        let existing = self.existing(p).await?;
        let doc = self.read_channels(&self.repo(p)).await?;
        let c = doc
            .channels
            .get(channel)
            .ok_or_else(|| ApprError::channel_not_found(&p.full(), channel))?;
        Ok(Self::channel_view(channel, c, &existing))
    }

    async fn add_channel_release(
        &self,
        p: &PackageName,
        channel: &str,
        release: &str,
    ) -> Result<Value> {
        let existing = self.existing(p).await?;
        if !existing.iter().any(|r| r == release) {
            return Err(ApprError::new(
                ErrorCode::PackageReleaseNotFound,
                format!("Release {release} doesn't exist for package {}", p.full()),
                json!({"package": p.full(), "release": release}),
            ));
        }
        if !valid_channel(channel) {
            return Err(ApprError::usage(format!("channel name `{channel}`")));
        }
        let op = ChannelOp::Add {
            channel: channel.to_owned(),
            release: release.to_owned(),
        };
        let doc = self.update_channels(p, &op).await?;
        let c = doc.channels.get(channel).cloned().unwrap_or_default();
        Ok(Self::channel_view(channel, &c, &existing))
    }

    async fn remove_channel_release(
        &self,
        p: &PackageName,
        channel: &str,
        release: &str,
    ) -> Result<Value> {
        let existing = self.existing(p).await?;
        let doc = self.read_channels(&self.repo(p)).await?;
        if !doc.channels.contains_key(channel) {
            return Err(ApprError::channel_not_found(&p.full(), channel));
        }
        if !existing.iter().any(|r| r == release) {
            return Err(ApprError::package_not_found(&p.full(), Some(release), None));
        }
        let op = ChannelOp::Remove {
            channel: channel.to_owned(),
            release: release.to_owned(),
        };
        self.update_channels(p, &op).await?;
        Ok(json!({"status": "deleted", "package": p.full(), "name": channel, "release": release}))
    }

    async fn delete_channel(&self, p: &PackageName, channel: &str) -> Result<Value> {
        self.existing(p).await?;
        let doc = self.read_channels(&self.repo(p)).await?;
        if !doc.channels.contains_key(channel) {
            return Err(ApprError::channel_not_found(&p.full(), channel));
        }
        let op = ChannelOp::Delete {
            channel: channel.to_owned(),
        };
        self.update_channels(p, &op).await?;
        Ok(json!({"channel": channel, "package": p.full(), "action": "delete"}))
    }

    /// Read, change, write, read again: the change must show, also a moment later
    /// (a concurrent writer that read before our write may put back what it read; the
    /// change is then applied again on top of its document). The registry has no
    /// conditional manifest PUT, so this narrows the window, as `src/referrers` does.
    async fn update_channels(&self, p: &PackageName, op: &ChannelOp) -> Result<ChannelsDoc> {
        let repo = self.repo(p);
        for attempt in 0..CHANNEL_ATTEMPTS {
            let current = self.read_channels(&repo).await?;
            if !op.holds_in(&current) {
                let mut next = current.clone();
                op.apply(&mut next);
                if next.channels.len() > mapping::MAX_CHANNELS
                    || next
                        .channels
                        .values()
                        .any(|c| c.releases.len() > mapping::MAX_CHANNELS)
                {
                    return Err(ApprError::usage(format!(
                        "a package holds at most {} channels of at most as many releases",
                        mapping::MAX_CHANNELS
                    )));
                }
                let put = self
                    .store
                    .put_manifest(&repo, CHANNELS_TAG, Bytes::from(next.manifest()), false)
                    .await;
                match put {
                    Ok(_) => {}
                    // A concurrent write of the same tag: read again and retry.
                    Err(StoreError::Upstream { status, .. }) if status >= 500 => {
                        tokio::time::sleep(settle(attempt)).await;
                        continue;
                    }
                    Err(e) => return Err(store_error(e)),
                }
            }
            let after = self.read_channels(&repo).await?;
            if op.holds_in(&after) {
                tokio::time::sleep(settle(attempt)).await;
                let settled = self.read_channels(&repo).await?;
                if op.holds_in(&settled) {
                    return Ok(settled);
                }
            }
            tokio::time::sleep(settle(attempt)).await;
        }
        Err(ApprError::new(
            ErrorCode::ResourceInUse,
            format!("the channels of {} keep changing; try again", p.full()),
            json!({"package": p.full()}),
        ))
    }
}

/// A short pause, growing with the attempt and spread so that contenders drift apart.
fn settle(attempt: usize) -> Duration {
    let jitter = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            % 10,
    );
    Duration::from_millis(5 + 10 * attempt as u64 + jitter)
}

fn valid_channel(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= 128
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::super::store::memory::MemoryStore;
    use super::*;

    fn cfg() -> ApprConfig {
        ApprConfig {
            enabled: true,
            prefix: "cnr".into(),
            ..ApprConfig::default()
        }
    }

    fn tgz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let m = files
            .iter()
            .map(|(p, d)| ((*p).to_owned(), Bytes::copy_from_slice(d)))
            .collect();
        tarball::build(&m).unwrap_or_default()
    }

    async fn call(
        store: &MemoryStore,
        method: http::Method,
        path: &str,
        body: Value,
    ) -> (u16, Value, Reply) {
        let route = ApprRoute::parse(path.split('?').next().unwrap_or(path))
            .unwrap_or_else(|| panic!("no route {path}"));
        let query = path.split_once('?').map(|(_, q)| q);
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let req = Request {
            method: &method,
            route: &route,
            query,
            body: &body,
            base_url: "http://h",
            now_unix: 0,
        };
        let reply = handle(&cfg(), store, &req).await;
        let v = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        (reply.status, v, reply)
    }

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    #[tokio::test]
    async fn push_show_pull_delete() {
        use http::Method;
        let s = MemoryStore::default();
        let blob = tgz(&[("manifest.yaml", b"name: x\n")]);
        let push = json!({"release": "1.0.0", "media_type": "kpm", "blob": b64(&blob)});
        let (st, v, _) = call(&s, Method::POST, "/cnr/api/v1/packages/ns/p", push.clone()).await;
        assert_eq!((st, v), (200, json!({"status": "ok"})));
        let (st, v, _) = call(&s, Method::POST, "/cnr/api/v1/packages/ns/p", push.clone()).await;
        assert_eq!((st, v["code"].as_str()), (409, Some("package-exists")));
        let (st, _, _) = call(
            &s,
            Method::POST,
            "/cnr/api/v1/packages/ns/p?force=true",
            push,
        )
        .await;
        assert_eq!(st, 200);
        let (st, v, _) = call(
            &s,
            Method::POST,
            "/cnr/api/v1/packages/ns/p",
            json!({"release": "one", "blob": b64(&blob)}),
        )
        .await;
        assert_eq!((st, v["code"].as_str()), (422, Some("invalid-release")));
        assert_eq!(v["details"], json!({"version": "one"}));
        let (st, v, _) = call(
            &s,
            Method::POST,
            "/cnr/api/v1/packages/ns/p",
            json!({"release": "2.0.0", "blob": b64(b"nope")}),
        )
        .await;
        assert_eq!((st, v["code"].as_str()), (400, Some("invalid-usage")));

        let (st, v, _) = call(&s, Method::GET, "/cnr/api/v1/packages", Value::Null).await;
        assert_eq!(st, 200);
        assert_eq!(v[0]["name"], "ns/p");
        assert_eq!(v[0]["releases"], json!(["1.0.0"]));
        assert_eq!(v[0]["manifests"], json!(["kpm"]));
        let (_, v, _) = call(
            &s,
            Method::GET,
            "/cnr/api/v1/packages?media_type=helm",
            Value::Null,
        )
        .await;
        assert_eq!(v, json!([]));
        let (_, v, _) = call(
            &s,
            Method::GET,
            "/cnr/api/v1/packages/search?q=p",
            Value::Null,
        )
        .await;
        assert_eq!(v, json!(["ns/p"]));

        let (st, v, _) = call(
            &s,
            Method::GET,
            "/cnr/api/v1/packages/ns/p/1.0.0/kpm",
            Value::Null,
        )
        .await;
        assert_eq!(st, 200);
        assert_eq!(v["channels"], json!([]));
        assert_eq!(
            v["mediaType"],
            "application/vnd.appr.package-manifest.kpm.v0.json"
        );
        let digest = v["content"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(digest, Digest::sha256_of(&blob).encoded());

        let (st, _, raw) = call(
            &s,
            Method::GET,
            "/cnr/api/v1/packages/ns/p/1.0.0/kpm/pull",
            Value::Null,
        )
        .await;
        assert_eq!(st, 200);
        assert_eq!(raw.body.as_ref(), blob.as_slice());
        assert!(raw
            .headers
            .iter()
            .any(|(n, v)| *n == http::header::CONTENT_DISPOSITION && v == "ns_p_1.0.0.tar.gz"));
        let (_, v, _) = call(
            &s,
            Method::GET,
            "/cnr/api/v1/packages/ns/p/default/kpm/pull/json",
            Value::Null,
        )
        .await;
        assert_eq!(v["blob"], b64(&blob));
        let (_, v, _) = call(
            &s,
            Method::GET,
            &format!("/cnr/api/v1/packages/ns/p/blobs/sha256/{digest}/json"),
            Value::Null,
        )
        .await;
        assert_eq!(v["blob"], b64(&blob));
        let (st, v, _) = call(
            &s,
            Method::GET,
            "/cnr/api/v1/packages/ns/p/blobs/sha256/00/json",
            Value::Null,
        )
        .await;
        assert_eq!((st, v["code"].as_str()), (404, Some("package-not-found")));

        let (st, v, _) = call(
            &s,
            Method::GET,
            "/cnr/api/v1/packages/ns/p/9.9.9/kpm",
            Value::Null,
        )
        .await;
        assert_eq!(
            (st, v["code"].as_str()),
            (404, Some("package-release-not-found"))
        );
        let (st, v, _) = call(
            &s,
            Method::GET,
            "/cnr/api/v1/packages/ns/p/1.0.0/helm",
            Value::Null,
        )
        .await;
        assert_eq!((st, v["code"].as_str()), (404, Some("package-not-found")));
        let (st, v, _) = call(&s, Method::GET, "/cnr/api/v1/packages/ns/q", Value::Null).await;
        assert_eq!((st, v["code"].as_str()), (404, Some("package-not-found")));

        let (st, v, _) = call(
            &s,
            Method::DELETE,
            "/cnr/api/v1/packages/ns/p/1.0.0/kpm",
            Value::Null,
        )
        .await;
        assert_eq!((st, v["status"].as_str()), (200, Some("deleted")));
        let (st, _, _) = call(
            &s,
            Method::DELETE,
            "/cnr/api/v1/packages/ns/p/1.0.0/kpm",
            Value::Null,
        )
        .await;
        assert_eq!(st, 404);
    }

    #[tokio::test]
    async fn channels() {
        use http::Method;
        let s = MemoryStore::default();
        let blob = tgz(&[("manifest.yaml", b"name: x\n")]);
        for r in ["1.0.0", "1.1.0"] {
            let push = json!({"release": r, "blob": b64(&blob)});
            assert_eq!(
                call(&s, Method::POST, "/cnr/api/v1/packages/ns/p", push)
                    .await
                    .0,
                200
            );
        }
        let base = "/cnr/api/v1/packages/ns/p/channels";
        assert_eq!(call(&s, Method::GET, base, Value::Null).await.1, json!([]));
        let (st, v, _) = call(&s, Method::GET, &format!("{base}/stable"), Value::Null).await;
        assert_eq!((st, v["code"].as_str()), (404, Some("channel-not-found")));
        let (st, v, _) = call(
            &s,
            Method::POST,
            &format!("{base}/stable/1.0.0"),
            Value::Null,
        )
        .await;
        assert_eq!(st, 200);
        assert_eq!(
            v,
            json!({"releases": ["1.0.0"], "name": "stable", "current": "1.0.0"})
        );
        call(
            &s,
            Method::POST,
            &format!("{base}/stable/1.1.0"),
            Value::Null,
        )
        .await;
        let (_, v, _) = call(&s, Method::GET, &format!("{base}/stable"), Value::Null).await;
        assert_eq!(
            v,
            json!({"releases": ["1.1.0", "1.0.0"], "name": "stable", "current": "1.1.0"})
        );
        let (_, v, _) = call(
            &s,
            Method::GET,
            "/cnr/api/v1/packages/ns/p/1.1.0/kpm",
            Value::Null,
        )
        .await;
        assert_eq!(v["channels"], json!(["stable"]));
        let (st, v, _) = call(
            &s,
            Method::POST,
            &format!("{base}/stable/3.0.0"),
            Value::Null,
        )
        .await;
        assert_eq!(
            (st, v["code"].as_str()),
            (404, Some("package-release-not-found"))
        );
        let (st, v, _) = call(
            &s,
            Method::DELETE,
            &format!("{base}/stable/1.1.0"),
            Value::Null,
        )
        .await;
        assert_eq!((st, v["status"].as_str()), (200, Some("deleted")));
        let (_, v, _) = call(&s, Method::GET, base, Value::Null).await;
        assert_eq!(
            v,
            json!([{"releases": ["1.0.0"], "name": "stable", "current": "1.0.0"}])
        );
        let (st, v, _) = call(&s, Method::DELETE, &format!("{base}/stable"), Value::Null).await;
        assert_eq!((st, v["action"].as_str()), (200, Some("delete")));
        let (st, _, _) = call(&s, Method::DELETE, &format!("{base}/stable"), Value::Null).await;
        assert_eq!(st, 404);
        let (st, _, _) = call(
            &s,
            Method::GET,
            "/cnr/api/v1/packages/ns/none/channels",
            Value::Null,
        )
        .await;
        assert_eq!(st, 404);
        let (st, v, _) = call(&s, Method::PUT, base, Value::Null).await;
        assert_eq!((st, v["code"].as_str()), (405, Some("method-not-allowed")));
    }

    #[tokio::test]
    async fn margo_push_packs_and_pulls_the_same_files_and_refusals_name_the_rule() {
        use http::Method;
        let s = MemoryStore::default();
        let yaml: &[u8] = b"apiVersion: margo.org/v1-alpha1\nkind: ApplicationDescription\n";
        let blob = tgz(&[("pkg/margo.yaml", yaml)]);
        let push = json!({"release": "1.0.0", "media_type": "margo", "blob": b64(&blob)});
        let (st, v, _) = call(&s, Method::POST, "/cnr/api/v1/packages/m/app", push.clone()).await;
        assert_eq!((st, v.clone()), (200, json!({"status": "ok"})), "{v}");
        let (_, v, _) = call(
            &s,
            Method::GET,
            "/cnr/api/v1/packages/m/app/1.0.0/margo",
            Value::Null,
        )
        .await;
        assert_eq!(
            v["mediaType"],
            "application/vnd.appr.package-manifest.margo.v0.json"
        );
        let (st, _, raw) = call(
            &s,
            Method::GET,
            "/cnr/api/v1/packages/m/app/1.0.0/margo/pull",
            Value::Null,
        )
        .await;
        assert_eq!(st, 200);
        let files = tarball::unpack(&raw.body, 1 << 20).unwrap_or_default();
        assert_eq!(files.get("margo.yaml").map(|b| b.as_ref()), Some(yaml));
        // The digest of a Margo release is its manifest's, and the blob route builds it.
        let digest = v["content"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let (st, _, again) = call(
            &s,
            Method::GET,
            &format!("/cnr/api/v1/packages/m/app/blobs/sha256/{digest}"),
            Value::Null,
        )
        .await;
        assert_eq!(st, 200);
        assert_eq!(again.body, raw.body);

        let mut refusal = crate::oci::OciError::new(
            crate::oci::OciErrorCode::ManifestInvalid,
            "[MARGO-DESC-001] metadata.name: required",
        );
        refusal.errors[0].detail = json!({"rule": "MARGO-DESC-001"});
        *s.refuse.lock().unwrap_or_else(|p| p.into_inner()) = Some(refusal);
        let push = json!({"release": "2.0.0", "media_type": "margo", "blob": b64(&blob)});
        let (st, v, _) = call(&s, Method::POST, "/cnr/api/v1/packages/m/app", push).await;
        assert_eq!((st, v["code"].as_str()), (422, Some("invalid-release")));
        assert!(
            v["message"]
                .as_str()
                .unwrap_or_default()
                .contains("MARGO-DESC-001"),
            "{v}"
        );
        assert_eq!(
            v["details"]["errors"][0]["detail"]["rule"],
            "MARGO-DESC-001"
        );
        assert_eq!(v["details"]["release"], "2.0.0");
        // No margo.yaml: refused before anything is written.
        let push =
            json!({"release": "3.0.0", "media_type": "margo", "blob": b64(&tgz(&[("x", b"y")]))});
        let (st, _, _) = call(&s, Method::POST, "/cnr/api/v1/packages/m/app", push).await;
        assert_eq!(st, 400);
    }

    #[tokio::test]
    async fn a_channel_update_lost_to_a_concurrent_writer_is_applied_again() {
        use http::Method;
        let s = MemoryStore::default();
        let blob = tgz(&[("manifest.yaml", b"x")]);
        let push = json!({"release": "1.0.0", "blob": b64(&blob)});
        call(&s, Method::POST, "/cnr/api/v1/packages/ns/p", push).await;
        *s.lose_channel_writes
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = 3;
        let (st, v, _) = call(
            &s,
            Method::POST,
            "/cnr/api/v1/packages/ns/p/channels/stable/1.0.0",
            Value::Null,
        )
        .await;
        assert_eq!(st, 200, "{v}");
        let (_, v, _) = call(
            &s,
            Method::GET,
            "/cnr/api/v1/packages/ns/p/channels",
            Value::Null,
        )
        .await;
        assert_eq!(
            v,
            json!([{"releases": ["1.0.0"], "name": "stable", "current": "1.0.0"}])
        );
        // Every write lost: a clear 409, not a silent success.
        *s.lose_channel_writes
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = 100;
        let (st, v, _) = call(
            &s,
            Method::POST,
            "/cnr/api/v1/packages/ns/p/channels/beta/1.0.0",
            Value::Null,
        )
        .await;
        assert_eq!((st, v["code"].as_str()), (409, Some("resource-in-use")));
    }

    #[tokio::test]
    async fn hidden_repositories_are_not_listed() {
        use http::Method;
        let s = MemoryStore {
            hidden: vec!["cnr/ns/secret".into()],
            ..MemoryStore::default()
        };
        let blob = tgz(&[("manifest.yaml", b"x")]);
        for p in ["secret", "open"] {
            let push = json!({"release": "1.0.0", "blob": b64(&blob)});
            call(
                &s,
                Method::POST,
                &format!("/cnr/api/v1/packages/ns/{p}"),
                push,
            )
            .await;
        }
        let (_, v, _) = call(&s, Method::GET, "/cnr/api/v1/packages", Value::Null).await;
        assert_eq!(v.as_array().map(Vec::len), Some(1));
        assert_eq!(v[0]["name"], "ns/open");
        let (_, v, _) = call(
            &s,
            Method::GET,
            "/cnr/api/v1/packages/search?q=secret",
            Value::Null,
        )
        .await;
        assert_eq!(v, json!([]));
    }
}
