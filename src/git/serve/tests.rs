//! The endpoint end to end over an in-memory store: paths, push refusal, versions left
//! out, determinism.

use std::collections::HashMap;

use async_trait::async_trait;

use super::*;
use crate::margo::manifest::package::{ARTIFACT_TYPE, DESCRIPTION_MEDIA_TYPE};

#[derive(Default)]
struct Memory {
    tags: HashMap<String, Vec<u8>>,
    blobs: HashMap<Digest, Bytes>,
}

impl Memory {
    fn blob(&mut self, data: &[u8]) -> (Digest, usize) {
        let d = Digest::sha256_of(data);
        self.blobs.insert(d.clone(), Bytes::copy_from_slice(data));
        (d, data.len())
    }

    fn package(&mut self, tag: &str, yaml: &str, icon_title: &str, created: &str) {
        let (yd, ys) = self.blob(yaml.as_bytes());
        let (id, is) = self.blob(b"\x89PNG icon");
        let m = format!(
            r#"{{"schemaVersion":2,"artifactType":"{ARTIFACT_TYPE}","annotations":{{"org.opencontainers.image.created":"{created}"}},
            "layers":[{{"mediaType":"{DESCRIPTION_MEDIA_TYPE}","digest":"{yd}","size":{ys}}},
            {{"mediaType":"application/vnd.margo.app.icon.v1+png","digest":"{id}","size":{is},"annotations":{{"org.opencontainers.image.title":"{icon_title}"}}}}]}}"#
        );
        self.tags.insert(tag.to_owned(), m.into_bytes());
    }
}

#[async_trait]
impl PackageStore for Memory {
    async fn tags(&self, repo: &str) -> Result<Vec<String>, StoreError> {
        if repo != "apps/x" {
            return Err(StoreError::NotAnApp(repo.into()));
        }
        Ok(self.tags.keys().cloned().collect())
    }
    async fn manifest(&self, _: &str, tag: &str) -> Result<(Digest, Bytes), StoreError> {
        let m = self.tags.get(tag).ok_or(StoreError::NotFound)?;
        Ok((Digest::sha256_of(m), Bytes::from(m.clone())))
    }
    async fn blob(&self, _: &str, d: &Digest, _: u64) -> Result<Bytes, StoreError> {
        self.blobs.get(d).cloned().ok_or(StoreError::NotFound)
    }
}

fn service(m: Memory) -> GitServe {
    GitServe::new(GitServeConfig::default(), Arc::new(m))
}

async fn get(
    s: &GitServe,
    method: http::Method,
    path: &str,
    query: Option<&str>,
    v2: bool,
) -> Reply {
    let mut headers = http::HeaderMap::new();
    if v2 {
        headers.insert("git-protocol", http::HeaderValue::from_static("version=2"));
    }
    s.handle(
        None,
        &Request {
            method: &method,
            path,
            query,
            headers: &headers,
            body: b"",
        },
    )
    .await
}

fn store() -> Memory {
    let mut m = Memory::default();
    m.package(
        "1.0.0",
        "a: 1\n",
        "resources/icon.png",
        "2024-01-01T00:00:00Z",
    );
    m.package(
        "1.1.0",
        "a: 2\n",
        "resources/icon.png",
        "2024-02-01T00:00:00Z",
    );
    m.package(
        "latest",
        "a: 2\n",
        "resources/icon.png",
        "2024-02-01T00:00:00Z",
    );
    m.package(
        "2.0.0",
        "a: 3\n",
        "../../etc/passwd",
        "2024-03-01T00:00:00Z",
    );
    m
}

#[tokio::test]
async fn advertises_semver_versions_and_leaves_unsafe_ones_out() {
    let s = service(store());
    let r = get(
        &s,
        http::Method::GET,
        "/git/apps/x.git/info/refs",
        Some("service=git-upload-pack"),
        false,
    )
    .await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body);
    assert!(
        text.starts_with("001e# service=git-upload-pack\n0000"),
        "{text}"
    );
    assert!(text.contains("refs/tags/1.0.0") && text.contains("refs/tags/1.1.0"));
    assert!(
        !text.contains("latest") && !text.contains("2.0.0"),
        "{text}"
    );
    let v2 = get(
        &s,
        http::Method::GET,
        "/git/apps/x/info/refs",
        Some("service=git-upload-pack"),
        true,
    )
    .await;
    assert!(String::from_utf8_lossy(&v2.body).starts_with("000eversion 2\n"));
    // The same manifests give the same commits on another instance (another replica).
    let again = get(
        &service(store()),
        http::Method::GET,
        "/git/apps/x.git/info/refs",
        Some("service=git-upload-pack"),
        false,
    )
    .await;
    assert_eq!(r.body, again.body);
}

#[tokio::test]
async fn push_dumb_http_and_unknown_repositories_are_refused() {
    let s = service(store());
    let r = get(
        &s,
        http::Method::GET,
        "/git/apps/x.git/info/refs",
        Some("service=git-receive-pack"),
        false,
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(String::from_utf8_lossy(&r.body).contains("git push is not supported"));
    assert_eq!(
        get(
            &s,
            http::Method::POST,
            "/git/apps/x.git/git-receive-pack",
            None,
            false
        )
        .await
        .status,
        403
    );
    assert_eq!(
        get(
            &s,
            http::Method::GET,
            "/git/apps/x.git/info/refs",
            None,
            false
        )
        .await
        .status,
        403
    );
    assert_eq!(
        get(&s, http::Method::GET, "/git/apps/x.git/HEAD", None, false)
            .await
            .status,
        404
    );
    assert_eq!(
        get(
            &s,
            http::Method::GET,
            "/git/apps/x.git/git-upload-pack",
            None,
            false
        )
        .await
        .status,
        405
    );
    assert_eq!(
        get(
            &s,
            http::Method::GET,
            "/git/apps/y.git/info/refs",
            Some("service=git-upload-pack"),
            false
        )
        .await
        .status,
        404
    );
    assert_eq!(
        get(
            &s,
            http::Method::GET,
            "/git/../x.git/info/refs",
            Some("service=git-upload-pack"),
            false
        )
        .await
        .status,
        404
    );
}

#[test]
fn gzip_bodies_are_bounded() {
    use std::io::Write as _;
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&vec![b'0'; (MAX_INFLATED_BYTES + 10) as usize])
        .unwrap();
    let body = z.finish().unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_ENCODING,
        http::HeaderValue::from_static("gzip"),
    );
    let req = Request {
        method: &http::Method::POST,
        path: "/git/apps/x.git/git-upload-pack",
        query: None,
        headers: &headers,
        body: &body,
    };
    assert_eq!(inflate(&req).unwrap_err().status, 413);
    let bad = Request {
        body: b"not gzip",
        ..req
    };
    assert_eq!(inflate(&bad).unwrap_err().status, 400);
}

#[tokio::test]
async fn a_repository_past_the_response_limit_is_refused_whole() {
    let config = GitServeConfig {
        max_response_bytes: 200,
        ..GitServeConfig::default()
    };
    let s = GitServe::new(config, Arc::new(store()));
    let r = get(
        &s,
        http::Method::GET,
        "/git/apps/x.git/info/refs",
        Some("service=git-upload-pack"),
        false,
    )
    .await;
    assert_eq!(r.status, 413);
    assert!(String::from_utf8_lossy(&r.body).contains("git.max_response_bytes"));
}

/// A store whose upstream never answers.
struct Silent;

#[async_trait]
impl PackageStore for Silent {
    async fn tags(&self, _: &str) -> Result<Vec<String>, StoreError> {
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        Ok(Vec::new())
    }
    async fn manifest(&self, _: &str, _: &str) -> Result<(Digest, Bytes), StoreError> {
        Err(StoreError::NotFound)
    }
    async fn blob(&self, _: &str, _: &Digest, _: u64) -> Result<Bytes, StoreError> {
        Err(StoreError::NotFound)
    }
}

#[tokio::test]
async fn a_silent_upstream_is_cut_at_the_request_timeout() {
    let config = GitServeConfig {
        request_timeout: std::time::Duration::from_millis(50),
        ..GitServeConfig::default()
    };
    let s = GitServe::new(config, Arc::new(Silent));
    let started = std::time::Instant::now();
    let r = get(
        &s,
        http::Method::GET,
        "/git/apps/x.git/info/refs",
        Some("service=git-upload-pack"),
        false,
    )
    .await;
    assert_eq!(r.status, 504);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn an_upstream_failure_fails_the_request_rather_than_drop_a_version() {
    struct Failing(Memory);
    #[async_trait]
    impl PackageStore for Failing {
        async fn tags(&self, r: &str) -> Result<Vec<String>, StoreError> {
            self.0.tags(r).await
        }
        async fn manifest(&self, r: &str, t: &str) -> Result<(Digest, Bytes), StoreError> {
            if t == "1.0.0" {
                return Err(StoreError::Upstream("connection reset".into()));
            }
            self.0.manifest(r, t).await
        }
        async fn blob(&self, r: &str, d: &Digest, m: u64) -> Result<Bytes, StoreError> {
            self.0.blob(r, d, m).await
        }
    }
    let s = GitServe::new(GitServeConfig::default(), Arc::new(Failing(store())));
    let r = get(
        &s,
        http::Method::GET,
        "/git/apps/x.git/info/refs",
        Some("service=git-upload-pack"),
        false,
    )
    .await;
    assert_eq!(r.status, 502);
}
